"""captioning/cli.py's Ctrl-C: raised where it can be, never lost (real signals, sent to this process)."""

from __future__ import annotations

import os
import signal

import pytest

from captioning.cli import ctrl_c_deferred, ctrl_c_remembered, raise_if_interrupted


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
