"""An input file rewritten in place (re-downloaded, appended, fixed) between runs (session 50, h218).

A finished shard's file that changed (another size, or version: modification time locally, ETag on
S3) is refused on a plain rerun, as before. ``--force`` redid every pass's every shard: 10,000
filter shards for one file fixed in a crawl of 10,000. A shard of the filter pass reads its own file
and the config alone, so now ``--force`` redoes the rewritten files' shards (their old outputs
cleared first, after the later passes' outputs, which were made over them), keeps every other
finished shard, redoes dedup and tokens from their start, and ends with a clean run's outputs.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from test_input_grows import (LIGHT, V0_8_11, _corpus, _light, _outcomes, _outputs, _records, _run, _timeless,
                              _write_input)

from refinery.config import parse_config
from refinery.io import fs
from refinery.pipeline import run_pipeline
from refinery.plan import RerunError
from refinery.status import run_status

#: one cheap stage and a dedup pass that reads every shard (exact copies across files, see _write_input)
DEDUP = LIGHT | {"dedup": [{"method": "exact"}]}
REFUSED = (r"rerun with --force to run 'filter' on the rewritten files only \(its other finished shards are kept\) "
           r"and redo the passes after it, or choose a new --output")


def _rewrite(path: Path, rows: int = 20) -> None:
    """The file fixed in place: its first ``rows`` documents (another size)."""
    pq.write_table(pq.read_table(path).slice(0, rows), path)


def _tables(out: Path) -> dict[str, object]:
    """Every table of every pass (kept, removed, samples; the dedup index aside) and the funnel."""
    return _outputs(out) | {"stats": _timeless(json.loads((out / "stats.json").read_text()))}


def _kept_files(out: Path) -> dict[str, tuple[int, bytes]]:
    """The filter pass's kept shards and stats markers: (modification time, bytes)."""
    return {f"{d}/{f.name}": (f.stat().st_mtime_ns, f.read_bytes())
            for d in ("kept", "stats") for f in (out / "filter" / d).iterdir()}


