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
from _s3_fixtures import s3_root  # noqa: F401 - a fixture
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


# -- S3 run directories: no lock, a conditional write of run.json -------------------------------
def _released_together(monkeypatch, *calls):
    """Run ``calls`` in threads held at their first write of a ``run.json`` until all of them got
    there, so each has read the run directory before any writes it: the race, every time. The
    real writes run; the gate only orders them. Returns each call's result or exception."""
    import threading

    from refinery.io import fs

    gate, seen = threading.Barrier(len(calls), timeout=60), threading.local()

    def gated(write):
        def wrapper(uri, *args, **kwargs):
            if uri.endswith("/run.json") and not getattr(seen, "done", False):
                seen.done = True
                gate.wait()
            return write(uri, *args, **kwargs)
        return wrapper

    for name in ("write_bytes", "write_bytes_if"):  # the old code wrote run.json with the first
        if hasattr(fs, name):
            monkeypatch.setattr(fs, name, gated(getattr(fs, name)))
    results: list = [None] * len(calls)

    def run(i):
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the loser's refusal is the result
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    monkeypatch.undo()
    return results


def _s3_run(tmp_path: Path, spec: str):
    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline

    import yaml

    def run(out: str, force: bool = False, only_shards: set[str] | None = None):
        return run_pipeline(parse_config(yaml.safe_load(spec)), str(tmp_path / "in"), out, workers=1, progress=False,
                            force=force, only_shards=only_shards)
    return run


def _winner_and_loser(results, out: str):
    from refinery.pipeline import RunSummary

    won = [r for r in results if isinstance(r, RunSummary)]
    lost = [r for r in results if not isinstance(r, RunSummary)]
    assert len(won) == 1 and len(lost) == 1, results
    assert isinstance(lost[0], RunDirBusy), repr(lost[0])
    assert str(lost[0]) == (f"run directory {out} is in use by another refinery run (it wrote run.json while this "
                            "one was planning): wait for it to finish, or stop it; then run the same command again")
    return results.index(won[0])


def _shard_fingerprints(out: str) -> tuple[str, list[str]]:
    import json

    from refinery.io import fs

    run = json.loads(fs.read_bytes(f"{out}/run.json"))
    markers = [json.loads(fs.read_bytes(u)).get("fingerprint") for u in fs.list_files(f"{out}/stats", (".json",))]
    return run["passes"][0]["fingerprint"], markers


A_SPEC = "name: a\nstages:\n  - type: gopher_quality\n"
B_SPEC = "name: b\nstages:\n  - type: gopher_repetition\n"


def test_two_runs_planning_one_new_s3_output_one_wins_the_other_is_refused(tmp_path, s3_root, monkeypatch) -> None:
    """Two runs with other configs started at once into one new S3 output both exited 0 and left a
    corpus of neither (S3 has no lock): now exactly one creates run.json (If-None-Match) and the
    other is refused in one line naming the output, before it writes a shard. A resume, --force
    and a second --force racing the first still work."""
    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    a, b, out = _s3_run(tmp_path, A_SPEC), _s3_run(tmp_path, B_SPEC), f"{s3_root}/mix"
    first = _winner_and_loser(_released_together(monkeypatch, lambda: a(out), lambda: b(out)), out)
    winner, other = (a, b) if first == 0 else (b, a)
    planned, markers = _shard_fingerprints(out)
    assert markers == [planned, planned]  # every shard of the winner's config, none of the other's
    assert all(s == "skipped" for s in (o.status for o in winner(out).outcomes))  # a resume
    # two --force replans of one run: If-Match on the run.json each read; the loser deletes nothing
    results = _released_together(monkeypatch, lambda: winner(out, force=True), lambda: other(out, force=True))
    again = _winner_and_loser(results, out)
    assert all(o.status == "done" for o in results[again].outcomes)
    planned, markers = _shard_fingerprints(out)
    assert markers == [planned, planned]
    from refinery.status import run_status
    assert run_status(out).complete


def test_the_shares_of_one_launch_accept_the_run_json_they_all_plan_on_s3(tmp_path, s3_root, monkeypatch) -> None:
    """The instances of a multi-instance job share one S3 run directory by design: released
    together, each share's conditional write but one loses, finds its own plan recorded and goes
    on; together they make one complete run. A whole run planning another config beside them is
    still refused."""
    from refinery.status import run_status

    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    a, b, out = _s3_run(tmp_path, A_SPEC), _s3_run(tmp_path, B_SPEC), f"{s3_root}/multi"
    shares = [lambda: a(out, only_shards={"part-000"}), lambda: a(out, only_shards={"part-001"})]
    results = _released_together(monkeypatch, *shares)
    assert [type(r).__name__ for r in results] == ["RunSummary", "RunSummary"], results
    status = run_status(out)
    assert status.complete and (status.shards_planned, status.shards_finished) == (2, 2)
    planned, markers = _shard_fingerprints(out)
    assert markers == [planned, planned]
    # a replan with another config (--force) beside a share of the recorded one: one of them only
    results = _released_together(monkeypatch, lambda: a(out, only_shards={"part-000"}), lambda: b(out, force=True))
    _winner_and_loser(results, out)


def test_a_conditional_write_retried_after_its_own_success_is_no_conflict(s3_root: str) -> None:  # noqa: F811
    """A PUT whose response is lost is retried by botocore; the retry of a conditional create then
    finds the object its first attempt wrote (412), and the run that won was refused. The same bytes
    are our own write; other bytes are another writer's."""
    from refinery.io import fs

    uri = f"{s3_root}/run.json"
    first = fs.write_bytes_if(uri, b'{"plan": "ours"}', None)
    assert first and fs.write_bytes_if(uri, b'{"plan": "ours"}', None) == first  # the retry, as it arrives
    with pytest.raises(fs.WriteConflict, match="another writer"):
        fs.write_bytes_if(uri, b'{"plan": "theirs"}', None)
    assert fs.read_bytes(uri) == b'{"plan": "ours"}'
