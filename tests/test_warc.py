"""WARC reader: real Common Crawl / ClueWeb / wget WARCs, and crafted broken inputs.

The invariant checked everywhere: one row per response record, plus one ``corrupt_stream`` row
iff the file is damaged, and nothing raises for bad bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
import zlib
from collections import Counter
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from fastwarc.warc import ArchiveIterator

from refinery.io.warc import READER_SCHEMA, WarcReader, read_warc, sniff_html

ROOT = Path(__file__).resolve().parents[1]
WARCS = ROOT / "data" / "sample" / "warc"
CC = WARCS / "resiliparse_warcfile.warc.gz"


def read_rows(data: bytes | io.IOBase, source: str = "test", **kw) -> tuple[list[dict], WarcReader]:
    reader = WarcReader(**kw)
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    batches = list(reader.read(stream, source))
    for b in batches:
        assert b.schema.equals(READER_SCHEMA)
        assert b.num_rows <= reader.batch_size
    rows = [r for b in batches for r in b.to_pylist()]
    corrupt = [r for r in rows if r["_reason"] == "corrupt_stream"]
    # one row per response record, plus one per damaged span (the reader resynchronises after it)
    assert len(rows) == reader.responses + len(reader.corrupt_offsets)
    assert len(corrupt) == len(reader.corrupt_offsets) == len(reader.resync_offsets)
    assert reader.corrupt_offset == (reader.corrupt_offsets[0] if corrupt else None)
    assert [r["_metric"] for r in corrupt] == reader.corrupt_offsets
    # ids name the file, not the user's directories (the same in every checkout)
    assert [r["id"] for r in corrupt] == [f"{os.path.basename(source)}#corrupt@{o}" for o in reader.corrupt_offsets]
    assert len({r["id"] for r in rows}) == len(rows) or any(r["warc_record_id"] for r in rows)
    return rows, reader


def reasons(rows: list[dict]) -> Counter:
    return Counter(r["_reason"] for r in rows)


def member_offsets(data: bytes) -> list[int]:
    offsets, off = [], 0
    while off < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[off:])
        offsets.append(off)
        off = len(data) - len(d.unused_data)
    return offsets


def fastwarc_types(path: Path) -> Counter:
    with open(path, "rb") as f:
        return Counter(str(r.record_type) for r in ArchiveIterator(f, parse_http=False))


# --------------------------------------------------------------------------------------------
# real files
# --------------------------------------------------------------------------------------------
EXPECTED = {
    # file: (responses, skipped non-response records, reasons)
    "cc_whirlwind_whirlwind.warc.gz": (1, {"warcinfo": 1, "request": 1, "metadata": 1}, {None: 1}),
    "resiliparse_warcfile.warc.gz": (16, {"warcinfo": 1, "request": 17, "metadata": 16}, {None: 16}),
    "resiliparse_clueweb-quirk.warc.gz": (29, {"warcinfo": 1}, {None: 29}),
    "resiliparse_clipped.warc.gz": (1, {}, {"truncated_record": 1, "corrupt_stream": 1}),
    "warc_sample-0000.warc.gz": (22, {"warcinfo": 1, "request": 22, "metadata": 1, "resource": 2}, {None: 22}),
    "warc_sample-0001.warc.gz": (15, {"warcinfo": 1, "request": 15, "metadata": 1, "resource": 2}, {None: 15}),
}


def test_expected_table_covers_every_sample_file():
    assert sorted(p.name for p in WARCS.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_warc_files(name):
    path = WARCS / name
    rows, reader = read_rows(path.read_bytes(), source=str(path), batch_size=7)
    responses, skipped, expected_reasons = EXPECTED[name]
    assert reader.responses == responses
    assert reader.skipped_records == skipped
    assert dict(reasons(rows)) == expected_reasons
    # the reader sees the same records as FastWARC's own iterator
    assert reader.records == sum(fastwarc_types(path).values())
    docs = [r for r in rows if r["_reason"] != "corrupt_stream"]
    assert len({r["id"] for r in docs}) == len(docs)
    for r in docs:
        assert r["source"] == str(path)
        assert r["text"] is None
        assert r["url"] and not r["url"].startswith("<") and not r["url"].endswith(">")
        assert r["warc_record_id"].startswith("<urn:uuid:")
        assert r["id"] == r["warc_record_id"][len("<urn:uuid:") : -1]
        assert r["warc_date"]
        if r["_reason"] is None:
            assert r["content_type"].lower().startswith("text/html")
            assert sniff_html(r["html"]), r["url"]
        else:
            assert r["html"] is None


def test_clipped_file_is_counted_not_crashed_on():
    rows, _ = read_rows((WARCS / "resiliparse_clipped.warc.gz").read_bytes(), source="clipped")
    truncated, corrupt = rows
    assert truncated["_reason"] == "truncated_record"
    assert truncated["url"].startswith("http://www.houstonpress.com/")
    # 88038-byte payload declared, 74970 bytes present in the clipped file
    assert truncated["_metric"] == 88038 - 74970
    assert corrupt["_reason"] == "corrupt_stream" and corrupt["id"] == "clipped#corrupt@0"


def test_clueweb_quirks():
    """ClueWeb09: WARC/0.18, LF-only HTTP headers, an invalid WARC-Date, and a stale
    ``Content-Encoding: gzip`` header on an already decoded body."""
    rows, _ = read_rows((WARCS / "resiliparse_clueweb-quirk.warc.gz").read_bytes())
    first = rows[0]
    assert first["content_type"] == "text/html; charset=EUC-JP"
    assert first["warc_date"] == "2008-10-294T05:21:46-0700"  # as written, invalid or not
    assert first["html"].startswith(b"<html>\n<head>\n<title>")  # HTTP headers not leaked into the body
    assert b"Content-Encoding" not in first["html"][:2000]


def test_chunked_bodies_are_dechunked():
    """wget stores ``Transfer-Encoding: chunked`` bodies as sent; the reader removes the framing."""
    rows, _ = read_rows((WARCS / "warc_sample-0001.warc.gz").read_bytes())
    by_url = {r["url"]: r for r in rows}
    html = by_url["https://creativecommons.org/"]["html"]
    assert html.startswith(b"\n<!DOCTYPE html>")
    assert html.rstrip().endswith(b"</html>")
    assert b"\r\n7d7" not in html  # no chunk-size lines left inside


def test_pyarrow_streams_raw_and_decompressing():
    """Both ways the storage layer may open a file give the same documents."""
    local = pafs.LocalFileSystem()
    for name in ("resiliparse_warcfile.warc.gz", "resiliparse_clipped.warc.gz"):
        path = str(WARCS / name)
        raw_rows, _ = read_rows(local.open_input_stream(path, compression=None), source=path)
        dec_rows, _ = read_rows(local.open_input_stream(path), source=path)  # CompressedInputStream
        assert [r["id"] for r in raw_rows if r["_reason"] != "corrupt_stream"] == [
            r["id"] for r in dec_rows if r["_reason"] != "corrupt_stream"
        ]
        assert reasons(raw_rows) == reasons(dec_rows)


def test_uncompressed_warc_and_non_seekable_short_reads():
    data = CC.read_bytes()
    full, _ = read_rows(data)

    class Trickle:  # only read(), short reads: like a network body
        def __init__(self, payload: bytes) -> None:
            self._b = io.BytesIO(payload)

        def read(self, n: int = -1) -> bytes:
            return self._b.read(min(n, 777) if n and n > 0 else 777)

    trickled, _ = read_rows(Trickle(data))
    plain, _ = read_rows(gzip.decompress(data))
    assert trickled == full
    assert plain == full


def test_reader_counters_are_live_references():
    """The runner keeps ``reader.skipped_records`` before iterating; it must fill in place."""
    reader = WarcReader()
    with open(CC, "rb") as f:
        batches = reader.read(f, "x")
        skipped = reader.skipped_records
        assert skipped == {}
        list(batches)
    assert skipped is reader.skipped_records
    assert skipped == {"warcinfo": 1, "request": 17, "metadata": 16}
    # read_warc is the plain-function form
    with open(CC, "rb") as f:
        assert sum(b.num_rows for b in read_warc(f, "x")) == 16


# --------------------------------------------------------------------------------------------
# crafted records (written with warcio, parsed with our reader)
# --------------------------------------------------------------------------------------------
def make_warc(records: list[tuple], compress: bool = True) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=compress)
    writer.write_record(writer.create_warcinfo_record("crafted.warc.gz", {"software": "refinery-tests"}))
    for rec in records:
        if rec[0].startswith("dns:"):
            url, payload = rec
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(payload),
                                                          warc_content_type="text/dns"))
            continue
        url, status, headers, body = rec
        http = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(url, "request", payload=io.BytesIO(b""),
                                                      http_headers=StatusAndHeaders("GET / HTTP/1.1", [], is_http_request=True)))
        writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))
    return buf.getvalue()


PAGE = (CC.parent / "cc_whirlwind_whirlwind.warc.gz")  # a real page body to reuse


def real_page() -> bytes:
    rows, _ = read_rows(PAGE.read_bytes())
    return rows[0]["html"]


def test_crafted_records_reasons():
    import brotli

    page = real_page()
    big = page * 3
    bomb = gzip.compress(b"<html>" + b" " * 3_000_000)
    records = [
        ("http://a/ok", "200 OK", [("Content-Type", "text/html; charset=UTF-8")], page),
        ("http://a/404", "404 Not Found", [("Content-Type", "text/html")], page),
        ("http://a/301", "301 Moved Permanently", [("Location", "http://a/ok")], b""),
        ("http://a/img", "200 OK", [("Content-Type", "image/png")], b"\x89PNG\r\n\x1a\n" + os.urandom(500)),
        ("http://a/pdf", "200 OK", [("Content-Type", "application/pdf")], b"%PDF-1.4 ..."),
        ("http://a/untyped-html", "200 OK", [], page),
        ("http://a/untyped-bin", "200 OK", [], os.urandom(300)),
        ("http://a/empty", "200 OK", [("Content-Type", "text/html")], b""),
        ("http://a/blank", "200 OK", [("Content-Type", "text/html")], b" \r\n\t "),
        ("http://a/big", "200 OK", [("Content-Type", "text/html")], big),
        ("http://a/gz", "200 OK", [("Content-Type", "text/html"), ("Content-Encoding", "gzip")], gzip.compress(page)),
        ("http://a/stale-gz", "200 OK", [("Content-Type", "text/html"), ("Content-Encoding", "gzip")], page),
        ("http://a/deflate", "200 OK", [("Content-Type", "text/html"), ("Content-Encoding", "deflate")], zlib.compress(page)),
        ("http://a/br", "200 OK", [("Content-Type", "text/html"), ("Content-Encoding", "br")], brotli.compress(page)),
        ("http://a/bomb", "200 OK", [("Content-Type", "text/html"), ("Content-Encoding", "gzip")], bomb),
        ("http://a/chunked", "200 OK", [("Content-Type", "text/html"), ("Transfer-Encoding", "chunked")],
         b"".join(b"%x\r\n%s\r\n" % (len(page[i : i + 1000]), page[i : i + 1000]) for i in range(0, len(page), 1000)) + b"0\r\n\r\n"),
        ("http://a/xhtml", "200 OK", [("Content-Type", "application/xhtml+xml")], page),
        ("http://a/upper", "200 OK", [("Content-Type", "TEXT/HTML;charset=utf-8")], page),
        ("http://a/500", "500 Internal Server Error", [("Content-Type", "text/html")], page),
        ("dns:a", b"20240101000000\na. 300 IN A 1.2.3.4\n"),
    ]
    max_body = len(page) * 2
    rows, reader = read_rows(make_warc(records), max_body_bytes=max_body, batch_size=4)
    got = {r["url"]: (r["_reason"], r["_metric"]) for r in rows}
    assert got == {
        "http://a/ok": (None, None),
        "http://a/404": ("http_status", 404.0),
        "http://a/301": ("http_status", 301.0),
        "http://a/img": ("non_html", None),
        "http://a/pdf": ("non_html", None),
        "http://a/untyped-html": (None, None),
        "http://a/untyped-bin": ("non_html", None),
        "http://a/empty": ("empty_body", None),
        "http://a/blank": ("empty_body", None),
        "http://a/big": ("body_too_large", float(len(big))),
        "http://a/gz": (None, None),
        "http://a/stale-gz": (None, None),
        "http://a/deflate": (None, None),
        "http://a/br": (None, None),
        "http://a/bomb": ("body_too_large", float(max_body + 1)),
        "http://a/chunked": (None, None),
        "http://a/xhtml": (None, None),
        "http://a/upper": (None, None),
        "http://a/500": ("http_status", 500.0),
        "dns:a": ("non_html", None),
    }
    kept = {r["url"]: r["html"] for r in rows if r["_reason"] is None}
    assert all(html == page for html in kept.values()), [u for u, h in kept.items() if h != page]
    assert all(r["html"] is None for r in rows if r["_reason"] is not None)
    assert reader.skipped_records == {"warcinfo": 1, "request": len(records) - 1}
    assert reader.corrupt_offset is None


def _raw_response(n: int, warc_content_type: bytes | None, http: bytes) -> bytes:
    head = (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-%012d>\r\n"
            b"WARC-Target-URI: http://a/%d\r\nWARC-Date: 2020-01-01T00:00:00Z\r\n" % (n, n))
    if warc_content_type is not None:
        head += b"Content-Type: " + warc_content_type + b"\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(http) + http + b"\r\n\r\n"


def test_http_records_fastwarc_does_not_recognise_are_parsed():
    """FastWARC parses HTTP only under an exact lower-case ``application/http`` record type; other
    writers' spellings (or none) used to turn every page into ``non_html`` (found by adversarial
    testing). Chunks kept without a ``Transfer-Encoding`` header are undone only when complete."""
    page = real_page()
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + page
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(page[i : i + 700]), page[i : i + 700]) for i in range(0, len(page), 700))
    untagged_chunks = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + chunks + b"0\r\n\r\n"
    cut_chunks = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + chunks
    records = [
        (b"application/http; msgtype=response", ok),
        (b"Application/HTTP; msgtype=response", ok),
        (None, ok),
        (b"APPLICATION/HTTP", b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n\r\n" + page),
        (b"Application/Http", b"HTTP/1.0 200 OK\nContent-Type: image/png\n\n\x89PNG"),
        (b"application/http; msgtype=response", untagged_chunks),
        (b"Application/HTTP", untagged_chunks),
        (b"application/http; msgtype=response", cut_chunks),
        (None, b"20240101000000\na. 300 IN A 1.2.3.4\n"),  # not HTTP: a dns-like block without a type
        (b"Application/HTTP", ok + b" " * 5000),
    ]
    data = b"".join(_raw_response(i, ct, http) for i, (ct, http) in enumerate(records))
    rows, reader = read_rows(data, max_body_bytes=len(ok) + 1000)
    got = [(r["_reason"], r["_metric"]) for r in rows]
    assert got == [(None, None)] * 3 + [("http_status", 404.0), ("non_html", None)] + [(None, None)] * 3 + [
        ("non_html", None), ("body_too_large", float(len(ok) + 5000))]
    assert [r["html"] == page for r in rows[:3] + rows[5:7]] == [True] * 5
    assert rows[7]["html"] == chunks  # not complete: kept as it came
    assert rows[0]["content_type"] == rows[1]["content_type"] == "text/html"
    assert reader.corrupt_offset is None


def test_verify_digests_catches_flipped_bytes():
    page = real_page()
    data = bytearray(make_warc([("http://a/ok", "200 OK", [("Content-Type", "text/html")], page)], compress=False))
    pos = bytes(data).rindex(b"</html>")
    data[pos + 2 : pos + 6] = b"HTML"  # same length: only a digest can tell
    data = bytes(data)
    rows, _ = read_rows(data)
    assert [r["_reason"] for r in rows] == [None]
    rows, _ = read_rows(data, verify_digests=True)
    assert [r["_reason"] for r in rows] == ["truncated_record"]
    # real files carry valid digests
    for name in ("resiliparse_warcfile.warc.gz", "resiliparse_clueweb-quirk.warc.gz", "warc_sample-0000.warc.gz"):
        rows, _ = read_rows((WARCS / name).read_bytes(), verify_digests=True)
        assert reasons(rows) == {None: EXPECTED[name][0]}


# --------------------------------------------------------------------------------------------
# damaged files
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [b"\x1f", b"x", os.urandom(5000), b"hello world\n" * 200, b"\x1f\x8b" + os.urandom(300),
     gzip.compress(b"not a warc\n" * 100), b"<html><body>not a warc</body></html>"],
    ids=["one-gzip-byte", "one-byte", "random", "text", "gzip-magic-junk", "gzip-of-text", "html"],
)
def test_not_a_warc_is_one_corrupt_row(data):
    rows, reader = read_rows(data, source="bad")
    assert [(r["id"], r["_reason"], r["_metric"]) for r in rows] == [("bad#corrupt@0", "corrupt_stream", 0.0)]
    assert reader.responses == 0


def test_empty_file_has_no_rows():
    rows, reader = read_rows(b"")
    assert rows == [] and reader.corrupt_offset is None and reader.records == 0


def test_gzip_truncated_at_random_offsets():
    data = CC.read_bytes()
    full, _ = read_rows(data)
    members = set(member_offsets(data)) | {len(data)}
    rng = random.Random(1234)
    cuts = sorted(rng.sample(range(1, len(data)), 60)) + sorted(rng.sample(sorted(members), 5))
    for cut in cuts:
        rows, reader = read_rows(data[:cut], source="test")
        docs = [r for r in rows if r["_reason"] not in ("corrupt_stream", "truncated_record")]
        # every document before the damage is read exactly as from the full file
        assert docs == full[: len(docs)], cut
        # a cut inside a member is damage; a cut on a member boundary is a shorter valid file
        assert (reader.corrupt_offset is not None) == (cut not in members), cut
        if reader.corrupt_offset is not None:
            assert reader.corrupt_offset == max(m for m in members if m < cut), cut
        truncated = [r for r in rows if r["_reason"] == "truncated_record"]
        assert len(truncated) <= 1


def test_uncompressed_truncated_at_random_offsets():
    plain = gzip.decompress(CC.read_bytes())
    full, _ = read_rows(plain)
    with io.BytesIO(plain) as f:
        starts = {r.stream_pos for r in ArchiveIterator(f, parse_http=False)} | {len(plain)}
    rng = random.Random(99)
    for cut in sorted(rng.sample(range(1, len(plain)), 80)):
        rows, reader = read_rows(plain[:cut])
        docs = [r for r in rows if r["_reason"] not in ("corrupt_stream", "truncated_record")]
        assert docs == full[: len(docs)], cut
        assert reader.corrupt_offset is not None, cut  # incl. cuts inside a WARC header
    for cut in sorted(starts):  # cuts at record boundaries are valid, shorter files
        _, reader = read_rows(plain[:cut])
        assert reader.corrupt_offset is None, cut


@pytest.mark.parametrize("where", ["between-members", "inside-member", "zeroed-bytes"])
def test_gzip_garbage_in_the_middle(where):
    data = CC.read_bytes()
    full, _ = read_rows(data)
    offsets = member_offsets(data)
    k = len(offsets) // 2
    at = offsets[k]
    junk = random.Random(7).randbytes(3000)
    if where == "between-members":
        bad = data[:at] + junk + data[at:]
    elif where == "inside-member":
        bad = data[: at + 50] + junk + data[at + 50 :]
    else:
        bad = data[: at + 300] + bytes(200) + data[at + 500 :]
    rows, reader = read_rows(bad)
    docs = [r for r in rows if r["_reason"] != "corrupt_stream"]
    assert docs[:8] == full[:8]  # the 8 responses in the members before the damage
    assert rows[8]["_reason"] == "corrupt_stream" and reasons(rows)["corrupt_stream"] == 1
    assert at <= reader.corrupt_offset <= at + 500
    # then the reader resynchronises at the next intact member: only the damaged members are lost
    lo, hi = {"between-members": (at, at), "inside-member": (at + 50, at + 51), "zeroed-bytes": (at + 300, at + 500)}[where]
    bounds = offsets + [len(data)]
    hit = [i for i in range(len(offsets)) if bounds[i] < hi and bounds[i + 1] > lo]
    lost = {r["id"] for i in hit for r in read_rows(data[bounds[i] : bounds[i + 1]])[0]}
    assert docs == [r for r in full if r["id"] not in lost]
    shift = 0 if where == "zeroed-bytes" else len(junk)
    assert reader.resync_offsets == [shift + (bounds[hit[-1] + 1] if hit else at)]


def test_uncompressed_garbage_in_the_middle():
    plain = gzip.decompress(CC.read_bytes())
    full, _ = read_rows(plain)
    with io.BytesIO(plain) as f:
        starts = sorted(r.stream_pos for r in ArchiveIterator(f, parse_http=False))
    at = starts[len(starts) // 2]
    rows, reader = read_rows(plain[:at] + b"\x00garbage\xff" * 100 + plain[at:])
    docs = [r for r in rows if r["_reason"] != "corrupt_stream"]
    assert docs == full[: len(docs)] and len(docs) >= 1
    assert reasons(rows)["corrupt_stream"] == 1
    assert reader.corrupt_offset <= at


def test_trailing_nul_padding_is_not_damage():
    rows, reader = read_rows(CC.read_bytes() + bytes(64))
    assert reader.corrupt_offset is None and reasons(rows) == {None: 16}


def test_io_errors_of_the_input_stream_are_raised():
    """A failing network read is not bad bytes: it must surface so the shard is retried."""
    data = CC.read_bytes()

    class Flaky:
        def __init__(self) -> None:
            self._b = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            if self._b.tell() > 50_000:
                raise ConnectionResetError("connection reset by peer")
            return self._b.read(min(n, 4096) if n and n > 0 else 4096)

    with pytest.raises(ConnectionResetError):
        list(WarcReader().read(Flaky(), "flaky"))


def test_sniff_html():
    assert sniff_html(b"\xef\xbb\xbf  <!DOCTYPE html><html>")
    assert sniff_html(b"\n<html lang=en>")
    assert sniff_html(b"<div class=x>hi</div>")
    assert sniff_html(b"<?xml version='1.0'?><html xmlns='http://www.w3.org/1999/xhtml'>")
    assert not sniff_html(b"<?xml version='1.0'?><rss>")
    assert not sniff_html(b"%PDF-1.4")
    assert not sniff_html(b"\x89PNG\r\n")
    assert not sniff_html(b"<abbr-not-a-tag")


def test_gzip_layer_delivers_every_byte_whatever_the_read_size():
    """Multi-member gzip, highly compressible members, odd read sizes: byte-exact output."""
    from refinery.io.warc import _GzipInput

    page = real_page()
    members = [gzip.compress(page * 40), gzip.compress(b""), gzip.compress(b"x" * 3_000_000), CC.read_bytes()]
    data = b"".join(members)
    expected = b"".join(gzip.decompress(m) for m in members)
    for size in (1, 7, 4096, 65536, 1 << 20, -1):
        inp = _GzipInput(io.BytesIO(data))
        parts = []
        while True:
            chunk = inp.read(size)
            if not chunk:
                break
            parts.append(chunk)
            if 0 < size < 4096 and len(parts) > 20_000:  # then the rest in one go
                parts.append(inp.read(-1))
                break
        assert b"".join(parts) == expected, size
        assert inp.damage_offset is None and inp.io_error is None
        assert inp.tell() == len(expected)


def test_binary_array_equals_the_builders_array() -> None:
    """The reader's one-join HTML column is the array pa.array builds: nulls, empty bodies, order."""
    import pyarrow as pa

    from refinery.io.arrow_rows import binary_array

    bodies = [b"<html>a</html>", None, b"", "ü".encode() * 1000, None, b"\x00\xff"]
    for values in (bodies, [], [None], [b"x"]):
        built = binary_array(tuple(values))
        built.validate(full=True)
        assert built.equals(pa.array(values, pa.binary())) and built.null_count == values.count(None)


