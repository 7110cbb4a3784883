"""captioning/features/parts.py through the real stage: kill -9 and rerun, stale parts, several processes, Ctrl-C.

Every run must give the file an uninterrupted single-process run gives: same features, image names,
skipped images and attributes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
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


# Ctrl-C as the decoding worker starts (once, before the first part), between two parts, and as the worker stops
# (once, after the last part), delivered by the stage itself to its whole process group (as a terminal sends it, to
# the decoding worker too) at the exact moment: the signal is pending when kill returns, so no timing is involved.
CTRL_C_AT = {
    # the decoding worker is forked: Python runs the handler in os.fork's hooks, which ignore exceptions
    "worker_start": (
        "import traceback\n"
        "def at_fork():\n"
        "    if not sent and any('torch/utils/data' in f.filename for f in traceback.extract_stack()):\n"
        "        ctrl_c()\n"
        "os.register_at_fork(after_in_parent=at_fork)\n"
    ),
    # a part is in place and the next part's file is being created, the worker decoding ahead
    "part_boundary": (
        "from captioning.features.store import FeatureWriter\n"
        "create = FeatureWriter.__init__\n"
        "def create_part(self, *args, **kwargs):\n"
        "    if glob.glob('scratch/features/*/part-*.h5') and not sent:\n"
        "        ctrl_c()\n"
        "    create(self, *args, **kwargs)\n"
        "FeatureWriter.__init__ = create_part\n"
    ),
    # the decoding worker is being stopped, the last part written
    "worker_shutdown": (
        "from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter as Batches\n"
        "shutdown = Batches._shutdown_workers\n"
        "def shutdown_workers(self):\n"
        "    if glob.glob('scratch/features/*/part-*.h5') and not sent:\n"
        "        ctrl_c()\n"
        "    shutdown(self)\n"
        "Batches._shutdown_workers = shutdown_workers\n"
    ),
}


def live_processes_in_group(group: int) -> list[str]:
    """The processes (not zombies) of a process group, from /proc: `pid state command`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(f"{stat.parent.name} {fields[0]} {(stat.parent / 'cmdline').read_bytes()[:80]!r}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("moment", sorted(CTRL_C_AT))
def test_ctrl_c_at_a_part_boundary_is_one_line_and_exit_130(prepared: Path, moment: str):
    """The issue's case: Ctrl-C as one part ended and the next began, when each part started and stopped a decoding
    worker of its own, was ignored (the stage ran on, exit 0) or left a dead worker and no exit. The worker now
    starts and stops once; any moment gives the one line, exit 130, no process left, the finished parts kept."""
    stage = (
        "import glob, os, runpy, signal\n"
        "sent = []\n"
        "def ctrl_c():\n"
        "    sent.append(True)\n"
        "    os.killpg(0, signal.SIGINT)\n"
        "    sent.append(True)  # a Python call after the signal: its handler runs here at the latest\n"
        f"{CTRL_C_AT[moment]}"
        # as in a terminal: SIGINT raises KeyboardInterrupt (a background job of a CI shell starts with it ignored)
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "runpy.run_module('stages.features', run_name='__main__', alter_sys=True)\n"
    )
    write_params(prepared, {"features": {"num_workers": 1}})
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", stage, *stage_command("features", output="data/interrupted.h5")[3:]],
            cwd=prepared, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            stderr = process.communicate(timeout=300)[1]
        except subprocess.TimeoutExpired:
            left = live_processes_in_group(process.pid)
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"no exit after 300 s: {left}\n{process.communicate()[1]}") from None
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr and "Exception" not in stderr, stderr
        assert stderr.splitlines()[-1] == (
            "interrupted: no partial output was written (dvc checkout restores the last recorded one); the finished "
            "parts in scratch/features/ are kept; rerun the stage (dvc repro) to continue from them"
        )
        assert live_processes_in_group(process.pid) == []
        assert not (prepared / "data/interrupted.h5").exists()
        assert bool(parts(prepared)) == (moment != "worker_start")  # the worker starts before the first part
    finally:
        write_params(prepared, {"features": {"num_workers": 0}})
        shutil.rmtree(prepared / "scratch/features", ignore_errors=True)
