"""End to end: the real dvc commands on a tiny configuration, in a temporary git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_STAGES = ("data", "vocab", "features", "embeddings")

TINY = {
    "data": {"num_train": 40, "num_val": 6, "num_test": 6, "image_size": 64},
    "features": {"image_size": 64, "batch_size": 16, "num_workers": 0},
    "embeddings": {"dim": 16, "epochs": 2},
    "model": {"attention_dim": 16, "decoder_dim": 16, "dropout": 0.0},
    "train": {"epochs": 2, "batch_size": 16, "step_size": 1},
    "evaluate": {"beam_size": 2, "batch_size": 8},
}


def run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", TQDM_DISABLE="1")
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def copy_project(target: Path) -> None:
    """The project as a fresh clone would have it: tracked (and not ignored) files only."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    for name in listed:
        source = REPO / name
        if source.is_file() and not name.startswith(("metrics/", "docs/")) and name != "dvc.lock":
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def write_params(repo: Path, overrides: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline")
    copy_project(repo)
    write_params(repo, TINY)
    run(["git", "init", "-q"], repo)
    run(["git", "config", "user.email", "test@example.com"], repo)
    run(["git", "config", "user.name", "Pipeline Test"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "project"], repo)  # as a clone has: DVCLive needs a commit
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny pipeline"], repo)
    return repo


@pytest.mark.slow
def test_repro_writes_every_output_and_leaves_status_clean(tiny_repo: Path):
    metrics = json.loads((tiny_repo / "metrics/evaluate.json").read_text())
    assert set(metrics) >= {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"}
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("bleu_1", "bleu_4", "meteor", "rouge_l"))
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
def test_experiment_reruns_only_train_and_evaluate(tiny_repo: Path):
    result = run(["dvc", "exp", "run", "-n", "faster-lr", "-S", "train.lr=0.003"], tiny_repo)
    output = result.stdout + result.stderr
    for stage in UPSTREAM_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in output, output
    assert "Running stage 'train'" in output and "Running stage 'evaluate'" in output

    params_diff = run(["dvc", "params", "diff"], tiny_repo).stdout
    assert "train.lr" in params_diff and "0.003" in params_diff
    metrics_diff = run(["dvc", "metrics", "diff"], tiny_repo).stdout
    assert "train_loss" in metrics_diff, metrics_diff
    shown = run(["dvc", "exp", "show", "--md"], tiny_repo).stdout
    assert "faster-lr" in shown and "bleu_4" in shown


@pytest.mark.slow
def test_a_bad_param_stops_the_stage_with_one_line(tiny_repo: Path):
    write_params(tiny_repo, {"train": {"lr": -1}})
    try:
        result = run(["dvc", "repro", "train"], tiny_repo, check=False)
    finally:
        run(["git", "checkout", "params.yaml"], tiny_repo)
    assert result.returncode != 0
    assert "error: params.yaml: train.lr must be a number > 0, got -1.0" in result.stderr + result.stdout