def test_take_rows_equals_arrows_filter_on_real_pages(monkeypatch) -> None:
    """The kept-row gather (large HTML/text columns joined in Python) gives Arrow's filter: real
    sample pages, sliced batches, nulls, every row or none kept."""
    import numpy as np
    import pyarrow as pa

    from refinery.io import arrow_rows

    monkeypatch.setattr(arrow_rows, "GATHER_MIN_BYTES", 0)  # gather every binary/string column
    with open(CC, "rb") as f:
        batch = pa.Table.from_batches(list(read_warc(f, source="cc"))).combine_chunks().to_batches()[0]
    texts = pa.array([None if i % 3 == 0 else f"text {i} é" for i in range(batch.num_rows)], pa.string())
    batch = batch.set_column(batch.schema.get_field_index("text"), "text", texts)
    rng = np.random.default_rng(0)
    for part in (batch, batch.slice(7, 30), batch.slice(0, 0)):
        for keep in (rng.random(part.num_rows) < 0.4, np.ones(part.num_rows, bool), np.zeros(part.num_rows, bool)):
            taken = arrow_rows.take_rows(part, keep)
            taken.validate(full=True)
            assert taken.equals(part.filter(pa.array(keep)))


def test_wet_conversion_records_are_text_documents_and_cuts_are_counted():
    """Common Crawl's WET files: each ``conversion`` record is a document whose block is its text
    (html null); empty and oversized ones get the usual reasons; a file cut anywhere keeps every
    document before the cut exactly, and the row invariant holds."""
    import gzip as gz
    import json

    from warcio.warcwriter import WARCWriter

    texts = [json.loads(line)["text"] for line in
             gz.open(Path(__file__).resolve().parents[1] / "data" / "sample" / "cc_docs" / "multiple_files_cc_en_head-0091.jsonl.gz", "rt")]
    texts[2] = "   \n"  # empty
    blocks = [t.encode() for t in texts] + [b"Caf\xe9 au lait, written as Latin-1 by mistake."]
    texts.append("Caf\ufffd au lait, written as Latin-1 by mistake.")  # invalid UTF-8: replaced
    # a page kept in its legacy codec: mostly replacement characters, removed and counted
    blocks.append("Ça été déjà très précisé à Noël, où l'élève révisé était frère d'Hélène.".encode("latin-1"))
    texts.append(None)
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    writer.write_record(writer.create_warcinfo_record("x.warc.wet.gz", {"software": "t"}))
    for i, block in enumerate(blocks):
        writer.write_record(writer.create_warc_record(f"https://s{i}.example/", "conversion",
                                                      payload=io.BytesIO(block), warc_headers_dict={"Content-Type": "text/plain"}))
    data = buf.getvalue()
    rows, reader = read_rows(data)
    assert reader.responses == len(texts) and reader.skipped_records == {"warcinfo": 1}
    assert [r["_reason"] for r in rows] == [None, None, "empty_body"] + [None] * (len(texts) - 4) + ["undecodable"]
    assert 0.05 < rows[-1]["_metric"] < 0.3
    assert [r["text"] for r in rows if r["_reason"] is None] == [t for i, t in enumerate(texts) if i != 2][:-1]
    assert all(r["html"] is None and r["content_type"] == "text/plain" for r in rows)
    assert [r["url"] for r in rows] == [f"https://s{i}.example/" for i in range(len(texts))]
    small, _ = read_rows(data, max_body_bytes=60)
    assert [r["_reason"] for r in small] == [("empty_body" if i == 2 else None if len(b) <= 60 else "body_too_large")
                                             for i, b in enumerate(blocks)]
    assert small[-2]["_reason"] is None and small[0]["_reason"] == "body_too_large"

    members = member_offsets(data)
    for cut in (members[3] + 40, members[-1] + 10, len(data) - 3):
        cut_rows, cut_reader = read_rows(data[:cut])
        docs = [r for r in cut_rows if r["_reason"] not in ("corrupt_stream", "truncated_record")]
        assert docs == rows[: len(docs)] and cut_reader.corrupt_offset is not None, cut


