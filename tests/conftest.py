"""Small shared fixtures: a tiny decoder and a tiny HDF5 features file (vocab 12, dims 16, 5 regions x 8)."""

from __future__ import annotations

import builtins
import fcntl
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from repo_params import repo_params
from tiny_repo import UPSTREAM_STAGES, build_tiny, copy_repository, reproduce

import captioning.io
from captioning.features.store import FeatureWriter
from captioning.model import CaptionDecoder, DecoderConfig, build_decoder
from captioning.scoring import metrics
from captioning.scoring.metrics import METEOR_SWITCH, CaptionScorer

VOCAB, EMBED, FEATURE_DIM, REGIONS, HIDDEN = 12, 16, 8, 5, 16

# No METEOR in the stages the tests run (its Java process takes 5-20 s to load its tables), except where a test
# turns it on (METEOR_SWITCH=on) or a scorer asks for it by name: CaptionScorer(meteor=True).
# `CAPTIONING_METEOR=on pytest` runs every stage with it.
os.environ.setdefault(METEOR_SWITCH, "off")

# pytest-xdist runs the suite in one worker per core (`-n auto`, pyproject.toml). Each worker, and the stage
# processes it starts, gets its share of the cores: two processes that each spin OpenMP threads on every core run
# many times slower than one.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    THREADS = max(1, len(os.sched_getaffinity(0)) // WORKERS)
    torch.set_num_threads(THREADS)
    os.environ["OMP_NUM_THREADS"] = str(THREADS)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: no error where it is not installed
def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker per core, at most four (each worker starts its own METEOR, 1.2 GB of Java)."""
    return min(len(os.sched_getaffinity(0)), 4)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """`build(folder)` run once per test session, its repository shared. Under pytest-xdist each worker is a process
    with its own session fixtures: the first worker to ask builds in the folder all workers share, the others wait
    for it (a file lock) instead of building their own."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # every worker's base folder lives in the run's
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # left by a worker whose build failed
            folder.mkdir()
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("OMP_NUM_THREADS", "1")  # as one_thread_each: small convolutions on 2 busy cores
                build(folder / "repo")
            done.touch()
    return folder / "repo"


@pytest.fixture(scope="session")
def tiny_upstream(tmp_path_factory) -> Path:
    """The tiny project (TINY params) after `dvc repro` of data, vocab, features and embeddings, committed. Built
    once per session and shared: never change it, copy it (copy_repository) into the test's own folder."""
    return built_once(tmp_path_factory, "tiny-upstream", lambda repo: build_tiny(repo, UPSTREAM_STAGES))


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_upstream: Path, tmp_path_factory) -> Path:
    """tiny_upstream after `dvc repro` of every stage (train, finetune with 0 epochs, evaluate), committed. Shared
    as tiny_upstream is: copy it."""
    return built_once(tmp_path_factory, "tiny-pipeline", lambda repo: reproduce(copy_repository(tiny_upstream, repo)))


@pytest.fixture(scope="session")
def meteor_scorer():
    """One CaptionScorer with METEOR 1.5 kept running, shared by the tests that only score with it: its Java
    process loads its paraphrase tables once (5-20 s) instead of once per test. Tests of starting, stopping or
    killing METEOR make their own."""
    if not metrics.java_available():
        pytest.skip("Java is not installed")
    with CaptionScorer(meteor=True) as scorer:
        yield scorer


@pytest.fixture
def torch_single_thread():
    """One intra-op thread while the test runs: tiny tensors on a shared 2-core machine are 100x faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread_each():
    """OMP_NUM_THREADS=1 for the stage processes a test starts (as torchrun sets per rank): small
    convolutions on a busy 2-core machine run many times faster with one thread per process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture
def make_decoder() -> Callable[..., CaptionDecoder]:
    """A seeded tiny decoder (fast by default, or implementation="paper") in eval mode, with non-trivial
    feature statistics. The same seed gives the same parameters in both implementations."""

    def make(
        attention: str = "soft",
        seed: int = 0,
        dropout: float = 0.0,
        vocab_size: int = VOCAB,
        deep_output: bool = False,
        implementation: str = "fast",
    ) -> CaptionDecoder:
        torch.manual_seed(seed)
        shape = {"attention": attention, "dropout": dropout, "deep_output": deep_output}
        model = repo_params("model", **shape, decoder_dim=HIDDEN, attention_dim=HIDDEN, implementation=implementation)
        decoder = build_decoder(DecoderConfig.from_params(model, vocab_size, EMBED, FEATURE_DIM), model.implementation)
        decoder.set_feature_statistics(torch.randn(FEATURE_DIM) * 0.1, torch.rand(FEATURE_DIM) + 0.5)
        return decoder.eval()

    return make


@pytest.fixture
def features() -> Callable[..., torch.Tensor]:
    """Seeded random region features (batch, REGIONS, FEATURE_DIM)."""

    def make(batch: int, seed: int = 1) -> torch.Tensor:
        return torch.randn(batch, REGIONS, FEATURE_DIM, generator=torch.Generator().manual_seed(seed))

    return make


@pytest.fixture
def feature_file(tmp_path: Path) -> Callable[..., Path]:
    """Write (N, R, F) features and their names with FeatureWriter; returns the file's path."""

    def write(names: list[str], values: np.ndarray, skipped: list[str] = (), name: str = "features.h5") -> Path:
        path = tmp_path / name
        writer = FeatureWriter(path, len(names), values.shape[1], values.shape[2], attrs={"image_size": 64})
        writer.append(list(names), values)
        writer.close(list(skipped))
        return path

    return write


@pytest.fixture
def captioning_warnings(caplog) -> Callable[[], list[str]]:
    """The warnings the captioning loggers have logged so far in the test (caplog's records)."""

    def messages() -> list[str]:
        return [
            r.getMessage() for r in caplog.records if r.name.startswith("captioning") and r.levelno == logging.WARNING
        ]

    return messages


@pytest.fixture
def full_disk(monkeypatch):
    """Every file captioning.io writes goes to /dev/full: the kernel's own ENOSPC, on the real write call."""

    def open_full(path, mode="r", *args, **kwargs):
        return builtins.open("/dev/full" if "w" in mode else path, mode, *args, **kwargs)

    monkeypatch.setattr(captioning.io, "open", open_full, raising=False)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 kB tmpfs: a real full disk. Needs root and mount rights (a container without them skips)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)
