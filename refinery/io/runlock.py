"""One run at a time per run directory: an advisory lock (``flock``) on a local ``OUT/.lock``, a
claim (``OUT/.claim``) of an S3 one.

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
- S3 has no such lock, so on S3 a run *claims* its run directory for its whole duration
  (:func:`run_guard`), as the standalone ``refinery dedup`` and ``refinery tokenize`` claim their
  outputs (:func:`output_guard`): ``OUTPUT/.claim``, written conditionally on the version read
  just before (of two started together one wins), renewed every :data:`CLAIM_HEARTBEAT_SECONDS`
  and marked released at the end. A command finding a claim that is held (not released, renewed
  within :data:`CLAIM_TTL_SECONDS` by the server's clock, and on this host by a process that
  still exists) is refused in one line naming the output and the holder; a killed one's claim
  lapses (at once on its own host, else after the TTL), so a rerun goes on. ``--force`` changes
  what is redone, not who holds the output. A standalone ``refinery tokenize`` into ``RUN/tokens``
  claims ``RUN`` too (locally it takes RUN's lock): it is refused beside a live run, and a run
  beside it.
- The instances of a multi-instance job share one S3 run directory by design, so each share
  claims a key of its own, ``OUTPUT/.claim.share-<id>`` (renewed, and deleted at its end), and
  shares never refuse each other. A share writes its key and then reads ``.claim``; a whole run
  (or a standalone command) writes ``.claim`` and then lists the share keys: each writes before
  it reads, so of a share and a whole run starting together at least one sees the other and is
  refused (rarely both: run again). Lapsed share keys are deleted by the listing that finds them.
- Under the claim, the plan's ``run.json`` is still written conditionally
  (``refinery.plan.write_plan``: ``If-None-Match``/``If-Match`` on the ETag read when planning):
  it orders what the claim does not, two launches' shares with other configs, and a program that
  calls ``run_plan`` without :func:`run_guard`. Filesystems without ``flock`` (some network
  mounts) are not locked: the run goes on without the lock, and a debug line says so.
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from refinery.io import fs
from refinery.io.interruptible import leave_behind

log = logging.getLogger("refinery.runlock")

LOCK_FILE = ".lock"
#: an S3 output's claim by a whole run or a standalone command (hidden like the lock: dataset
#: readers skip it)
CLAIM_FILE = ".claim"
#: the name of one share's claim of an S3 run directory (``.claim.share-<id>``, one per instance)
SHARE_CLAIM_PREFIX = ".claim.share-"


class RunDirBusy(fs.StorageError):
    """Another run holds the run directory."""


_UTC = "%Y-%m-%dT%H:%M:%SZ"


def _lock_path(root: str) -> str:
    """The lock file of the local run directory ``root``, with ``~`` expanded as every other path
    of a run (a quoted ``-o "~/out"`` locked ``./~/out/.lock``, a directory that did not exist)."""
    return os.path.join(fs.absolute(root), LOCK_FILE)


def utc_now() -> str:
    """Now in ISO-8601 UTC, as a lock and a claim record when they were taken."""
    return time.strftime(_UTC, time.gmtime())


@dataclass(frozen=True)
class Holder:
    """Who holds a run directory or output now, for ``refinery status`` (``--json``: these
    fields). ``kind``: ``lock`` (a local run's or command's exclusive lock), ``claim`` (an S3
    output's ``.claim``) or ``share`` (an instance's share of a multi-instance job: a shared local
    lock, or its ``.claim.share-<id>``). ``since``: when it was taken, ISO-8601 UTC; ``age_s``:
    seconds since then; ``renewed_s``: a claim's seconds since its last renewal. A field the
    holder did not record (a shared lock records nothing) is None."""

    kind: str
    command: str | None = None
    pid: int | None = None
    host: str | None = None
    since: str | None = None
    age_s: float | None = None
    renewed_s: float | None = None
    claim: str | None = None

    def line(self) -> str:
        """The human sentence (status's text, a refusal's message)."""
        if self.pid is None:
            if self.kind == "share":
                return "an instance's share of a multi-instance job"
            return "an instance's share of a multi-instance job, or a run that is just starting"
        who = f"refinery {self.command}, " if self.command else ""
        if self.claim is None:
            return f"{who}pid {self.pid} on {self.host}, running since {self.since}"
        share = " (an instance's share of a multi-instance job)" if self.kind == "share" else ""
        return (f"refinery {self.command}{share}, pid {self.pid} on {self.host}, started {self.since}; its claim "
                f"{self.claim} was renewed {self.renewed_s or 0:.0f}s ago")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _utc(since: Any) -> str | None:
    """``since`` as ISO-8601 UTC: a lock written before it was (local time, no zone) is converted."""
    if not isinstance(since, str):
        return None
    for layout, to_epoch in ((_UTC, calendar.timegm), ("%Y-%m-%d %H:%M:%S", time.mktime)):
        try:
            return time.strftime(_UTC, time.gmtime(to_epoch(time.strptime(since, layout))))
        except (ValueError, OverflowError):
            continue
    return None


def _age(since: str | None) -> float | None:
    return None if since is None else round(max(0.0, time.time() - calendar.timegm(time.strptime(since, _UTC))), 1)


def _lock_holder(path: str) -> Holder:
    """Who holds the lock, from what an exclusive holder wrote into the file (if that process is
    still alive: a run killed with SIGKILL leaves its line behind)."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        pid, host, since = int(info["pid"]), str(info["host"]), _utc(info["since"])
        if host == socket.gethostname():
            os.kill(pid, 0)  # ProcessLookupError: that run is gone, the holder is another one
        command = info.get("command")
        return Holder("lock", str(command) if command else None, pid, host, since, _age(since))
    except (OSError, ValueError, KeyError, TypeError):
        return Holder("lock")


