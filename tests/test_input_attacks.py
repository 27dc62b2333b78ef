"""Issue 18, input side: each attack with its own input, through the readers and the runner.

WARCs are built from real records (data/sample/warc) with warcio, then damaged; JSONL and Parquet
shards carry real documents (data/sample/cc_docs). Every run directory a test leaves is checked by
tests/_invariants.py (kept + removed = read, per stage and per shard).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _fault_fixtures import write_parquet_with_a_damaged_page
from warcio.archiveiterator import ArchiveIterator
from warcio.warcwriter import WARCWriter

from refinery.config import ConfigError, parse_config
from refinery.io import fs
from refinery.io.warc import WarcReader
from refinery.pipeline import run_pipeline
from refinery.rundir import PassDir, inner_directory_refusal
from refinery.runner import MAX_SHARD_NAME_BYTES, ReaderOptions, ShardRunner, ShardTask, shard_name

ROOT = Path(__file__).resolve().parents[1]
REAL_WARC = ROOT / "data" / "sample" / "warc" / "warc_sample-0000.warc.gz"
CC_DOCS = ROOT / "data" / "sample" / "cc_docs" / "multiple_files_cc_en_head-0091.jsonl.gz"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def ten_record_warc(compress: bool = True, n: int = 10) -> tuple[bytes, list[str]]:
    """``n`` real response records, one gzip member each (as Common Crawl writes them)."""
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=compress)
    ids = []
    with open(REAL_WARC, "rb") as f:
        for record in ArchiveIterator(f):
            if record.rec_type == "response" and len(ids) < n:
                ids.append(record.rec_headers.get_header("WARC-Record-ID")[len("<urn:uuid:") : -1])
                writer.write_record(record)
    return buf.getvalue(), ids


from test_warc import member_offsets as members  # noqa: E402 - gzip member offsets of a WARC


def rewrite_member(data: bytes, i: int, edit) -> bytes:
    offs = members(data) + [len(data)]
    return data[: offs[i]] + gzip.compress(edit(gzip.decompress(data[offs[i] : offs[i + 1]]))) + data[offs[i + 1] :]


def read(data: bytes, **kw) -> tuple[list[dict], WarcReader]:
    reader = WarcReader(**kw)
    rows = [r for b in reader.read(io.BytesIO(data), "w") for r in b.to_pylist()]
    assert len(rows) == reader.responses + len(reader.corrupt_offsets)
    return rows, reader


def run_shard(tmp_path: Path, src: Path, shard: str | None = None, **reader) -> tuple[dict, Path]:
    out = tmp_path / "run"
    task = ShardTask(str(src), PassDir(str(out)), shard or shard_name(str(src), str(src.parent)))
    stats = ShardRunner([], ReaderOptions(**reader)).run(task).stats
    assert stats["docs_read"] == stats["docs_kept"] + stats["docs_removed"]
    return stats, out


def table(out: Path, kind: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / kind).glob("*.parquet"))], promote_options="permissive")


def real_docs(n: int) -> list[dict]:
    with gzip.open(CC_DOCS, "rt") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


# --------------------------------------------------------------------------------------------
# 1. one damaged record no longer drops the rest of its WARC
# --------------------------------------------------------------------------------------------
def _cl(fn):
    return lambda m: re.sub(rb"Content-Length: (\d+)", lambda x: b"Content-Length: " + fn(int(x.group(1))), m, count=1)


DAMAGE = {
    "cl_too_long": _cl(lambda n: b"%d" % (n + 5000)),
    "cl_too_short": _cl(lambda n: b"%d" % (n - 100)),
    "cl_negative": _cl(lambda n: b"-5"),
    "cl_not_a_number": _cl(lambda n: b"abc"),
    "url_over_64k": lambda m: re.sub(rb"WARC-Target-URI: [^\r]+", b"WARC-Target-URI: http://a.example/" + b"x" * 70_000, m, count=1),
}


def test_warc_flipped_bit_in_second_member_loses_only_that_record():
    data, ids = ten_record_warc()
    offs = members(data)
    bad = bytearray(data)
    bad[offs[1] + 200] ^= 0x10
    rows, reader = read(bytes(bad))
    got = [r["id"] for r in rows if r["_reason"] != "corrupt_stream"]
    assert got == ids[:1] + ids[2:]  # the 8 intact records after the damage are read
    assert [r["_reason"] for r in rows].count("corrupt_stream") == 1
    assert reader.corrupt_offsets == [offs[1]] and reader.resync_offsets == [offs[2]]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_warc_bad_header_in_second_record_resynchronises(damage):
    data, ids = ten_record_warc()
    rows, reader = read(rewrite_member(data, 1, DAMAGE[damage]))
    reasons = [r["_reason"] for r in rows]
    assert reasons.count("corrupt_stream") == 1, reasons
    kept = [r["id"] for r in rows if r["_reason"] is None]
    assert kept[:1] == ids[:1] and kept[-8:] == ids[2:], damage  # records 3..10 all read
    assert {r["id"] for r in rows if r["_reason"] not in ("corrupt_stream",)} <= set(ids)
    assert len({r["id"] for r in rows}) == len(rows)


@pytest.mark.parametrize("damage", ["cl_too_long", "cl_too_short", "cl_not_a_number"])
def test_uncompressed_warc_resynchronises_at_the_next_warc_header(damage):
    data, ids = ten_record_warc(compress=False)
    starts = [m.start() for m in re.finditer(rb"WARC/1\.[01]\r\n", data)]
    second = data[starts[1] : starts[2]]
    rows, reader = read(data[: starts[1]] + DAMAGE[damage](second) + data[starts[2] :])
    kept = [r["id"] for r in rows if r["_reason"] is None]
    assert kept[-8:] == ids[2:]
    assert [r["_reason"] for r in rows].count("corrupt_stream") == 1


def test_damaged_warc_through_the_runner_counts_the_span(tmp_path):
    data, ids = ten_record_warc()
    src = tmp_path / "in" / "cc.warc.gz"
    src.parent.mkdir()
    bad = bytearray(data)
    bad[members(data)[1] + 200] ^= 0x10
    src.write_bytes(bytes(bad))
    stats, out = run_shard(tmp_path, src)
    assert stats["docs_read"] == 10 and stats["docs_kept"] == 9
    assert stats["stages"][0]["removed"] == {"corrupt_stream": 1}


# --------------------------------------------------------------------------------------------
# 3. JSONL: streamed line by line, bad lines set aside with their line number
# --------------------------------------------------------------------------------------------
def test_jsonl_long_document_and_bad_lines_do_not_fail_the_shard(tmp_path, monkeypatch):
    docs = real_docs(40)
    lines = [json.dumps({"id": f"d{i}", "text": docs[i % len(docs)]["text"]}) for i in range(1000)]
    lines[10] = json.dumps({"id": "long", "text": "word " * 430_000})  # 2.1 MB
    lines[20] = '{"id": "surrogate", "text": "a \\ud800 b"}'
    lines[30] = json.dumps({"id": 31, "text": "an int id"})  # the id's type changes
    lines[40] = json.dumps({"id": {"x": 1}, "text": "a dict id"})
    lines[50] = '{"id": "cut", "text": "no end'
    lines[60] = "[1, 2, 3]"
    lines[70] = "NOT-UTF8"
    lines[80] = json.dumps({"id": "num", "text": 5})
    lines[90] = ""  # a blank line is not a document
    src = tmp_path / "in" / "mixed.jsonl"
    src.parent.mkdir()
    src.write_bytes("\n".join(lines).encode().replace(b"NOT-UTF8", b'{"id": "\xff\xfe"}') + b"\n")
    read_bytes = fs.read_bytes
    monkeypatch.setattr(fs, "read_bytes", lambda uri: pytest.fail("whole input read") if uri == str(src) else read_bytes(uri))
    stats, out = run_shard(tmp_path, src)
    assert stats["docs_read"] == 999 and stats["reader_skipped_records"] == {"blank_line": 1}
    removed = {r["id"]: (r["removed_reason"], r["removed_metric"]) for r in table(out, "removed").to_pylist()}
    assert removed == {
        "mixed/line21": ("invalid_unicode", 21.0), "mixed/line41": ("bad_id", 41.0),
        "mixed/line51": ("bad_json", 51.0), "mixed/line61": ("bad_json", 61.0),
        "mixed/line71": ("invalid_utf8", 71.0), "mixed/line81": ("bad_text", 81.0),
    }
    kept = table(out, "kept")
    assert "long" in kept.column("id").to_pylist() and "31" in kept.column("id").to_pylist()


def test_jsonl_line_over_the_limit_is_removed_without_being_held(tmp_path):
    src = tmp_path / "in" / "big.jsonl.gz"
    src.parent.mkdir()
    body = [json.dumps({"id": "a", "text": "short"}), json.dumps({"id": "b", "text": "x" * 3_000_000}),
            json.dumps({"id": "c", "text": "after"})]
    src.write_bytes(gzip.compress("\n".join(body).encode()))
    stats, out = run_shard(tmp_path, src, max_body_bytes=1_000_000)
    assert stats["docs_read"] == 3 and stats["stages"][0]["removed"] == {"line_too_long": 1}
    assert table(out, "kept").column("id").to_pylist() == ["a", "c"]


def test_parquet_document_over_the_limit_is_removed_by_the_reader(tmp_path, monkeypatch):
    """Found by adversarial testing: the Parquet reader had no size limit (an 80 MB text went
    through every stage: 1 min 50 s, 2.7 GB), and its batches were counted in rows only (500 rows
    of 5 MB were one batch, and no progress line came for minutes)."""
    from refinery.io import parquet

    src = tmp_path / "in" / "big.parquet"
    src.parent.mkdir()
    texts = ["short", "x" * 3_000_000, "after", "y" * 600_000, "z" * 600_000, "end"]
    html = [None, None, b"<p>" + b"h" * 2_000_000, None, None, None]
    pq.write_table(pa.table({"id": list("abcdef"), "text": texts, "html": pa.array(html, pa.binary())}), src)
    read = parquet.iter_input_batches
    sizes: list[int] = []

    def recorded(*args, **kw):
        for batch in read(*args, **kw):
            sizes.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(parquet, "BATCH_BYTES", 1_500_000)
    monkeypatch.setattr(parquet, "iter_input_batches", recorded)
    stats, out = run_shard(tmp_path, src, max_body_bytes=1_000_000)
    assert stats["docs_read"] == 6 and stats["stages"][0]["removed"] == {"body_too_large": 2}
    removed = table(out, "removed").to_pylist()
    assert {(r["id"], r["removed_reason"], r["removed_metric"]) for r in removed} == {
        ("b", "body_too_large", 3_000_000.0), ("c", "body_too_large", 2_000_003.0)}
    assert all(r["text"] is None for r in removed)  # not carried into removed/
    assert table(out, "kept").column("id").to_pylist() == ["a", "d", "e", "f"]
    assert max(sizes) < 6  # batches of about BATCH_BYTES, not of reader.batch_size rows


def test_empty_jsonl_is_an_empty_shard(tmp_path):
    src = tmp_path / "in" / "empty.jsonl"
    src.parent.mkdir()
    src.write_bytes(b"")
    stats, out = run_shard(tmp_path, src)
    assert stats["docs_read"] == 0
    assert "text" in pq.read_schema(out / "kept" / "empty.parquet").names


def test_records_whose_http_headers_are_too_long_are_not_a_damaged_stream():
    """Two intact responses whose HTTP header block exceeds FastWARC's limit are pages like any
    other (parsed from the stream since session 28; they were http_parse_error), and nothing more:
    the second also produced a corrupt_stream row (the failed parse had read part of the block).
    Found by adversarial testing."""
    import uuid

    def record(block: bytes, uri: str) -> bytes:
        head = ["WARC/1.0", "WARC-Type: response", f"WARC-Record-ID: <urn:uuid:{uuid.uuid4()}>",
                "WARC-Date: 2024-01-01T00:00:00Z", f"WARC-Target-URI: {uri}",
                "Content-Type: application/http; msgtype=response", f"Content-Length: {len(block)}"]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + block + b"\r\n\r\n"

    body = b"<html><body><p>" + b"Some text. " * 500 + b"</p></body></html>"
    junk = "".join(f"X-Junk-{j}: {'v' * 100}\r\n" for j in range(400))
    big = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n{junk}\r\n".encode() + body
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + body
    for compress in (True, False):
        records = [record(big, "https://big/0"), record(big, "https://big/1"), record(ok, "https://ok/")]
        data = b"".join(gzip.compress(r) if compress else r for r in records)
        rows = [r for b in WarcReader().read(io.BytesIO(data), "f.warc") for r in b.to_pylist()]
        assert [(r["url"], r["_reason"]) for r in rows] == [
            ("https://big/0", None), ("https://big/1", None), ("https://ok/", None)]
        assert {r["html"] for r in rows} == {body}


def test_a_jsonl_file_with_a_bom_keeps_its_first_document(tmp_path):
    # found by adversarial testing: the first line was removed as bad_json
    docs = real_docs(3)
    src = tmp_path / "in" / "bom.jsonl"
    src.parent.mkdir()
    src.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(d) + "\n" for d in docs).encode())
    stats, out = run_shard(tmp_path, src)
    assert stats["docs_read"] == 3 and stats["docs_kept"] == 3
    assert table(out, "kept").column("text").to_pylist() == [d["text"] for d in docs]


def test_invalid_utf8_in_a_parquet_string_column_is_replaced_not_a_failed_shard(tmp_path):
    """Parquet writers need not validate UTF-8 (parquet-mr does not), pyarrow does not on read:
    one stray byte in `text` failed the whole shard with a bare UnicodeDecodeError (found by
    adversarial testing). It is decoded with a replacement character and counted, as binary text is."""
    import numpy as np

    vals = [b"A normal English document. " * 30, b"A stray byte \xff here. " * 30, b"Third document. " * 30]
    offsets = np.cumsum([0] + [len(v) for v in vals]).astype(np.int32)
    text = pa.Array.from_buffers(pa.string(), 3, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(vals))])
    src = tmp_path / "in" / "part-0.parquet"
    src.parent.mkdir()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": text}), src)
    stats, out = run_shard(tmp_path, src)
    assert stats["docs_read"] == 3 and stats["docs_kept"] == 3
    kept = table(out, "kept").column("text").to_pylist()
    assert kept[0] == vals[0].decode() and "A stray byte \ufffd here." in kept[1]
    assert stats["reader_notes"]["text_utf8_replaced"] == 1


# --------------------------------------------------------------------------------------------
# 4. null and duplicate ids: derived once at read time
# --------------------------------------------------------------------------------------------
def _ids_after_run(tmp_path: Path, src: Path) -> tuple[list[str], dict]:
    stats, out = run_shard(tmp_path, src)
    removed = table(out, "removed")
    return table(out, "kept").column("id").to_pylist() + (removed.column("id").to_pylist() if removed.num_rows else []), stats


def test_null_and_duplicate_ids_become_unique_and_stable(tmp_path):
    docs = real_docs(6)
    src = tmp_path / "in" / "ids.parquet"
    src.parent.mkdir()
    pq.write_table(pa.table({"id": [None, "a", "a", None, "a", "ids/0"], "text": [d["text"] for d in docs]}), src)
    ids, stats = _ids_after_run(tmp_path, src)
    assert ids == ["ids/0", "a", "a#dup1", "ids/3", "a#dup2", "ids/0#dup1"]
    assert stats["reader_notes"] == {"ids_derived": 2, "ids_deduplicated": 3}
    ids_again, _ = _ids_after_run(tmp_path / "again", src)
    assert ids_again == ids  # deterministic


def test_parquet_without_an_id_column_gets_derived_ids(tmp_path):
    # C4 and most Hugging Face exports carry no id: read as null ids, derived as <shard>/<row>
    docs = real_docs(3)
    src = tmp_path / "in" / "c4.parquet"
    src.parent.mkdir()
    pq.write_table(pa.table({"text": [d["text"] for d in docs], "url": ["https://a.example/1", None, "https://b.example/2"]}), src)
    ids, stats = _ids_after_run(tmp_path, src)
    assert ids == ["c4/0", "c4/1", "c4/2"] and stats["reader_notes"] == {"ids_derived": 3}
    kept = table(tmp_path / "run", "kept")
    assert kept.column("text").to_pylist() == [d["text"] for d in docs]
    assert kept.schema.field("id").type == pa.string()


def test_parquet_of_raw_html_without_text_is_extracted(tmp_path):
    from refinery.stages.extract import TrafilaturaExtractor

    article = "<p>" + " ".join(real_docs(1)[0]["text"].split()[:200]) + "</p>"
    html = f"<html><body><nav><a href='/'>Home</a></nav><article>{article}</article></body></html>".encode()
    src = tmp_path / "in" / "pages.parquet"
    src.parent.mkdir()
    pq.write_table(pa.table({"id": ["p1", "p2"], "url": ["https://a.example/1", "https://a.example/2"], "html": [html, None]}), src)
    out = tmp_path / "run"
    task = ShardTask(str(src), PassDir(str(out)), "pages")
    stats = ShardRunner([TrafilaturaExtractor(timeout_s=0)], ReaderOptions()).run(task).stats
    assert (stats["docs_read"], stats["docs_kept"], stats["docs_removed"]) == (2, 1, 1)
    kept = table(out, "kept")
    assert kept.column("id").to_pylist() == ["p1"] and "Home" not in kept.column("text")[0].as_py()
    assert kept.column("text")[0].as_py().split()[:20] == real_docs(1)[0]["text"].split()[:20]
    assert table(out, "removed").column("removed_reason").to_pylist() == ["empty_html"]
    # neither text nor html: refused in one line naming the file and the columns it has
    bad = tmp_path / "in" / "bad.parquet"
    pq.write_table(pa.table({"id": ["x"], "body": ["<p>x</p>"]}), bad)
    with pytest.raises(Exception, match=r"bad\.parquet has neither a 'text' nor an 'html' column; it has \['id', 'body'\]"):
        ShardRunner([], ReaderOptions()).run(ShardTask(str(bad), PassDir(str(tmp_path / "run2")), "bad"))


def test_jsonl_and_warc_duplicate_ids(tmp_path):
    src = tmp_path / "in" / "dup.jsonl"
    src.parent.mkdir()
    src.write_text("\n".join(json.dumps({"id": i, "text": "t"}) for i in ["x", "x", None, 7, "7"]) + "\n")
    ids, _ = _ids_after_run(tmp_path, src)
    assert ids == ["x", "x#dup1", "dup/2", "7", "7#dup1"]
    data, rids = ten_record_warc(n=3)
    twice = tmp_path / "w" / "twice.warc.gz"
    twice.parent.mkdir()
    twice.write_bytes(data + data)  # every WARC-Record-ID repeated
    ids, _ = _ids_after_run(tmp_path / "w", twice)
    assert ids == rids + [f"{r}#dup1" for r in rids]


# --------------------------------------------------------------------------------------------
# 5. reserved column names in input never decide removals
# --------------------------------------------------------------------------------------------
def test_reserved_input_columns_are_renamed_not_obeyed(tmp_path):
    docs = real_docs(3)
    src = tmp_path / "in" / "reserved.parquet"
    src.parent.mkdir()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": [d["text"] for d in docs],
                             "_reason": ["evil", "evil", None], "_metric": [1.0, 2.0, 3.0],
                             "removed_reason": ["x", "y", "z"], "removed_stage": ["s", "s", "s"],
                             "_evidence": ["e", "e", "e"], "removed_evidence": ["r", "r", "r"]}), src)
    stats, out = run_shard(tmp_path, src)
    assert stats["docs_kept"] == 3 and stats["docs_removed"] == 0
    kept = table(out, "kept")
    assert kept.column("input__reason").to_pylist() == ["evil", "evil", None]
    assert {"input_removed_reason", "input_removed_stage", "input__metric"} <= set(kept.column_names)
    assert not {"_reason", "_metric", "removed_reason", "removed_stage"} & set(kept.column_names)
    # nor the evidence of a removal (h191): a stage's removal would have carried the input's
    assert kept.column("input__evidence").to_pylist() == ["e"] * 3 and "input_removed_evidence" in kept.column_names
    # a reserved column beside its rename: one line before any task, naming the file and both
    # (it failed its shard: session 47, h175; every input footer is checked since session 49)
    from refinery.plan import plan_run

    both = tmp_path / "both" / "both.parquet"
    both.parent.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["t"], "quote_lines": pa.array([[0]], pa.list_(pa.int32())),
                             "input_quote_lines": [[1]]}), both)
    config = parse_config({"name": "t", "stages": [{"type": "url_filter", "params": {"use_blocklist": False}}]})
    with pytest.raises(ConfigError, match=re.escape(f"Parquet shard {both}: column 'quote_lines' is reserved "
                                                    "and 'input_quote_lines' exists too; rename one of them; no shard "
                                                    "was run")):
        plan_run(config, str(both.parent), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# 7. symlink loops: listed once, no hang
# --------------------------------------------------------------------------------------------
def test_symlink_loops_are_not_followed(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jsonl").write_text('{"id": "1", "text": "t"}\n')
    (root / "sub" / "loop").symlink_to(root)  # two loops: the listing hung
    (root / "self").symlink_to(".")
    (root / "also_a.jsonl").symlink_to(root / "sub" / "a.jsonl")
    code = ("import json, sys; from refinery.io import fs; "
            f"print(json.dumps(fs.list_files({str(root)!r}, ('.jsonl',))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [str(root / "also_a.jsonl")]  # one file, once


# --------------------------------------------------------------------------------------------
# 9. long shard names are shortened deterministically
# --------------------------------------------------------------------------------------------
def test_long_and_deeply_nested_inputs_get_short_stable_shard_names(tmp_path):
    root = tmp_path / "in"
    deep = root.joinpath(*["nested-directory-%02d" % i for i in range(12)])
    deep.mkdir(parents=True)
    long_file = root / ("x" * 230 + ".jsonl")
    for path in (long_file, deep / "doc.jsonl"):
        path.write_text(json.dumps({"id": "1", "text": "t"}) + "\n")
    names = [shard_name(str(p), str(root)) for p in (long_file, deep / "doc.jsonl")]
    assert all(len(n.encode()) <= MAX_SHARD_NAME_BYTES for n in names) and len(set(names)) == 2
    assert names == [shard_name(str(p), str(root)) for p in (long_file, deep / "doc.jsonl")]
    assert names[1].startswith("nested-directory-00__nested-directory-01")
    config = parse_config({"name": "t", "stages": [{"type": "gopher_quality"}]})
    summary = run_pipeline(config, str(root), str(tmp_path / "out"), workers=1, progress=False)
    assert not summary.failed and summary.stats["docs_read"] == 2
    assert sorted(p.stem for p in (tmp_path / "out" / "kept").glob("*.parquet")) == sorted(names)


# --------------------------------------------------------------------------------------------
# 10. skipped files are named; upper-case suffixes are read
# --------------------------------------------------------------------------------------------
def test_skipped_files_are_logged_and_upper_case_suffixes_read(tmp_path, caplog):
    """Skipped files are named, one line per reason (a count and examples when there are many).
    Found by adversarial testing: a plain ``.json`` of JSON lines was skipped while ``.json.gz``
    was read; it is read now, as ``.json.gz`` is."""
    root = tmp_path / "in"
    root.mkdir()
    names = ("_x.jsonl", ".x.jsonl", "UPPER.JSONL", "notes.txt", "lines.json", "Upper.JSON", "a.parquet.gz",
             "b.arc", "c.jsonl.bz2", "d.ndjson")
    for name in names:
        (root / name).write_text(json.dumps({"id": name, "text": "t"}) + "\n")
    config = parse_config({"name": "t", "stages": [{"type": "gopher_quality"}]})
    with caplog.at_level(logging.WARNING, logger="refinery.io"):
        summary = run_pipeline(config, str(root), str(tmp_path / "out"), workers=1, progress=False)
    assert summary.stats["docs_read"] == 3
    assert sorted(p.name for p in (tmp_path / "out" / "kept").glob("*.parquet")) == ["UPPER.parquet", "Upper.parquet", "lines.parquet"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(lines) == 2, lines  # one per reason
    assert f"skipping 2 files under {root}: name starts with '.' or '_'" in lines[1] and ".x.jsonl, _x.jsonl" in lines[1], lines
    assert lines[0].startswith(f"skipping 5 files under {root}: not one of ") and lines[0].endswith(
        ": a.parquet.gz, b.arc, c.jsonl.bz2 and 2 more"), lines


def test_a_json_file_of_one_value_is_skipped_and_named_not_read_as_bad_json_rows(tmp_path, caplog):
    """A pretty-printed ``.json`` beside the data (Hugging Face ``save_to_disk``'s
    ``dataset_info.json`` and ``state.json``) or a JSON array was read as JSON lines: a shard of
    ``bad_json`` rows per file (12 from an 11-line dataset_info.json). Each is skipped now, named in
    one line; a ``.json`` of JSON lines is read as before, and one holding nothing else is refused
    naming it."""
    from refinery.config import ConfigError
    from refinery.plan import list_inputs

    root = tmp_path / "in"
    root.mkdir()
    (root / "docs.json").write_text("".join(json.dumps({"id": str(i), "text": "t"}) + "\n" for i in range(2)))
    info = {"citation": "", "features": {"id": {"dtype": "string", "_type": "Value"}}}  # as `datasets` writes it
    (root / "dataset_info.json").write_text(json.dumps(info, indent=2))
    (root / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}, indent=2))
    (root / "array.json").write_text(json.dumps([{"id": "a", "text": "t"}]))
    with caplog.at_level(logging.WARNING, logger="refinery.io"):
        assert [Path(f).name for f in list_inputs(str(root))] == ["docs.json"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert lines == [f"skipping 2 files under {root}: one JSON value over several lines (metadata?), not JSON lines "
                     "(one object per line): dataset_info.json, state.json",
                     f"skipping {root / 'array.json'}: a JSON array, not JSON lines (one object per line; "
                     "`jq -c '.[]'` converts it)"], lines
    (root / "docs.json").unlink()
    (root / "array.json").unlink()
    with pytest.raises(ConfigError, match=f"no input shards under {root} .*: {root / 'dataset_info.json'} is one JSON "
                                          "value over several lines"):
        list_inputs(str(root))


def test_an_empty_file_is_an_empty_shard_in_every_format_and_named(tmp_path, caplog):
    """Found by adversarial testing: a 0-byte ``.parquet`` failed its shard (3 attempts at first)
    while a 0-byte ``.warc.gz`` or ``.jsonl`` was an empty shard without a word. Each is an
    empty shard now, with the run's columns, and the plan names them in one line."""
    root = tmp_path / "in"
    root.mkdir()
    for name in ("a.parquet", "b.jsonl", "c.warc.gz", "d.json"):
        (root / name).write_bytes(b"")
    (root / "good.jsonl").write_text(json.dumps({"id": "1", "text": "t", "url": "https://example.org/"}) + "\n")
    config = parse_config({"name": "t", "stages": [{"type": "url_filter", "params": {"use_blocklist": False}}]})
    with caplog.at_level(logging.WARNING, logger="refinery.plan"):
        summary = run_pipeline(config, str(root), str(tmp_path / "out"), workers=1, progress=False)
    assert not summary.failed and summary.stats["docs_read"] == 1
    schemas = {p.stem: pq.read_schema(p) for p in (tmp_path / "out" / "kept").glob("*.parquet")}
    assert sorted(schemas) == ["a", "b", "c", "d", "good"]
    assert all(schema.equals(schemas["good"]) for schema in schemas.values()), schemas
    logged = [r.getMessage() for r in caplog.records if "empty (0 bytes)" in r.getMessage()]
    assert logged == ["4 input file(s) are empty (0 bytes), each read as an empty shard (a failed write or "
                      "download?): a.parquet, b.jsonl, c.warc.gz and 1 more"], logged


