"""Two `dvc repro` at once on one repository: the second is refused with a lock message, the first finishes.

Deterministic: the first run's stage command is paused (SIGSTOP) while DVC holds that stage's write lock,
the second runs to its end, then the stage is resumed (SIGCONT) and the first run finishes.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from tiny_repo import commit_all, copy_project, environment, run, write_params

TINY_DATA = {"data": {"num_train": 40, "num_val": 6, "num_test": 6, "image_size": 64}}
TARGET = "vocab"  # data -> vocab: two real stages, no torch, a few seconds


def tiny_project(target: Path) -> None:
    """The project as a fresh clone has it, tiny params, one git commit."""
    copy_project(target)
    write_params(target, TINY_DATA)
    commit_all(target)


def stage_write_locks(repo: Path) -> dict:
    """The outputs DVC has write-locked for a running stage (.dvc/tmp/rwlock), {} when none or mid-write."""
    try:
        return json.loads((repo / ".dvc/tmp/rwlock").read_text()).get("write", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def suspend(processes: list[psutil.Process], timeout: float = 5) -> bool:
    """SIGSTOP each process; True once all of them are stopped."""
    for process in processes:
        process.suspend()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(process.status() == psutil.STATUS_STOPPED for process in processes):
            return True
        time.sleep(0.01)
    return False


def resume(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.resume()
        except psutil.NoSuchProcess:
            pass


def running_stage(processes: list[psutil.Process]) -> str | None:
    """The stage whose `python -m stages.NAME` is among `processes`, None when there is none yet.

    The shell DVC starts has "stages.NAME" inside its one `-c` argument before (and while) it forks the
    python process, so only an argument that *is* the module name counts.
    """
    for process in processes:
        for argument in process.cmdline():
            if argument.startswith("stages."):
                return argument.split(".")[1]
    return None


def pause_inside_a_stage(run: subprocess.Popen, repo: Path, timeout: float = 300) -> tuple[list[psutil.Process], str]:
    """SIGSTOP the stage command that `run` has started, while DVC holds that stage's write lock.

    DVC itself is left running: while its stage command runs it holds no repository or database lock,
    only the stage's read/write locks, so pausing it there is what any slow stage looks like.
    Returns the paused processes and the stage's name.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.poll() is not None:
            raise AssertionError(f"the first dvc repro ended ({run.returncode}) before it could be paused")
        command: list[psutil.Process] = []
        try:
            command = psutil.Process(run.pid).children(recursive=True)
            if stage_write_locks(repo) and running_stage(command):
                if suspend(command) and stage_write_locks(repo) and (stage := running_stage(command)):
                    return command, stage
                resume(command)
        except psutil.NoSuchProcess:
            resume(command)  # the stage ended in between: try the next one
        time.sleep(0.02)
    raise AssertionError("the first dvc repro never entered a stage")


@pytest.mark.slow
def test_a_second_repro_is_refused_while_the_first_runs(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    tiny_project(repo)
    log = tmp_path / "first.log"
    with open(log, "w") as output:
        first = subprocess.Popen(
            ["dvc", "repro", TARGET],
            cwd=repo,
            env=environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    paused = []
    try:
        paused, stage = pause_inside_a_stage(first, repo)
        held = stage_write_locks(repo)
        second = run(["dvc", "repro", TARGET], repo, check=False)
    finally:
        resume(paused)
        if not paused:
            first.kill()
    first.wait(timeout=600)
    first_output = log.read_text()

    second_output = second.stdout + second.stderr
    assert second.returncode != 0, second_output
    busy = [path for path in held if f"ERROR: failed to reproduce '{stage}': '{path}' is busy" in second_output]
    assert busy and f"(PID {first.pid}): " in second_output, (held, second_output)
    assert "Running stage" not in second_output

    assert first.returncode == 0, first_output
    assert "Running stage 'data'" in first_output and "Running stage 'vocab'" in first_output
    assert "Data and pipelines are up to date." in run(["dvc", "status", TARGET], repo).stdout
    assert stage_write_locks(repo) == {}
    assert sorted(p.name for p in repo.rglob(".*.tmp-*")) == []