def _holder(path: str) -> str:
    return _lock_holder(path).line()


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
        fd = os.open(_lock_path(root), os.O_RDONLY)
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
def run_dir_lock(root: str, shared: bool = False, command: str | None = None) -> Iterator[None]:
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
    path = _lock_path(root)
    try:
        fs.makedirs(root)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except Exception as exc:  # noqa: BLE001 - OSError or pyarrow's: the output cannot be written
        raise fs.StorageError(f"output {root} is not writable: {fs.plain_reason(exc)}") from None
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
            record = {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record | ({"command": command} if command else {})).encode(), 0)
        try:
            yield
        finally:
            if locked and not shared:
                os.ftruncate(fd, 0)  # still the holder: the next one finds no stale line
    finally:
        os.close(fd)  # releases the lock


#: a claim's holder rewrites it this often; one not rewritten for CLAIM_TTL_SECONDS (server clock)
#: is a killed command's, and is taken over
CLAIM_HEARTBEAT_SECONDS = 30.0
CLAIM_TTL_SECONDS = 120.0
#: the claim ids this process holds now (being written, or written and not released): a claim
#: naming this process's pid but not here is a leftover (see :func:`_held`)
_LIVE_CLAIMS: set[str] = set()


@dataclass
class OutputClaim:
    """This command's claim of an S3 output: the version of ``OUTPUT/.claim`` it last wrote, kept
    fresh by a heartbeat thread while the command runs."""

    root: str
    command: str
    record: dict[str, Any]
    tag: str | None
    file: str = CLAIM_FILE  # a share's own SHARE_CLAIM_PREFIX + id
    lost: str = ""  # who took it over, when a heartbeat found it replaced
    #: :func:`clock` when the last successful write of the claim was sent (the server dates it later)
    renewed: float = field(default_factory=lambda: clock())
    _stop: threading.Event = field(default_factory=threading.Event)
    _mutex: threading.Lock = field(default_factory=threading.Lock)

    @property
    def uri(self) -> str:
        return fs.join(self.root, self.file)

    @property
    def shared(self) -> bool:
        return self.file != CLAIM_FILE

    def rewrite(self, **fields: Any) -> bool:
        """Rewrite the claim with ``fields`` if it is still ours; False (and :attr:`lost` set) if
        another command replaced it."""
        with self._mutex:
            if self.lost:
                return False
            record = self.record | fields
            data = json.dumps(record, indent=1).encode()
            sent = clock()
            try:
                self.tag = fs.write_bytes_if(self.uri, data, self.tag)
            except fs.WriteConflict:
                # an earlier write of ours that landed with its reply lost (a network blip outlasting
                # the retries) left self.tag behind: the claim in place is still ours, by its id
                tag = self._own_tag()
                try:
                    if tag is None:
                        raise fs.WriteConflict(self.uri) from None
                    self.tag = fs.write_bytes_if(self.uri, data, tag)
                except fs.WriteConflict:
                    self.lost = _claimant(self.uri)
                    return False
            self.record = record
            self.renewed = sent
            _publish_renewal(self)
            return True

    def _own_tag(self) -> str | None:
        """The ETag of the claim in place if it is still this command's (same claim id), else None."""
        found = _claim_object(self.uri)
        return found[2] if found is not None and found[0].get("claim") == self.record["claim"] else None

    def _beat(self) -> None:
        while not self._stop.wait(CLAIM_HEARTBEAT_SECONDS):
            try:
                if not self.rewrite(beat=int(self.record.get("beat", 0)) + 1):
                    return
            except fs.StorageError as exc:  # a passing outage: the next beat tries again
                log.warning("cannot renew the claim %s: %s", self.uri, exc)


