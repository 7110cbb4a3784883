"""Knobs of the machine (captioning/params.py: MACHINE_KNOBS) rerun nothing and change no output.

dvc.yaml lists, for each stage, the params.yaml keys its script reads, minus the knobs; each knob gives
bit-identical outputs for two values; and the slow test checks the claim with DVC itself: `dvc exp run` with a
new value of every knob runs no stage, and rerunning features and train with them writes the same files.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import FEATURE_DIM, REGIONS
from repo_params import repo_params
from tiny_repo import copy_repository, run

from captioning.data.scenes import write_scenes
from captioning.data.table import read_table, write_table
from captioning.features.parts import extract_table
from captioning.features.store import FeatureStore, memory_budget_bytes
from captioning.params import IMAGE_FOLDER, MACHINE_KNOBS, SECTIONS, parse_section, without_machine_knobs
from captioning.scoring.metrics import METRIC_KEYS
from captioning.scoring.split import EvaluationImages
from captioning.text.vocabulary import SPECIALS, Vocabulary, encode_captions
from captioning.train import distributed
from captioning.train.batching import CaptionSet
from captioning.train.cross_entropy import feature_statistics, fit
from captioning.train.validation import Validation

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def section_keys(section: str) -> set[str]:
    return {f"{section}.{field.name}" for field in dataclasses.fields(SECTIONS[section])}


def keys_read(script: Path) -> set[str]:
    """The params.yaml keys a stage script reads: `load_params("s").key` is one key; a section bound to a name is
    the keys read as `name.key`, or the whole section once the name is used otherwise (passed to a function)."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def section_of(node: ast.AST) -> str | None:
        is_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "load_params"
        return node.args[0].value if is_call else None

    keys, bound = set(), {}
    for node in ast.walk(tree):
        section = section_of(node)
        if section is None:
            continue
        parent = parents[node]
        if isinstance(parent, ast.Attribute):
            keys.add(f"{section}.{parent.attr}")
        elif isinstance(parent, ast.Assign) and isinstance(parent.targets[0], ast.Name):
            bound[parent.targets[0].id] = section
        elif isinstance(parent, ast.Tuple) and isinstance(parents[parent], ast.Assign):
            names = parents[parent].targets[0].elts  # a, b = load_params("x"), load_params("y")
            bound[names[parent.elts.index(node)].id] = section
        else:
            keys |= section_keys(section)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in bound and isinstance(node.ctx, ast.Load):
            parent = parents[node]
            if isinstance(parent, ast.Attribute):
                keys.add(f"{bound[node.id]}.{parent.attr}")
            else:
                keys |= section_keys(bound[node.id])
    return keys


def stage_params(name: str) -> set[str]:
    """dvc.yaml's params of a stage, a whole section standing for each of its keys."""
    listed = set()
    for entry in STAGES[name].get("params", []):
        listed |= {entry} if "." in entry else section_keys(entry)
    return listed


def test_the_knobs_are_keys_of_params_yaml():
    document = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for knob in MACHINE_KNOBS:
        section, key = knob.split(".")
        assert knob in section_keys(section) and key in document[section], knob


@pytest.mark.parametrize("name", list(STAGES))
def test_a_stage_depends_on_the_keys_it_reads_minus_the_machine_knobs(name: str):
    read = keys_read(REPO / "stages" / f"{name}.py")
    assert read, f"stages/{name}.py reads no params?"
    expected = read - set(MACHINE_KNOBS) - ({IMAGE_FOLDER} if name != "data" else set())
    listed = stage_params(name)
    assert not listed - expected, f"dvc.yaml: stage {name} depends on keys it does not read or on machine knobs"
    assert not expected - listed, f"dvc.yaml: stage {name} reads keys it does not depend on"


def test_every_knob_is_read_by_some_stage_and_a_dependency_of_none():
    read = set().union(*(keys_read(REPO / "stages" / f"{name}.py") for name in STAGES))
    for knob in MACHINE_KNOBS:
        assert knob in read, f"{knob}: no stage reads it"
        assert not any(knob in stage_params(name) for name in STAGES), knob


