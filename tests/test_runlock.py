"""One run at a time per local run directory (refinery/io/runlock.py): a second run on a busy
directory is refused in one line, the shares of a multi-instance job run side by side, and a run
killed with SIGKILL leaves no lock behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _fault_fixtures import CC_DOCS, split_jsonl
from refinery.io.runlock import LOCK_FILE, RunDirBusy, run_dir_lock

HOLD = ("import sys, time\n"
        "from refinery.io.runlock import run_dir_lock\n"
        "with run_dir_lock(sys.argv[1], shared=sys.argv[2] == 'shared'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(120)\n")


def _holder(run_dir: Path, shared: bool = False) -> subprocess.Popen:
    """Another process holding the run directory's lock (another run, as far as the lock can tell)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), "shared" if shared else "whole"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_one_whole_run_at_a_time_shares_side_by_side(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with run_dir_lock(str(run)):
        info = (run / LOCK_FILE).read_text()
        assert f'"pid": {os.getpid()}' in info  # the holder says who it is
        for shared in (False, True):  # neither another whole run nor a share starts beside it
            with pytest.raises(RunDirBusy, match=f"run directory {run} is in use by another refinery run "
                                                 f"\\(pid {os.getpid()} on "):
                with run_dir_lock(str(run), shared=shared):
                    pass
    assert (run / LOCK_FILE).read_text() == ""  # released, and no stale line left for the next one
    with run_dir_lock(str(run), shared=True), run_dir_lock(str(run), shared=True):  # shares together
        with pytest.raises(RunDirBusy, match="an instance's share of a multi-instance job"):
            with run_dir_lock(str(run)):
                pass
    with run_dir_lock(str(run)):  # free again
        pass
    with run_dir_lock("s3://bucket/run"), run_dir_lock("s3://bucket/run"):  # S3: not locked
        pass


def test_a_second_run_is_refused_in_one_line_and_a_killed_run_leaves_no_lock(tmp_path: Path, cli) -> None:
    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    config = tmp_path / "c.yaml"
    config.write_text("name: t\nstages:\n  - type: gopher_quality\n")
    out = tmp_path / "out"
    holder = _holder(out)
    try:
        code, _, err = cli("run", config, "-i", tmp_path / "in", "-o", out)
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        expected = (f"error: run directory {re.escape(str(out))} is in use by another refinery run "
                    f"\\(pid {holder.pid} on {re.escape(os.uname().nodename)}, running since [0-9: -]+\\): "
                    "wait for it to finish, or stop it; then run the same command again")
        assert code == 2 and len(lines) == 1 and re.fullmatch(expected, lines[0]), err
        assert not (out / "run.json").exists()  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)  # as a killed run ends: no chance to release anything
        holder.wait()
    code, _, err = cli("run", config, "-i", tmp_path / "in", "-o", out)
    assert code == 0, err
    assert (out / "run.json").exists() and (out / "stats.json").exists()


def test_standalone_dedup_and_tokenize_take_their_outputs_lock(tmp_path: Path, cli) -> None:
    """`refinery dedup` and `refinery tokenize` write shards the way runs do, so two of them on one
    output would collide the same way: each holds its output's lock too."""
    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    config = tmp_path / "c.yaml"
    config.write_text("name: t\nstages:\n  - type: gopher_quality\n")
    run = tmp_path / "run"
    code, _, err = cli("run", config, "-i", tmp_path / "in", "-o", run)
    assert code == 0, err
    commands = {"dedup": ("dedup", run, "-o", tmp_path / "dedup", "--method", "exact", "--workers", "1"),
                "tokens": ("tokenize", run, "-o", tmp_path / "tokens")}
    for name, args in commands.items():
        out = tmp_path / name
        holder = _holder(out)
        try:
            code, _, err = cli(*args)
            lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
            assert code == 2 and len(lines) == 1, err
            assert lines[0].startswith(f"error: run directory {out} is in use by another refinery run (pid {holder.pid}")
            assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # refused before writing anything
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        code, _, err = cli(*args)
        assert code == 0, err
    assert (tmp_path / "dedup" / "stats.json").exists() and (tmp_path / "tokens" / "manifest.json").exists()
