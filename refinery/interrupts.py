"""Ctrl-C in the driver process, even when Python loses the KeyboardInterrupt it raises.

Python raises KeyboardInterrupt wherever the main thread is when it handles the signal. If that is
a ``__del__`` method or a weakref callback (objects are freed all the time while the driver waits
on its workers), the exception is printed as "Exception ignored" and dropped, and the run goes on
to exit 0 as if no one had pressed Ctrl-C. The command line installs :func:`install`'s handler,
which also remembers the Ctrl-C; the executors' loop calls :func:`raise_if_requested` after every
wait, so a dropped KeyboardInterrupt is raised again where the run can stop cleanly.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_requested = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _requested
    _requested = True
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
    if _requested:
        raise KeyboardInterrupt


def reset() -> None:
    global _requested
    _requested = False
