"""Ctrl-C in the driver process: one KeyboardInterrupt per run, raised where the run can stop cleanly.

Python raises KeyboardInterrupt wherever the main thread is when it handles the signal. If that is
a ``__del__`` method or a weakref callback (objects are freed all the time while the driver waits
on its workers), the exception is printed as "Exception ignored" and dropped, and the run goes on
to exit 0 as if no one had pressed Ctrl-C. The command line installs :func:`install`'s handler,
which also remembers the Ctrl-C; the executors' loop calls :func:`raise_if_requested` after every
wait, so a dropped KeyboardInterrupt is raised again where the run can stop cleanly.

A second Ctrl-C (people press it twice) must not break the stopping: raised inside a process
pool's shutdown, it left the pool half stopped and printed a traceback, or ended the process by
SIGINT after "interrupted" (found by sending two SIGINTs 50-300 ms apart). So only the first
Ctrl-C raises; later ones are noted and ignored. And code that must not be cut in the middle
(starting or stopping a pool) runs under :func:`deferred`: a Ctrl-C there is raised when it ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_requested = False
_raised = False  # a KeyboardInterrupt was raised for the Ctrl-C: the run is stopping
_deferring = 0  # depth of deferred() sections


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _requested, _raised
    _requested = True
    if _raised or _deferring:
        return  # already stopping, or in a section that raises it when it ends
    _raised = True
    raise KeyboardInterrupt


def install() -> bool:
    """Handle SIGINT with :func:`_on_sigint`, if it has Python's default handler now (whether it
    was installed). A process started with SIGINT ignored (a background job of a non-interactive
    shell, ``nohup``) keeps ignoring it, as the shell meant."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return False
    signal.signal(signal.SIGINT, _on_sigint)
    return True


def requested() -> bool:
    """Whether Ctrl-C was pressed since :func:`install` (or the last :func:`reset`)."""
    return _requested


def raise_if_requested() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed, even if the first one was dropped."""
    global _raised
    if _requested:
        _raised = True
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a Ctrl-C that comes inside the block until the block ends (then raise it, unless the
    run is stopping already or the block raised). Only for short sections, in the main thread:
    a KeyboardInterrupt in the middle of a pool's start-up leaves a thread object that was never
    started, and the pool's shutdown then fails ("cannot join thread before it is started")."""
    global _deferring, _raised
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if _requested and not _raised and not _deferring:
        _raised = True
        raise KeyboardInterrupt


def reset() -> None:
    global _requested, _raised, _deferring
    _requested = _raised = False
    _deferring = 0