def test_the_reader_finds_keys_sections_and_unpacked_sections(tmp_path: Path):
    script = tmp_path / "stage.py"
    script.write_text(
        "def main():\n"
        "    a, b = load_params('train'), load_params('model')\n"
        "    c = load_params('vocab')\n"
        "    use(a, c.max_len, b.dropout, load_params('embeddings').finetune)\n"
    )
    assert keys_read(script) == section_keys("train") | {"vocab.max_len", "model.dropout", "embeddings.finetune"}


# Each knob, two values, the same bytes.


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """14 generated 64 x 64 scenes and their caption table."""
    folder = tmp_path_factory.mktemp("knob_scenes")
    options = dict(seed=0, num_train=10, num_val=2, num_test=2, image_size=64, min_objects=1, max_objects=2)
    write_table(folder / "dataset.json", write_scenes(folder / "images", **options, captions_per_image=2))
    return folder / "dataset.json"


def features_file(table_path: Path, output: Path, **knobs) -> Path:
    params = repo_params("features", image_size=64, batch_size=4, num_workers=0, chunk_size=256, nproc=1)
    params = dataclasses.replace(params, **knobs)
    extract_table(read_table(table_path), table_path, output, output.parent / "scratch", params, "skip")
    return output


@pytest.mark.usefixtures("torch_single_thread")  # nproc 2 then runs one thread each, as one process does
@pytest.mark.parametrize("knobs", [{"num_workers": 2}, {"chunk_size": 3}, {"nproc": 2, "chunk_size": 5}])
def test_the_features_file_is_the_same_whatever_the_feature_knobs(scenes: Path, tmp_path: Path, knobs: dict):
    assert {f"features.{knob}" for knob in knobs} <= set(MACHINE_KNOBS)
    straight = features_file(scenes, tmp_path / "straight.h5")
    assert md5(features_file(scenes, tmp_path / "knobs.h5", **knobs)) == md5(straight)


COLORS, SHAPES = ["red", "blue", "green", "pink"], ["circle", "square", "star", "ring"]
VOCABULARY = Vocabulary(list(SPECIALS) + COLORS + SHAPES)
NAMES = [f"img_{i}.png" for i in range(8)]


class ExactScorer:
    """bleu_4: the share of captions equal to one of their references (enough to pick an epoch by)."""

    def score(self, predictions: dict, references: dict) -> dict:
        exact = np.mean([predictions[name] in references[name] for name in predictions])
        return {**{key: 0.5 for key in METRIC_KEYS}, "bleu_4": float(exact)}