def test_wet_text_counts_towards_the_batch_byte_bound(monkeypatch):
    """A batch is flushed early past ``_MAX_BATCH_BYTES`` of payload, WET text included (Arrow's
    string offsets are 32-bit, and memory is bounded by the batch)."""
    import refinery.io.warc as warc_module
    from warcio.warcwriter import WARCWriter

    monkeypatch.setattr(warc_module, "_MAX_BATCH_BYTES", 2500)
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    for i in range(6):
        writer.write_record(writer.create_warc_record(f"https://s{i}.example/", "conversion",
                                                      payload=io.BytesIO(b"word " * 200), warc_headers_dict={"Content-Type": "text/plain"}))
    batches = list(WarcReader(batch_size=500).read(io.BytesIO(buf.getvalue()), "t"))
    assert [b.num_rows for b in batches] == [3, 3]


@pytest.mark.parametrize("delta", [+100, -100])
@pytest.mark.parametrize("gzipped", [True, False])
def test_a_record_whose_content_length_is_wrong_is_not_kept_as_whole(delta, gzipped):
    """Found by adversarial testing: a response whose Content-Length was 100 bytes too long kept
    the next record's WARC header as the end of its page (it reached the corpus text with the
    resiliparse backend); 100 too short kept the page cut mid-tag. Only the damage after it was
    counted. The record itself is now ``truncated_record``; every other record is as before."""
    import re

    data = CC.read_bytes()
    members, pos = [], 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        out = d.decompress(data[pos:])
        members.append(out)
        pos = len(data) - len(d.unused_data)
    target = [i for i, m in enumerate(members) if b"WARC-Type: response" in m][5]
    m = re.search(rb"Content-Length: (\d+)", members[target])
    members[target] = members[target][:m.start(1)] + str(int(m.group(1)) + delta).encode() + members[target][m.end(1):]
    blob = b"".join(gzip.compress(x) for x in members) if gzipped else b"".join(members)
    rows = [r for b in WarcReader().read(io.BytesIO(blob), "x") for r in b.to_pylist()]
    clean = [r for b in WarcReader().read(io.BytesIO(data), "x") for r in b.to_pylist()]
    bad_id = re.search(rb"WARC-Record-ID: <urn:uuid:([^>]+)>", members[target]).group(1).decode()
    flagged = [r for r in rows if bad_id in (r["warc_record_id"] or "")]
    assert [(r["_reason"], r["html"]) for r in flagged] == [("truncated_record", None)]
    assert sum(r["_reason"] == "corrupt_stream" for r in rows) == 1
    others = {r["id"]: (r["_reason"], r["html"]) for r in rows if r["_reason"] != "corrupt_stream" and r not in flagged}
    assert others == {r["id"]: (r["_reason"], r["html"]) for r in clean if bad_id not in (r["warc_record_id"] or "")}


