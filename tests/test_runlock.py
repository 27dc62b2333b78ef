"""One run at a time per local run directory (refinery/io/runlock.py): a second run on a busy
directory is refused in one line, the shares of a multi-instance job run side by side, and a run
killed with SIGKILL leaves no lock behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _procs import assert_group_gone

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
                    f"\\(pid {holder.pid} on {re.escape(os.uname().nodename)}, running since [0-9:T-]+Z\\): "
                    "wait for it to finish, or stop it; then run the same command again")
        assert code == 2 and len(lines) == 1 and re.fullmatch(expected, lines[0]), err
        assert not (out / "run.json").exists()  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)  # as a killed run ends: no chance to release anything
        holder.wait()
    code, _, err = cli("run", config, "-i", tmp_path / "in", "-o", out)
    assert code == 0, err
    assert (out / "run.json").exists() and (out / "stats.json").exists()


def test_standalone_dedup_and_tokenize_take_their_outputs_lock(tmp_path: Path, cli, monkeypatch) -> None:
    """`refinery dedup` and `refinery tokenize` write shards the way runs do, so two of them on one
    output would collide the same way: each holds its output's lock too, until its executor has
    closed (or, interrupted, stopped) its workers. They made their executor outside the lock, so it
    was let go first, and a retried job could start beside their workers; as for `refinery run`,
    the guard now wraps the executor."""
    from refinery.executors.local import LocalExecutor
    from refinery.io.runlock import run_dir_active

    held_at_close: dict[str, list] = {"dedup": [], "tokens": []}
    close, current = LocalExecutor.close, [""]

    def closing(self) -> None:
        if current[0]:
            held_at_close[current[0]].append(run_dir_active(str(tmp_path / current[0])))
        close(self)

    monkeypatch.setattr(LocalExecutor, "close", closing)
    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    config = tmp_path / "c.yaml"
    config.write_text("name: t\nstages:\n  - type: gopher_quality\n")
    run = tmp_path / "run"
    code, _, err = cli("run", config, "-i", tmp_path / "in", "-o", run, "--workers", "1")  # the input: inline
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
        current[0] = name
        code, _, err = cli(*args)
        current[0] = ""
        assert code == 0, err
        assert held_at_close[name] and held_at_close[name][0] is True, (name, held_at_close)  # closed under it
        assert run_dir_active(str(out)) is False  # and let go after
    assert (tmp_path / "dedup" / "stats.json").exists() and (tmp_path / "tokens" / "manifest.json").exists()


# -- S3 run directories: no lock, a conditional write of run.json -------------------------------
def _released_together(monkeypatch, *calls, at: str = "/run.json"):
    """Run ``calls`` in threads held at their first write of a file ending in ``at`` (``run.json``;
    ``/.claim``) until all of them got there, so each has read the run directory before any writes
    it: the race, every time. The real writes run; the gate only orders them. Returns each call's
    result or exception."""
    import threading

    from refinery.io import fs

    gate, seen = threading.Barrier(len(calls), timeout=60), threading.local()

    def gated(write):
        def wrapper(uri, *args, **kwargs):
            if uri.endswith(at) and not getattr(seen, "done", False):
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
    """A run of ``spec`` as :func:`refinery.pipeline.run_pipeline` makes it, without the S3 claim
    it takes first (which now refuses the second of two runs before either plans): the conditional
    write of run.json is what these tests race, as a program calling ``run_plan`` meets it."""
    from refinery.config import parse_config
    from refinery.executors import make_executor
    from refinery.pipeline import run_plan
    from refinery.plan import plan_run

    import yaml

    def run(out: str, force: bool = False, only_shards: set[str] | None = None):
        config = parse_config(yaml.safe_load(spec))
        with make_executor("local", 1, progress=False) as executor:
            return run_plan(plan_run(config, str(tmp_path / "in"), out), executor, force=force,
                            only_shards=only_shards)
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


FORCED_SHARE = ("import sys\n"
                "from refinery.config import parse_config\n"
                "from refinery.pipeline import run_pipeline\n"
                "summary = run_pipeline(parse_config({'name': 'a', 'stages': [{'type': 'gopher_quality'}]}), sys.argv[1],\n"
                "                       sys.argv[2], workers=1, progress=False, force=True, only_shards={sys.argv[3]},\n"
                "                       launch='launch-7')\n"
                "print(summary.passes['filter'])\n")


def test_the_forced_shares_of_one_launch_count_only_this_launchs_shards(tmp_path, s3_root) -> None:
    """--force shares of one launch started seconds apart: the first to finish counted its
    sibling's shard of the previous run (same fingerprint) as done and closed the pass over it, and
    the sibling, started after, deleted that pass marker. Now every share gets the launch's id: the
    shard and pass markers record it, and a forced share redoes what lacks it and keeps what has it
    (a retried share skips its shard). Forced shares without an id are refused before they write."""
    import json

    from refinery.config import ConfigError, parse_config
    from refinery.io import fs
    from refinery.pipeline import run_pipeline
    from refinery.status import run_status

    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    config, out = parse_config({"name": "a", "stages": [{"type": "gopher_quality"}]}), f"{s3_root}/forced"
    run_pipeline(config, str(tmp_path / "in"), out, workers=1, progress=False)  # the previous run, finished
    marker = f"{out}/passes/filter.json"

    def share(shard: str) -> str:
        done = subprocess.run([sys.executable, "-c", FORCED_SHARE, str(tmp_path / "in"), out, shard],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    def launches() -> dict[str, str | None]:
        return {fs.basename(u): json.loads(fs.read_bytes(u)).get("launch") for u in fs.list_files(f"{out}/stats", (".json",))}

    def restart(when: str | None = None) -> str:  # run.json's started_at, set to ``when`` first if given
        record = json.loads(fs.read_bytes(f"{out}/run.json"))
        if when:
            fs.write_bytes(f"{out}/run.json", json.dumps(record | {"started_at": when}).encode())
        return record["started_at"] if not when else when

    restart("2020-01-01T00:00:00Z")  # the previous run's start
    assert share("part-000") == "partial"  # part-001 is the previous run's: not this launch's to count
    assert not fs.exists(marker) and launches() == {"part-000.json": "launch-7", "part-001.json": None}
    assert restart() != "2020-01-01T00:00:00Z"  # a forced launch is a new run (review h98) ...
    restart("2021-01-01T00:00:00Z")
    assert share("part-001") == "done"  # the last share of the launch closes the pass
    assert restart() == "2021-01-01T00:00:00Z"  # ... begun by its first share, not each
    assert json.loads(fs.read_bytes(marker))["launch"] == "launch-7"
    assert launches() == {"part-000.json": "launch-7", "part-001.json": "launch-7"}
    retried = run_pipeline(config, str(tmp_path / "in"), out, workers=1, progress=False, force=True,
                           only_shards={"part-000"}, launch="launch-7")  # a retried share of the same launch
    assert retried.passes["filter"] == "skipped" and fs.exists(marker)
    with pytest.raises(ConfigError, match="force with only_shards .* needs launch="):
        run_pipeline(config, str(tmp_path / "in"), out, workers=1, progress=False, force=True, only_shards={"part-001"})
    assert fs.exists(marker) and run_status(out).complete


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


# -- S3 outputs of the standalone commands: a claim, OUTPUT/.claim ------------------------------
def _local_run(tmp_path: Path, cli) -> Path:
    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 4)
    config = tmp_path / "c.yaml"
    config.write_text("name: t\nstages:\n  - type: gopher_quality\n")
    # one worker: the run is these tests' input, made inline (a pool's start is ~1.5 s)
    code, _, err = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "run", "--workers", "1")
    assert code == 0, err
    return tmp_path / "run"


def _dedup(run: Path, method: str, **kwargs):
    from refinery.dedup.config import load_dedup_config
    from refinery.dedup.driver import run_dedup

    return lambda out: run_dedup(str(run), out, load_dedup_config(None, {"method": method, "executor.workers": 1}),
                                 **kwargs)


def _tokenize(run: Path, seed: int, **kwargs):
    from refinery.tokens.writer import tokenize_run

    return lambda out: tokenize_run(str(run), out, "gpt2", shuffle=True, num_shards=2, seed=seed, progress=False,
                                    **kwargs)


def _gate_at_claim(monkeypatch, *calls):
    """:func:`_released_together` at each call's first write of OUTPUT/.claim (the old code, which
    wrote none, ran both calls to their end: the test fails on it by their results)."""
    return _released_together(monkeypatch, *calls, at="/.claim")


def _one_refused(results, out: str) -> int:
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(lost) == 1, results
    assert isinstance(lost[0], RunDirBusy), repr(lost[0])
    assert str(lost[0]).startswith(f"output {out} is in use by another refinery command (refinery "), str(lost[0])
    assert "\n" not in str(lost[0])
    return 1 - results.index(lost[0])


def test_standalone_commands_started_together_into_one_s3_output_one_is_refused(tmp_path, s3_root, monkeypatch,
                                                                                  cli) -> None:
    """Two `refinery dedup` (exact, url) or two `refinery tokenize` (seeds 0, 1) started at once
    into one S3 output both wrote shards; the loser failed on the winner's files or exited 0
    over them (race_demo: 10 of 10 trials). Now each claims OUTPUT/.claim first: of two that read
    it together exactly one proceeds and the other is refused in one line naming the output,
    before writing anything; the output is the winner's alone."""
    import json

    from refinery.io import fs
    from refinery.status import run_status

    run = _local_run(tmp_path, cli)
    out = f"{s3_root}/dedup"
    results = _gate_at_claim(monkeypatch, lambda: _dedup(run, "exact")(out), lambda: _dedup(run, "url")(out))
    won = _one_refused(results, out)
    recorded = json.loads(fs.read_bytes(f"{out}/run.json"))
    assert recorded["dedup"]["method"] == ("exact", "url")[won] == results[won]["method"]
    assert run_status(out).complete
    assert json.loads(fs.read_bytes(f"{out}/.claim"))["released"]  # the winner let go at its end

    out = f"{s3_root}/tokens"
    results = _gate_at_claim(monkeypatch, lambda: _tokenize(run, 0)(out), lambda: _tokenize(run, 1)(out))
    won = _one_refused(results, out)
    assert json.loads(fs.read_bytes(f"{out}/manifest.json"))["shuffle"]["seed"] == won
    code, _, err = cli("verify-tokens", out)
    assert code == 0, err


