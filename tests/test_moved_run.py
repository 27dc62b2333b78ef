"""A run directory moved or copied (``mv``, ``aws s3 sync`` up or down) is the same run: a run
stopped halfway resumes at its new place, its finished index steps and shards skipped, and ends
with the output of a run never stopped. A dedup pass's index used to hash its shards' full paths
(the run's place as spelled), so a moved run redid the index and removal of its unfinished pass.
A run whose index was begun by the code of before (a 0.8.8 run) resumes too, in place or moved."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from _old_code import archived_package, run_with
from _s3_fixtures import s3_root  # noqa: F401 - a fixture
from _scale_fixtures import write_dedup_input

from refinery.config import parse_config
from refinery.io import fs
from refinery.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
#: the last commit whose dedup indexes hashed the shards' full paths (the run's place)
FULL_PATHS_COMMIT = "332c5216211e929e1b92cf2afce6990e5fc138b1"

RECIPE = {
    "name": "moved-run",
    "reader": {"batch_size": 100},
    "stages": [{"type": "gopher_quality", "params": {"min_words": 20}}],
    "dedup": [{"method": "minhash"}],
}
STEPS = "minhash_dedup/index/passes"


def _run(out: str, inp: Path):
    return run_pipeline(parse_config(RECIPE), str(inp), out, workers=1, progress=False)


def _stop_halfway(out: str) -> None:
    """As a run killed in its dedup pass's removal run: one shard removed, the other not yet."""
    for rel in ("passes/minhash_dedup.json", "minhash_dedup/stats/part-b.json", "minhash_dedup/kept/part-b.parquet",
                "kept/part-b.parquet", "minhash_dedup/stats.json", "minhash_dedup/dedup_stats.json", "stats.json"):
        fs.delete(fs.join(out, rel))


def _sync(src: str, dst: str) -> None:
    """Every file under ``src`` to the same relative key under ``dst``, as ``aws s3 sync`` or ``cp -r`` copy."""
    (sfs, spath), (dfs, dpath) = fs.resolve(src), fs.resolve(dst)
    if isinstance(dfs, pafs.LocalFileSystem):
        Path(dpath).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(spath, dpath, source_filesystem=sfs, destination_filesystem=dfs)


def _bytes(out: str, under: str) -> dict[str, bytes]:
    top = fs.join(out, under)
    prefix = (top if fs.is_s3(top) else fs.absolute(top)).rstrip("/") + "/"
    return {f.removeprefix(prefix): fs.read_bytes(f) for f in fs.list_files_if_any(top)}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """The input, a clean run of it, and a run stopped halfway (locally)."""
    base = tmp_path_factory.mktemp("moved")
    write_dedup_input(base / "in", copies=25, per_shard=150)
    assert not _run(str(base / "clean"), base / "in").failed_pass
    shutil.copytree(base / "clean", base / "stopped")
    _stop_halfway(str(base / "stopped"))
    return {"in": base / "in", "clean": base / "clean", "stopped": base / "stopped"}


@pytest.mark.parametrize("move", ["local-to-local", "local-to-s3", "s3-to-local"])
def test_a_run_stopped_halfway_then_moved_resumes_where_it_stopped(made, tmp_path, s3_root, move):  # noqa: F811
    stopped = str(made["stopped"])
    if move == "s3-to-local":  # a run made on S3 (a SageMaker job's output), stopped there
        stopped = f"{s3_root}/made/run"
        _sync(str(made["clean"]), stopped)
        _run(stopped, made["in"])  # the copy, resumed in its own place: run.json names it
        _stop_halfway(stopped)
    new = f"{s3_root}/synced/run" if move == "local-to-s3" else str(tmp_path / "moved" / "run2")
    _sync(stopped, new)
    steps = _bytes(new, STEPS)
    done_shard = fs.read_bytes(fs.join(new, "minhash_dedup/stats/part-a.json"))
    again = _run(new, made["in"])
    assert again.passes == {"filter": "skipped", "minhash_dedup": "done"}
    # the index's steps and the shard removed before the stop are kept, not redone
    assert _bytes(new, STEPS) == steps and len(steps) > 5
    assert fs.read_bytes(fs.join(new, "minhash_dedup/stats/part-a.json")) == done_shard
    assert _bytes(new, "kept") == _bytes(str(made["clean"]), "kept")  # a clean run's corpus
    assert json.loads(fs.read_bytes(fs.join(new, "run.json")))["output"] == new
    assert _run(new, made["in"]).passes == {"filter": "skipped", "minhash_dedup": "skipped"}


def _in(directory: Path, fn):
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        return fn()
    finally:
        os.chdir(cwd)


def test_a_run_begun_by_the_code_of_before_resumes_in_place_and_moved(made, tmp_path, tmp_path_factory):
    """A 0.8.8 run (made here by the code of before, from the repository's history: its index
    hashed the shards' paths as the run was spelled, relative here) stopped halfway resumes with
    its index kept: in place with the same spelling, and moved elsewhere (its old place read from
    run.json, then, once run.json names the new place, from the index's manifest)."""
    old_code = archived_package(tmp_path_factory, FULL_PATHS_COMMIT, "full-paths-code")
    run_with(old_code, RECIPE, made["in"], "old/run", cwd=tmp_path)
    old = tmp_path / "old" / "run"
    _stop_halfway(str(old))
    shutil.copytree(old, tmp_path / "moved")
    steps = _bytes(str(old), STEPS)
    for out, spelled in ((old, "old/run"), (tmp_path / "moved", str(tmp_path / "moved"))):
        again = _in(tmp_path, lambda: _run(spelled, made["in"]))  # in place: the spelling it was made with
        assert again.passes == {"filter": "skipped", "minhash_dedup": "done"}
        assert _bytes(str(out), STEPS) == steps, out
        assert _bytes(str(out), "kept") == _bytes(str(made["clean"]), "kept")
    # moved again after run.json named the new place, stopped again: the manifest still names the old one
    _stop_halfway(str(tmp_path / "moved"))
    shutil.move(tmp_path / "moved", tmp_path / "moved-again")
    (tmp_path / "moved-again" / "run.json").write_text(
        (tmp_path / "moved-again" / "run.json").read_text().replace(str(tmp_path / "moved"), "elsewhere/run"))
    assert _run(str(tmp_path / "moved-again"), made["in"]).passes["minhash_dedup"] == "done"
    assert _bytes(str(tmp_path / "moved-again"), STEPS) == steps
