"""Two Processing instances as two real processes, at the same time, each with its own
resourceconfig and its own share of shard stubs, over a paths manifest on S3 (moto server): one
``run.json`` and one ``stats.json`` come out, ``status`` reports the run complete, each container
announced itself for the watchdog, and neither instance put more than its stubs on its disk."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from _scale_fixtures import copy_cc_docs, upload_dir

from refinery.config import parse_config
from refinery.io import fs
from refinery.launch.recipe import stubs
from refinery.plan import plan_run
from refinery.status import run_status

SPEC = {"name": "multi", "stages": [{"type": "gopher_repetition"}, {"type": "gopher_quality"}]}


def test_two_instances_in_parallel_make_one_complete_run(tmp_path, s3_bucket, s3_server):
    data = copy_cc_docs(tmp_path / "in")
    upload_dir(data, f"{s3_bucket}/crawl")
    files = sorted(fs.basename(u) for u in fs.list_files(f"{s3_bucket}/crawl"))
    manifest = f"{s3_bucket}/crawl/docs.paths.gz"
    fs.write_bytes(manifest, gzip.compress("\n".join(f"crawl/{f}" for f in files).encode()))
    out = f"{s3_bucket}/runs/multi"
    config = tmp_path / "multi.yaml"
    config.write_text(yaml.safe_dump(SPEC))
    plan = plan_run(parse_config(SPEC), manifest, out)
    assert len(plan.input_files) == 3

    # what ShardedByS3Key gives each instance: disjoint stubs on its own disk
    items = stubs(plan)
    shares = {"algo-1": sorted(items)[:1], "algo-2": sorted(items)[1:]}
    procs = {}
    for host, names in shares.items():
        disk = tmp_path / host
        (disk / "shards").mkdir(parents=True)
        for name in names:
            (disk / "shards" / f"{name}.json").write_text(json.dumps(items[name]))
        rc = disk / "resourceconfig.json"
        rc.write_text(json.dumps({"current_host": host, "hosts": list(shares)}))
        env = {**os.environ, "REFINERY_STEP": "filter", "REFINERY_PASSES": "filter", "REFINERY_CONFIG_URI": str(config),
               "REFINERY_INPUT": manifest, "REFINERY_OUTPUT": out, "REFINERY_JOB_NAME": "job-1",
               "REFINERY_SHARDS_DIR": str(disk / "shards"), "REFINERY_RESOURCECONFIG": str(rc),
               "REFINERY_WORKERS": "1", "REFINERY_LOG_DIR": str(disk / "logs")}
        procs[host] = subprocess.Popen([sys.executable, "-m", "refinery.launch.container", "processing"], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for host, proc in procs.items():
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, output
        # the instance's disk: its stubs and its logs, nothing of the input
        held = [p for p in (tmp_path / host).rglob("*") if p.is_file() and p.parent.name == "shards"]
        assert sorted(p.stem for p in held) == shares[host] and sum(p.stat().st_size for p in held) < 4096
        assert fs.exists(f"{out}/_jobs/job-1/started/{host}.json")

    run = json.loads(fs.read_bytes(f"{out}/run.json"))
    assert run["input"] == manifest and run["shards"] == 3
    stats = json.loads(fs.read_bytes(f"{out}/stats.json"))
    assert stats["shards"] == 3 and stats["docs_read"] == 717
    status = run_status(out)
    assert status.complete and (status.shards_planned, status.shards_finished) == (3, 3)
    assert fs.exists(f"{out}/passes/filter.json")
    reports = {h: json.loads(fs.read_bytes(f"{out}/_jobs/job-1/{h}.json")) for h in shares}
    assert {r["shards"] for r in reports.values()} == {1, 2} and all(r["ok"] for r in reports.values())
    # exactly the shards of the plan, each processed once (by its own instance)
    kept = sorted(fs.basename(u) for u in fs.list_files(f"{out}/kept"))
    assert kept == sorted(f"{n}.parquet" for n in items)
    assert Path(tmp_path / "in").exists()