@pytest.mark.usefixtures("torch_single_thread")
def test_training_is_the_same_with_the_features_in_ram_or_streamed(feature_file, make_decoder):
    """train.feature_memory_gb only decides whether FeatureStore holds the file in RAM or reads it batch by batch."""
    values = np.random.default_rng(0).normal(size=(len(NAMES), REGIONS, FEATURE_DIM)).astype(np.float32)
    path = feature_file(NAMES, values)
    captions = [[COLORS[i % 4], SHAPES[i // 2]] for i in range(len(NAMES)) for _ in range(2)]
    encoded = encode_captions(VOCABULARY, captions, [i for i in range(len(NAMES)) for _ in range(2)], max_len=5)
    references = [[" ".join(captions[2 * i])] for i in (0, 5)]

    def train(feature_memory_gb: float | str) -> tuple[dict, dict]:
        params = repo_params(
            "train", lr=0.01, epochs=3, batch_size=4, precision="fp32", feature_memory_gb=feature_memory_gb
        )
        store = FeatureStore(path, memory_budget_bytes=memory_budget_bytes(params.feature_memory_gb))  # as run_training
        assert (store.in_memory is not None) == (feature_memory_gb != 0)
        data = CaptionSet(encoded["captions"], encoded["lengths"], encoded["image_index"].astype(np.int64))
        val = EvaluationImages(["img_0.png", "img_5.png"], store.rows_for(["img_0.png", "img_5.png"]), references)
        decoder = make_decoder(dropout=0.5).train()
        decoder.set_feature_statistics(*feature_statistics(store, np.arange(len(NAMES))))
        validation = Validation(val, store, VOCABULARY, ExactScorer(), params.val_max_len, torch.device("cpu"))
        best = fit(decoder, data, store, validation, params)
        return best, decoder.state_dict()

    (in_ram, ram_weights), (streamed, streamed_weights) = train("auto"), train(0.0)
    assert in_ram == streamed
    assert ram_weights.keys() == streamed_weights.keys()
    for name, weight in ram_weights.items():
        assert torch.equal(weight, streamed_weights[name]), name


def test_the_address_of_node_0_matters_only_to_several_machines():
    """One machine: torchrun --standalone, whatever master_addr and master_port say (node_rank can only be 0)."""
    one = repo_params("train", nproc_per_node=2)
    elsewhere = repo_params("train", nproc_per_node=2, master_addr="10.0.0.9", master_port=40000)
    assert distributed.torchrun_command(one, "stages.train", []) == distributed.torchrun_command(
        elsewhere, "stages.train", []
    )


# DVC itself: a new value of every knob reruns nothing.

NEW_VALUES = {
    "features.num_workers": 2,
    "features.nproc": 2,
    "features.chunk_size": 8,
    "train.feature_memory_gb": 0.0001,  # 100 KiB: the 0.8 MB of tiny features are streamed
    "train.master_addr": "10.0.0.9",
    "train.master_port": 29511,
}  # train.node_rank: any value but 0 is refused while train.nnodes is 1; not a dependency either (tests above)


def lock(repo: Path) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))["stages"]


def outs(stages: dict, name: str) -> dict[str, str]:
    return {out["path"]: out["md5"] for out in stages[name]["outs"]}


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread_each")
def test_dvc_exp_run_with_new_machine_knobs_runs_no_stage_and_a_rerun_writes_the_same(
    tiny_pipeline: Path, tmp_path: Path
):
    assert set(NEW_VALUES) == set(MACHINE_KNOBS) - {"train.node_rank"}
    repo = copy_repository(tiny_pipeline, tmp_path / "repo")
    before = lock(repo)
    written = {path: path.stat().st_mtime_ns for path in (repo / "data").iterdir()}
    written |= {path: path.stat().st_mtime_ns for path in (repo / "models").iterdir()}

    settings = [option for key, value in NEW_VALUES.items() for option in ("-S", f"{key}={value}")]
    result = run(["dvc", "exp", "run", *settings], repo)
    output = result.stdout + result.stderr
    assert "Running stage" not in output, output
    for name in STAGES:
        assert f"'{name}' didn't change, skipping" in output, output
    assert lock(repo) == before
    assert {path: path.stat().st_mtime_ns for path in written} == written
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    assert params["features"]["nproc"] == 2 and params["train"]["master_port"] == 29511, "the values were set"

    # The knobs' values reach the stages: features in 2 processes of 8-image parts, train reading batch by batch.
    rerun = run(["dvc", "repro", "--force", "--single-item", "features", "train"], repo)
    assert "in 2 processes" in rerun.stderr and "read batch by batch" in rerun.stderr, rerun.stderr
    after = lock(repo)
    assert outs(after, "features") == outs(before, "features")
    model = "models/cross_entropy.pt"  # metrics/train differs: its timings
    assert outs(after, "train")[model] == outs(before, "train")[model]
    status = run(["dvc", "status"], repo)
    assert "up to date" in status.stdout, status.stdout


def test_a_run_is_resumed_whatever_the_knobs():
    """The train stage's resume key leaves the knobs out: restarted with another RAM budget, it goes on."""
    section = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["train"]
    here = parse_section("train", section)
    elsewhere = parse_section("train", {**section, "feature_memory_gb": 64.0, "master_port": 29501})
    other_run = parse_section("train", {**section, "lr": section["lr"] / 2})
    assert without_machine_knobs("train", here) == without_machine_knobs("train", elsewhere)
    assert without_machine_knobs("train", here) != without_machine_knobs("train", other_run)
    assert "feature_memory_gb" not in without_machine_knobs("train", here) and "lr" in without_machine_knobs(
        "train", here
    )
