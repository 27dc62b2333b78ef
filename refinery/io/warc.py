"""WARC reader: "stage 0" of the pipeline, turning WARC files into document batches.

Every HTTP *response* record becomes exactly one row with the :data:`~refinery.schema.DOCUMENT_SCHEMA`
columns (``text`` is null until extraction) plus the stage decision columns ``_reason`` /
``_metric`` (see :mod:`refinery.stages.base`), so the runner counts reader rejects like any other
stage and ``kept + removed = read`` holds from the first step on. Reasons:

======================  ======================================================================
``truncated_record``    the record's block is shorter than its ``Content-Length`` (the file
                        ends or breaks inside it; metric = number of missing bytes), or, with
                        ``verify_digests=True``, its ``WARC-Block-Digest`` does not match
                        (metric null)
``http_status``         HTTP status outside 200..299, or an unparseable status line
                        (metric = status code, null if unknown)
``http_parse_error``    the HTTP header block could not be parsed at all
``non_html``            HTTP ``Content-Type`` is not ``text/html`` / ``application/xhtml+xml``;
                        a missing/empty type is accepted when the body sniffs as HTML. Non-HTTP
                        ``response`` records (``dns:``, ``whois:``) land here too.
``body_too_large``      body (declared, or after content decoding) > ``max_body_bytes``
                        (metric = size in bytes; the body is not kept)
``empty_body``          body is empty or whitespace only (after decoding)
``undecodable``         WET only: over 5% of the text is U+FFFD, bytes that are not UTF-8
                        (metric = that share); HTML is decoded, and judged, by the extract stage
``untyped_record``      the record has no ``WARC-Type`` header (mandatory): it may have been a
                        page, so it is counted here rather than skipped (metric null)
``corrupt_stream``      not a document: one extra row per damaged span of the *file* (bad or
                        truncated gzip member, garbage between or inside records, a wrong
                        ``Content-Length``, a header FastWARC refuses such as a 64 KB URL, a
                        non-WARC file). ``id`` = ``<file name>#corrupt@<offset>``, metric = offset.
                        Reading then *resynchronises*: at the next gzip member that decompresses
                        to a ``WARC/`` header (gzip input), or the next line starting
                        ``WARC/x.y`` (plain input), after the last record already read, and goes
                        on. Nothing raises for bad bytes.
======================  ======================================================================

Removed rows carry ``html = null`` (no point storing images or 50 MB bodies in the removed
shard); kept rows carry the HTTP body with chunked transfer-encoding removed and
``Content-Encoding`` (gzip, deflate, br, zstd) decoded. Bodies whose ``Content-Encoding`` header is
stale (Common Crawl and ClueWeb store decoded bodies but ClueWeb keeps the header) are detected by
their magic bytes and kept as they are. Records with ``WARC-Truncated`` (payload cut at the
crawler's size limit, e.g. Common Crawl's 1 MiB) are complete *records* and are kept, as
RefinedWeb / datatrove do; only records cut by a damaged file count as ``truncated_record``. A
body whose ``Content-Encoding`` stream ends early (a crawler cut it before decoding) is kept
decoded up to the cut (zstd: its whole blocks before the cut, as ``zstd -d``); nothing decoded is
``empty_body``. The pages kept partial so are counted in :attr:`WarcReader.counters` (the reader's
stage row's ``counters`` in the stats): ``warc_truncated`` (a ``WARC-Truncated`` header) and
``content_encoding_cut``; a page can count in both.

Row count invariant, tested on real and crafted-broken files::

    rows == reader.responses + len(reader.corrupt_offsets)

A record is never read twice (resynchronisation starts after the last record returned), so
record ids stay unique. Only the records inside a damaged span are lost: for Common Crawl's one
member per record, the damaged member's record. A file that is one gzip member as a whole cannot
be resynchronised inside its *compressed* bytes (deflate has no sync points): damage there ends
it. When only its WARC bytes are bad (garbage between or inside records of ``gzip file.warc``, or
of one of several such members concatenated), the member is inflated again as it is read (the last
16 MiB of its output kept in memory to go back to, nothing on disk; a resync point further back
inflates it again from its start) and read on as an uncompressed file from the next ``WARC/``
line to the member's end, then at the next member; the damage is at the member's compressed
offset, offsets found inside it are positions in its inflated bytes. A deflate stream cut off after such garbage is read up to the cut, which is
one more damaged span (at the same member offset, id ``...#corrupt@<offset>.2``).

Non-document records (``warcinfo``, ``request``, ``metadata``, ``revisit``, ``resource`` records
that are not HTML, ...) are counted in ``reader.skipped_records`` (``{warc_type: count}``), never
emitted. A ``resource`` record whose ``Content-Type`` is HTML (``text/html``,
``application/xhtml+xml``) holds a page without an HTTP message: it is a document like a response
(its ``url`` the ``WARC-Target-URI``): an archive of saved files (warcit, some wget and
browser-based archives) may hold every page so, and it read as nothing (found by adversarial testing).

WET files (Common Crawl's ``.warc.wet.gz``): each ``conversion`` record is a document too (counted
in ``reader.responses``), its block the page's text: the row carries ``text`` (UTF-8, invalid bytes
replaced) and a null ``html``, so the extract stage keeps it as it is (path ``input``). Reasons:
``truncated_record``, ``body_too_large``, ``empty_body``, as above, and ``undecodable``.

Ids: ``id`` is the WARC-Record-ID's UUID (``urn:uuid:<uuid>`` -> ``<uuid>``; other URNs are kept
whole without the angle brackets), falling back to ``<source>#<record index>`` for records without
one; ``warc_record_id`` keeps the header as written. ``warc_date`` is the ``WARC-Date`` header as
written, ``url`` the ``WARC-Target-URI`` (wget's ``<...>`` brackets stripped), ``content_type`` the
full HTTP ``Content-Type`` value (charset included, extraction needs it).

Usage::

    reader = WarcReader(batch_size=500, max_body_bytes=50 * 2**20)
    for batch in reader.read(stream, source="s3://bucket/x.warc.gz"):   # READER_SCHEMA batches
        ...
    reader.responses, reader.skipped_records, reader.corrupt_offset      # after iteration
    reader.corrupt_offsets, reader.resync_offsets                        # every damaged span

``read_warc(stream, source, ...)`` is the same as a one-off function.

``corrupt_stream`` offsets are byte offsets in the input as stored: for gzip input, the compressed
offset of the member that is bad, cut off, or holds bytes that are not a WARC record (exact
for Common Crawl's one-member-per-record files); for uncompressed input, the start of the last
record read before the damage (or of the unparsed bytes at the end); the segment start (0 for
the file start) if nothing could be read. Resynchronising needs to go back in the input: seekable
streams are seeked (``fs.open_input(uri, seekable=True)``), others are spooled as read.

Implementation: records are parsed by FastWARC. WARC headers are parsed strictly
(``quirks_mode=False``: in quirks mode FastWARC silently skips garbage, even a whole non-WARC
file); HTTP headers leniently, per record (``parse_http(quirks_mode=True)``, needed for ClueWeb's
LF-only HTTP headers). Gzip is decompressed here, member by member, rather than by FastWARC, so
that a bad or cut-off member is pinned to its compressed offset, every member before it is
still read, and reading can resume at the next member (FastWARC ends silently on a truncated gzip). The input is wrapped so FastWARC always
gets ``tell()``: FastWARC 2.x *panics* (``pyo3_runtime.PanicException``, a ``BaseException``)
on streams without it. A WARC header cut off at EOF is spotted because FastWARC turns it into a
record without ``Content-Length``; bytes FastWARC ignores after the last record are spotted from
the remembered last 1 MiB of the stream.

Errors raised by the input stream itself (network, permissions) are not bad bytes: they are
re-raised, so the executor can retry the shard. A stream that already decompresses (pyarrow's
``open_input_stream`` default, ``compression="detect"``) also works: its decompression errors
become ``corrupt_stream`` at a decompressed offset, and it may lose the records in its read-ahead
buffer; open WARCs with ``compression=None`` for exact offsets.
"""

