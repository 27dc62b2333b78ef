"""Bad input through the real RefinedWeb pipeline (configs/refinedweb.yaml): every broken document
is counted with a reason, every unreadable shard is refused with a message naming it, and the run
finishes with the good shards done.

Corpus (built here, next to one untouched real WARC):
- a real WARC cut off mid-file (truncated gzip), and one with garbage bytes between records;
- HTML bombs: 100k-deep nesting, a 51 MB page (over the reader's 50 MB limit), a 3 MB page
  (over extraction's 2 MB limit), binary bytes served as text/html, invalid UTF-8, an empty body;
- a Parquet shard with the wrong schema and a non-WARC .warc.gz;
- JSONL shards (empty documents, a truncated .jsonl.gz) in a run of their own: empty documents are
  counted, the truncated file keeps every line before the cut and counts the cut as one
  ``corrupt_stream`` row, as a truncated WARC does.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import shutil
import time
import uuid
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from refinery.config import ConfigError, load_config
from refinery.pipeline import run_pipeline
from refinery.stats.counters import check_conservation

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "refinedweb.yaml"


def filters_config():
    """The recipe's document stages alone: a one-pass run (no dedup, no tokens)."""
    return load_config(CONFIG).model_copy(update={"dedup": [], "tokenize": None})
WARCS = ROOT / "data" / "sample" / "warc"
GOOD = "warc_sample-0000.warc.gz"

ENGLISH = (
    "The committee met on Tuesday to review the annual budget and the plans for the new library. "
    "Members agreed that the reading rooms should stay open later in the evening during the winter. "
)


def _record(writer: WARCWriter, rid: str, body: bytes, content_type: str = "text/html; charset=utf-8") -> None:
    http = StatusAndHeaders("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))],
                            protocol="HTTP/1.1")
    record = writer.create_warc_record(
        f"https://example.org/{rid}", "response", payload=io.BytesIO(body), http_headers=http,
        warc_headers_dict={"WARC-Record-ID": f"<urn:uuid:{rid}>"},
    )
    writer.write_record(record)


def _ids() -> dict[str, str]:
    return {name: str(uuid.uuid5(uuid.NAMESPACE_URL, name)) for name in
            ("nested", "huge", "large", "binary", "bad_utf8", "empty", "good", "before_garbage", "after_garbage")}


def _build_bombs(path: Path, ids: dict[str, str]) -> None:
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        _record(w, ids["nested"], b"<html><body>" + b"<div>" * 100_000 + ENGLISH.encode() + b"</div>" * 100_000 + b"</body></html>")
        # 51 MB: compresses to ~50 KB, so building and reading it stays fast.
        _record(w, ids["huge"], b"<html><body>" + b"<p>" + b"a " * (51 * 2**19) + b"</p></body></html>")
        _record(w, ids["large"], b"<html><body>" + (b"<p>" + ENGLISH.encode() + b"</p>") * 16_000 + b"</body></html>")
        _record(w, ids["binary"], random.Random(0).randbytes(200_000))
        _record(w, ids["bad_utf8"], b"<html><body><p>" + (ENGLISH.encode() + b"\xff\xfe\xc3\x28 ") * 40 + b"</p></body></html>")
        _record(w, ids["empty"], b"")
        _record(w, ids["good"], b"<html><head><title>Library</title></head><body><article><p>"
                + (ENGLISH * 6).encode() + b"</p></article></body></html>")