HOLD_CLAIM = ("import sys, time\n"
              "from refinery.io.runlock import claim_output\n"
              "claim_output(sys.argv[1], sys.argv[2], {})\n"
              "print('held', flush=True)\n"
              "time.sleep(120)\n")


def test_a_running_commands_s3_claim_refuses_another_and_a_killed_ones_does_not_block(tmp_path, s3_root, cli,
                                                                                      monkeypatch) -> None:
    """A command started while another holds the output's claim is refused (in one line, making
    nothing); once the holder is killed (no release) the rerun goes on at once on its host, and
    on another host after the claim lapses; --force redoes a finished output under a new claim."""
    import json

    from refinery.io import fs, runlock

    run = _local_run(tmp_path, cli)
    commands = {"dedup": ("dedup", run, "-o", f"{s3_root}/dedup", "--method", "exact", "--workers", "1"),
                "tokenize": ("tokenize", run, "-o", f"{s3_root}/tokens")}
    for command, args in commands.items():
        out = str(args[3])
        holder = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, out, command], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            code, _, err = cli(*args)
            lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
            assert code == 2 and len(lines) == 1, err
            assert lines[0].startswith(f"error: output {out} is in use by another refinery command (refinery "
                                       f"{command}, pid {holder.pid} on "), lines[0]
            assert fs.list_files(out) == [] and fs.exists(f"{out}/.claim")  # nothing made (listings skip .claim)
        finally:
            holder.send_signal(signal.SIGKILL)  # killed: its claim is not released
            holder.wait()
        code, _, err = cli(*args)  # its pid is gone from this host: the claim is not held
        assert code == 0, err
        code, _, err = cli(*args, "--force")  # a finished output: its claim was released
        assert code == 0, err
    # a killed command of another host: held until its renewals lapse, then taken over
    out = str(commands["dedup"][3])
    other = {"command": "dedup", "claim": "x", "pid": 1, "host": "elsewhere", "since": "then", "settings": {}}
    fs.write_bytes(f"{out}/.claim", json.dumps(other).encode())
    code, _, err = cli(*commands["dedup"])
    assert code == 2 and "(refinery dedup, pid 1 on elsewhere, started then; its claim .claim was renewed " in err
    monkeypatch.setattr(runlock, "CLAIM_TTL_SECONDS", 0.0)  # as if its last renewal were that long ago
    code, _, err = cli(*commands["dedup"])
    assert code == 0, err
    assert json.loads(fs.read_bytes(f"{out}/.claim"))["pid"] == os.getpid()


