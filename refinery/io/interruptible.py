"""Blocking storage calls that Ctrl-C and SIGTERM can cut short.

Python runs a signal handler in the main thread, between bytecodes. A pyarrow S3 call (the AWS
SDK's curl, in C++) holds the main thread until it returns: against a server that stopped
answering mid-run, 60 s per attempt x 8 attempts, so a SageMaker stop or a Ctrl-C waited ~8-9
minutes for the handler that stops the run, and the run's S3 claim was left to lapse (session 45,
h144). boto3's ``upload_fileobj`` likewise: its transfer manager, told to cancel, waits for its
hung request thread before it lets the KeyboardInterrupt go.

:func:`interruptible` runs such a call in a daemon thread while the main thread waits for it in
short waits, where signal handlers run: the KeyboardInterrupt (SIGINT, or SIGTERM through
:mod:`refinery.interrupts`) is raised in the main thread at once, and the run stops as it does
anywhere else (workers stopped, claim released, finished shards kept). The abandoned call goes
on in its thread until its own timeout or the process's exit; what it writes is whole or
nothing (an S3 object appears when its upload completes), so nothing half-written is left; and
refinery's own process leaves without pyarrow's exit handler, which would wait for it
(:func:`leave_behind`).
"""

from __future__ import annotations

import atexit
import contextvars
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: how long the main thread waits at a time (a signal interrupts the wait anyway; the loop only
#: bounds how long a handler that did not raise goes unnoticed)
POLL_S = 0.25


_LEFT_BEHIND = False


def leave_behind() -> None:
    """An S3 call is left running in a helper thread (the command is stopping, or gave up waiting
    for it). pyarrow's exit handler (``ensure_s3_finalized``) waits for every S3 call to end before
    it finalizes the AWS SDK, and held the stopped run's exit for the hung call's minutes after its
    "stopped" line (found by this module's trial): refinery's own process then leaves without it
    (:func:`drop_s3_finalizer`, called by ``refinery.cli.main`` as it exits by ``os._exit``). Not
    dropped here: a process that goes on to exit normally (a library caller, a test session) would
    tear the SDK down unfinalized, and glibc aborted such an exit ("FinalizeS3 was not called",
    "malloc(): unsorted double linked list corrupted")."""
    global _LEFT_BEHIND
    _LEFT_BEHIND = True


def calls_left_behind() -> bool:
    """Whether this process left an S3 call running (:func:`leave_behind`)."""
    return _LEFT_BEHIND


def drop_s3_finalizer() -> None:
    """Unregister pyarrow's exit handler, for a process about to leave by ``os._exit`` (which skips
    the C++ teardown the handler guards) while a call it left behind is still running."""
    pyarrow_fs = sys.modules.get("pyarrow.fs")
    finalizer = getattr(pyarrow_fs, "ensure_s3_finalized", None)
    if finalizer is not None:
        atexit.unregister(finalizer)


def interruptible(call: Callable[[], T], what: str = "storage call") -> T:
    """``call()``, its result or its exception; in the main thread run in a helper thread, so that
    a signal's handler raises at once instead of when the call returns. In any other thread (a
    read-ahead pool, a heartbeat) it runs directly: no signal handler runs there anyway."""
    if threading.current_thread() is not threading.main_thread():
        return call()
    outcome: dict[str, object] = {}
    done = threading.Event()
    context = contextvars.copy_context()  # the caller's context variables (expected versions, publish group)

    def run() -> None:
        try:
            outcome["value"] = context.run(call)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as is
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=f"refinery {what}", daemon=True).start()
    try:
        while not done.wait(POLL_S):
            pass
    except BaseException:  # a KeyboardInterrupt (or SystemExit) from a signal handler: the call is left behind
        leave_behind()
        raise
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