def test_a_file_rewritten_in_place_redoes_its_own_shard_and_the_outputs_equal_a_clean_run(tmp_path, cli):
    src, out = tmp_path / "in", tmp_path / "run"
    paths = _write_input(src)
    _run(src, out)
    before = _kept_files(out)
    _rewrite(paths[1])
    line = ("  input changed since this run read it: 1 file(s) rewritten (part-1.parquet), not reflected in its "
            "outputs; rerun with --force to run 'filter' on the rewritten files only (its other finished shards are "
            "kept) and redo the passes after it")  # (it said "redo every pass")
    code, stdout, _ = cli("status", out)
    assert code == 0 and line in stdout.splitlines(), stdout
    with pytest.raises(RerunError, match=rf"input file {re.escape(str(src / 'part-1.parquet'))} changed since its "
                                         rf"shard was processed \([\d,]+ -> [\d,]+ bytes\); {REFUSED}"):
        _run(src, out)
    summary = _run(src, out, force=True)
    # its shard alone (all four on the code before), and every pass after the filter pass
    assert _outcomes(summary) == {"part-0": "skipped", "part-1": "done", "part-2": "skipped", "part-3": "skipped"}
    assert summary.passes == {"filter": "done", "exact_dedup": "done", "tokens": "done"}
    after = _kept_files(out)
    assert {k: v for k, v in after.items() if "part-1" not in k} == {k: v for k, v in before.items() if "part-1" not in k}
    assert after["kept/part-1.parquet"] != before["kept/part-1.parquet"]
    # every table and token file, the funnel, input_files.json, run.json, passes/*.json: a clean run's
    records, outputs = _records(out), _outputs(out)
    _run(src, tmp_path / "clean")
    assert outputs == _outputs(tmp_path / "clean") and records == _records(tmp_path / "clean")
    assert _run(src, out).passes == {"filter": "skipped", "exact_dedup": "skipped", "tokens": "skipped"}
    assert run_status(str(out), check_input=True).input_changes is None


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(input, run, clean run): a finished run with a dedup pass over four files, then the first
    one rewritten in place (its first 20 documents of 30), and a clean run over the input so."""
    tmp = tmp_path_factory.mktemp("rewritten")
    src = tmp / "in"
    paths = _write_input(src)
    _light(src, tmp / "run", DEDUP)
    _rewrite(paths[0])
    _light(src, tmp / "clean", DEDUP)
    return src, tmp / "run", tmp / "clean"


def _killed_at(monkeypatch, out: Path | str, op: str, target: str) -> None:
    """Stop the process (Ctrl-C) right before its first ``op`` of ``OUT/target`` (a storage call
    that changes the run directory), whatever it was doing: nothing after it is written."""
    for name in ("delete", "delete_tree", "atomic_output"):
        real = getattr(fs, name)

        def call(uri, *args, _real=real, _name=name, **kw):
            if _name == op and str(uri) == fs.join(str(out), target):
                raise KeyboardInterrupt
            return _real(uri, *args, **kw)

        monkeypatch.setattr(fs, name, call)


@pytest.mark.parametrize("op, target, plain_resumes", [
    # the later passes cleared (the corpus gone) and the filter pass's marker, the rewritten shard still finished
    ("delete", "filter/stats/part-0.json", False),
    ("delete", "filter/kept/part-0.parquet", True),  # the rewritten shard's marker gone: unfinished
    ("atomic_output", "run.json", True),  # the plan half written: input_files.json records the new file
], ids=["pass-marker-gone", "shard-marker-gone", "plan-half-written"])
def test_a_forced_run_stopped_between_its_steps_leaves_no_old_funnel_and_ends_as_a_clean_run(
        rewritten, tmp_path, monkeypatch, op, target, plain_resumes):
    """A forced run stopped (Ctrl-C, SIGKILL, a storage error) at each step of clearing a
    rewritten file's shard: nothing finished is left over the old content, the same command ends
    the run once the shard is unfinished and refuses the file before, and --force then ends it,
    each time with a clean run's tables. OUT/stats.json, the funnel of the outputs being cleared,
    went after them: a stop in between left the old funnel over no corpus (a review, h226)."""
    src, run, clean = rewritten
    out = tmp_path / "run"
    shutil.copytree(run, out)
    with monkeypatch.context() as patched:
        _killed_at(patched, out, op, target)
        with pytest.raises(KeyboardInterrupt):
            _light(src, out, DEDUP, force=True)
    assert not (out / "stats.json").exists()  # (it stayed until the rewritten shard's files went)
    assert not (out / "exact_dedup").exists() and not list((out / "kept").glob("*.parquet"))
    if plain_resumes:
        resumed = _light(src, out, DEDUP)  # no --force: nothing finished is left over the old content
        assert _outcomes(resumed) == {"part-0": "done", "part-1": "skipped", "part-2": "skipped", "part-3": "skipped"}
    else:
        with pytest.raises(RerunError, match=rf"input file {re.escape(str(src / 'part-0.parquet'))} changed"):
            _light(src, out, DEDUP)
        assert _outcomes(_light(src, out, DEDUP, force=True))["part-0"] == "done"
    assert _tables(out) == _tables(clean)
    assert set(_light(src, out, DEDUP).passes.values()) == {"skipped"}


def test_a_rewritten_file_whose_shard_now_fails_stops_the_forced_run_and_resumes_once_fixed(rewritten, tmp_path):
    """A forced run whose rewritten file fails its shard stops with the later passes cleared and
    no old content finished; the file fixed, the same command resumes to a clean run's tables."""
    from _fault_fixtures import write_parquet_with_a_damaged_page

    src, out = tmp_path / "in", tmp_path / "run"
    paths = _write_input(src)
    _light(src, out, DEDUP)
    _rewrite(paths[0])  # as in the clean run's input
    write_parquet_with_a_damaged_page(paths[2])  # rewritten too, and its shard now fails
    stopped = _light(src, out, DEDUP, force=True)
    assert _outcomes(stopped) == {"part-0": "done", "part-1": "skipped", "part-2": "failed", "part-3": "skipped"}
    assert stopped.passes == {"filter": "failed", "exact_dedup": "blocked"}
    assert not (out / "exact_dedup").exists() and not list((out / "kept").glob("*.parquet"))
    shutil.copy2(rewritten[0] / "part-2.parquet", paths[2])  # fixed: its unfinished shard simply reads it
    resumed = _light(src, out, DEDUP)
    assert _outcomes(resumed) == {"part-0": "skipped", "part-1": "skipped", "part-2": "done", "part-3": "skipped"}
    assert _tables(out) == _tables(rewritten[2])


