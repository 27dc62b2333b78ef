"""A dedup pass of a recipe fingerprints what its method reads, not the whole ``dedup`` section:
a MinHash threshold without verification, or a MinHash setting for a URL pass, neither re-runs
nor refuses a pass it cannot change. Runs made before (whole sections fingerprinted) resume in
their own terms: made here by the code of before, from the repository's history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _old_code import archived_package, run_with
from _scale_fixtures import write_dedup_input

import refinery
from refinery.config import parse_config
from refinery.pipeline import run_pipeline
from refinery.plan import RerunError

ROOT = Path(__file__).resolve().parents[1]
#: the last commit whose recipe runs fingerprinted each dedup pass's whole section
WHOLE_SECTION_COMMIT = "10a536aa0e4ac106fe7f806b2e8b951c77171349"

RECIPE = {
    "name": "dedup-fingerprint",
    "reader": {"batch_size": 100},
    "stages": [{"type": "gopher_quality", "params": {"min_words": 20}}],
    "dedup": [{"method": "url"}, {"method": "minhash", "minhash": {"verify": False}}],
}


def _recipe(partitions: int | None = None, batch_size: int | None = None, **minhash) -> dict:
    spec = json.loads(json.dumps(RECIPE))
    spec["dedup"][1]["minhash"].update(minhash)
    if partitions:
        spec["dedup"][1]["partitions"] = partitions
    if batch_size:
        spec["dedup"][1]["batch_size"] = batch_size
    return spec


def _run(spec: dict, inp: Path, out: Path, force: bool = False):
    return run_pipeline(parse_config(spec), str(inp), str(out), workers=1, progress=False, force=force)


def _mtimes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


@pytest.fixture()
def dup_input(tmp_path: Path) -> Path:
    write_dedup_input(tmp_path / "in", copies=25)
    return tmp_path / "in"


@pytest.fixture(scope="module")
def old_code(tmp_path_factory) -> Path:
    """The package of :data:`WHOLE_SECTION_COMMIT` under today's version number."""
    return archived_package(tmp_path_factory, WHOLE_SECTION_COMMIT, "old-code")


def _old_run(old_code: Path, spec: dict, inp: Path, out: Path) -> None:
    """Run ``spec`` with the code of before, in a process that imports it (not this checkout)."""
    run_with(old_code, spec, inp, out, cwd=old_code)


def test_a_run_that_fingerprinted_whole_sections_resumes_with_every_shard_skipped(old_code, dup_input, tmp_path):
    out = tmp_path / "out"
    _old_run(old_code, RECIPE, dup_input, out)
    recorded = json.loads((out / "run.json").read_text())["passes"]
    assert "batch_size" in recorded[1]["params"] and "substring" in recorded[2]["params"]  # the old shape
    before = _mtimes(out)
    again = _run(RECIPE, dup_input, out)
    assert again.passes == {"filter": "skipped", "url_dedup": "skipped", "minhash_dedup": "skipped"}
    # a pass stopped before its marker (killed at its end): its index steps and shards are skipped too
    (out / "passes" / "minhash_dedup.json").unlink()
    before = _mtimes(out)
    again = _run(RECIPE, dup_input, out)
    assert again.passes["minhash_dedup"] == "done"
    after = _mtimes(out)
    made = [k for k in after if k.startswith(("minhash_dedup/index/passes/", "minhash_dedup/stats/"))]
    assert made and all(after[k] == before[k] for k in made)
    assert json.loads((out / "run.json").read_text())["passes"] == recorded  # still in its own terms


def test_an_old_run_resumes_after_a_change_its_method_does_not_read(old_code, dup_input, tmp_path):
    out = tmp_path / "out"
    _old_run(old_code, RECIPE, dup_input, out)
    # without verification the threshold is read by nothing; batch size and partitions decide no removal
    unread = _recipe(threshold=0.9, verify_slots=64)
    unread["dedup"][0].update({"batch_size": 7, "partitions": 3})
    assert set(_run(unread, dup_input, out).passes.values()) == {"skipped"}
    # a MinHash setting leaves the URL pass before it alone: only the MinHash pass is refused...
    with pytest.raises(RerunError, match=r"'minhash_dedup' pass: minhash\.ngram 5 -> 7;"):
        _run(_recipe(ngram=7), dup_input, out)
    url_files = {k: v for k, v in _mtimes(out).items() if k.startswith("url_dedup/")}
    # ... and redone with --force, the URL pass is skipped
    forced = _run(_recipe(ngram=7), dup_input, out, force=True)
    assert forced.passes == {"filter": "skipped", "url_dedup": "skipped", "minhash_dedup": "done"}
    assert {k: v for k, v in _mtimes(out).items() if k.startswith("url_dedup/")} == url_files
    # a change the URL pass reads (its hash seed) is still refused
    seeded = _recipe(ngram=7)
    seeded["dedup"][0]["minhash"] = {"seed": 3}
    with pytest.raises(RerunError, match=r"'url_dedup' pass: minhash\.seed 0 -> 3;"):
        _run(seeded, dup_input, out)
    # turning verification on makes its threshold count
    with pytest.raises(RerunError, match=r"'minhash_dedup' pass: minhash\.verify False -> True"):
        _run(_recipe(ngram=7, verify=True), dup_input, out)


