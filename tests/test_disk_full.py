"""A full disk stops the pass at the first shard that meets it, in one line; the finished shards
stay, and the same command finishes the run once there is space (refinery/executors/base.py).

Before, every shard after it read and filtered its whole input and then failed on the same write,
three times over (a full disk looked like a transient I/O error)."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

from _fault_fixtures import CC_DOCS, split_jsonl, write_after_remount
from refinery.executors.base import StorageReadOnly, storage_full, storage_stop, transient
from refinery.executors.local import LocalExecutor
from refinery.io import fs


def test_a_full_disk_or_quota_is_told_from_other_io_errors() -> None:
    assert storage_full(OSError(errno.ENOSPC, "No space left on device"))
    assert storage_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert storage_full(OSError("[Errno 28] No space left on device"))  # pyarrow's: errno only in its text
    try:  # anywhere in the cause chain, as when a writer wraps it
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("writing kept/part-003.parquet") from inner
    except RuntimeError as outer:
        assert storage_full(outer)
    assert not storage_full(OSError(errno.EIO, "Input/output error")) and transient(OSError(errno.EIO, "x"))
    assert not storage_full(ValueError("No space left on device"))  # only an OS error is a full disk
    assert storage_stop(OSError(errno.EROFS, "Read-only file system")) == "read_only"
    assert storage_stop(OSError("Cannot create directory. Detail: [errno 30] Read-only file system")) == "read_only"
    assert storage_stop(OSError(errno.ENOSPC, "x")) == "full" and storage_stop(OSError(errno.EIO, "x")) is None
    # "output X is not writable: <why>" in plain words, not pyarrow's doubled text (h154)
    from refinery.io.fs import plain_reason

    assert plain_reason(OSError("[Errno 30] Cannot create directory '/ro/out'. Detail: [errno 30] Read-only file "
                                  "system")) == "read-only file system"
    assert plain_reason(PermissionError(errno.EACCES, "Permission denied")) == "permission denied"


def _mount_tmpfs(where: Path, size: str) -> bool:
    """A real small filesystem: a tmpfs of ``size`` (needs root, as CI and the dev machines run)."""
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def _fill(where: Path) -> Path:
    """Fill the file system of ``where`` to its last byte; the file that does it."""
    filler = where / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_write_that_finds_the_disk_full_names_its_file_and_leaves_nothing(tmp_path: Path) -> None:
    """It said only "[Errno 28] No space left on device" (session 45, h146): a full disk met by a
    write, not by opening the file, was not named; and one met by the last flush was replaced by
    the same error raised again when the file was closed."""
    where = tmp_path / "disk"
    if not _mount_tmpfs(where, "64k"):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        for name, data in (("big.bin", b"x" * 200_000), ("small.json", b"{}")):  # met by write(), by flush()
            if name == "small.json":
                _fill(where)
            with pytest.raises(OSError) as raised:
                fs.write_bytes(str(where / "run" / name), data)
            assert raised.value.errno == errno.ENOSPC and storage_full(raised.value)
            assert str(raised.value) == f"[Errno 28] No space left on device: cannot write {name} in {where / 'run'}"
            assert not [p.name for p in (where / "run").iterdir()]  # no temporary left
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_stops_the_pass_in_one_line_and_the_rerun_finishes(tmp_path: Path, cli, caplog) -> None:
    split_jsonl(CC_DOCS / "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz", tmp_path / "in", 8)
    config = tmp_path / "c.yaml"
    config.write_text("name: t\nstages:\n  - type: gopher_quality\n")
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "700k"):  # each shard writes ~230 KB: three fit
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        out = small / "out"
        code, _, err = cli("run", config, "-i", tmp_path / "in", "-o", out, "--workers", "1")
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1, err
        assert "No space left on device: cannot write " in errors[0]
        assert ": the disk (or quota) it writes to is full; the pass stopped there" in errors[0]
        # not retried (the same write would fail again); the log holds the shard's one attempt
        assert "part-0" in caplog.text and "failed after 1 attempt(s)" in caplog.text and "retrying" not in caplog.text
        finished = sorted(p.name for p in (out / "stats").iterdir())
        assert 1 <= len(finished) < 8  # the shards before it are kept ...
        stopped = errors[0].split("[filter] ")[1].split(":")[0]
        # ... and none after it was started: it is the first shard without output
        assert stopped == f"part-{len(finished):03d}" and not (out / "kept" / f"{stopped}.parquet").exists()
        assert f"No space left on device: cannot write {stopped}.parquet in {out}/" in errors[0]  # the file (h146)
        # the command's own write (report.html here; stats.json after a run's last pass) said only
        # "[Errno 28] No space left on device" (session 45, h146)
        filler = _fill(small)
        code, _, err = cli("report", out)
        assert code == 2 and err.strip() == (f"error: [Errno 28] No space left on device: cannot write report.html "
                                             f"in {out}; free space, then run the same command again "
                                             "(finished work is kept)"), err
        filler.unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(small)], check=True)  # a run kept on a read-only disk
        code, _, err = cli("report", out)
        assert code == 2 and err.strip() == (f"error: [Errno 30] Read-only file system: cannot write report.html "
                                             f"in {out}; give --out FILE to write the report elsewhere"), err
        subprocess.run(["mount", "-o", "remount,rw,size=16m", str(small)], check=True)
        code, stdout, err = cli("run", config, "-i", tmp_path / "in", "-o", out, "--workers", "1")
        assert code == 0 and "passes: filter done" in stdout, err
        assert len(list((out / "kept").iterdir())) == 8
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_a_file_system_gone_read_only_stops_the_pass_without_retries(tmp_path: Path, caplog) -> None:
    """Linux remounts a file system read-only after a disk error. Before, that looked like a
    transient I/O error: each later task did its work, then failed its write three times over."""
    where = tmp_path / "disk"
    if not _mount_tmpfs(where, "1m"):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        with LocalExecutor(workers=1, progress=False) as executor:
            with pytest.raises(StorageReadOnly) as stopped:
                executor.map(write_after_remount, [{"index": i} for i in range(6)], label="filter",
                             names=[f"part-{i:03d}" for i in range(6)],
                             shared={"where": str(where), "remount_read_only_at": 2})
        message = str(stopped.value)
        assert message.startswith("[filter] part-002: ") and "Read-only file system" in message, message
        assert "the file system it writes to is read-only" in message and "\n" not in message
        assert "retrying" not in caplog.text and "failed after 1 attempt(s)" in caplog.text
        assert sorted(p.name for p in where.iterdir()) == ["out-0", "out-1"]  # no task after it ran
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_failed_grouped_sync_names_its_file(tmp_path) -> None:
    """The files a shard publishes together are fsynced together when the block ends (h136); an
    error there named no file ("[Errno 5] Input/output error") or the hidden temporary. Here the
    sync of the second file fails (its temporary is gone): the error names it, and nothing is
    published (h154)."""
    from refinery.io import fs

    with pytest.raises(OSError) as info:
        with fs.published_together():
            for name in ("a.parquet", "b.parquet"):
                with fs.atomic_output(str(tmp_path / name)) as f:
                    f.write(b"x")
            next(tmp_path.glob(".tmp-*-b.parquet*")).unlink()
    assert str(info.value).endswith(f"cannot write b.parquet in {tmp_path}"), info.value
    assert not list(tmp_path.iterdir())
