"""End to end: the real dvc commands on a tiny configuration, in a temporary git repository."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from tiny_repo import TINY, UPSTREAM_STAGES, copy_repository, run, write_params


@pytest.fixture(scope="module")
def tiny_repo(tiny_pipeline: Path, tmp_path_factory) -> Path:
    """The tiny project after `dvc repro` of every stage (conftest's tiny_pipeline, built once per session)."""
    return copy_repository(tiny_pipeline, tmp_path_factory.mktemp("pipeline") / "repo")


@pytest.mark.slow
def test_repro_writes_every_output_and_leaves_status_clean(tiny_repo: Path):
    metrics = json.loads((tiny_repo / "metrics/evaluate.json").read_text())
    assert set(metrics) >= {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"}  # METEOR: test_real_pipeline
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("bleu_1", "bleu_4", "rouge_l"))
    predictions = json.loads((tiny_repo / "reports/predictions.json").read_text())
    assert len(predictions) == TINY["data"]["num_test"]
    assert {"image", "caption", "references"} <= set(predictions[0]) and len(predictions[0]["references"]) >= 5
    train_log = (tiny_repo / "metrics/train/plots/metrics/train_loss.tsv").read_text().splitlines()
    assert len(train_log) == 1 + TINY["train"]["epochs"]  # header + one row per epoch
    assert (tiny_repo / "models/model.pt").is_file() and (tiny_repo / "data/features.h5").is_file()
    status = run(["dvc", "status"], tiny_repo).stdout
    assert "up to date" in status, status
    assert "Stage 'train' didn't change" in run(["dvc", "repro"], tiny_repo).stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "module",
    ["scoring/grounding.py", "scoring/significance.py", "reports/figures.py", "reports/gallery.py", "data/scenes.py"],
)
def test_editing_test_only_code_reruns_only_evaluate(tiny_repo: Path, tmp_path: Path, module: str):
    """Validation scores with the metrics alone: grounding, intervals, figures and the gallery are the evaluate
    stage's, so an edit there leaves the trained model alone (dvc.yaml's deps, read by dvc status)."""
    repo = copy_repository(tiny_repo, tmp_path / "repo")
    with (repo / "captioning" / module).open("a", encoding="utf-8") as source:
        source.write("\n# edited\n")
    changed = re.findall(r"^(\w+):\n", run(["dvc", "status"], repo).stdout, re.M)
    assert changed == (["data", "evaluate"] if module == "data/scenes.py" else ["evaluate"]), changed


@pytest.mark.slow
def test_a_hard_attention_experiment_reruns_only_train_and_evaluate(tiny_repo: Path):
    """One experiment for two questions (each `dvc exp run` trains and evaluates again): does an experiment rerun
    only what its change touches, and does hard attention (section 4.1) run end to end through the pipeline?"""
    result = run(["dvc", "exp", "run", "-n", "hard", "-S", "model.attention=hard"], tiny_repo)
    output = result.stdout + result.stderr
    for stage in UPSTREAM_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in output, output
    assert "Running stage 'train'" in output and "Running stage 'evaluate'" in output

    params_diff = run(["dvc", "params", "diff"], tiny_repo).stdout
    assert "model.attention" in params_diff and "hard" in params_diff
    metrics_diff = run(["dvc", "metrics", "diff"], tiny_repo).stdout
    assert "train_loss" in metrics_diff, metrics_diff
    shown = run(["dvc", "exp", "show", "--md"], tiny_repo).stdout
    assert "hard" in shown and "bleu_4" in shown and "reinforce_variance" in shown

    curves = tiny_repo / "metrics/train/plots/metrics"
    for name in ("hard_baseline", "reinforce_variance"):  # one row per epoch, after the header
        rows = (curves / f"{name}.tsv").read_text().splitlines()
        assert len(rows) == 1 + TINY["train"]["epochs"], rows
        assert all(math.isfinite(float(row.split("\t")[-1])) for row in rows[1:]), rows
    assert float((curves / "hard_baseline.tsv").read_text().splitlines()[-1].split("\t")[-1]) < 0
    metrics = json.loads((tiny_repo / "metrics/evaluate.json").read_text())
    assert 0.0 <= metrics["bleu_4"] <= 1.0
    payload = torch.load(tiny_repo / "models/model.pt", weights_only=True)
    assert payload["config"]["attention"] == "hard"


@pytest.mark.slow
def test_a_bad_param_stops_the_stage_with_one_line(tiny_repo: Path):
    write_params(tiny_repo, {"train": {"lr": -1}})
    try:
        result = run(["dvc", "repro", "train"], tiny_repo, check=False)
    finally:
        run(["git", "checkout", "params.yaml"], tiny_repo)
    assert result.returncode != 0
    assert "error: params.yaml: train.lr must be a number > 0, got -1.0" in result.stderr + result.stdout