def test_two_identical_runs_released_together_on_s3_one_is_refused(tmp_path, s3_root, monkeypatch) -> None:
    """Two runs of one config into one S3 output, planned in the same second, write the same bytes
    to run.json: the loser's 412 found "its own bytes" (the retry rule) and both went on, a whole
    run each in one directory. Each write of the plan is its own (a fresh ``writer``): the retry
    of one's own PUT still passes, another run's identical plan does not. Resumes likewise."""
    import time

    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    a, out = _s3_run(tmp_path, A_SPEC), f"{s3_root}/twins"
    second = time.gmtime()
    monkeypatch.setattr(time, "gmtime", lambda *_: second)  # one second for both: the same bytes
    _winner_and_loser(_released_together(monkeypatch, lambda: a(out), lambda: a(out)), out)
    monkeypatch.setattr(time, "gmtime", lambda *_: second)
    _winner_and_loser(_released_together(monkeypatch, lambda: a(out), lambda: a(out)), out)  # two resumes
    from refinery.status import run_status
    assert run_status(out).complete


def test_a_store_without_conditional_writes_still_runs(tmp_path, s3_server, s3_root, monkeypatch, caplog) -> None:
    """A store that answers If-None-Match / If-Match with 501 NotImplemented refused every run into
    it ('output ... is not writable'): run.json is written as before, with one warning that two
    runs started at once are not told apart. A resume and --force (its claim) work too."""
    from _s3_fixtures import s3_without_conditions

    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    a, out = _s3_run(tmp_path, A_SPEC), f"{s3_root}/plain"
    with s3_without_conditions(s3_server) as front:
        monkeypatch.setenv("AWS_ENDPOINT_URL", front)
        assert all(o.status == "done" for o in a(out).outcomes)
        assert all(o.status == "skipped" for o in a(out).outcomes)  # a resume
        assert all(o.status == "done" for o in a(out, force=True).outcomes)
    warned = [r.getMessage() for r in caplog.records if "conditional writes" in r.getMessage()]
    assert warned == [f"{front} does not support conditional writes (501 NotImplemented): {out}/run.json is "
                      "written without them, so two runs started at once into its directory are not told apart"]


def test_a_store_that_ignores_conditional_writes_is_named_once(s3_server, s3_root, monkeypatch, caplog) -> None:
    """A store (or proxy) that accepts If-None-Match / If-Match and performs the write anyway ran
    every command unguarded without a word (one answering 501 got a warning): one probe per command
    (the claim's bytes again, If-None-Match: *) finds it, and it is said once per endpoint. A store
    that honours them gets no warning, and the probe leaves the claim as it was."""
    from _s3_fixtures import s3_front
    from refinery.io import fs
    from refinery.io.runlock import claim_output, claim_share, release_claim

    monkeypatch.setattr(fs, "_UNCONDITIONAL_WARNED", set())
    out = f"{s3_root}/ignored"
    claim = claim_output(out, "dedup", {})  # moto honours them: no warning, the claim unchanged
    assert fs.etag(claim.uri) == claim.tag
    release_claim(claim)
    assert not [r for r in caplog.records if "conditional writes" in r.getMessage()]
    with s3_front(s3_server, drop_request=("If-None-Match", "If-Match")) as front:
        monkeypatch.setenv("AWS_ENDPOINT_URL", front)
        release_claim(claim_output(out, "dedup", {}))
        release_claim(claim_share(out, "run", {}))
        release_claim(claim_output(out, "tokenize", {}))
    warned = [r.getMessage() for r in caplog.records if "conditional writes" in r.getMessage()]
    assert warned == [f"{front} ignores conditional writes (a PUT with If-None-Match: * over the existing "
                      f"{out}/.claim was accepted): two refinery commands into one output there are not refused, "
                      "nor two runs started at once told apart; run one at a time"]


def test_a_conditional_write_answered_409_in_flight_is_retried(tmp_path, s3_server, s3_root, monkeypatch) -> None:
    """S3 answers 409 ConditionalRequestConflict while another conditional write of the key is in
    flight, to be retried: it was taken for a lost race, and a lone run (or a share of a launch,
    before its peer's plan was readable) was refused as 'in use by another refinery run'."""
    from _s3_fixtures import s3_without_conditions

    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    a, out = _s3_run(tmp_path, A_SPEC), f"{s3_root}/busy"
    with s3_without_conditions(s3_server, conflicts=2) as front:
        monkeypatch.setenv("AWS_ENDPOINT_URL", front)
        assert all(o.status == "done" for o in a(out).outcomes)


# -- a whole `refinery run` on S3: the claim, for its whole duration ------------------------------
STALLED_RUN = ("import sys\n"
               "from refinery.config import parse_config\n"
               "from refinery.pipeline import run_pipeline\n"
               "from refinery.stages.registry import register_stage\n"
               "register_stage('stalls', '_custom_stages:Stalls')\n"
               "spec = {'name': 's', 'stages': [{'type': 'gopher_quality'}, {'type': 'stalls'}]}\n"
               "run_pipeline(parse_config(spec), sys.argv[1], sys.argv[2], workers=1, progress=False,\n"
               "             only_shards=None if sys.argv[3] == 'whole' else {sys.argv[3]})\n")
STALLS_SPEC = "name: s\nstages:\n  - type: gopher_quality\n  - type: stalls\n"


def _stalled_run(tmp_path: Path, out: str, share: str = "whole", after: int = 0) -> subprocess.Popen:
    """A real run (or one share of a launch) into ``out``, stopped after ``after`` batches (one
    per shard here) in the first it had planned: the marker file says it got there."""
    import time

    marker = tmp_path / f"stalled-{share}"
    env = {**os.environ, "REFINERY_TEST_STALL": str(marker), "REFINERY_TEST_STALL_AFTER": str(after),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", STALLED_RUN, str(tmp_path / "in"), out, share], env=env,
                            start_new_session=True, stderr=subprocess.PIPE, text=True)
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.stderr else proc.returncode)
        time.sleep(0.1)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # as a killed run ends: no chance to release anything
    proc.wait()