from __future__ import annotations

import collections
import email.parser
import email.policy
import posixpath
import re
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa

from refinery.io.arrow_rows import binary_array
from refinery.io.jsonl import ZSTD_MAGIC
from refinery.schema import READER_SCHEMA  # the document columns plus the decision columns

__all__ = ["READER_SCHEMA", "WarcReader", "read_warc", "sniff_html"]

HTML_MIME_TYPES = frozenset({"text/html", "application/xhtml+xml"})

_GZIP_MAGIC = b"\x1f\x8b"
_RAW_CHUNK = 1 << 18  # compressed bytes pulled from the input per read
_SPOOL_MEMORY = 64 * 2**20  # a non-seekable input's spool stays in memory up to this, then goes to disk
#: a WET text with more U+FFFD than this share of its first _BAD_SAMPLE_CHARS characters is
#: ``undecodable`` (the extract stage's limit for HTML, refinery.stages.extract._MAX_BAD_FRAC)
MAX_REPLACED_FRACTION = 0.05
_BAD_SAMPLE_CHARS = 100_000
_MAX_BATCH_BYTES = 256 * 2**20  # flush a batch early past this much HTML or WET text (Arrow offsets are int32)
_TAIL_BYTES = 1 << 20  # how much of the stream's end is remembered to spot a header cut off at EOF
_BLANK = b"\r\n\t \x00"


_NEVER_SWALLOW = (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError)


#: record types that are documents: HTTP responses (WARC) and Common Crawl's text conversions (WET)
_DOCUMENT_TYPES = ("response", "conversion")


_WARC_TYPES = frozenset({"warcinfo", "response", "resource", "request", "metadata", "revisit",
                         "conversion", "continuation"})


def _record_type(record) -> str:
    """The record's WARC-Type ("" when it has none). FastWARC reads it only from a header
    spelled ``WARC-Type`` (``warc-type: response`` is "unknown"), but field names are
    case-insensitive (WARC 1.1, section 4): a page written so was skipped without a row."""
    rtype = str(record.record_type).rsplit(".", 1)[-1]
    if rtype != "unknown":
        return rtype
    declared = (record.headers.get("WARC-Type") or "").strip().lower()
    return declared if declared in _WARC_TYPES or not declared else "unknown"


# ---------------------------------------------------------------------------------------------
# input wrappers: what FastWARC reads from
# ---------------------------------------------------------------------------------------------
class _Input:
    """Plain passthrough: guarantees ``read(n)`` returns ``n`` bytes unless at EOF, and ``tell()``.

    Never raises: errors from the underlying stream end the stream and are stored in
    ``io_error`` (real I/O problems) or ``damage_offset`` (decompression errors of an
    already-decompressing pyarrow stream).
    """

    def __init__(self, raw: BinaryIO, base: int = 0, decompressing: bool = False) -> None:
        self._raw = raw
        self._base = base  # input offset this segment starts at (positions below are relative)
        self._pos = 0  # bytes handed to FastWARC
        self._eof = False
        self.io_error: BaseException | None = None
        self.damage_offset: int | None = None  # an input offset (absolute)
        self._decompressing = decompressing
        self._tail: collections.deque[bytes] = collections.deque()  # last >= _TAIL_BYTES delivered
        self._tail_len = 0

    # FastWARC's stream protocol -------------------------------------------------------------
    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        parts: list[bytes] = []
        got = 0
        while got < size and not self._eof:
            data = self._raw_read(min(size - got, _RAW_CHUNK))
            if not data:
                if self.damage_offset is not None:
                    self.damage_offset = self._base + self._pos + got
                self._eof = True
                break
            parts.append(data)
            got += len(data)
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._deliver(out)
        return out

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if (whence == 1 and offset == 0) or (whence == 0 and offset == self._pos):
            return self._pos
        raise OSError("WARC input stream is not seekable")

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return True

    def close(self) -> None:  # the caller owns the underlying stream
        pass

    # helpers ------------------------------------------------------------------------------------
    def _raw_read(self, n: int) -> bytes:
        try:
            return self._raw.read(n)
        except Exception as exc:  # noqa: BLE001 - sorted below into "bad bytes" vs "I/O error"
            if self._decompressing and _looks_like_decompression_error(exc):
                self.damage_offset = self._pos
            else:
                self.io_error = exc
            self._eof = True
            return b""

    def _deliver(self, out: bytes) -> None:
        self._pos += len(out)
        if out:
            self._tail.append(out)
            self._tail_len += len(out)
            while self._tail_len - len(self._tail[0]) >= _TAIL_BYTES:
                self._tail_len -= len(self._tail.popleft())

    def _block_in_tail(self, record_pos: int) -> tuple[bytes, int, int] | None:
        """``(tail, its stream position, where the block of the record whose header starts at
        ``record_pos`` starts in it)``, or None when the remembered tail does not hold the header."""
        tail = b"".join(self._tail)
        tail_start = self._pos - len(tail)
        if record_pos < tail_start:
            return None
        header_end = tail.find(b"\r\n\r\n", record_pos - tail_start)
        return None if header_end < 0 else (tail, tail_start, header_end + 4)

    def unparsed_after(self, record_pos: int | None, block_len: int) -> int | None:
        """Stream position of non-blank bytes FastWARC delivered but silently did not parse
        after the record at ``record_pos`` (e.g. a WARC header cut off at EOF), else None.

        Best effort: needs the record's header in the remembered tail of the stream (the last
        >= 1 MiB); bigger final records are not checked.
        """
        if record_pos is None:
            tail = b"".join(self._tail)
            return self._pos - len(tail) if tail.strip(_BLANK) else None
        found = self._block_in_tail(record_pos)
        if found is None:
            return None
        tail, tail_start, block = found
        end = block + block_len
        return tail_start + end if tail[end:].strip(_BLANK) else None

    def block_bytes(self, record_pos: int, block_len: int) -> bytes | None:
        """The record's whole block (its header starting at ``record_pos``), from the remembered
        tail of the stream, or None when the tail does not hold all of it."""
        found = self._block_in_tail(record_pos)
        if found is None or found[2] + block_len > len(found[0]):
            return None
        tail, _, block = found
        return tail[block: block + block_len]

    def block_misframed(self, record_pos: int, block_len: int) -> bool:
        """Whether the bytes right after the record's declared block (its header starting at
        ``record_pos``) are not the blank line that ends a record: its Content-Length is wrong
        (too long: it took in the next record's header; too short: the page goes on). False when
        the remembered tail does not hold them (best effort, as :meth:`unparsed_after`)."""
        found = self._block_in_tail(record_pos)
        if found is None:
            return False
        tail, _, block = found
        after = tail[block + block_len: block + block_len + 1]
        return bool(after) and after not in (b"\r", b"\n")

    def input_offset(self, stream_pos: int) -> int:
        """Map a position in the stream FastWARC sees to a position in the input file."""
        return self._base + stream_pos

    def next_boundary_after(self, stream_pos: int | None) -> int | None:
        """Input offset of the first member boundary after ``stream_pos`` (gzip only)."""
        return None


