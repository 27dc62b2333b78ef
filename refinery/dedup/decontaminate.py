"""Benchmark decontamination: find the documents that share long word n-grams with benchmark items.

GPT-3's rule (Brown et al., 2020, appendix C): a document is contaminated when it shares a
13-gram of normalized words with a benchmark item. Words are the dedup normalization
(:func:`refinery.dedup.text.tokenize`: lowercase, punctuation stripped, accents folded), so
code and prose match however they were re-punctuated or re-spaced; an item's configured fields
are joined in order (a document holding a prompt followed by its answer matches across the seam).
Items or documents shorter than ``ngram`` words have no n-gram and never match, so short shared
snippets ("Return the sum of the list") are not contamination.

The passes (driven by :mod:`refinery.dedup.driver`, so local pool or Ray, resumable per pass)::

    benchmark_ngrams (one task per benchmark file)
        -> ngrams/<b>.parquet: (hash, item) sorted by hash, unique; items/<b>.parquet: item ids
    matches (one task per shard x hash partition)
        -> matches/<shard>/part-<p>.parquet: (row, hash), each benchmark n-gram a document holds
        -> matches/<shard>/docs-<p>.parquet: (hash, docs), how many of the shard's documents hold it
    ngram_docs (one task per hash partition; with ``max_ngram_docs``)
        -> common/part-<p>.parquet: (hash, docs), the n-grams in more documents than that: ignored
    contamination (one task per shard)
        -> contaminated/<shard>.parquet: (id, benchmark, item, ngrams), what the stage reads

GPT-3 also ignored the 13-grams found in more than 10 training documents ("common cultural
phrases, legal boilerplate"): one benchmark item quoting a site's footer or a licence shared 5-6
n-grams with every page of that site, and removed them all (found by adversarial testing on
real wikidot and StackExchange pages). ``max_ngram_docs`` (default 10) is that rule.

Bounded memory: the benchmark n-grams are 64-bit hashes (the dedup shingle hash), split into P
hash ranges with P = ceil(n-grams x ``BENCH_BYTES_PER_NGRAM`` / budget). A matches task loads one
range (row groups of the hash-sorted files whose min/max overlap it, so S3 reads are ranged) and
streams its shard in batches, so it holds one range plus one batch. Hash ranges are disjoint,
so per-(document, item) counts of distinct shared n-grams add up over partitions exactly.
A benchmark file's own n-grams are sorted in one task: split a file of more than ~50M words.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refinery.config import ConfigError
from refinery.dedup.config import BenchmarkSpec, DedupConfig
from refinery.dedup.shuffle import partition_of
from refinery.dedup.text import _SHINGLE_MUL, mix64, tokenize
from refinery.executors.base import TASK_SUMMARY
from refinery.io import fs, parquet

log = logging.getLogger("refinery.dedup")

_U64 = np.uint64
#: peak bytes per benchmark n-gram held by a matches task: hash + bench + item columns (16), the
#: concatenation and the argsort merging the files' sorted runs, the bit table (2): measured 56
BENCH_BYTES_PER_NGRAM = 56
#: peak bytes per character of a batch of documents being matched (UTF-32 codepoints, word and
#: n-gram hashes, the per-document dedup): measured ~31
DOC_BYTES_PER_CHAR = 32
ROW_GROUP = 1 << 16  # hash-sorted n-gram files: row groups small enough to read one partition's range
BENCHMARK_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson", ".parquet")
NGRAM_SCHEMA = pa.schema([("hash", pa.uint64()), ("item", pa.int32())])
MATCH_SCHEMA = pa.schema([("row", pa.uint32()), ("hash", pa.uint64())])
NGRAM_DOCS_SCHEMA = pa.schema([("hash", pa.uint64()), ("docs", pa.int64())])
#: what the ``decontaminate`` stage reads per shard (one row per contaminated document)
CONTAMINATED_SCHEMA = pa.schema([("id", pa.string()), ("benchmark", pa.string()), ("item", pa.string()),
                                 ("ngrams", pa.int32())])


class BenchmarkError(ConfigError):
    """A benchmark file is missing, unreadable or lacks a configured field (one line, naming both)."""


# -- benchmark files ------------------------------------------------------------------------------
def _kind(spec: BenchmarkSpec) -> str:
    low = spec.path.lower()
    if low.endswith(".parquet"):
        return "parquet"
    if low.endswith(BENCHMARK_SUFFIXES):
        return "jsonl"
    raise BenchmarkError(f"benchmark {spec.name}: {spec.path} is not one of {', '.join(BENCHMARK_SUFFIXES)}")


def benchmark_identity(specs: list[BenchmarkSpec]) -> list[dict[str, Any]]:
    """``path, size, mtime`` of each benchmark file: part of the pass fingerprint, so an edited or
    replaced benchmark file re-runs the pass. A missing file is a :class:`BenchmarkError`."""
    from pyarrow import fs as pafs

    out = []
    for spec in specs:
        try:
            filesystem, path = fs.resolve(spec.path)
            info = filesystem.get_file_info(path)
        except (OSError, ValueError, fs.StorageError) as exc:
            raise BenchmarkError(f"benchmark {spec.name}: cannot read {spec.path}: {exc}") from None
        if info.type != pafs.FileType.File:
            raise BenchmarkError(f"benchmark {spec.name}: file not found: {spec.path}")
        mtime = info.mtime_ns if info.mtime_ns is not None else None
        out.append({"name": spec.name, "path": spec.path, "size": info.size, "mtime_ns": mtime})
    return out


def _as_text(value: Any) -> str:
    """A field's value as text: lists (answer choices) joined by newlines, None as empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "\n".join(_as_text(v) for v in value)
    return str(value)


