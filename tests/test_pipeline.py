"""End to end: the RefinedWeb config over the bundled real WARCs, on the local executor."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _fault_fixtures import write_parquet_with_a_damaged_page
from warcio.archiveiterator import ArchiveIterator

from refinery.config import load_config, parse_config
from refinery.pipeline import run_pipeline
from refinery.stats.counters import check_conservation

ROOT = Path(__file__).resolve().parents[1]
WARCS = ROOT / "data" / "sample" / "warc"
CONFIG = ROOT / "configs" / "refinedweb.yaml"


def filters_config():
    """The recipe's document stages alone: a one-pass run (no dedup, no tokens)."""
    return load_config(CONFIG).model_copy(update={"dedup": [], "tokenize": None})


def _read_dir(path: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(path.glob("*.parquet"))], promote_options="permissive")


def _count_responses(path: Path) -> int:
    """Independent count of HTTP response records (warcio), stopping where the file is corrupt."""
    n = 0
    try:
        with open(path, "rb") as f:
            for record in ArchiveIterator(f):
                if record.rec_type == "response":
                    n += 1
    except Exception:  # noqa: BLE001 - a truncated file ends the count
        pass
    return n


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    summary = run_pipeline(filters_config(), str(WARCS), str(out), workers=2, progress=False)
    return out, summary


def test_demo_run_accounts_for_every_document(demo_run):
    out, summary = demo_run
    assert not summary.failed
    stats = json.loads((out / "stats.json").read_text())
    check_conservation(stats["stages"])
    kept = _read_dir(out / "kept")
    removed = _read_dir(out / "removed")
    assert stats["docs_kept"] == kept.num_rows > 0
    assert stats["docs_removed"] == removed.num_rows > 0
    assert stats["docs_read"] == kept.num_rows + removed.num_rows
    # Every response record in every file is a document (kept or removed), counted independently.
    for warc in sorted(WARCS.glob("*.warc.gz")):
        shard = warc.name[: -len(".warc.gz")]
        shard_stats = json.loads((out / "stats" / f"{shard}.json").read_text())
        assert shard_stats["docs_read"] >= _count_responses(warc), shard
    # The funnel names every stage of the config, in order, after the reader.
    assert [s["stage"] for s in stats["stages"]] == ["warc_reader"] + [s.type for s in load_config(CONFIG).stages]
    assert set(removed.column("removed_stage").to_pylist()) <= {s["stage"] for s in stats["stages"]}
    assert None not in removed.column("removed_reason").to_pylist()


def test_kept_documents_are_clean_english_text(demo_run):
    out, _ = demo_run
    kept = _read_dir(out / "kept").to_pylist()
    for doc in kept:
        assert doc["language"] == "en" and doc["language_score"] >= 0.65
        assert doc["text"] and "\n\n\n" not in doc["text"]
        # RefinedWeb removes URLs; the recipe keeps those a sentence or a code line needs
        # (extract.keep_needed_urls), never one alone on its line or in brackets
        for line in doc["text"].split("\n"):
            assert not re.fullmatch(r"\s*(?:https?://|www\.)\S+\s*", line), line
            assert not re.search(r"\((?:https?://|www\.)[^\s()]+\)", line), line
        assert doc["html"] is None  # raw HTML is not carried past extraction
        assert doc["url"] and doc["id"]
    assert len({d["id"] for d in kept}) == len(kept)


def test_truncated_warc_is_counted_not_crashed(demo_run):
    out, _ = demo_run
    removed = pq.read_table(out / "removed" / "resiliparse_clipped.parquet").to_pylist()
    stats = json.loads((out / "stats" / "resiliparse_clipped.json").read_text())
    reader = stats["stages"][0]
    assert reader["stage"] == "warc_reader"
    assert sum(reader["removed"].values()) >= 1
    assert any(r["removed_stage"] == "warc_reader" for r in removed)


