"""Dolma-style JSON lines (``id``, ``text``, optional ``url`` / ``metadata.url``) as documents.

Streamed line by line (gzip or zstd detected by content, not by name), batch by batch: memory is
bounded by one batch plus one line of at most ``max_line_bytes``. A line that cannot be a document is not
fatal: it becomes a removed row (``id`` = ``<id_prefix>/line<N>``, metric = its 1-based line
number) with one of these reasons, so kept + removed = read holds for every file:

==================  =============================================================================
``line_too_long``   longer than ``max_line_bytes`` (not held in memory: skipped to its end)
``invalid_utf8``    the line is not UTF-8
``bad_json``        not JSON, or not a JSON object
``invalid_unicode`` a string holds a lone surrogate (``"\\ud800"``): not encodable as UTF-8
``bad_id``          ``id`` is not a string or an integer (integers become strings)
``bad_text``        ``text`` is not a string (null or missing text is a document with null text)
==================  =============================================================================

A string ``html`` field is the page (its bytes UTF-8, ``content_type`` ``text/html; charset=utf-8``:
JSON text is Unicode, whatever the page's ``<meta charset>`` says), which an ``extract`` stage
extracts as it does a WARC response's body; any other ``html`` travels in ``input_fields``.

Fields other than ``id``, ``text``, ``url`` and ``html`` (Dolma's ``source``, ``added``, ``created``,
``metadata``; any dataset's own) travel with the document as one JSON object in the column
``input_fields`` (null when a line has none): they were dropped, while Parquet input keeps its
extra columns (found by adversarial testing). One JSON string, not columns, because their types
change from line to line and shard to shard, and ``source`` is refinery's own column (the input
shard).

Blank lines are not documents; they are counted as ``{"blank_line": n}`` in :attr:`JsonlReader.skipped`.
Null or missing ids stay null here: the runner derives them (see ``refinery.io.ids``). A file
whose *compression* is broken (truncated or corrupt ``.jsonl.gz`` / ``.jsonl.zst``) keeps every
complete line decoded before the break, and the break is one more removed row with reason
``corrupt_stream`` (as the WARC reader's damaged spans; id ``<id_prefix>/line<N>``, metric N, the
line cut off or the first one not read); its message is logged and kept in
:attr:`JsonlReader.corrupt`. What follows the break cannot be read (deflate and zstd have no sync
points inside a member or frame). Zstandard (The Pile, RedPajama, SlimPajama ship ``.jsonl.zst``)
is decoded by pyarrow's codec, concatenated frames included. A cut ``.zst`` keeps less than a cut
``.gz``: zstd decodes whole blocks only (up to 128 KiB decoded each, their sequences read
backwards), so the lines of the block the cut falls in are lost, and a file under 128 KiB decoded
(one block) keeps none; no decoder can do better (``zstd -d`` writes nothing for such a file).
"""

from __future__ import annotations

import codecs
import io
import itertools
import json
import logging
import re
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import pyarrow as pa

from refinery.schema import READER_SCHEMA

__all__ = ["JSONL_SCHEMA", "JsonlReadError", "JsonlReader"]

#: the reader's batches: the document and decision columns, and the line's other fields
INPUT_FIELDS = "input_fields"
JSONL_SCHEMA = READER_SCHEMA.append(pa.field(INPUT_FIELDS, pa.string()))
_OWN_FIELDS = frozenset({"id", "text", "url"})
_ID_TEXT = frozenset({"id", "text"})
#: the content type of an ``html`` string read from JSON (see :func:`_parse`)
_HTML_UTF8 = "text/html; charset=utf-8"

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_MAX_BATCH_TEXT = 128 * 2**20  # flush a batch early past this much text


class JsonlReadError(RuntimeError):
    """The file's compression is broken; the message names it. The reader turns it into a
    ``corrupt_stream`` row (see the module docstring)."""