def read_benchmark(spec: BenchmarkSpec, check_only: bool = False, keep: bool = True) -> tuple[list[str], list[str]]:
    """``(item ids, item texts)`` of a benchmark file: each text is the configured fields joined
    by newlines; the id is ``id_field``'s value or the row number. ``check_only`` stops after
    the schema (Parquet) or the first record (JSONL). ``keep=False`` checks every record and keeps
    none (``([], [])``): the driver's check held a whole benchmark the task reads again (a 300 MB
    JSONL: +386 MB; a 126 MB Parquet, whose schema alone holds every row's fields: +959 MB)."""
    kind = _kind(spec)
    wanted = list(spec.fields) + ([spec.id_field] if spec.id_field else [])
    try:
        f = fs.open_input(spec.path, seekable=kind == "parquet")
    except fs.StorageError as exc:
        raise BenchmarkError(f"benchmark {spec.name}: {exc}") from None
    with f:
        if kind == "parquet":
            try:
                pf = pq.ParquetFile(f)
            except (pa.ArrowInvalid, OSError) as exc:
                raise BenchmarkError(f"benchmark {spec.name}: {spec.path} is not a readable Parquet file: {exc}") from None
            names = pf.schema_arrow.names
            if pf.metadata.num_rows == 0:  # an empty JSONL was refused, an empty Parquet matched nothing, exit 0
                raise BenchmarkError(f"benchmark {spec.name}: {spec.path} holds no records")
            for field in wanted:
                if field not in names:
                    raise BenchmarkError(f"benchmark {spec.name}: {spec.path} has no column {field!r} "
                                         f"(columns: {', '.join(names[:20])})")
            if check_only or not keep:
                return [], []
            table = pf.read(columns=list(dict.fromkeys(wanted)))
            columns = [table.column(c).to_pylist() for c in spec.fields]
            texts = ["\n".join(_as_text(v) for v in values) for values in zip(*columns)] if columns else []
            ids = ([_as_text(v) for v in table.column(spec.id_field).to_pylist()] if spec.id_field
                   else [str(i) for i in range(table.num_rows)])
            return ids, texts
        stream: Any = gzip.GzipFile(fileobj=f) if spec.path.lower().endswith(".gz") else f
        ids: list[str] = []
        texts: list[str] = []
        records = 0
        try:
            # utf-8-sig: a byte order mark (Windows tools write one) failed line 1 as "not JSON";
            # the corpus JSONL reader accepts it
            for lineno, raw in enumerate(io.TextIOWrapper(stream, encoding="utf-8-sig"), 1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise BenchmarkError(f"benchmark {spec.name}: {spec.path} line {lineno} is not JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise BenchmarkError(f"benchmark {spec.name}: {spec.path} line {lineno} is not a JSON object")
                for field in wanted:
                    if field not in record:
                        raise BenchmarkError(f"benchmark {spec.name}: {spec.path} line {lineno} has no field {field!r} "
                                             f"(fields: {', '.join(list(record)[:20])})")
                records += 1
                if keep:
                    texts.append("\n".join(_as_text(record[c]) for c in spec.fields))
                    ids.append(_as_text(record[spec.id_field]) if spec.id_field else str(len(ids)))
                if check_only:
                    break
        except (UnicodeDecodeError, OSError, EOFError) as exc:
            raise BenchmarkError(f"benchmark {spec.name}: cannot read {spec.path}: {exc}") from None
        if not records:
            raise BenchmarkError(f"benchmark {spec.name}: {spec.path} holds no records")
        return ids, texts


def ngram_hashes(texts: list[str | None], ngram: int, seed: int = 0,
                 skip_numeric: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(hashes, doc)``: the 64-bit hash of every word ``ngram``-gram of every text (the
    shingle hash of :mod:`refinery.dedup.text`) and the text it comes from, in text order. Texts
    shorter than ``ngram`` words have none. ``skip_numeric`` leaves out n-grams whose words are
    all digits: "1 2 3 ... 13" is in HumanEval's tests and in every paginated web page."""
    tokens = tokenize(texts, seed=seed)
    wh, counts = tokens.word_hash, tokens.words_per_doc
    m = len(wh) - ngram + 1
    if m <= 0:
        return np.empty(0, _U64), np.empty(0, np.int64)
    h = wh[:m].copy()
    for k in range(1, ngram):  # polynomial combination of the n word hashes, then mixed
        h *= _SHINGLE_MUL
        h += wh[k : k + m]
    mix64(h)
    word_doc = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    valid = word_doc[:m] == word_doc[ngram - 1 :]  # the n-gram stays inside one text
    if skip_numeric:
        cp = tokens.chars
        nondigit = np.zeros(len(cp) + 1, dtype=np.int64)
        np.cumsum((cp < 0x30) | (cp > 0x39), out=nondigit[1:])
        numeric = (nondigit[tokens.ends] - nondigit[tokens.starts]) == 0
        run = np.zeros(len(wh) + 1, dtype=np.int64)
        np.cumsum(numeric, out=run[1:])
        valid &= (run[ngram:] - run[:m]) < ngram
    return h[valid], word_doc[:m][valid]


# -- task functions ---------------------------------------------------------------------------------
def item_batches(texts: list[str], batch_size: int, max_chars: int | None = None) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` slices of ``texts``: at most ``batch_size`` items and, when more than one,
    at most ``max_chars`` characters (n-gram hashing holds ~DOC_BYTES_PER_CHAR bytes per
    character: 1,000 items of 27 KB took 1 GB whatever the memory budget; one longer item is a
    batch of its own)."""
    lo = 0
    while lo < len(texts):
        hi, chars = lo + 1, len(texts[lo])
        while hi < len(texts) and hi - lo < batch_size and (max_chars is None or chars + len(texts[hi]) <= max_chars):
            chars += len(texts[hi])
            hi += 1
        yield lo, hi
        lo = hi


def benchmark_task(spec: dict[str, Any], ngram: int, ngram_uri: str, items_uri: str, batch_size: int = 1000,
                   max_chars: int | None = None) -> dict[str, Any]:
    """One benchmark file -> its unique ``(hash, item)`` pairs sorted by hash, and its item ids;
    hashed in :func:`item_batches` of ``batch_size`` items and ``max_chars`` characters."""
    started = time.time()
    bench = BenchmarkSpec.model_validate(spec)
    ids, texts = read_benchmark(bench)
    hashes, items = [], []
    for lo, hi in item_batches(texts, batch_size, max_chars):
        h, d = ngram_hashes(texts[lo:hi], ngram, skip_numeric=True)
        hashes.append(h)
        items.append((d + lo).astype(np.int32))
    h = np.concatenate(hashes) if hashes else np.empty(0, _U64)
    it = np.concatenate(items) if items else np.empty(0, np.int32)
    order = np.lexsort((it, h))
    h, it = h[order], it[order]
    keep = np.ones(len(h), dtype=bool)
    keep[1:] = (h[1:] != h[:-1]) | (it[1:] != it[:-1])
    h, it = h[keep], it[keep]
    parquet.write_table(pa.table({"hash": pa.array(h), "item": pa.array(it)}, schema=NGRAM_SCHEMA), ngram_uri,
                        row_group_size=ROW_GROUP)
    parquet.write_table(pa.table({"item_id": pa.array(ids, pa.string())}), items_uri)
    # (no np.unique: numpy 2's hash-based unique takes seconds per million values; h is sorted)
    short = int((np.bincount(it, minlength=len(texts)) == 0).sum()) if len(texts) else 0
    distinct = int((h[1:] != h[:-1]).sum()) + 1 if len(h) else 0
    log.info("[decontaminate] benchmark %s: %d items (%d without a %d-gram), %d n-grams, %.1fs", bench.name, len(ids),
             short, ngram, len(h), time.time() - started, extra=TASK_SUMMARY)
    return {"items": len(ids), "items_without_ngrams": short, "ngrams": int(len(h)),
            "distinct_hashes": distinct, "seconds": time.time() - started}


def load_partition(ngram_uris: list[str], part: int, num_parts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Benchmark n-grams of hash partition ``part``: ``(hash, bench, item)`` sorted by hash. Reads
    only the row groups whose hash range overlaps the partition."""
    hs, bs, its = [], [], []
    for b, uri in enumerate(ngram_uris):
        with fs.open_parquet_input(uri) as f:
            pf = pq.ParquetFile(f)
            meta = pf.metadata
            col = meta.schema.names.index("hash")
            for g in range(meta.num_row_groups):
                st = meta.row_group(g).column(col).statistics
                if num_parts > 1 and st is not None and st.has_min_max:
                    lo, hi = partition_of(np.array([st.min, st.max], dtype=_U64), num_parts)
                    if not lo <= part <= hi:
                        continue
                t = pf.read_row_group(g)
                h = t.column("hash").to_numpy()
                sel = partition_of(h, num_parts) == part
                hs.append(h[sel])
                its.append(t.column("item").to_numpy()[sel])
                bs.append(np.full(int(sel.sum()), b, dtype=np.int32))
    if not hs:
        return np.empty(0, _U64), np.empty(0, np.int32), np.empty(0, np.int32)
    h, b, it = np.concatenate(hs), np.concatenate(bs), np.concatenate(its)
    order = np.argsort(h, kind="stable")  # merge the files' sorted runs
    return h[order], b[order], it[order]


class BitTable:
    """A one-hash Bloom filter over 64-bit hashes: 16 bits per key (2 bytes), ~6% false positives;
    a lookup is one gather. Keys are mixed hashes, so their low bits index it directly (not the top
    bits: those pick the hash partition, so within one they are nearly constant)."""

    def __init__(self, keys: np.ndarray) -> None:
        self.log2 = max(16, int(np.ceil(np.log2(max(len(keys), 1) * 16))))
        self.table = np.zeros(1 << (self.log2 - 3), dtype=np.uint8)
        self.mask = _U64((1 << self.log2) - 1)
        slot = keys & self.mask
        np.bitwise_or.at(self.table, (slot >> _U64(3)).astype(np.int64), (1 << (slot & _U64(7))).astype(np.uint8))

    def contains(self, keys: np.ndarray) -> np.ndarray:
        slot = keys & self.mask
        return ((self.table[(slot >> _U64(3)).astype(np.int64)] >> (slot & _U64(7)).astype(np.uint8)) & 1).astype(bool)


def _ranges(lo: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(lo[i], lo[i] + counts[i])`` for all i, vectorized."""
    total = int(counts.sum())
    if not total:
        return np.empty(0, np.int64)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return starts + np.arange(total, dtype=np.int64)


def match_task(shard_uri: str, part: int, num_parts: int, ngram_uris: list[str], ngram: int, output_uri: str,
               batch_size: int = 1000, docs_uri: str | None = None) -> dict[str, Any]:
    """One shard against one hash partition of the benchmark n-grams: each (document row, n-gram)
    the document holds (distinct), and per n-gram how many of the shard's documents hold it
    (``docs_uri``)."""
    started = time.time()
    bh, _, _ = load_partition(ngram_uris, part, num_parts)
    bits = BitTable(bh)
    rows, hashes = [], []
    base = docs = doc_ngrams = 0
    with fs.open_parquet_input(shard_uri) as f:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=batch_size, columns=["text"]):
            texts = batch.column("text").to_pylist()
            n = len(texts)
            if len(bh):
                h, d = ngram_hashes(texts, ngram)
                doc_ngrams += len(h)
                if num_parts > 1:
                    sel = partition_of(h, num_parts) == part
                    h, d = h[sel], d[sel]
                # most n-grams are in no benchmark: the bit table drops ~94% of them with one gather
                # before the binary search (random reads over the whole partition) sees the rest
                sel = bits.contains(h)
                h, d = h[sel], d[sel]
                lo = np.searchsorted(bh, h, "left")
                sel = bh[np.minimum(lo, len(bh) - 1)] == h
                h, d = h[sel], d[sel]
                order = np.lexsort((h, d))  # distinct n-grams per document
                h, d = h[order], d[order]
                first = np.ones(len(h), dtype=bool)
                first[1:] = (h[1:] != h[:-1]) | (d[1:] != d[:-1])
                rows.append(d[first] + base)
                hashes.append(h[first])
            base += n
            docs += n
    cat = (lambda xs, t: np.concatenate(xs).astype(t) if xs else np.empty(0, t))
    out = pa.table({"row": cat(rows, np.uint32), "hash": cat(hashes, _U64)}, schema=MATCH_SCHEMA)
    parquet.write_table(out, output_uri)
    if docs_uri is not None:
        held, count = np.unique(out.column("hash").to_numpy(), return_counts=True)  # rows are distinct per hash
        parquet.write_table(pa.table({"hash": held, "docs": count.astype(np.int64)}, schema=NGRAM_DOCS_SCHEMA), docs_uri)
    return {"docs": docs, "doc_ngrams": doc_ngrams, "benchmark_ngrams": int(len(bh)), "pairs": out.num_rows,
            "peak_rss": _peak_rss(), "seconds": time.time() - started}


def ngram_docs_task(docs_uris: list[str], max_docs: int, output_uri: str) -> dict[str, Any]:
    """One hash partition: the benchmark n-grams held by more than ``max_docs`` documents of the
    corpus (summed over the shards' counts, one file at a time: memory is the partition's
    distinct n-grams held)."""
    total = NGRAM_DOCS_SCHEMA.empty_table()
    for uri in docs_uris:
        total = pa.concat_tables([total, parquet.read_table(uri).cast(NGRAM_DOCS_SCHEMA)])
        total = total.group_by("hash").aggregate([("docs", "sum")]).rename_columns(["hash", "docs"])
    common = total.filter(pc.greater(total.column("docs"), max_docs))
    common = common.take(pc.sort_indices(common, [("hash", "ascending")]))
    parquet.write_table(common.cast(NGRAM_DOCS_SCHEMA), output_uri)
    return {"ngrams_held": total.num_rows, "common_ngrams": common.num_rows}


def contamination_task(shard_uri: str, match_uris: list[str], items_uris: list[str], names: list[str],
                       min_matches: int, output_uri: str, ngram_uris: list[str] | None = None,
                       common_uris: list[str | None] | None = None) -> dict[str, Any]:
    """Per partition: the shard's (row, n-gram) pairs without the common n-grams, each n-gram's
    items (from that partition of the benchmark n-grams); summed per (document, item), each
    document's best item (most shared n-grams; ties: first benchmark, first item) decides it when
    it shares at least ``min_matches``."""
    num_parts = len(match_uris)
    parts: list[pa.Table] = []
    ignored = 0
    for part, uri in enumerate(match_uris):
        pairs = parquet.read_table(uri)
        if not pairs.num_rows:
            continue
        row = pairs.column("row").to_numpy().astype(np.int64)
        h = pairs.column("hash").to_numpy().astype(_U64, copy=False)
        common = (common_uris or [None] * num_parts)[part]
        if common is not None:
            frequent = parquet.read_table(common).column("hash").to_numpy()
            keep = ~np.isin(h, frequent)
            ignored += int((~keep).sum())
            row, h = row[keep], h[keep]
        if not len(h):
            continue
        bh, bb, bi = load_partition(ngram_uris or [], part, num_parts)
        lo = np.searchsorted(bh, h, "left")
        cnt = np.searchsorted(bh, h, "right") - lo
        idx = _ranges(lo, cnt)
        parts.append(pa.table({"row": np.repeat(row, cnt), "bench": bb[idx].astype(np.int64),
                               "item": bi[idx].astype(np.int64), "ngrams": np.ones(len(idx), np.int64)}))
    m = pa.concat_tables(parts) if parts else pa.table({"row": pa.array([], pa.int64()), "bench": pa.array([], pa.int64()),
                                                         "item": pa.array([], pa.int64()),
                                                         "ngrams": pa.array([], pa.int64())})
    grouped = m.group_by(["row", "bench", "item"]).aggregate([("ngrams", "sum")])
    row = grouped.column("row").to_numpy().astype(np.int64)
    bench = grouped.column("bench").to_numpy().astype(np.int64)
    item = grouped.column("item").to_numpy().astype(np.int64)
    ngrams = grouped.column("ngrams_sum").to_numpy().astype(np.int64)
    order = np.lexsort((item, bench, -ngrams, row))  # per row: most n-grams first
    row, bench, item, ngrams = row[order], bench[order], item[order], ngrams[order]
    best = np.ones(len(row), dtype=bool)
    best[1:] = row[1:] != row[:-1]
    best &= ngrams >= min_matches
    row, bench, item, ngrams = row[best], bench[best], item[best], ngrams[best]
    ids = parquet.read_table(shard_uri, columns=["id"]).column("id").cast(pa.string())
    item_ids = [parquet.read_table(u).column("item_id").to_pylist() for u in items_uris]
    out = pa.table({
        "id": ids.take(pa.array(row, pa.int64())) if len(row) else pa.array([], pa.string()),
        "benchmark": pa.array([names[b] for b in bench], pa.string()),
        "item": pa.array([item_ids[b][i] for b, i in zip(bench, item)], pa.string()),
        "ngrams": pa.array(ngrams.astype(np.int32), pa.int32()),
    }, schema=CONTAMINATED_SCHEMA)
    parquet.write_table(out, output_uri)
    per_bench = pc.value_counts(out.column("benchmark")).to_pylist() if out.num_rows else []
    return {"docs": len(ids), "contaminated": out.num_rows, "common_pairs_ignored": ignored,
            "per_benchmark": {d["values"]: d["counts"] for d in per_bench}}


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- the driver's part ----------------------------------------------------------------------------
def method_params(config: DedupConfig) -> dict[str, Any]:
    """What the pass fingerprint covers: the section, the partitioning, and the benchmark files'
    identity (path, size, mtime), so a changed benchmark re-runs the pass."""
    return config.decontaminate.model_dump() | {"memory_budget": config.memory_budget, "partitions": config.partitions,
                                                "benchmark_files": benchmark_identity(config.decontaminate.benchmarks)}


def batch_bytes(shards: list[Any], batch_size: int) -> int:
    """Memory of one batch of documents in a matches task: ``batch_size`` rows at the largest
    average text size of any shard (from the Parquet footers, no data read)."""
    per_row = 0.0
    for s in shards:
        with fs.open_parquet_input(s.uri) as f:
            meta = pq.ParquetFile(f).metadata
        if meta.num_rows and "text" in meta.schema.names:
            col = meta.schema.names.index("text")
            size = sum(meta.row_group(g).column(col).total_uncompressed_size for g in range(meta.num_row_groups))
            per_row = max(per_row, size / meta.num_rows)
    return int(per_row * batch_size * DOC_BYTES_PER_CHAR)


def benchmark_partitions(ngrams: int, budget: int, batch: int = 0, baseline: int = 0) -> int:
    """Hash partitions so that one partition of ``ngrams`` benchmark n-grams plus one batch of
    documents (``batch`` bytes) fit a task's ``budget`` above the worker baseline."""
    from refinery.dedup.driver import TASK_BASELINE_BYTES

    usable = max(budget - max(baseline, TASK_BASELINE_BYTES) - batch, 16 * 2**20)
    return max(1, -(-ngrams * BENCH_BYTES_PER_NGRAM // usable))


def decontaminate_passes(work: Any, shards: list[Any], config: DedupConfig, executor: Any,
                         passes: dict[str, Any]) -> dict[str, Any]:
    """The index passes (see the module docstring); returns the stats the driver reports."""
    from refinery.dedup.driver import _run_pass, _write_manifest

    dc = config.decontaminate
    # fail before any task: a missing field or a bad line is one line naming the file. Every record
    # is read when the benchmark pass is to run (benchmarks are items, not a corpus): a bad line
    # after the first failed the pass's task, a traceback-like two lines (found by adversarial testing)
    to_run = work.done("benchmark_ngrams") is None
    for spec in dc.benchmarks:
        read_benchmark(spec, check_only=not to_run, keep=False)
    names = [b.name for b in dc.benchmarks]
    ngram_uris = [work.path("ngrams", f"{b:04d}.parquet") for b in range(len(names))]
    items_uris = [work.path("items", f"{b:04d}.parquet") for b in range(len(names))]
    from refinery.dedup.driver import TASK_BASELINE_BYTES

    max_chars = max(config.memory_budget - TASK_BASELINE_BYTES, 16 * 2**20) // DOC_BYTES_PER_CHAR
    tasks = [{"spec": spec.model_dump(), "ngram": dc.ngram, "ngram_uri": ngram_uris[b], "items_uri": items_uris[b],
              "batch_size": config.batch_size, "max_chars": max_chars} for b, spec in enumerate(dc.benchmarks)]
    bench = _run_pass(work, "benchmark_ngrams", benchmark_task, tasks, executor, names, units="items",
                      extra=lambda rs: {"per_benchmark": {n: {k: r[k] for k in ("items", "items_without_ngrams", "ngrams")}
                                                          for n, r in zip(names, rs)}})
    passes["benchmark_ngrams"] = bench
    total = int(bench.get("ngrams", 0))
    batch = batch_bytes(shards, config.batch_size)
    from refinery.dedup.driver import worker_baseline_bytes

    # a step begun and stopped keeps the partitions its finished tasks were written with
    P = config.partitions or (work.done("matches") or {}).get("partitions") \
        or work.planned("matches", lambda: {"partitions": benchmark_partitions(
            total, config.memory_budget, batch, worker_baseline_bytes(executor, config.method))})["partitions"]
    log.info("[dedup decontaminate] %d benchmark n-grams (%d-grams) in %d hash partition(s) (budget %.0f MiB, "
             "%.0f MiB per batch of documents)", total, dc.ngram, P, config.memory_budget / 2**20, batch / 2**20)

    match_uri = {(s.name, p): work.path("matches", s.name, f"part-{p:05d}.parquet") for s in shards for p in range(P)}
    docs_uri = {(s.name, p): work.path("matches", s.name, f"docs-{p:05d}.parquet") for s in shards for p in range(P)}
    cap = dc.max_ngram_docs
    tasks = [{"shard_uri": s.uri, "part": p, "num_parts": P, "ngram_uris": ngram_uris, "ngram": dc.ngram,
              "output_uri": match_uri[s.name, p], "batch_size": config.batch_size,
              "docs_uri": docs_uri[s.name, p] if cap is not None else None} for s in shards for p in range(P)]
    passes["matches"] = _run_pass(work, "matches", match_task, tasks, executor,
                                  [f"{s.name}/part-{p}" for s in shards for p in range(P)],
                                  extra=lambda rs: {"partitions": P})
    common_uri: list[str | None] = [None] * P
    if cap is not None:
        common_uri = [work.path("common", f"part-{p:05d}.parquet") for p in range(P)]
        tasks = [{"docs_uris": [docs_uri[s.name, p] for s in shards], "max_docs": cap, "output_uri": common_uri[p]}
                 for p in range(P)]
        passes["ngram_docs"] = _run_pass(work, "ngram_docs", ngram_docs_task, tasks, executor,
                                         [f"part-{p}" for p in range(P)], units="ngrams_held")

    out_uri = {s.name: work.path("contaminated", f"{s.name}.parquet") for s in shards}
    tasks = [{"shard_uri": s.uri, "match_uris": [match_uri[s.name, p] for p in range(P)], "items_uris": items_uris,
              "names": names, "min_matches": dc.min_matches, "output_uri": out_uri[s.name], "ngram_uris": ngram_uris,
              "common_uris": common_uri} for s in shards]

    def per_benchmark(rs: list[dict[str, Any]]) -> dict[str, Any]:
        merged: dict[str, int] = {}
        for r in rs:
            for k, v in r.get("per_benchmark", {}).items():
                merged[k] = merged.get(k, 0) + v
        return {"per_benchmark": merged}

    passes["contamination"] = _run_pass(work, "contamination", contamination_task, tasks, executor,
                                        [s.name for s in shards], extra=per_benchmark)
    _write_manifest(work, "decontaminate", method_params(config), shards, [{} for _ in shards],
                    partitions=P, mode=dc.mode, benchmarks=names)
    found = int(passes["contamination"].get("contaminated", 0))
    stats: dict[str, Any] = {"benchmark_ngrams": total, "partitions": P, "batch_bytes": batch, "docs_contaminated": found,
                             "contaminated_per_benchmark": passes["contamination"].get("per_benchmark", {}),
                             "mode": dc.mode, "max_ngram_docs": cap,
                             "common_ngrams_ignored": int((passes.get("ngram_docs") or {}).get("common_ngrams", 0))}
    if dc.mode == "remove":
        stats["docs_to_remove"] = found
    return stats


__all__ = ["BenchmarkError", "benchmark_identity", "read_benchmark", "ngram_hashes", "decontaminate_passes",
           "method_params", "CONTAMINATED_SCHEMA"]
