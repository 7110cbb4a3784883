"""Ctrl-C that is never lost: SIGINT remembered as well as raised, and deferred while worker processes start or stop.

Python runs a signal's handler at the next instruction of the main thread, wherever that is. When it is inside
a callback whose exceptions Python only prints ("Exception ignored in ..."): an os.fork hook (logging's, when a
DataLoader starts its workers) or a __del__ (a DataLoader iterator shutting its workers down), the
KeyboardInterrupt is lost and the stage runs on; when it stops a worker's start or shutdown half-way, a worker
may be left behind. So a stage (captioning.cli.run) remembers every SIGINT (`check` raises it again at the next
safe point), and the starts and shutdowns of worker processes run with it `deferred`: raised once they are done.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_received = False


def _remember_and_raise(signum, frame) -> None:
    global _received
    _received = True
    raise KeyboardInterrupt


@contextmanager
def remembered() -> Iterator[None]:
    """Around a stage's main(), in the main thread: SIGINT raises KeyboardInterrupt, as by default, and is
    remembered for `check`. A SIGINT that is ignored (a shell's background job) or handled otherwise is left so."""
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


def check() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived in `remembered`, also one whose KeyboardInterrupt was lost."""
    if _received:
        raise KeyboardInterrupt


@contextmanager
def deferred() -> Iterator[None]:
    """A SIGINT during the block is raised when the block ends, not in the middle of it. Processes forked in the
    block inherit a handler that only records it (ignore_in_worker then ignores it for good)."""
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


def ignore_in_worker(worker_id: int | None = None) -> None:
    """A DataLoader's worker_init_fn: Ctrl-C reaches the whole process group, workers included, and only the main
    process acts on it (it stops its workers); a worker that died of it could leave the main process waiting."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
