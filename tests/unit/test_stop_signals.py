"""nnc.cli.stop_signals: a stop signal raises Interrupted, is raised again where an exception
was swallowed, waits for the end of a deferred step, and the handlers are put back afterwards.
(The signal at every moment of a real `nnc serial` run: tests/test_stm32.py, tests/test_riot.py.)"""
import os
import signal
import threading

import pytest

from nnc.cli import stop_signals
from nnc.errors import Interrupted


@pytest.fixture(autouse=True)
def main_thread():
    if threading.current_thread() is not threading.main_thread():   # Python runs handlers only there
        pytest.fail("the stop-signal tests need the main thread (their handlers are not installed elsewhere)")


def send(sig=signal.SIGHUP):
    os.kill(os.getpid(), sig)
    for _ in range(1000):     # the handler runs between two bytecodes of this loop
        pass


def test_a_signal_raises_interrupted_and_the_handlers_are_put_back():
    before = signal.getsignal(signal.SIGHUP)
    with pytest.raises(Interrupted) as e:
        with stop_signals.handled():
            send()
    assert e.value.signum == signal.SIGHUP and str(e.value) == "SIGHUP"
    assert signal.getsignal(signal.SIGHUP) is before
    stop_signals.check()      # nothing left over for the next command


def test_a_swallowed_interrupted_is_raised_again():
    with pytest.raises(Interrupted):
        with stop_signals.handled():
            try:                 # what numpy's Cython import does around ABC registration
                send()
            except BaseException:
                pass
            with pytest.raises(Interrupted):
                stop_signals.check()
    # and at the end of the command when nothing checked before
    with pytest.raises(Interrupted):
        with stop_signals.handled():
            try:
                send(signal.SIGTERM)
            except BaseException:
                pass


def test_a_deferred_step_finishes_then_raises_and_a_second_signal_is_ignored():
    done = []
    with pytest.raises(Interrupted) as e:
        with stop_signals.handled():
            with stop_signals.deferred():
                send(signal.SIGTERM)
                with stop_signals.deferred():   # nested: only the outer end raises
                    send(signal.SIGINT)         # the second signal: ignored
                done.append("inner")
                done.append("outer")
    assert done == ["inner", "outer"] and e.value.signum == signal.SIGTERM


def test_without_handlers_nothing_is_deferred_or_raised():
    with stop_signals.deferred():
        stop_signals.check()
