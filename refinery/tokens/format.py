"""The token shard format: Megatron-Core's indexed dataset plus refinery sidecars (docs/tokens.md).

A shard ``NAME`` is four objects next to each other (local directory or S3 prefix):

- ``NAME.bin``  every token of every document, EOS-terminated, concatenated: a flat little-endian
  uint16 (vocab <= 65536) or int32 array with no header, so ``np.memmap`` reads it directly;
- ``NAME.idx``  Megatron-Core's ``MMIDIDX`` index, byte for byte what
  ``megatron.core.datasets.indexed_dataset.IndexedDataset`` reads (one sequence per document):
  magic ``MMIDIDX\\x00\\x00``, version ``<Q`` 1, dtype code ``<B`` (8 uint16, 4 int32), sequence
  count ``<Q`` n, document count ``<Q`` n + 1, then ``int32`` sequence lengths (tokens),
  ``int64`` sequence pointers (bytes into ``.bin``) and ``int64`` document indices ``0 .. n``;
- ``NAME.ids.parquet``  (sidecar) the document ids, in shard order: which document is where;
- ``NAME.json``  (sidecar) the shard's manifest entry: tokenizer SHA-256, vocabulary, counts, file
  SHA-256s. Written last, it marks the shard finished.

Megatron-LM, NeMo and GPT-NeoX-style trainers read ``NAME`` as a data path prefix without
conversion. Megatron's index has no room for the tokenizer, so the sidecar carries it: a shard is
only opened together with its ``NAME.json``, and a shard from another tokenizer is refused by that.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from refinery.io import fs, parquet

MAGIC = b"MMIDIDX\x00\x00"  # megatron.core.datasets.indexed_dataset._INDEX_HEADER
MEGATRON_VERSION = 1
PRELUDE = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document count
PRELUDE_SIZE = PRELUDE.size  # 34 bytes
#: an S3 ``.idx`` up to this size (~52,000 documents at 20 bytes each) is read whole when a shard is
#: opened: one GET (as the opening GET of any S3 read asks for up to 1 MiB: fs.S3RangeFile.OPEN_BYTES)
WHOLE_INDEX_BYTES = 2**20
# Megatron's DType enum codes for the two token widths we write (it has no uint32: wide vocabularies are int32)
DTYPE_CODES = {np.dtype("<u2"): 8, np.dtype("<i4"): 4}
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
FORMAT = "refinery-tokens"
VERSION = 2  # manifest version; 1 was refinery's own RFTOKIDX index (no longer read)
SHARD_FORMAT = "megatron-indexed-dataset"
_OLD_MAGIC = b"RFTOKIDX"
RETOKENIZE = "re-tokenize it (`refinery tokenize RUN_DIR --output DIR --force`) to write Megatron indexed-dataset shards"


class TokenShardError(RuntimeError):
    """A token shard is unusable (truncated, corrupt, or not what the manifest says); names the shard."""


class TokensChangedError(TokenShardError):
    """A token shard was rewritten while a reader streamed it (``tokenize --force`` under a running job)."""


class TokenizerMismatchError(TokenShardError):
    """Shards, manifest and/or the caller disagree about the tokenizer or vocabulary."""


@dataclass(frozen=True)
class ShardHeader:
    """What a shard is: counts and token width from its ``.idx``, tokenizer from its ``.json`` sidecar."""

    itemsize: int
    vocab_size: int
    n_docs: int
    n_tokens: int
    tokenizer_sha256: str
    dtype: np.dtype

    @property
    def idx_size(self) -> int:
        return index_size(self.n_docs)


def index_size(n_docs: int) -> int:
    """Bytes of a Megatron ``.idx`` with one sequence per document."""
    return PRELUDE_SIZE + 4 * n_docs + 8 * n_docs + 8 * (n_docs + 1)


def pack_index(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    """The Megatron ``.idx`` for documents of ``lengths`` tokens (one sequence per document)."""
    n = len(lengths)
    lengths = np.asarray(lengths, np.int64)
    if n and (lengths.min() < 1 or lengths.max() > np.iinfo(np.int32).max):
        raise ValueError(f"document lengths must be 1 .. 2**31-1 tokens (Megatron stores int32), got {lengths.min()} .. {lengths.max()}")
    pointers = np.zeros(n, "<i8")
    np.cumsum(lengths[:-1] * dtype.itemsize, out=pointers[1:])
    return b"".join((
        PRELUDE.pack(MAGIC, MEGATRON_VERSION, DTYPE_CODES[dtype], n, n + 1),
        lengths.astype("<i4").tobytes(),
        pointers.tobytes(),
        np.arange(n + 1, dtype="<i8").tobytes(),  # document boundaries, in sequences: one sequence each
    ))


def parse_prelude(data: bytes, uri: str) -> tuple[np.dtype, int]:
    """``(token dtype, n_docs)`` from the first 34 bytes of a ``.idx``; refuses anything else by name."""
    if data[: len(_OLD_MAGIC)] == _OLD_MAGIC:
        raise TokenShardError(f"{uri} is in refinery's old RFTOKIDX token format, no longer read: {RETOKENIZE}")
    if len(data) < PRELUDE_SIZE:
        raise TokenShardError(f"truncated token index {uri}: {len(data)} bytes, its header needs {PRELUDE_SIZE}")
    magic, version, code, n_seq, n_doc_idx = PRELUDE.unpack(data[:PRELUDE_SIZE])
    if magic != MAGIC:
        raise TokenShardError(f"{uri} is not a Megatron indexed-dataset index (magic {magic!r})")
    if version != MEGATRON_VERSION:
        raise TokenShardError(f"{uri} has Megatron index version {version}; this refinery reads version {MEGATRON_VERSION}")
    if code not in CODE_DTYPES:
        raise TokenShardError(f"{uri}: token dtype code {code} is not uint16 (8) or int32 (4)")
    if n_doc_idx != n_seq + 1:
        raise TokenShardError(f"{uri}: {n_seq} sequences but {n_doc_idx} document indices; refinery writes one "
                              "sequence per document (n + 1 indices): not a refinery shard or corrupt")
    return CODE_DTYPES[code], n_seq


def shard_uris(directory: str, name: str) -> dict[str, str]:
    return {k: fs.join(directory, name + ext) for k, ext in
            (("bin", ".bin"), ("idx", ".idx"), ("ids", ".ids.parquet"), ("marker", ".json"))}


def _sha(data) -> str:
    return hashlib.sha256(data).hexdigest()


def write_shard(directory: str, name: str, tokens: np.ndarray, offsets: np.ndarray, ids: list[str] | pa.Array,
                vocab_size: int, tokenizer_sha256: str, extra: dict | None = None,
                ids_row_groups: list[int] | None = None) -> dict:
    """Write one shard atomically, marker last; return its manifest entry.

    ``offsets`` are the ``n_docs + 1`` document start offsets in tokens. ``ids_row_groups`` (sizes)
    lays the ids file out in those row groups, so a reader can fetch one group (e.g. one shuffle
    bucket) without reading the rest.
    """
    dtype = np.dtype(tokens.dtype).newbyteorder("<")
    if dtype not in DTYPE_CODES:
        raise ValueError(f"token shard {name}: dtype {tokens.dtype} is not uint16 or int32 (what Megatron reads)")
    tokens = np.ascontiguousarray(tokens, dtype=dtype)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    n_docs = len(offsets) - 1
    if n_docs != len(ids) or int(offsets[-1]) != len(tokens) or int(offsets[0]) != 0:
        raise ValueError(f"inconsistent shard {name}: {n_docs} docs, {len(ids)} ids, {len(tokens)} tokens, offsets end {offsets[-1]}")
    uris = shard_uris(directory, name)
    bin_bytes = memoryview(tokens).cast("B")
    idx_bytes = pack_index(np.diff(offsets), dtype)
    fs.write_bytes(uris["bin"], bin_bytes)
    fs.write_bytes(uris["idx"], idx_bytes)
    id_array = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(ids, pa.string())
    ids_bytes = _ids_parquet(pa.table({"id": id_array}), ids_row_groups)
    fs.write_bytes(uris["ids"], ids_bytes)
    entry = {
        "name": name,
        "shard_format": SHARD_FORMAT,
        "bin": name + ".bin",
        "idx": name + ".idx",
        "ids": name + ".ids.parquet",
        "n_docs": n_docs,
        "n_tokens": len(tokens),
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "tokenizer_sha256": tokenizer_sha256,
        "bin_sha256": _sha(bin_bytes),
        "idx_sha256": _sha(idx_bytes),
        "ids_bytes": len(ids_bytes),  # a rerun redoes a shard whose ids file was cut short (as .bin/.idx)
        **(extra or {}),
    }
    fs.write_bytes(uris["marker"], json.dumps(entry, indent=1).encode())
    return entry


def _ids_parquet(table: pa.Table, row_groups: list[int] | None) -> bytes:
    """The ids file's bytes (built in memory, one string per document: its size goes in the
    sidecar without another request). ``row_groups``: sizes, group i = shuffle bucket i."""
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    if row_groups is None:
        parquet.write_to(sink, table)
    else:
        with pq.ParquetWriter(sink, table.schema, compression=parquet.COMPRESSION) as w:
            start = 0
            for size in row_groups:  # an empty slice still writes an (empty) row group: group i = bucket i
                w.write_table(table.slice(start, size), row_group_size=max(size, 1))
                start += size
    return sink.getvalue().to_pybytes()


def shard_damage(entry: dict, sizes: dict[str, int]) -> str | None:
    """What is wrong with a finished shard's files, given ``sizes`` (file name -> bytes, one
    listing of its directory), or None: a file missing, or a ``.bin``/``.idx``/``.ids.parquet`` whose size is not
    what the sidecar records (cut short by an interrupted copy; a rerun skipped it and reported
    success while the loader refused it; found by adversarial testing)."""
    name = str(entry.get("name"))
    try:
        want = {name + ".bin": int(entry["n_tokens"]) * np.dtype(entry["dtype"]).itemsize,
                name + ".idx": index_size(int(entry["n_docs"]))}
    except (KeyError, TypeError, ValueError):
        return f"its sidecar {name}.json lacks n_tokens, n_docs or dtype"
    if isinstance(entry.get("ids_bytes"), int):  # (a sidecar of an older refinery has none: existence only)
        want[name + ".ids.parquet"] = entry["ids_bytes"]
    for file in (name + ".bin", name + ".idx", name + ".ids.parquet"):
        if file not in sizes:
            return f"{file} is missing"
        if file in want and sizes[file] != want[file]:
            return f"{file} has {sizes[file]} bytes, not the {want[file]} its sidecar records"
    return None


def file_sizes(directory: str, suffixes: tuple[str, ...] = (".bin", ".idx", ".parquet")) -> dict[str, int]:
    """File name -> byte size of the files directly in a token directory (one listing: on S3 one
    LIST of an empty prefix, not pyarrow's look after it, a HEAD and a LIST)."""
    try:
        listing = fs.list_file_versions_if_any(directory, suffixes)
    except fs.StorageError:
        return {}
    prefix = fs.absolute(directory).rstrip("/") + "/"  # local listings are absolute
    return {u[len(prefix):]: size for u, (size, _) in listing.items()
            if u.startswith(prefix) and "/" not in u[len(prefix):]}


def read_marker(directory: str, name: str) -> dict | None:
    """The shard's ``.json`` sidecar (its manifest entry), or None if the shard is not finished."""
    uri = shard_uris(directory, name)["marker"]
    try:
        data = fs.read_bytes(uri)
    except fs.StorageError:
        return None
    try:
        marker = json.loads(data)
    except ValueError as exc:
        raise TokenShardError(f"corrupt token shard sidecar {uri}: {exc}") from None
    if not isinstance(marker, dict):
        raise TokenShardError(f"corrupt token shard sidecar {uri}: not a JSON object")
    return marker


class ShardFile:
    """Random access to one shard by byte ranges (``read_at``): a pread locally, a ranged GET on S3.

    Opening reads the ``.json`` sidecar, the ``.idx`` header and last entries and both file sizes,
    so a truncated ``.bin`` or ``.idx``, a foreign index or a shard without its sidecar is reported
    here, by name, before any training step reads garbage. ``sizes`` (path -> bytes, from one
    directory listing) saves a metadata request per file.

    Local files are opened per read (no file descriptor held per shard: corpora have thousands);
    an S3 object holds no descriptor either. The ``.bin``'s version (mtime and inode locally, the
    ETag on S3) is taken first, and every read checks it (``fstat`` of the descriptor it reads from;
    ``If-Match`` on S3): a shard rewritten under a running loader (``tokenize --force``) raises
    :class:`TokensChangedError` rather than mixing old offsets with new tokens.
    ``listing`` (path -> (bytes, version), from one directory listing: :func:`list_versions`)
    saves a metadata request per file.
    """

    def __init__(self, directory: str, name: str, listing: dict[str, tuple[int, str]] | None = None) -> None:
        self.name, self.directory = name, directory
        self.uris = shard_uris(directory, name)
        self._fs, self._idx_path = fs.resolve(self.uris["idx"])
        self._bin_path = fs.resolve(self.uris["bin"])[1]
        self._remote = fs.is_s3(directory)
        # before the index and sidecar are read: what they vouch for is this version of the .bin
        bin_size, self._bin_version = self._version(self._bin_path, listing, "bin")
        idx_size, self._idx_version = self._version(self._idx_path, listing, "idx")
        self._idx_size = idx_size
        # a small index (all but the largest shards') is read whole in one GET on S3: its prelude
        # and last entries were a HEAD and 4 ranged GETs through pyarrow (session 45, h141)
        with self._index_reader(whole=idx_size <= WHOLE_INDEX_BYTES) as read_at:
            dtype, n = parse_prelude(read_at(PRELUDE_SIZE, 0), self.uris["idx"])
            if idx_size != index_size(n):
                raise TokenShardError(
                    f"truncated token index {self.uris['idx']}: header says {n} documents "
                    f"({index_size(n)} bytes) but the file has {idx_size} bytes")
            n_tokens, last_doc_index = 0, 0
            if n:
                last_len = int(np.frombuffer(read_at(4, PRELUDE_SIZE + 4 * (n - 1)), "<i4")[0])
                last_ptr = int(np.frombuffer(read_at(8, PRELUDE_SIZE + 12 * n - 8), "<i8")[0])
                last_doc_index = int(np.frombuffer(read_at(8, idx_size - 8), "<i8")[0])
                n_tokens = last_ptr // dtype.itemsize + last_len
        if last_doc_index != n:
            raise TokenShardError(f"corrupt token index {self.uris['idx']}: last document index {last_doc_index} != {n} documents")
        if bin_size != n_tokens * dtype.itemsize:
            what = "truncated" if bin_size < n_tokens * dtype.itemsize else "corrupt (oversized)"
            raise TokenShardError(
                f"{what} token shard {self.uris['bin']}: its index says {n_tokens} tokens "
                f"({n_tokens * dtype.itemsize} bytes) but the file has {bin_size} bytes")
        self.meta = self._sidecar(dtype, n, n_tokens)
        self.header = ShardHeader(dtype.itemsize, int(self.meta["vocab_size"]), n, n_tokens,
                                  str(self.meta["tokenizer_sha256"]), dtype)

    @contextmanager
    def _index_reader(self, whole: bool = False) -> Iterator[Callable[[int, int], bytes]]:
        """``read_at(nbytes, offset)`` of the ``.idx``: locally through one open file, as before;
        on S3 ranged GETs pinned to the version opening took (``If-Match``: no HEAD first, and an
        index replaced meanwhile is refused, not mixed with the old ``.bin``), or, ``whole``, slices
        of the whole index read in one GET. A read past the end is short, as a file's is."""
        if not self._remote:
            with self._fs.open_input_file(self._idx_path) as f:
                yield f.read_at
            return
        size = self._idx_size
        data = self._read_idx(size, 0) if whole else None

        def read_at(nbytes: int, offset: int) -> bytes:
            if data is not None:
                return data[offset:offset + nbytes]
            return self._read_idx(min(nbytes, size - offset), offset)

        yield read_at

    def _read_idx(self, nbytes: int, offset: int) -> bytes:
        """Bytes of the ``.idx`` on S3 by one ranged GET of its version when opened."""
        if nbytes <= 0:
            return b""
        try:
            return fs.read_range_if(self.uris["idx"], offset, nbytes, self._idx_version)
        except fs.ObjectMissing:
            raise TokenShardError(f"token index {self.uris['idx']} went missing while being read (deleted, or "
                                  f"being rewritten by a tokenize --force?)") from None
        except fs.ObjectChanged:
            raise TokensChangedError(
                f"token index {self.uris['idx']} changed while it was being read (ETag {self._idx_version} when it "
                f"was opened, another now): rewritten under this job (refinery tokenize --force, a rerun after a "
                f"config change, a copy over it); restart on the tokens as they are now") from None

    def _sidecar(self, dtype: np.dtype, n_docs: int, n_tokens: int) -> dict:
        """The ``.json`` sidecar, checked against the index it describes."""
        uri = self.uris["marker"]
        meta = read_marker(self.directory, self.name)
        if meta is None:
            raise TokenShardError(f"token shard {self.name} has no sidecar {uri}: unfinished, or not written by "
                                  "`refinery tokenize` (the sidecar records the tokenizer)")
        missing = [k for k in ("vocab_size", "tokenizer_sha256", "n_docs", "n_tokens", "dtype") if k not in meta]
        if missing:
            raise TokenShardError(f"token shard sidecar {uri} lacks {', '.join(missing)}")
        if (meta["n_docs"], meta["n_tokens"], meta["dtype"]) != (n_docs, n_tokens, dtype.name):
            raise TokenShardError(
                f"token shard {self.uris['idx']} holds {n_docs} docs / {n_tokens} {dtype.name} tokens but its sidecar "
                f"{uri} says {meta['n_docs']} / {meta['n_tokens']} {meta['dtype']}: files replaced or mixed up")
        return meta

    def _version(self, path: str, listing: dict[str, tuple[int, str]] | None, kind: str) -> tuple[int, str]:
        if listing is not None and path in listing:
            return listing[path]
        try:
            if self._remote:
                bucket, _, key = path.partition("/")
                head = fs.s3_client().head_object(Bucket=bucket, Key=key)
                return int(head["ContentLength"]), str(head["ETag"]).strip('"')
            return _local_version(os.stat(path))
        except Exception as exc:  # noqa: BLE001 - botocore raises many types; a 404 is a missing file
            if self._remote and str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) not in ("404", "NoSuchKey"):
                raise fs.s3_error(f"cannot read the size and ETag of {self.uris[kind]}", exc) from exc
            if not self._remote and not isinstance(exc, FileNotFoundError):
                raise
        raise TokenShardError(f"token shard {self.name} is missing its .{kind} file: {self.uris[kind]}")

    def _read_bin(self, nbytes: int, offset: int) -> bytes:
        if self._remote:
            try:
                return fs.read_range_if(self.uris["bin"], offset, nbytes, self._bin_version)
            except fs.ObjectMissing:
                raise FileNotFoundError(self.uris["bin"]) from None
            except fs.ObjectChanged:
                raise self._changed(f"ETag {self._bin_version} when it was opened, another now") from None
        fd = os.open(self._bin_path, os.O_RDONLY)
        try:
            now = _local_version(os.fstat(fd))  # of the descriptor read below: no gap for a rename
            if now[1] != self._bin_version:
                raise self._changed(f"mtime:inode {self._bin_version} when it was opened, {now[1]} now")
            return os.pread(fd, nbytes, offset)
        finally:
            os.close(fd)

    def _changed(self, versions: str) -> TokensChangedError:
        return TokensChangedError(
            f"token shard {self.uris['bin']} changed while it was being read ({versions}): rewritten under this job "
            f"(refinery tokenize --force, a rerun after a config change, a copy over it); restart on the tokens as they "
            f"are now without the old loader state, or restore the old ones")

    def read_tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of this shard (thread-safe)."""
        n = stop - start
        if n <= 0:
            return np.empty(0, self.header.dtype)
        size = self.header.itemsize
        try:
            data = self._read_bin(n * size, start * size)
        except FileNotFoundError:  # pyarrow's message named the path without its s3:// (adversarial testing)
            raise TokenShardError(f"token shard {self.uris['bin']} went missing while being read (deleted, or "
                                  f"being rewritten by a tokenize --force?)") from None
        if len(data) != n * size:
            raise TokenShardError(f"short read from token shard {self.uris['bin']}: wanted tokens "
                                  f"[{start}, {stop}), got {len(data) // size}; was the file truncated?")
        return np.frombuffer(data, self.header.dtype)

    def read_offsets(self, first_doc: int = 0, last_doc: int | None = None) -> np.ndarray:
        """Start offsets (in tokens) of documents ``first_doc .. last_doc`` inclusive; document
        ``n_docs`` is the end of the shard (default: all of them, plus the end)."""
        n = self.header.n_docs
        last_doc = n if last_doc is None else last_doc
        stop = min(last_doc, n - 1) + 1  # pointers exist for documents 0 .. n-1
        count = max(stop - first_doc, 0)
        with self._index_reader() as read_at:
            data = read_at(8 * count, PRELUDE_SIZE + 4 * n + 8 * first_doc) if count else b""
        if len(data) != 8 * count:
            raise TokenShardError(f"short read from token index {self.uris['idx']}")
        starts = np.frombuffer(data, "<i8") // self.header.itemsize  # Megatron's pointers are bytes
        if last_doc == n:
            starts = np.append(starts, self.header.n_tokens)
        return starts.astype(np.int64)

    def document(self, i: int) -> np.ndarray:
        start, stop = self.read_offsets(i, i + 1)
        return self.read_tokens(int(start), int(stop))

    def validate_index(self) -> None:
        """Read the whole ``.idx`` and check it is the index of this ``.bin`` with one sequence per
        document: lengths >= 1, pointers their running byte sum, document indices ``0 .. n``."""
        h = self.header
        with self._index_reader() as read_at:
            data = read_at(h.idx_size, 0)
        if len(data) != h.idx_size:
            raise TokenShardError(f"short read from token index {self.uris['idx']}")
        n = h.n_docs
        lengths = np.frombuffer(data, "<i4", n, PRELUDE_SIZE).astype(np.int64)
        pointers = np.frombuffer(data, "<i8", n, PRELUDE_SIZE + 4 * n)
        doc_index = np.frombuffer(data, "<i8", n + 1, PRELUDE_SIZE + 12 * n)
        expected = np.zeros(n, np.int64)
        np.cumsum(lengths[:-1] * h.itemsize, out=expected[1:])
        problems = []
        if n and lengths.min() < 1:
            problems.append(f"document {int(np.argmin(lengths))} has length {int(lengths.min())}")
        if not np.array_equal(pointers, expected):
            problems.append(f"sequence pointer {int(np.flatnonzero(pointers != expected)[0])} is not the sum of the lengths before it")
        if not np.array_equal(doc_index, np.arange(n + 1)):
            problems.append("document indices are not 0 .. n (one sequence per document)")
        if int(lengths.sum()) != h.n_tokens:
            problems.append(f"lengths add up to {int(lengths.sum())} tokens, not {h.n_tokens}")
        if problems:
            raise TokenShardError(f"corrupt token index {self.uris['idx']}: {'; '.join(problems)}")

    def close(self) -> None:
        """Nothing to release (no descriptor is held); kept for callers that close what they open."""


#: tokens read at a time by :func:`document_edge_problems` (64 MiB of int16 tokens: memory stays bounded)
EDGE_CHECK_TOKENS = 1 << 25


def document_edge_problems(shard: ShardFile, eos_id: int, bos_id: int | None = None,
                           chunk_tokens: int = EDGE_CHECK_TOKENS) -> list[str]:
    """What breaks the shape every document of ``shard`` must have for training (``verify-tokens``):
    its last token EOS, its first the BOS when the output records one, and neither anywhere else
    (special tokens are never made from text, so a stray one is a boundary the index does not
    have: documents glued or cut). Reads the ``.bin`` ``chunk_tokens`` at a time; one line per
    kind of problem, with the first document it hits and how many."""
    offsets = shard.read_offsets()
    starts, ends = offsets[:-1], offsets[1:] - 1
    empty = int(np.count_nonzero(offsets[1:] <= offsets[:-1]))
    problems = [f"{shard.uris['idx']}: {empty} empty document(s) (every document ends with EOS)"] if empty else []
    no_eos, no_bos, eos_seen, bos_seen = [], [], 0, 0
    for begin in range(0, shard.header.n_tokens, chunk_tokens):
        stop = min(begin + chunk_tokens, shard.header.n_tokens)
        tokens = shard.read_tokens(begin, stop)
        eos_seen += int(np.count_nonzero(tokens == eos_id))
        lo, hi = np.searchsorted(ends, [begin, stop])
        no_eos.extend(np.flatnonzero(tokens[ends[lo:hi] - begin] != eos_id) + lo)
        if bos_id is not None:
            bos_seen += int(np.count_nonzero(tokens == bos_id))
            lo, hi = np.searchsorted(starts, [begin, stop])
            no_bos.extend(np.flatnonzero(tokens[starts[lo:hi] - begin] != bos_id) + lo)
    n_docs = shard.header.n_docs
    if no_eos:
        problems.append(f"{shard.uris['bin']}: {len(no_eos)} document(s) do not end with EOS ({eos_id}), "
                        f"the first document {int(no_eos[0])}")
    elif not empty and eos_seen != n_docs:
        problems.append(f"{shard.uris['bin']}: {eos_seen - n_docs} EOS token(s) ({eos_id}) inside documents: "
                        "boundaries the index does not have")
    if bos_id is not None:
        if no_bos:
            problems.append(f"{shard.uris['bin']}: {len(no_bos)} document(s) do not begin with BOS ({bos_id}), "
                            f"the first document {int(no_bos[0])}")
        elif bos_seen != n_docs:
            problems.append(f"{shard.uris['bin']}: {bos_seen - n_docs} BOS token(s) ({bos_id}) inside documents")
    return problems


def _local_version(st: os.stat_result) -> tuple[int, str]:
    """(size, version) of a local file: an atomic rewrite (temp file + rename) is a new inode, and
    any rewrite a new mtime."""
    return st.st_size, f"{st.st_mtime_ns}:{st.st_ino}"


def list_versions(directory: str) -> dict[str, tuple[int, str]]:
    """``{filesystem path: (size, version)}`` of the files directly in ``directory``: one LIST on
    S3 (version: the ETag), one ``scandir`` locally (version: mtime and inode)."""
    if fs.is_s3(directory):
        path = directory[5:].rstrip("/")
        bucket, _, key = path.partition("/")
        found: dict[str, tuple[int, str]] = {}
        try:
            pages = fs.s3_client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{key}/" if key else "", Delimiter="/")
            for page in pages:
                for obj in page.get("Contents", []):
                    found[f"{bucket}/{obj['Key']}"] = (int(obj["Size"]), str(obj["ETag"]).strip('"'))
        except Exception:  # noqa: BLE001 - no listing: each shard asks for its own files (and names what fails)
            return {}
        return found
    path = fs.resolve(directory)[1]
    try:
        with os.scandir(path) as entries:
            return {os.path.join(path, e.name): _local_version(e.stat()) for e in entries if e.is_file()}
    except OSError:
        return {}


def file_sha256(uri: str, chunk: int = 8 << 20) -> str:
    """The file's SHA-256, read in ``chunk``s; on S3 by ranged GETs pinned to its ETag (a small
    file in one GET), not pyarrow's stream (a HEAD first, then GETs; session 45, h148)."""
    h = hashlib.sha256()
    with fs.open_input(uri) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