def _zstd_frames(docs: list[dict], frames: int) -> bytes:
    """Real documents as JSON lines in ``frames`` concatenated zstd frames (as pzstd and
    RedPajama's shards have them)."""
    codec = pa.Codec("zstd")
    lines = [json.dumps(d).encode() + b"\n" for d in docs]
    step = -(-len(lines) // frames)
    return b"".join(codec.compress(b"".join(lines[i:i + step]), asbytes=True) for i in range(0, len(lines), step))


@pytest.mark.parametrize("store", ["local", "s3"])
def test_zstd_jsonl_is_read_whole_and_a_cut_one_keeps_what_precedes_the_cut(tmp_path, store, request):
    docs = real_docs(10)
    data = _zstd_frames(docs, frames=3)
    root = str(tmp_path / "in") if store == "local" else request.getfixturevalue("s3_bucket") + "/in"
    fs.write_bytes(f"{root}/docs.jsonl.zst", data)
    fs.write_bytes(f"{root}/more.json.zst", _zstd_frames(docs[:2], frames=1))
    fs.write_bytes(f"{root}/cut.jsonl.zst", data[: len(data) - 7])
    config = parse_config({"name": "t", "stages": [{"type": "gopher_quality", "params": {"min_words": 1}}]})
    out = str(tmp_path / "out")
    summary = run_pipeline(config, root, out, workers=1, progress=False)
    assert not summary.failed, summary.failed
    # the cut file: the lines decoded before the cut, in order (zstd may hold back the last few
    # KiB decoded, so at least the first frame whole), then one corrupt_stream row for the rest
    cut = pq.read_table(f"{out}/kept/cut.parquet").to_pylist() + pq.read_table(f"{out}/removed/cut.parquet").to_pylist()
    cut.sort(key=lambda r: int(r["id"].rsplit("line", 1)[1]) if "/line" in r["id"] else 0)
    texts = {d["text"]: i for i, d in enumerate(docs)}
    read = sorted(texts[r["text"]] for r in cut if r["text"] in texts)
    assert read == list(range(len(read))) and len(read) >= -(-len(docs) // 3), read
    corrupt = [r for r in cut if r.get("removed_reason") == "corrupt_stream"]
    assert [r["id"] for r in corrupt] == [f"cut/line{len(read) + 1}"] and len(cut) == len(read) + 1
    assert summary.stats["docs_read"] == 12 + len(read) + 1
    read_back = pq.read_table(f"{out}/kept/docs.parquet").to_pylist() + pq.read_table(f"{out}/removed/docs.parquet").to_pylist()
    assert sorted(r["text"] for r in read_back) == sorted(d["text"] for d in docs)


def test_zstd_jsonl_starting_with_a_skippable_frame_is_read(tmp_path):
    """Found by adversarial testing: pzstd (and the seekable zstd format) write a skippable frame
    first; such a file was read as raw bytes and every document lost as ``invalid_utf8``."""
    docs = real_docs(6)
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"pzst"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.jsonl.zst").write_bytes(skippable + _zstd_frames(docs, frames=2))
    config = parse_config({"name": "t", "stages": [{"type": "gopher_quality", "params": {"min_words": 1}}]})
    summary = run_pipeline(config, str(tmp_path / "in"), str(tmp_path / "out"), workers=1, progress=False)
    assert not summary.failed and summary.stats["docs_read"] == 6
    kept = pq.read_table(tmp_path / "out" / "kept" / "docs.parquet").to_pylist()
    removed = pq.read_table(tmp_path / "out" / "removed" / "docs.parquet").to_pylist()
    assert sorted(r["text"] for r in kept + removed) == sorted(d["text"] for d in docs)


def test_spark_output_directory_is_read_once_without_its_temporary_parts(tmp_path, caplog):
    """A Spark/Hive-style Parquet directory: part files, ``_SUCCESS``, ``.crc`` sidecars, and a
    ``_temporary/`` tree holding a partial copy of a part (a write in progress or a failed task),
    plus a notebook's ``.ipynb_checkpoints/`` copy. Only the part files are read: no document twice."""
    root = tmp_path / "in"
    parts = {"part-00000-c0.snappy.parquet": ["a", "b"], "year=2024/part-00001-c0.snappy.parquet": ["c"]}
    for rel, ids in parts.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": ids, "text": [f"text of {i}" for i in ids]}), root / rel)
        (root / rel).with_name(f".{Path(rel).name}.crc").write_bytes(b"crc")
    (root / "_SUCCESS").write_bytes(b"")
    attempt = root / "_temporary" / "0" / "_temporary" / "attempt_202412011200_0001_m_000000_0"
    attempt.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a"], "text": ["text of a"]}), attempt / "part-00000-c0.snappy.parquet")
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "notes-checkpoint.jsonl").write_text(json.dumps({"id": "n", "text": "t"}) + "\n")

    assert fs.list_files(str(root), (".parquet", ".jsonl")) == [str(root / rel) for rel in sorted(parts)]
    config = parse_config({"name": "t", "stages": [{"type": "gopher_quality", "params": {"min_words": 1}}]})
    with caplog.at_level(logging.WARNING, logger="refinery.io"):
        summary = run_pipeline(config, str(root), str(tmp_path / "out"), workers=1, progress=False)
    assert not summary.failed and summary.stats["docs_read"] == 3
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"skipping 3 files under {root}: name starts with '.' or '_'" in logged, logged
    assert f"skipping 2 files under {root}: a temporary or metadata directory" in logged, logged
    assert ": nothing inside it is read: .ipynb_checkpoints/, _temporary/" in logged, logged


def test_hidden_directories_below_an_s3_prefix_are_not_listed(s3_bucket):
    base = f"{s3_bucket}/crawl"
    for rel in ("a.jsonl", "sub/b.jsonl", "_temporary/0/a.jsonl", "sub/.staging/c.jsonl"):
        fs.write_bytes(f"{base}/{rel}", b'{"id": "x", "text": "t"}\n')
    assert fs.list_files(base, (".jsonl",)) == [f"{base}/a.jsonl", f"{base}/sub/b.jsonl"]
    # a root below such a directory is listed as asked (only directories under the root count)
    assert fs.list_files(f"{base}/_temporary", (".jsonl",)) == [f"{base}/_temporary/0/a.jsonl"]


def test_a_manifest_entry_named_like_a_hidden_file_gets_a_visible_shard_name():
    # listings skip names starting with "." or "_": a shard named so would vanish from later passes
    assert shard_name("s3://b/crawl/_x.warc.gz", "s3://b/crawl") == "shard_x"
    assert shard_name("s3://b/crawl/.y/z.warc.gz", "s3://b/crawl") == "shard.y__z"
    assert shard_name("s3://b/crawl/x_/a.warc.gz", "s3://b/crawl") == "x___a"


# --------------------------------------------------------------------------------------------
# 14. Parquet input columns of other types: cast when safe, else one line naming file and column
# --------------------------------------------------------------------------------------------
def test_parquet_castable_types_are_cast(tmp_path):
    docs = real_docs(3)
    src = tmp_path / "in" / "types.parquet"
    src.parent.mkdir()
    text = [docs[0]["text"].encode(), b"bad \xff bytes", None]
    pq.write_table(pa.table({"id": pa.array([1, 2, 3], pa.int64()), "text": pa.array(text, pa.binary()),
                             "url": pa.array(["u", "u", "v"]).dictionary_encode()}), src)
    stats, out = run_shard(tmp_path, src)
    kept = table(out, "kept")
    assert kept.column("id").to_pylist() == ["1", "2", "3"]
    assert kept.column("text").to_pylist() == [docs[0]["text"], "bad \ufffd bytes", None]
    assert kept.column("url").to_pylist() == ["u", "u", "v"]
    assert stats["reader_notes"] == {"text_utf8_replaced": 1}
    dict_text = tmp_path / "in2" / "dict.parquet"
    dict_text.parent.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "text": pa.array(["x", "x"]).dictionary_encode()}), dict_text)
    stats, out = run_shard(tmp_path / "d", dict_text)
    assert table(out, "kept").column("text").to_pylist() == ["x", "x"]


