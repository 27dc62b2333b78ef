"""An input that grows (or loses files) between runs (session 49, h202; found by h197).

A user adds WARCs to a run's input and reruns. The rerun is refused, naming the new files; with
``--force`` it redid every shard of the filter pass (3 finished of 4 for 1 new file), though each
shard reads its own file and the config alone. Now ``--force`` keeps the finished shards of the
files still there, runs the filter pass on the new files only, redoes the passes that read the
whole corpus (dedup, tokens) from their start, and ends with the outputs of a clean run over the
grown input. ``refinery status`` of a finished run whose input has changed says so in one line.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.config import parse_config
from refinery.pipeline import run_pipeline
from refinery.plan import RerunError
from refinery.status import run_status

ROOT = Path(__file__).resolve().parents[1]
CC_DOCS = ROOT / "data" / "sample" / "cc_docs" / "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"

#: cheap stages, a dedup pass that reads every shard, and tokens
SPEC = {"name": "grows", "stages": [{"type": "gopher_quality", "params": {"min_words": 20}}],
        "dedup": [{"method": "exact"}], "tokenize": {"tokenizer": "gpt2"}}


def _write_input(src: Path) -> list[Path]:
    """Four Parquet shards of 30 real documents each; the last one also holds exact copies (new
    ids) of 8 documents of the first, so the dedup pass over the grown input removes documents
    across an old and a new shard."""
    docs = [json.loads(line) for line in gzip.open(CC_DOCS, "rt", encoding="utf-8")]
    rows = [{"id": str(d["id"]), "url": (d.get("metadata") or {}).get("url"), "text": d["text"]} for d in docs]
    src.mkdir(parents=True)
    shards = [rows[k * 30:(k + 1) * 30] for k in range(4)]
    shards[3] += [{**r, "id": f"copy-{r['id']}"} for r in shards[0] if len(r["text"].split()) > 50][:8]
    paths = []
    for k, shard in enumerate(shards):
        paths.append(src / f"part-{k}.parquet")
        pq.write_table(pa.Table.from_pylist(shard), paths[-1])
    return paths


def _outputs(out: Path) -> dict[str, object]:
    """Every Parquet table and token file of a run (its dedup index aside), by path under it; the
    ``source`` column (the input file's path) by file name, as runs over copies of the input differ there."""
    def content(f: Path) -> object:
        if f.suffix != ".parquet":
            return f.read_bytes()
        table = pq.read_table(f)
        if "source" in table.column_names:
            names = [None if s is None else Path(s).name for s in table.column("source").to_pylist()]
            table = table.set_column(table.column_names.index("source"), "source", pa.array(names, pa.string()))
        return table.schema, table.to_pylist()

    return {str(f.relative_to(out)): content(f) for f in sorted(out.rglob("*"))
            if f.suffix in (".parquet", ".bin", ".idx") and "index" not in f.relative_to(out).parts}


def _timeless(obj):
    """A record without its timings (seconds, wall_seconds, finished_at)."""
    if isinstance(obj, dict):
        return {k: _timeless(v) for k, v in obj.items() if "seconds" not in k and not k.endswith("_at")}
    if isinstance(obj, list):
        return [_timeless(x) for x in obj]
    return obj


def _records(out: Path) -> dict[str, object]:
    """The run's records that describe its input and outputs, without timings or its own place."""
    run = json.loads((out / "run.json").read_text())
    return {"stats": _timeless(json.loads((out / "stats.json").read_text())),
            "input_files": json.loads((out / "input_files.json").read_text()),
            "run": {k: run[k] for k in ("shards", "passes", "input") if k != "passes"}
            | {"fingerprints": [p["fingerprint"] for p in run["passes"]]},
            "passes": {f.name: _timeless(json.loads(f.read_text())) for f in sorted((out / "passes").glob("*.json"))}}


def _run(src: Path, out: Path, **kw):
    return run_pipeline(parse_config(SPEC), str(src), str(out), workers=1, progress=False, **kw)


@pytest.fixture()
def grown(tmp_path):
    """A finished run over the first three files, then the fourth added to its input."""
    src = tmp_path / "in"
    paths = _write_input(src)
    aside = tmp_path / paths[3].name
    paths[3].rename(aside)
    out = tmp_path / "run"
    _run(src, out)
    aside.rename(paths[3])
    return src, out, paths


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """The outputs of clean runs over the first three files and over all four (their own copy of
    the input: the outputs do not depend on where it lies)."""
    tmp = tmp_path_factory.mktemp("clean")
    paths = _write_input(tmp / "in")
    made = {"all": tmp / "all", "first3": tmp / "first3"}
    _run(tmp / "in", made["all"])
    paths[3].unlink()
    _run(tmp / "in", made["first3"])
    return {name: _outputs(out) for name, out in made.items()}


def test_a_file_added_is_filtered_alone_and_the_outputs_equal_a_clean_run(grown, tmp_path, clean, monkeypatch):
    from refinery.io import fs

    src, out, _ = grown
    old = {f.name: f.stat().st_mtime_ns for f in (out / "filter" / "kept").glob("*.parquet")}
    with pytest.raises(RerunError, match=r"input files changed since the run was made \(added part-3.parquet\); "
                       r"rerun with --force to run 'filter' on the new files only \(its finished shards are kept\) "
                       r"and redo the passes after it"):
        _run(src, out)
    reads: list[str] = []
    monkeypatch.setattr(fs, "read_bytes", lambda u, read=fs.read_bytes: reads.append(u) or read(u))
    summary = _run(src, out, force=True)
    monkeypatch.undo()
    # each finished shard's marker read once, to give it the new fingerprint: the filter pass takes
    # it from there to skip the shard and to close (three reads each before, session 50, h210)
    assert sorted(Path(u).name for u in reads if "/filter/stats/" in u) == [f"part-{k}.json" for k in range(3)]
    # the filter pass ran the new file's shard alone (it ran all 4 on the code before)
    assert {o.name: o.status for o in summary.outcomes} == {"part-0": "skipped", "part-1": "skipped",
                                                            "part-2": "skipped", "part-3": "done"}
    assert summary.passes == {"filter": "done", "exact_dedup": "done", "tokens": "done"}
    assert {f.name: f.stat().st_mtime_ns for f in (out / "filter" / "kept").glob("*.parquet") if f.name in old} == old
    # the dedup pass was redone over the whole input: copies in the new shard of old documents go
    removed = pq.read_table(out / "exact_dedup" / "removed" / "part-3.parquet").column("id").to_pylist()
    assert removed and all(i.startswith("copy-") for i in removed)
    assert _outputs(out) == clean["all"]  # kept, removed, samples of every pass, token shards
    # the funnel, input_files.json, run.json, passes/*.json: a clean run's over the same input
    records = _records(out)
    shutil.rmtree(out)
    _run(src, out)
    assert records == _records(out)
    assert run_status(str(out), check_input=True).input_changes is None


def test_files_removed_keep_the_other_shards_and_a_rewritten_one_redoes_its_own(grown, tmp_path, clean):
    src, out, paths = grown
    _run(src, out, force=True)
    paths[3].rename(tmp_path / paths[3].name)  # a finished shard's file removed: still needs --force
    # what --force does, said for files removed (it said "run 'filter' on the new files only", none added)
    with pytest.raises(RerunError, match=r"\(removed part-3.parquet\); rerun with --force to drop the removed files' "
                                         r"shards from 'filter' \(its other finished shards are kept\) and redo the "
                                         r"passes after it, or choose a new --output"):
        _run(src, out)
    summary = _run(src, out, force=True)
    assert not [o for o in summary.outcomes if o.status == "done"]  # its shard dropped, none redone
    assert not list(out.rglob("part-3.*"))
    assert _outputs(out) == clean["first3"]
    # a file added while another was rewritten: the rewritten file's shard is redone with the new
    # one's, the other finished shards kept (--force redid every shard, session 50, h218)
    (tmp_path / paths[3].name).rename(paths[3])
    table = pq.read_table(paths[0])
    pq.write_table(table.slice(0, 20), paths[0])
    with pytest.raises(RerunError, match=r"\(added part-3.parquet; rewritten part-0.parquet\); rerun with --force to "
                                         r"run 'filter' on the new and rewritten files only \(its other finished "
                                         r"shards are kept\) and redo the passes after it"):
        _run(src, out)
    summary = _run(src, out, force=True)
    assert _outcomes(summary) == {"part-0": "done", "part-1": "skipped", "part-2": "skipped", "part-3": "done"}
    records = _records(out)
    _run(src, tmp_path / "clean")
    assert _outputs(out) == _outputs(tmp_path / "clean") and records == _records(tmp_path / "clean")


def test_a_finished_shard_damaged_before_the_input_grew_is_redone_too(grown, clean):
    src, out, _ = grown
    kept = out / "filter" / "kept" / "part-1.parquet"
    kept.write_bytes(kept.read_bytes()[:100])  # cut short (a partial sync)
    summary = _run(src, out, force=True)
    assert sorted(o.name for o in summary.outcomes if o.status == "done") == ["part-1", "part-3"]
    assert _outputs(out) == clean["all"]


def test_status_of_a_finished_run_names_the_files_its_input_gained(grown, cli):
    src, out, _ = grown
    code, stdout, _ = cli("status", out)
    assert code == 0  # complete over what it read
    assert ("  input changed since this run read it: 1 file(s) added (part-3.parquet), not reflected in its outputs; "
            "rerun with --force to run 'filter' on the new files only (its finished shards are kept) and redo the "
            "passes after it") in stdout.splitlines(), stdout
    code, stdout, _ = cli("status", "--json", out)
    assert json.loads(stdout)["input_changes"] == {"added": ["part-3.parquet"], "removed": [], "changed": [],
                                                   "removed_unfinished": []}
    shutil.rmtree(src)  # an input that is gone: nothing said, status still answers
    code, stdout, _ = cli("status", out)
    assert code == 0 and "input changed" not in stdout


#: one cheap pass: what keeping the filter pass's shards does, without dedup and tokens to redo
LIGHT = {"name": "grows", "stages": [{"type": "gopher_quality", "params": {"min_words": 20}}]}
#: refinery 0.8.11 (session 49's last commit): kept shards' markers rewritten under the new fingerprint
V0_8_11 = "05d52998d8b750cf366796c442e905d2d76721fe"


def _light(src: Path, out: Path, spec: dict | None = None, **kw):
    return run_pipeline(parse_config(spec or LIGHT), str(src), str(out), workers=1, progress=False, **kw)


def _outcomes(summary) -> dict[str, str]:
    return {o.name: o.status for o in summary.outcomes}


def _corpus(out: Path) -> dict[str, object]:
    """The run's kept and removed tables and its funnel (without timings)."""
    tables = {str(f.relative_to(out)): pq.read_table(f).drop_columns(["source"]).to_pylist()
              for f in sorted(out.glob("*/*.parquet")) if f.parent.name in ("kept", "removed")}
    return tables | {"stats": _timeless(json.loads((out / "stats.json").read_text()))}


def test_kept_shards_keep_their_markers_and_a_forced_run_stopped_resumes_with_them(tmp_path):
    """h202 rewrote each kept shard's marker under the new fingerprint: a GET and a PUT a shard in
    the driver, one after another (10,000 of each for a crawl of 10,000 files that grew by 100).
    Now run.json's first pass accepts the fingerprints it had ("accepts"): a forced run stopped in
    the pass (the new file fails its shard) resumes with the kept shards; the input growing again
    keeps the shards of both earlier file lists; a config changed under --force redoes every shard
    and accepts none."""
    from _fault_fixtures import write_parquet_with_a_damaged_page

    src, out = tmp_path / "in", tmp_path / "run"
    paths = _write_input(src)
    paths[3].unlink()
    _light(src, out)
    fingerprints = [json.loads((out / "run.json").read_text())["passes"][0]["fingerprint"]]
    markers = {f.name: f.read_bytes() for f in (out / "stats").glob("*.json")}
    write_parquet_with_a_damaged_page(paths[3])  # its footer reads; its shard fails
    stopped = _light(src, out, force=True)
    assert _outcomes(stopped) == {"part-0": "skipped", "part-1": "skipped", "part-2": "skipped", "part-3": "failed"}
    first = json.loads((out / "run.json").read_text())["passes"][0]
    assert first["accepts"] == fingerprints and first["fingerprint"] not in fingerprints
    fingerprints.append(first["fingerprint"])
    assert {f.name: f.read_bytes() for f in (out / "stats").glob("*.json")} == markers  # none rewritten
    _write_input(tmp_path / "fixed")
    (tmp_path / "fixed" / "part-3.parquet").replace(paths[3])  # the broken file replaced: simply read
    resumed = _light(src, out)
    assert _outcomes(resumed) == {"part-0": "skipped", "part-1": "skipped", "part-2": "skipped", "part-3": "done"}
    assert json.loads((out / "run.json").read_text())["passes"][0]["accepts"] == fingerprints[:1]
    # the input grows again: the shards kept under both earlier file lists are kept
    pq.write_table(pq.read_table(paths[0]).slice(0, 5).drop_columns(["url"]), src / "part-4.parquet")
    grown = _light(src, out, force=True)
    assert _outcomes(grown) == {f"part-{n}": "skipped" for n in range(4)} | {"part-4": "done"}
    assert json.loads((out / "run.json").read_text())["passes"][0]["accepts"] == fingerprints
    assert {f.name: f.read_bytes() for f in (out / "stats").glob("*.json") if f.name in markers} == markers
    clean = tmp_path / "clean"
    _light(src, clean)
    assert _corpus(out) == _corpus(clean)
    assert _light(src, out).passes == {"filter": "skipped"}
    # another config, forced: every shard redone under its fingerprint, no other accepted
    other = {"name": "grows", "stages": [{"type": "gopher_quality", "params": {"min_words": 25}}]}
    assert set(_outcomes(_light(src, out, other, force=True)).values()) == {"done"}
    assert "accepts" not in json.loads((out / "run.json").read_text())["passes"][0]


def test_a_run_made_by_0_8_11_keeps_its_shards_when_its_input_grows(tmp_path, tmp_path_factory):
    from _old_code import archived_package, run_with

    old_code = archived_package(tmp_path_factory, V0_8_11, "v0811")
    src, out = tmp_path / "in", tmp_path / "run"
    paths = _write_input(src)
    aside = tmp_path / paths[3].name
    paths[3].rename(aside)
    run_with(old_code, LIGHT, src, out, tmp_path)
    markers = {f.name: f.read_bytes() for f in (out / "stats").glob("*.json")}
    aside.rename(paths[3])
    with pytest.raises(RerunError, match=r"\(added part-3.parquet\)"):
        _light(src, out)
    summary = _light(src, out, force=True)
    assert _outcomes(summary) == {"part-0": "skipped", "part-1": "skipped", "part-2": "skipped", "part-3": "done"}
    assert {f.name: f.read_bytes() for f in (out / "stats").glob("*.json") if f.name in markers} == markers
    clean = tmp_path / "clean"
    _light(src, clean)
    assert _corpus(out) == _corpus(clean)


def test_status_names_the_files_its_input_lost_not_their_shards(grown, cli, tmp_path):
    """A file removed from a finished run's input is named as the file (its shard's marker names
    it), not as the shard ("1 file(s) removed (part-3)", session 49), and the line says what
    --force does with it (it said "run 'filter' on the new files only", with none added); a file
    removed before its shard finished is named by its shard, and the same command goes on
    without it, as the run does (session 50, h216)."""
    from _fault_fixtures import write_parquet_with_a_damaged_page

    src, out, paths = grown
    paths[3].unlink()  # the run never read it: input as the run read it
    assert run_status(str(out), check_input=True).input_changes is None
    paths[2].rename(tmp_path / paths[2].name)  # a finished shard's file
    line = ("  input changed since this run read it: 1 file(s) removed (part-2.parquet), not reflected in its "
            "outputs; rerun with --force to drop the removed files' shards from 'filter' (its other finished "
            "shards are kept) and redo the passes after it")
    code, stdout, _ = cli("status", out)
    assert code == 0 and line in stdout.splitlines(), stdout
    code, stdout, _ = cli("status", "--json", out)
    assert json.loads(stdout)["input_changes"] == {"added": [], "removed": ["part-2.parquet"], "changed": [],
                                                   "removed_unfinished": []}
    # the markers read by status (counts) and read for the removed shards alone: the same answer
    assert run_status(str(out), counts=False, check_input=True).input_changes == json.loads(stdout)["input_changes"]
    (tmp_path / paths[2].name).rename(paths[2])

    broken = src / "part-9.parquet"
    write_parquet_with_a_damaged_page(broken)  # its shard fails: never finished
    spec = SPEC | {"executor": {"max_failed_fraction": 0.3}}
    run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False, force=True)
    assert not (out / "filter" / "stats" / "part-9.json").exists()
    broken.unlink()
    code, stdout, _ = cli("status", out)
    assert ("  input changed since this run read it: 1 file(s) removed before their shards finished (shards "
            "part-9), none of them in its outputs; the same command goes on without them") in stdout.splitlines(), stdout
    assert set(run_pipeline(parse_config(spec), str(src), str(out), workers=1, progress=False).passes.values()) \
        <= {"done", "skipped"}