class _GzipInput(_Input):
    """Decompresses a (multi-member) gzip stream; ends the segment cleanly at the first bad member.

    Common Crawl WARCs are one gzip member per record, so ``damage_offset`` (the compressed
    offset of the first member that failed to decompress or was cut off) pins damage to a
    record boundary, and all members before it are delivered in full.
    """

    def __init__(self, raw: BinaryIO, base: int = 0, decompressing: bool = False) -> None:
        super().__init__(raw, base, decompressing)
        self._pending = b""  # compressed bytes not yet fed to the decompressor
        self._in_pos = base  # input offset of the next byte pulled from the raw stream
        self._d = None  # decompressor of the current member, None between members
        self._member_start = base
        self._member_output = False
        #: (decompressed start, compressed start) of recent members, to map record positions
        self._members: collections.deque[tuple[int, int]] = collections.deque(maxlen=8192)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        parts: list[bytes] = []
        got = 0
        while got < size and not self._eof:
            if not self._pending and self._d is not None:
                # all input fed, but a max_length-limited call may have left output inside zlib
                try:
                    out = self._d.decompress(b"", size - got)
                except zlib.error:
                    self.damage_offset = self._member_start
                    self._eof = True
                    break
                if out:
                    self._member_output = True
                    parts.append(out)
                    got += len(out)
                    if self._d.eof:
                        self._pending = self._d.unused_data
                        self._d = None
                    continue
            if not self._pending:
                data = self._raw_read(_RAW_CHUNK)
                if not data:
                    if self._d is not None:  # input ended inside a member: truncated gzip
                        self.damage_offset = self._member_start
                    self._eof = True
                    break
                self._in_pos += len(data)
                self._pending = data
            if self._d is None:
                self._d = zlib.decompressobj(31)
                self._member_start = self._in_pos - len(self._pending)
                self._member_output = False
                self._members.append((self._pos + got, self._member_start))
            try:
                out = self._d.decompress(self._pending, size - got)
            except zlib.error:
                if not self._member_output and self._only_padding_left():
                    self._eof = True  # NUL / blank padding after the last member is harmless
                    break
                self.damage_offset = self._member_start
                self._eof = True
                break
            self._member_output = self._member_output or bool(out)
            if out:
                parts.append(out)
                got += len(out)
            if self._d.eof:
                self._pending = self._d.unused_data
                self._d = None
            else:
                self._pending = self._d.unconsumed_tail
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._deliver(out)
        return out

    def _only_padding_left(self) -> bool:
        """Is everything from the current member start to EOF blank? (consumes the input)"""
        data = self._pending
        while True:
            if data.strip(_BLANK):
                return False
            data = self._raw_read(_RAW_CHUNK)
            if not data:
                return self.io_error is None
            self._in_pos += len(data)

    def input_offset(self, stream_pos: int) -> int:
        return self.member_of(stream_pos)[0]

    def member_of(self, stream_pos: int) -> tuple[int, int]:
        """``(input offset, stream position)`` of the start of the member holding ``stream_pos``."""
        best = (self._base, 0)
        for out_start, in_start in self._members:
            if out_start > stream_pos:
                break
            best = (in_start, out_start)
        return best

    def next_boundary_after(self, stream_pos: int | None) -> int | None:
        for out_start, in_start in self._members:
            if stream_pos is None or out_start > stream_pos:
                return in_start
        return None


class _Source:
    """Random access over the caller's stream, so the reader can go back to a resync point.

    Seekable streams (local files, S3 objects spooled by ``fs.open_input``, BytesIO) are seeked;
    others are spooled as they are read (in memory up to 64 MiB, then on disk). Offsets are
    relative to where the stream was when reading began.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._origin = _tell_if_seekable(raw)
        self._spool = None
        if self._origin is None:
            self._spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)
        self._spooled = 0  # bytes pulled from a non-seekable stream into the spool
        self._pos = 0

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, fewer only at the stream's end: the resync scan takes a short read
        for the end (a network body's short reads, or a read stopping where the spool does, had
        ended a resync early and lost the records after the damage)."""
        data = self._read_some(n)
        if len(data) >= n or not data:
            return data
        parts, got = [data], len(data)
        while got < n and (more := self._read_some(n - got)):
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def _read_some(self, n: int) -> bytes:
        if self._spool is None:
            data = self._raw.read(n)
        elif self._pos < self._spooled:
            self._spool.seek(self._pos)
            data = self._spool.read(min(n, self._spooled - self._pos))
        else:
            data = self._raw.read(n)
            if data:
                self._spool.seek(self._spooled)
                self._spool.write(data)
                self._spooled += len(data)
        self._pos += len(data)
        return data

    def seek(self, offset: int) -> None:
        if self._spool is None:
            self._raw.seek(self._origin + offset)
            self._pos = offset
            return
        while self._spooled < offset:  # forward past what was read: pull it through the spool
            self._pos = self._spooled
            if not self.read(min(_RAW_CHUNK, offset - self._spooled)):
                break
        self._pos = min(offset, self._spooled)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def _tell_if_seekable(raw: object) -> int | None:
    try:
        if not raw.seekable():  # type: ignore[attr-defined]
            return None
        return int(raw.tell())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - no seek()/tell(), or they fail: spool instead
        return None


_WARC_HEADER = re.compile(rb"WARC/[0-9]\.[0-9]+\r?\n")
_SCAN_CHUNK = 1 << 20


def _find_gzip_member(src: _Source, start: int) -> int | None:
    """Offset >= ``start`` of the next gzip member that decompresses to a WARC header, or None."""
    pos = start
    while True:
        src.seek(pos)
        chunk = src.read(_SCAN_CHUNK)
        if len(chunk) < 3:
            return None
        hit = chunk.find(b"\x1f\x8b\x08")
        while hit >= 0:
            if _member_starts_warc(src, pos + hit):
                return pos + hit
            hit = chunk.find(b"\x1f\x8b\x08", hit + 1)
        pos += len(chunk) - 2  # a magic split across chunks is found by the next one


def _member_starts_warc(src: _Source, offset: int) -> bool:
    src.seek(offset)
    data = src.read(1 << 16)
    try:
        head = zlib.decompressobj(31).decompress(data, 16)
    except zlib.error:
        return False
    return head.startswith(b"WARC/")


def _find_warc_header(src: _Source, start: int) -> int | None:
    """Offset >= ``start`` of the next ``WARC/x.y`` line that starts a line, or None."""
    pos = start
    prev = b"\n" if start == 0 else None
    if prev is None:
        src.seek(start - 1)
        prev = src.read(1)
    while True:
        src.seek(pos)
        chunk = src.read(_SCAN_CHUNK)
        if not chunk:
            return None
        window = prev + chunk
        for m in _WARC_HEADER.finditer(window, 1):
            if window[m.start() - 1 : m.start()] == b"\n":
                return pos + m.start() - 1
        if len(chunk) < 16:
            return None
        keep = 15  # a header line split across chunks is found by the next one
        pos += len(chunk) - keep
        prev = chunk[-keep - 1 : -keep]


_MEMBER_WINDOW = 16 * 2**20  # inflated bytes of a member kept for going back
_INFLATE_STEP = 4 * _RAW_CHUNK  # output per zlib call: a highly compressed member stays bounded
_MAX_CHECKPOINTS = 64  # zlib states kept to go back to (~40 KB each); then every other one goes


@dataclass
class _InflateState:
    """Where inflating a member stands: zlib's state and the offsets it goes with."""

    decompressor: zlib._Decompress
    inflated: int  # output produced up to here
    input_offset: int  # input offset of the next compressed byte to pull
    tail: bytes = b""  # compressed bytes pulled but not yet inflated (output-bounded calls)
    held: bool = False  # the last call filled its output bound: zlib may hold more output


