"""The Ray executor on a real local Ray cluster: same outputs as the local executor, retries of
crashed and failed shard tasks, finished shards skipped on re-run."""

from __future__ import annotations

import os

from _scale_fixtures import (  # noqa: F401
    cc_spec,
    copy_cc_docs,
    crash_once,
    fail_first_attempts,
    ray_local,
    run_outputs,
)

from refinery.config import parse_config
from refinery.executors.ray import placements, run_ray_tasks
from refinery.pipeline import plan_tasks, run_pipeline


def test_ray_matches_local_executor_and_skips_finished_shards(tmp_path, ray_local):  # noqa: F811
    data = copy_cc_docs(tmp_path / "in")
    local = run_pipeline(parse_config(cc_spec()), str(data), str(tmp_path / "local"), workers=2, progress=False)
    ray_cfg = parse_config(cc_spec(type="ray", object_store_memory=256 * 2**20))
    remote = run_pipeline(ray_cfg, str(data), str(tmp_path / "ray"), progress=False)

    assert not local.failed and not remote.failed
    assert sorted(o.status for o in remote.outcomes) == ["done"] * 3
    # every shard ran as a Ray task on this (one-node) cluster
    assert set(placements()) == {o.shard for o in remote.outcomes}
    a, b = run_outputs(str(tmp_path / "local")), run_outputs(str(tmp_path / "ray"))
    assert a.keys() == b.keys() and len(a) == 4  # 3 shards + the run summary
    assert a == b  # kept and removed rows, per-shard and merged stats (timings aside)
    assert b["_run"]["docs_read"] == 717 and 0 < b["_run"]["docs_kept"] < 717

    # a re-run skips every finished shard: nothing is rewritten
    stats_dir = tmp_path / "ray" / "stats"
    mtimes = {p.name: p.stat().st_mtime_ns for p in stats_dir.iterdir()}
    again = run_pipeline(ray_cfg, str(data), str(tmp_path / "ray"), progress=False)
    assert sorted(o.status for o in again.outcomes) == ["skipped"] * 3
    assert {p.name: p.stat().st_mtime_ns for p in stats_dir.iterdir()} == mtimes
    assert run_outputs(str(tmp_path / "ray")) == b


def test_crashed_worker_is_retried_by_ray(tmp_path, ray_local):  # noqa: F811
    data = copy_cc_docs(tmp_path / "in")
    spec = parse_config(cc_spec()).model_dump(mode="json")
    tasks = plan_tasks(str(data), str(tmp_path / "out"))[:2]
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    outcomes = run_ray_tasks(crash_once(str(attempts)), spec, tasks, max_retries=1, progress=False)
    assert sorted(o.status for o in outcomes) == ["done", "done"]
    assert {p.name: p.read_text() for p in attempts.iterdir()} == {t.shard: "2" for t in tasks}
    assert all((tmp_path / "out" / "stats" / f"{t.shard}.json").exists() for t in tasks)

    # without retries the crash is reported as a failed shard, naming the cause
    for p in attempts.iterdir():
        p.unlink()
    outcomes = run_ray_tasks(crash_once(str(attempts)), spec, tasks, max_retries=0, force=True, progress=False)
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all("retries" in o.error and "died" in o.error.lower() for o in outcomes), outcomes[0].error


def test_failed_shard_outcomes_are_retried_up_to_max_retries(tmp_path, ray_local):  # noqa: F811
    data = copy_cc_docs(tmp_path / "in")
    spec = parse_config(cc_spec()).model_dump(mode="json")
    tasks = plan_tasks(str(data), str(tmp_path / "out"))

    ok = run_ray_tasks(fail_first_attempts(2), spec, tasks, max_retries=2, progress=False)
    assert sorted(o.status for o in ok) == ["done"] * 3  # third attempt succeeded

    out2 = tmp_path / "out2"
    tasks2 = plan_tasks(str(data), str(out2))
    bad = run_ray_tasks(fail_first_attempts(2), spec, tasks2, max_retries=1, progress=False)
    assert [o.status for o in bad] == ["failed"] * 3
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
