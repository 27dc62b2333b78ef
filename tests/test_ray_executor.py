"""The Ray executor on a real local Ray cluster: the same plan gives the same outputs as the local
executor, crashed and failed tasks are retried by the one retry policy, finished shards and
passes are skipped on re-run."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _scale_fixtures import (  # noqa: F401
    cc_spec,
    copy_cc_docs,
    crash_once,
    fail_first_attempts,
    ray_local,
    run_outputs,
    worker_pid,
)

from refinery.config import parse_config
from refinery.executors.ray import RayExecutor
from refinery.pipeline import plan_tasks, run_pipeline


def test_ray_matches_local_executor_and_skips_finished_shards(tmp_path, ray_local):  # noqa: F811
    data = copy_cc_docs(tmp_path / "in")
    # the local executor's reference run inline (one worker): its outputs do not depend on the
    # workers (its pool of two cost its start and a model load per worker process)
    local = run_pipeline(parse_config(cc_spec()), str(data), str(tmp_path / "local"), workers=1, progress=False)
    ray_cfg = parse_config(cc_spec(type="ray", object_store_memory=256 * 2**20))
    remote = run_pipeline(ray_cfg, str(data), str(tmp_path / "ray"), progress=False)

    assert not local.failed and not remote.failed
    assert sorted(o.status for o in remote.outcomes) == ["done"] * 3
    # every shard ran as a Ray task on this (one-node) cluster, in a Ray worker process
    node = ray_local.get_runtime_context().get_node_id()
    assert {o.node for o in remote.outcomes} == {node}
    assert all(o.result["pid"] != os.getpid() for o in remote.outcomes)
    a, b = run_outputs(str(tmp_path / "local")), run_outputs(str(tmp_path / "ray"))
    assert a.keys() == b.keys() and len(a) == 4  # 3 shards + the run summary
    assert a == b  # kept and removed rows, per-shard and merged stats (timings aside)
    assert b["_run"]["docs_read"] == 717 and 0 < b["_run"]["docs_kept"] < 717

    # a re-run skips the finished pass: nothing is rewritten
    stats_dir = tmp_path / "ray" / "stats"
    mtimes = {p.name: p.stat().st_mtime_ns for p in stats_dir.iterdir()}
    again = run_pipeline(ray_cfg, str(data), str(tmp_path / "ray"), progress=False)
    assert sorted(o.status for o in again.outcomes) == ["skipped"] * 3 and again.passes == {"filter": "skipped"}
    assert {p.name: p.stat().st_mtime_ns for p in stats_dir.iterdir()} == mtimes
    assert run_outputs(str(tmp_path / "ray")) == b


def _shard_tasks(data, out):
    return [{"task": t} for t in plan_tasks(str(data), str(out))]


def _crash_setup(tmp_path, shards: int) -> tuple[dict, list[dict], Path]:
    """(spec, ``shards`` (at most 2) shard tasks over cc_docs, the directory counting attempts).
    The small shards (10 documents each; the first of the three holds 697): a crash, a retry or
    a Ctrl-C needs no more."""
    spec = parse_config(cc_spec()).model_dump(mode="json")
    tasks = _shard_tasks(copy_cc_docs(tmp_path / "in"), tmp_path / "out")[-shards:]
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    return spec, tasks, attempts


def test_crashed_worker_is_retried(tmp_path, ray_local):  # noqa: F811
    spec, tasks, attempts = _crash_setup(tmp_path, 2)

    with RayExecutor(max_retries=1, progress=False) as ex:
        outcomes = ex.map(crash_once(str(attempts)), tasks, label="crash", shared={"spec": spec})
    assert [o.status for o in outcomes] == ["done", "done"]
    assert {p.name: p.read_text() for p in attempts.iterdir()} == {t["task"].shard: "2" for t in tasks}
    assert all((tmp_path / "out" / "stats" / f"{t['task'].shard}.json").exists() for t in tasks)

    # without retries the crash is reported as a failed shard, naming the cause
    for p in attempts.iterdir():
        p.unlink()
    with RayExecutor(max_retries=0, progress=False) as ex:
        outcomes = ex.map(crash_once(str(attempts)), tasks, label="crash", shared={"spec": spec, "force": True})
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all("retries" in o.error and "died" in o.error.lower() for o in outcomes), outcomes[0].error


def test_a_shard_that_finished_as_the_driver_was_interrupted_logs_its_closing_line(tmp_path, ray_local, caplog):  # noqa: F811
    """A Ray task's closing line ("[shard x] done") travels back with its result: a Ctrl-C that
    came after a shard finished but before the driver collected its result dropped the line, and
    a rerun skips the shard, so it was never logged (3 of 6 interrupted two-node runs of the
    refinedweb recipe lost one; found by adversarial testing). The local pool's lines come through
    its log queue and were all there."""
    import logging
    import signal
    import time

    from _scale_fixtures import after_shard

    spec, tasks, markers = _crash_setup(tmp_path, 2)
    first, second = (t["task"].shard for t in tasks)

    def interrupt_once_the_second_finished(outcome) -> None:
        if outcome.name == first:
            # the second's result has reached the driver (its future is done), not yet collected
            while not all(future.done() for future in ex._refs):
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C
            time.sleep(30)  # the KeyboardInterrupt is raised in here

    caplog.set_level(logging.INFO, logger="refinery")
    with pytest.raises(KeyboardInterrupt):
        with RayExecutor(progress=False) as ex:
            ex.map(after_shard(str(markers), first), tasks, label="filter", names=[first, second],
                   shared={"spec": spec}, on_outcome=interrupt_once_the_second_finished)
    assert (tmp_path / "out" / "stats" / f"{second}.json").exists()  # done: a rerun skips it
    closing = [r.getMessage().split("]")[0] for r in caplog.records if "] done: " in r.getMessage()]
    assert sorted(closing) == sorted([f"[shard {first}", f"[shard {second}"]), closing


def test_a_worker_that_always_dies_is_tried_max_retries_plus_one_times(tmp_path, ray_local):  # noqa: F811
    """Ray retried a dead worker max_retries times inside each of the shared loop's attempts: a page
    that kills its worker every time ran 9 times with the default 2 (found by adversarial testing)."""
    from _scale_fixtures import crash_always

    spec, tasks, attempts = _crash_setup(tmp_path, 1)
    with RayExecutor(max_retries=2, progress=False) as ex:
        [outcome] = ex.map(crash_always(str(attempts)), tasks, label="crash", shared={"spec": spec})
    assert outcome.status == "failed" and outcome.attempts == 3 and "died" in outcome.error
    assert (attempts / tasks[0]["task"].shard).read_text() == "3"


def test_failed_tasks_are_retried_up_to_max_retries(tmp_path, ray_local):  # noqa: F811
    data = copy_cc_docs(tmp_path / "in")
    spec = parse_config(cc_spec()).model_dump(mode="json")
    (tmp_path / "a1").mkdir()
    (tmp_path / "a2").mkdir()

    # the two small shards (10 documents each): the retries are the test, not the documents
    with RayExecutor(max_retries=2, progress=False) as ex:
        ok = ex.map(fail_first_attempts(str(tmp_path / "a1"), 2), _shard_tasks(data, tmp_path / "out")[-2:],
                    label="flaky", shared={"spec": spec})
    assert [o.status for o in ok] == ["done"] * 2 and [o.attempts for o in ok] == [3] * 2  # third attempt succeeded

    out2 = tmp_path / "out2"
    with RayExecutor(max_retries=1, progress=False) as ex:
        bad = ex.map(fail_first_attempts(str(tmp_path / "a2"), 2), _shard_tasks(data, out2)[-2:], label="flaky",
                     shared={"spec": spec})
    assert [o.status for o in bad] == ["failed"] * 2
    assert all("transient failure #2" in o.error for o in bad)  # the last attempt's error is kept
    assert not (out2 / "stats").exists() or not os.listdir(out2 / "stats")


def test_pipeline_ray_step_reports_nodes_and_placement(tmp_path, ray_local):  # noqa: F811
    """What the SageMaker head runs for ``--stage pipeline-ray``: the pipeline on the cluster."""
    import yaml

    from refinery.launch.steps import run_step

    data = copy_cc_docs(tmp_path / "in")
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(cc_spec()))
    report = run_step("pipeline-ray", str(config), str(data), str(tmp_path / "out"))
    assert report["ok"] and report["done"] == 3 and report["docs_read"] == 717
    node_ids = {n["node_id"] for n in report["nodes"]}
    assert len(node_ids) == 1 and set(report["placement"].values()) == node_ids
    assert set(report["placement"]) == {p.stem for p in (tmp_path / "out" / "stats").iterdir()}


def test_the_whole_recipe_gives_identical_output_on_ray_and_local(tmp_path, ray_local, monkeypatch):  # noqa: F811
    """One plan, two executors: every pass (filter, URL / MinHash / exact / substring dedup,
    tokens) writes the same documents, stats and token bytes. Each pass closes on what its tasks'
    outcomes carry (their files' footers, their markers), through either executor: the driver
    reads none of them back (session 49, h194)."""
    import json

    import pyarrow.parquet as pq
    from _scale_fixtures import write_dedup_input
    from test_plan import PASSES, RECIPE

    from refinery.io import dataset, fs

    src = tmp_path / "in"
    write_dedup_input(src, copies=25, per_shard=150)  # as test_plan's runs of RECIPE: every pass removes some
    read_back: list[str] = []
    monkeypatch.setattr(dataset, "read_footer", lambda u, read=dataset.read_footer: read_back.append(u) or read(u))
    monkeypatch.setattr(fs, "read_json", lambda u, read=fs.read_json: read_back.append(u) or read(u))
    local = run_pipeline(parse_config(RECIPE), str(src), str(tmp_path / "local"), workers=2, progress=False)
    remote = run_pipeline(parse_config(RECIPE), str(src), str(tmp_path / "ray"), executor="ray", progress=False)
    assert local.passes == remote.passes == {p: "done" for p in PASSES}
    shards_read_back = [u for u in read_back if "/stats/" in u or u.endswith(".parquet") and not u.startswith(str(src))]
    assert not shards_read_back, shards_read_back
    node = ray_local.get_runtime_context().get_node_id()
    assert {o.node for o in remote.outcomes} == {node}

    def documents(run, sub):
        return sorted(r for f in sorted((run / sub).glob("*.parquet")) for r in
                      map(json.dumps, pq.read_table(f).drop_columns(["source"]).to_pylist()))

    def counts(run, name):
        s = json.loads((run / name / "stats.json").read_text())
        return s["docs_read"], s["docs_kept"], s["docs_removed"], [(x["stage"], x["removed"]) for x in s["stages"]]

    a, b = tmp_path / "local", tmp_path / "ray"
    assert documents(a, "kept") == documents(b, "kept")
    for name in PASSES[:-1]:
        assert documents(a, f"{name}/removed") == documents(b, f"{name}/removed")
        assert counts(a, name) == counts(b, name)
    shards = [json.loads((run / "tokens" / "manifest.json").read_text())["shards"] for run in (a, b)]
    assert [s["bin_sha256"] for s in shards[0]] == [s["bin_sha256"] for s in shards[1]]


def test_fresh_workers_run_each_task_in_a_new_process(ray_local):  # noqa: F811
    """What the substring pass relies on for its memory plan: one task per worker process. (Three
    tasks on the module's 2 CPUs: one CPU runs two in a row, each in a new process.)"""
    tasks = [{} for _ in range(3)]
    with RayExecutor(progress=False) as ex:
        reused = {r["pid"] for r in ex.run(worker_pid, tasks, label="pids")}
        fresh = [r["pid"] for r in ex.run(worker_pid, tasks, label="pids", fresh_workers=True)]
    assert len(set(fresh)) == 3 and not set(fresh) & reused


def test_a_dedup_step_stopped_by_a_failed_task_on_ray_reruns_only_that_task(tmp_path, ray_local, monkeypatch):  # noqa: F811
    """Per-task resume of a dedup index step on Ray: the results come back to the driver, which
    records the finished tasks when the step stops (session 49, h205; the tasks recorded
    themselves before); the rerun runs the failed task alone and sums all six."""
    from _scale_fixtures import part_task_failing_while

    from refinery.dedup import driver, resume
    from refinery.executors.base import TaskError

    work = driver.WorkDir(str(tmp_path / "index"), "f" * 16, False, method="t")
    fail_if = tmp_path / "fail"
    fail_if.touch()
    tasks = [{"output_uri": work.path("out", f"{k}.txt"), "k": k, "fail_if": str(fail_if)} for k in range(6)]
    names = [f"t{k}" for k in range(6)]
    with RayExecutor(progress=False) as ex, pytest.raises(TaskError, match="task t4 failed"):
        driver._run_pass(work, "parts", part_task_failing_while, tasks, ex, names)
    fail_if.unlink()
    ran: list[int] = []
    monkeypatch.setattr(resume.StepRecords, "add", lambda self, k, result, add=resume.StepRecords.add:
                        ran.append(k) or add(self, k, result))
    with RayExecutor(progress=False) as ex:
        assert driver._run_pass(work, "parts", part_task_failing_while, tasks, ex, names)["rows"] == 15
    assert ran == [4]


def test_an_address_where_no_cluster_answers_is_one_line_in_seconds(tmp_path):
    """Ray retries an unreachable GCS for minutes, printing its own warnings; we fail fast with
    where and what to do (no Ray import, no cluster needed)."""
    import socket
    import subprocess
    import sys
    import time

    from refinery.executors.ray_cluster import check_reachable

    with socket.socket() as listening:  # something answers: no error
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_reachable(f"127.0.0.1:{listening.getsockname()[1]}", timeout_s=1)
        check_reachable(f"ray://127.0.0.1:{listening.getsockname()[1]}", timeout_s=1)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"no Ray cluster answers at 127\.0\.0\.1:{closed} .*ray start --head --port {closed}"):
        check_reachable(f"127.0.0.1:{closed}", timeout_s=0.5)
    assert time.monotonic() - started < 5
    check_reachable("auto", timeout_s=0)  # Ray's own words are left to Ray
    started = time.monotonic()  # a port that is no number: at once, not 20 s on a host named `notahost:xyz`
    with pytest.raises(ConnectionError, match=r"notahost:xyz: the port 'xyz' is not a number"):
        check_reachable("notahost:xyz", timeout_s=5)
    assert time.monotonic() - started < 1

    config = tmp_path / "ray.yaml"
    config.write_text(f"name: x\nexecutor: {{type: ray, ray_address: '127.0.0.1:{closed}'}}\n"
                      "stages:\n  - type: gopher_quality\n")
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["some words " * 60]}), src / "a.parquet")
    # a process of its own: this one may already be connected to the module's local cluster
    proc = subprocess.run([sys.executable, "-m", "refinery.cli", "run", str(config), "-i", str(src), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env={**os.environ, "REFINERY_RAY_CONNECT_TIMEOUT_S": "0.5"}, timeout=60)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "INFO" not in ln]
    assert len(errors) == 1 and errors[0].startswith(f"error: no Ray cluster answers at 127.0.0.1:{closed}"), proc.stderr