def test_a_forced_launch_over_a_rewritten_file_redoes_the_passes_after_the_document_pass(rewritten, tmp_path):
    """The forced shares of a multi-instance launch (``run_pipeline(force=True, only_shards=...,
    launch=...)``) redo every shard of the document pass, and no share runs the passes after it:
    their markers, whose fingerprints do not change with a file's content, stayed, and the
    launch's later step skipped the dedup pass over the old file's documents (the closing share
    failed to reconcile the funnel, or, with as many documents, the corpus kept them; a review,
    h226). Now a share that redoes the pass clears them first, as a forced run of the whole plan
    does; a share retried after the launch's later step keeps them."""
    src, run, clean = rewritten
    out = tmp_path / "run"
    shutil.copytree(run, out)

    def share(shards: set[str]):
        return _light(src, out, DEDUP, force=True, only_passes=["filter"], only_shards=shards, launch="launch-1")

    assert share({"part-0", "part-1"}).passes["filter"] == "partial"
    assert not (out / "passes" / "exact_dedup.json").exists() and not list((out / "kept").glob("*.parquet"))
    assert share({"part-2", "part-3"}).passes["filter"] == "done"  # the last share closes the pass
    assert _light(src, out, DEDUP, only_passes=["exact_dedup"]).passes["exact_dedup"] == "done"  # the later step
    assert _tables(out) == _tables(clean)
    assert share({"part-0", "part-1"}).passes["filter"] == "skipped"  # retried: this launch's work is kept
    assert (out / "passes" / "exact_dedup.json").exists() and _tables(out) == _tables(clean)


def test_a_later_pass_changed_with_a_file_rewritten_redoes_its_shard_not_the_others(rewritten, tmp_path):
    """--force for a dedup setting redid every filter shard when a finished shard's file had changed."""
    src, out = rewritten[0], tmp_path / "run"
    shutil.copytree(rewritten[1], out)
    other = DEDUP | {"dedup": [{"method": "exact", "minhash": {"seed": 3}}]}
    with pytest.raises(RerunError, match="exact_dedup"):
        _light(src, out, other)
    summary = _light(src, out, other, force=True)
    assert _outcomes(summary) == {"part-0": "done", "part-1": "skipped", "part-2": "skipped", "part-3": "skipped"}
    _light(src, tmp_path / "clean", other)
    assert _tables(out) == _tables(tmp_path / "clean")


def test_status_names_no_file_rewritten_before_its_shard_finished(tmp_path):
    """A file whose shard never finished may change: the same command reads it as it is. `status`
    named it as rewritten, and said --force would redo every pass."""
    from _fault_fixtures import write_parquet_with_a_damaged_page

    src, out = tmp_path / "in", tmp_path / "run"
    paths = _write_input(src)
    write_parquet_with_a_damaged_page(paths[3])  # its shard fails
    spec = LIGHT | {"executor": {"max_failed_fraction": 0.3}}
    _light(src, out, spec)
    _write_input(tmp_path / "fixed")
    (tmp_path / "fixed" / "part-3.parquet").replace(paths[3])
    assert run_status(str(out), check_input=True).input_changes is None
    assert run_status(str(out), counts=False, check_input=True).input_changes is None
    _rewrite(paths[0])  # a finished one: named, as by the pass's own listing when counts are not read
    for counts in (True, False):
        changes = run_status(str(out), counts=counts, check_input=True).input_changes
        assert changes == {"added": [], "removed": [], "changed": ["part-0.parquet"], "removed_unfinished": []}
    assert _outcomes(_light(src, out, spec, force=True)) == {"part-0": "done", "part-1": "skipped",
                                                            "part-2": "skipped", "part-3": "done"}


def _s3_table(uri: str) -> list[dict]:
    return pq.read_table(io.BytesIO(fs.read_bytes(uri))).drop_columns(["source"]).to_pylist()


