"""With a progress bar on the terminal, pool workers log through the parent process, so their
lines go through the parent's handlers (bar-safe, redacted) instead of straight to stderr."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from refinery.executors.local import LocalExecutor


def log_a_line(text: str) -> dict:
    logging.getLogger("refinery.test_worker").info("worker says %s", text)
    return {"pid": os.getpid()}


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_worker_records_reach_the_parent_handlers_when_a_bar_is_shown(monkeypatch):
    monkeypatch.setattr(LocalExecutor, "shows_bar", lambda self: True)
    capture = _Capture()
    logger = logging.getLogger("refinery.test_worker")
    logger.addHandler(capture)
    # workers log at the level this process logs refinery's loggers at (worker_log_level)
    monkeypatch.setattr(logging.getLogger("refinery"), "level", logging.INFO)
    try:
        with LocalExecutor(2, progress=True) as ex:
            outcomes = ex.map(log_a_line, [{"text": "a"}, {"text": "b"}], label="log")
    finally:
        logger.removeHandler(capture)
    assert [o.status for o in outcomes] == ["done", "done"]
    messages = sorted(r.getMessage() for r in capture.records)
    assert messages == ["worker says a", "worker says b"]
    assert {r.process for r in capture.records} <= {o.result["pid"] for o in outcomes}
    assert os.getpid() not in {r.process for r in capture.records}  # they came from the workers


def test_without_a_bar_workers_log_to_stderr_themselves(monkeypatch):
    monkeypatch.setattr(LocalExecutor, "shows_bar", lambda self: False)
    with LocalExecutor(2, progress=True) as ex:
        ex.map(log_a_line, [{"text": "c"}], label="log")
        assert ex._listener is None


def test_fresh_workers_run_each_task_in_a_new_process() -> None:
    """The local pool's one-task-per-process mode (the substring pass's memory plan needs it);
    the reused pool is untouched, and one worker runs tasks in this process."""
    from _scale_fixtures import worker_pid

    from refinery.executors.local import LocalExecutor

    tasks = [{} for _ in range(3)]
    with LocalExecutor(workers=2, progress=False) as ex:
        first = {r["pid"] for r in ex.run(worker_pid, tasks, label="pids")}
        pool = ex._pool
        fresh = [r["pid"] for r in ex.run(worker_pid, tasks, label="pids", fresh_workers=True)]
        again = {r["pid"] for r in ex.run(worker_pid, tasks, label="pids")}
        # The pool may start its second worker only after the first run (one worker can take all
        # three tasks), so the reused set is the pool's processes, not the pids the first run saw.
        reused = set(pool._processes)
        assert ex._pool is pool
    assert len(set(fresh)) == 3 and not set(fresh) & (first | again | reused)
    assert first <= reused and again <= reused
    with LocalExecutor(workers=1, progress=False) as ex:
        assert {r["pid"] for r in ex.run(worker_pid, tasks, label="pids", fresh_workers=True)} == {os.getpid()}


def log_at_each_level() -> dict:
    log = logging.getLogger("refinery.test_worker")
    log.debug("worker debug line")
    log.info("worker info line")
    log.warning("worker warning line")
    return {}


def test_workers_log_at_the_callers_level(monkeypatch, capfd):
    """Workers logged INFO whatever the caller chose: a program or notebook calling run_pipeline
    with logging at WARNING got every worker's per-shard and per-step lines (found as a library
    user). They now log what this process would for refinery's loggers."""
    monkeypatch.setattr(LocalExecutor, "shows_bar", lambda self: False)
    for level, expected in ((logging.WARNING, ["warning"]), (logging.INFO, ["info", "warning"]),
                            (logging.DEBUG, ["debug", "info", "warning"])):
        monkeypatch.setattr(logging.getLogger("refinery"), "level", level)
        with LocalExecutor(2, progress=False) as ex:
            assert [o.status for o in ex.map(log_at_each_level, [{}], label="log")] == ["done"]
        err = capfd.readouterr().err
        assert [w for w in ("debug", "info", "warning") if f"worker {w} line" in err] == expected, (level, err)