def test_rerun_skips_finished_shards_and_changes_nothing(demo_run):
    out, _ = demo_run
    before = {p: p.stat().st_mtime_ns for p in (out / "kept").iterdir()}
    summary = run_pipeline(filters_config(), str(WARCS), str(out), workers=1, progress=False)
    assert {o.status for o in summary.outcomes} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in (out / "kept").iterdir()} == before
    assert not [p for p in out.rglob(".tmp-*")]  # no temporary files left behind


def test_stats_cli_prints_funnel(demo_run, cli, monkeypatch):
    out, _ = demo_run
    monkeypatch.setenv("COLUMNS", "200")
    code, printed, err = cli("stats", out)  # in this process, the real entry point (~1 s of imports saved)
    assert code == 0, err
    stats = json.loads((out / "stats.json").read_text())
    for stage in stats["stages"]:
        assert stage["stage"] in printed
        assert f"{stage['docs_out']:,}" in printed


def test_unreadable_shard_fails_alone_with_a_clear_error(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    docs = [json.loads(line) for line in gzip.open(ROOT / "data/sample/cc_docs/multiple_files_cc_en_head-0091.jsonl.gz", "rt")]
    pq.write_table(pa.table({"id": [d["id"] for d in docs], "text": [d["text"] for d in docs]}), src / "good.parquet")
    write_parquet_with_a_damaged_page(src / "broken.parquet")
    config = parse_config({"name": "t", "stages": [{"type": "gopher_quality"}]})
    summary = run_pipeline(config, str(src), str(tmp_path / "out"), workers=1, progress=False)
    status = {o.shard: o.status for o in summary.outcomes}
    assert status == {"good": "done", "broken": "failed"}
    failure = json.loads((tmp_path / "out" / "failed" / "broken.json").read_text())
    # a damaged file says so since 0c55430 ("damaged Parquet file ...: ... replace or remove it")
    assert "broken.parquet" in failure["error"] and "damaged Parquet file" in failure["error"]
    assert summary.stats["docs_read"] == len(docs)
    assert summary.stats["failed_shards"] == ["broken"]
    assert not (tmp_path / "out" / "kept" / "broken.parquet").exists()


def test_a_forced_rerun_stopped_early_leaves_no_stale_funnel(tmp_path, monkeypatch):
    """OUT/stats.json still held the old config's counts after a --force rerun stopped in its
    first pass, though the corpus it counted was already deleted (found by testing the stats)."""
    from refinery import pipeline
    from refinery.config import parse_config
    from tests._dedup_fixtures import CC_DOCS

    out = tmp_path / "out"
    config = parse_config({"name": "a", "stages": [{"type": "gopher_quality"}]})
    pipeline.run_pipeline(config, str(CC_DOCS), str(out), workers=1, progress=False)
    assert (out / "stats.json").exists()

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_documents_pass", stopped)
    other = parse_config({"name": "a", "stages": [{"type": "gopher_quality", "params": {"min_words": 10}}]})
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_pipeline(other, str(CC_DOCS), str(out), workers=1, progress=False, force=True)
    assert not (out / "stats.json").exists() and not list((out / "kept").glob("*.parquet"))


def test_the_console_script_skips_the_exit_collections_and_run_pipeline_alone_does_not(tmp_path):
    # refinery's own process (the console script) freezes the collector at exit: the exit's full
    # collections over the loaded libraries (~0.25 s) are skipped. A program calling run_pipeline
    # keeps its exit as it was (objects in cycles still finalized)
    script = f"""
import atexit, gc, sys
sys.path.insert(0, {str(ROOT)!r})
from refinery.config import parse_config
from refinery.pipeline import run_pipeline
config = parse_config({{"name": "t", "stages": [{{"type": "gopher_quality"}}]}})
run_pipeline(config, {str(ROOT / "data/sample/cc_docs")!r}, {str(tmp_path / "out")!r}, workers=1, progress=False)
atexit._run_exitfuncs()
print("frozen", gc.get_freeze_count())
from refinery.cli import main
try:
    main(["--version"], exiting=True)
except SystemExit:
    pass
atexit._run_exitfuncs()
print("frozen", gc.get_freeze_count())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    library, console = (int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("frozen "))
    assert library == 0 and console > 10_000
