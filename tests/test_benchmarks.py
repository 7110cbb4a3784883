"""Every script in benchmarks/ runs to its report at a tiny size, so a change that breaks one fails here.

One tiny project (tests/tiny_repo.py's params) is built once: the data, vocab, features and embeddings
stages, and a tiny model (tests/tiny_model.py) over its vocabulary as models/cross_entropy.pt and
models/model.pt. Each script then runs in that copy with small arguments; its numbers are not checked
(timings are the benchmarks' business), only that it reaches its report and what it asserts itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch
from tiny_model import write_tiny_model
from tiny_repo import REPO, TINY, copy_repository, environment

from captioning.text.vocabulary import Vocabulary

pytestmark = pytest.mark.slow
THREADS = ["--threads", "1"]
SCRIPTS = {  # script: (arguments, a line of its report)
    "beam_search.py": (
        ["--images", "4", "--beam", "2", "--batch-size", "2", "--max-len", "4", "--repeats", "1", *THREADS],
        "same captions: 4/4 images (OK)",
    ),
    "demo.py": (["--repeats", "1"], "whole upload"),
    "demo_load.py": (["--users", "5"], "every reply named its own file: yes"),
    "intervals.py": (["--images", "40", "--resamples", "50", "--naive", "1"], "naive re-scoring / bootstrap"),
    "features.py": (  # two worker counts, through parts (4 images, parts of 3)
        [
            "--images=4",
            "--batch-size=2",
            "--fp32-batches=1",
            "--workers=0,1",
            "--chunk-size=3",
            "--repeats=1",
            *THREADS,
        ],
        "the same output, byte for byte: yes",
    ),
    "memory.py": (["--images", "40", "--budget-mb", "1", "--batch-size", "8"], "worst "),
    "profile_step.py": (
        ["--vocab", "40", "--embed-dim", "8", "--dim", "16", "--batch-size", "4", "--scst-batch", "2", *THREADS],
        "| training step, fast module |",
    ),
    "scst.py": (["--batches", "1", "--repeats", "1", *THREADS], "one SCST step"),
    "train_step.py": (
        ["--captions", "16", "--batch-size", "8", "--vocab", "40", "--dim", "16", "--repeats", "1", *THREADS],
        "Training step",
    ),
    "validation_overlap.py": (
        ["--epochs", "2", "--repeats", "1", "--captions", "16"],
        "the same kept epoch and scores: True; the same weights: True",
    ),
}


def test_every_benchmark_script_is_run_here():
    scripts = {path.name for path in (REPO / "benchmarks").iterdir() if path.suffix in (".py", ".sh")}
    covered = set(SCRIPTS) | {"scale.py", "gpu_check.sh", "remote.sh"}
    assert scripts - {"_timing.py"} == covered


@pytest.fixture(scope="module")
def project(tiny_upstream: Path, tmp_path_factory, one_thread_each) -> Path:
    repo = copy_repository(tiny_upstream, tmp_path_factory.mktemp("benchmarks") / "repo")  # data ... embeddings run
    words = Vocabulary.load(repo / "data/vocab.json").words
    with h5py.File(repo / "data/features.h5", "r") as features:
        fingerprint = str(features.attrs["encoder_fingerprint"])
    model = write_tiny_model(repo / "models/cross_entropy.pt", words, TINY["features"]["image_size"], fingerprint)
    shutil.copyfile(model, repo / "models/model.pt")
    return repo


def benchmark(project: Path, *command: str) -> subprocess.CompletedProcess:
    env = dict(environment(), PYTHONPATH=str(project), OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_benchmark_reaches_its_report(project: Path, script: str):
    arguments, expected = SCRIPTS[script]
    result = benchmark(project, sys.executable, f"benchmarks/{script}", *arguments)
    assert expected in result.stdout, result.stdout


def test_the_scale_rehearsal_runs_its_first_stages(tmp_path: Path):
    """From the repository itself, as it is run: it copies the project (git's files) into --workdir."""
    command = ["benchmarks/scale.py", "--images", "30", "--jobs", "1", "--stages", "data,vocab"]
    result = benchmark(REPO, sys.executable, *command, "--workdir", str(tmp_path))
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")]
    assert {"data", "vocab"} <= set(rows), result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU rehearsal itself is not a smoke test")
def test_the_gpu_check_stops_with_one_line_without_a_gpu(project: Path):
    env = dict(environment(), PYTHON=sys.executable, PYTHONPATH=str(project))
    result = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "30", os.devnull], cwd=project, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: no CUDA device visible to {sys.executable} (torch.cuda.is_available() is False); "
        "run this on a GPU machine"
    ]


def test_the_gpu_check_calls_only_a_two_process_run_an_nccl_check():
    """One process under torchrun makes no process group: the script must not report NCCL as checked by it."""
    script = (REPO / "benchmarks/gpu_check.sh").read_text()
    assert "--nproc_per_node=2" in script and 'if [ "$gpus" -ge 2 ]' in script
    assert 'echo "not verified: NCCL (one GPU; it needs two processes on two GPUs)"' in script
    assert "one process (no process group: NCCL not exercised there)" in script


def test_the_remote_benchmark_shares_a_tiny_run_through_a_folder_remote(
    tiny_pipeline: Path, tmp_path: Path, one_thread_each
):
    """benchmarks/remote.sh on the committed tiny pipeline: its clone restores the run from the project's DVC
    cache (CACHE), pushes, a fresh clone pulls the same model and features and has nothing left to run."""
    project = copy_repository(tiny_pipeline, tmp_path / "project")
    env = dict(environment(), PYTHONPATH="", CACHE=".dvc/cache")
    result = subprocess.run(
        ["bash", "benchmarks/remote.sh", str(tmp_path / "bench")],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "model and features identical" in result.stdout, result.stdout
