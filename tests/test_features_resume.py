"""captioning/features/parts.py through the real stage: kill -9 and rerun, stale parts, several processes.

Every run must give the file an uninterrupted single-process run gives: same features, image names,
skipped images and attributes.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from tiny_repo import TINY, copy_project, run, stage_command, write_params

CHUNK = 4  # 52 tiny images -> 13 parts, each long enough (128 x 128 pixels) to be caught between two parts
pytestmark = pytest.mark.usefixtures("one_thread_each")
PARAMS = {**TINY, "features": {**TINY["features"], "chunk_size": CHUNK, "image_size": 128}}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, one_thread_each) -> Path:
    repo = tmp_path_factory.mktemp("features_resume")
    copy_project(repo)
    write_params(repo, PARAMS)
    run(stage_command("data"), repo)
    run(stage_command("features", output="data/straight.h5"), repo)
    return repo


def contents(path: Path) -> dict:
    with h5py.File(path, "r") as file:
        return {"attrs": dict(file.attrs), **{name: file[name][:] for name in file}}


def assert_same_file(path: Path, expected: Path) -> None:
    actual, wanted = contents(path), contents(expected)
    assert set(actual) == set(wanted) == {"attrs", "features", "images", "skipped"}
    assert actual.pop("attrs") == wanted.pop("attrs")
    for name, values in wanted.items():
        assert actual[name].dtype == values.dtype and np.array_equal(actual[name], values), name


def parts(repo: Path) -> list[Path]:
    return sorted((repo / "scratch/features").glob("*/part-*.h5"))


def kill_after_parts(repo: Path, count: int) -> int:
    """Start the stage, SIGKILL it once `count` parts exist; returns the parts left behind."""
    process = subprocess.Popen(stage_command("features"), cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while len(parts(repo)) < count:
        assert process.poll() is None, f"the stage ended before it could be interrupted:\n{process.stdout.read()}"
        assert time.monotonic() < deadline, "no parts were written"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return len(parts(repo))


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_finished_parts(prepared: Path):
    left = kill_after_parts(prepared, 2)
    total = -(-(PARAMS["data"]["num_train"] + PARAMS["data"]["num_val"] + PARAMS["data"]["num_test"]) // CHUNK)
    assert 2 <= left < total and not (prepared / "data/features.h5").exists()

    result = run(stage_command("features"), prepared)
    assert f"reusing {left} of {total} finished parts" in result.stderr, result.stderr
    assert_same_file(prepared / "data/features.h5", prepared / "data/straight.h5")
    assert not any((prepared / "scratch/features").iterdir()), "the parts are deleted once the output is in place"


@pytest.mark.slow
def test_parts_of_another_configuration_are_not_reused(prepared: Path):
    write_params(prepared, {"features": {"seed": 1}})  # another random encoder: other features
    try:
        assert kill_after_parts(prepared, 1) >= 1
    finally:
        write_params(prepared, {"features": {"seed": 0}})
    (stale,) = (prepared / "scratch/features").iterdir()

    result = run(stage_command("features"), prepared)
    assert "reusing" not in result.stderr and f"removing {stale.relative_to(prepared)}" in result.stderr
    assert_same_file(prepared / "data/features.h5", prepared / "data/straight.h5")
    assert not stale.exists()


@pytest.mark.slow
def test_two_processes_write_the_same_file_as_one(prepared: Path):
    write_params(prepared, {"features": {"nproc": 2}})
    try:
        result = run(stage_command("features", output="data/two.h5"), prepared)
    finally:
        write_params(prepared, {"features": {"nproc": 1}})
    assert "in 2 processes" in result.stderr
    assert_same_file(prepared / "data/two.h5", prepared / "data/straight.h5")
