"""captioning/cli.py: Ctrl-C raised where it can be, never lost (real signals, sent to this process); a stage's
process that stops, on an error or a Ctrl-C, says why in one line."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from captioning.cli import ctrl_c_deferred, ctrl_c_remembered, raise_if_interrupted, run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ctrl_c_raises():
    """SIGINT as in a terminal (a CI job started in the background has it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_in_a_deferred_block_is_raised_when_the_block_ends(ctrl_c_raises):
    steps = []
    with pytest.raises(KeyboardInterrupt), ctrl_c_deferred():
        os.kill(os.getpid(), signal.SIGINT)  # a signal to oneself is handled before kill returns
        steps.append("after the signal")
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the one Python printed
def test_a_ctrl_c_lost_where_python_ignores_exceptions_is_raised_by_check(ctrl_c_raises):
    class Collected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # its KeyboardInterrupt is printed and ignored

    with ctrl_c_remembered():
        Collected()  # collected at once
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    raise_if_interrupted()  # remembered in the block only: code run after it (the next test, here) runs on


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with ctrl_c_remembered(), ctrl_c_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            raise_if_interrupted()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------------------------------------------------------
# run(): what a stage's process says when it stops, in one line on stderr.


def test_a_full_disk_outside_atomic_writes_is_one_line_too(capsys):
    """E.g. DVCLive writing metrics/train/: cli.run reports the file and the cause, exit status 1."""

    def main():
        raise OSError(errno.ENOSPC, "No space left on device", "metrics/train/metrics.json")

    with pytest.raises(SystemExit) as stopped:
        run(main)
    assert stopped.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: metrics/train/metrics.json: no space left on device (any resumable state is kept: free some space "
        "and rerun)"
    ]


INTERRUPTED = "interrupted: no partial output was written (dvc checkout restores the last recorded one); "


@pytest.mark.parametrize(
    ("stage", "kept"),
    [
        ("train", "the state after the last completed epoch is kept in scratch/train/; rerun the stage (dvc repro) to "
                  "continue after it"),
        ("features", "the finished parts in scratch/features/ are kept; rerun the stage (dvc repro) to continue from "
                     "them"),
        ("finetune", "the state after the last completed SCST epoch is kept in scratch/finetune/; rerun the stage "
                     "(dvc repro) to continue after it"),
        ("vocab", "rerun the stage (dvc repro) to run it again"),
    ],
)  # fmt: skip
def test_ctrl_c_is_one_line_saying_what_was_kept(tmp_path: Path, stage: str, kept: str):
    """A real SIGINT, sent by the stage to itself while it sleeps: no race, the signal is pending when sleep starts."""
    script = tmp_path / "stages" / f"{stage}.py"
    script.parent.mkdir()
    script.write_text(
        "import os, signal, time\nfrom captioning.cli import run\n\n\n"
        "def main():\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(60)\n\n\n"
        # as in a terminal: a shell's background jobs (a CI runner's, say) start with SIGINT ignored
        "signal.signal(signal.SIGINT, signal.default_int_handler)\nrun(main)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 130
    assert result.stderr.splitlines() == [INTERRUPTED + kept]