@pytest.mark.parametrize("gzipped", [True, False])
def test_an_http_header_over_32_kib_is_parsed(gzipped):
    """Found by adversarial testing: an intact page whose HTTP header block passed ~32 KiB (a long
    Content-Security-Policy or Set-Cookie) was removed as ``http_parse_error``: FastWARC refuses
    such headers. The block is parsed from the stream instead; the next record is unaffected."""
    html = b"<html><head><title>t</title></head><body><p>" + b"Some page text. " * 80 + b"</p></body></html>"

    def response(url: str, extra: bytes = b"") -> bytes:
        block = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n" + extra
                 + b"Content-Length: " + str(len(html)).encode() + b"\r\n\r\n" + html)
        head = (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: " + url.encode()
                + b"\r\nWARC-Record-ID: <urn:uuid:" + url[-1].encode() * 8 + b"-0000-0000-0000-000000000000>"
                + b"\r\nContent-Type: application/http; msgtype=response\r\nContent-Length: "
                + str(len(block)).encode() + b"\r\n\r\n")
        record = head + block + b"\r\n\r\n"
        return gzip.compress(record) if gzipped else record

    policy = b"Content-Security-Policy: default-src " + b"https://a.example.com " * 2000 + b"\r\n"
    blob = response("http://e.example/x", policy) + response("http://e.example/y")
    rows = [r for b in WarcReader().read(io.BytesIO(blob), "s") for r in b.to_pylist()]
    assert [(r["url"], r["_reason"], r["html"]) for r in rows] == [("http://e.example/x", None, html),
                                                                   ("http://e.example/y", None, html)]


