"""A dedup pass stopped inside an index step resumes per task: a rerun runs only the tasks with no
record of a finished run (``<dedup>/tasks/<step>/records-<n>.json``, the driver's, written after the task's outputs) and
ends with the same kept/removed sets and stats as an uninterrupted run."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _scale_fixtures import part_task_failing_while

from refinery.dedup import driver, lines
from refinery.dedup.config import DedupConfig
from refinery.dedup.driver import run_dedup
from refinery.executors.base import TaskError
from refinery.executors.local import LocalExecutor
from refinery.io import fs
from tests._dedup_fixtures import load_cc_docs
from tests._fault_fixtures import FaultPolicy, through_proxy  # noqa: F401 - fixture

SHARDS = 6
#: what differs between two runs of the same dedup however they went: clocks, processes, paths
_RUN_ONLY = {"wall_seconds", "task_seconds", "peak_rss_max", "worker_pids", "output", "work_dir"}


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    """240 documents of the bundled Common Crawl sample in 6 Parquet shards, every 3rd copied (new
    id) into the next shard: MinHash has clusters to find, and lines repeated lines."""
    docs = load_cc_docs()[:240]
    root = tmp_path_factory.mktemp("resume") / "in"
    root.mkdir()
    per = -(-len(docs) // SHARDS)
    for s in range(SHARDS):
        own = docs[s * per:(s + 1) * per]
        copies = [{**d, "id": d["id"] + "-copy"} for d in docs[(s - 1) * per:s * per:3]] if s else []
        pq.write_table(pa.Table.from_pylist(own + copies), root / f"shard-{s}.parquet")
    return root


def _outcome(out: Path, stats: dict[str, Any]) -> tuple:
    """Kept and removed documents (ids, texts, stage, reason) and the stats without timings."""
    def rows(sub: str, columns: list[str]) -> list[tuple]:
        tables = [pq.read_table(f, columns=columns) for f in sorted((out / sub).glob("*.parquet"))]
        return sorted(zip(*(sum((t.column(c).to_pylist() for t in tables), []) for c in columns)))

    def timeless(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: timeless(v) for k, v in value.items() if k not in _RUN_ONLY}
        if isinstance(value, list):
            return [timeless(v) for v in value]
        return value.replace(str(out), "OUT") if isinstance(value, str) else value

    return (rows("kept", ["id", "text"]), rows("removed", ["id", "removed_stage", "removed_reason"]),
            timeless(stats))


def _stopping(fn: Callable[..., dict[str, Any]], after: int, ran: list[str]) -> Callable[..., dict[str, Any]]:
    """``fn`` as a run stopped by Ctrl-C sees it: the task after ``after`` finished ones writes its
    outputs, then the interrupt comes before its record (so the task must be redone whole)."""
    @functools.wraps(fn)  # the same task, as a rerun names it (its record matches by function)
    def task(**kwargs: Any) -> dict[str, Any]:
        result = fn(**kwargs)
        ran.append(kwargs["shard"])
        if len(ran) > after:
            raise KeyboardInterrupt
        return result
    return task


def _recording(fn: Callable[..., dict[str, Any]], ran: list[str]) -> Callable[..., dict[str, Any]]:
    @functools.wraps(fn)
    def task(**kwargs: Any) -> dict[str, Any]:
        ran.append(kwargs["shard"])
        return fn(**kwargs)
    return task


@pytest.mark.parametrize("method, module, step, fn_name, partitions", [
    ("minhash", driver, "signatures", "signature_task", 2),
    ("lines", lines, "line_counts", "line_count_task", None),  # partitions planned from the measured baseline
    ("lines", lines, "line_holders", "line_holders_task", None),  # reads line_counts' doc_lines files
])
def test_a_dedup_stopped_inside_a_step_reruns_only_its_unfinished_tasks(shard_dir, tmp_path, monkeypatch, caplog,
                                                                        method, module, step, fn_name, partitions):
    config = DedupConfig(method=method, partitions=partitions)
    clean = run_dedup(str(shard_dir), str(tmp_path / "clean"), config, LocalExecutor(1))
    real = getattr(module, fn_name)
    ran: list[str] = []
    monkeypatch.setattr(module, fn_name, _stopping(real, 4, ran))
    with pytest.raises(KeyboardInterrupt):
        run_dedup(str(shard_dir), str(tmp_path / "out"), config, LocalExecutor(1))
    records = tmp_path / "out" / "dedup" / "tasks" / step
    assert sorted(r["k"] for r in _records(records)) == list(range(4))
    # a record made under another fingerprint (another config's, in a shared work dir) stands for
    # nothing: its task runs again
    for batch in records.glob("records-*.json"):
        held = json.loads(batch.read_text())
        held["records"] = [r | {"fingerprint": "0" * 16} if r["k"] == 1 else r for r in held["records"]]
        batch.write_text(json.dumps(held))
    ran.clear()
    monkeypatch.setattr(module, fn_name, _recording(real, ran))
    measured: list[str] = []  # the step's partitions are the ones its finished tasks were written with
    monkeypatch.setattr(driver, "worker_baseline_bytes", lambda *a: measured.append("again") or 10 * 2**30)
    caplog.set_level("INFO", logger="refinery.dedup")
    again = run_dedup(str(shard_dir), str(tmp_path / "out"), config, LocalExecutor(1))
    assert sorted(ran) == ["shard-1", "shard-4", "shard-5"]  # shard-4 was cut before its record
    assert measured == []
    assert f"{step}: 3 of 6 tasks finished before, running 3" in caplog.text
    assert _outcome(tmp_path / "out", again) == _outcome(tmp_path / "clean", clean)
    assert again["passes"][step]["tasks"] == SHARDS


def _records(step_dir: Path) -> list[dict[str, Any]]:
    """The task records of a step (the driver's batches, ``records-<n>.json``)."""
    return [r for f in sorted(step_dir.glob("records-*.json")) for r in json.loads(f.read_text())["records"]]


def _part_task(output_uri: str, k: int) -> dict[str, Any]:
    fs.write_bytes(output_uri, str(k).encode())
    return {"rows": k, "parts": [k % 2]}


def test_task_records_on_s3_resume_a_stopped_step(s3_bucket):
    """On S3 the records are objects beside the step's outputs, read back 16 at a time."""
    work = driver.WorkDir(f"{s3_bucket}/index", "f" * 16, False, method="t")
    tasks = [{"output_uri": work.path("out", f"{k}.txt"), "k": k} for k in range(6)]
    names = [f"t{k}" for k in range(6)]
    ran: list[int] = []
    stop_after: list[int | None] = [4]

    @functools.wraps(_part_task)
    def stopping(**kwargs: Any) -> dict[str, Any]:
        ran.append(kwargs["k"])
        if stop_after[0] is not None and len(ran) > stop_after[0]:
            raise KeyboardInterrupt
        return _part_task(**kwargs)

    with pytest.raises(KeyboardInterrupt):
        driver._run_pass(work, "parts", stopping, tasks, LocalExecutor(1), names, extra=driver._files_by_part)
    ran.clear()
    stop_after[0] = None  # the rerun goes to the end
    summary = driver._run_pass(work, "parts", stopping, tasks, LocalExecutor(1), names, extra=driver._files_by_part)
    assert ran == [4, 5] and summary["rows"] == 15 and summary["tasks"] == 6
    assert summary["files_by_part"] == {"0": [0, 2, 4], "1": [1, 3, 5]}


def test_a_step_records_its_finished_tasks_in_one_write_not_one_a_task(s3_bucket, through_proxy):
    """Each task wrote its own record, a PUT a task on S3 (11 a shard of the recipe), and a rerun
    read each back. The driver records them now (session 49, h205): a step run to its end writes
    none (its marker stands for them), a step stopped midway writes the finished ones in one batch
    on its way out, and its rerun reads that batch in one GET; the rerun runs the same 2 tasks."""
    requests: list[tuple[str, str]] = []
    through_proxy(FaultPolicy(when=lambda method, path: requests.append((method, path)) or False))
    work = driver.WorkDir(f"{s3_bucket}/index", "f" * 16, False, method="t")
    tasks = [{"output_uri": work.path("out", f"{k}.txt"), "k": k} for k in range(6)]
    names = [f"t{k}" for k in range(6)]
    ran: list[int] = []

    @functools.wraps(_part_task)
    def stopping(**kwargs: Any) -> dict[str, Any]:
        ran.append(kwargs["k"])
        if len(ran) == 5:
            raise KeyboardInterrupt
        return _part_task(**kwargs)

    def of_records(method: str) -> list[str]:
        return [p for m, p in requests if m == method and "/index/tasks/" in p]

    with pytest.raises(KeyboardInterrupt):
        driver._run_pass(work, "parts", stopping, tasks, LocalExecutor(1), names)
    assert len(of_records("PUT")) == 1  # 4 before: one a finished task
    requests.clear()
    ran.clear()
    assert driver._run_pass(work, "parts", stopping, tasks, LocalExecutor(1), names)["rows"] == 15 and ran == [4, 5]
    assert of_records("PUT") == [] and len(of_records("GET")) == 1  # 2 PUTs and 4 GETs before
    requests.clear()
    clean = driver.WorkDir(f"{s3_bucket}/clean", "f" * 16, False, method="t")
    driver._run_pass(clean, "parts", _part_task, [{**t, "output_uri": clean.path("out", f"{t['k']}.txt")} for t in tasks],
                     LocalExecutor(1), names)
    assert of_records("PUT") == []  # 6 before


@pytest.mark.parametrize("kill_the_driver", [False, True])
def test_a_step_whose_task_failed_in_a_pool_reruns_only_that_task(tmp_path, monkeypatch, kill_the_driver):
    """Tasks in worker processes: their results come back to the driver, which records them. A
    failed task stops the step once the others finished; the rerun runs it alone. A driver killed
    outright never writes on its way out: it keeps what it wrote while the step ran, every
    ``RECORDS_EVERY_S`` (0 here: at each result), and the rerun runs the tasks after those."""
    from refinery.dedup import resume

    if kill_the_driver:
        monkeypatch.setattr(resume, "RECORDS_EVERY_S", 0.0)
        save = resume.StepRecords.save
        monkeypatch.setattr(resume.StepRecords, "save",
                            lambda self, stopping=False: None if stopping else save(self))
    work = driver.WorkDir(str(tmp_path / "index"), "f" * 16, False, method="t")
    fail_if = tmp_path / "fail"
    fail_if.touch()
    tasks = [{"output_uri": work.path("out", f"{k}.txt"), "k": k, "fail_if": str(fail_if)} for k in range(6)]
    names = [f"t{k}" for k in range(6)]
    with LocalExecutor(2) as pool:
        with pytest.raises(TaskError, match="task t4 failed"):
            driver._run_pass(work, "parts", part_task_failing_while, tasks, pool, names)
        recorded = sorted(r["k"] for r in _records(tmp_path / "index" / "tasks" / "parts"))
        assert recorded == [0, 1, 2, 3, 5]
        fail_if.unlink()
        ran: list[int] = []
        monkeypatch.setattr(resume.StepRecords, "add", lambda self, k, result, add=resume.StepRecords.add:
                            ran.append(k) or add(self, k, result))
        assert driver._run_pass(work, "parts", part_task_failing_while, tasks, pool, names)["rows"] == 15
    assert ran == [4]


def test_a_fresh_result_is_made_plain_once_for_its_record_and_the_step(tmp_path, monkeypatch):
    """A task's result (numpy scalars and arrays among its counts) is turned into what its record
    holds once, when it comes back: the step's result is that same plain result (it went through
    JSON twice before h210: for the record, then again for the step), and the records on disk hold
    exactly the results the step gave."""
    import numpy as np

    from refinery.dedup import resume

    made_plain: list[dict[str, Any]] = []
    monkeypatch.setattr(resume, "as_read", lambda result, plain=resume.as_read: made_plain.append(result) or plain(result))
    work = driver.WorkDir(str(tmp_path / "index"), "f" * 16, False, method="t")
    tasks = [{"output_uri": work.path("out", f"{k}.txt"), "k": k} for k in range(4)]

    def numpy_task(output_uri: str, k: int) -> dict[str, Any]:
        fs.write_bytes(output_uri, str(k).encode())
        return {"rows": np.int64(k), "parts": np.array([k % 2]), "share": np.float32(k / 4)}

    with resume.resumable_step(work, "parts", numpy_task, tasks, LocalExecutor(1), [f"t{k}" for k in range(4)],
                               "dedup/t/parts", marked=False) as results:
        pass
    assert len(made_plain) == 4
    assert [(r["rows"], r["parts"], r["share"]) for r in results] == [(0, [0], 0.0), (1, [1], 0.25), (2, [0], 0.5),
                                                                      (3, [1], 0.75)]
    assert all(type(r["rows"]) is int and type(r["share"]) is float for r in results)
    assert [r["result"] for r in _records(tmp_path / "index" / "tasks" / "parts")] == results
