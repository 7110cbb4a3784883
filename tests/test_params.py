"""captioning/params.py: every section of the real params.yaml parses; bad, missing and repeated keys name their key."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess

import pytest
import yaml
from repo_params import PARAMS_YAML, repo_document, repo_section
from tiny_repo import stage_command

from captioning.errors import CaptioningError, ParamError
from captioning.params import SECTIONS, TrainParams, UniqueKeyLoader, load_params, parse_section

REPO = PARAMS_YAML.parent
KNOWN_TRAIN_KEYS = ", ".join(f.name for f in dataclasses.fields(TrainParams))


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_each_section_of_the_real_params_yaml_parses_to_its_values(section):
    raw = yaml.safe_load(PARAMS_YAML.read_text(encoding="utf-8"))[section]
    params = load_params(section, PARAMS_YAML)
    assert isinstance(params, SECTIONS[section])
    parsed = dataclasses.asdict(params)
    assert set(raw) == set(parsed)
    for key, value in raw.items():
        assert parsed[key] == value, f"{section}.{key}"


def test_params_yaml_holds_every_key_and_the_dataclasses_hold_no_values():
    """One source of the values: each field is a key of params.yaml and none carries a default of its own."""
    document = yaml.safe_load(PARAMS_YAML.read_text(encoding="utf-8"))
    assert set(document) == set(SECTIONS)
    for section, cls in SECTIONS.items():
        fields = dataclasses.fields(cls)
        names = [f.name for f in fields]
        assert [name for name in names if name not in document[section]] == [], f"not in params.yaml's {section}"
        assert [key for key in document[section] if key not in names] == [], f"not fields of {cls.__name__}"
        with_default = [f.name for f in fields if f.default is not dataclasses.MISSING]
        with_factory = [f.name for f in fields if f.default_factory is not dataclasses.MISSING]
        assert with_default == with_factory == [], f"{cls.__name__} carries defaults"


def test_a_key_left_out_is_one_line_naming_it(tmp_path):
    document = repo_document()
    del document["train"]["lr"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(CaptioningError) as caught:
        load_params("train", path)
    assert str(caught.value) == (
        "params.yaml: train.lr is missing (add it to the train section; see the repository's params.yaml)"
    )
    assert load_params("evaluate", path) == load_params("evaluate", PARAMS_YAML), "other sections are unaffected"


def test_several_keys_left_out_are_named_together_and_a_section_left_out_too():
    values = repo_section("model")
    del values["dropout"], values["implementation"]
    with pytest.raises(CaptioningError) as caught:
        parse_section("model", values)
    assert str(caught.value) == (
        "params.yaml: model.dropout, model.implementation are missing "
        "(add them to the model section; see the repository's params.yaml)"
    )
    with pytest.raises(CaptioningError, match=r"^params\.yaml: vocab is missing \(add the section"):
        parse_section("vocab", None)


def test_a_bad_value_is_named_before_the_keys_left_out():
    with pytest.raises(ParamError, match="train.lr must be a number > 0"):
        parse_section("train", {"lr": -1})


def test_exponent_string_is_accepted_as_a_float(tmp_path):
    text = PARAMS_YAML.read_text(encoding="utf-8")
    assert "\n  lr: 0.001\n" in text and "\n  gamma: 0.5\n" in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("\n  lr: 0.001\n", "\n  lr: 4e-4\n").replace("\n  gamma: 0.5\n", "\n  gamma: 1\n"))
    assert isinstance(yaml.safe_load(path.read_text())["train"]["lr"], str)  # what YAML 1.1 gives
    params = load_params("train", path)
    assert params.lr == pytest.approx(4e-4) and isinstance(params.lr, float)
    assert params.gamma == 1.0 and isinstance(params.gamma, float)


UNBOUNDED_NUMBERS = [  # (section, key, a usual value, unusual but run with a warning, refused)
    ("train", "lr", 0.001, 0.5, 2.0),
    ("scst", "lr", 5e-05, 0.01, 10.0),
    ("train", "alpha_c", 1.0, 50.0, 1e3),
    ("train", "hard_lambda_r", 0.01, 5.0, 1e6),
    ("train", "hard_lambda_e", 0.002, 1.0, 1e3),
    ("evaluate", "length_penalty", 1.0, 3.0, 1e3),
]


@pytest.mark.parametrize(("section", "key", "usual", "unusual", "refused"), UNBOUNDED_NUMBERS)
def test_unbounded_numbers_warn_outside_their_usual_range_and_refuse_nonsense(
    section, key, usual, unusual, refused, caplog
):
    """train.hard_lambda_r 1e6 trained to nonsense without a word (REINFORCE variance 1e18, BLEU-1 1e-17)."""
    caplog.set_level("WARNING", logger="captioning.params")
    assert getattr(parse_section(section, repo_section(section, **{key: usual})), key) == usual
    assert caplog.messages == []
    assert getattr(parse_section(section, repo_section(section, **{key: unusual})), key) == unusual
    (warning,) = caplog.messages
    assert warning.startswith(f"params.yaml: {section}.{key} is {unusual!r}, outside the usual ")
    assert warning.endswith("check that it is meant") and "\n" not in warning
    for value in (refused, float("inf")):
        with pytest.raises(ParamError) as caught:
            parse_section(section, repo_section(section, **{key: value}))
        assert caught.value.key == f"{section}.{key}"
        assert re.fullmatch(
            rf"params\.yaml: {section}\.{key} must be a number <= [0-9]+ \(usually [0-9e.-]+ to [0-9e.-]+: .+\), "
            rf"got {re.escape(repr(float(value)))}",
            str(caught.value),
        ), str(caught.value)


def test_hard_lambda_r_of_a_million_is_refused_naming_the_usual_range():
    with pytest.raises(ParamError) as caught:
        parse_section("train", repo_section("train", hard_lambda_r=1e6))
    assert str(caught.value) == (
        "params.yaml: train.hard_lambda_r must be a number <= 100 (usually 0 to 1: the weight of the REINFORCE term, "
        "0.01 by default; 0.1 already ungrounds attention), got 1000000.0"
    )


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
        ("train", {"feature_memory_gb": "8GB"}, "train.feature_memory_gb", "auto or a number >= 0"),
        ("train", {"feature_memory_gb": -1}, "train.feature_memory_gb", "auto or a number >= 0"),
        ("train", {"feature_memory_gb": True}, "train.feature_memory_gb", "auto or a number >= 0"),
        ("train", {"lerning_rate": 0.1}, "train.lerning_rate", f"one of the known keys ({KNOWN_TRAIN_KEYS})"),
        ("model", {"dropout": 1.0}, "model.dropout", "a number in [0, 1)"),
        ("model", {"attention": "stochastic"}, "model.attention", "one of soft, hard, none"),
        ("model", {"implementation": "cuda"}, "model.implementation", "one of auto, paper, fast"),
        ("embeddings", {"finetune": "yes"}, "embeddings.finetune", "true or false"),
        ("embeddings", {"word2vec_path": 3}, "embeddings.word2vec_path", "a string"),
        ("evaluate", {"beam_size": 0}, "evaluate.beam_size", "an integer >= 1"),
        ("vocab", {"min_word_freq": 0}, "vocab.min_word_freq", "an integer >= 1"),
        ("features", {"weights": "resnet.bin"}, "features.weights", "none, imagenet or the path"),
        ("features", {"encoder": "resnet34"}, "features.encoder", "one of resnet50, resnet101, resnet152"),
        ("data", {"dataset": "mnist"}, "data.dataset", "one of scenes, flickr30k, flickr8k, coco"),
        ("data", {"min_objects": 2, "max_objects": 1}, "data.max_objects", "from data.min_objects (2) to 9"),
        ("data", {"on_bad_image": "ignore"}, "data.on_bad_image", "one of skip, error"),
        ("data", {"dataset": "flickr30k"}, "data.root", "the folder holding the flickr30k download"),
        ("data", {"dataset": "coco", "root": "x", "format": "hf_csv"}, "data.format", "one of auto, karpathy"),
    ],
)
def test_a_bad_value_raises_param_error_naming_key_and_allowed_values(section, values, key, allowed):
    with pytest.raises(ParamError) as caught:
        parse_section(section, repo_section(section, **values))
    assert caught.value.key == key
    message = str(caught.value)
    assert message.startswith(f"params.yaml: {key} must be ")
    assert allowed in message


def test_a_section_that_is_not_a_mapping_is_refused():
    with pytest.raises(ParamError) as caught:
        parse_section("train", [1, 2])
    assert str(caught.value) == "params.yaml: train must be a mapping of keys to values, got [1, 2]"


@pytest.mark.parametrize(
    ("section", "text", "message"),
    [
        pytest.param("train", "train: {lr: 0}", "params.yaml: train.lr must be a number > 0, got 0.0", id="lr-zero"),
        pytest.param(
            "train",
            "train: {gamma: 1.5}",
            "params.yaml: train.gamma must be a number in (0, 1], got 1.5",
            id="gamma-above-1",
        ),
        pytest.param(
            "evaluate",
            "evaluate: {beam_size: true}",
            "params.yaml: evaluate.beam_size must be an integer, got True",
            id="beam-bool",
        ),
        pytest.param(
            "features",
            "features: {weights: resnet101}",
            "params.yaml: features.weights must be none, imagenet or the path of a .pth/.pt state dict, got "
            "'resnet101'",
            id="unknown-weights",
        ),
    ],
)
def test_a_bad_value_in_the_file_is_one_line_with_the_value_it_got(tmp_path, section, text, message):
    """Through load_params on a file holding only the bad key: the value is named before the keys left out."""
    path = tmp_path / "params.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(CaptioningError) as caught:
        load_params(section, path)
    assert str(caught.value) == message


def test_valid_overrides_are_kept():
    params = parse_section("data", repo_section("data", dataset="flickr8k", root="/data/f8k", format="flickr8k_csv"))
    assert (params.dataset, params.root, params.format) == ("flickr8k", "/data/f8k", "flickr8k_csv")
    assert parse_section("features", repo_section("features", weights="models/r50.pth")).weights == "models/r50.pth"


def test_missing_or_broken_params_file_raises_captioning_error(tmp_path):
    with pytest.raises(CaptioningError) as caught:
        load_params("train", tmp_path / "params.yaml")
    assert str(caught.value) == f"{tmp_path / 'params.yaml'}: params file not found (run from the repository root)"
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n", encoding="utf-8")
    with pytest.raises(CaptioningError) as caught:
        load_params("train", broken)
    assert str(caught.value) == f"{broken}: not valid YAML (while parsing a flow sequence)"
    listed = tmp_path / "listed.yaml"
    listed.write_text("- train\n", encoding="utf-8")
    with pytest.raises(CaptioningError, match=r"listed\.yaml: must be a mapping of sections \(data, vocab"):
        load_params("train", listed)


def test_a_key_written_twice_is_refused_with_its_line(tmp_path):
    text = PARAMS_YAML.read_text(encoding="utf-8")
    line = text.splitlines().index("  lr: 0.001") + 1
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("  lr: 0.001\n", "  lr: 0.001\n  lr: 0.01\n"), encoding="utf-8")
    with pytest.raises(CaptioningError) as caught:
        load_params("evaluate", path)  # the whole file is refused, whichever section a stage reads
    assert str(caught.value) == f"{path}:{line + 1}: duplicate key train.lr"
    twice = tmp_path / "twice.yaml"
    twice.write_text(text + "train:\n  lr: 0.01\n", encoding="utf-8")
    with pytest.raises(CaptioningError, match=rf"twice\.yaml:{len(text.splitlines()) + 1}: duplicate key train$"):
        load_params("train", twice)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a:\n  b:\n    - {c: 1, d: 2, c: 3}\n", "3: duplicate key a.b[0].c"),
        ("a:\n  1: x\n  2: y\n  1: z\n", "4: duplicate key a.1"),
        ("a: {b: {c: {d: 1}}, b: 2}\n", "1: duplicate key a.b"),
    ],
)
def test_duplicate_keys_are_found_at_any_depth(text, where):
    with pytest.raises(yaml.YAMLError, match=f"^line {re.escape(where)}$"):
        yaml.load(text, Loader=UniqueKeyLoader)


def test_the_loader_reads_what_safe_load_reads_when_no_key_repeats():
    text = "base: &base {x: 1, y: [1, 2]}\nother:\n  <<: *base\n  x: 2\nsame: *base\n"
    assert yaml.load(text, Loader=UniqueKeyLoader) == yaml.safe_load(text)
    assert yaml.load(PARAMS_YAML.read_text(), Loader=UniqueKeyLoader) == yaml.safe_load(PARAMS_YAML.read_text())


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            lambda text: text.replace("  max_len: 24 ", "  #max_len: 24 "),
            "error: params.yaml: vocab.max_len is missing "
            "(add it to the vocab section; see the repository's params.yaml)",
        ),
        (
            lambda text: text.replace("  max_len: 24 ", "  max_len: 2\n  max_len: 24 "),
            "error: params.yaml:{line}: duplicate key vocab.max_len",
        ),
    ],
    ids=["missing", "duplicate"],
)
def test_a_stage_run_by_hand_stops_with_one_error_line(tmp_path, change, error):
    text = PARAMS_YAML.read_text(encoding="utf-8")
    line = next(number for number, row in enumerate(text.splitlines(), 1) if row.startswith("  max_len: 24 ")) + 1
    (tmp_path / "params.yaml").write_text(change(text), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(stage_command("vocab"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [row for row in result.stderr.splitlines() if row.startswith("error:")]
    assert errors == [error.format(line=line)], result.stderr
    assert not (tmp_path / "data").exists()