@pytest.mark.parametrize("column,values", [("text", pa.array([1, 2], pa.int64())), ("id", pa.array([1.5, 2.5])),
                                           ("url", pa.array([[1], [2]]))])
def test_parquet_uncastable_column_is_one_line_naming_file_and_column(tmp_path, column, values):
    src = tmp_path / "in" / "bad.parquet"
    src.parent.mkdir()
    cols = {"id": pa.array(["a", "b"]), "text": pa.array(["x", "y"])}
    cols[column] = values
    pq.write_table(pa.table(cols), src)
    config = parse_config({"name": "t", "stages": [{"type": "gopher_quality"}]})
    with pytest.raises(ConfigError, match=re.escape(f"Parquet shard {src}: column {column!r} has type ")):
        run_pipeline(config, str(src.parent), str(tmp_path / "out"), workers=1, progress=False)  # before any shard
    config.executor.max_failed_fraction = 0.5  # shards may fail: it is read, and its shard fails as it did
    summary = run_pipeline(config, str(src.parent), str(tmp_path / "out"), workers=1, progress=False)
    (failure,) = summary.failed
    first = failure.error.splitlines()[0]  # the executor appends the traceback below it
    assert str(src) in first and f"column {column!r}" in first and "ShardReadError" in first, failure.error