@pytest.mark.slow
def test_a_local_cluster_refuses_a_driver_without_its_token(ray_local):  # noqa: F811
    """Ray listens on every interface whatever node address it is given: the local cluster we
    start carries a random token, and a driver (here on the host's own reachable address, as one
    on another host would) without it cannot run anything. Found by adversarial testing: the
    cluster ran with auth disabled."""
    import os
    import subprocess

    gcs = ray_local.get_runtime_context().gcs_address
    assert os.environ.get("RAY_AUTH_MODE") == "token" and len(os.environ.get("RAY_AUTH_TOKEN", "")) == 64
    # Ray's own GCS connect timeout 2 s, not 5: the first "Failed to connect to GCS" comes sooner
    # (an accepted driver connects in milliseconds on this host)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["RAY_gcs_rpc_server_connect_timeout_s"] = "2"
    intruder = ("import ray\n"
                f"ray.init(address={gcs!r}, log_to_driver=False)\n"
                "print('INTRUDER RAN', ray.get(ray.remote(lambda: 1).remote()))\n")
    import threading

    proc = subprocess.Popen([sys.executable, "-c", intruder], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    # Ray retries a refused handshake for ~40 s: stop at its first "Failed to connect to GCS" (~2 s
    # in), which an accepted driver never prints (it ran the task in ~2 s), or after 25 s
    watchdog = threading.Timer(25, proc.kill)
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "INTRUDER RAN" in line or "Failed to connect to GCS" in line:
                break
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    text = "".join(lines)
    assert "INTRUDER RAN" not in text
    assert "Connecting to existing Ray cluster" in text, text  # it did try this cluster


def _timed_task(out_dir: str, k: int, **_: object) -> dict:
    import time as _time

    start = _time.time()
    _time.sleep(0.8)
    with open(os.path.join(out_dir, f"{k}.txt"), "w") as f:
        f.write(f"{start} {_time.time()}")
    return {"docs_read": 1}


def test_workers_limit_concurrency_on_a_cluster_with_more_cpus(tmp_path, ray_local):  # noqa: F811
    """Found by adversarial testing: --workers 1 on a 2-CPU cluster ran 2 tasks at once (twice the
    workers were submitted, and Ray ran every one a free CPU could take)."""
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with RayExecutor(workers=1, progress=False) as ex:
        assert ex.capacity == 1 and ex.max_in_flight() == 1
        ex.run(_timed_task, [{"k": k} for k in range(3)], label="timed", shared={"out_dir": str(tmp_path)})
    spans = sorted(tuple(map(float, (tmp_path / f"{k}.txt").read_text().split())) for k in range(3))
    assert all(later[0] >= earlier[1] - 0.05 for earlier, later in zip(spans, spans[1:])), spans


def test_a_ray_task_configures_the_workers_logging_at_the_callers_level(monkeypatch):
    """Ray workers start with no logging handler: the per-shard lines ("[shard x] done: ...",
    retries) were lost on Ray. Found by adversarial testing. They logged INFO whatever level the
    caller chose; they now log at the level the driver sends."""
    import logging

    from _scale_fixtures import worker_pid

    from refinery.executors.ray import ray_task

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.INFO)
    status, result, error, _node = ray_task(worker_pid, {}, {}, 1, "t", logging.WARNING)
    assert status == "done" and result["pid"] == os.getpid() and error is None
    assert root.handlers and root.level == logging.WARNING
    for handler in list(root.handlers):
        root.removeHandler(handler)