@contextlib.contextmanager
def _stalls_stage():
    """The ``stalls`` stage registered in this process while inside (the registry restored after)."""
    from refinery.stages import registry

    stages, registered = dict(registry.STAGES), dict(registry.REGISTERED)
    registry.register_stage("stalls", "_custom_stages:Stalls")
    try:
        yield
    finally:
        registry.STAGES.clear(), registry.STAGES.update(stages)
        registry.REGISTERED.clear(), registry.REGISTERED.update(registered)


@pytest.fixture
def stalls_registered():
    with _stalls_stage():
        yield


def _refused(cli, args, out: str, holder: str) -> None:
    code, _, err = cli(*args)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: output {out} is in use by another refinery command ({holder}"), lines[0]


def test_a_second_s3_run_started_after_the_first_planned_is_refused_and_a_killed_run_resumes(
        tmp_path, s3_root, cli, stalls_registered) -> None:
    """A second run of the same config started after the first had written run.json read it,
    resumed and ran beside it (run.json's condition orders planning only). Now a whole run holds
    OUTPUT/.claim while it runs: a second run (same config or another), one share of a launch and
    a standalone tokenize into RUN/tokens are refused in one line naming the output and the run;
    once the run is SIGKILLed its claim is not held (its pid is gone) and the same command
    resumes it to the end; --force redoes it."""
    import json

    from refinery.io import fs
    from refinery.status import run_status

    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    out = f"{s3_root}/run"
    config, other = tmp_path / "s.yaml", tmp_path / "b.yaml"
    config.write_text(STALLS_SPEC)
    other.write_text(B_SPEC)
    first = _stalled_run(tmp_path, out, after=1)  # one shard in kept/, so there is something to tokenize
    try:
        assert fs.exists(f"{out}/run.json")  # it planned: the old code let the second run resume beside it
        holder = f"refinery run, pid {first.pid} on {socket.gethostname()}, started "
        for cfg in (config, other):
            _refused(cli, ("run", cfg, "-i", tmp_path / "in", "-o", out, "--workers", "1"), out, holder)
        _refused(cli, ("tokenize", out, "-o", f"{out}/tokens", "--allow-unfinished"), out, holder)
        assert not fs.exists(f"{out}/tokens")
        from refinery.config import parse_config
        from refinery.pipeline import run_pipeline
        import yaml
        with pytest.raises(RunDirBusy, match=f"output {re.escape(out)} is in use by .*{re.escape(holder)}"):
            run_pipeline(parse_config(yaml.safe_load(STALLS_SPEC)), str(tmp_path / "in"), out, workers=1,
                         progress=False, only_shards={"part-000"})
        assert [fs.basename(u) for u in fs.list_files(f"{out}/stats", (".json",))] == ["part-000.json"]
    finally:
        _kill(first)
    assert json.loads(fs.read_bytes(f"{out}/.claim"))["pid"] == first.pid  # killed: not released
    code, _, err = cli("run", config, "-i", tmp_path / "in", "-o", out, "--workers", "1")
    assert code == 0, err
    status = run_status(out)
    assert status.complete and (status.shards_planned, status.shards_finished) == (2, 2)
    claim = json.loads(fs.read_bytes(f"{out}/.claim"))
    assert claim["pid"] == os.getpid() and claim["command"] == "run" and claim["released"]
    code, _, err = cli("run", config, "-i", tmp_path / "in", "-o", out, "--workers", "1", "--force")
    assert code == 0, err


def test_s3_shares_run_side_by_side_but_not_beside_a_whole_run(tmp_path, s3_root, cli, stalls_registered) -> None:
    """The instances of a launch share one S3 run directory: each claims its own
    OUTPUT/.claim.share-<id>, so a share runs beside a live one; a whole run is refused while a
    share is alive (and a share while a whole run is: the test above); a killed share blocks
    nothing on its host, and its key goes."""
    from refinery.config import parse_config
    from refinery.io import fs
    from refinery.pipeline import run_pipeline
    from refinery.status import run_status

    import yaml

    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    out = f"{s3_root}/shares"
    config = tmp_path / "s.yaml"
    config.write_text(STALLS_SPEC)
    stalled = _stalled_run(tmp_path, out, share="part-000")
    try:
        other = run_pipeline(parse_config(yaml.safe_load(STALLS_SPEC)), str(tmp_path / "in"), out, workers=1,
                             progress=False, only_shards={"part-001"})
        assert other.passes == {"filter": "partial"} and [o.status for o in other.outcomes] == ["done"]
        holder = (f"refinery run (an instance's share of a multi-instance job), pid {stalled.pid} on "
                  f"{socket.gethostname()}, started ")
        _refused(cli, ("run", config, "-i", tmp_path / "in", "-o", out, "--workers", "1"), out, holder)
    finally:
        _kill(stalled)
    code, _, err = cli("run", config, "-i", tmp_path / "in", "-o", out, "--workers", "1")
    assert code == 0, err  # the killed share's pid is gone: its claim is not held
    assert run_status(out).complete
    bucket, _, prefix = out.removeprefix("s3://").partition("/")
    listed = fs.s3_client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/.claim.share-").get("Contents", [])
    assert listed == []  # the live share deleted its own at its end, the whole run the killed one's


def test_two_s3_runs_claiming_at_the_same_moment_one_is_refused(tmp_path, s3_root, monkeypatch) -> None:
    """Two whole runs (other configs) that read OUTPUT/.claim at once: one writes it and runs,
    the other is refused in one line before it plans; the output is the winner's alone."""
    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline
    from refinery.status import run_status

    import yaml

    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    out = f"{s3_root}/together"

    def run(spec: str):
        return lambda: run_pipeline(parse_config(yaml.safe_load(spec)), str(tmp_path / "in"), out, workers=1,
                                    progress=False)
    results = _gate_at_claim(monkeypatch, run(A_SPEC), run(B_SPEC))
    won = _one_refused(results, out)
    assert "(refinery run, pid " in str(results[1 - won])
    planned, markers = _shard_fingerprints(out)
    assert markers == [planned, planned] and run_status(out).complete


def test_a_whole_s3_object_replaced_while_read_is_read_again(s3_root: str, monkeypatch) -> None:  # noqa: F811
    """Two shares of a launch closing a pass together both write its marker and stats (the same
    content); a read whose GET came after the other's PUT failed the share as 'changed while it
    was read' (one run in two of the shares test). A whole-file read is one GET (session 44, h139:
    it was a HEAD, then a GET pinned to the HEAD's ETag), which sees one version whole; a read of
    part of a file (a Parquet footer) still fails rather than mixing versions."""
    from refinery.io import fs

    uri = f"{s3_root}/passes/filter.json"
    fs.write_bytes(uri, b'{"pass": "filter", "v": 1}')
    with monkeypatch.context() as patched:
        patched.setattr(fs, "open_input", lambda *a, **k: pytest.fail("a whole read opened the file (HEAD, GETs)"))
        assert fs.read_bytes(uri) == b'{"pass": "filter", "v": 1}'
    monkeypatch.setattr(fs.S3RangeFile, "OPEN_BYTES", 8)  # the opening GET holds a part of the file only
    with pytest.raises(fs.ObjectChanged, match="changed while it was read"), fs.open_input(uri) as f:
        fs.write_bytes(uri, b'{"pass": "filter", "v": 2}')  # replaced between this open and its read
        f.read()


def test_a_renewal_whose_reply_was_lost_leaves_the_claim_this_commands(s3_server, s3_root, monkeypatch) -> None:
    """A network blip during a renewal: the PUT lands but its reply (and every retry's) is lost, so
    the command keeps the ETag from before. Its next write of the claim, the end check, was taken
    for another command's takeover: a whole dedup refused its own result ('claimed by another
    refinery command') and its release did nothing, so the next command was refused for the lapse.
    The claim in place still carries this command's claim id: it is this command's."""
    import json

    from _s3_fixtures import s3_losing_put_replies
    from refinery.io import fs
    from refinery.io.runlock import claim_output, confirm_claim, output_guard, release_claim

    monkeypatch.setenv("REFINERY_S3_MAX_ATTEMPTS", "2")
    out = f"{s3_root}/blip"
    with s3_losing_put_replies(s3_server) as (front, switch):
        monkeypatch.setenv("AWS_ENDPOINT_URL", front)
        with output_guard(out, "dedup", {}) as claim:
            switch[0] = True
            with pytest.raises(fs.StorageError, match="upload to .*/.claim failed"):
                claim.rewrite(beat=1)  # what the heartbeat does every 30 s: it says so and goes on
            switch[0] = False
            assert json.loads(fs.read_bytes(f"{out}/.claim"))["beat"] == 1  # it landed
            confirm_claim(claim)  # still this command's
        assert json.loads(fs.read_bytes(f"{out}/.claim"))["released"]
        # the next command goes on at once (released: its heartbeat would outlive the test and
        # renew against the endpoint the test set, once unset, real AWS)
        release_claim(claim_output(out, "tokenize", {}))


def test_a_claim_naming_this_process_but_not_held_by_it_does_not_refuse(s3_root) -> None:
    """A claim on this host naming this process's pid was taken as held while this process lived:
    a claim it failed to release (the network down at the end of a notebook's or library caller's
    run, a second Ctrl-C during the release), or a previous process's with the same pid (a
    restarted container's pid 1), refused every command of this process until the lapse. Such a
    claim is held only while this process holds it."""
    import json

    from refinery.io import fs
    from refinery.io.runlock import claim_output, release_claim

    out = f"{s3_root}/own"
    left = {"command": "run", "claim": "an-earlier-one", "pid": os.getpid(), "host": socket.gethostname(),
            "since": "then", "settings": {}}
    fs.write_bytes(f"{out}/.claim", json.dumps(left).encode())
    claim = claim_output(out, "dedup", {})  # goes on at once
    with pytest.raises(RunDirBusy, match=r"\(refinery dedup, pid \d+ on "):
        claim_output(out, "tokenize", {})  # but one this process holds now still refuses
    release_claim(claim)
    assert json.loads(fs.read_bytes(f"{out}/.claim"))["released"]


def test_the_run_directory_stays_held_until_the_workers_are_gone(tmp_path: Path, monkeypatch) -> None:
    """The run's lock (an S3 claim alike) was taken inside the executor's block, so a failed or
    interrupted run let it go while its executor still waited for (or killed) its workers, and a
    retried job could start beside them (a review). It now wraps the executor: held while it closes."""
    from refinery.config import parse_config
    from refinery.executors.local import LocalExecutor
    from refinery.io.runlock import run_dir_active
    from refinery.pipeline import run_pipeline

    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    out, held_at_close = tmp_path / "run", []
    close = LocalExecutor.close

    def closing(self) -> None:
        held_at_close.append(run_dir_active(str(out)))
        close(self)

    monkeypatch.setattr(LocalExecutor, "close", closing)
    spec = {"name": "t", "stages": [{"type": "gopher_quality"}]}
    run_pipeline(parse_config(spec), str(tmp_path / "in"), str(out), workers=1, progress=False)
    assert held_at_close and all(held_at_close), held_at_close
    assert run_dir_active(str(out)) is False  # and let go after


# -- the fence: a run stopped past its claim's lapse writes nothing once it resumes ----------------
STOPPED_RUN = ("import sys\n"
               "from refinery.io import runlock\n"
               "runlock.CLAIM_TTL_SECONDS, runlock.CLAIM_HEARTBEAT_SECONDS = float(sys.argv[4]), 1.0\n"
               "from refinery.cli import main\n"
               "from refinery.stages.registry import register_stage\n"
               "register_stage('stalls', '_custom_stages:Stalls')\n"
               "main(['run', sys.argv[1], '-i', sys.argv[2], '-o', sys.argv[3], '--workers', sys.argv[5],\n"
               "      '--executor', sys.argv[6]])\n")


def _versions(bucket: str, prefix: str) -> list[tuple[str, str]]:
    """Every version and delete marker under ``prefix`` of a versioned bucket: any write or delete
    adds one."""
    from refinery.io import fs

    listed = fs.s3_client().list_object_versions(Bucket=bucket, Prefix=prefix)
    return sorted((v["Key"], v["VersionId"]) for k in ("Versions", "DeleteMarkers") for v in listed.get(k, []))


def _corpus(out: str) -> dict[str, list]:
    import pyarrow.parquet as pq

    from refinery.io import fs

    tables = {}
    for sub in ("kept", "removed"):
        for uri in fs.list_files(f"{out}/{sub}", (".parquet",)):
            with fs.open_input(uri, seekable=True) as f:
                tables[f"{sub}/{fs.basename(uri)}"] = pq.read_table(f).to_pylist()
    return tables


def stopped_past_the_lapse(tmp_path: Path, out: str, executor: str, workers: int, monkeypatch) -> None:
    """Run ``STALLS_SPEC`` into ``out`` with a 4 s lapse, SIGSTOP it (driver and workers) while a
    worker is inside a shard, past the lapse; a second run takes the output over and finishes;
    SIGCONT the first. Its worker used to commit the shard over the second run's (and its driver
    the pass marker, stats.json): now its first write finds the claim gone and the run stops with
    one line naming the holder, and nothing under ``out`` changes (a versioned bucket counts the
    writes). The second run's corpus equals an uninterrupted run's."""
    import json
    import time

    import yaml

    from refinery.config import parse_config
    from refinery.io import fs, runlock
    from refinery.pipeline import run_pipeline

    ttl = 4.0
    bucket, prefix = fs.resolve(out)[1].split("/", 1)
    fs.s3_client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    config = tmp_path / "s.yaml"
    config.write_text(STALLS_SPEC)
    marker = tmp_path / "stalled"
    env = {**os.environ, "REFINERY_TEST_STALL": str(marker), "REFINERY_TEST_STALL_SECONDS": "2",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen([sys.executable, "-c", STOPPED_RUN, str(config), str(tmp_path / "in"), out, str(ttl),
                              str(workers), executor], env=env, start_new_session=True, stderr=subprocess.PIPE,
                             text=True)
    try:
        while not marker.exists():
            assert first.poll() is None, first.stderr.read() if first.stderr else first.returncode
            time.sleep(0.05)
        time.sleep(0.1)
        worker = int(marker.read_text())
        os.killpg(first.pid, signal.SIGSTOP)  # inside a shard, before its commit
        os.kill(worker, signal.SIGSTOP)
        # lapsed on the server's clock (the second run reads the same clock, later); the stopped
        # worker's own stamp of the driver's renewals is at least as old
        while (found := fs.read_if_any_with_age(f"{out}/.claim")) is None or found[2] < ttl:
            time.sleep(0.2)
        monkeypatch.setattr(runlock, "CLAIM_TTL_SECONDS", ttl)  # as the stopped run's: it has lapsed
        run_pipeline(parse_config(yaml.safe_load(STALLS_SPEC)), str(tmp_path / "in"), out, workers=1, progress=False)
        assert json.loads(fs.read_bytes(f"{out}/.claim"))["pid"] == os.getpid()
        before = _versions(bucket, prefix)
        os.kill(worker, signal.SIGCONT)
        os.killpg(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGCONT)
            _kill(first)
        with contextlib.suppress(NameError, OSError):
            os.kill(worker, signal.SIGCONT)
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert first.returncode == 2 and len(errors) == 1, err
    assert errors[0].startswith(f"error: output {out} was claimed by another refinery command (refinery run, pid "
                                f"{os.getpid()} on {socket.gethostname()}, started "), errors[0]
    assert _versions(bucket, prefix) == before  # nothing of the stopped run was written after the loss
    reference = f"s3://{bucket}/reference-{executor}"
    run_pipeline(parse_config(yaml.safe_load(STALLS_SPEC)), str(tmp_path / "in"), reference, workers=1, progress=False)
    assert _corpus(out) == _corpus(reference) and len(_corpus(out)) == 4


@pytest.mark.slow  # ~26 s: a pool's start, the 4 s lapse waited out on the server's clock, three runs
def test_a_run_stopped_past_its_claims_lapse_writes_nothing_once_resumed(tmp_path, s3_root, monkeypatch,
                                                                          stalls_registered) -> None:
    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    stopped_past_the_lapse(tmp_path, f"{s3_root}/stopped", "local", 2, monkeypatch)


@pytest.mark.slow  # ~40 s: as above, with a local Ray cluster started by the stopped run
def test_a_ray_run_stopped_past_its_claims_lapse_writes_nothing_once_resumed(tmp_path, s3_root, monkeypatch,
                                                                              stalls_registered) -> None:
    """The same on the Ray executor: its workers get the fence with the pass's shared arguments
    and, with no stamp of the driver's renewals on their node, ask the server before a commit."""
    split_jsonl(CC_DOCS / "multiple_files_cc_en_head-0091.jsonl.gz", tmp_path / "in", 2)
    stopped_past_the_lapse(tmp_path, f"{s3_root}/stopped", "ray", 1, monkeypatch)


def test_a_store_date_without_a_time_zone_is_taken_as_utc(s3_server, s3_root, monkeypatch) -> None:
    """A claim's age is the store's Date minus the object's LastModified: a store (or proxy) whose
    Date carries no time zone ('-0000') made every read of a claim raise TypeError (a naive
    datetime minus an aware one), so no command could start beside an existing claim."""
    from _s3_fixtures import s3_front
    from refinery.io import fs
    from refinery.io.runlock import claim_output, release_claim

    def naive(date: str) -> str:
        return date.replace("GMT", "-0000")  # RFC 2822's "no zone information"

    out = f"{s3_root}/naive"
    with s3_front(s3_server, reply_date=naive) as front:
        monkeypatch.setenv("AWS_ENDPOINT_URL", front)
        claim = claim_output(out, "dedup", {})
        try:
            _, _, age = fs.read_if_any_with_age(f"{out}/.claim")
            assert 0.0 <= age < 60.0  # as UTC: a zone taken as local time would be hours off on a non-UTC host
            with pytest.raises(RunDirBusy, match=r"\(refinery dedup, pid \d+ on .*; its claim \.claim was renewed"):
                claim_output(out, "tokenize", {})
        finally:
            release_claim(claim)
        release_claim(claim_output(out, "tokenize", {}))  # released: taken at once



# -- SIGTERM (scancel, docker stop, Kubernetes, a SageMaker stop): stopped as by Ctrl-C ------------
STALLED_CLI = ("import sys\n"
               "if __name__ == '__main__':\n"
               "    from refinery import interrupts\n"
               "    interrupts.ignore_at_exit()\n"
               "    from refinery.stages.registry import register_stage\n"
               "    register_stage('stalls', '_custom_stages:Stalls')\n"
               "    from refinery.cli import main\n"
               "    main(sys.argv[1:], exiting=True)\n")
SAMPLE_WARC = Path(__file__).resolve().parents[1] / "data" / "sample" / "warc"


class SigtermCase:
    """The SIGTERM tests' input (the small sample WARCs), config and CLI script, and the kept rows
    of an uninterrupted run of them: made once for both cases (the same command on the same input)."""

    def __init__(self, root: Path) -> None:
        import shutil

        self.src = root / "in"
        self.src.mkdir()
        for name in ("cc_whirlwind_whirlwind", "resiliparse_clipped", "resiliparse_warcfile"):  # the small ones
            shutil.copy(SAMPLE_WARC / f"{name}.warc.gz", self.src)
        self.config = root / "c.yaml"
        self.config.write_text("name: term\nstages:\n  - type: extract\n  - type: stalls\n")
        self.script = root / "refinery_cli.py"
        self.script.write_text(STALLED_CLI)
        # the uninterrupted run: the same config and input, inline in this process (the CLI in a
        # subprocess with a pool of two cost ~3 s more; the outputs do not depend on the workers)
        from refinery.config import load_config
        from refinery.pipeline import run_pipeline

        reference = root / "reference"
        with _stalls_stage():
            run_pipeline(load_config(self.config), str(self.src), str(reference), workers=1, progress=False)
        self.reference_kept = _kept_rows(str(reference))

    def cmd(self, out: str) -> list[str]:
        return [sys.executable, str(self.script), "run", str(self.config), "-i", str(self.src), "-o", out,
                "--workers", "2"]

    @property
    def env(self) -> dict[str, str]:
        """This process's environment as it is now (the S3 endpoint's included), tests/ importable."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
        env.pop("REFINERY_TEST_STALL", None)
        return env


def _kept_rows(run: str) -> list[dict]:
    import pyarrow.parquet as pq

    from refinery.io import fs

    rows = []
    for uri in fs.list_files(fs.join(run, "kept"), (".parquet",)):
        with fs.open_input(uri, seekable=True) as f:
            rows += pq.read_table(f, columns=["id", "text"]).to_pylist()
    return sorted(rows, key=lambda r: r["id"])


@pytest.fixture(scope="module")
def sigterm_case(tmp_path_factory) -> SigtermCase:
    return SigtermCase(tmp_path_factory.mktemp("sigterm"))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_sigterm_stops_a_run_like_ctrl_c_and_a_rerun_finishes_it(tmp_path, s3_root, cli, sigterm_case, where) -> None:
    """SIGTERM (to the driver alone, as `docker stop` and Kubernetes send it) had no handler: the
    driver died at once, its S3 claim left unreleased (to lapse after 120 s on another host), its
    pool workers left to notice it gone. Now it stops as on Ctrl-C: workers stopped, the lock or
    claim let go, finished shards kept, one line, exit code 143; the same command then finishes
    the run, equal to an uninterrupted one."""
    import json
    import time

    from refinery.io import fs

    case = sigterm_case
    out = f"{s3_root}/run" if where == "s3" else str(tmp_path / "run")
    marker = tmp_path / "stalled"
    stalled = {**case.env, "REFINERY_TEST_STALL": str(marker), "REFINERY_TEST_STALL_AFTER": "1"}
    proc = subprocess.Popen(case.cmd(out), env=stalled, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    while not marker.exists():  # a worker stalls in its second shard: its first is finished
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)  # the driver alone: its workers are its to stop
    _, err = proc.communicate(timeout=60)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and lines == ["error: stopped by SIGTERM; run the same command again to resume"], err
    assert_group_gone(proc.pid, "the stopped run")  # workers stopped with it
    if where == "s3":
        assert json.loads(fs.read_bytes(f"{out}/.claim")).get("released")  # let go, not left to lapse
    finished = len(fs.list_files(fs.join(out, "stats"), (".json",)))
    assert 1 <= finished < 3  # the finished shards are kept, the stalled one is not
    # nobody at work on it: `stopped` (resumable), on S3 too (a released claim read as "running")
    # (read in this process: it holds no lock or claim of the stopped run's)
    _, status, _ = cli("status", out)
    assert re.search(r"pass filter\s+stopped\s", status) and "in use by" not in status, status
    again = subprocess.run(case.cmd(out), env=case.env, capture_output=True, text=True)  # at once: nobody holds it
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{3 - finished} shard(s) to run, {finished} already finished" in again.stderr, again.stderr[-2000:]
    assert _kept_rows(out) == case.reference_kept and case.reference_kept


def test_status_names_the_command_holding_an_s3_output_or_a_local_one(tmp_path, s3_root, cli) -> None:
    """`refinery status` did not read an S3 output's claim (nor name a local lock's holder): a run
    at work on it read as stopped or pending. It now says who holds it, and for S3 the claim's age;
    ``--json`` gives the holder's fields (held_by was the sentence, a local lock's time without a
    zone beside the claim's UTC one), the text keeps the line."""
    from refinery.io.runlock import claim_output, output_guard, release_claim

    utc = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
    host = socket.gethostname()
    run = _local_run(tmp_path, cli)
    out = f"{s3_root}/run"
    code, _, err = cli("run", tmp_path / "c.yaml", "-i", tmp_path / "in", "-o", out, "--workers", "1")
    assert code == 0, err
    claim = claim_output(out, "dedup", {})
    try:
        code, text, _ = cli("status", out)
        assert code == 0 and re.search(r"in use by refinery dedup, pid \d+ on .*; its claim \.claim was renewed \d+s ago",
                                       text), text
        held = json.loads(cli("status", out, "--json")[1])["held_by"]
        assert {k: held[k] for k in ("kind", "command", "pid", "host", "claim")} == {
            "kind": "claim", "command": "dedup", "pid": os.getpid(), "host": host, "claim": ".claim"}, held
        assert utc.fullmatch(held["since"]) and 0 <= held["age_s"] < 60 and 0 <= held["renewed_s"] < 60, held
    finally:
        release_claim(claim)
    code, text, _ = cli("status", out)
    assert "in use by" not in text, text  # released: nobody
    assert json.loads(cli("status", out, "--json")[1])["held_by"] is None
    with run_dir_lock(str(run)):
        code, text, _ = cli("status", run)
        assert f"in use by pid {os.getpid()} on " in text, text
    with output_guard(str(run), "tokenize", {}):  # a command's lock records the command
        code, text, _ = cli("status", run)
        assert re.search(f"in use by refinery tokenize, pid {os.getpid()} on {re.escape(host)}, running since "
                         f"{utc.pattern}", text), text
        held = json.loads(cli("status", run, "--json")[1])["held_by"]
        assert {k: held[k] for k in ("kind", "command", "pid", "host", "claim", "renewed_s")} == {
            "kind": "lock", "command": "tokenize", "pid": os.getpid(), "host": host, "claim": None, "renewed_s": None}
        assert utc.fullmatch(held["since"]) and 0 <= held["age_s"] < 60, held
    with run_dir_lock(str(run), shared=True):  # an instance's share: it records nothing but its kind
        held = json.loads(cli("status", run, "--json")[1])["held_by"]
        assert held["kind"] == "share" and held["pid"] is None, held
    assert "in use by" not in cli("status", run)[1]


def test_a_lock_written_in_local_time_is_read_as_utc(tmp_path) -> None:
    """A lock line written before the holder recorded UTC (local time, no zone) reads as UTC."""
    from refinery.io.runlock import _lock_holder

    stamp = time.time() - 90
    lock = tmp_path / LOCK_FILE
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))}))
    held = _lock_holder(str(lock))
    assert held.since == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp)) and 89 <= held.age_s < 150, held