def test_a_parquet_file_with_a_repeated_column_fails_by_name(tmp_path):
    """Found by adversarial testing: a repeated ``text`` column failed the shard with a KeyError
    naming no file; a repeated extra column kept one copy silently."""
    (tmp_path / "in").mkdir()
    for name, cols in (("twice-text", ["id", "text", "text"]), ("twice-extra", ["id", "text", "lang", "lang"])):
        arrays = [pa.array(["a"]), pa.array(["some words here"])] + [pa.array(["x"])] * (len(cols) - 2)
        pq.write_table(pa.Table.from_arrays(arrays, names=cols), tmp_path / "in" / f"{name}.parquet")
    config = parse_config({"name": "t", "stages": [{"type": "gopher_quality", "params": {"min_words": 1}}]})
    with pytest.raises(ConfigError, match=r"twice-extra\.parquet has the column 'lang' more than once; rename or drop "
                                          r"one \(and 1 more bad input file\(s\): twice-text\.parquet\); no shard was run"):
        run_pipeline(config, str(tmp_path / "in"), str(tmp_path / "out"), workers=1, progress=False)
    config.executor.max_failed_fraction = 0.5  # shards may fail: each is read, and fails as it did
    summary = run_pipeline(config, str(tmp_path / "in"), str(tmp_path / "out"), workers=1, progress=False)
    failed = {o.shard: o.error for o in summary.failed}
    assert set(failed) == {"twice-text", "twice-extra"}
    assert "twice-text.parquet has the column 'text' more than once" in failed["twice-text"]
    assert "twice-extra.parquet has the column 'lang' more than once" in failed["twice-extra"]