def test_on_s3_a_file_rewritten_with_the_same_size_redoes_its_own_shard(s3_bucket, cli, monkeypatch):
    """On S3 a file's version is its ETag: a file rewritten with the same size is told by it. A
    forced run stopped once the corpus is cleared leaves no funnel (it left the old one, h226)."""
    src, out, clean = f"{s3_bucket}/in", f"{s3_bucket}/run", f"{s3_bucket}/clean"
    lines = [json.dumps({"id": f"d{k}-{n}", "text": f"Document {n} of file {k} reads: " + "the library opens at "
                         f"nine on weekdays and at ten on weekends, for everyone in the town. " * (n + 2)}) + "\n"
             for k in range(3) for n in range(4)]
    for k in range(3):
        fs.write_bytes(f"{src}/part-{k}.jsonl", "".join(lines[4 * k:4 * k + 4]).encode())
    run = _s3_run(src, out)
    assert not run.failed_pass
    markers = {k: fs.read_bytes(f"{out}/filter/stats/part-{k}.json") for k in (0, 2)}
    data = fs.read_bytes(f"{src}/part-1.jsonl")
    fs.write_bytes(f"{src}/part-1.jsonl", data.replace(b"nine on weekdays", b"NINE on weekdays", 1))
    assert len(fs.read_bytes(f"{src}/part-1.jsonl")) == len(data)
    code, stdout, _ = cli("status", out)
    assert code == 0 and "1 file(s) rewritten (part-1.jsonl)" in stdout and "rewritten files only" in stdout, stdout
    with monkeypatch.context() as patched:
        _killed_at(patched, out, "delete", "passes/filter.json")
        with pytest.raises(KeyboardInterrupt):
            _s3_run(src, out, force=True)
    assert not fs.exists(f"{out}/stats.json") and not fs.list_files_if_any(f"{out}/kept")
    with pytest.raises(RerunError, match=rf"input file {src}/part-1.jsonl changed since its shard was processed "
                                         rf"\(rewritten with the same size, {len(data):,} bytes\); {REFUSED}"):
        _s3_run(src, out)
    summary = _s3_run(src, out, force=True)
    assert _outcomes(summary) == {"part-0": "skipped", "part-1": "done", "part-2": "skipped"}
    assert {k: fs.read_bytes(f"{out}/filter/stats/part-{k}.json") for k in (0, 2)} == markers  # kept as they were
    _s3_run(src, clean)
    for directory in ("kept", "exact_dedup/removed", "filter/removed", "filter/kept"):
        for k in range(3):
            name = f"{directory}/part-{k}.parquet"
            assert _s3_table(f"{out}/{name}") == _s3_table(f"{clean}/{name}"), name
    assert any("NINE" in r["text"] for r in _s3_table(f"{out}/kept/part-1.parquet"))
    assert _timeless(json.loads(fs.read_bytes(f"{out}/stats.json"))) == _timeless(json.loads(fs.read_bytes(f"{clean}/stats.json")))


def _s3_run(src: str, out: str, **kw):
    spec = DEDUP | {"stages": [{"type": "gopher_quality", "params": {"min_words": 5}}]}
    return run_pipeline(parse_config(spec), src, out, workers=1, progress=False, **kw)


def test_a_run_made_by_0_8_11_redoes_only_its_rewritten_file(tmp_path, tmp_path_factory):
    from _old_code import archived_package, run_with

    old_code = archived_package(tmp_path_factory, V0_8_11, "v0811")
    src, out = tmp_path / "in", tmp_path / "run"
    paths = _write_input(src)
    run_with(old_code, LIGHT, src, out, tmp_path)
    markers = {f.name: f.read_bytes() for f in (out / "stats").glob("*.json")}
    _rewrite(paths[2])
    with pytest.raises(RerunError, match=r"part-2.parquet changed since its shard was processed \([\d,]+ -> [\d,]+ "
                                         r"bytes\); rerun with --force to run 'filter' on the rewritten files only "
                                         r"\(its other finished shards are kept\), or choose"):
        _light(src, out)  # (one pass: none after it to redo)
    summary = _light(src, out, force=True)
    assert _outcomes(summary) == {"part-0": "skipped", "part-1": "skipped", "part-2": "done", "part-3": "skipped"}
    assert {f.name: f.read_bytes() for f in (out / "stats").glob("*.json") if f.name != "part-2.json"} == \
        {k: v for k, v in markers.items() if k != "part-2.json"}
    _light(src, tmp_path / "clean")
    assert _corpus(out) == _corpus(tmp_path / "clean")