@pytest.mark.parametrize("name", ["resiliparse_warcfile.warc.gz", "warc_sample-0001.warc.gz"])
def test_garbage_inside_a_whole_file_gzip_member_loses_only_the_damaged_span(name):
    # a WARC gzipped as one member (`gzip file.warc`) whose deflate stream is intact: a garbage
    # record inside it ended the file (every later record lost in one corrupt_stream row);
    # reading goes on at the next WARC header of the inflated bytes, as for an uncompressed file
    plain = gzip.decompress((WARCS / name).read_bytes())
    full, _ = read_rows(plain)
    with io.BytesIO(plain) as f:
        starts = sorted(r.stream_pos for r in ArchiveIterator(f, parse_http=False))
    at = starts[len(starts) // 2]
    junk = b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: zz\r\n\r\n" + b"\x00garbage\xff" * 100 + b"\r\n"
    damaged = plain[:at] + junk + plain[at:]
    expected, _ = read_rows(damaged)  # the same bytes uncompressed
    rows, reader = read_rows(gzip.compress(damaged))
    assert [(r["id"], r["_reason"]) for r in rows if r["_reason"] != "corrupt_stream"] == \
        [(r["id"], r["_reason"]) for r in expected if r["_reason"] != "corrupt_stream"]
    assert reasons(rows)["corrupt_stream"] == reasons(expected)["corrupt_stream"] == 1
    assert reader.corrupt_offsets == [0]  # the compressed offset of the member holding the garbage
    docs = [r for r in rows if r["_reason"] is None]
    assert len(docs) >= sum(r["_reason"] is None for r in full) - 1  # at most the record before the junk


def _records(name: str) -> list[bytes]:
    plain = gzip.decompress((WARCS / name).read_bytes())
    with io.BytesIO(plain) as f:
        starts = sorted(r.stream_pos for r in ArchiveIterator(f, parse_http=False)) + [len(plain)]
    return [plain[a:b] for a, b in zip(starts, starts[1:])]


JUNK_RECORD = b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: zz\r\n\r\n" + b"\x00garbage\xff" * 100 + b"\r\n"


def test_garbage_inside_one_of_several_whole_gzip_members_loses_only_the_damaged_span():
    # found by adversarial testing: a member holding many records (`gzip part.warc`, then
    # concatenated) with garbage inside was left at the next member, losing its later records, and
    # the damage was pinned to the next member's offset; two such members made one corrupt row
    recs = _records("resiliparse_warcfile.warc.gz")
    first = b"".join(recs[5:12]) + JUNK_RECORD + b"".join(recs[12:20])
    second = b"".join(recs[20:25]) + JUNK_RECORD + b"".join(recs[25:])
    members = [gzip.compress(r) for r in recs[:5]] + [gzip.compress(first), gzip.compress(second)]
    expected, _ = read_rows(b"".join(recs[:5]) + first + second)  # the same bytes uncompressed
    rows, reader = read_rows(b"".join(members))
    assert [(r["id"], r["_reason"]) for r in rows if r["_reason"] != "corrupt_stream"] == \
        [(r["id"], r["_reason"]) for r in expected if r["_reason"] != "corrupt_stream"]
    assert reasons(rows)["corrupt_stream"] == reasons(expected)["corrupt_stream"] == 2
    offsets = member_offsets(b"".join(members))
    assert reader.corrupt_offsets == [offsets[5], offsets[6]]  # the compressed offsets of the damaged members
    assert len(rows) == reader.responses + len(reader.corrupt_offsets)


def test_a_whole_gzip_member_with_garbage_and_a_cut_deflate_goes_on_at_the_next_member():
    # the member with garbage inside is read on from its next WARC header up to where its deflate
    # stream is cut (one more corrupt row there), then reading goes on at the next member. Stored
    # deflate (level 0) keeps the cut far past the garbage: the gzip layer meets the garbage first
    recs = _records("warc_sample-0001.warc.gz")
    whole = gzip.compress(b"".join(recs[:4]) + JUNK_RECORD + b"".join(recs[4:20]), compresslevel=0)
    cut = whole[: len(whole) * 3 // 4]
    tail = b"".join(gzip.compress(r) for r in recs[20:])
    rows, reader = read_rows(cut + tail)
    docs = {r["id"] for r in rows if r["_reason"] is None}
    tail_rows, _ = read_rows(tail)
    assert {r["id"] for r in tail_rows if r["_reason"] is None} <= docs  # the next members are read
    after_junk, _ = read_rows(gzip.decompress(whole)[len(b"".join(recs[:4])) + len(JUNK_RECORD):][: 10**5])
    assert next(r["id"] for r in after_junk if r["_reason"] is None) in docs  # and the member after its garbage
    assert reader.corrupt_offsets[0] == 0 and reasons(rows)["corrupt_stream"] == len(reader.corrupt_offsets) == 2
    assert reader.resync_offsets[-1] == len(cut)  # the damaged member's end: the next member
    assert len(rows) == reader.responses + len(reader.corrupt_offsets)


def test_a_whole_gzip_member_with_garbage_cut_at_a_record_boundary_counts_the_cut():
    # the deflate stream of the member with garbage ends cleanly at a record boundary (flushed
    # there, then cut): no record is cut, but the break still is one corrupt row of its own
    recs = _records("warc_sample-0001.warc.gz")
    c = zlib.compressobj(0, zlib.DEFLATED, 31)  # stored: the cut far past the garbage (see above)
    head = c.compress(b"".join(recs[:4]) + JUNK_RECORD + b"".join(recs[4:12])) + c.flush(zlib.Z_FULL_FLUSH)
    cut = head  # the member stops at the flush: no final block, no trailer
    tail = b"".join(gzip.compress(r) for r in recs[20:])
    reader = WarcReader()  # not read_rows: both spans are at member 0, the second id is corrupt@0.2
    rows = [r for b in reader.read(io.BytesIO(cut + tail), "test") for r in b.to_pylist()]
    expected, _ = read_rows(b"".join(recs[:4]) + JUNK_RECORD + b"".join(recs[4:12]) + b"".join(recs[20:]))
    assert [(r["id"], r["_reason"]) for r in rows if r["_reason"] != "corrupt_stream"] == \
        [(r["id"], r["_reason"]) for r in expected if r["_reason"] != "corrupt_stream"]
    assert reasons(rows)["corrupt_stream"] == len(reader.corrupt_offsets) == 2  # the garbage, the cut
    assert reader.corrupt_offsets == [0, 0] and reader.resync_offsets[-1] == len(cut)
    assert [r["id"] for r in rows if r["_reason"] == "corrupt_stream"] == ["test#corrupt@0", "test#corrupt@0.2"]
    assert len(rows) == reader.responses + len(reader.corrupt_offsets)


_READ_UNDER_FILE_SIZE_LIMIT = """
import json, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from refinery.io.warc import WarcReader
reader = WarcReader()
with open(sys.argv[1], "rb") as f:
    rows = [(r["id"], r["_reason"]) for b in reader.read(f, "test") for r in b.to_pylist()]
print(json.dumps({"rows": rows, "corrupt": reader.corrupt_offsets}))
"""


def test_garbage_early_in_a_large_whole_file_gzip_spools_no_temporary_file(tmp_path):
    # found by session 35's trial: the member holding the garbage was inflated whole into a
    # temporary spool before reading on (64 MiB in memory, the rest on disk: a damaged 200 MB
    # `gzip file.warc` spooled 200 MB). It is now inflated as read, with a bounded window in
    # memory: under a file-size limit of 8 MiB for every file the process writes, the read passes
    import json
    import subprocess
    import sys

    recs = [r for name in ("resiliparse_warcfile.warc.gz", "warc_sample-0000.warc.gz") for r in _records(name)]
    plain = b"".join(recs[:6]) + JUNK_RECORD
    while len(plain) < 72 * 2**20:  # past the old spool's 64 MiB in memory
        plain += b"".join(recs[6:])
    path = tmp_path / "whole.warc.gz"
    path.write_bytes(gzip.compress(plain, compresslevel=1))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _READ_UNDER_FILE_SIZE_LIMIT, str(path), str(8 * 2**20)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    expected, _ = read_rows(plain)  # the same bytes uncompressed
    assert [tuple(r) for r in got["rows"] if r[1] != "corrupt_stream"] == \
        [(r["id"], r["_reason"]) for r in expected if r["_reason"] != "corrupt_stream"]
    assert got["corrupt"] == [0] and sum(r[1] == "corrupt_stream" for r in got["rows"]) == 1


def test_a_resync_behind_the_inflated_window_of_a_whole_gzip_member_reads_the_same():
    # inside a whole-file gzip member, garbage after a record larger than the
    # reader's look-back window (16 MiB of inflated bytes): the resync point lies before the
    # window, so the member is inflated again from its start; the rows are those of the same bytes
    # uncompressed
    recs = _records("warc_sample-0000.warc.gz")
    page = next(r for r in recs if b"WARC-Type: response" in r[:400])
    head, _, block = page.partition(b"\r\n\r\n")
    block = block[:-4] * (-(-20 * 2**20 // len(block)))  # a 20 MiB block of the page's real bytes
    head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(block), head)
    big = head.replace(b"WARC-Type: response", b"WARC-Type: resource") + b"\r\n\r\n" + block + b"\r\n\r\n"
    garbage = b"\x00garbage\xff" * 100 + b"\r\n\r\n"  # no record: reading resumes after the big record's start
    plain = b"".join(recs[:3]) + JUNK_RECORD + b"".join(recs[3:8]) + big + garbage + b"".join(recs[8:])
    expected, _ = read_rows(plain)
    rows, reader = read_rows(gzip.compress(plain, compresslevel=1))
    assert [(r["id"], r["_reason"]) for r in rows if r["_reason"] != "corrupt_stream"] == \
        [(r["id"], r["_reason"]) for r in expected if r["_reason"] != "corrupt_stream"]
    assert reasons(rows)["corrupt_stream"] == reasons(expected)["corrupt_stream"] == 2
    assert reader.skipped_records["resource"] == sum(b"WARC-Type: resource" in r[:400] for r in recs) + 1


def test_garbage_read_through_a_stream_of_short_reads_resyncs_as_from_bytes():
    # the resync scan took a read under 16 bytes for the input's end: a non-seekable body giving
    # short reads (a socket, a pipe) ended the scan at the garbage and lost every record after it
    plain = gzip.decompress(CC.read_bytes())
    with io.BytesIO(plain) as f:
        starts = sorted(r.stream_pos for r in ArchiveIterator(f, parse_http=False))
    at = starts[len(starts) // 2]
    damaged = plain[:at] + b"\x00garbage\xff" * 10_000 + plain[at:]  # past what the reader had pulled

    class Dribble:  # only read(), at most 9 bytes a call
        def __init__(self, payload: bytes) -> None:
            self._b = io.BytesIO(payload)

        def read(self, n: int = -1) -> bytes:
            return self._b.read(min(n, 9) if n and n > 0 else 9)

    from_bytes, _ = read_rows(damaged)
    dribbled, reader = read_rows(Dribble(damaged))
    assert dribbled == from_bytes
    assert reasons(dribbled)["corrupt_stream"] == 1 and len(reader.corrupt_offsets) == 1
    cut = next(i for i, r in enumerate(dribbled) if r["_reason"] == "corrupt_stream")
    assert any(r["_reason"] is None for r in dribbled[cut + 1:])  # records after the garbage are read


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_record_without_warc_type_is_a_removed_row_not_a_lost_page(gzipped):
    # found by session 36's trial: a response whose WARC-Type line was lost was only counted among
    # skipped records ("unknown"): a page gone without a row
    plain = gzip.decompress(CC.read_bytes())
    full, _ = read_rows(plain)
    at = plain.index(b"WARC-Type: response\r\n")
    damaged = plain[:at] + plain[at + len(b"WARC-Type: response\r\n"):]
    rows, reader = read_rows(gzip.compress(damaged) if gzipped else damaged)
    assert reasons(rows)["untyped_record"] == 1
    assert [r["id"] for r in rows] == [r["id"] for r in full]  # every other row as before, in place
    assert next(r for r in rows if r["_reason"] == "untyped_record")["id"] == full[0]["id"]
    assert "unknown" not in reader.skipped_records


@pytest.mark.parametrize("spelling", [b"warc-type: response", b"WARC-TYPE: response", b"WARC-Type: "])
def test_a_response_whose_warc_type_header_fastwarc_does_not_read_has_a_row(spelling):
    # found by adversarial testing: FastWARC reads the type only from a header spelled
    # "WARC-Type" with a value; a lower-case field name (names are case-insensitive, WARC 1.1
    # section 4) or an empty value made the page a skipped "unknown" record, lost without a row
    recs = _records("warc_sample-0000.warc.gz")
    page = next(i for i, r in enumerate(recs) if b"WARC-Type: response" in r[:400])
    plain = b"".join(recs)
    odd = b"".join(recs[:page]) + recs[page].replace(b"WARC-Type: response", spelling, 1) + b"".join(recs[page + 1:])
    expected, _ = read_rows(plain)
    for data in (odd, gzip.compress(odd)):
        rows, reader = read_rows(data)
        assert len(rows) == len(expected) and "unknown" not in reader.skipped_records
        got = {r["id"]: r["_reason"] for r in rows}
        want = {r["id"]: r["_reason"] for r in expected}
        if spelling.strip().endswith(b":"):  # no type at all: a removed row
            page_id = next(r["id"] for r in expected if r["warc_record_id"].encode() in recs[page][:600])
            want[page_id] = "untyped_record"
        assert got == want


def test_a_gzip_header_longer_than_a_read_with_garbage_in_its_member_is_read():
    # found by adversarial testing: a whole-file gzip member whose header holds a file name over
    # 256 KiB (one compressed read): the first inflate call of the member stream gave no output
    # and its window bookkeeping raised IndexError, failing the shard (the old spool read it)
    recs = _records("warc_sample-0000.warc.gz")
    plain = b"".join(recs[:3]) + JUNK_RECORD + b"".join(recs[3:])
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    named = (b"\x1f\x8b\x08\x08\0\0\0\0\0\xff" + b"n" * 300_000 + b"\0" + c.compress(plain) + c.flush()
             + (zlib.crc32(plain)).to_bytes(4, "little") + len(plain).to_bytes(4, "little"))
    assert gzip.decompress(named) == plain
    expected, _ = read_rows(plain)
    rows, reader = read_rows(named)
    assert [(r["id"], r["_reason"]) for r in rows if r["_reason"] != "corrupt_stream"] == \
        [(r["id"], r["_reason"]) for r in expected if r["_reason"] != "corrupt_stream"]
    assert reader.corrupt_offsets == [0]


def test_resyncs_behind_the_window_of_a_whole_gzip_member_inflate_it_about_once(monkeypatch):
    # each resync behind the look-back window inflated the member again from its start: k records
    # larger than the window, each followed by garbage, cost k times the member (40 of 17 MiB:
    # 4.0 s against 0.9 s; found by review). Checkpoints of zlib's state bound it; the window is
    # made small here so the member can be
    import refinery.io.warc as warc

    monkeypatch.setattr(warc, "_MEMBER_WINDOW", 1 << 16)
    monkeypatch.setattr(warc, "_INFLATE_STEP", 1 << 14)  # output per zlib call: the window's grain
    inflated = []
    append = warc._MemberStream._append
    monkeypatch.setattr(warc._MemberStream, "_append", lambda self, out: (inflated.append(len(out)), append(self, out)))
    recs = _records("warc_sample-0000.warc.gz")
    page = next(r for r in recs if b"WARC-Type: response" in r[:400])
    head = page.partition(b"\r\n\r\n")[0].replace(b"WARC-Type: response", b"WARC-Type: resource")
    # records longer than the reader's reads (FastWARC's), so the window has moved past their start
    head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % 1_200_000, head)
    plain = b"".join(recs[:3]) + JUNK_RECORD + b"".join(
        head + b"\r\n\r\n" + bytes(1_200_000) + b"\r\n\r\n" + b"\x00garbage\xff" * 10 + b"\r\n\r\n" for _ in range(16)
    ) + b"".join(recs[3:])
    expected, _ = read_rows(plain)
    rows, _ = read_rows(gzip.compress(plain, compresslevel=1, mtime=0))
    assert [(r["id"], r["_reason"]) for r in rows if r["_reason"] != "corrupt_stream"] == \
        [(r["id"], r["_reason"]) for r in expected if r["_reason"] != "corrupt_stream"]
    assert sum(inflated) < 3 * len(plain)  # 2.2 times; from the member's start each time: 9.3 times


def test_a_resource_record_holding_an_html_page_is_a_document():
    """Found by adversarial testing: a ``resource`` record whose Content-Type is HTML (an archive
    of saved pages: the block is the page, no HTTP message) was a skipped record, not a document.
    Other resources (wget's log and arguments, images) stay skipped."""
    from warcio.warcwriter import WARCWriter

    page = real_page()
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    for url, ctype, block in (("http://a/saved.html", "text/html; charset=utf-8", page),
                              ("http://a/saved.xhtml", "application/xhtml+xml", page),
                              ("http://a/empty.html", "text/html", b""),
                              ("metadata://gnu.org/software/wget/warc/wget.log", "text/plain", b"wget log\n"),
                              ("http://a/logo.png", "image/png", b"\x89PNG\r\n\x1a\n")):
        writer.write_record(writer.create_warc_record(url, "resource", payload=io.BytesIO(block), warc_content_type=ctype))
    rows, reader = read_rows(buf.getvalue())
    assert [(r["url"], r["_reason"]) for r in rows] == [("http://a/saved.html", None), ("http://a/saved.xhtml", None),
                                                        ("http://a/empty.html", "empty_body")]
    assert rows[0]["html"] == page and rows[0]["content_type"] == "text/html; charset=utf-8"
    assert reader.responses == 3 and reader.skipped_records == {"resource": 2}


def test_a_zstd_content_encoded_body_is_decoded():
    """Servers answer ``Accept-Encoding: zstd`` (browsers send it since 2024) with zstd bodies: a
    browser-made WARC holding one stored the frame, which extract removed as ``undecodable``
    (found by adversarial testing, session 49). Decoded as gzip/br are, bounded by the limit."""
    import pyarrow as pa

    page = real_page()
    zstd = pa.compress(page, "zstd", asbytes=True)
    bomb = pa.compress(b"<html>" + b" " * 3_000_000, "zstd", asbytes=True)
    html = [("Content-Type", "text/html")]
    records = [("http://a/zstd", "200 OK", html + [("Content-Encoding", "zstd")], zstd),
               ("http://a/stale-zstd", "200 OK", html + [("Content-Encoding", "zstd")], page),
               ("http://a/zstd-over-gzip", "200 OK", html + [("Content-Encoding", "gzip, zstd")],
                pa.compress(gzip.compress(page), "zstd", asbytes=True)),
               ("http://a/zstd-bomb", "200 OK", html + [("Content-Encoding", "zstd")], bomb)]
    max_body = len(page) * 2
    rows, _ = read_rows(make_warc(records), max_body_bytes=max_body)
    assert {r["url"]: (r["_reason"], r["_metric"]) for r in rows} == {
        "http://a/zstd": (None, None), "http://a/stale-zstd": (None, None), "http://a/zstd-over-gzip": (None, None),
        "http://a/zstd-bomb": ("body_too_large", float(max_body + 1))}
    assert all(r["html"] == page for r in rows if r["_reason"] is None)


def _zstd_streamed(page: bytes, step: int) -> tuple[bytes, list[int]]:
    """``page`` zstd-compressed as a server streams it (a flush every ``step`` bytes: a block
    each), and the compressed size after each flush."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    out = pa.CompressedOutputStream(sink, "zstd")
    ends = []
    for i in range(0, len(page), step):
        out.write(page[i : i + step])
        out.flush()
        ends.append(sink.tell())
    out.close()
    return sink.getvalue().to_pybytes(), ends


def cut_body_warc(page: bytes) -> tuple[bytes, dict[str, bytes]]:
    """A WARC (written by warcio) of pages whose compressed bodies are cut, one of them also
    ``WARC-Truncated``, beside whole ones; and the decoded prefix each cut one must keep."""
    import brotli
    import pyarrow as pa
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    zstd, ends = _zstd_streamed(page, 1000)
    at = (ends[3] + ends[4]) // 2  # inside the fifth block: the four before it decode
    gz = gzip.compress(page)
    zlib_stream = zlib.compress(page)
    br = brotli.compress(page, quality=4)  # (the default 11 takes 0.3 s)
    bodies = {  # url: (Content-Encoding, body, the page prefix it holds, WARC-Truncated)
        "http://a/gzip-cut": ("gzip", gz[: len(gz) * 2 // 5], None, None),
        "http://a/deflate-cut": ("deflate", zlib_stream[: len(zlib_stream) // 2], None, None),
        "http://a/br-cut": ("br", br[: len(br) // 2], None, None),
        "http://a/zstd-cut": ("zstd", zstd[:at], page[:4000], None),
        "http://a/zstd-cut-truncated": ("zstd", zstd[:at], page[:4000], "length"),
        "http://a/zstd-one-block-cut": ("zstd", pa.compress(page, "zstd", asbytes=True)[:2000], b"", None),
        "http://a/gzip-whole": ("gzip", gz, page, None),
        "http://a/zstd-whole": ("zstd", zstd, page, None),
        "http://a/plain-truncated": ("", page[:5000], page[:5000], "length"),
    }
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    expected = {}
    for url, (coding, body, prefix, truncated) in bodies.items():
        headers = [("Content-Type", "text/html")] + ([("Content-Encoding", coding)] if coding else [])
        if prefix is None:  # gzip, deflate, br: what their streaming decoders give for the cut stream
            prefix = zlib.decompressobj(47).decompress(body) if coding != "br" else brotli.Decompressor().process(body)
        expected[url] = prefix
        writer.write_record(writer.create_warc_record(
            url, "response", payload=io.BytesIO(body), http_headers=StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1"),
            warc_headers_dict={"WARC-Truncated": truncated} if truncated else None))
    return buf.getvalue(), expected


def test_a_cut_compressed_body_keeps_its_decoded_prefix_and_is_counted():
    """A crawler that stops a download mid-body stores the compressed bytes it has: gzip's prefix
    was kept without a word (a partial page nobody was told of), and a cut zstd body was kept as
    raw bytes, which extract removed as ``undecodable`` (session 49, h207). Now each is decoded up
    to the cut (zstd: its whole blocks, as ``zstd -d`` does) and counted in the reader's
    counters, as a ``WARC-Truncated`` page is; a cut with nothing decodable is ``empty_body``."""
    page = real_page()
    assert len(page) > 8000
    data, expected = cut_body_warc(page)
    rows, reader = read_rows(data, batch_size=3)
    got = {r["url"]: (r["_reason"], r["html"]) for r in rows}
    assert got["http://a/zstd-one-block-cut"] == ("empty_body", None)
    for url, prefix in expected.items():
        if url.endswith("one-block-cut"):
            continue
        reason, html = got[url]
        assert reason is None and html == prefix, (url, reason, len(html or b""), len(prefix))
        assert page.startswith(html) and (len(html) < len(page)) == url.endswith(("-cut", "truncated")), url
    assert 0 < len(expected["http://a/gzip-cut"]) and 0 < len(expected["http://a/br-cut"])
    # every kept page that is partial, counted once per cause (a zstd cut inside a WARC-Truncated record: both)
    assert reader.counters == {"content_encoding_cut": 5, "warc_truncated": 2}
    # counted per read, in the same dict (the runner takes it before iterating)
    counters = reader.counters
    list(reader.read(io.BytesIO(make_warc([("http://a/ok", "200 OK", [("Content-Type", "text/html")], page)])), "x"))
    assert counters is reader.counters and counters == {}


def test_cut_bodies_are_counted_in_the_stats_the_funnel_and_the_report(tmp_path):
    """The reader's counters reach its stage row: the shard marker, the run's stats.json, the
    ``stats`` table and the report's counters table."""
    from rich.console import Console

    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline
    from refinery.stats.funnel import render_funnel
    from refinery.stats.report import build_report

    page = real_page()
    data, _ = cut_body_warc(page)
    root = tmp_path / "in"
    root.mkdir()
    (root / "cut.warc.gz").write_bytes(data)
    (root / "whole.warc.gz").write_bytes(make_warc([("http://a/ok", "200 OK", [("Content-Type", "text/html")], page)]))
    config = parse_config({"name": "t", "stages": [{"type": "url_filter", "params": {"use_blocklist": False}}]})
    out = tmp_path / "out"
    summary = run_pipeline(config, str(root), str(out), workers=1, progress=False)
    assert not summary.failed and summary.stats["docs_read"] == 10
    want = {"content_encoding_cut": 5, "warc_truncated": 2}
    marker = json.loads((out / "stats" / "cut.json").read_text())
    assert marker["stages"][0]["stage"] == "warc_reader" and marker["stages"][0]["counters"] == want
    assert "counters" not in json.loads((out / "stats" / "whole.json").read_text())["stages"][0]  # zero: left out
    merged = json.loads((out / "stats.json").read_text())
    assert merged["stages"][0]["counters"] == want
    console = Console(width=160, file=io.StringIO(), markup=False, highlight=False, color_system=None)
    console.print(render_funnel(merged))
    assert re.search(r"warc_reader\s+content_encoding_cut\s+5\b", console.file.getvalue())
    assert 'data-stage="warc_reader" data-counter="warc_truncated"' in build_report(str(out))