def _write_object(uri: str) -> dict:
    """A task that changes an S3 object (fenced like a shard's commit)."""
    from refinery.io import fs

    fs.write_bytes(uri, b"x")
    return {"pid": os.getpid()}


def test_a_pool_reused_by_an_unfenced_pass_keeps_no_fence_of_an_earlier_claim(s3_root, monkeypatch) -> None:
    """A pool's workers (or Ray's, reused by a later pass of the same driver) kept the fence of the
    claim of an earlier, fenced pass: a later pass without a claim (a program's ``run_plan`` without
    ``run_guard``) into the same output found that claim released, half a lapse on, and stopped as
    if another command had taken its output over."""
    import time

    from refinery.executors.local import LocalExecutor
    from refinery.io import fs, runlock

    monkeypatch.setattr(runlock, "CLAIM_TTL_SECONDS", 2.0)  # half a lapse: 1 s
    monkeypatch.setattr(runlock, "CLAIM_HEARTBEAT_SECONDS", 600.0)
    out = f"{s3_root}/reused"
    with LocalExecutor(2, progress=False) as pool:
        with runlock.run_guard(out, False, {}):
            first = pool.run(_write_object, [{"uri": f"{out}/a{i}"} for i in range(4)], label="fenced")
        time.sleep(1.2)  # the old claim's last renewal is older than half its lapse
        second = pool.run(_write_object, [{"uri": f"{out}/b{i}"} for i in range(6)], label="unfenced")
    assert {r["pid"] for r in first} & {r["pid"] for r in second}  # the same workers ran both
    assert all(fs.exists(f"{out}/b{i}") for i in range(6))