def test_a_new_run_fingerprints_what_each_method_reads(dup_input, tmp_path):
    out = tmp_path / "out"
    _run(RECIPE, dup_input, out)
    params = {p["name"]: p["params"] for p in json.loads((out / "run.json").read_text())["passes"]}
    assert params["url_dedup"] == {"method": "url", "minhash": {"seed": 0}}
    assert "threshold" not in params["minhash_dedup"]["minhash"] and "lines" not in params["minhash_dedup"]
    assert set(_run(_recipe(threshold=0.9), dup_input, out).passes.values()) == {"skipped"}
    with pytest.raises(RerunError, match=r"'minhash_dedup' pass: minhash\.bands 14 -> 12;"):
        _run(_recipe(bands=12), dup_input, out)
    forced = _run(_recipe(bands=12), dup_input, out, force=True)
    assert forced.passes == {"filter": "skipped", "url_dedup": "skipped", "minhash_dedup": "done"}


def test_what_the_fingerprints_leave_out_changes_no_removal(dup_input, tmp_path):
    """The settings no method but decontamination and substring reads (partitions, batch size),
    and the threshold without verification: another run with them changed removes the same documents."""
    import pyarrow.parquet as pq

    def kept(out: Path) -> dict[str, list]:
        return {f.name: pq.read_table(f, columns=["id", "text"]).to_pylist() for f in sorted((out / "kept").glob("*.parquet"))}

    _run(RECIPE, dup_input, tmp_path / "a")
    other = _recipe(threshold=0.95, verify_slots=32, partitions=3, batch_size=7)
    other["dedup"][0].update({"batch_size": 7, "partitions": 2})
    _run(other, dup_input, tmp_path / "b")
    assert kept(tmp_path / "a") == kept(tmp_path / "b")
    removed = json.loads((tmp_path / "a" / "stats.json").read_text())
    assert removed["docs_removed"] > 0


@pytest.fixture(scope="module")
def old_release(tmp_path_factory) -> Path:
    """The ``refinery`` package of :data:`WHOLE_SECTION_COMMIT` under its own version (0.8.1)."""
    return archived_package(tmp_path_factory, WHOLE_SECTION_COMMIT, "old-release", todays_version=False)


def test_a_standalone_dedup_made_by_another_refinery_is_refused_not_redone_silently(old_release, dup_input, tmp_path):
    """`refinery run` refuses a run made by another refinery (`code.refinery`); a standalone
    `refinery dedup` fingerprints its index with the version too, so after an upgrade the same
    command redid the whole index and removal run without a word (hours on a real corpus)."""
    from typer.testing import CliRunner

    from refinery.cli import app

    out = tmp_path / "dedup"
    env = os.environ | {"PYTHONPATH": str(old_release)}
    made = subprocess.run([sys.executable, "-m", "refinery.cli", "dedup", str(dup_input), "-o", str(out),
                           "--workers", "1"], cwd=old_release, env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-3000:]
    made_by = json.loads((out / "run.json").read_text())["refinery_version"]
    assert made_by != refinery.__version__
    before = _mtimes(out)
    res = CliRunner().invoke(app, ["dedup", str(dup_input), "-o", str(out), "--workers", "1"])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert f"code.refinery '{made_by}' -> '{refinery.__version__}'" in res.output and "--force" in res.output, res.output
    assert _mtimes(out) == before  # nothing redone, nothing written
    # another setting as well: both named
    res = CliRunner().invoke(app, ["dedup", str(dup_input), "-o", str(out), "--workers", "1", "--ngram", "7"])
    assert "minhash.ngram 5 -> 7; code.refinery" in res.output, res.output
    # --force redoes it; the same command then skips every pass
    assert CliRunner().invoke(app, ["dedup", str(dup_input), "-o", str(out), "--workers", "1", "--force"]).exit_code == 0
    assert json.loads((out / "run.json").read_text())["refinery_version"] == refinery.__version__
    redone = _mtimes(out)
    assert CliRunner().invoke(app, ["dedup", str(dup_input), "-o", str(out), "--workers", "1"]).exit_code == 0
    assert {k: v for k, v in _mtimes(out).items() if "/passes/" in k or k.startswith("kept/")} == \
        {k: v for k, v in redone.items() if "/passes/" in k or k.startswith("kept/")}


def test_a_standalone_dedup_made_with_another_rensa_is_refused_naming_it(dup_input, tmp_path):
    """A standalone MinHash index is fingerprinted with rensa's version, so after a rensa upgrade
    the same command redid the index and removals without a word (a review); run.json now records
    the method's libraries and a rerun names the change, as it names refinery's own version."""
    from typer.testing import CliRunner

    from refinery.cli import app
    from refinery.plan import library_version

    out = tmp_path / "dedup"
    args = ["dedup", str(dup_input), "-o", str(out), "--workers", "1"]
    assert CliRunner().invoke(app, args).exit_code == 0
    record = json.loads((out / "run.json").read_text())
    assert record["code"] == {"rensa": library_version("rensa")}
    record["code"]["rensa"] = "0.0.1"  # as an older rensa recorded it
    (out / "run.json").write_text(json.dumps(record))
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert f"code.rensa '0.0.1' -> '{library_version('rensa')}'" in res.output and "--force" in res.output, res.output
    assert CliRunner().invoke(app, [*args, "--force"]).exit_code == 0
    assert CliRunner().invoke(app, args).exit_code == 0  # recorded anew: resumes