def test_a_damaged_parquet_footer_fails_its_shard_at_once_naming_the_file(tmp_path, caplog):
    """Found by adversarial testing: a footer pyarrow cannot deserialize ("Couldn't deserialize
    thrift", an OSError) was retried 3 times as if transient; it is permanent: one attempt, one line."""
    root = tmp_path / "in"
    root.mkdir()
    pq.write_table(pa.table({"id": ["1", "2"], "text": ["one two", "three four"]}), root / "bad.parquet")
    data = bytearray((root / "bad.parquet").read_bytes())
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    data[start:start + 40] = b"\xff" * 40
    (root / "bad.parquet").write_bytes(bytes(data))
    config = parse_config({"name": "t", "executor": {"max_failed_fraction": 0.9},
                           "stages": [{"type": "gopher_quality", "params": {"min_words": 1}}]})
    with caplog.at_level(logging.INFO, logger="refinery.executors"):
        summary = run_pipeline(config, str(root), str(tmp_path / "out"), workers=1, progress=False)
    [failed] = summary.failed
    first = failed.error.splitlines()[0]  # the outcome carries the traceback after it
    assert first.endswith(f"damaged Parquet file {root / 'bad.parquet'}: Couldn't deserialize thrift: don't "
                                 "know what type: (not Parquet, or cut or overwritten: no retry reads it); replace or remove it"), failed.error
    assert not [r for r in caplog.records if "attempt 2" in r.getMessage() or "retrying" in r.getMessage()]