def _claimant(uri: str, info: dict[str, Any] | None = None) -> str:
    """Who claimed the output, from the claim now in place."""
    try:
        info = info if info is not None else json.loads(fs.read_bytes(uri))
        share = " (an instance's share of a multi-instance job)" if info.get("share") else ""
        return f"refinery {info['command']}{share}, pid {int(info['pid'])} on {info['host']}, started {info['since']}"
    except (fs.StorageError, OSError, ValueError, KeyError, TypeError):
        return "another refinery command"


def _held(info: Any, age: float) -> bool:
    """Whether a claim read ``age`` seconds after its last write is held by a live command: not
    released, renewed within the TTL, and (on this host) by a process that still exists."""
    if not isinstance(info, dict) or info.get("released"):
        return False
    if age >= CLAIM_TTL_SECONDS:
        return False  # its heartbeats stopped: the command was killed (or its host lost)
    if info.get("host") == socket.gethostname():
        if info.get("pid") == os.getpid():
            # this process: held only if one of its claims now (else a claim this process failed to
            # release, or a previous process with this pid: a restarted container's pid 1)
            return info.get("claim") in _LIVE_CLAIMS
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return False  # killed here: no need to wait for the TTL
        except (OSError, ValueError, KeyError, TypeError):
            pass  # PermissionError: alive, someone else's
    return True


def claim_output(root: str, command: str, settings: dict[str, Any]) -> OutputClaim:
    """Claim the S3 output ``root`` for the standalone ``command`` (see the module docstring):
    refused with :class:`RunDirBusy` while another live command holds it; else written only if
    ``OUTPUT/.claim`` is still the version read here (of two commands that read it together, one
    wins). The claim is renewed every :data:`CLAIM_HEARTBEAT_SECONDS` until :func:`release_claim`."""
    uri = fs.join(root, CLAIM_FILE)
    found = fs.read_if_any_with_age(uri)
    tag = None
    if found is not None:
        data, tag, age = found
        try:
            info = json.loads(data)
        except ValueError:
            info = None  # damaged: nobody's
        if _held(info, age):
            raise _busy(root, uri, info, age)
    record = _record(command, settings)
    sent = clock()
    try:
        new = fs.write_bytes_if(uri, json.dumps(record, indent=1).encode(), tag)
    except fs.WriteConflict:
        _LIVE_CLAIMS.discard(record["claim"])
        raise RunDirBusy(f"output {root} is in use by another refinery command ({_claimant(uri)}; it claimed the "
                         f"output while this one was starting): wait for it to finish, or stop it; then run the "
                         f"same command again") from None
    except BaseException:
        _LIVE_CLAIMS.discard(record["claim"])
        raise
    # after the write: a share that wrote its claim before this listing is seen here, and one
    # that writes it after sees this claim (claim_share reads it after writing its own)
    return _held_unless(OutputClaim(root, command, record, new, renewed=sent), _live_share)


