"""The finetune stage end to end: the real dvc commands and kill -9, on the tiny configuration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tiny_repo import TINY, copy_repository, run, run_stage_here, stage_command, write_params

from captioning.scoring.metrics import METEOR_SWITCH

BEFORE_FINETUNE = ("data", "vocab", "features", "embeddings", "train")


@pytest.fixture(scope="module")
def tiny_repo(tiny_pipeline: Path, tmp_path_factory, one_thread_each) -> Path:
    """The tiny project after `dvc repro` of every stage (conftest's tiny_pipeline, built once per session)."""
    return copy_repository(tiny_pipeline, tmp_path_factory.mktemp("scst") / "repo")


@pytest.mark.slow
def test_zero_epochs_passes_the_model_through_as_one_cache_object(tiny_repo: Path):
    assert yaml.safe_load((tiny_repo / "params.yaml").read_text())["scst"]["epochs"] == 0
    final, cross_entropy = tiny_repo / "models/model.pt", tiny_repo / "models/cross_entropy.pt"
    assert final.read_bytes() == cross_entropy.read_bytes()
    outs = {
        out["path"]: out["md5"]
        for stage in yaml.safe_load((tiny_repo / "dvc.lock").read_text())["stages"].values()
        for out in stage.get("outs", [])
    }
    assert outs["models/model.pt"] == outs["models/cross_entropy.pt"]
    assert final.stat().st_ino == cross_entropy.stat().st_ino  # cache type hardlink: both are links to one file
    assert json.loads((tiny_repo / "metrics/finetune/metrics.json").read_text())["best_epoch"] == 0


@pytest.mark.slow
def test_an_scst_experiment_reruns_only_finetune_and_evaluate(tiny_repo: Path):
    result = run(["dvc", "exp", "run", "-n", "scst-1", "-S", "scst.epochs=1"], tiny_repo)
    output = result.stdout + result.stderr
    for stage in BEFORE_FINETUNE:
        assert f"Stage '{stage}' didn't change, skipping" in output, output
    assert "Running stage 'finetune'" in output and "Running stage 'evaluate'" in output
    plots = tiny_repo / "metrics/finetune/plots/metrics"
    assert len((plots / "val_cider.tsv").read_text().splitlines()) == 1 + 2  # epoch 0 (the start) and 1
    assert len((plots / "reward.tsv").read_text().splitlines()) == 1 + 1
    assert len((plots / "baseline.tsv").read_text().splitlines()) == 1 + 1
    summary = json.loads((tiny_repo / "metrics/finetune/metrics.json").read_text())
    assert summary["best_epoch"] in (0, 1) and "best_val_cider" in summary
    assert "scst.epochs" in run(["dvc", "params", "diff"], tiny_repo).stdout


def _finetune(repo: Path, **paths: str) -> subprocess.Popen:
    command = stage_command("finetune", **paths)
    return subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _epochs_saved(state: Path) -> int:
    try:
        return len(torch.load(state, weights_only=True)["history"])
    except Exception:
        return 0


@pytest.mark.slow
def test_finetune_killed_mid_run_resumes_to_the_uninterrupted_result(tiny_repo: Path):
    write_params(tiny_repo, {"scst": {**TINY["scst"], "epochs": 12, "baseline": "mean", "lr": 0.002}})
    try:
        state = tiny_repo / "scratch/finetune/state.pt"
        straight = {"model": "models/straight.pt", "live": "metrics/straight"}
        assert _finetune(tiny_repo, **straight).wait() == 0 and not state.exists()

        process, deadline = _finetune(tiny_repo, model="models/resumed.pt"), time.monotonic() + 600
        while _epochs_saved(state) < 2:  # epochs 0 and 1 saved: killed with ten epochs to go
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "the stage never saved its state"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (tiny_repo / "models/resumed.pt").exists()
        resumed = _finetune(tiny_repo, model="models/resumed.pt")
        output = resumed.communicate()[0].decode()
        assert resumed.returncode == 0 and "resuming after epoch" in output, output
    finally:
        run(["git", "checkout", "params.yaml"], tiny_repo)
    expected = json.loads((tiny_repo / "metrics/straight/metrics.json").read_text())
    actual = json.loads((tiny_repo / "metrics/finetune/metrics.json").read_text())
    assert {k: v for k, v in actual.items() if "seconds" not in k} == {
        k: v for k, v in expected.items() if "seconds" not in k
    }
    a = torch.load(tiny_repo / "models/straight.pt", weights_only=True)["state_dict"]
    b = torch.load(tiny_repo / "models/resumed.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.slow
def test_ctrl_c_during_scst_is_one_line_and_the_rerun_resumes(tiny_repo: Path, monkeypatch):
    """SIGINT to the stage's whole process group, as a terminal sends Ctrl-C (the scorer's Java process gets it too)."""
    monkeypatch.setenv(METEOR_SWITCH, "on")  # METEOR's Java process running beside the stage, as in a real run
    write_params(tiny_repo, {"scst": {**TINY["scst"], "epochs": 6, "baseline": "mean", "lr": 0.002}})
    state, model = tiny_repo / "scratch/finetune/state.pt", tiny_repo / "models/interrupted.pt"
    try:
        state.unlink(missing_ok=True)
        # as in a terminal: SIGINT raises KeyboardInterrupt (a background job of a CI shell starts with it ignored)
        stage = (
            "import runpy, signal\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "runpy.run_module('stages.finetune', run_name='__main__', alter_sys=True)\n"
        )
        process = subprocess.Popen(
            [sys.executable, "-c", stage, *stage_command("finetune", model=model)[3:]],
            cwd=tiny_repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 600
        while _epochs_saved(state) < 2:  # the start and epoch 1 saved: interrupted during epoch 2
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the stage never saved its state"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
        stderr = process.communicate(timeout=120)[1]
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr and "Exception" not in stderr, stderr
        assert stderr.splitlines()[-1] == (
            "interrupted: no partial output was written (dvc checkout restores the last recorded one); the state "
            "after the last completed SCST epoch is kept in scratch/finetune/; rerun the stage (dvc repro) to "
            "continue after it"
        )
        assert not model.exists() and _epochs_saved(state) >= 2
        resumed = _finetune(tiny_repo, model=str(model))
        output = resumed.communicate()[0].decode()
        assert resumed.returncode == 0 and "resuming after epoch" in output, output
        assert model.is_file() and not state.exists()
    finally:
        run(["git", "checkout", "params.yaml"], tiny_repo)


@pytest.mark.slow
def test_a_read_only_models_folder_stops_finetune_before_its_metrics_are_touched(tiny_repo: Path, monkeypatch, capsys):
    """The issue's case: the stage stopped with the right line but had first emptied metrics/finetune/metrics.json.

    Tests run as root, who may write anywhere: os.access answers for models/ as for another user, and the model's
    write fails as it then would."""
    import errno

    import captioning.finetune.run
    import captioning.io

    metrics = tiny_repo / "metrics/finetune/metrics.json"
    before = metrics.read_bytes()
    access = os.access
    monkeypatch.setattr(
        captioning.io.os, "access", lambda path, mode: Path(path).name != "models" and access(path, mode)
    )

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tiny_repo / "models/model.pt"))

    monkeypatch.setattr(captioning.finetune.run, "pass_through", read_only)
    monkeypatch.setattr(captioning.finetune.run, "save_finetuned", read_only)
    result = run_stage_here(tiny_repo, "finetune", monkeypatch, capsys)
    assert metrics.read_bytes() == before
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: models/model.pt: cannot write it, its folder is read-only for this user (permission denied)"
    ]