def test_a_run_directory_as_input_is_refused_naming_its_kept_documents(tmp_path):
    """Its removed/ shards (and, now that ``.json`` is JSON lines, its records) would be read as documents."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.jsonl").write_text(json.dumps({"id": "1", "text": "t"}) + "\n")
    config = parse_config({"name": "t", "stages": [{"type": "url_filter", "params": {"use_blocklist": False}}]})
    run_pipeline(config, str(root), str(tmp_path / "run"), workers=1, progress=False)
    with pytest.raises(Exception, match=f"input {tmp_path / 'run'} is a refinery run directory: its documents are in "
                                        f"{tmp_path / 'run' / 'kept'}; give that as the input"):
        run_pipeline(config, str(tmp_path / "run"), str(tmp_path / "out"), workers=1, progress=False)
    # its inner directories too (h174): removed/ was read as documents (the removed ones back in a
    # corpus), stats/ its JSON records as JSON lines, samples/ failed every task ("no 'text'")
    run, kept = tmp_path / "run", tmp_path / "run" / "kept"
    for inner in ("stats", "samples"):
        with pytest.raises(ConfigError, match=re.escape(
                f"input {run / inner} is the {inner}/ directory of the refinery run {run}, "
                f"not its documents (those are in {kept}): give {kept} as the input")):
            run_pipeline(config, str(tmp_path / "run" / inner), str(tmp_path / "out"), workers=1, progress=False)
    assert not (tmp_path / "out").exists()
    # a kept/ shard is documents: `refinery dedup` refused one as "the kept/a.parquet/ directory" (h172's check)
    assert (tmp_path / "run" / "kept" / "a.parquet").is_file()
    assert inner_directory_refusal(str(tmp_path / "run" / "kept" / "a.parquet"), give_the_run=True) is None
    assert run_pipeline(config, str(tmp_path / "run" / "kept"), str(tmp_path / "out"), workers=1, progress=False).stats["docs_read"] == 1


def test_a_pass_directory_of_a_run_as_input_is_refused_naming_what_to_give(tmp_path):
    """Found by review (h98): ``OUT/filter`` of a multi-pass run was read as documents, its kept/,
    removed/ and samples/ shards alike (12 shards from 3 inputs, 3 failing on samples/)."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.jsonl").write_text(json.dumps({"id": "1", "url": "https://a.example/1", "text": "t"}) + "\n")
    config = parse_config({"name": "t", "stages": [{"type": "url_filter", "params": {"use_blocklist": False}}],
                           "dedup": [{"method": "url"}, {"method": "exact"}]})
    run = tmp_path / "run"
    run_pipeline(config, str(root), str(run), workers=1, progress=False)
    with pytest.raises(Exception, match=re.escape(
            f"input {run / 'filter'} is the 'filter' pass of the refinery run {run}: what it kept is in "
            f"{run / 'filter' / 'kept'}, the run's corpus in {run / 'kept'}; give one of those as the input")):
        run_pipeline(config, str(run / "filter"), str(tmp_path / "out"), workers=1, progress=False)
    with pytest.raises(Exception, match=re.escape(f"input {run / 'exact_dedup'} is the 'exact_dedup' pass of the "
                                                  f"refinery run {run}: its documents (the run's corpus) are in {run / 'kept'}")):
        run_pipeline(config, str(run / "exact_dedup"), str(tmp_path / "out"), workers=1, progress=False)
    with pytest.raises(ConfigError, match=re.escape(  # h174: it was read as documents
            f"input {run / 'filter' / 'removed'} is the filter/removed/ directory of the refinery run {run}")):
        run_pipeline(config, str(run / "filter" / "removed"), str(tmp_path / "out"), workers=1, progress=False)
    assert run_pipeline(config, str(run / "filter" / "kept"), str(tmp_path / "out"), workers=1,
                        progress=False).stats["docs_read"] == 1