def test_a_benchmark_tasks_closing_line_travels_back_with_its_result(tmp_path, monkeypatch):
    """decontaminate's benchmark task closes with one line per benchmark, like a shard's "done"
    line, but it was not marked TASK_SUMMARY: on Ray it came through Ray's log forwarding
    ("(refinery-task pid=977) ... benchmark b1: 5 items"), after the pass's next lines, and may
    be dropped at shutdown (adversarial review). Run as a Ray worker runs it, in this process."""
    import json
    import logging

    from refinery.dedup.decontaminate import benchmark_task
    from refinery.executors.base import RELAYED_LOG_KEY
    from refinery.executors.ray import ray_task

    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"q": " ".join(f"w{i}" for i in range(40))}) + "\n")
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)
    task = {"spec": {"name": "b1", "path": str(bench), "fields": ["q"]}, "ngram": 13,
            "ngram_uri": str(tmp_path / "n.parquet"), "items_uri": str(tmp_path / "i.parquet")}
    status, result, error, _node = ray_task(benchmark_task, {}, task, 1, "b1", logging.INFO)
    assert status == "done" and error is None, error
    lines = [r.getMessage() for r in result.get(RELAYED_LOG_KEY, [])]
    assert len(lines) == 1 and lines[0].startswith("[decontaminate] benchmark b1: 1 items"), lines
    for handler in list(root.handlers):
        root.removeHandler(handler)