def test_a_command_holding_two_claims_checks_both_before_a_write(s3_root, monkeypatch) -> None:
    """A standalone ``refinery tokenize`` into RUN/tokens claims RUN and RUN/tokens (nested
    guards): only the inner claim was fenced, so once a ``refinery run`` had taken RUN over while
    the tokenize was stopped, the resumed tokenize still wrote into RUN/tokens, the run's own."""
    import json
    import time

    from refinery.io import fs, runlock

    monkeypatch.setattr(runlock, "CLAIM_TTL_SECONDS", 2.0)
    monkeypatch.setattr(runlock, "CLAIM_HEARTBEAT_SECONDS", 600.0)
    run, tokens = f"{s3_root}/run", f"{s3_root}/run/tokens"
    other = {"command": "run", "claim": "c0ffee", "pid": 1, "host": "elsewhere", "since": "2026-01-01T00:00:00Z"}
    with runlock.output_guard(run, "tokenize", {}), runlock.output_guard(tokens, "tokenize", {}):
        fs.write_bytes(f"{run}/.claim", json.dumps(other).encode())  # the run took RUN over
        time.sleep(1.2)  # older than half the lapse: the next write asks the server
        with pytest.raises(runlock.ClaimLost, match=r"^output s3://\S+/run was claimed by another refinery "
                                                      r"command \(refinery run, pid 1 on elsewhere"):
            fs.write_bytes(f"{tokens}/part-0.bin", b"x")
    assert not fs.exists(f"{tokens}/part-0.bin")


def test_a_workers_renewal_changes_the_claims_tag(s3_root, monkeypatch) -> None:
    """A worker renews an old claim of its driver's before it commits; it rewrote the same bytes, and
    S3's ETag (their MD5) stayed the same, so a command that had read the lapsed claim could still
    take it over with that tag while the worker went on writing."""
    import time

    from refinery.io import fs, runlock

    monkeypatch.setattr(runlock, "CLAIM_TTL_SECONDS", 2.0)
    monkeypatch.setattr(runlock, "CLAIM_HEARTBEAT_SECONDS", 600.0)
    root = f"{s3_root}/verified"
    with runlock.output_guard(root, "run", {}) as claim:
        worker = runlock._Fence(root, claim.uri, claim.record["claim"], 2.0, "run")
        time.sleep(2.1)  # the claim is older than half the lapse: the worker renews it
        seen_by_next = fs.read_if_any_with_age(claim.uri)[1]  # the next command reads it lapsing
        runlock._verify(worker)
        with pytest.raises(fs.WriteConflict):
            fs.write_bytes_if(claim.uri, b'{"claim": "next"}', seen_by_next)