def claim_share(root: str, command: str, settings: dict[str, Any]) -> OutputClaim:
    """Claim the S3 run directory ``root`` for one instance's share of a multi-instance job:
    its own ``OUTPUT/.claim.share-<id>``, beside the other instances' (they share the directory
    by design, so they never refuse each other). Refused with :class:`RunDirBusy` while a whole
    run or a standalone command holds ``OUTPUT/.claim``; read after writing its own, so of a
    share and a whole run starting together at least one sees the other."""
    uri = fs.join(root, SHARE_CLAIM_PREFIX + uuid.uuid4().hex[:16])
    record = _record(command, settings) | {"share": True}
    sent = clock()
    try:
        tag = fs.write_bytes_if(uri, json.dumps(record, indent=1).encode(), None)
    except BaseException:
        _LIVE_CLAIMS.discard(record["claim"])
        raise
    return _held_unless(OutputClaim(root, command, record, tag, file=fs.basename(uri), renewed=sent),
                        _live_exclusive)


def _held_unless(claim: OutputClaim, other_holder: Callable[[str], Any]) -> OutputClaim:
    """``claim``, just written, renewed from now on; released and refused with :class:`RunDirBusy`
    when ``other_holder`` (read after the write) finds a live claim of the other kind. First, one
    probe per command of whether the store honours the conditions the claim relies on (a store
    that ignores them ran unguarded without a word: :func:`refinery.io.fs.probe_conditions`)."""
    try:
        fs.probe_conditions(claim.uri, json.dumps(claim.record, indent=1).encode())  # the bytes just written
        holder = other_holder(claim.root)
    except BaseException:
        release_claim(claim)
        raise
    if holder is not None:
        release_claim(claim)
        raise _busy(claim.root, *holder)
    _start(claim)
    return claim


