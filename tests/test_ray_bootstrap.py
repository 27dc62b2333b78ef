"""The multi-instance Ray bootstrap: host lists, DNS retries, the status beacon, and two simulated
SageMaker hosts on 127.0.0.1 (two resourceconfig files, two processes) that form one Ray cluster
with token auth, run a recipe's Training step (its dedup pass) against S3 (a moto server), and
both exit 0."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from _scale_fixtures import free_port, upload_dir, write_dedup_input

from refinery.launch import bootstrap
from refinery.launch.bootstrap import (
    Beacon,
    BootstrapError,
    query_beacon,
    read_hosts,
    resolve,
)

ROOT = Path(__file__).resolve().parents[1]


def _resourceconfig(path: Path, hosts: list[str], current: str) -> str:
    path.write_text(json.dumps({"current_host": current, "current_instance_type": "ml.c5.18xlarge",
                                "current_group_name": "homogeneousCluster", "hosts": hosts,
                                "network_interface_name": "eth0"}))
    return str(path)


def test_hosts_from_resourceconfig_head_is_first_as_listed(tmp_path, monkeypatch):
    monkeypatch.delenv("SM_HOSTS", raising=False)
    hosts = ["algo-2", "algo-10", "algo-1"]  # not sorted: SageMaker's order is the contract
    h = read_hosts(_resourceconfig(tmp_path / "rc.json", hosts, "algo-10"))
    assert h.head == "algo-2" and not h.is_head and h.workers == ["algo-10", "algo-1"]
    assert read_hosts(_resourceconfig(tmp_path / "rc2.json", hosts, "algo-2")).is_head


def test_hosts_fall_back_to_sm_hosts(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINERY_RESOURCECONFIG", str(tmp_path / "missing.json"))
    monkeypatch.setattr(bootstrap, "TRAINING_RESOURCECONFIG", str(tmp_path / "none1"))
    monkeypatch.setattr(bootstrap, "PROCESSING_RESOURCECONFIG", str(tmp_path / "none2"))
    monkeypatch.setenv("SM_HOSTS", json.dumps(["algo-3", "algo-1"]))
    monkeypatch.setenv("SM_CURRENT_HOST", "algo-1")
    h = read_hosts()
    assert (h.head, h.current, h.is_head) == ("algo-3", "algo-1", False)
    monkeypatch.setenv("SM_CURRENT_HOST", "algo-9")
    with pytest.raises(BootstrapError, match="not in hosts"):
        read_hosts()
    monkeypatch.delenv("SM_HOSTS")
    with pytest.raises(BootstrapError, match="no host list"):
        read_hosts()


def test_bad_resourceconfig_is_rejected(tmp_path):
    with pytest.raises(BootstrapError, match="repeated"):
        read_hosts(_resourceconfig(tmp_path / "rc.json", ["algo-1", "algo-1"], "algo-1"))
    with pytest.raises(BootstrapError, match="not found"):
        read_hosts(str(tmp_path / "nope.json"))


def test_resolve_retries_until_timeout():
    assert resolve("localhost", 5) == "127.0.0.1"
    t0 = time.monotonic()
    with pytest.raises(BootstrapError, match=r"after [2-9]\d* attempts"):
        resolve("algo-1.refinery-test.invalid", timeout_s=1.0, interval_s=0.2)
    assert time.monotonic() - t0 >= 1.0


def test_beacon_reports_state_and_counts_done_deliveries():
    port = free_port()
    beacon = Beacon(port, bind="127.0.0.1").start()
    try:
        assert query_beacon("127.0.0.1", port) == "starting"
        beacon.state = "running"
        assert query_beacon("127.0.0.1", port) == "running"
        assert beacon.done_delivered == 0
        beacon.state = "done 0"
        assert query_beacon("127.0.0.1", port) == "done 0"
        assert beacon.done_delivered == 1
    finally:
        beacon.close()
    assert query_beacon("127.0.0.1", port, timeout_s=1) is None  # head gone


#: a recipe whose Training step is one exact-dedup pass (the document pass ran before, elsewhere)
RECIPE = {"name": "bootstrap-test", "stages": [{"type": "line_corrections"}], "dedup": [{"method": "exact"}]}


@pytest.mark.slow
def test_two_hosts_form_one_cluster_run_the_recipe_step_and_exit_zero(tmp_path, s3_bucket):
    from refinery.config import parse_config
    from refinery.io import fs
    from refinery.pipeline import run_pipeline
    from refinery.rundir import RunDir

    # input: two Parquet shards with 25 planted exact copies, on S3 (hosts share nothing else);
    # the Processing step's work, the document pass, done before the Training step starts
    copies = write_dedup_input(tmp_path / "in")
    upload_dir(tmp_path / "in", f"{s3_bucket}/crawl")
    fs.write_bytes(f"{s3_bucket}/jobs/recipe.yaml", yaml.safe_dump(RECIPE).encode())
    out = f"{s3_bucket}/run"
    done = run_pipeline(parse_config(RECIPE), f"{s3_bucket}/crawl", out, workers=1, progress=False,
                        only_passes=["filter"])
    assert done.passes == {"filter": "done", "exact_dedup": "blocked"}

    port, beacon_port = free_port(), free_port()
    hosts = ["localhost", "algo-2"]  # the head's name must resolve; the worker's need not
    env = dict(os.environ, REFINERY_STEP="passes", REFINERY_PASSES="exact_dedup",
               REFINERY_CONFIG_URI=f"{s3_bucket}/jobs/recipe.yaml", REFINERY_INPUT=f"{s3_bucket}/crawl",
               REFINERY_OUTPUT=out, REFINERY_JOB_NAME="refinery-recipe-test", REFINERY_GIT_SHA="0123abc",
               RAY_AUTH_TOKEN=secrets.token_hex(16), PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_MODE", None)
    common = ["--port", str(port), "--beacon-port", str(beacon_port), "--num-cpus", "1",
              "--object-store-memory", str(200 * 2**20), "--poll", "0.5", "--done-grace", "60",
              "--head-gone-after", "60", "--join-timeout", "240", "--wait-nodes", "120",
              "--join-poll", "0.25",  # not the 2 s between looks at the head's port and the joined nodes
              "--stop-grace", "1"]  # not the 5 s a head's Ray processes all take after SIGTERM (then SIGKILL)
    entry = [sys.executable, str(ROOT / "jobs" / "entrypoint.py"), "train"]
    logs, procs = {}, {}
    temps = {name: f"/tmp/rfy-t{secrets.token_hex(3)}-{name}" for name in ("head", "worker")}
    # the worker starts first: it must wait for the head's Ray to come up
    for name, current in (("worker", "algo-2"), ("head", "localhost")):
        rc = _resourceconfig(tmp_path / f"{name}.json", hosts, current)
        logs[name] = open(tmp_path / f"{name}.log", "w")
        procs[name] = subprocess.Popen(entry + ["--resourceconfig", rc, "--agent-port", str(free_port()),
                                                "--temp-dir", temps[name]] + common,
                                       env=env, stdout=logs[name], stderr=subprocess.STDOUT, cwd=tmp_path)
        if name == "worker":  # in its bootstrap (it logs its host first) before the head starts
            _wait_for_line(tmp_path / "worker.log", "INFO bootstrap: host algo-2 of ", procs[name])
    try:
        codes = {name: p.wait(timeout=400) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        for f in logs.values():
            f.close()
        leftovers = {name: bootstrap.RayNode(temp).processes() for name, temp in temps.items()}
        for temp in temps.values():  # Ray's session logs (short paths: Ray's socket paths must fit)
            shutil.rmtree(temp, ignore_errors=True)
    text = {name: (tmp_path / f"{name}.log").read_text() for name in procs}
    assert codes == {"worker": 0, "head": 0}, f"head:\n{text['head'][-4000:]}\nworker:\n{text['worker'][-4000:]}"
    assert "joined the cluster" in text["worker"] and "head says 'done 0'" in text["worker"]

    report = json.loads(fs.read_bytes(f"{out}/_jobs/refinery-recipe-test/report.json"))
    assert report["ok"] and report["step"] == "passes" and report["git_sha"] == "0123abc"
    assert report["passes"] == {"exact_dedup": "done"}
    assert len(report["nodes"]) == 2  # one cluster of both hosts
    removed_ids = _ids(RunDir(out).pass_dir("exact_dedup", last=True).removed_dir)
    # the same documents as a one-process run of the same recipe, and every planted pair hit
    local = run_pipeline(parse_config(RECIPE), str(tmp_path / "in"), str(tmp_path / "local"), workers=1,
                         progress=False)
    assert set(local.passes.values()) == {"done"}
    expected = _ids(RunDir(str(tmp_path / "local")).pass_dir("exact_dedup", last=True).removed_dir)
    assert removed_ids == expected and len(expected) >= copies
    # every planted pair that the document pass kept is a duplicate the dedup pass removed
    filtered = _ids(RunDir(out).pass_dir("filter").kept_dir)  # (the ids kept by the stages)
    planted = [i for i in _first_ids(tmp_path, copies) if i in filtered]
    assert planted and all(i in removed_ids or f"copy-{i}" in removed_ids for i in planted)
    # nothing of either node is left running (each node's processes name its own temp dir)
    assert leftovers == {"head": [], "worker": []}


def _wait_for_line(log: Path, text: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Until ``text`` is in ``log`` (written by ``proc``, which must stay alive meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        if proc.poll() is not None or time.monotonic() >= deadline:
            proc.kill()  # (before the head: it started no Ray node yet)
            raise AssertionError(f"no {text!r} in {log.name} (exit {proc.poll()}):\n{log.read_text()[-2000:]}")
        time.sleep(0.05)


def _ids(removed_dir: str) -> set[str]:
    """The ids in a directory of document shards (a pass's removed/ or kept/)."""
    from refinery.io import fs, parquet

    ids: set[str] = set()
    for uri in fs.list_files(removed_dir, (".parquet",)):
        ids |= set(parquet.read_table(uri, columns=["id"]).column("id").to_pylist())
    return ids


def _first_ids(tmp_path: Path, n: int) -> list[str]:
    rows = pq.read_table(tmp_path / "in" / "part-a.parquet", columns=["id", "text"]).to_pylist()
    return [r["id"] for r in rows if r["text"].strip()][:n]


def test_stopping_a_head_node_ends_its_client_server_too(monkeypatch):
    """`ray start --head` also starts Ray's client server (`python -m ray.util.client.server
    --address=<ip>:<port> --port=10001`), orphaned at once and naming neither the temp dir nor
    anything we chose: RayNode.stop ended every other process of the node and left it running,
    holding port 10001, one more per head started on a host (found by adversarial testing: three
    of them after three two-node runs). A real head node, started and stopped."""
    import psutil

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    port = free_port()
    node = bootstrap.RayNode(f"/tmp/rfy-c{secrets.token_hex(3)}", num_cpus=1, object_store_memory=100 * 2**20,
                             agent_port=free_port())

    def client_servers() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if "ray.util.client.server" in cmd and f":{port} " in cmd + " ":
                found.append(proc)
        return found

    try:
        node.start_head("127.0.0.1", port)
        deadline = time.monotonic() + 30
        while not client_servers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client_servers(), "ray start --head started no client server: this test needs another way in"
        node.stop(timeout_s=1)  # SIGKILL 1 s after SIGTERM, not 5 (a head's processes all wait for it)
        assert client_servers() == []
    finally:
        for proc in client_servers() + node.processes():
            proc.kill()
        shutil.rmtree(node.temp_dir, ignore_errors=True)
