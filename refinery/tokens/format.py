"""The token shard format (see docs/tokens.md).

A shard ``NAME`` is four objects next to each other (local directory or S3 prefix):

- ``NAME.bin``  every token of every document, EOS-terminated, concatenated: a flat little-endian
  uint16 (vocab <= 65536) or uint32 array with no header, so ``np.memmap`` reads it directly;
- ``NAME.idx``  a 72-byte header (magic, version, itemsize, vocab size, doc count, token count,
  tokenizer SHA-256) followed by ``n_docs + 1`` uint64 document start offsets (in tokens);
- ``NAME.ids.parquet``  the document ids, in shard order (provenance: which document is where);
- ``NAME.json``  the shard's manifest entry (counts, file SHA-256s); written last, it marks the
  shard finished.

The header makes every shard self-describing, so a shard from another tokenizer or a truncated
file is caught without trusting file names.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from refinery.io import fs, parquet

MAGIC = b"RFTOKIDX"
VERSION = 1
HEADER = struct.Struct("<8sIIQQQ32s")  # magic, version, itemsize, vocab_size, n_docs, n_tokens, sha256
HEADER_SIZE = HEADER.size  # 72 bytes
FORMAT = "refinery-tokens"


class TokenShardError(RuntimeError):
    """A token shard is unusable (truncated, corrupt, or not what the manifest says); names the shard."""


class TokenizerMismatchError(TokenShardError):
    """Shards, manifest and/or the caller disagree about the tokenizer or vocabulary."""


@dataclass(frozen=True)
class IndexHeader:
    itemsize: int
    vocab_size: int
    n_docs: int
    n_tokens: int
    tokenizer_sha256: str

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.itemsize, self.vocab_size, self.n_docs, self.n_tokens,
                           bytes.fromhex(self.tokenizer_sha256))

    @classmethod
    def unpack(cls, data: bytes, uri: str) -> IndexHeader:
        if len(data) < HEADER_SIZE:
            raise TokenShardError(f"truncated token index {uri}: {len(data)} bytes, header needs {HEADER_SIZE}")
        magic, version, itemsize, vocab, n_docs, n_tokens, sha = HEADER.unpack(data[:HEADER_SIZE])
        if magic != MAGIC:
            raise TokenShardError(f"{uri} is not a refinery token index (magic {magic!r})")
        if version != VERSION:
            raise TokenShardError(f"{uri} has token index version {version}; this refinery reads version {VERSION}")
        if itemsize not in (2, 4):
            raise TokenShardError(f"{uri}: corrupt header, token itemsize {itemsize}")
        return cls(itemsize, vocab, n_docs, n_tokens, sha.hex())

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(f"<u{self.itemsize}")

    @property
    def idx_size(self) -> int:
        return HEADER_SIZE + 8 * (self.n_docs + 1)


def shard_uris(directory: str, name: str) -> dict[str, str]:
    return {k: fs.join(directory, name + ext) for k, ext in
            (("bin", ".bin"), ("idx", ".idx"), ("ids", ".ids.parquet"), ("marker", ".json"))}


def _sha(data) -> str:
    return hashlib.sha256(data).hexdigest()


def write_shard(directory: str, name: str, tokens: np.ndarray, offsets: np.ndarray, ids: list[str] | pa.Array,
                vocab_size: int, tokenizer_sha256: str, extra: dict | None = None,
                ids_row_groups: list[int] | None = None) -> dict:
    """Write one shard atomically, marker last; return its manifest entry.

    ``ids_row_groups`` (sizes) lays the ids file out in those row groups, so a reader can fetch one
    group (e.g. one shuffle bucket) without reading the rest.
    """
    tokens = np.ascontiguousarray(tokens)
    offsets = np.ascontiguousarray(offsets, dtype="<u8")
    n_docs = len(offsets) - 1
    if n_docs != len(ids) or int(offsets[-1]) != len(tokens) or int(offsets[0]) != 0:
        raise ValueError(f"inconsistent shard {name}: {n_docs} docs, {len(ids)} ids, {len(tokens)} tokens, offsets end {offsets[-1]}")
    header = IndexHeader(tokens.dtype.itemsize, vocab_size, n_docs, len(tokens), tokenizer_sha256)
    uris = shard_uris(directory, name)
    bin_bytes = memoryview(tokens.astype(tokens.dtype.newbyteorder("<"), copy=False)).cast("B")
    idx_bytes = header.pack() + offsets.tobytes()
    fs.write_bytes(uris["bin"], bin_bytes)
    fs.write_bytes(uris["idx"], idx_bytes)
    id_array = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(ids, pa.string())
    table = pa.table({"id": id_array})
    if ids_row_groups is None:
        parquet.write_table(table, uris["ids"])
    else:
        import pyarrow.parquet as pq

        with fs.atomic_output(uris["ids"]) as out, pq.ParquetWriter(out, table.schema, compression=parquet.COMPRESSION) as w:
            start = 0
            for size in ids_row_groups:  # an empty slice still writes an (empty) row group: group i = bucket i
                w.write_table(table.slice(start, size), row_group_size=max(size, 1))
                start += size
    entry = {
        "name": name,
        "bin": name + ".bin",
        "idx": name + ".idx",
        "ids": name + ".ids.parquet",
        "n_docs": n_docs,
        "n_tokens": len(tokens),
        "dtype": tokens.dtype.name,
        "vocab_size": vocab_size,
        "tokenizer_sha256": tokenizer_sha256,
        "bin_sha256": _sha(bin_bytes),
        "idx_sha256": _sha(idx_bytes),
        **(extra or {}),
    }
    fs.write_bytes(uris["marker"], json.dumps(entry, indent=1).encode())
    return entry


def read_marker(directory: str, name: str) -> dict | None:
    uri = shard_uris(directory, name)["marker"]
    try:
        return json.loads(fs.read_bytes(uri))
    except fs.StorageError:
        return None


class ShardFile:
    """Random access to one shard by byte ranges (``read_at``): a pread locally, a ranged GET on S3.

    Opening checks the index header and both file sizes, so a truncated ``.bin`` or ``.idx`` is
    reported here, by name, before any training step reads garbage. ``sizes`` (path -> bytes, from
    one directory listing) saves a metadata request per file.

    Local files are opened per read (no file descriptor held per shard: corpora have thousands);
    an S3 object handle holds no descriptor, so it is opened once (one HEAD) and kept.
    """

    def __init__(self, directory: str, name: str, sizes: dict[str, int] | None = None) -> None:
        self.name = name
        self.uris = shard_uris(directory, name)
        self._fs, self._idx_path = fs.resolve(self.uris["idx"])
        self._bin_path = fs.resolve(self.uris["bin"])[1]
        self._remote = fs.is_s3(directory)
        self._bin_handle = None
        self._lock = threading.Lock()
        idx_size, bin_size = (self._size(self._idx_path, sizes, "idx"), self._size(self._bin_path, sizes, "bin"))
        with self._fs.open_input_file(self._idx_path) as f:
            self.header = IndexHeader.unpack(f.read_at(HEADER_SIZE, 0), self.uris["idx"])
            h = self.header
            if idx_size != h.idx_size:
                raise TokenShardError(
                    f"truncated token index {self.uris['idx']}: header says {h.n_docs} documents "
                    f"({h.idx_size} bytes) but the file has {idx_size} bytes")
            last = int(np.frombuffer(f.read_at(8, idx_size - 8), "<u8")[0])
        if bin_size != h.n_tokens * h.itemsize:
            what = "truncated" if bin_size < h.n_tokens * h.itemsize else "corrupt (oversized)"
            raise TokenShardError(
                f"{what} token shard {self.uris['bin']}: its index says {h.n_tokens} tokens "
                f"({h.n_tokens * h.itemsize} bytes) but the file has {bin_size} bytes")
        if last != h.n_tokens:
            raise TokenShardError(f"corrupt token index {self.uris['idx']}: last offset {last} != {h.n_tokens} tokens")

    def _size(self, path: str, sizes: dict[str, int] | None, kind: str) -> int:
        if sizes is not None and path in sizes:
            return sizes[path]
        info = self._fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise TokenShardError(f"token shard {self.name} is missing its .{kind} file: {self.uris[kind]}")
        return info.size

    def _read_bin(self, nbytes: int, offset: int) -> bytes:
        if not self._remote:
            with self._fs.open_input_file(self._bin_path) as f:
                return f.read_at(nbytes, offset)
        with self._lock:
            if self._bin_handle is None:
                self._bin_handle = self._fs.open_input_file(self._bin_path)
        return self._bin_handle.read_at(nbytes, offset)  # thread-safe: no shared cursor

    def read_tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of this shard (thread-safe)."""
        n = stop - start
        if n <= 0:
            return np.empty(0, self.header.dtype)
        size = self.header.itemsize
        data = self._read_bin(n * size, start * size)
        if len(data) != n * size:
            raise TokenShardError(f"short read from token shard {self.uris['bin']}: wanted tokens "
                                  f"[{start}, {stop}), got {len(data) // size}; was the file truncated?")
        return np.frombuffer(data, self.header.dtype)

    def read_offsets(self, first_doc: int = 0, last_doc: int | None = None) -> np.ndarray:
        """Start offsets of documents ``first_doc .. last_doc`` inclusive (default: all, plus the end)."""
        last_doc = self.header.n_docs if last_doc is None else last_doc
        n = last_doc - first_doc + 1
        with self._fs.open_input_file(self._idx_path) as f:
            data = f.read_at(8 * n, HEADER_SIZE + 8 * first_doc)
        if len(data) != 8 * n:
            raise TokenShardError(f"short read from token index {self.uris['idx']}")
        return np.frombuffer(data, "<u8").astype(np.int64)

    def document(self, i: int) -> np.ndarray:
        start, stop = self.read_offsets(i, i + 1)
        return self.read_tokens(int(start), int(stop))

    def close(self) -> None:
        with self._lock:
            if self._bin_handle is not None:
                self._bin_handle.close()
                self._bin_handle = None


def list_sizes(directory: str) -> dict[str, int]:
    """``{filesystem path: size}`` of the files directly in ``directory``: one LIST on S3."""
    filesystem, path = fs.resolve(directory)
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError:
        return {}
    return {i.path: i.size for i in infos if i.type == pafs.FileType.File}


def file_sha256(uri: str, chunk: int = 8 << 20) -> str:
    filesystem, path = fs.resolve(uri)
    h = hashlib.sha256()
    with filesystem.open_input_stream(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_size(uri: str) -> int:
    filesystem, path = fs.resolve(uri)
    info = filesystem.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise TokenShardError(f"missing token shard file {uri}")
    return info.size