def test_workers_keep_a_library_callers_silencing(monkeypatch, capfd):
    """A library caller silencing refinery got the workers' lines all the same (adversarial
    review): ``logging.disable(INFO)`` is not in a logger's effective level, so workers logged INFO
    to stderr; and a relayed record (a worker's through the parent, as on Ray) went to the handlers
    of a logger set to WARNING, since ``Logger.handle`` does not look at the level."""
    monkeypatch.setattr(logging.getLogger("refinery"), "level", logging.INFO)
    monkeypatch.setattr(LocalExecutor, "shows_bar", lambda self: False)
    logging.disable(logging.INFO)
    try:
        with LocalExecutor(2, progress=False) as ex:
            assert [o.status for o in ex.map(log_at_each_level, [{}], label="log")] == ["done"]
    finally:
        logging.disable(logging.NOTSET)
    err = capfd.readouterr().err
    assert "worker info line" not in err and "worker warning line" in err, err

    monkeypatch.setattr(LocalExecutor, "shows_bar", lambda self: True)
    capture = _Capture()
    logger = logging.getLogger("refinery.test_worker")
    logger.addHandler(capture)
    monkeypatch.setattr(logger, "level", logging.WARNING)
    try:
        with LocalExecutor(2, progress=True) as ex:
            assert [o.status for o in ex.map(log_at_each_level, [{}], label="log")] == ["done"]
    finally:
        logger.removeHandler(capture)
    assert [r.getMessage() for r in capture.records] == ["worker warning line"]


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_workers_keep_third_party_loggers_as_quiet_as_the_command_line(executor, tmp_path, s3_bucket):
    """The command line sets botocore, urllib3 and the like to WARNING, but its workers did not:
    each worker writing to S3 printed "INFO pid=N botocore.credentials: Found credentials in
    environment variables." (one line per worker process, on the local pool and on Ray; found by
    adversarial testing). A real run to a moto S3 server, on a real local Ray cluster for ray."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    config = tmp_path / "c.yaml"
    config.write_text("name: r\nstages:\n  - type: url_filter\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "refinery", "run", str(config), "-i", str(root / "data/sample/warc"),
                           "-o", f"{s3_bucket}/run", "--executor", executor, "--workers", "2"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert output.count("] done: ") == 6, output[-3000:]  # the workers' own INFO lines still come
    assert "botocore" not in output and "urllib3" not in output, output[-3000:]


def test_a_pass_of_many_tasks_logs_their_closing_lines_at_debug(tmp_path, monkeypatch, caplog):
    """One INFO line per shard per pass flooded the log of a large run (~8 lines a shard over the
    recipe's passes, 32,000 at 4,000 shards; session 43, h130): a pass of more tasks than
    SUMMARY_LINES_MAX_TASKS logs them at DEBUG (-v), and its progress line says how far it is."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refinery.config import parse_config
    from refinery.executors import base
    from refinery.pipeline import run_pipeline

    monkeypatch.setattr(base, "SUMMARY_LINES_MAX_TASKS", 2, raising=False)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"id": [f"d{i}"], "text": [f"document {i} " * 60]}), src / f"p{i}.parquet")
    caplog.set_level(logging.DEBUG, logger="refinery")
    run_pipeline(parse_config({"name": "many", "stages": [{"type": "gopher_quality"}]}), str(src),
                 str(tmp_path / "out"), workers=1, progress=False)
    done = [r for r in caplog.records if r.name == "refinery.runner" and "] done: " in r.getMessage()]
    assert len(done) == 3 and {r.levelno for r in done} == {logging.DEBUG}, [(r.levelname, r.getMessage()) for r in done]
    assert any(r.name == "refinery.progress" and r.levelno == logging.INFO and "3/3 tasks" in r.getMessage()
               for r in caplog.records)
    # (a pass of few tasks keeps them at INFO: the 6 "] done: " lines of the test above)


def sleep_a_while(seconds: float) -> dict:
    import time

    time.sleep(seconds)
    return {"docs": 7}


