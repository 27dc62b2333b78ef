"""Dedup on S3 (a real moto server) and on a real local Ray cluster: same clusters as in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from refinery.dedup.config import DedupConfig
from refinery.dedup.driver import run_dedup
from refinery.executors.local import LocalExecutor
from refinery.executors.ray import RayExecutor
from refinery.io import fs, parquet
from tests._dedup_fixtures import build_corpus, make_run_dir


@pytest.fixture(scope="module")
def local_result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dedup-dist")
    corpus = build_corpus(seed=11, n_high=40, n_low=20)
    run = make_run_dir(tmp, corpus.shards)
    run_dedup(str(run), str(tmp / "out"), DedupConfig(partitions=2), LocalExecutor(1))
    return run, tmp / "out"


def clusters_at(out: str) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    for sub in ("kept", "removed"):
        for uri in fs.list_files(fs.join(out, sub), (".parquet",)):
            t = parquet.read_table(uri)
            if t.num_rows:
                found.update(zip(t.column("id").to_pylist(), t.column("dedup_cluster_id").to_pylist()))
    return found


def test_dedup_reads_and_writes_s3(local_result, s3_bucket):
    s3_root = f"{s3_bucket}/dedup"
    run, local_out = local_result
    for f in sorted((Path(run) / "kept").glob("*.parquet")):
        fs.write_bytes(f"{s3_root}/run/kept/{f.name}", f.read_bytes())
    out = f"{s3_root}/deduped"
    stats = run_dedup(f"{s3_root}/run", out, DedupConfig(partitions=2), LocalExecutor(1))
    assert stats["docs_removed"] > 0
    assert clusters_at(out) == clusters_at(str(local_out))
    # intermediates, index and stats all live on S3
    for key in ("dedup/manifest.json", "dedup/dedup_stats.json", "stats.json", "run.json"):
        assert fs.exists(f"{out}/{key}"), key
    assert fs.list_files(f"{out}/dedup/buckets", (".parquet",))


def test_ray_gives_the_same_clusters_as_in_process(local_result, tmp_path):
    ray = pytest.importorskip("ray")
    run, local_out = local_result
    try:
        with RayExecutor(2, object_store_memory=200 * 2**20) as ex:
            stats = run_dedup(str(run), str(tmp_path / "ray"), DedupConfig(partitions=2), ex)
            assert ray.is_initialized()
        assert not ray.is_initialized()  # the executor started this cluster, so it stops it
    finally:
        ray.shutdown()
    import os

    pids = stats["passes"]["signatures"]["worker_pids"]
    assert pids and os.getpid() not in pids  # the tasks ran in Ray worker processes
    assert clusters_at(str(tmp_path / "ray")) == clusters_at(str(local_out))
    for sub in ("kept", "removed"):
        for f in sorted((Path(local_out) / sub).glob("*.parquet")):
            assert parquet.read_table(str(tmp_path / "ray" / sub / f.name)).equals(parquet.read_table(str(f)))


def test_an_s3_output_of_other_files_is_refused_and_a_killed_dedup_resumes(local_result, s3_bucket):
    """The output checks of `refinery dedup` on S3 listings: a dedup killed before its run.json
    resumes; a prefix holding other files is refused, naming them, and they stay."""
    from refinery.dedup.passes import DedupInputError

    s3_root = f"{s3_bucket}/dedup-checks"
    run, local_out = local_result
    for f in sorted((Path(run) / "kept").glob("*.parquet")):
        fs.write_bytes(f"{s3_root}/run/kept/{f.name}", f.read_bytes())
    out = f"{s3_root}/deduped"
    run_dedup(f"{s3_root}/run", out, DedupConfig(method="exact"), LocalExecutor(1))
    fs.delete(f"{out}/run.json")  # killed before the pass finished
    assert run_dedup(f"{s3_root}/run", out, DedupConfig(method="exact"), LocalExecutor(1))["docs_read"] > 0
    fs.write_bytes(f"{s3_root}/theirs/kept/part-0.parquet", b"not ours")
    with pytest.raises(DedupInputError, match=r"not a refinery run \(no run.json\): it holds kept/part-0.parquet"):
        run_dedup(f"{s3_root}/run", f"{s3_root}/theirs", DedupConfig(method="exact"), LocalExecutor(1))
    assert fs.exists(f"{s3_root}/theirs/kept/part-0.parquet")


def test_an_s3_dedup_killed_before_run_json_resumes_after_its_input_lost_a_shard(local_result, s3_bucket):
    """Found by review: on S3 too, a dedup killed before its run.json, rerun on an input that lost
    a shard (with its work dir inside OUTPUT), was refused naming its own files; its orphans are
    cleaned instead."""
    s3_root = f"{s3_bucket}/orphans"
    run, _ = local_result
    kept = sorted((Path(run) / "kept").glob("*.parquet"))
    assert len(kept) >= 2
    for f in kept:
        fs.write_bytes(f"{s3_root}/run/kept/{f.name}", f.read_bytes())
    out, work = f"{s3_root}/deduped/", f"{s3_root}/deduped/work"
    run_dedup(f"{s3_root}/run", out, DedupConfig(method="exact"), LocalExecutor(1), work_dir=work)
    fs.delete(f"{s3_root}/deduped/run.json")  # killed before the pass finished
    gone = kept[-1].name
    fs.delete(f"{s3_root}/run/kept/{gone}")
    stats = run_dedup(f"{s3_root}/run", out, DedupConfig(method="exact"), LocalExecutor(1), work_dir=work)
    assert stats["shards"] == len(kept) - 1
    assert not fs.exists(f"{s3_root}/deduped/kept/{gone}") and not fs.exists(f"{s3_root}/deduped/stats/{gone[:-8]}.json")