def _record(command: str, settings: dict[str, Any]) -> dict[str, Any]:
    claim = uuid.uuid4().hex
    # live from before its write: another thread of this process reading it then finds it held
    _LIVE_CLAIMS.add(claim)
    return {"command": command, "claim": claim, "pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "settings": settings}


def _start(claim: OutputClaim) -> None:
    threading.Thread(target=claim._beat, name=f"claim {claim.uri}", daemon=True).start()


def _busy(root: str, uri: str, info: Any, age: float) -> RunDirBusy:
    return RunDirBusy(f"output {root} is in use by another refinery command ({_claimant(uri, info)}; its claim "
                      f"{fs.basename(uri)} was renewed {age:.0f}s ago): wait for it to finish, or stop it; then "
                      f"run the same command again (a killed command's claim lapses {CLAIM_TTL_SECONDS:.0f}s "
                      "after its last renewal)")


def _read_claim(uri: str) -> tuple[str, Any, float] | None:
    """(uri, record, age) of the claim ``uri`` if it is held now."""
    found = _claim_object(uri)
    if found is None:
        return None
    info, _, _, age = found
    return (uri, info, age) if _held(info, age) else None


def _claim_object(uri: str) -> tuple[dict[str, Any], bytes, str, float] | None:
    """(record, its bytes, ETag, age) of the claim object ``uri``; None if there is none, or it is
    not a JSON object (damaged: nobody's)."""
    found = fs.read_if_any_with_age(uri)
    if found is None:
        return None
    data, tag, age = found
    try:
        info = json.loads(data)
    except ValueError:
        return None
    return (info, data, tag, age) if isinstance(info, dict) else None


def _live_exclusive(root: str) -> tuple[str, Any, float] | None:
    return _read_claim(fs.join(root, CLAIM_FILE))


def _live_share(root: str) -> tuple[str, Any, float] | None:
    """A share's claim of ``root`` that is held now, if any; the lapsed ones found are deleted
    (each share has its own key: deleting one touches no live claim)."""
    bucket, _, key = fs.resolve(root)[1].partition("/")
    prefix = f"{key.rstrip('/')}/{SHARE_CLAIM_PREFIX}" if key else SHARE_CLAIM_PREFIX
    try:
        pages = fs.s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        names = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    except Exception as exc:  # noqa: BLE001 - botocore raises many types; name the URI
        raise fs.StorageError(f"cannot list the claims of {root}: {exc}") from None
    for name in names:
        uri = f"s3://{bucket}/{name}"
        held = _read_claim(uri)
        if held is not None:
            return held
        try:
            fs.delete(uri)  # a finished or killed share's: nobody renews it any more
        except (fs.StorageError, OSError) as exc:
            log.debug("cannot delete the lapsed claim %s: %s", uri, exc)
    return None


def holder_now(root: str) -> Holder | None:
    """Who holds the run directory or output ``root`` now, for ``refinery status``: a local lock's
    holder, or the S3 claim in place (``.claim``, then the shares' keys) if held, with its age; None
    when nobody does (or it cannot be told). Reads only: lapsed share keys are left in place."""
    if not fs.is_s3(root):
        if not run_dir_active(root):
            return None
        # a shared probe fails only beside an exclusive holder: otherwise only shares hold it
        return _lock_holder(_lock_path(root)) if _held_exclusively(root) is not False else Holder("share")
    held = _live_exclusive(root)
    if held is None:
        bucket, _, key = fs.resolve(root)[1].partition("/")
        prefix = f"{key.rstrip('/')}/{SHARE_CLAIM_PREFIX}" if key else SHARE_CLAIM_PREFIX
        try:
            listed = fs.s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        except Exception:  # noqa: BLE001 - status goes on without it
            return None
        held = next((h for h in (_read_claim(f"s3://{bucket}/{o['Key']}") for o in listed) if h is not None), None)
    if held is None:
        return None
    uri, info, age = held
    try:
        since = _utc(info.get("since"))
        return Holder("share" if info.get("share") or fs.basename(uri) != CLAIM_FILE else "claim",
                      str(info["command"]), int(info["pid"]), str(info["host"]), since, _age(since),
                      round(age, 1), fs.basename(uri))
    except (KeyError, TypeError, ValueError):
        return Holder("claim", renewed_s=round(age, 1), claim=fs.basename(uri))


def _held_exclusively(root: str) -> bool | None:
    """Whether the local lock of ``root`` is held exclusively now (None: cannot be told)."""
    import fcntl

    try:
        fd = os.open(_lock_path(root), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def confirm_claim(claim: OutputClaim | None) -> None:
    """Before a standalone command records its result (``run.json``, ``manifest.json``): check
    that its claim is still its own (renewing it). If another command took it over (this one
    stalled past the TTL), raise :class:`RunDirBusy`: the result is that one's to record, and
    this one must not exit 0 as if the output were its own. None (a local output, under its
    lock): nothing to do."""
    if claim is None or claim.rewrite(confirmed=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())):
        return
    raise RunDirBusy(f"output {claim.root} was claimed by another refinery command ({claim.lost}) while this "
                     f"{claim.command} ran: its result is that one's (this one recorded nothing); wait for it to "
                     f"finish, then run `refinery status {claim.root}`")


#: how long a command's end waits for its claim's release to be written. A store that stopped
#: answering held a stopped run for the write's 60 s x 8 attempts (session 45, h144): past this the
#: claim is left to lapse as a killed command's does (at once on this host, after the TTL elsewhere)
RELEASE_WAIT_S = 10.0


def release_claim(claim: OutputClaim) -> None:
    """Stop renewing the claim and mark it released (if still ours): the next command takes the
    output at once, without waiting for the TTL. In the main thread, waits :data:`RELEASE_WAIT_S` at most."""
    claim._stop.set()
    _LIVE_CLAIMS.discard(claim.record["claim"])
    if threading.current_thread() is not threading.main_thread():  # a command ends in its main thread
        _release(claim)
        return
    releasing = threading.Thread(target=_release, args=(claim,), name=f"release {claim.uri}", daemon=True)
    releasing.start()
    releasing.join(RELEASE_WAIT_S)
    if releasing.is_alive():
        leave_behind()  # its S3 call must not hold the process's exit either
        log.warning("cannot release the claim %s: the store did not answer within %g s; it lapses after %g s "
                    "(at once for a command on this host)", claim.uri, RELEASE_WAIT_S, CLAIM_TTL_SECONDS)


def _release(claim: OutputClaim) -> None:
    try:
        if claim.shared:  # its own key: nobody else writes it, so it goes (no leftover per instance)
            with claim._mutex:
                claim.lost = claim.lost or "released"
                fs.delete(claim.uri)
            return
        claim.rewrite(released=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    except (fs.StorageError, OSError) as exc:  # it lapses after the TTL instead
        log.warning("cannot release the claim %s: %s", claim.uri, exc)


@contextmanager
def output_guard(root: str, command: str, settings: dict[str, Any]) -> Iterator[OutputClaim | None]:
    """One standalone ``command`` at a time per output: a local output's lock (held for the
    block; yields None), or an S3 output's claim (held for the block; yields it, for
    :func:`confirm_claim`)."""
    if not fs.is_s3(root):
        with run_dir_lock(root, command=command):
            yield None
        return
    claim = claim_output(root, command, settings)
    try:
        with fenced(claim):
            yield claim
    finally:
        release_claim(claim)


@contextmanager
def run_guard(root: str, shared: bool, settings: dict[str, Any]) -> Iterator[OutputClaim | None]:
    """One ``refinery run`` at a time per run directory, for the whole run: a local directory's
    lock (yields None), or an S3 directory's claim (yields it, for :func:`confirm_claim`).
    ``shared``: one instance's share of a multi-instance job (the lock held shared; on S3 a
    claim of its own, :func:`claim_share`)."""
    if not fs.is_s3(root):
        with run_dir_lock(root, shared=shared, command="run"):
            yield None
        return
    claim = claim_share(root, "run", settings) if shared else claim_output(root, "run", settings)
    try:
        with fenced(claim):
            yield claim
    finally:
        release_claim(claim)


# -- the fence: no write of a command that lost its claim -------------------------------------------
# A command stopped past the lapse (SIGSTOP, a long GC pause, a laptop asleep) loses its claim to the
# next command; when it resumes, its heartbeat finds that out only at its next beat, and its workers
# not at all: they committed shards over the new holder's. So every change to an S3 object under the
# claimed output, in the driver and in its workers (:data:`refinery.io.fs.before_s3_change`), first
# checks that the claim was renewed recently enough; only when it was not does it ask the server.


class ClaimLost(RunDirBusy):
    """This command's claim of its output was taken over (it stalled past the lapse): nothing more
    of it may be written there."""


def clock() -> float:
    """Seconds on a clock that goes on while this process is stopped and while the host sleeps
    (Linux's CLOCK_BOOTTIME: CLOCK_MONOTONIC stands still during a suspend), the same for every
    process of the host."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def fence_margin(ttl: float) -> float:
    """Past this age of its last renewal a claim is checked before a write: half the lapse. A
    renewal comes every CLAIM_HEARTBEAT_SECONDS (a quarter of it), so a live command never asks;
    the other half is the margin for the write itself to land before the claim could lapse."""
    return ttl / 2


@dataclass
class _Fence:
    root: str
    uri: str
    claim: str
    ttl: float
    command: str
    own: OutputClaim | None = None  # the driver's claim itself (a worker has its token only)
    verified: float = float("-inf")  # a worker's: when its own check last found the claim fresh


#: the fences of this process, outermost first: one per claim it holds (a standalone `refinery
#: tokenize` into RUN/tokens holds RUN's claim and its output's), or, in a worker, the driver's
_FENCES: tuple[_Fence, ...] = ()
#: the driver's last renewal (:func:`clock`) of the claims it holds (the oldest of them), shared
#: with its local pool's workers (a RawValue): they need not ask the server while the driver's
#: heartbeats are alive
_SHARED_RENEWAL: Any = None
#: where a task's fence tokens travel in an executor's shared task arguments
FENCE_KEY = "_claim_fence"


def _token(f: _Fence) -> dict[str, Any]:
    return {"root": f.root, "uri": f.uri, "claim": f.claim, "ttl": f.ttl, "command": f.command}


@contextmanager
def fenced(claim: OutputClaim) -> Iterator[None]:
    """Fence this process's changes under ``claim.root`` for the block (see above), beside the
    fences of the claims it holds already, and hand them to the tasks this process starts
    (:func:`fence_token`)."""
    global _FENCES
    previous = _FENCES
    _FENCES = previous + (_Fence(claim.root, claim.uri, claim.record["claim"], CLAIM_TTL_SECONDS, claim.command,
                                 own=claim),)
    _publish_renewal(claim)
    fs.before_s3_change = check_fence
    try:
        yield
    finally:
        _FENCES = previous


def fence_token() -> list[dict[str, Any]] | None:
    """What a worker needs to fence its writes like this process (None: nothing is fenced)."""
    return [_token(f) for f in _FENCES] or None


def adopt_fence(token: list[dict[str, Any]] | None) -> None:
    """In a worker: fence its changes with the driver's ``token`` (from :func:`fence_token`); none,
    a task of an unfenced pass: the fences of an earlier pass (a reused pool or Ray worker) go."""
    global _FENCES
    if any(f.own is not None for f in _FENCES):
        return  # the driver itself (a task run inline)
    claims = [t["claim"] for t in token or []]
    if claims == [f.claim for f in _FENCES]:
        return  # a worker that has them already (and when it last checked them)
    _FENCES = tuple(_Fence(t["root"], t["uri"], t["claim"], float(t["ttl"]), t["command"]) for t in token or [])
    if _FENCES:
        fs.before_s3_change = check_fence


def shared_renewal() -> Any:
    """The shared stamp of the driver's renewals, for a local pool's workers (:func:`adopt_renewal`)."""
    global _SHARED_RENEWAL
    if _SHARED_RENEWAL is None:
        import multiprocessing

        _SHARED_RENEWAL = multiprocessing.get_context("spawn").RawValue("d", float("-inf"))
        _publish_renewal(None)
    return _SHARED_RENEWAL


def adopt_renewal(stamp: Any) -> None:
    """In a local pool's worker: the driver's shared stamp of its renewals (same host, same clock)."""
    global _SHARED_RENEWAL
    _SHARED_RENEWAL = stamp


def _publish_renewal(claim: OutputClaim | None) -> None:
    """Share the oldest last renewal of the claims this process fences (``claim``: the one just
    renewed, if any; a claim it does not fence changes nothing)."""
    own = [f.own for f in _FENCES if f.own is not None]
    if _SHARED_RENEWAL is not None and own and (claim is None or any(c is claim for c in own)):
        _SHARED_RENEWAL.value = min(c.renewed for c in own)


def _under(uri: str, root: str) -> bool:
    return uri == root or uri.startswith(root.rstrip("/") + "/")


def check_fence(uri: str) -> None:
    """Before a change to the S3 object ``uri``: raise :class:`ClaimLost` if it is under an
    output this process fences and this command's claim of it was taken over. Asks the server
    only when the claim was not renewed within :func:`fence_margin` (see above)."""
    if not _FENCES or fs.basename(uri).startswith(CLAIM_FILE):
        return
    for f in _FENCES:
        if _under(uri, f.root):
            _check(f)


def _check(f: _Fence) -> None:
    if f.own is not None:
        claim = f.own
        if not claim.lost and clock() - claim.renewed < fence_margin(f.ttl):
            return
        # renewed only if still ours: else lost says who took it
        if claim.lost or not claim.rewrite(fenced=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())):
            raise _lost(f, claim.lost)
        return
    shared = _SHARED_RENEWAL.value if _SHARED_RENEWAL is not None else float("-inf")
    if clock() - max(f.verified, shared) < fence_margin(f.ttl):
        return
    _verify(f)


def _verify(f: _Fence) -> None:
    """A worker's check of the claim on the server: still the driver's, renewed recently (renewed
    here, stamped ``verified``, only if still as read: a stopped driver's workers keep it while they
    write), else :class:`ClaimLost`."""
    for _ in range(3):
        sent = clock()
        found = _claim_object(f.uri)
        if found is None or found[0].get("claim") != f.claim or found[0].get("released"):
            raise _lost(f, _claimant(fs.join(f.root, CLAIM_FILE)))
        info, _, tag, age = found
        if age < fence_margin(f.ttl):
            f.verified = sent - age
            return
        # new bytes, not the same ones: S3's ETag is their MD5, so the same bytes would keep the tag,
        # and a command that read the lapsed claim before this write would still take it over
        renewed = json.dumps(info | {"verified": f"{socket.gethostname()}:{os.getpid()}:{time.time():.3f}"},
                             indent=1).encode()
        try:
            fs.write_bytes_if(f.uri, renewed, tag)
        except fs.WriteConflict:
            continue  # written meanwhile: the driver's heartbeat, or another command's claim
        f.verified = sent
        return
    raise _lost(f, _claimant(fs.join(f.root, CLAIM_FILE)))


def _lost(f: _Fence, holder: str) -> ClaimLost:
    return ClaimLost(f"output {f.root} was claimed by another refinery command ({holder or 'unknown'}) while this "
                     f"{f.command} was stopped past its claim's lapse ({f.ttl:.0f}s): it writes nothing more there; "
                     f"wait for that one to finish, then run `refinery status {f.root}`")
