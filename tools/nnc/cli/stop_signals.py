"""SIGTERM, SIGINT and SIGHUP for a command that starts child processes (`nnc serial`): the
signal becomes an `Interrupted` exception (nnc.cli.main exits 128 + the signal) so that the
command stops its children on the way out, whenever the signal comes.

Raising from the signal handler alone is not enough, because the exception is raised wherever
the main thread happens to be:
- some code swallows it: the Cython modules of numpy register their classes with an ABC inside a
  bare `try: ... except: pass` at import, so a Ctrl-C during the first `np.random` use of
  `nnc serial` vanished and the command went on with its 3000 images for minutes. So the first
  signal is also recorded, and `check()` raises it again where the command passes often (every
  byte it reads, every sample, the end of the command);
- some steps must not be cut in two: between the start of a child process and the recording of
  its pid (a child nobody knows of would outlive the command), and the clean-up that kills the
  child (an exception in it would skip the kill). `deferred()` records a signal that comes in
  such a step and raises it when the step is done.
A second signal is ignored: the clean-up is bounded and must not be cut short.
"""
from __future__ import annotations

import contextlib
import signal
import threading

from nnc.errors import Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_received = None   # the first stop signal of the running command
_deferring = 0     # > 0 inside deferred(): record the signal, raise it at the end


def _handler(signum, frame):
    global _received
    if _received is None:
        _received = signum
        if not _deferring:
            raise Interrupted(signum)


def check():
    """Raises Interrupted if a stop signal came (and was not raised, or was swallowed)."""
    if _received is not None and not _deferring:
        raise Interrupted(_received)


@contextlib.contextmanager
def deferred():
    """A step that a stop signal must not cut: the signal is raised when it is done."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    check()


@contextlib.contextmanager
def handled():
    """The stop signals raise Interrupted for the duration of the `with` (the main thread only:
    Python runs signal handlers there); the previous handlers are restored afterwards."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received = None
    previous = {sig: signal.signal(sig, _handler) for sig in STOP_SIGNALS}
    try:
        yield
        check()    # the command ended normally, but a signal came and its exception was lost
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _received = None
