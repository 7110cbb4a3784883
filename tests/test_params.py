"""captioning/params.py: every section of the real params.yaml parses; bad values name their key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from captioning.errors import CaptioningError, ParamError
from captioning.params import SECTIONS, TrainParams, load_params, parse_section

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_each_section_of_the_real_params_yaml_parses_to_its_values(section):
    raw = yaml.safe_load(PARAMS_YAML.read_text(encoding="utf-8"))[section]
    params = load_params(section, PARAMS_YAML)
    assert isinstance(params, SECTIONS[section])
    parsed = dataclasses.asdict(params)
    assert set(raw) <= set(parsed)
    for key, value in raw.items():
        assert parsed[key] == value, f"{section}.{key}"


def test_a_missing_section_gives_the_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 0.01\n", encoding="utf-8")
    assert load_params("evaluate", path) == SECTIONS["evaluate"]()
    assert load_params("train", path) == TrainParams(lr=0.01)


def test_exponent_string_is_accepted_as_a_float(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 4e-4\n  gamma: 1\n", encoding="utf-8")
    assert isinstance(yaml.safe_load(path.read_text())["train"]["lr"], str)  # what YAML 1.1 gives
    params = load_params("train", path)
    assert params.lr == pytest.approx(4e-4) and isinstance(params.lr, float)
    assert params.gamma == 1.0 and isinstance(params.gamma, float)


@pytest.mark.parametrize(
    ("section", "values", "key", "allowed"),
    [
        ("train", {"epochs": "ten"}, "train.epochs", "an integer"),
        ("train", {"epochs": 2.5}, "train.epochs", "an integer"),
        ("train", {"epochs": True}, "train.epochs", "an integer"),
        ("train", {"lr": "fast"}, "train.lr", "a number"),
        ("train", {"lr": True}, "train.lr", "a number"),
        ("train", {"lr": -1}, "train.lr", "a number > 0"),
        ("train", {"lr": "nan"}, "train.lr", "a number > 0"),
        ("train", {"gamma": 0}, "train.gamma", "a number in (0, 1]"),
        ("train", {"select_by": "accuracy"}, "train.select_by", "one of bleu_4, cider, meteor, rouge_l"),
        ("train", {"precision": "fp64"}, "train.precision", "one of auto, bf16, fp16, fp32"),
        ("train", {"lerning_rate": 0.1}, "train.lerning_rate", "one of the known keys (lr, epochs"),
        ("model", {"dropout": 1.0}, "model.dropout", "a number in [0, 1)"),
        ("model", {"attention": "stochastic"}, "model.attention", "one of soft, hard, none"),
        ("embeddings", {"finetune": "yes"}, "embeddings.finetune", "true or false"),
        ("embeddings", {"word2vec_path": 3}, "embeddings.word2vec_path", "a string"),
        ("evaluate", {"beam_size": 0}, "evaluate.beam_size", "an integer >= 1"),
        ("vocab", {"min_word_freq": 0}, "vocab.min_word_freq", "an integer >= 1"),
        ("features", {"weights": "resnet.bin"}, "features.weights", "none, imagenet or the path"),
        ("data", {"dataset": "mnist"}, "data.dataset", "one of scenes, flickr30k, flickr8k, coco"),
        ("data", {"min_objects": 2, "max_objects": 1}, "data.max_objects", "from data.min_objects (2) to 9"),
        ("data", {"on_bad_image": "ignore"}, "data.on_bad_image", "one of skip, error"),
        ("data", {"dataset": "flickr30k"}, "data.root", "the folder holding the flickr30k download"),
        ("data", {"dataset": "coco", "root": "x", "format": "hf_csv"}, "data.format", "one of auto, karpathy"),
    ],
)
def test_a_bad_value_raises_param_error_naming_key_and_allowed_values(section, values, key, allowed):
    with pytest.raises(ParamError) as caught:
        parse_section(section, values)
    assert caught.value.key == key
    message = str(caught.value)
    assert message.startswith(f"params.yaml: {key} must be ")
    assert allowed in message


def test_a_section_that_is_not_a_mapping_is_refused():
    with pytest.raises(ParamError, match="train must be a mapping"):
        parse_section("train", [1, 2])


def test_valid_overrides_are_kept():
    params = parse_section("data", {"dataset": "flickr8k", "root": "/data/f8k", "format": "flickr8k_csv"})
    assert (params.dataset, params.root, params.format) == ("flickr8k", "/data/f8k", "flickr8k_csv")
    assert parse_section("features", {"weights": "models/r50.pth"}).weights == "models/r50.pth"


def test_missing_or_broken_params_file_raises_captioning_error(tmp_path):
    with pytest.raises(CaptioningError, match="params file not found"):
        load_params("train", tmp_path / "params.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n", encoding="utf-8")
    with pytest.raises(CaptioningError, match=r"broken\.yaml: not valid YAML"):
        load_params("train", broken)
