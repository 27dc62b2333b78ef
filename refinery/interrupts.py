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

But the stopping itself can hang (a worker that ignores SIGTERM, a dead mount, a slow S3 call), and
ignoring every later Ctrl-C left a hang only ``kill -9`` ended (the code before ended in a traceback
at the third). So a third Ctrl-C, or a later one :data:`FORCE_AFTER_S` seconds after the first,
while the run is stopping, quits at once: the pool's worker processes are killed, one line is
printed, exit code 130 (:func:`force_quit`).

SIGTERM (``kill``, ``scancel``, ``docker stop``, Kubernetes, a SageMaker stop) is handled the same
way: the run stops as on Ctrl-C (its workers stopped, its run directory's lock or S3 claim let go,
its finished shards kept), says so in one line and exits with code 143 (128 + SIGTERM), as a
process ended by SIGTERM reports it. Unhandled, it ended the driver at once: its S3 claim was left
to lapse (120 s, during which a retried job was refused) and its pool workers ran on until they
noticed their parent gone. (In a container, the driver as pid 1 ignored it altogether.)
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

_requested = False
_raised = False  # a KeyboardInterrupt was raised for the Ctrl-C: the run is stopping
_deferring = 0  # depth of deferred() sections
_presses = 0  # Ctrl-Cs since install() / reset()
_first_at: float | None = None  # time.monotonic() of the first one
_terminated = False  # the stop came from SIGTERM, not Ctrl-C
_previous_sigterm: object = None  # SIGTERM's handler before install() (restored by uninstall())
_finished: str | None = None  # what the command has finished and saved (see finished())

#: the Ctrl-C, counting the first, that quits a run whose stopping it would otherwise wait for
FORCE_PRESSES = 3
#: ... or a later Ctrl-C this many seconds after the first (two quick presses are one impatient press)
FORCE_AFTER_S = 5.0
FORCED_LINE = ("error: forced to quit by a repeated Ctrl-C, without waiting for the run to stop; "
               "run the same command again to resume (its partial shards are discarded)\n")


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """SIGINT's handler, and SIGTERM's (a stop asked by a scheduler: the same clean stop)."""
    global _requested, _raised, _presses, _first_at, _terminated
    if signum == signal.SIGTERM and not _requested:
        _terminated = True
    _requested = True
    _presses += 1
    now = time.monotonic()
    if _first_at is None:
        _first_at = now
    if _raised or _deferring:
        if _presses >= FORCE_PRESSES or now - _first_at >= FORCE_AFTER_S:
            force_quit(exit_code())
        return  # already stopping, or in a section that raises it when it ends
    _raised = True
    raise KeyboardInterrupt


def force_quit(code: int = 130) -> None:
    """End the process now: kill its worker processes (SIGKILL: they may ignore SIGTERM), print
    :data:`FORCED_LINE` and exit with ``code``, without the cleanup that hangs. Every write of a
    run is atomic, and the run directory's lock is the kernel's: a rerun resumes."""
    try:
        for child in multiprocessing.active_children():
            child.kill()
    except Exception:  # noqa: BLE001 - quitting whatever happens
        pass
    _let_the_resource_tracker_finish()
    try:
        os.write(2, (FORCED_LINE.replace("Ctrl-C", "SIGTERM") if _terminated else FORCED_LINE).encode())
    finally:
        os._exit(code)


def _let_the_resource_tracker_finish(timeout_s: float = 2.0) -> None:
    """multiprocessing's resource tracker unlinks the semaphores of the pools a forced quit leaves
    behind when this process's end closes its pipe, and warns of them on stderr: closed and
    awaited here, so that its warning comes before the forced line, not after it."""
    try:
        from multiprocessing import resource_tracker

        tracker = resource_tracker._resource_tracker
        fd, pid = getattr(tracker, "_fd", None), getattr(tracker, "_pid", None)
        if fd is None or pid is None:
            return
        os.close(fd)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
            time.sleep(0.02)
    except Exception:  # noqa: BLE001 - quitting whatever happens
        pass