def test_an_http_server_given_for_the_cluster_is_named_at_once(tmp_path):
    """Found by adversarial testing: the dashboard's HTTP port given as RAY_ADDRESS passed the
    TCP check and ray.init retried for minutes; ``http://host:8265`` was taken for a host name."""
    import http.server
    import threading

    from refinery.executors.ray_cluster import check_reachable

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ConnectionError, match="does not answer as Ray's gRPC does"):
            check_reachable(f"127.0.0.1:{server.server_address[1]}", timeout_s=2)
    finally:
        server.shutdown()
    with pytest.raises(ConnectionError, match="is an HTTP address .*not the cluster's"):
        check_reachable("http://127.0.0.1:8265", timeout_s=1)


def test_workers_of_an_existing_cluster_get_the_drivers_refinery_and_s3_settings(monkeypatch):
    """Found by adversarial testing: on a cluster reached by RAY_ADDRESS the workers did not see
    the driver's REFINERY_MODELS and loaded the packaged models under the fingerprint of others."""
    import ray

    from refinery.executors import ray_cluster

    calls = []
    monkeypatch.setattr(ray_cluster, "check_reachable", lambda address: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setenv("REFINERY_MODELS", "/models/mine")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-forwarded")
    assert ray_cluster.ensure_ray(address="10.0.0.1:6379") is True
    env = calls[0]["runtime_env"]["env_vars"]
    assert env["REFINERY_MODELS"] == "/models/mine" and env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert "AWS_SECRET_ACCESS_KEY" not in env


def test_ray_missing_is_one_line_before_any_work_and_a_relative_output_is_made_absolute(tmp_path, monkeypatch):
    import importlib.util

    from typer.testing import CliRunner

    import refinery.pipeline as pipeline_module
    from refinery.cli import app
    from refinery.executors.local import LocalExecutor

    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["some words " * 60]}), src / "a.parquet")
    config = tmp_path / "c.yaml"
    config.write_text("name: x\nstages:\n  - type: gopher_quality\n")
    find_spec = importlib.util.find_spec
    with monkeypatch.context() as m:
        m.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
        result = CliRunner().invoke(app, ["run", str(config), "-i", str(src), "-o", str(tmp_path / "out"),
                                          "--executor", "ray"])
    assert result.exit_code == 2 and "needs Ray, which is not installed: pip install 'refinery[ray]'" in result.output
    assert not (tmp_path / "out").exists()
    # Ray workers run in their raylet's directory: the run directory they are given is absolute
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline_module, "make_executor", lambda *a, **k: LocalExecutor(1))
    run_pipeline(parse_config({"name": "x", "stages": [{"type": "gopher_quality"}]}), "in", "rel-out", executor="ray",
                 progress=False)
    import json

    assert json.loads((tmp_path / "rel-out" / "run.json").read_text())["output"] == str(tmp_path / "rel-out")