def test_a_run_or_pass_directory_without_a_readable_run_json_as_input_is_refused(tmp_path):
    """Found by review (h99): with the run's run.json damaged (or a pass directory copied away from
    it) the guards above, which read run.json, let it through: kept/, removed/ and samples/ were
    read as documents (the removed ones back in the corpus)."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.jsonl").write_text(json.dumps({"id": "1", "url": "https://a.example/1", "text": "t"}) + "\n")
    config = parse_config({"name": "t", "stages": [{"type": "url_filter", "params": {"use_blocklist": False}}],
                           "dedup": [{"method": "url"}]})
    run = tmp_path / "run"
    run_pipeline(config, str(root), str(run), workers=1, progress=False)
    shutil.copytree(run / "filter", tmp_path / "copied")
    (run / "run.json").write_text("{")
    for given, kept in ((run, run / "kept"), (run / "filter", run / "filter" / "kept"),
                        (tmp_path / "copied", tmp_path / "copied" / "kept")):
        with pytest.raises(Exception, match=re.escape(f"input {given} holds kept/ and removed/ shards, as a refinery run "
                                                      f"or one of its passes does (its run.json missing or unreadable): "
                                                      f"its documents are in {kept}; give that as the input")):
            run_pipeline(config, str(given), str(tmp_path / "out"), workers=1, progress=False)
    # one below the input too (h172: its kept/, removed/ and samples/ were read as documents)
    holder = tmp_path / "holder"
    shutil.copytree(run, holder / "r")
    with pytest.raises(Exception, match=re.escape(f"input {holder} holds kept/ and removed/ shards at {holder / 'r'}, as a "
                                                  f"refinery run or one of its passes does (its run.json missing or "
                                                  f"unreadable): its documents are in {holder / 'r' / 'kept'}; give that")):
        run_pipeline(config, str(holder), str(tmp_path / "out"), workers=1, progress=False)
    assert run_pipeline(config, str(tmp_path / "copied" / "kept"), str(tmp_path / "out"), workers=1,
                        progress=False).stats["docs_read"] == 1


@pytest.mark.parametrize("codec, words", [("zstd", "ZSTD decompression failed"), ("snappy", "Corrupt snappy compressed data")])
def test_a_damaged_parquet_page_fails_its_shard_at_once_naming_the_file(tmp_path, caplog, codec, words):
    """Found by review (h92): damage past the footer (a data page's bytes) raised the codec's
    OSError while batches were read: retried 3 times as transient, its line naming no file."""
    root = tmp_path / "in"
    root.mkdir()
    write_parquet_with_a_damaged_page(root / "bad.parquet", codec)
    config = parse_config({"name": "t", "stages": [{"type": "gopher_quality", "params": {"min_words": 1}}]})
    with caplog.at_level(logging.INFO, logger="refinery.executors"):
        summary = run_pipeline(config, str(root), str(tmp_path / "out"), workers=1, progress=False)
    [failed] = summary.failed
    first = failed.error.splitlines()[0]
    assert f"damaged Parquet file {root / 'bad.parquet'}: {words}" in first, failed.error
    assert not [r for r in caplog.records if "attempt 2" in r.getMessage() or "retrying" in r.getMessage()]


def test_a_refinery_dedup_output_is_refused_as_input_and_below_one(tmp_path, cli):
    """Found by review (h92): ``refinery dedup``'s run.json records its passes but no ``config``,
    so its output was no run directory to the listing: given as input (or found inside one), its
    removed/ and index shards were read, and its JSON records (now that ``.json`` is JSON lines)
    too: 519 rows read from 10 documents, 7 shards failed."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.jsonl").write_text("".join(json.dumps(d) + "\n" for d in real_docs(4)))
    config = parse_config({"name": "t", "stages": [{"type": "url_filter", "params": {"use_blocklist": False}}]})
    run_pipeline(config, str(root), str(tmp_path / "run"), workers=1, progress=False)
    code, _, err = cli("dedup", tmp_path / "run", "-o", root / "dd", "--method", "exact", "--workers", "1")
    assert code == 0, err
    with pytest.raises(Exception, match=f"input {root / 'dd'} is a refinery run directory: its documents are in "
                                        f"{root / 'dd' / 'kept'}; give that as the input"):
        run_pipeline(config, str(root / "dd"), str(tmp_path / "out"), workers=1, progress=False)
    # below an input, beside its own files or deeper: refused, naming the run (h178: it was left out
    # with a warning among the progress lines, the run's corpus lost; `refinery dedup` said nothing)
    with pytest.raises(ConfigError, match=re.escape(
            f"input {root} holds the refinery run {root / 'dd'} beside 1 input file of its own: a run's files are its "
            f"output, not input, and its documents ({root / 'dd' / 'kept'}) would be left out: move the run out of "
            f"{root}, or give {root / 'dd' / 'kept'} to a run of its own")):
        run_pipeline(config, str(root), str(tmp_path / "out"), workers=1, progress=False)
    (root / "deeper" / "x").mkdir(parents=True)
    (root / "dd").rename(root / "deeper" / "x" / "dd")
    with pytest.raises(ConfigError, match=re.escape(f"input {root} holds the refinery run {root / 'deeper' / 'x' / 'dd'} "
                                                    f"beside 1 input file")):
        run_pipeline(config, str(root), str(tmp_path / "out"), workers=1, progress=False)
    assert not (tmp_path / "out").exists()
    shutil.move(root / "deeper", tmp_path / "moved")  # moved out, as the line says: a.jsonl alone
    summary = run_pipeline(config, str(root), str(tmp_path / "out"), workers=1, progress=False)
    assert not summary.failed and summary.stats["docs_read"] == 4


