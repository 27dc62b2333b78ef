"""A whole recipe through the SageMaker launch path, without AWS: ``refinery launch`` against a
moto server (S3 and SageMaker on 127.0.0.1) writes the config and one shard stub per input file and
creates + starts the pipeline; then the pipeline's two steps run as SageMaker would run them --
the Processing step as two instances with disjoint shares of the stubs (``ShardedByS3Key``), the
Training step on a real local Ray cluster -- each with the environment from the pipeline
definition. The run directory on S3 must equal a plain local ``run_pipeline`` of the same recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from _fault_fixtures import FaultPolicy, through_proxy  # noqa: F401 - fixture
from _scale_fixtures import cc_spec, copy_cc_docs, ray_local, upload_dir, write_dedup_input  # noqa: F401

from refinery.config import parse_config
from refinery.io import fs, parquet
from refinery.launch import container
from refinery.launch.launcher import launch
from refinery.launch.watch import Watcher
from refinery.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/refinery"
ROLE = "arn:aws:iam::123456789012:role/refinery-sagemaker"

#: RefinedWeb's recipe over the extracted cc_docs sample: document stages, URL + MinHash +
#: substring dedup, GPT-2 token shards
RECIPE = cc_spec(name="recipe") | {
    "dedup": [{"method": "url"}, {"method": "minhash", "memory_budget": "256MiB"},
              {"method": "substring", "memory_budget": "256MiB"}],
    "tokenize": {"tokenizer": "gpt2"},
}
#: what differs between two runs of the same recipe on different storage and executors: timings,
#: worker processes and their memory, and fingerprints (they hash the input's location)
VOLATILE = {"seconds", "index_seconds", "wall_seconds", "task_seconds", "finished_at", "updated_at", "started_at", "writer", "fingerprint",
            "upstream", "tokens_per_s", "docs_per_s", "peak_rss_max", "worker_pids", "worker_baseline_bytes",
            "versions",  # input_files.json: modification times locally, ETags on S3
            "source_digest",  # a token shard's kept shard's bytes: its `source` column names the input's location
            "outputs"}  # a pass marker's shard file sizes: the `source` column again (the rows are compared)


@pytest.fixture(autouse=True)
def _keep_root_logging(keep_root_logging):
    """The container and CLI commands configure logging onto their own handlers: undo it."""


def snapshot(run_dir: str, input_dir: str) -> dict[str, Any]:
    """Every file of a run directory (``_jobs/`` aside), comparable across storages: Parquet as
    rows, JSON with timings and fingerprints dropped, locations made relative; other files as bytes."""
    root = run_dir.rstrip("/") + "/"
    in_root = input_dir.rstrip("/") + "/"

    def norm(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: norm(v) for k, v in obj.items() if k not in VOLATILE}
        if isinstance(obj, list):
            return [norm(v) for v in obj]
        if isinstance(obj, str):
            return obj.replace(root, "<run>/").replace(in_root, "<in>/").replace(root.rstrip("/"), "<run>")
        return obj

    out: dict[str, Any] = {}
    for uri in fs.list_files(run_dir):
        rel = uri[len(root):]
        if rel.startswith("_jobs/") or rel == "run.json" or "/index/" in f"/{rel}":
            continue  # launch files; the plan record (locations); dedup intermediates
        if rel.endswith(".parquet"):
            out[rel] = norm(parquet.read_table(uri).to_pylist())
        elif rel.endswith(".json"):
            out[rel] = norm(json.loads(fs.read_bytes(uri)))
        else:
            out[rel] = fs.read_bytes(uri)
    return out


def _step_env(step: dict[str, Any]) -> dict[str, str]:
    env = dict(step["Arguments"]["Environment"])
    # Ray auth belongs to the bootstrap (tests/test_ray_bootstrap.py); here the driver joins the
    # test's local cluster
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_AUTH_MODE", None)
    return env


def _run_container(monkeypatch, mode: str, env: dict[str, str]) -> int:
    with monkeypatch.context() as m:
        for k, v in env.items():
            m.setenv(k, v)
        return container.main([mode])


@pytest.mark.slow
def test_recipe_launched_as_a_pipeline_equals_a_local_run(tmp_path, s3_bucket, s3_server, ray_local,  # noqa: F811
                                                          monkeypatch):
    # (s3_server before ray_local: the module's Ray workers must inherit the S3 endpoint)
    data = copy_cc_docs(tmp_path / "in")
    upload_dir(data, f"{s3_bucket}/crawl")
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    out = f"{s3_bucket}/runs/sm"

    # launch: stubs + config on S3, pipeline created and started (moto's SageMaker)
    sm = boto3.client("sagemaker", endpoint_url=s3_server, region_name="us-east-1")
    result = launch(config, f"{s3_bucket}/crawl", out, IMAGE, ROLE, instances=2, build=False, sagemaker_client=sm)
    defn = json.loads(sm.describe_pipeline(PipelineName=result.name)["PipelineDefinition"])
    processing, training = defn["Steps"]
    assert (processing["Type"], training["Type"], training["DependsOn"]) == ("Processing", "Training", ["filter"])
    stub_prefix = processing["Arguments"]["ProcessingInputs"][0]["S3Input"]["S3Uri"]
    stub_uris = fs.list_files(stub_prefix)
    assert len(stub_uris) == 3  # one per input file

    # the Processing step: ShardedByS3Key gives algo-1 one stub and algo-2 the other two
    env = _step_env(processing)
    hosts = {"algo-1": stub_uris[:1], "algo-2": stub_uris[1:]}
    reports = {}
    for host, mine in hosts.items():
        local = tmp_path / host / "shards"
        local.mkdir(parents=True)
        for uri in mine:
            (local / fs.basename(uri)).write_bytes(fs.read_bytes(uri))
        rc = tmp_path / host / "resourceconfig.json"
        rc.write_text(json.dumps({"current_host": host, "hosts": list(hosts)}))
        code = _run_container(monkeypatch, "processing", {**env, "REFINERY_SHARDS_DIR": str(local),
                                                           "REFINERY_LOG_DIR": str(tmp_path / host / "logs"),
                                                           "REFINERY_RESOURCECONFIG": str(rc), "REFINERY_WORKERS": "1"})
        assert code == 0
        # an instance's disk holds its share of stubs only: documents stream from S3
        on_disk = [f for f in (tmp_path / host).rglob("*") if f.is_file() and f.parent.name == "shards"]
        assert sorted(f.name for f in on_disk) == sorted(fs.basename(u) for u in mine)
        assert sum(f.stat().st_size for f in on_disk) < 4096
        reports[host] = json.loads(fs.read_bytes(f"{out}/_jobs/{result.name}/{host}.json"))
        if host == "algo-1":  # the other share is not done yet: the pass stays open
            assert reports[host]["passes"] == {"filter": "partial"} and not fs.exists(f"{out}/passes/filter.json")
    assert reports["algo-2"]["passes"] == {"filter": "done"} and fs.exists(f"{out}/passes/filter.json")
    assert [reports[h]["shards"] for h in hosts] == [1, 2] and all(r["ok"] for r in reports.values())
    # an instance that got no stubs (more instances than shards) has nothing to do
    assert _run_container(monkeypatch, "processing", {**env, "REFINERY_SHARDS_DIR": str(tmp_path / "none")}) == 0

    # the Training step: the head's command on the Ray cluster runs every remaining pass
    assert _run_container(monkeypatch, "step", _step_env(training)) == 0
    head = json.loads(fs.read_bytes(f"{out}/_jobs/{result.name}/report.json"))
    assert head["ok"] and head["passes"] == {p: "done" for p in ("url_dedup", "minhash_dedup", "substring_dedup", "tokens")}
    assert len(head["nodes"]) == 1

    # one run.json and stats.json for the whole job, and `status` says it is complete
    from refinery.status import run_status

    status = run_status(out)
    assert status.complete and (status.shards_planned, status.shards_finished) == (3, 3)
    assert json.loads(fs.read_bytes(f"{out}/run.json"))["input"] == f"{s3_bucket}/crawl"

    # the same recipe, one local run_pipeline: the same run directory (inline: a pool's start is
    # ~1.5 s, and the outputs do not depend on the workers)
    local = run_pipeline(parse_config(RECIPE), str(data), str(tmp_path / "local"), workers=1, progress=False)
    assert set(local.passes.values()) == {"done"}
    got, want = snapshot(out, f"{s3_bucket}/crawl"), snapshot(str(tmp_path / "local"), str(data))
    assert sorted(got) == sorted(want)
    assert {k: v for k, v in got.items() if v != want[k]} == {}
    assert got["stats.json"]["docs_read"] == 717 and got["tokens/manifest.json"]["totals"]["n_tokens"] > 0
    # and the watchdog counts the Processing job's progress from the filter pass's markers
    progress = Watcher(None, fs.s3_client(), "job").progress(out, since=None, passes=["filter"])
    assert (progress.markers, progress.docs_read, progress.by_pass) == (3, 717, {"filter": 3})


def test_standalone_dedup_step_runs_on_the_ray_cluster(tmp_path, s3_server, ray_local):  # noqa: F811
    """``--stage dedup``: a dedup YAML over a run directory, the head's command on the cluster.
    (``s3_server`` first: the module's Ray workers inherit its endpoint whichever test starts Ray.)"""
    from refinery.launch.steps import run_step

    copies = write_dedup_input(tmp_path / "in")
    config = tmp_path / "dedup.yaml"
    config.write_text("method: exact\n")
    report = run_step("dedup", str(config), str(tmp_path / "in"), str(tmp_path / "out"))
    assert report["ok"] and report["docs_read"] == 300 + 417 + copies and report["docs_removed"] >= copies
    assert len(report["nodes"]) == 1


def test_a_config_on_s3_is_read_from_a_download_removed_afterwards(s3_bucket):
    """Every container (and every Ray host's step) downloads the job's config: none is left behind."""
    uri = fs.join(s3_bucket, "job", "config.yaml")
    fs.write_bytes(uri, b"name: x\n")
    with container.fetched_config(uri) as path:
        assert path != uri and Path(path).read_bytes() == b"name: x\n"
    assert not Path(path).exists()
    with pytest.raises(RuntimeError), container.fetched_config(uri) as path:
        raise RuntimeError("the step failed")
    assert not Path(path).exists()
    with container.fetched_config("/local/config.yaml") as path:  # a local config is used where it is
        assert path == "/local/config.yaml"


def test_instances_read_no_input_footer_the_launch_checked(tmp_path, s3_bucket, s3_server, through_proxy, monkeypatch):
    """``refinery launch`` reads every Parquet input footer when it plans; each Processing instance
    planned twice more (its stubs' check, then its run) before any wrote the run's input_files.json,
    each plan reading every footer: N instances x 2 x files GETs at the start (session 49, h208).
    Now the launch records its check under ``_jobs/<job>/`` and an instance reads only the footers
    of files changed since (here a3, rewritten after the launch), besides its own shards' data."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def parquet_bytes(n: int, words: str = "budget") -> bytes:
        buf = io.BytesIO()
        pq.write_table(pa.table({"id": [f"d{n}"], "text": [f"The committee met to review the annual {words}. " * 4]}), buf)
        return buf.getvalue()

    src, out = f"{s3_bucket}/crawl", f"{s3_bucket}/runs/footers"
    for n in range(4):
        fs.write_bytes(f"{src}/a{n}.parquet", parquet_bytes(n))
    config = tmp_path / "footers.yaml"
    config.write_text(yaml.safe_dump({"name": "footers", "stages": [{"type": "gopher_quality", "params": {"min_words": 5}}]}))
    requests: list[tuple[str, str]] = []
    through_proxy(FaultPolicy(when=lambda method, path: requests.append((method, path)) or False))
    sm = boto3.client("sagemaker", endpoint_url=s3_server, region_name="us-east-1")
    result = launch(config, src, out, IMAGE, ROLE, instances=2, build=False, sagemaker_client=sm)

    def footer_gets(keys: list[str]) -> dict[str, int]:
        return {k: n for k in keys if (n := sum(m == "GET" and p.endswith(f"/crawl/{k}") for m, p in requests))}

    files = [f"a{n}.parquet" for n in range(4)]
    assert footer_gets(files) == {f: 1 for f in files}  # the launch's check: one ranged GET a footer
    fs.write_bytes(f"{src}/a3.parquet", parquet_bytes(3, "library plans"))  # changed since: read again

    (processing,) = json.loads(sm.describe_pipeline(PipelineName=result.name)["PipelineDefinition"])["Steps"]
    stub_uris = fs.list_files(processing["Arguments"]["ProcessingInputs"][0]["S3Input"]["S3Uri"])
    # the first instance of two: none has written the run's input_files.json yet, as when N start at once
    local = tmp_path / "algo-1" / "shards"
    local.mkdir(parents=True)
    for uri in stub_uris[:2]:  # a0 and a1: ShardedByS3Key's first half
        (local / fs.basename(uri)).write_bytes(fs.read_bytes(uri))
    rc = tmp_path / "algo-1" / "resourceconfig.json"
    rc.write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1", "algo-2"]}))
    requests.clear()
    assert _run_container(monkeypatch, "processing", {**_step_env(processing), "REFINERY_SHARDS_DIR": str(local),
                                                       "REFINERY_RESOURCECONFIG": str(rc), "REFINERY_WORKERS": "1"}) == 0
    # its shards' data, and a3's footer (changed since the launch); before: every footer twice
    # (its stubs' plan and its run's), {a0: 3, a1: 3, a2: 2, a3: 2}
    assert footer_gets(files) == {"a0.parquet": 1, "a1.parquet": 1, "a3.parquet": 1}
    report = json.loads(fs.read_bytes(f"{out}/_jobs/{result.name}/algo-1.json"))
    assert report["ok"] and report["shards"] == 2 and report["docs_read"] == 2
    # what the instances reused: the launch's listing and check, as a run's input_files.json holds them
    record = json.loads(fs.read_bytes(f"{out}/_jobs/{result.name}/input_files.json"))
    assert sorted(record["files"]) == ["a0", "a1", "a2", "a3"] and record["footers_checked"]["bad"] == []
