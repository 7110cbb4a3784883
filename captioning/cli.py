"""What every entry point shares: logging set-up and turning user errors into one line and exit 1.

Also, when a stage starts, temporaries left in the output folders by a killed run are removed, and
Ctrl-C ends a stage with one line saying what was kept and how to continue (exit status 130).

A Ctrl-C is never lost. Python runs a signal's handler at the next instruction of the main thread, wherever
that is. Inside a callback whose exceptions Python only prints ("Exception ignored in ..."), such as an os.fork
hook (logging's, as a DataLoader starts its workers) or a __del__, the KeyboardInterrupt was lost and the stage
ran on; in the middle of a worker's start or shutdown it could leave a dead worker and no exit. So run() remembers
every SIGINT (raise_if_interrupted raises it again at the next safe point), and worker processes start and stop
with it deferred (ctrl_c_deferred: raised once they are done).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from captioning.errors import CaptioningError
from captioning.io import output_error, remove_stale_temporaries

log = logging.getLogger("captioning")
OUTPUT_FOLDERS = ("data", "models", "metrics", "reports", "scratch")  # where the stages write (dvc.yaml's outs)
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report it
KEPT_ON_INTERRUPT = {
    "features": "the finished parts in scratch/features/ are kept; rerun the stage (dvc repro) to continue from them",
    "train": "the state after the last completed epoch is kept in scratch/train/; rerun the stage (dvc repro) to "
    "continue after it",
    "finetune": "the state after the last completed SCST epoch is kept in scratch/finetune/; rerun the stage "
    "(dvc repro) to continue after it",
}


def stage_arguments(description: str, paths: list[str], scratch: str | None = None) -> argparse.ArgumentParser:
    """A stage's command line: every file it reads or writes is a required --option, so dvc.yaml's `cmd` is the
    one place that names them and a stage run by hand is given the same paths. `scratch`: the default folder of
    resumable state (not an output, so not in dvc.yaml)."""
    parser = argparse.ArgumentParser(description=description)
    for name in paths:
        parser.add_argument(f"--{name}", type=Path, required=True)
    if scratch is not None:
        parser.add_argument("--scratch", type=Path, default=Path(scratch), help="resumable state, not an output")
    return parser


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("gensim").setLevel(logging.WARNING)


def interrupted_message(stage: str) -> str:
    kept = KEPT_ON_INTERRUPT.get(stage, "rerun the stage (dvc repro) to run it again")
    return f"interrupted: no partial output was written (dvc checkout restores the last recorded one); {kept}"


def _stage_name(main: Callable) -> str:
    """`train` for stages/train.py, also when it runs as __main__ (python -m stages.train, torchrun)."""
    module = sys.modules.get(main.__module__)
    return Path(getattr(module, "__file__", None) or main.__module__).stem


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(); a CaptioningError becomes `error: <message>` on stderr and exit status 1.

    A disk that fills up or a read-only folder is reported the same way (the file and the cause); Ctrl-C
    prints one line and exits with status 130, also one that came where Python ignores a KeyboardInterrupt
    (ctrl_c_remembered).
    """
    setup_logging()
    stage = _stage_name(main)
    with ctrl_c_remembered():
        _run(main, stage)


def _run(main: Callable[[], None], stage: str) -> None:
    try:
        remove_stale_temporaries(OUTPUT_FOLDERS)
        main()
        raise_if_interrupted()  # a Ctrl-C whose KeyboardInterrupt Python ignored still ends the stage with 130
    except CaptioningError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except OSError as error:
        translated = output_error(error.filename or "an output", error, atomic=False)  # e.g. DVCLive's own writes
        if translated is None:
            raise
        print(f"error: {translated}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(interrupted_message(stage), file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)


# ---------------------------------------------------------------------------------------------------------------------
# Ctrl-C, never lost

_received = False


def _remember_and_raise(signum, frame) -> None:
    global _received
    _received = True
    raise KeyboardInterrupt


@contextmanager
def ctrl_c_remembered() -> Iterator[None]:
    """Around a stage's main(), in the main thread: SIGINT raises KeyboardInterrupt, as by default, and is
    remembered for raise_if_interrupted until the block ends. A SIGINT ignored (a shell's background job) or handled
    otherwise is left so."""
    global _received
    _received = False
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:
        signal.signal(signal.SIGINT, _remember_and_raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _received = False  # forgotten: extract_features and others check it outside any stage too (tests)


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived in `ctrl_c_remembered`, also one whose KeyboardInterrupt was lost."""
    if _received:
        raise KeyboardInterrupt


@contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """A SIGINT during the block is raised when the block ends, not in the middle of it. Processes forked in the
    block inherit a handler that only records it (ignore_ctrl_c then ignores it for good)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield  # ignored (SIG_IGN), default (SIG_DFL) or not ours to change: nothing to defer
        return
    arrived = []
    signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if arrived:
            previous(signal.SIGINT, None)  # the handler it would have run: KeyboardInterrupt, here


def ignore_ctrl_c(worker_id: int | None = None) -> None:
    """A DataLoader's worker_init_fn: Ctrl-C reaches the whole process group, workers included, and only the main
    process acts on it (it stops its workers); a worker that died of it could leave the main process waiting."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