def test_a_utf16_jsonl_file_is_read_and_another_compression_is_one_named_break(tmp_path, caplog):
    """Found by adversarial testing (session 49): JSON lines saved by Windows PowerShell 5 (``>``,
    ``Out-File``: UTF-16 with a BOM) were 3 docs read as 2 ``bad_json`` / ``invalid_utf8`` rows and
    one lost; a ``.jsonl.gz`` that is xz (or bzip2, lz4, zip) was a row per random "line" (a
    10-line file: 113 ``invalid_utf8`` rows), naming neither the file nor the format."""
    import bz2
    import codecs
    import lzma

    docs = real_docs(3)
    lines = "".join(json.dumps(d, ensure_ascii=False) + "\r\n" for d in docs)
    for codec in ("utf-16", "utf-16-be", "utf-32"):
        src = tmp_path / codec / "in" / "wide.jsonl"
        src.parent.mkdir(parents=True)
        bom = b"\xfe\xff" if codec == "utf-16-be" else b""
        src.write_bytes(gzip.compress(bom + lines.encode(codec)))
        stats, out = run_shard(tmp_path / codec, src)
        assert stats["docs_kept"] == 3 and stats["docs_removed"] == 0, (codec, stats["stages"])
        assert table(out, "kept").column("text").to_pylist() == [d["text"] for d in docs]
    # a lone surrogate fails its own line, as invalid UTF-8 does; an odd last byte is a cut stream
    bad = tmp_path / "utf-16-bad" / "in" / "wide.jsonl"
    bad.parent.mkdir(parents=True)
    middle = '{"id": "x", "text": "a'.encode("utf-16-le") + b"\x00\xdc" + '"}\n'.encode("utf-16-le")
    bad.write_bytes(codecs.BOM_UTF16_LE + (json.dumps(docs[0]) + "\n").encode("utf-16-le") + middle
                    + (json.dumps(docs[1]) + "\n").encode("utf-16-le") + b"{")
    stats, out = run_shard(bad.parents[1], bad)
    assert table(out, "kept").column("text").to_pylist() == [docs[0]["text"], docs[1]["text"]]
    assert table(out, "removed").column("removed_reason").to_pylist() == ["invalid_utf8", "corrupt_stream"]
    raw = lines.encode()
    for name, packed in (("xz", lzma.compress(raw)), ("bzip2", bz2.compress(raw))):
        src = tmp_path / name / "in" / "packed.jsonl.gz"
        src.parent.mkdir(parents=True)
        src.write_bytes(packed)
        caplog.clear()
        stats, out = run_shard(tmp_path / name, src)
        assert stats["docs_read"] == 1 and table(out, "removed").column("removed_reason").to_pylist() == ["corrupt_stream"]
        assert f"unreadable JSONL shard {src}: it is {name}-compressed" in caplog.text


MANY_LANGUAGES = ROOT / "data" / "sample" / "cc_docs" / "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"  # 53 languages


def test_utf16_and_utf32_jsonl_without_a_bom_is_read_and_never_mistaken_for_utf8(tmp_path, caplog):
    """Found by adversarial testing (session 49): JSON lines in UTF-16/32 without a byte-order mark
    (Python's ``open(..., encoding="utf-16-le")``, .NET's ``Encoding.Unicode``, a BOM a tool
    stripped) were read as UTF-8: every line a ``bad_json`` / ``invalid_utf8`` row. Now recognised
    from the first bytes' NULs and a JSON object's start; a UTF-8 file is never taken for them."""
    from refinery.io.jsonl import _as_utf8

    with gzip.open(MANY_LANGUAGES, "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f][:60]
    lines = "\n" + "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)  # a blank line first
    for codec in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        gzipped = codec == "utf-16-le"  # recognised after gzip too
        src = tmp_path / codec / "in" / ("wide.jsonl.gz" if gzipped else "wide.jsonl")
        src.parent.mkdir(parents=True)
        data = lines.encode(codec)
        src.write_bytes(gzip.compress(data, compresslevel=1) if gzipped else data)
        stats, out = run_shard(tmp_path / codec, src)
        assert stats["docs_kept"] == 60 and stats["docs_removed"] == 0, (codec, stats["stages"])
        assert table(out, "kept").column("text").to_pylist() == [d["text"] for d in docs]
    # wide text that is not JSON lines: one named row, not a bad row per "line"
    src = tmp_path / "list" / "in" / "list.jsonl"
    src.parent.mkdir(parents=True)
    src.write_bytes("".join(json.dumps(list(d)) + "\n" for d in docs).encode("utf-16-be"))
    caplog.clear()
    stats, out = run_shard(tmp_path / "list", src)
    assert table(out, "removed").column("removed_reason").to_pylist() == ["corrupt_stream"]
    assert (f"unreadable JSONL shard {src}: it looks like UTF-16-BE text without a byte-order mark, but it does "
            "not start with a JSON object: convert it to UTF-8 (iconv -f UTF-16BE -t UTF-8)") in caplog.text
    # NULs that are not wide text (a zeroed block, junk before a newline) stay UTF-8's bad lines, as before
    for junk in (b"\x00" * 5000, b"x\x00yz" * 30):
        got = b"".join(_as_utf8(iter([junk + b"\n" + lines.encode()]), "j"))
        assert got == junk + b"\n" + lines.encode()
    # every line of real UTF-8 JSON lines (53 languages; the gold and quality sets) as a file's start
    starts = 0
    for path in (MANY_LANGUAGES, ROOT / "data" / "gold" / "lines_gold.jsonl", ROOT / "data" / "quality" / "docs_positives.jsonl.gz"):
        data = (gzip.decompress if path.suffix == ".gz" else bytes)(path.read_bytes()).split(b"\n")
        for i in range(len(data) - 1):
            head = b"\n".join(data[i : i + 8])
            starts += 1
            assert b"".join(_as_utf8(iter([head]), str(path))) == head, (path, i)
    assert starts > 1300