class _MemberStream:
    """The inflated bytes of the gzip member at input ``offset``, for reading it as an uncompressed
    file: inflated as read, keeping only the last ``_MEMBER_WINDOW`` of output (in memory) to seek
    back into. A seek further back (resynchronising after a record larger than that) inflates again
    from the nearest checkpoint before it: zlib's state every ``_MEMBER_WINDOW`` of output (at most
    ``_MAX_CHECKPOINTS``, spaced wider as the member grows). From the member's start each time, k
    such resyncs cost k times the member (40 records of 17 MiB, each followed by garbage: 4.0 s
    against 0.9 s spooled; found by review). It was inflated whole into a spool first: a damaged
    ``gzip file.warc`` of 200 MB spooled 200 MB (found by session 35's trial).

    Same interface as :class:`_Source` (``read``, ``seek``, ``close``); :meth:`end` is where the
    member ends in the input (None: its deflate stream breaks or is cut off; everything that
    inflated before the break is read)."""

    def __init__(self, src: _Source, offset: int) -> None:
        self._src = src
        self._checkpoints = [_InflateState(zlib.decompressobj(31), 0, offset)]
        self._spacing = _MEMBER_WINDOW
        self._pos = 0  # the reader's position in the inflated bytes
        self._restore(self._checkpoints[0])

    def _restore(self, state: _InflateState) -> None:
        self._d = state.decompressor.copy()  # the checkpoint stays as it was, to go back to again
        self._in, self._tail, self._held = state.input_offset, state.tail, state.held
        self._window: collections.deque[bytes] = collections.deque()  # inflated bytes [_win_start, _out)
        self._win_start = self._out = state.inflated  # _out: inflated bytes produced
        self._done = False
        self._end: int | None = None

    def _checkpoint(self) -> None:
        """Keep where inflating stands, once ``_spacing`` past the last checkpoint."""
        if self._out < self._checkpoints[-1].inflated + self._spacing:
            return
        self._checkpoints.append(_InflateState(self._d.copy(), self._out, self._in, self._tail, self._held))
        if len(self._checkpoints) > _MAX_CHECKPOINTS:  # a huge member: fewer, wider-spaced ones
            self._checkpoints = self._checkpoints[::2]
            self._spacing *= 2

    def read(self, n: int) -> bytes:
        while self._out - self._pos < n and not self._done:
            self._inflate_some()
        parts, at, want = [], self._win_start, n
        for chunk in self._window:
            if want <= 0:
                break
            if at + len(chunk) > self._pos:
                piece = chunk[max(self._pos - at, 0): max(self._pos - at, 0) + want]
                parts.append(piece)
                want -= len(piece)
            at += len(chunk)
        data = b"".join(parts)
        self._pos += len(data)
        return data

    def seek(self, offset: int) -> None:
        if offset < self._win_start:
            self._restore(next(c for c in reversed(self._checkpoints) if c.inflated <= offset))
        self._pos = offset

    def end(self) -> int | None:
        """The input offset where the member ends (inflating the rest of it if needed)."""
        while not self._done:
            self._pos = self._out
            self._inflate_some()
        return self._end

    def close(self) -> None:  # the caller owns ``src``
        self._window.clear()

    def _inflate_some(self) -> None:
        self._checkpoint()
        data = self._tail
        if not data and not self._held:
            self._src.seek(self._in)
            data = self._src.read(_RAW_CHUNK)
            self._in += len(data)
            if not data:  # the input ends inside the member: its deflate stream is cut
                self._done = True
                return
        before = self._d.copy()
        try:
            out = self._d.decompress(data, _INFLATE_STEP)
        except zlib.error:  # zlib drops the failing call's output: redo the chunk a byte at a time
            out = _inflate_until_break(before, data)
            self._done = True
        else:
            self._held = len(out) == _INFLATE_STEP  # zlib may hold more output of this input
            self._tail = self._d.unconsumed_tail
            if self._d.eof:
                self._done = True
                self._end = self._in - len(self._d.unused_data)
        self._append(out)

    def _append(self, out: bytes) -> None:
        if out:
            self._window.append(out)
            self._out += len(out)
        # drop the oldest output past the window, unless the reader is still in it (a call may
        # inflate nothing, e.g. inside a gzip header with a 300 KB file name: the window is empty)
        while self._window and self._out - self._win_start - len(self._window[0]) >= _MEMBER_WINDOW \
                and self._win_start + len(self._window[0]) <= self._pos:
            self._win_start += len(self._window.popleft())


def _inflate_until_break(d: zlib._Decompress, data: bytes) -> bytes:
    parts = []
    for i in range(len(data)):
        try:
            parts.append(d.decompress(data[i: i + 1]))
        except zlib.error:
            break
    return b"".join(parts)


def _rest_of_member(src: _Source, member: int, after: int) -> tuple[_MemberStream, int] | None:
    """``(the member's inflated bytes, the next WARC header in them after position ``after``)``
    for the gzip member at input offset ``member``, or None if no ``WARC/`` line follows inside it
    (the damage is not inside this member's WARC bytes)."""
    inflated = _MemberStream(src, member)
    resume = _find_warc_header(inflated, after + 1)
    if resume is None:
        inflated.close()
        return None
    return inflated, resume


def _resume_search_start(segment: _SegmentEnd, start: int) -> int:
    """Where to look for the resume point after a damaged segment that began at ``start``: after
    the segment start, the member the gzip layer found bad, and the last record returned (never
    re-read a record: ids stay unique)."""
    return max(start, segment.bad_member if segment.bad_member is not None else -1,
               segment.last_record if segment.last_record is not None else -1) + 1


class _Cursor:
    """What the reader's segments are read from: the file (``src``, gzip or plain), or, after damage
    inside the WARC bytes of a gzip member whose deflate stream is intact, that member's inflated
    bytes read as a plain WARC (``outer`` then keeps the file and the member's offset to go back to;
    offsets found meanwhile are positions in the inflated bytes)."""

    def __init__(self, src: _Source, decompressing: bool) -> None:
        self.src: _Source | _MemberStream = src
        self.decompressing = decompressing  # the caller's stream already decompresses (pyarrow)
        self.gzipped = False
        self.outer: tuple[_Source, int] | None = None  # (the file's source, the member's input offset)
        #: offset of the damaged span last counted, in what is being read: a resync point that is
        #: bad too is the same span, not a new row
        self.last_damage: int | None = None

    def open_segment(self, start: int) -> _Input:
        self.src.seek(start)
        # the decompressing stream's errors are bad bytes only when reading it, not a member's inflated bytes
        return (_GzipInput if self.gzipped else _Input)(self.src, start, self.decompressing and self.outer is None)

    def find_resume(self, after: int) -> int | None:
        """The next gzip member / WARC header at or after ``after``, None if there is none (or the
        decompressing stream breaks while scanning: the rest is unreadable)."""
        try:
            return _find_gzip_member(self.src, after) if self.gzipped else _find_warc_header(self.src, after)
        except Exception as exc:  # noqa: BLE001 - the stream broke while scanning
            if self.decompressing and self.outer is None and _looks_like_decompression_error(exc):
                return None
            raise

    def rest_of_damaged_member(self, segment: _SegmentEnd) -> tuple[_MemberStream, int] | None:
        """``(the member's inflated bytes, the next WARC header in them)`` when ``segment``'s damage
        is in the WARC bytes of a gzip member whose deflate stream is intact (a file gzipped as one
        member, or one of several): deflate has no sync points, so reading goes on inside it."""
        if not self.gzipped or segment.bad_member is not None or segment.member is None:
            return None
        return _rest_of_member(self.src, segment.member, segment.in_member)  # type: ignore[arg-type]

    def enter_member(self, inflated: _MemberStream, member: int, damage_at: int) -> None:
        """Read on inside the member at input offset ``member``, as a plain WARC; ``damage_at``: the
        damage's position in its inflated bytes (where plain reading sees it again)."""
        self.outer = (self.src, member)  # type: ignore[assignment]  # (only the file is gzipped)
        self.src, self.gzipped = inflated, False
        self.last_damage = damage_at

    def leave_member(self) -> tuple[int, int | None]:
        """Back to the file: ``(the member's input offset, where it ends in the input)``; the end
        is None when its deflate stream breaks or is cut off after the bytes read."""
        member_end = self.src.end()  # type: ignore[union-attr]
        self.src.close()
        self.src, member = self.outer  # type: ignore[misc]
        self.outer, self.gzipped, self.last_damage = None, True, None
        return member, member_end

    def close(self) -> None:
        self.src.close()
        if self.outer is not None:
            self.outer[0].close()