def _build_garbage(path: Path, ids: dict[str, str]) -> None:
    buf = io.BytesIO()
    _record(WARCWriter(buf, gzip=True), ids["before_garbage"], b"<html><body><p>" + (ENGLISH * 5).encode() + b"</p></body></html>")
    garbage = random.Random(1).randbytes(5000)
    after = io.BytesIO()
    _record(WARCWriter(after, gzip=True), ids["after_garbage"], b"<html><body><p>" + (ENGLISH * 5).encode() + b"</p></body></html>")
    path.write_bytes(buf.getvalue() + garbage + after.getvalue())


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    src = tmp_path_factory.mktemp("bad-input")
    ids = _ids()
    shutil.copy(WARCS / GOOD, src / GOOD)
    real = (WARCS / "warc_sample-0001.warc.gz").read_bytes()
    (src / "truncated.warc.gz").write_bytes(real[: len(real) * 6 // 10])
    _build_garbage(src / "garbage.warc.gz", ids)
    _build_bombs(src / "bombs.warc.gz", ids)
    (src / "not_a_warc.warc.gz").write_bytes(gzip.compress(b"%PDF-1.7 this is not a WARC file\n" * 100))
    pq.write_table(pa.table({"url": ["https://example.org/x"], "body": [b"<html></html>"]}), src / "wrong_schema.parquet")

    out = tmp_path_factory.mktemp("bad-run") / "run"
    # the Parquet file every pass would fail is refused before any shard (every footer is read up
    # front, session 49); with shards allowed to fail it is read, fails, and is set aside
    with pytest.raises(ConfigError, match=r"wrong_schema\.parquet has neither a 'text' nor an 'html' column; it has "
                       r"\['url', 'body'\]; no shard was run \(--max-failed-fraction runs the other files"):
        run_pipeline(filters_config(), str(src), str(out), workers=2, progress=False)
    assert not out.exists()
    config = filters_config()
    config.executor.max_failed_fraction = 0.2  # 1 of 6
    started = time.time()
    summary = run_pipeline(config, str(src), str(out), workers=2, progress=False)
    return src, out, summary, ids, time.time() - started


def _stats(out: Path, shard: str) -> dict:
    return json.loads((out / "stats" / f"{shard}.json").read_text())


def _removed(out: Path) -> dict[str, tuple[str, str]]:
    table = pa.concat_tables([pq.read_table(p, columns=["id", "removed_stage", "removed_reason"])
                              for p in sorted((out / "removed").glob("*.parquet"))], promote_options="permissive")
    return {r["id"]: (r["removed_stage"], r["removed_reason"]) for r in table.to_pylist()}


def _kept_ids(out: Path) -> set[str]:
    return {i for p in sorted((out / "kept").glob("*.parquet")) for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()}


def test_run_finishes_and_refuses_unreadable_shards_clearly(bad_run):
    src, out, summary, _, elapsed = bad_run
    assert not summary.failed
    failed = {o.shard: o.error for o in summary.set_aside}
    assert set(failed) == {"wrong_schema"}, failed
    assert "has neither a 'text' nor an 'html' column; it has ['url', 'body']" in failed["wrong_schema"]
    assert str(src / "wrong_schema.parquet") in failed["wrong_schema"]
    for shard in failed:
        assert json.loads((out / "failed" / f"{shard}.json").read_text())["error"] == failed[shard]
        assert not (out / "kept" / f"{shard}.parquet").exists()
    done = {o.shard for o in summary.outcomes if o.status == "done"}
    assert done == {"warc_sample-0000", "truncated", "garbage", "bombs", "not_a_warc"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["failed_shards"] == [] and [a["shard"] for a in stats["set_aside_shards"]] == sorted(failed)
    check_conservation(stats["stages"])
    assert stats["docs_read"] == stats["docs_kept"] + stats["docs_removed"]
    assert elapsed < 120, f"bad input took {elapsed:.0f}s: a bomb is not bounded"


def test_damaged_warcs_are_read_up_to_the_damage_and_counted(bad_run):
    _, out, _, ids, _ = bad_run
    removed = _removed(out)
    truncated = _stats(out, "truncated")
    reasons = truncated["stages"][0]["removed"]
    assert truncated["docs_read"] >= 5 and reasons.get("corrupt_stream", 0) + reasons.get("truncated_record", 0) >= 1
    garbage = _stats(out, "garbage")
    assert garbage["stages"][0]["removed"].get("corrupt_stream") == 1
    # The record before the garbage is a document like any other; the damage is one counted row.
    assert ids["before_garbage"] in removed or ids["before_garbage"] in _kept_ids(out)
    # ...and the reader resynchronises after the garbage: the record behind it is read too
    assert garbage["docs_read"] == 3
    assert ids["after_garbage"] in removed or ids["after_garbage"] in _kept_ids(out)
    not_warc = _stats(out, "not_a_warc")
    assert not_warc["docs_read"] == 1 and not_warc["stages"][0]["removed"] == {"corrupt_stream": 1}


def test_html_bombs_and_bad_bytes_are_removed_with_reasons(bad_run):
    _, out, _, ids, _ = bad_run
    removed = _removed(out)
    kept = _kept_ids(out)
    assert removed[ids["huge"]] == ("warc_reader", "body_too_large")
    assert removed[ids["large"]] == ("extract", "html_too_large")
    assert removed[ids["empty"]] == ("warc_reader", "empty_body")
    assert removed[ids["binary"]][0] in ("warc_reader", "extract"), removed[ids["binary"]]
    for name in ("nested", "bad_utf8", "good"):
        assert ids[name] in removed or ids[name] in kept, name  # accounted for, whatever the verdict
    assert ids["good"] in kept or removed[ids["good"]][0] != "extract"
    bombs = _stats(out, "bombs")
    assert bombs["docs_read"] == 7 == bombs["docs_kept"] + bombs["docs_removed"]
    # The deep-nesting page cannot stall the shard past extraction's per-document timeout.
    extract = next(s for s in bombs["stages"] if s["stage"] == "extract")
    assert extract["seconds"] < 30


def test_jsonl_empty_docs_counted_and_truncated_gzip_keeps_the_lines_before_the_cut(tmp_path):
    """A truncated .jsonl.gz failed its whole shard while a truncated .warc.gz keeps the records
    before the cut (found by a new-user trial): every complete line is read, the cut is one
    ``corrupt_stream`` row of ``jsonl_reader``, and the run goes on."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "empty_docs.jsonl").write_text("\n".join(json.dumps(d) for d in [
        {"id": "e1", "text": ""}, {"id": "e2", "text": "   "}, {"id": "e3", "text": None}]) + "\n")
    whole = (ROOT / "data" / "sample" / "cc_docs" / "multiple_files_cc_en_head-0091.jsonl.gz").read_bytes()
    cut = whole[: len(whole) // 2]
    (src / "cut.jsonl.gz").write_bytes(cut)
    complete = zlib.decompressobj(31).decompress(cut).count(b"\n")  # the lines whole before the cut
    out = tmp_path / "run"
    summary = run_pipeline(filters_config(), str(src), str(out), workers=1, progress=False)
    assert not summary.failed, summary.failed
    stats = _stats(out, "cut")
    assert stats["docs_read"] == complete + 1 == stats["docs_kept"] + stats["docs_removed"]
    check_conservation(stats["stages"])
    assert _removed(out)[f"cut/line{complete + 1}"] == ("jsonl_reader", "corrupt_stream")
    empty = _stats(out, "empty_docs")
    assert empty["docs_read"] == 3 and empty["docs_kept"] == 0 and empty["docs_removed"] == 3


def test_jsonl_fields_other_than_id_text_url_travel_with_the_document(tmp_path):
    """Dolma's source / added / created / metadata were dropped by the JSONL reader, while Parquet
    keeps its extra columns (found by adversarial testing): they travel as one JSON object."""
    src = tmp_path / "in"
    src.mkdir()
    lines = [{"id": "d1", "text": ENGLISH, "source": "c4", "added": "2024-01-01", "metadata": {"url": "http://a.org/1",
                                                                                             "score": 0.5}},
             {"id": "d2", "text": ENGLISH + " More.", "url": "http://b.org/2"}]
    (src / "dolma.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    out = tmp_path / "run"
    run_pipeline(filters_config(), str(src), str(out), workers=1, progress=False)
    rows = {r["id"]: r for r in pq.read_table(out / "kept").to_pylist() + pq.read_table(out / "removed").to_pylist()}
    assert json.loads(rows["d1"]["input_fields"]) == {k: v for k, v in lines[0].items() if k not in ("id", "text")}
    assert rows["d1"]["url"] == "http://a.org/1" and rows["d1"]["source"].endswith("dolma.jsonl")
    assert rows["d2"]["input_fields"] is None
    # a lone surrogate or a NaN in the metadata does not cost the document its place
    import io

    from refinery.io.jsonl import JsonlReader

    line = b'{"id": "x", "text": "fine text", "meta": {"title": "\\ud800x", "n": NaN}}\n'
    (row,) = [r for b in JsonlReader().read(io.BytesIO(line), "s") for r in b.to_pylist()]
    assert row["_reason"] is None and json.loads(row["input_fields"]) == {"meta": {"title": "\ud800x", "n": None}}


def test_jsonl_url_that_is_not_a_string_travels_in_input_fields():
    """Found by adversarial testing: a `url` that is a number or an object was neither the
    document's url nor kept in `input_fields`: the value was dropped without a word."""
    import io

    from refinery.io.jsonl import JsonlReader

    lines = [{"id": "n", "text": "t", "url": 5}, {"id": "o", "text": "t", "url": {"href": "http://a.org/"}, "x": 1},
             {"id": "s", "text": "t", "url": "http://b.org/"}, {"id": "z", "text": "t", "url": None}]
    data = "".join(json.dumps(d) + "\n" for d in lines).encode()
    rows = {r["id"]: r for b in JsonlReader().read(io.BytesIO(data), "s") for r in b.to_pylist()}
    assert rows["n"]["url"] is None and json.loads(rows["n"]["input_fields"]) == {"url": 5}
    assert rows["o"]["url"] is None and json.loads(rows["o"]["input_fields"]) == {"url": {"href": "http://a.org/"}, "x": 1}
    assert rows["s"]["url"] == "http://b.org/" and rows["s"]["input_fields"] is None
    assert rows["z"]["url"] is None and rows["z"]["input_fields"] is None


def test_jsonl_html_is_extracted_and_a_given_text_beside_html_is_replaced_and_counted(tmp_path):
    """Found by adversarial testing: a JSONL ``html`` field was never extracted (the page stayed in
    ``input_fields`` and the document was removed as ``empty_text``). It is the page now, extracted
    as a WARC response's body; a row with both ``text`` and ``html`` is extracted from its html
    (the recipe decides every text) and counted as ``input_text_replaced``."""
    from warcio.archiveiterator import ArchiveIterator

    with open(WARCS / GOOD, "rb") as f:
        pages = [(r.rec_headers.get_header("WARC-Target-URI"), r.content_stream().read().decode("utf-8"))
                 for r in ArchiveIterator(f) if r.rec_type == "response"
                 and "html" in (r.http_headers.get_header("Content-Type") or "")][:3]
    # the page's <meta charset> lies: JSON text is Unicode, its bytes are read as UTF-8
    lying = pages[0][1].replace("<head>", '<head><meta charset="iso-8859-1">', 1) + "<p>Café über</p>"
    lines = [{"id": "html", "url": pages[0][0], "html": lying},
             {"id": "both", "url": pages[1][0], "html": pages[1][1], "text": "a provider's own text"},
             {"id": "number", "text": ENGLISH, "html": 5}]
    src = tmp_path / "in"
    src.mkdir()
    (src / "pages.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    config = load_config(CONFIG).model_copy(update={"dedup": [], "tokenize": None, "stages": [
        s for s in load_config(CONFIG).stages if s.type == "extract"]})
    config.stages[0].params["timeout_s"] = 0
    out = tmp_path / "run"
    summary = run_pipeline(config, str(src), str(out), workers=1, progress=False)
    rows = {r["id"]: r for r in pq.read_table(out / "kept").to_pylist() + pq.read_table(out / "removed").to_pylist()}
    assert rows["html"].get("removed_reason") is None and rows["html"]["extract_path"] != "input"
    assert "Meet Our Team" in rows["html"]["text"] or len(rows["html"]["text"]) > 200, rows["html"]["text"][:200]
    assert rows["html"]["input_fields"] is None and "Ã" not in rows["html"]["text"]
    assert rows["both"]["text"] != "a provider's own text" and rows["both"]["extract_path"] != "input"
    assert rows["number"]["text"] == ENGLISH and rows["number"]["extract_path"] == "input"
    assert json.loads(rows["number"]["input_fields"]) == {"html": 5}
    extract = next(s for s in summary.stats["stages"] if s["stage"] == "extract")
    assert extract["counters"]["input_text_replaced"] == 1, extract["counters"]


def test_parquet_html_strings_are_utf8_whatever_the_meta_charset_says(tmp_path):
    """Found by review (h92): an ``html`` column of strings (Unicode, cast to UTF-8 bytes) kept
    no charset, so a page's ``<meta charset="windows-1252">`` decoded those bytes as that codec:
    "CafÃ© crÃ¨me" was kept. Its content_type says UTF-8 now, as JSONL html's does; a binary
    ``html`` column (the page's own bytes) still follows its declarations."""
    para = "Le café de la rue est très fréquenté par des étudiants qui aiment le thé glacé. " * 8
    page = (f'<html><head><meta charset="windows-1252"><title>Café</title></head><body><article>'
            f"<h1>Café crème</h1><p>{para}</p><p>{para}</p></article></body></html>")
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"id": ["s", "n"], "html": [page, None], "text": [None, "given text"],
                             "content_type": ["text/html; charset=ISO-8859-1", None]}), src / "strings.parquet")
    pq.write_table(pa.table({"id": ["b"], "html": [page.encode("cp1252")]}), src / "bytes.parquet")
    config = load_config(CONFIG).model_copy(update={"dedup": [], "tokenize": None, "stages": [
        s for s in load_config(CONFIG).stages if s.type == "extract"]})
    config.stages[0].params["timeout_s"] = 0
    out = tmp_path / "run"
    run_pipeline(config, str(src), str(out), workers=1, progress=False)
    rows = {r["id"]: r for r in pq.read_table(out / "kept").to_pylist()}
    assert sorted(rows) == ["b", "n", "s"]
    for doc in ("s", "b"):
        assert "Café crème" in rows[doc]["text"] and "Ã" not in rows[doc]["text"], rows[doc]["text"][:100]
    assert rows["s"]["content_type"] == "text/html; charset=utf-8"
    assert rows["n"]["content_type"] is None and rows["n"]["text"] == "given text"