def test_a_pass_of_long_tasks_logs_a_heartbeat_naming_the_pass_and_the_running_task(monkeypatch, caplog):
    """Session 46 (h161): the pass line came only when a task finished, so a pass of two suffix
    arrays was silent for minutes on a log without a terminal. Now a heartbeat line says which pass,
    how far, and which task has run for how long."""
    from refinery.executors import progress

    monkeypatch.setenv("REFINERY_PROGRESS_LOG_EVERY_S", "0.15")
    monkeypatch.setattr(progress, "HEARTBEAT_MIN_S", 0.1, raising=False)
    with caplog.at_level(logging.INFO, logger="refinery.progress"), LocalExecutor(2, progress=False) as ex:
        outcomes = ex.map(sleep_a_while, [{"seconds": 0.6}], label="dedup/x/suffix_arrays", names=["p-0..p-3"])
        assert [o.status for o in outcomes] == ["done"]
        lines = [r.getMessage() for r in caplog.records]
        beats = [line for line in lines if "still working" in line]
        assert beats, caplog.text
        assert all(b.startswith("[dedup/x/suffix_arrays] still working: 0/1 tasks (0 skipped, 0 failed), 0 docs, ")
                   and "ETA unknown; 1 in flight, the oldest p-0..p-3 for " in b for b in beats), beats
        assert lines[-1].startswith("[dedup/x/suffix_arrays] p-0..p-3 done") and lines[-1].endswith("ETA 0s"), lines
        # h162: at REFINERY_PROGRESS_LOG_EVERY_S=0 (a line for every task) the heartbeat came every 50 ms
        # while a task ran (12 lines in 0.6 s); it keeps HEARTBEAT_MIN_S between its lines
        monkeypatch.setenv("REFINERY_PROGRESS_LOG_EVERY_S", "0")
        monkeypatch.setattr(progress, "HEARTBEAT_MIN_S", 0.4, raising=False)
        caplog.clear()
        ex.map(sleep_a_while, [{"seconds": 0.6}], label="dedup/y", names=["q"])
    beats = [r.getMessage() for r in caplog.records if "still working" in r.getMessage()]
    assert len(beats) <= 1, beats
    assert caplog.records[-1].getMessage().startswith("[dedup/y] q done: 1/1 tasks"), caplog.text


def test_a_dead_workers_note_keeps_a_long_unicode_stage_name_and_dead_drivers_directories_go(tmp_path, monkeypatch):
    """h162: a task's phase note was cut at 256 bytes, in the middle of a character: a stage named
    by 120 Cyrillic letters came back as ``in stage 'этап_..э\ufffd`` and the ``failed/`` record's
    stage was null (no closing quote to find). And the notes' directory of a driver that was killed
    (SIGKILL, OOM) stayed in /tmp for good: the next executor removes those of dead drivers."""
    import subprocess
    import tempfile

    from refinery.executors import base, local
    from refinery.runner import failed_stage, stage_note

    name = "этап_" * 40
    with base._task_status(str(tmp_path), "part-00003", 1):
        base.note_phase("in stage 'a much longer note than the next one' (x)")
        base.note_phase(f"in stage {name!r} (fault_injection)")
        phase = base.read_phase(str(tmp_path), "part-00003", 1)
        assert phase == f"in stage {name!r} (fault_injection)"
        assert failed_stage(f"worker process died (OOM-killed or crashed) {phase}: ...") == name
        base.note_phase("ж" * 5000)  # longer than the record: cut between two characters
        assert base.read_phase(str(tmp_path), "part-00003", 1) == "ж" * ((base._STATUS_BYTES - 1) // 2)
        # h170: a name holding ' (quoted "it's") or a backslash came back null or escaped, one of
        # ~4 KB null (the note lost its closing quote): the name, or cut at a character and marked
        for given, expected in [("it's", "it's"), ('a "b" \\ c', 'a "b" \\ c'), ("ж" * 3000, "ж" * 1497 + "...")]:
            base.note_phase(stage_note(given, "fault_injection"))
            phase = base.read_phase(str(tmp_path), "part-00003", 1)
            assert failed_stage(f"worker process died (OOM-killed or crashed) {phase}: ...") == expected, phase[:80]
            assert failed_stage(f"StageFailed: stage {given!r} (x): ValueError: y") == given

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    prefix = local._status_dir_prefix()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f"{prefix}{int(dead.stdout)}-abc").mkdir()  # a killed driver's
    (tmp_path / f"{prefix}{os.getppid()}-def").mkdir()  # a running one's
    ex = LocalExecutor(2, progress=False)
    mine = ex._status_dir()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(prefix)) == sorted(
        [f"{prefix}{os.getppid()}-def", os.path.basename(mine)])
    ex.close()
    assert not os.path.exists(mine)