def _is_decompressing_stream(raw: object) -> bool:
    return type(raw).__name__ == "CompressedInputStream"  # pyarrow's open_input_stream(compression="detect")


def _looks_like_decompression_error(exc: BaseException) -> bool:
    message = str(exc).lower()
    return isinstance(exc, (OSError, ValueError, zlib.error, EOFError)) and any(
        word in message for word in ("compress", "inflate", "zlib", "gzip", "truncated", "corrupt", "header check")
    )


# ---------------------------------------------------------------------------------------------
# HTTP body helpers
# ---------------------------------------------------------------------------------------------
_SNIFF_PREFIXES = tuple(
    p.encode()
    for p in (
        "<!doctype html", "<html", "<head", "<body", "<script", "<iframe", "<h1", "<div", "<font",
        "<table", "<a", "<style", "<title", "<b", "<br", "<p", "<!--", "<?xml", "<meta", "<link",
    )
)


def sniff_html(body: bytes) -> bool:
    """Does an untyped body look like HTML? (WHATWG-style sniff of the first non-blank bytes.)"""
    head = body[:1024]
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    head = head.lstrip().lower()
    for prefix in _SNIFF_PREFIXES:
        if head.startswith(prefix):
            rest = head[len(prefix) : len(prefix) + 1]
            if prefix in (b"<!--", b"<?xml") or rest in (b"", b" ", b">", b"\t", b"\n", b"\r", b"/"):
                return prefix != b"<?xml" or b"<html" in head
    return b"<html" in head


def _mime(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].split(",", 1)[0].strip().lower()


_CHUNK_HEAD = re.compile(rb"[0-9a-fA-F]{1,8}(;[^\r\n]*)?\r?\n")


def _html_resource(record, rtype: str) -> bool:
    """A ``resource`` record holding an HTML page (its block is the page itself, no HTTP message:
    archives of saved files write them): a document, read as a response
    without HTTP headers would be. Other resources (logs, images, screenshots) stay skipped records."""
    return rtype == "resource" and _mime(record.headers.get("Content-Type")) in HTML_MIME_TYPES


def _may_be_http(warc_content_type: str | None) -> bool:
    """A response record FastWARC did not parse as HTTP that may still hold an HTTP message."""
    return not warc_content_type or _mime(warc_content_type) == "application/http"