_ignores_at_exit = False


def ignore_at_exit() -> None:
    """Ignore SIGINT at the very end of the interpreter's exit. Call it early (the console script
    does, before it imports anything that registers exit handlers): atexit runs its callbacks last
    in, first out, so this one runs after multiprocessing's (which joins the worker processes),
    and until then a Ctrl-C still reaches :func:`_on_sigint`, where a third one quits an exit that
    hangs. Past this point Python's finalization puts back the default handler, and a Ctrl-C then
    killed the process by SIGINT after its one line."""
    global _ignores_at_exit
    if not _ignores_at_exit:
        atexit.register(_ignore_sigint)
        _ignores_at_exit = True


def ignores_at_exit() -> bool:
    return _ignores_at_exit


def _ignore_sigint() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def stopping() -> None:
    """The command is over (or being stopped): Ctrl-C no longer raises, but a third one, or one
    :data:`FORCE_AFTER_S` seconds after the first, still quits (:func:`force_quit`) if the exit
    hangs (the interpreter joins the pools' threads and processes at exit)."""
    global _raised
    _raised = True


def install() -> bool:
    """Handle SIGINT with :func:`_on_sigint`, if it has Python's default handler now (whether it
    was installed). A process started with SIGINT ignored (a background job of a non-interactive
    shell, ``nohup``) keeps ignoring it, as the shell meant. SIGTERM gets the same handler if it
    has its default action (one ignored stays ignored); :func:`uninstall` puts it back."""
    global _previous_sigterm
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGINT) is _on_sigint:  # installed already (the console script does, early)
        return True
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        _previous_sigterm = signal.signal(signal.SIGTERM, _on_sigint)
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return False
    signal.signal(signal.SIGINT, _on_sigint)
    _quiet_dropped_interrupts()
    return True


def _quiet_dropped_interrupts() -> None:
    """A KeyboardInterrupt that Python drops (raised in a weakref callback or a destructor, e.g.
    importlib's module-lock callback during an import) printed "Exception ignored in: ..." and its
    traceback above the one line; it is raised again where the command can stop
    (:func:`raise_if_requested`), so its traceback is not printed (other errors are, as before)."""
    import sys

    previous = sys.unraisablehook
    if getattr(previous, "_refinery_quiet", False):
        return

    def hook(unraisable: "sys.UnraisableHookArgs") -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt) and _requested:
            return
        previous(unraisable)

    hook._refinery_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def uninstall() -> None:
    """SIGTERM's handler as it was before :func:`install` (a command run in-process, as tests do)."""
    global _previous_sigterm
    if _previous_sigterm is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _previous_sigterm)  # type: ignore[arg-type]
        _previous_sigterm = None


def terminated() -> bool:
    """Whether the run was stopped by SIGTERM (rather than Ctrl-C)."""
    return _terminated


def exit_code() -> int:
    """The exit code of a stopped command: 143 after SIGTERM (128 + 15), else 130 (Ctrl-C)."""
    return 128 + signal.SIGTERM if _terminated else 130


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


def finished(what: str | None) -> None:
    """The command's work is done and saved (``what``: e.g. "OUT is complete ..."); a Ctrl-C or
    SIGTERM from now on only cuts short its summary, and the command line says ``what`` and exits
    0 instead of "interrupted; run the same command again to resume" (whose rerun found nothing
    to do). None: nothing finished (a new command)."""
    global _finished
    _finished = what


def finished_work() -> str | None:
    """What the command had finished when it was interrupted (:func:`finished`), if anything."""
    return _finished


def reset() -> None:
    global _requested, _raised, _deferring, _presses, _first_at, _terminated, _finished
    _requested = _raised = _terminated = False
    _deferring = _presses = 0
    _first_at = None
    _finished = None