def test_a_refused_connection_without_a_token_says_to_export_it(monkeypatch):
    import ray

    from refinery.executors import ray_cluster

    def refuse(**kw):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379.\nA previous instance may have crashed")

    monkeypatch.setattr(ray_cluster, "check_reachable", lambda address: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    for k in ray_cluster.AUTH_ENV:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ConnectionError, match=r"^Failed to connect to Ray cluster at 10\.0\.0\.1:6379\.; if the cluster "
                                              r"uses token authentication .*RAY_AUTH_TOKEN first$"):
        ray_cluster.ensure_ray(address="10.0.0.1:6379")


def _joining(ray_local, env: dict[str, str]) -> dict[str, str]:  # noqa: F811
    """``env`` for a driver subprocess that joins the module's cluster instead of starting one of
    its own (~10 s each on 2 busy cores): its address, and its token, which this process's
    environment already holds (the fixture's ensure_ray set it). The cluster listens on loopback
    only, and a joining driver's Ray would replace 127.0.0.1 by the host's IP (and wait there for
    minutes) unless Ray clusters are "disabled" for it, as ensure_ray does for a local start."""
    assert env.get("RAY_AUTH_TOKEN"), "the module's cluster runs with a token: the driver needs it"
    return {**env, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def test_a_ray_run_logs_every_shard_without_colour_codes_into_a_file(tmp_path, ray_local):  # noqa: F811
    """Found by a new user's trial: with `--executor ray` and the output in a file, Ray's log
    deduplication folded the per-shard "[shard x] done: ..." lines into "[repeated 4x across
    cluster]" (6 of the README demo's 30 shard lines showed) with green colour codes, which
    docs/scale.md says logs come without; and the last lines of a short run never came (4 of 6
    shards logged: Ray drops lines in flight at shutdown). A real run on a real cluster (the
    module's: log deduplication, colours and forwarding are the driver's), output to pipes.

    The closing lines travel back with the results (the driver logs them), so Ray's forwarding,
    where the folding and the colours happen, only carries the lines a worker prints itself: the
    within-shard progress lines, here after every batch of 4 documents. Ray folds a line only
    when workers of two processes print it alike but for words with digits: the shards are named
    part-0000 ... part-0005, as a crawl's are (this test passed with both settings broken while
    no worker line came through Ray)."""
    import json
    import re
    import subprocess

    root = Path(__file__).resolve().parents[1]
    data = tmp_path / "in"
    data.mkdir()
    for i, warc in enumerate(sorted((root / "data/sample/warc").glob("*.warc.gz"))):
        (data / f"part-{i:04d}.warc.gz").symlink_to(warc)
    shards = sorted(p.name.split(".")[0] for p in data.iterdir())
    config = tmp_path / "c.yaml"
    # two URL dedup passes after the filter: each shard's line comes three times, alike but for
    # its numbers (what Ray's deduplication folds), the way the README demo's dedup passes did
    config.write_text("name: r\nreader: {batch_size: 4}\nstages:\n  - type: url_filter\n"
                      "dedup:\n  - {method: url, name: url_a}\n  - {method: url, name: url_b}\n")
    env = _joining(ray_local, {k: v for k, v in os.environ.items() if k not in ("RAY_DEDUP_LOGS", "RAY_COLOR_PREFIX")})
    env["REFINERY_SHARD_LOG_EVERY_S"] = "0"  # a worker's progress line after every batch
    done = subprocess.run([sys.executable, "-m", "refinery", "run", str(config), "-i", str(data),
                           "-o", str(tmp_path / "out"), "--executor", "ray", "--workers", "2"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    # one line per shard per documents pass (filter, url_a, url_b) and per signatures step, as
    # on the local executor: the driver logged a line per finished task besides the worker's, and
    # Ray dropped the worker's lines still in flight at shutdown
    logged = re.findall(r"refinery\.runner: \[shard (\S+)\] done: ", output)
    assert sorted(logged) == sorted(shards * 3), output[-3000:]
    signatures = re.findall(r"refinery\.dedup: \[dedup url/signatures\] shard (\S+): ", output)
    assert sorted(signatures) == sorted(shards * 2), output[-3000:]
    # the driver's progress line: every 30 s and at the end of a pass, not once per task
    progress = re.findall(r"refinery\.progress: \[filter\] (\S+) done: (\d+)/6 tasks", output)
    assert [n for _, n in progress] == ["6"], output[-3000:]
    # every progress line of the filter pass's workers, through Ray's forwarding: 4, 8, ... docs
    worker_line = r"^\(refinery-task pid=\d+\) .* refinery\.runner: \[filter\] shard (\S+): ([\d,]+) docs read"
    forwarded: dict[str, list[int]] = {}
    for shard, n in re.findall(worker_line, done.stderr, flags=re.M):
        forwarded.setdefault(shard, []).append(int(n.replace(",", "")))
    read = {s: json.loads((tmp_path / "out/filter/stats" / f"{s}.json").read_text())["docs_read"] for s in shards}
    expected = {s: [*range(4, n, 4), n] for s, n in read.items()}
    assert {s: sorted(ns) for s, ns in forwarded.items()} == expected, output[-3000:]
    assert "repeated" not in output and "\x1b[" not in output, output[-3000:]


def test_ray_workers_log_at_a_library_callers_level(tmp_path, ray_local):  # noqa: F811
    """Ray workers logged INFO whatever the caller chose: a program calling run_pipeline with
    logging at WARNING got every worker's "[shard x] done" lines, which the local executor's workers
    leave out. A real run on a real cluster (the module's, 2 CPUs), stderr captured."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "run.py"
    script.write_text(
        "import logging, sys\n"
        "from refinery.config import load_config\n"
        "from refinery.pipeline import run_pipeline\n"
        "if __name__ == '__main__':\n"
        "    logging.basicConfig(level=logging.WARNING)\n"
        "    run_pipeline(load_config(sys.argv[1]), sys.argv[2], sys.argv[3], executor='ray', workers=2, progress=False)\n")
    config = tmp_path / "c.yaml"
    config.write_text("name: r\nstages:\n  - type: url_filter\ndedup:\n  - {method: url, name: url_a}\n")
    env = _joining(ray_local, dict(os.environ))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    # workers print their within-shard progress lines (INFO) after every batch: at the caller's
    # WARNING none may come through Ray's forwarding (which the CLI test above shows they take);
    # the closing lines are relayed through the driver's logging, which filters them whatever
    # the worker's level (this test passed with the workers' level ignored)
    env["REFINERY_SHARD_LOG_EVERY_S"] = "0"
    done = subprocess.run([sys.executable, str(script), str(config), str(root / "data/sample/warc"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out/url_a").is_dir()
    output = done.stdout + done.stderr
    # (Ray's own "Started a local Ray instance" is Ray's logger, at the level Ray sets)
    assert "[shard " not in output and "signatures" not in output and "refinery.runner" not in output, output[-3000:]
    assert "docs read" not in output and "refinery-task pid=" not in output, output[-3000:]


def test_a_local_cluster_listens_on_loopback_only(ray_local):  # noqa: F811
    """Ray replaced the local cluster's node address 127.0.0.1 by the host's IP: its GCS, raylet
    and workers listened on every interface, the dashboard agent's metrics port on 0.0.0.0 and
    the runtime-env agent on the host's IP (`ss -ltnp` during a run). The cluster's processes are
    this process's children."""
    import psutil

    ray_local.get(ray_local.remote(worker_pid).remote())  # a worker up, listening too
    listening = {(p.name(), c.laddr.ip) for p in psutil.Process().children(recursive=True)
                 for c in _tcp_listeners(p)}
    assert {"gcs_server", "raylet"} <= {name for name, _ in listening}, listening
    assert {ip for _, ip in listening} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening


def _tcp_listeners(proc) -> list:
    import psutil

    try:
        return [c for c in proc.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    except psutil.Error:  # gone meanwhile
        return []


def _flaky(**_: object) -> dict:
    raise OSError("transient")


def test_a_retried_tasks_attempt_line_travels_back_with_its_result(monkeypatch):
    """A retried task's "[x] attempt 2" line came through Ray's log forwarding, prefixed
    "(refinery-task pid=30110) ... INFO pid=30110", unlike the driver's own lines, and may be
    dropped at shutdown (a 3-shard run with one transient failure per shard). It travels back with
    the attempt's result, failed or done, as the closing line does. Run as a Ray worker runs it."""
    import logging

    from refinery.executors.base import RELAYED_LOG_KEY
    from refinery.executors.ray import ray_task

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)
    try:
        for fn, expected in ((_flaky, "failed"), (worker_pid, "done")):
            status, result, _error, _node = ray_task(fn, {}, {}, 2, "shard-a", logging.INFO)
            assert status == expected
            assert [r.getMessage() for r in result.get(RELAYED_LOG_KEY, [])] == ["[shard-a] attempt 2"]
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)


_RAYLET_KILLER = '''
import sys, time
from pathlib import Path

import psutil

from refinery.executors.base import TaskError
from refinery.executors.ray import RayExecutor


def task(out: str, k: int) -> dict:
    if k:
        time.sleep(120)  # running when the raylet dies
    Path(out, str(k)).write_text("done")
    return {}


def kill_raylet(outcome) -> None:
    for proc in psutil.Process().children(recursive=True):
        if proc.name() == "raylet":
            proc.kill()


if __name__ == "__main__":
    try:
        with RayExecutor(workers=2, progress=False) as ex:
            ex.map(task, [{"out": sys.argv[1], "k": 0}, {"out": sys.argv[1], "k": 1}], label="filter",
                   on_outcome=kill_raylet)
    except TaskError as exc:  # what the command line prints as one line
        print(f"{type(exc).__name__}: {exc}")
'''


def test_a_raylet_that_dies_mid_run_stops_the_pass_with_one_line(tmp_path):
    """The driver's raylet killed during a run: Ray's C++ core ended the driver with exit code 1
    and no message some seconds later (11 s measured), after retry lines blaming an OOM kill. The
    executor's loop now stops with ClusterLost (a TaskError: the command line prints it as one
    line, "the finished tasks are kept: run the same command again to resume"), the finished
    task's output kept. A real local cluster of its own in a subprocess (its raylet is killed)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "kill_raylet.py"
    script.write_text(_RAYLET_KILLER)
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    lines = [line for line in done.stdout.splitlines() if line.startswith("ClusterLost: ")]
    assert len(lines) == 1 and "[filter] the Ray cluster went away: the raylet at 127.0.0.1:" in lines[0], done.stdout
    assert "bring the cluster back up" not in lines[0]  # its own cluster: the rerun starts a new one
    assert sorted(p.name for p in out.iterdir()) == ["0"]  # the finished task's output, kept
    assert "retrying" not in done.stderr, done.stderr[-3000:]


def test_the_lost_raylet_line_of_a_joined_cluster_says_to_bring_it_back_up(monkeypatch, ray_local):  # noqa: F811
    """Found by the session-47 two-node trial (h169): a driver that joined a cluster by address
    (`RAY_ADDRESS`, executor.ray_address) lost its raylet and was told only to run the same
    command again, never to bring the cluster back up first: the watch was told "owned" as "this
    driver called ray.init", true for a joined cluster too. It is "this driver started the
    cluster" now. The real executor and watch on the module's cluster, ray.init skipped (Ray is
    up in this process): a real joined cluster to lose costs ~11 s (`ray start --head` 6 s, its
    stop 5 s), measured by hand with the same result."""
    import ray

    from refinery.executors import ray_cluster

    monkeypatch.setattr(ray_cluster, "check_reachable", lambda address: None)
    monkeypatch.setattr(ray, "init", lambda **kw: None)  # the module's cluster stands for the joined and the started one
    monkeypatch.setattr(ray, "shutdown", lambda: None)  # and stays up
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    lines = {}
    for how, address in (("started", None), ("address", "127.0.0.1:6379"), ("RAY_ADDRESS", None)):
        if how == "RAY_ADDRESS":
            monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
        executor = RayExecutor(workers=1, progress=False, address=address)
        first = iter([False])  # ensure_ray's look: Ray not up yet, so this executor "initialises" it
        monkeypatch.setattr(ray, "is_initialized", lambda: next(first, True))
        try:
            executor._connect()
            executor._watch._declare()  # what the watch says once the raylet stops answering
            lines[how] = executor._lost().result(timeout=0)
        finally:
            executor.close()
    assert all(line.startswith("the Ray cluster went away: the raylet at ") for line in lines.values()), lines
    assert not lines["started"].endswith("bring the cluster back up"), lines
    assert lines["address"].endswith("; bring the cluster back up") and lines["RAY_ADDRESS"] == lines["address"], lines


_SIGTERM_KEPT = """
import os, signal, sys, time
from refinery import interrupts
from refinery.executors.ray import RayExecutor
from refinery.executors.ray_cluster import ensure_ray

def noop() -> dict:
    return {}

if __name__ == "__main__":
    # a driver joined to the test module's cluster: ray.init replaces SIGTERM's handlers when it
    # joins as when it starts a cluster (a start of its own cost ~8 s more; a SIGTERM while one
    # starts is test_sigterm_while_the_local_cluster_starts_...'s), and the executor closes what
    # it connected to the same way
    os.environ["RAY_ADDRESS"] = sys.argv[1]
    import ray._private.ray_constants as constants
    constants.ENABLE_RAY_CLUSTER = False  # it listens on loopback only: 127.0.0.1 kept (tests' _joining)
    got = []
    signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))  # a library caller's
    mine = signal.getsignal(signal.SIGTERM)
    assert ensure_ray()  # this call initialised Ray
    import ray
    os.kill(os.getpid(), signal.SIGTERM)  # Ray's handlers: a stack dump and SIGABRT, or sys.exit(15)
    print("handler kept:", signal.getsignal(signal.SIGTERM) is mine, "called:", got == [signal.SIGTERM], flush=True)
    ray.shutdown()

    # the command line's handler, SIGINT ignored (a background job): a SIGTERM in the closing ray.shutdown()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    interrupts.install()
    executor = RayExecutor(workers=1, progress=False)
    executor.map(noop, [{}], label="t")
    shutdown = ray.shutdown

    def terminated_in_shutdown(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        return shutdown(*args, **kwargs)

    ray.shutdown = terminated_in_shutdown
    try:
        executor.close()
    except KeyboardInterrupt:
        print("stopped; Ray still up:", ray.is_initialized(), flush=True)
"""


def test_sigterm_on_ray_keeps_the_callers_handler_and_waits_for_the_shutdown(tmp_path, ray_local):  # noqa: F811
    """ray.init replaced SIGTERM's handler (its sys.exit, then its C++ core's failure handler): a
    driver on Ray stopped by SIGTERM (scancel, docker stop) printed a C++ stack dump and no line and
    exited 15 (or 134, SIGABRT, its claim left to lapse), instead of stopping as on Ctrl-C (one
    line, exit 143); a library caller's own handler was gone (here: SIGABRT, -6). And with SIGINT
    ignored (a background job), a SIGTERM during the closing ray.shutdown() was raised inside it,
    Ray left running. A driver in a subprocess (ray.init runs there), joined to the module's cluster."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    script = tmp_path / "sigterm_kept.py"  # a file: the task function is imported from it by Ray's worker
    script.write_text(_SIGTERM_KEPT)
    address = ray_local.get_runtime_context().gcs_address
    done = subprocess.run([sys.executable, str(script), address], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert done.stdout.splitlines() == ["handler kept: True called: True", "stopped; Ray still up: False"], done.stdout


_WATCH_WITHOUT_DESCRIPTORS = """
import os, socket, time
from refinery.executors.ray_cluster import RayletWatch
raylet = socket.create_server(("127.0.0.1", 0))  # a listening port, as a raylet's
watch = RayletWatch("127.0.0.1", raylet.getsockname()[1], started_here=True, every_s=0.02)
held = []
try:
    while True:  # this process's descriptors all in use for a moment
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
time.sleep(0.3)  # ~15 probes that could not even make a socket
for fd in held:
    os.close(fd)
print("lost while it listened:", watch.lost.done())
raylet.close()  # gone now: still seen
deadline = time.monotonic() + 10
while not watch.lost.done() and time.monotonic() < deadline:
    time.sleep(0.02)
print("lost once closed:", watch.lost.done())
"""


def test_the_raylet_watch_counts_no_miss_when_this_process_cannot_try():
    """The watch counted every OSError of its connection attempt as the raylet not answering: with
    the driver's descriptors used up for a second (EMFILE; or its ephemeral ports, EADDRNOTAVAIL)
    it declared a healthy cluster lost for good and the run stopped with ClusterLost (measured on a
    real local cluster: ray.get worked right after). Now only a refused, timed-out or unreachable
    connection is a miss. A subprocess: its descriptors are used up, not the test runner's."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _WATCH_WITHOUT_DESCRIPTORS], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["lost while it listened: False", "lost once closed: True"], done.stdout


def _session_processes(sid: int) -> list[int]:
    """The live (not zombie) processes of the session ``sid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if os.getsid(int(entry)) == sid and state != "Z":
                found.append(int(entry))
        except (OSError, IndexError):
            pass  # gone meanwhile
    return found


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if entry.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    return found


def test_sigterm_while_the_local_cluster_starts_is_one_line_and_leaves_no_ray_process(tmp_path):
    """Found by the session-39 trial: ray.init sets its own SIGTERM handler (sys.exit(15)) first
    thing, for the seconds the cluster takes to start: `refinery run --executor ray` stopped then
    exited 15 with no line, and the cluster's dashboard and runtime-env agents, cut off from their
    raylet, lived on for a minute. Now the stop waits for the start, then stops as later: one
    line, exit 143, no Ray process left. (~6 s: a local cluster's start and stop.)"""
    import json
    import signal
    import subprocess
    import time

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text(json.dumps({"id": "1", "text": "word " * 80}) + "\n")
    (tmp_path / "c.yaml").write_text("name: t\nstages:\n  - type: gopher_quality\n")
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, "-m", "refinery.cli", "run", str(tmp_path / "c.yaml"), "-i",
                             str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--executor", "ray", "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            start_new_session=True)
    try:
        for line in proc.stderr:
            if "starting a local Ray cluster" in line:
                break
        while not _children(proc.pid) and proc.poll() is None:  # ray.init has started its first process
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGTERM)
        err = proc.stderr.read()
        proc.wait(timeout=120)
        assert proc.returncode == 143, (proc.returncode, err[-3000:])
        assert [ln for ln in err.splitlines() if ln.startswith("error:")] == \
            ["error: stopped by SIGTERM; run the same command again to resume"], err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        for _ in range(100):  # Ray's processes end with the shutdown (seconds); cut off, they lasted a minute
            if not _session_processes(proc.pid):
                break
            time.sleep(0.1)
        assert _session_processes(proc.pid) == []
    finally:
        for pid in _session_processes(proc.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _allocator_task(**_: object) -> dict:
    return {"docs_read": 0, "pid": os.getpid(), "mimalloc": "libmimalloc" in Path("/proc/self/maps").read_text(),
            "preload": os.environ.get("LD_PRELOAD")}


def test_ray_workers_keep_the_environment_ray_gives_them_whatever_the_allocator(ray_local, monkeypatch):  # noqa: F811
    """The executor's allocator is the local pool's: Ray's processes (its GCS, raylets and workers)
    are started by Ray from this process's environment, which a run leaves as it is."""
    from refinery.executors.base import make_executor

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with make_executor("ray", 2, allocator="mimalloc", progress=False) as ex:
        results = ex.run(_allocator_task, [{} for _ in range(2)], label="maps")
    assert results and all(not r["mimalloc"] and r["preload"] is None and r["pid"] != os.getpid() for r in results)