def _parse_http_message(block: bytes) -> tuple[int | None, email.message.Message, bytes] | None:
    """(status, headers, payload) of an HTTP response message; None if ``block`` is not one."""
    if not block.startswith(b"HTTP/"):
        return None
    end = block.find(b"\r\n\r\n")
    sep = 4
    if end < 0 or block.find(b"\n\n", 0, end) >= 0:
        end, sep = block.find(b"\n\n"), 2
    if end < 0:
        return None
    status_line, _, header_lines = block[:end].partition(b"\n")
    parts = status_line.split(None, 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(header_lines + b"\n\n")
    return status, headers, block[end + sep :]


def _dechunk(body: bytes, complete: bool = False) -> bytes | None:
    """Undo HTTP chunked transfer-encoding; None if the body is not validly chunked (with
    ``complete``, also if it ends before the terminating zero-size chunk)."""
    parts: list[bytes] = []
    pos, n = 0, len(body)
    ended = False
    while pos < n:
        eol = body.find(b"\n", pos, pos + 1024)
        if eol < 0:
            return None
        field = body[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(field, 16)
        except ValueError:
            return None
        pos = eol + 1
        if size == 0:
            ended = True
            break
        parts.append(body[pos : pos + size])  # a cut-off last chunk keeps what is there
        pos += size
        if body.startswith(b"\r\n", pos):
            pos += 2
        elif body.startswith(b"\n", pos):
            pos += 1
        elif complete:
            return None
    if complete and not ended:
        return None
    return b"".join(parts)


#: a row's fields (READER_SCHEMA); a kept page's row has one more, the names of the reader's
#: counters that apply to it (why it is partial, see ``WarcReader.counters``), which a batch
#: leaves out (``zip`` stops at the schema's last field)
_ROW_WIDTH = len(READER_SCHEMA)


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


def _inflate(body: bytes, wbits: int, limit: int) -> tuple[bytes, bool]:
    """(decoded, whether the stream ends before its end: a cut body, decoded up to the cut)."""
    d = zlib.decompressobj(wbits)
    out = d.decompress(body, limit + 1)
    if len(out) > limit:
        raise _TooLarge(len(out))
    out += d.flush()
    return out, not d.eof


#: decoded bytes per read of a zstd body, then of its cut end (below)
_ZSTD_STEPS = (1 << 16, 1 << 12, 1 << 8, 1 << 4, 1)


def _unzstd(body: bytes, limit: int) -> tuple[bytes, bool]:
    """(decoded, cut) as :func:`_inflate`. Servers answer browsers' ``Accept-Encoding: zstd``
    (RFC 8878) so: such pages were removed as ``undecodable`` by extract (found by adversarial
    testing). At most ``limit`` + 1 bytes decoded. A cut body keeps the blocks before the cut, as
    ``zstd -d`` does: pyarrow's stream raises on the read that meets the cut and returns none of
    it, so what follows the last good read is decoded again in smaller reads, down to a byte
    (cut bodies only: ~5 decodes of the prefix)."""
    good = b""  # decoded by reads that returned
    for step in _ZSTD_STEPS:
        stream = pa.CompressedInputStream(pa.BufferReader(body), "zstd")
        parts, size = [good], len(good)
        try:
            if good:
                stream.read(len(good))  # read before without error
            while size <= limit and (chunk := stream.read(min(step, limit + 1 - size))):
                parts.append(chunk)
                size += len(chunk)
        except OSError as exc:
            if "truncated" not in str(exc).lower():
                raise  # corrupt, not cut: the bytes are kept as they are (undecodable)
            good = b"".join(parts)
            continue
        if size > limit:
            raise _TooLarge(size)
        return b"".join(parts), False
    return good, True


def _decode_content(body: bytes, encoding_header: str, limit: int) -> tuple[bytes, bool]:
    """Decode Content-Encoding (last applied first); on any failure keep the bytes as they are.
    Also whether a coding's stream ends before its end (the body cut: kept decoded up to the
    cut, as a crawler's ``WARC-Truncated`` payload is, and counted by the reader)."""
    cut = False
    for coding in reversed([c.strip().lower() for c in encoding_header.split(",") if c.strip()]):
        try:
            if coding in ("gzip", "x-gzip"):
                if not body.startswith(_GZIP_MAGIC):
                    return body, cut  # stale header: the archive stored the decoded body
                body, ended_early = _inflate(body, 31, limit)
            elif coding == "deflate":
                try:
                    body, ended_early = _inflate(body, 15, limit)
                except zlib.error:
                    body, ended_early = _inflate(body, -15, limit)
            elif coding == "br":
                import brotli

                d = brotli.Decompressor()
                out = d.process(body, output_buffer_limit=limit + 1)
                if len(out) > limit:
                    raise _TooLarge(len(out))
                body, ended_early = out, not d.is_finished()
            elif coding == "zstd":
                if not body.startswith(ZSTD_MAGIC):
                    return body, cut  # stale header, as for gzip
                body, ended_early = _unzstd(body, limit)
            elif coding in ("identity", "none"):
                continue
            else:
                return body, cut  # unknown (compress, ...): leave it to the extractor
        except _TooLarge:
            raise
        except Exception:  # noqa: BLE001 - undecodable: keep the bytes as they are
            return body, cut
        cut = cut or ended_early
    return body, cut


def _short_id(record_id: str | None) -> str | None:
    if not record_id:
        return None
    rid = record_id.strip().strip("<>").strip()
    if rid.lower().startswith("urn:uuid:"):
        rid = rid[9:]
    return rid or None


# ---------------------------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------------------------
class WarcReader:
    """Read WARC streams into document batches (see the module docstring for the row rules).

    Build once, call :meth:`read` per file. The counters below describe the most recent
    :meth:`read` and fill in as its iterator is consumed; ``skipped_records`` is the same dict
    object for the reader's whole life (cleared, never replaced), so a reference taken before
    iterating sees the final counts.

    Attributes:
        records: WARC records seen (all types).
        responses: response records seen = document rows emitted.
        skipped_records: ``{warc_type: count}`` of non-response records.
        corrupt_offset: byte offset of the damage if the file was damaged, else None.
        counters: ``{name: count}`` of the pages kept that are partial (module docstring), for
            the reader's stage row; the same dict object for the reader's whole life, as
            ``skipped_records``; it covers the rows of every batch yielded so far.
    """

    def __init__(self, batch_size: int = 500, max_body_bytes: int = 50 * 2**20, verify_digests: bool = False) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        self.max_body_bytes = max_body_bytes
        self.verify_digests = verify_digests
        self.skipped_records: dict[str, int] = {}
        self.counters: dict[str, int] = {}
        self.records = 0
        self.responses = 0  # document rows: responses, conversions, records without a WARC-Type
        self.corrupt_offset: int | None = None
        self.corrupt_offsets: list[int] = []
        self.resync_offsets: list[int | None] = []

    def read(self, stream: BinaryIO, source: str, limit: int | None = None) -> Iterator[pa.RecordBatch]:
        """Return an iterator of :data:`READER_SCHEMA` batches for one WARC file.

        ``stream`` is any binary stream with ``read(n)`` (seekable or not, gzip or plain);
        it is not closed. ``source`` goes into the ``source`` column and fallback ids.
        ``limit``: at most that many document rows (``--limit``); the last batch ends at the
        limit and the counters cover the records read up to it, not the rest of the batch.
        """
        self.skipped_records.clear()
        self.counters.clear()
        self.records = 0
        self.responses = 0
        self.corrupt_offset = None
        self.corrupt_offsets = []
        self.resync_offsets = []
        return self._batches(stream, source, limit)

    __call__ = read

    # ------------------------------------------------------------------------------------------
    def _batches(self, stream: BinaryIO, source: str, limit: int | None) -> Iterator[pa.RecordBatch]:
        cursor = _Cursor(_Source(stream), _is_decompressing_stream(stream))
        try:
            probe = _Input(cursor.src, 0, cursor.decompressing)
            head = probe.read(2)
            if probe.io_error is not None:
                raise probe.io_error
            if probe.damage_offset is not None:  # an already-decompressing stream failed at once
                self._note_damage(0, None)
                yield self._finish_batch([_corrupt_row(source, 0)])
                return
            if not head:  # empty file: no records, and nothing damaged
                return
            cursor.gzipped = head.startswith(_GZIP_MAGIC)
            rows: list[tuple] = []
            html_bytes = 0
            used_ids: set[str] = set()  # corrupt_stream ids already given (two spans at one offset)
            start: int | None = 0  # offset of the current segment (in the file, or in a member's inflated bytes)
            # rows still wanted under a --limit: reading stops at the last one, so no record after it
            # is counted (the runner cut the batch, after the reader had counted all of it; h225)
            left = limit
            while start is not None:
                segment = _SegmentEnd()
                for row in self._segment(cursor.open_segment(start), source, segment):
                    rows.append(row)
                    if len(row) > _ROW_WIDTH:  # a kept page, with why it is partial (if it is)
                        for name in row[_ROW_WIDTH]:
                            self.counters[name] = self.counters.get(name, 0) + 1
                    html_bytes += len(row[6] or b"") + len(row[7] or "")  # a WET row carries text instead
                    if len(rows) >= self.batch_size or html_bytes >= _MAX_BATCH_BYTES or len(rows) == left:
                        yield self._finish_batch(rows)
                        if left is not None:
                            left -= len(rows)
                            if left == 0:
                                return
                        rows, html_bytes = [], 0
                start = self._next_segment(cursor, segment, start, source, used_ids, rows)
                if left is not None and len(rows) >= left:  # the damage's corrupt_stream rows reach it
                    yield self._finish_batch(rows[:left])
                    return
            if rows:
                yield self._finish_batch(rows)
        finally:
            cursor.close()

    def _next_segment(self, cursor: _Cursor, segment: _SegmentEnd, start: int, source: str,
                      used_ids: set[str], rows: list[tuple]) -> int | None:
        """Where the segment after ``segment`` (which began at ``start``) begins, None when the file
        is read; adds the ``corrupt_stream`` rows of the damage it ended on to ``rows``."""
        resume = None
        if segment.damage is not None:
            resume = self._resync(cursor, segment, start, source, used_ids, rows)
        if resume is None and cursor.outer is not None:
            resume = self._leave_member(cursor, segment, source, used_ids, rows)
        return resume

    def _resync(self, cursor: _Cursor, segment: _SegmentEnd, start: int, source: str,
                used_ids: set[str], rows: list[tuple]) -> int | None:
        """Damage: one ``corrupt_stream`` row for the damaged span (none when a resync point was bad
        too: same span), then where reading resumes: the next WARC header inside the member when
        only its WARC bytes are bad, else the next gzip member / WARC header after everything
        already read (None: nothing left to read there)."""
        inside = cursor.rest_of_damaged_member(segment)
        # damage inside a member's WARC bytes is at that member, not at the next one
        damage = segment.member if inside is not None else segment.damage
        new_span = damage != cursor.last_damage  # else: a resync point that was bad too, same span
        if new_span:
            rows.append(_corrupt_row(source, damage, used_ids))
        if inside is not None:
            inflated, resume = inside
            cursor.enter_member(inflated, damage, damage_at=max(segment.in_member, 0))
        else:
            cursor.last_damage = damage
            resume = cursor.find_resume(_resume_search_start(segment, start))
        self._note_damage(damage, resume, new_span)
        return resume

    def _leave_member(self, cursor: _Cursor, segment: _SegmentEnd, source: str,
                      used_ids: set[str], rows: list[tuple]) -> int | None:
        """The member's inflated bytes are read: back to the file, at its next member."""
        member, member_end = cursor.leave_member()
        resume = member_end
        if member_end is None:  # its deflate stream breaks after the bytes read
            if segment.damage is None:  # ... and no record was cut there: count the break
                rows.append(_corrupt_row(source, member, used_ids))
                self._note_damage(member, None)
            resume = _find_gzip_member(cursor.src, member + 1)
        if segment.damage is not None or member_end is None:
            self.resync_offsets[-1] = resume  # reading goes on there, not nowhere
        return resume

    def _note_damage(self, offset: int, resume: int | None, new_span: bool = True) -> None:
        if self.corrupt_offset is None:
            self.corrupt_offset = offset
        if new_span or not self.corrupt_offsets:
            self.corrupt_offsets.append(offset)
            self.resync_offsets.append(resume)
        else:
            self.resync_offsets[-1] = resume

    def _segment(self, inp: _Input, source: str, end: _SegmentEnd) -> Iterator[tuple]:
        """Rows of the records FastWARC reads from one segment (from the file start or a resync
        point to the end or the first damage); ``end`` says where and whether it was damaged."""
        from fastwarc.warc import ArchiveIterator

        # Strict WARC parsing (quirks_mode=False): in quirks mode FastWARC silently skips
        # garbage and even whole non-WARC files; HTTP headers are parsed leniently per record.
        it = ArchiveIterator(inp, parse_http=False, quirks_mode=False, stream_detect=False)
        last_pos: int | None = None  # stream position of the last record read completely
        last_len = 0  # its declared block length
        last_seen: int | None = None  # stream position of the last record FastWARC returned
        damaged = False  # FastWARC stopped on bad bytes, or the stream ended inside a record
        # the last document row, held back until the next record parses: a record whose declared
        # length is wrong reads as whole, and only the damage right after it shows (found by
        # adversarial testing: a page kept with the next record's WARC header as its last text)
        pending: tuple[tuple, int, int] | None = None
        while True:
            try:
                record = next(it)
            except StopIteration:
                break
            except BaseException as exc:  # FastWARC raises OSError on bad bytes, or panics (BaseException)
                if isinstance(exc, _NEVER_SWALLOW):
                    raise
                damaged = True
                if pending is not None and pending[0][8] is None and inp.block_misframed(pending[1], pending[2]):
                    row = pending[0]
                    pending = (row[:6] + (None, None, "truncated_record", None), pending[1], pending[2])
                break
            if pending is not None:
                yield pending[0]
                pending = None
            index = self.records
            self.records += 1
            last_seen = record.stream_pos
            block_len = record.content_length  # declared; parse_http() later changes content_length
            rtype = _record_type(record)
            is_response = rtype in _DOCUMENT_TYPES or _html_resource(record, rtype)
            # no WARC-Type at all (a damaged header): it may have been a page, so it is a removed
            # row, not a skipped record (found by session 36's trial: a response lost without a row)
            # (an empty ``WARC-Type:`` too: it was a skipped "unknown" record)
            untyped = rtype == ""
            if is_response or untyped:
                self.responses += 1
            else:
                self.skipped_records[rtype] = self.skipped_records.get(rtype, 0) + 1
            try:
                row, complete = self._record_row(record, source, index, is_response, rtype == "conversion", inp)
            except BaseException as exc:  # a record FastWARC cannot read to its end
                if isinstance(exc, _NEVER_SWALLOW):
                    raise
                damaged = True
                if is_response or untyped:  # counted among the document rows: it has one
                    yield _row(record, source, index, None, "truncated_record", None)
                break
            if untyped:  # (a header cut off before its type and length: the file ends in it)
                row = _row(record, source, index, None, "untyped_record" if complete else "truncated_record", None)
            if row is not None and complete and is_response:
                pending = (row, record.stream_pos, block_len)
            elif row is not None:
                yield row
            if not complete:
                damaged = True
                break  # its declared length is wrong or the file ends: resynchronise after it
            if last_pos is None or record.stream_pos > last_pos:
                last_pos, last_len = record.stream_pos, block_len
            if inp.io_error is not None:
                break

        if pending is not None:
            yield pending[0]
        if inp.io_error is not None:  # the caller's stream failed: not bad bytes, let it raise
            raise inp.io_error
        if last_seen is not None:
            end.last_record = inp.input_offset(last_seen)
        if isinstance(inp, _GzipInput):
            end.member, out_start = inp.member_of(last_seen if last_seen is not None else 0)
            end.in_member = -1 if last_seen is None else last_seen - out_start

        # Did the segment end cleanly? Gzip damage is pinned exactly by the gzip layer; otherwise
        # FastWARC stopped on bad bytes, the stream ended inside a record, or FastWARC silently
        # ignored bytes after the last record (a header cut off at EOF).
        offset = end.bad_member = inp.damage_offset
        if offset is None and not damaged:
            offset = inp.unparsed_after(last_pos, last_len)
            if offset is not None:
                offset = inp.input_offset(offset)
        if offset is None and damaged:
            boundary = inp.next_boundary_after(last_pos)
            if boundary is not None:
                offset = boundary
            else:
                offset = inp.input_offset(last_pos) if last_pos is not None else inp.input_offset(0)
        end.damage = offset

    def _record_row(self, record, source: str, index: int, is_response: bool,
                    conversion: bool = False, inp: _Input | None = None) -> tuple[tuple | None, bool]:
        """(row, or None for non-documents; whether the record's block was complete). ``inp``:
        the stream the record came from, to parse an HTTP header FastWARC refuses from its tail."""
        declared = record.content_length
        # Content-Length is mandatory; FastWARC turns a header cut off at EOF into a record
        # without one (and an empty block), so its absence means the file ends mid-header.
        has_length = (record.headers.get("Content-Length") or "").strip().isdigit()
        if not is_response:
            return None, record.reader.consume() >= declared and has_length
        if not has_length:
            record.reader.consume()
            return _row(record, source, index, None, "truncated_record", None), False

        digest_ok = True
        if self.verify_digests and declared <= self.max_body_bytes and record.headers.get("WARC-Block-Digest"):
            digest_ok = record.verify_block_digest(consume=False)
        if conversion:
            return self._conversion_row(record, source, index, declared, digest_ok)

        content_type: str | None
        status: int | None = None
        prefetched: bytes | None = None  # the payload, when the HTTP header was parsed here
        if not record.is_http and _may_be_http(record.headers.get("Content-Type")) and declared <= self.max_body_bytes:
            # FastWARC only parses HTTP for an exact lower-case "application/http" record type;
            # writers that spell it otherwise or omit it still store an HTTP message
            block = record.reader.read()
            if len(block) < declared:
                return _row(record, source, index, None, "truncated_record", float(declared - len(block))), False
            parsed = _parse_http_message(block)
            if parsed is None:
                http, content_type, payload_len = None, record.headers.get("Content-Type"), declared
                prefetched = block
            else:
                status, http, prefetched = parsed
                content_type, payload_len = http.get("Content-Type"), len(prefetched)
        elif record.is_http:
            try:
                record.parse_http(quirks_mode=True)
            except Exception:  # noqa: BLE001 - any HTTP header FastWARC cannot parse
                record.reader.consume()
                # the block's position, not what consume() read: the failed parse already read part
                # of the block, and an intact record counted as a damaged stream (an extra row;
                # found by adversarial testing)
                complete = record.reader.tell() >= declared
                # FastWARC refuses HTTP headers over ~32 KiB (a long Content-Security-Policy or
                # Set-Cookie): parse the block from the stream's tail instead (found by adversarial testing)
                block = inp.block_bytes(record.stream_pos, declared) if inp is not None and complete else None
                parsed = _parse_http_message(block) if block is not None else None
                if parsed is None:
                    return _row(record, source, index, None, "http_parse_error", None), complete
                status, http, prefetched = parsed
                content_type, payload_len = http.get("Content-Type"), len(prefetched)
            else:
                http = record.http_headers
                status = http.status_code
                content_type = http.get("Content-Type")
                payload_len = record.content_length
        else:
            http = None
            content_type = record.headers.get("Content-Type")
            payload_len = declared
        mime = _mime(content_type)

        reason: str | None = None
        metric: float | None = None
        if prefetched is None and not record.is_http and declared > self.max_body_bytes and _may_be_http(content_type):
            reason, metric = "body_too_large", float(declared)  # too large to read for its HTTP header
        elif http is not None and (status is None or not 200 <= status < 300):
            reason, metric = "http_status", (float(status) if status is not None else None)
        elif mime and mime not in HTML_MIME_TYPES:
            reason = "non_html"
        elif not mime and http is None:
            reason = "non_html"  # non-HTTP response (dns:, whois:, ...) without a type
        elif payload_len > self.max_body_bytes:
            reason, metric = "body_too_large", float(payload_len)

        body = b""
        # why a kept page is partial, for the reader's counters: kept as RefinedWeb and datatrove
        # keep them, but told
        partial: tuple[str, ...] = ("warc_truncated",) if record.headers.get("WARC-Truncated") else ()
        if prefetched is not None:
            body, got = (prefetched if reason is None else b""), payload_len
        elif reason is None:
            body = record.reader.read()
            got = len(body)
        else:
            got = record.reader.consume()
        if got < payload_len:  # the file ends (or breaks) inside this record
            return _row(record, source, index, content_type, "truncated_record", float(payload_len - got)), False
        if not digest_ok:  # framing intact, content altered: this record only
            return _row(record, source, index, content_type, "truncated_record", None), True
        if reason is not None:
            return _row(record, source, index, content_type, reason, metric), True

        if http is not None:
            if "chunked" in (http.get("Transfer-Encoding") or "").lower():
                dechunked = _dechunk(body)
                if dechunked is not None:
                    body = dechunked
            elif _CHUNK_HEAD.match(body):
                # some archives drop the Transfer-Encoding header but keep the chunks: undo them
                # only when the body is chunked through to its terminating zero-size chunk
                dechunked = _dechunk(body, complete=True)
                if dechunked is not None:
                    body = dechunked
            encoding = http.get("Content-Encoding")
            if encoding:
                try:
                    body, cut = _decode_content(body, encoding, self.max_body_bytes)
                except _TooLarge as exc:
                    return _row(record, source, index, content_type, "body_too_large", float(exc.size)), True
                if cut:
                    partial += ("content_encoding_cut",)
        if not body.strip():
            return _row(record, source, index, content_type, "empty_body", None), True
        if not mime and not sniff_html(body):
            return _row(record, source, index, content_type, "non_html", None), True
        return _row(record, source, index, content_type, None, None, body) + (partial,), True

    def _conversion_row(self, record, source: str, index: int, declared: int, digest_ok: bool) -> tuple[tuple, bool]:
        """A WET ``conversion`` record: its block is the page's text (UTF-8), so the row carries
        ``text`` and no ``html`` (the extract stage keeps such text as it is)."""
        content_type = record.headers.get("Content-Type")
        if declared > self.max_body_bytes:
            got = record.reader.consume()
            if got < declared:
                return _row(record, source, index, content_type, "truncated_record", float(declared - got)), False
            return _row(record, source, index, content_type, "body_too_large", float(declared)), True
        block = record.reader.read()
        if len(block) < declared:
            return _row(record, source, index, content_type, "truncated_record", float(declared - len(block))), False
        if not digest_ok:
            return _row(record, source, index, content_type, "truncated_record", None), True
        text = block.decode("utf-8", errors="replace")  # Common Crawl writes WET text as UTF-8
        if not text.strip():
            return _row(record, source, index, content_type, "empty_body", None), True
        if "\ufffd" in text:
            # bytes that are not UTF-8 (a page's legacy codec the conversion kept): as the extract
            # stage does for HTML, a text that is more than a few replacement characters is
            # removed, not kept as "caf\ufffd" soup (it was kept whatever its share)
            sample = text[:_BAD_SAMPLE_CHARS]
            replaced = sample.count("\ufffd") / len(sample)
            if replaced > MAX_REPLACED_FRACTION:
                return _row(record, source, index, content_type, "undecodable", replaced), True
        partial = ("warc_truncated",) if record.headers.get("WARC-Truncated") else ()
        return _row(record, source, index, content_type, None, None, text=text) + (partial,), True

    @staticmethod
    def _finish_batch(rows: list[tuple]) -> pa.RecordBatch:
        # lists, not the tuples zip() gives: pyarrow converts a tuple of bytes ~40x slower
        arrays = [binary_array(col) if f.type == pa.binary() else pa.array(list(col), type=f.type)
                  for col, f in zip(zip(*rows), READER_SCHEMA)]
        return pa.RecordBatch.from_arrays(arrays, schema=READER_SCHEMA)


def _row(record, source: str, index: int, content_type: str | None, reason: str | None,
         metric: float | None, html: bytes | None = None, text: str | None = None) -> tuple:
    headers = record.headers
    record_id = headers.get("WARC-Record-ID")
    url = headers.get("WARC-Target-URI")
    if url is not None:
        url = url.strip().strip("<>").strip() or None
    doc_id = _short_id(record_id) or f"{_id_base(source)}#{index}"
    return (doc_id, url, record_id, headers.get("WARC-Date"), content_type, source, html, text, reason, metric)


def _id_base(source: str) -> str:
    """The file name of ``source``: ids made from it are the same in every checkout and carry no
    user's directories into published removal lists (found by adversarial testing); ``source``
    itself stays in its column."""
    return posixpath.basename(source.rstrip("/")) or source


def _corrupt_row(source: str, offset: int, used: set[str] | None = None) -> tuple:
    doc_id = f"{_id_base(source)}#corrupt@{offset}"
    if used is not None:  # two damaged spans reported at one offset: keep ids unique
        n = 1
        while doc_id in used:
            n += 1
            doc_id = f"{_id_base(source)}#corrupt@{offset}.{n}"
        used.add(doc_id)
    return (doc_id, None, None, None, None, source, None, None, "corrupt_stream", float(offset))


class _SegmentEnd:
    """How a segment ended: ``damage`` (input offset of the damaged span, None if clean) and
    ``last_record`` (input offset of the last record FastWARC returned, None if none), and
    ``bad_member``."""

    __slots__ = ("damage", "last_record", "bad_member", "member", "in_member")

    def __init__(self) -> None:
        self.damage: int | None = None
        self.last_record: int | None = None
        self.bad_member: int | None = None  # exact: the gzip layer's first bad member
        # gzip: input offset of the member holding the last record (or the segment start), and
        # the last record's position in that member's decompressed bytes (-1: none read)
        self.member: int | None = None
        self.in_member = -1


def read_warc(
    stream: BinaryIO,
    source: str,
    batch_size: int = 500,
    max_body_bytes: int = 50 * 2**20,
    verify_digests: bool = False,
) -> Iterator[pa.RecordBatch]:
    """Convenience wrapper: ``WarcReader(...).read(stream, source)`` (counters not accessible)."""
    return WarcReader(batch_size, max_body_bytes, verify_digests).read(stream, source)
