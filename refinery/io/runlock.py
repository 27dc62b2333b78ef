"""One run at a time per local run directory: an advisory lock (``flock``) on ``OUT/.lock``.

Two ``refinery run`` processes on one output directory race: both run the same shards, one renames
the other's temporary files away, and one of them dies on an error that says nothing of the cause
(a scheduler that retries a job whose first attempt is still alive does exactly this). So a run
holds the directory's lock while it runs, and a second run is refused at once, with one line
naming the directory and the process holding it.

- A whole run holds the lock exclusively. One instance's share of a multi-instance job (its
  ``only_shards``) holds it shared: the shares of one job run side by side, a whole run waits for
  none of them, and none of them starts beside a whole run.
- The kernel releases the lock when the process ends, however it ends (SIGKILL included): a killed
  run never leaves a stale lock behind. The file stays (removing it would race with a process
  that has just opened it); its name starts with ".", so dataset readers skip it.
- S3 run directories are not locked: S3 has no such lock, and the instances of the multi-instance
  launcher share one S3 run directory by design. There the plan's ``run.json`` is written
  conditionally instead (``refinery.plan.write_plan``: S3's ``If-None-Match``/``If-Match`` on the
  ETag read when planning), so of two runs planning one output only one goes on and the other
  gets :class:`RunDirBusy`; a share whose write loses goes on when ``run.json`` records its own
  plan. Unlike the lock this orders planning only: a run that reads a finished plan and resumes
  it is not refused. Filesystems without ``flock`` (some network mounts) are not locked either:
  the run goes on without the lock, and a debug line says so.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from refinery.io import fs

log = logging.getLogger("refinery.runlock")

LOCK_FILE = ".lock"


class RunDirBusy(fs.StorageError):
    """Another run holds the run directory."""


def _holder(path: str) -> str:
    """Who holds the lock, from what an exclusive holder wrote into the file (if that process is
    still alive: a run killed with SIGKILL leaves its line behind)."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        pid, host, since = int(info["pid"]), str(info["host"]), str(info["since"])
        if host == socket.gethostname():
            os.kill(pid, 0)  # ProcessLookupError: that run is gone, the holder is another one
        return f"pid {pid} on {host}, running since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "an instance's share of a multi-instance job, or a run that is just starting"


def run_dir_active(root: str) -> bool | None:
    """Whether a run holds the local run directory ``root`` now; None when that cannot be known
    (S3, a filesystem without ``flock``, no lock file yet)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system
        return None
    if fs.is_s3(root):
        return None
    try:
        fd = os.open(os.path.join(root, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return None
    try:
        # a shared probe conflicts with a whole run's exclusive lock only; an instance's share of a
        # multi-instance job holds it shared, so also probe exclusively for those
        for mode in (fcntl.LOCK_SH, fcntl.LOCK_EX):
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            except OSError:
                return None
            fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextmanager
def run_dir_lock(root: str, shared: bool = False) -> Iterator[None]:
    """Hold the lock of the local run directory ``root`` (created if missing) for the block;
    raise :class:`RunDirBusy` if another run holds it. ``shared``: one share of a multi-instance
    job (see the module docstring). Does nothing for S3 run directories."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system
        fcntl = None
    if fs.is_s3(root) or fcntl is None:
        yield
        return
    path = os.path.join(root, LOCK_FILE)
    try:
        fs.makedirs(root)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except Exception as exc:  # noqa: BLE001 - OSError or pyarrow's: the output cannot be written
        raise fs.StorageError(f"output {root} is not writable: {exc}") from None
    try:
        locked = True
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirBusy(f"run directory {root} is in use by another refinery run ({_holder(path)}): "
                             f"wait for it to finish, or stop it; then run the same command again") from None
        except OSError as exc:  # ENOLCK and the like: a filesystem without flock
            log.debug("run directory %s: not locked (%s)", root, exc)
            locked = False
        if locked and not shared:  # the sole holder says who it is (shares hold it together: they cannot)
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode(), 0)
        try:
            yield
        finally:
            if locked and not shared:
                os.ftruncate(fd, 0)  # still the holder: the next one finds no stale line
    finally:
        os.close(fd)  # releases the lock
