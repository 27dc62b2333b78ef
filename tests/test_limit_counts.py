"""``--limit N``: what a run says it read is what it read. The readers counted the whole last batch
(and, with N a multiple of the batch size, one batch more) before the runner cut it at N: skipped
WARC records, partial pages, repaired ids and text of documents the run never used (session 51,
h225). Each reader now stops at N itself."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.config import parse_config
from refinery.pipeline import run_pipeline
from refinery.runner import ReaderOptions, ShardRunner, ShardTask
from refinery.stages.url_filter import UrlFilter
from tests.test_warc import cut_body_warc, make_warc, real_page

ROOT = Path(__file__).resolve().parents[1]
WARCS = ROOT / "data/sample/warc"


def _conserved(stats: dict) -> None:
    """kept + removed = read, for the shard and for every stage row."""
    assert stats["docs_read"] == stats["docs_kept"] + stats["docs_removed"]
    for row in stats["stages"]:
        assert row["docs_in"] == row["docs_out"] + sum((row.get("removed") or {}).values()), row["stage"]


def _shard(tmp_path: Path, path: Path, limit: int, batch_size: int = 500) -> dict:
    runner = ShardRunner([UrlFilter(use_blocklist=False, missing_url="remove")], ReaderOptions(batch_size=batch_size))
    stats = runner.run(ShardTask(str(path), str(tmp_path / f"out-{limit}-{batch_size}"), path.stem), limit=limit).stats
    _conserved(stats)
    assert stats["docs_read"] == limit
    return stats


def test_a_limited_run_of_the_sample_warcs_counts_the_records_it_read(tmp_path):
    """Common Crawl's order is request, response, metadata: 5 documents of a shard are 5 requests
    and 4 metadata records read (the 5th's metadata comes after it). The run counted 55 requests,
    19 metadata and 4 resource records of the whole files."""
    config = parse_config({"name": "t", "stages": [{"type": "url_filter", "params": {"use_blocklist": False}}]})
    summary = run_pipeline(config, str(WARCS), str(tmp_path / "out"), workers=1, progress=False, limit=5)
    merged = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert not summary.failed and merged["docs_read"] == 23  # two files hold fewer than 5 documents
    assert merged["reader_skipped_records"] == {"metadata": 5, "request": 16, "warcinfo": 5}
    _conserved(merged)
    marker = json.loads((tmp_path / "out" / "stats" / "resiliparse_warcfile.json").read_text())
    assert marker["reader_skipped_records"] == {"warcinfo": 1, "request": 5, "metadata": 4}


@pytest.mark.parametrize("batch_size", [500, 5, 2])
def test_a_limit_at_or_inside_a_batch_counts_no_record_after_it(tmp_path, batch_size):
    """Inside a batch (500), at a batch's end (5: the runner fetched one batch more before it
    stopped) or after a batch (2): the same counts, and the same documents, the shard's first 5."""
    from refinery.io.warc import WarcReader

    path = WARCS / "resiliparse_warcfile.warc.gz"
    stats = _shard(tmp_path, path, 5, batch_size)
    assert stats["reader_skipped_records"] == {"warcinfo": 1, "request": 5, "metadata": 4}
    out = tmp_path / f"out-5-{batch_size}"
    written = [i for d in ("kept", "removed") for i in pq.read_table(out / d).column("id").to_pylist()]
    with open(path, "rb") as f:
        first = [i for b in WarcReader().read(f, "x") for i in b.column("id").to_pylist()][:5]
    assert sorted(written) == sorted(first)


def test_partial_pages_after_the_limit_are_not_counted(tmp_path):
    """The reader's stage counters (pages kept partial) cover the documents read: the first two of
    cut_body_warc are cut gzip and deflate bodies; its five others cut or truncated are not read."""
    data, _ = cut_body_warc(real_page())
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(data)
    reader_row = _shard(tmp_path, path, 2)["stages"][0]
    assert reader_row["stage"] == "warc_reader" and reader_row["counters"] == {"content_encoding_cut": 2}


def test_a_limit_met_by_a_damaged_span_counts_nothing_after_it(tmp_path):
    """Two pages, bytes that are no WARC, one more page: limit 3 ends on the damage's
    corrupt_stream row, before the last file's warcinfo and request records."""
    page = real_page()
    html = [("Content-Type", "text/html")]
    data = (make_warc([("http://a/1", "200 OK", html, page), ("http://a/2", "200 OK", html, page)])
            + b"\x1f\x8b\x08garbage" * 3 + make_warc([("http://b/1", "200 OK", html, page)]))
    path = tmp_path / "damaged.warc.gz"
    path.write_bytes(data)
    stats = _shard(tmp_path, path, 3)
    assert stats["stages"][0]["removed"] == {"corrupt_stream": 1}
    assert stats["reader_skipped_records"] == {"warcinfo": 1, "request": 2}
    assert _shard(tmp_path, path, 4)["reader_skipped_records"] == {"warcinfo": 2, "request": 3}


def test_jsonl_notes_and_blank_lines_after_the_limit_are_not_counted(tmp_path):
    """A repeated id, a null id and a blank line after the 2nd line of a JSONL shard: none is read."""
    path = tmp_path / "docs.jsonl"
    lines = [{"id": "a", "text": "one", "url": "http://a.example/1"}, {"id": "b", "text": "two"}, None,
             {"id": "a", "text": "three"}, {"text": "four"}]
    path.write_text("".join((json.dumps(x) if x else "") + "\n" for x in lines))
    stats = _shard(tmp_path, path, 2)
    assert stats["reader_notes"] == {} and stats["reader_skipped_records"] == {}
    whole = _shard(tmp_path, path, 4)
    assert whole["reader_notes"] == {"ids_deduplicated": 1, "ids_derived": 1}
    assert whole["reader_skipped_records"] == {"blank_line": 1}


def test_parquet_notes_after_the_limit_are_not_counted(tmp_path):
    """Text that is not UTF-8 and repeated ids after the 2nd row of a Parquet shard: none is read."""
    path = tmp_path / "docs.parquet"
    texts = [b"one", b"two", b"caf\xe9", b"\xff three"]
    pq.write_table(pa.table({"id": ["a", "b", "a", "c"], "text": pa.array(texts, pa.binary())}), path)
    assert _shard(tmp_path, path, 2)["reader_notes"] == {}
    assert _shard(tmp_path, path, 3)["reader_notes"] == {"ids_deduplicated": 1, "text_utf8_replaced": 1}


def test_the_warc_reader_stops_at_its_limit():
    """The reader's own limit: batches end at it, and a second read without one reads on."""
    from refinery.io.warc import WarcReader

    reader = WarcReader(batch_size=3)
    data = (WARCS / "resiliparse_warcfile.warc.gz").read_bytes()
    assert [b.num_rows for b in reader.read(io.BytesIO(data), "x", limit=7)] == [3, 3, 1]
    assert reader.skipped_records == {"warcinfo": 1, "request": 7, "metadata": 6}
    assert sum(b.num_rows for b in reader.read(io.BytesIO(data), "x")) == 16
    assert reader.skipped_records == {"warcinfo": 1, "request": 17, "metadata": 16}
