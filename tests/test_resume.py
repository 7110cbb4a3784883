"""kill -9 in the middle of a stage: rerunning resumes and ends with what an uninterrupted run gives."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_repo import TINY, copy_repository, run, stage_command, write_params

STAGE_ENV_PATH = Path(sys.executable).parent


def stage(repo: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(stage_command(name), cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def kill_when(process: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "the stage never reached the point to interrupt"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def prepared(tiny_upstream: Path, tmp_path_factory) -> Path:
    repo = copy_repository(tiny_upstream, tmp_path_factory.mktemp("resume") / "repo")  # data ... embeddings run
    write_params(repo, {"train": {**TINY["train"], "epochs": 4}})
    return repo


@pytest.mark.slow
def test_training_killed_mid_run_resumes_from_the_last_epoch(prepared: Path):
    state = prepared / "scratch/train/state.pt"
    run(stage_command("train", model="models/straight.pt", live="metrics/straight"), prepared)
    assert not state.exists(), "a finished run must clean up its resumable state"

    def epochs_saved() -> int:
        try:
            return len(torch.load(state, weights_only=True)["history"])
        except Exception:
            return 0

    process = stage(prepared, "train")
    kill_when(process, lambda: epochs_saved() >= 2)
    assert not (prepared / "models/cross_entropy.pt").exists(), "an interrupted run must not leave a model output"
    resumed = run(stage_command("train"), prepared)
    assert "resuming after epoch" in resumed.stdout + resumed.stderr

    wall_clock = ("epoch_seconds", "data_wait_share")
    expected = json.loads((prepared / "metrics/straight/metrics.json").read_text())
    actual = json.loads((prepared / "metrics/train/metrics.json").read_text())
    assert {k: v for k, v in actual.items() if k not in wall_clock} == {
        k: v for k, v in expected.items() if k not in wall_clock
    }
    for name in ("train_loss", "val_bleu_4"):
        log = (prepared / f"metrics/train/plots/metrics/{name}.tsv").read_text().splitlines()
        assert len(log) == 1 + 4, f"{name}: every epoch logged exactly once after resuming"
    straight = torch.load(prepared / "models/straight.pt", weights_only=True)["state_dict"]
    resumed_model = torch.load(prepared / "models/cross_entropy.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(straight[k], resumed_model[k]) for k in straight)


@pytest.mark.slow
def test_training_ignores_state_saved_for_another_configuration(prepared: Path):
    state = prepared / "scratch/train/state.pt"
    process = stage(prepared, "train")
    kill_when(process, lambda: state.exists())
    params = (prepared / "params.yaml").read_text()
    write_params(prepared, {"train": {"lr": 0.002, "epochs": 1}})  # one epoch: the rerun only has to start afresh
    try:
        result = run(stage_command("train"), prepared)
    finally:
        (prepared / "params.yaml").write_text(params)
    output = result.stdout + result.stderr
    assert "resuming" not in output and "another configuration" in output


@pytest.mark.slow
def test_embeddings_for_another_vocabulary_are_refused_naming_both_files(prepared: Path):
    embeddings = prepared / "data/embeddings.npy"
    original = embeddings.read_bytes()
    matrix = np.load(embeddings)
    embeddings.unlink()  # a read-only link into the DVC cache (tiny_upstream ran dvc repro): replace, never write
    np.save(embeddings, matrix[:-1])
    try:
        result = run(stage_command("train"), prepared, check=False)
    finally:
        embeddings.write_bytes(original)
    assert result.returncode == 1
    assert "error: data/embeddings.npy has" in result.stderr and "data/vocab.json has" in result.stderr
    assert "Traceback" not in result.stderr