class JsonlReader:
    """Read one JSON-lines stream into :data:`~refinery.schema.READER_SCHEMA` batches."""

    def __init__(self, batch_size: int = 500, max_line_bytes: int = 64 * 2**20) -> None:
        self.batch_size = batch_size
        self.max_line_bytes = max_line_bytes
        self.skipped: dict[str, int] = {}  # same dict for the reader's life (the runner keeps it)
        self.corrupt: str | None = None  # why the file's compression broke, after iteration

    def read(self, stream: BinaryIO, source: str, id_prefix: str | None = None,
             limit: int | None = None) -> Iterator[pa.RecordBatch]:
        """Batches of the documents of ``stream``; ``limit``: at most that many rows (``--limit``),
        the last batch ending at the limit, :attr:`skipped` counting the lines read up to it."""
        self.skipped.clear()
        self.corrupt = None
        return self._batches(stream, source, id_prefix or source, limit)

    def _batches(self, stream: BinaryIO, source: str, id_prefix: str, limit: int | None) -> Iterator[pa.RecordBatch]:
        rows: list[tuple] = []
        text_bytes = 0
        emitted = False
        last = 0
        left = limit  # rows still wanted: no line after the last is read, nor counted (h225)
        for lineno, line in _lines(self._until_break(_as_utf8(_decompressed_chunks(stream, source), source)), self.max_line_bytes):
            if self.corrupt is not None:
                break  # the bytes after the last newline before the break: a line cut off, not a document
            last = lineno
            if line is not None and not line.strip():
                self.skipped["blank_line"] = self.skipped.get("blank_line", 0) + 1
                continue
            row = _parse(line, lineno, source, id_prefix)
            rows.append(row)
            text_bytes += len(row[7] or "")
            if len(rows) >= self.batch_size or text_bytes >= _MAX_BATCH_TEXT or len(rows) == left:
                yield _batch(rows)
                if left is not None:
                    left -= len(rows)
                    if left == 0:
                        return
                rows, text_bytes, emitted = [], 0, True
        if self.corrupt is not None:
            log.warning("%s: kept the %d line(s) before the break; line %d on is one corrupt_stream row",
                        self.corrupt, last, last + 1)
            rows.append(_bad(last + 1, source, id_prefix, "corrupt_stream"))
        if rows or not emitted:  # an empty file is an empty shard with every column
            yield _batch(rows)

    def _until_break(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """``chunks`` until the compression breaks; the break is remembered in :attr:`corrupt`."""
        try:
            yield from chunks
        except JsonlReadError as exc:
            self.corrupt = str(exc)


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_READ = 1 << 13  # decoded bytes per read: a read that meets a break returns nothing, so that much is lost


def _is_zstd(first: bytes) -> bool:
    """A zstd frame, or a zstd *skippable* frame (magic 0x184D2A50-5F): pzstd and the seekable
    format start with one, and such files were read as raw bytes, every document lost as
    ``invalid_utf8`` (found by adversarial testing)."""
    return first.startswith(ZSTD_MAGIC) or (len(first) >= 4 and first[0] & 0xF0 == 0x50
                                             and first[1:4] == b"\x2a\x4d\x18")


class _Replayed(io.RawIOBase):
    """``head`` then the rest of ``stream``; remembers an error of ``stream`` itself, so a failed
    read (a network error) is not taken for broken compression."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head, self.stream = memoryview(head), stream
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if len(self.head):
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        try:
            data = self.stream.read(len(buffer))
        except BaseException as exc:
            self.error = exc
            raise
        buffer[: len(data)] = data
        return len(data)


def _zstd_chunks(first: bytes, stream: BinaryIO, source: str) -> Iterator[bytes]:
    raw = _Replayed(first, stream)
    decoded = pa.CompressedInputStream(pa.PythonFile(io.BufferedReader(raw, _CHUNK), mode="r"), "zstd")
    while True:
        try:
            chunk = decoded.read(_ZSTD_READ)
        except OSError as exc:
            if raw.error is not None:
                raise raw.error from None
            raise JsonlReadError(f"unreadable JSONL shard {source}: corrupt or truncated zstd stream: {exc}") from None
        if not chunk:
            return
        yield chunk


def _decompressed_chunks(stream: BinaryIO, source: str) -> Iterator[bytes]:
    """The file's bytes, gunzipped (all members) when it starts with the gzip magic, decoded
    (all frames) when it starts with the zstd magic."""
    first = stream.read(_CHUNK)
    if _is_zstd(first):
        yield from _zstd_chunks(first, stream, source)
        return
    if not first.startswith(b"\x1f\x8b"):
        while first:
            yield first
            first = stream.read(_CHUNK)
        return
    d = zlib.decompressobj(31)
    data = first
    try:
        while True:
            while data:
                out = d.decompress(data, _CHUNK)
                if out:
                    yield out
                if d.eof:  # next member (or padding)
                    data = d.unused_data
                    if data.strip(b"\x00"):
                        d = zlib.decompressobj(31)
                        continue
                    data = b""
                else:
                    data = d.unconsumed_tail
            data = stream.read(_CHUNK)
            if not data:
                while not d.eof:  # output still inside zlib after max_length-limited calls
                    out = d.decompress(b"", _CHUNK)
                    if not out:
                        break
                    yield out
                if not d.eof:
                    raise JsonlReadError(f"unreadable JSONL shard {source}: truncated gzip stream")
                return
    except zlib.error as exc:
        raise JsonlReadError(f"unreadable JSONL shard {source}: corrupt gzip stream: {exc}") from exc


#: byte-order marks of the UTF-16/32 text Windows tools write (PowerShell 5's ``>`` and
#: ``Out-File``, Notepad's "Unicode"): every line was an ``invalid_utf8`` or ``bad_json`` row
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
              (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
#: other compressions, which the reader does not undo: every "line" was a bad row (a 10-line
#: ``.jsonl`` xz-compressed read as 113 ``invalid_utf8`` rows)
_OTHER_COMPRESSIONS = ((b"\xfd7zXZ\x00", "xz"), (b"BZh", "bzip2"), (b"\x04\x22\x4d\x18", "lz4"),
                       (b"PK\x03\x04", "zip"))


def _as_utf8(chunks: Iterator[bytes], source: str) -> Iterator[bytes]:
    """``chunks`` as UTF-8: text starting with a UTF-16/32 byte-order mark, or recognised as
    UTF-16/32 without one (:func:`_wide_without_bom`), is decoded (a cut code unit is a break of
    the stream, as a corrupt gzip is); a file of another compression is a break at its first
    byte, named, instead of a row per random "line"."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= _SNIFF_BYTES:
            break
    if not head:
        return
    for magic, name in _OTHER_COMPRESSIONS:
        if head.startswith(magic) and not (name == "bzip2" and head[3:4] not in b"123456789"):
            raise JsonlReadError(f"unreadable JSONL shard {source}: it is {name}-compressed (gzip and zstd "
                                 f"are read): decompress it, or recompress it with gzip or zstd")
    codec = next((c for bom, c in _WIDE_BOMS if head.startswith(bom)), None) or _wide_without_bom(head, source)
    if codec is None:
        yield head
        yield from chunks
        return
    # a BOM is consumed; a lone surrogate passes through to fail its own line as invalid_utf8
    decoder = codecs.getincrementaldecoder(codec)("surrogatepass")
    offset = 0
    try:
        for chunk in itertools.chain((head,), chunks):
            yield decoder.decode(chunk).encode("utf-8", "surrogatepass")
            offset += len(chunk)
        yield decoder.decode(b"", final=True).encode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:  # a cut code unit, or (UTF-32) a value past U+10FFFF
        raise JsonlReadError(f"unreadable JSONL shard {source}: invalid {codec.upper()} text near byte "
                             f"{offset + max(exc.start, 0)}") from None


#: the bytes the reader looks at before it decides how the file is encoded
_SNIFF_BYTES = 4096
#: a JSON object's start: the first line of a JSON-lines file (blank lines before it allowed)
_OBJECT_START = re.compile(r"[ \t\r\n]*\{[ \t\r\n]*[\"}]")


def _wide_without_bom(head: bytes, source: str) -> str | None:
    """The UTF-16/32 codec (``utf-16-le`` ...) of a file without a byte-order mark (Python's and
    .NET's ``Encoding.Unicode`` writers, a BOM stripped by a tool): every line was a ``bad_json`` /
    ``invalid_utf8`` row. None for UTF-8 text.

    Safe for UTF-8: the codec is RFC 4627's guess from where the first four bytes hold NULs
    (``json.detect_encoding``), and a JSON text in UTF-8 holds no NUL byte at all (U+0000 must be
    escaped), so a UTF-8 file whose first line is valid JSON is never taken for another encoding.
    The guess is taken when the first 4 KiB decode in that codec to a JSON object's start
    (``{"`` after blank lines); a file whose first bytes are wide text (mostly U+0001-U+00FF) but
    not that is refused, naming the file and the encoding, rather than read as N bad rows; other
    NULs (a zeroed block, binary junk) are read as UTF-8, as before: bad lines, counted."""
    guess = json.detect_encoding(head[:4]) if len(head) >= 2 else "utf-8"
    if guess not in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        return None
    unit = 2 if "16" in guess else 4
    sample = head[:_SNIFF_BYTES]
    try:  # (incremental: a pair of UTF-16 surrogates cut at the sample's end is no error)
        text = codecs.getincrementaldecoder(guess)("strict").decode(sample[: len(sample) - len(sample) % unit])
    except UnicodeDecodeError:
        return None
    if _OBJECT_START.match(text):
        log.info("JSONL shard %s has no byte-order mark but is %s text: read as such", source, guess.upper())
        return guess
    if text and sum("\x01" <= c <= "\xff" for c in text) * 2 >= len(text):
        raise JsonlReadError(f"unreadable JSONL shard {source}: it looks like {guess.upper()} text without a "
                             f"byte-order mark, but it does not start with a JSON object: convert it to UTF-8 "
                             f"(iconv -f {guess.upper().replace('-LE', 'LE').replace('-BE', 'BE')} -t UTF-8)")
    return None


def _lines(chunks: Iterator[bytes], max_line: int) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, line)``; ``None`` for a line over ``max_line`` bytes (never held whole)."""
    buf = bytearray()
    lineno = 0
    too_long = False
    for chunk in chunks:
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                if not too_long:
                    buf += chunk[start:]
                    if len(buf) > max_line:
                        too_long, buf = True, bytearray()
                break
            lineno += 1
            if too_long:
                yield lineno, None
                too_long = False
            else:
                buf += chunk[start:nl]
                yield lineno, (bytes(buf) if len(buf) <= max_line else None)
                buf = bytearray()
            start = nl + 1
    if too_long or buf:
        yield lineno + 1, (None if too_long else bytes(buf))


def _parse(line: bytes | None, lineno: int, source: str, id_prefix: str) -> tuple:
    if line is None:
        return _bad(lineno, source, id_prefix, "line_too_long")
    try:
        # a file written with a BOM (Windows tools) starts with one: the first document is not bad JSON
        text_line = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError:
        return _bad(lineno, source, id_prefix, "invalid_utf8")
    try:
        obj = json.loads(text_line)
    except (ValueError, RecursionError):
        return _bad(lineno, source, id_prefix, "bad_json")
    if not isinstance(obj, dict):
        return _bad(lineno, source, id_prefix, "bad_json")
    doc_id = obj.get("id")
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int, type(None))):
        return _bad(lineno, source, id_prefix, "bad_id")
    if isinstance(doc_id, int):
        doc_id = str(doc_id)  # ids may change type between lines; they are strings here
    text = obj.get("text")
    if text is not None and not isinstance(text, str):
        return _bad(lineno, source, id_prefix, "bad_text")
    url = obj.get("url")
    if not isinstance(url, str):
        meta = obj.get("metadata")
        url = meta.get("url") if isinstance(meta, dict) else None
        url = url if isinstance(url, str) else None
    html = obj.get("html")
    html = html if isinstance(html, str) else None
    if not all(_encodable(s) for s in (doc_id, text, url, html)):
        return _bad(lineno, source, id_prefix, "invalid_unicode")
    # a ``url`` that is not a string (a number, an object) is not the document's url: it travels in
    # ``input_fields`` with the other fields (it was dropped from both; found by adversarial testing)
    own = _OWN_FIELDS if obj.get("url") is None or isinstance(obj["url"], str) else _ID_TEXT
    if html is not None:  # the page, for the extract stage (it stayed in input_fields, never extracted)
        own = own | {"html"}
    others = None
    if len(obj) > len(own) or not own.issuperset(obj):
        rest = {k: v for k, v in obj.items() if k not in own}
        if rest:
            others = _fields_json(rest)
    if html is None:
        return (doc_id, url, None, None, None, source, None, text, None, None, others)
    # JSON text is Unicode: its bytes here are UTF-8, whatever charset the page's <meta> declares
    return (doc_id, url, None, None, _HTML_UTF8, source, html.encode("utf-8"), text, None, None, others)


def _fields_json(fields: dict[str, Any]) -> str:
    """``fields`` as strict JSON: NaN and infinities (Python's json reads them) become null, and a
    lone surrogate stays escaped (``\\ud800``); such metadata must not cost the document its place
    (found by adversarial testing)."""
    try:
        text = json.dumps(fields, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or an infinity somewhere
        text = json.dumps(_finite(fields), ensure_ascii=False, allow_nan=False)
    return text if _encodable(text) else json.dumps(json.loads(text))  # ASCII-escaped: always UTF-8


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _encodable(s: Any) -> bool:
    if s is None:
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad(lineno: int, source: str, id_prefix: str, reason: str) -> tuple:
    return (f"{id_prefix}/line{lineno}", None, None, None, None, source, None, None, reason, float(lineno), None)


def _batch(rows: list[tuple]) -> pa.RecordBatch:
    if not rows:
        return pa.RecordBatch.from_pylist([], schema=JSONL_SCHEMA)
    arrays = [pa.array(list(col), type=f.type) for col, f in zip(zip(*rows), JSONL_SCHEMA)]
    return pa.RecordBatch.from_arrays(arrays, schema=JSONL_SCHEMA)
