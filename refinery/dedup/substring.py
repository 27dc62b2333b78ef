"""Exact substring dedup (RefinedWeb's EXACTSUBSTR-CUT): cut every span of at least
``min_tokens`` consecutive tokens that also occurs earlier, then drop documents left too short.

Per partition (a group of consecutive shards that fits the memory budget), the tokens of all its
documents are concatenated and sorted by their next ``min_tokens`` tokens: a suffix array truncated
at depth ``min_tokens``, built by prefix doubling (Manber & Myers) with numpy -- each step ranks
every position by the pair (rank of its first ``k`` tokens, rank of the ``k`` tokens after), so
``1, 2, 4, ..., 32, 50`` takes 7 sorts. Ranks are exact integers, so equal ranks mean equal token
windows (up to 64-bit collisions of the token hashes themselves). Deeper order is never needed:
a token belongs to a duplicated span of length >= L exactly when some L-token window covering it
occurs twice. Windows never cross documents.

Tokens are the whitespace-separated words of the original text (so spans can be cut out of it);
``min_tokens=50`` words is ~65 GPT-2 tokens. By default the first occurrence (in doc-key order) is
kept and later copies are cut; ``keep_first=False`` cuts every copy, like deduplicate-text-datasets.

Memory per task: about ``SUBSTRING_BYTES_PER_TOKEN`` (token hashes, ranks, sort buffers) plus the
texts as UTF-32 codepoints while tokenizing (4 bytes per character). Duplicates across partitions
are not found: partitions are sized by ``memory_budget``, as RefinedWeb ran it on parts of its data.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refinery.dedup.passes import MAX_SOURCES, as_text, check_unique_ids, read_shard
from refinery.dedup.text import raw_tokenize
from refinery.executors.base import TASK_SUMMARY
from refinery.executors.progress import StepLines
from refinery.io import parquet

log = logging.getLogger("refinery.dedup")

#: peak bytes per token of a partition task: ~58 in :func:`duplicated_tokens` (measured in
#: benchmarks/dedup.py) + 24 for the token hashes and character offsets held alongside
SUBSTRING_BYTES_PER_TOKEN = 88
#: bytes per character of text held while a partition is tokenized (str + UTF-32 + Arrow)
SUBSTRING_BYTES_PER_CHAR = 10


def _dense_rank(values: np.ndarray) -> np.ndarray:
    """Ranks 0..k-1 of values (equal values, equal rank) as int64."""
    return np.unique(values, return_inverse=True)[1].astype(np.int64, copy=False)


#: a long task's progress callback: (stage, done, total, units)
OnStep = Callable[[str, float, float, str], None]


def _no_progress(stage: str, done: float, total: float, units: str) -> None:
    pass


def sort_steps(length: int) -> int:
    """The sorts :func:`window_ranks` makes for windows of ``length`` (the first rank included)."""
    return 1 + max(int(np.ceil(np.log2(length))), 0) if length > 1 else 1


def window_ranks(token_hash: np.ndarray, length: int, on_step: OnStep = _no_progress) -> np.ndarray:
    """``rank[i]`` identifies the token window ``i .. i+length-1`` (windows running past the end
    compare as shorter): equal ranks <=> equal windows. Prefix doubling, ``ceil(log2(length))`` sorts."""
    steps, step_no = sort_steps(length), 1
    on_step("sorting token windows", 0, steps, "sorts")
    rank = _dense_rank(token_hash)
    n = len(rank)
    depth = 1
    while depth < length and n:
        on_step("sorting token windows", step_no, steps, "sorts")
        step_no += 1
        step = min(depth, length - depth)
        nxt = np.zeros(n, dtype=np.int64)
        nxt[: n - step] = rank[step:] + 1  # 0 = past the end
        rank *= int(rank.max()) + 2
        rank += nxt
        del nxt
        rank = _dense_rank(rank)
        depth += step
    return rank


def duplicated_tokens(token_hash: np.ndarray, doc_offsets: np.ndarray, min_tokens: int, keep_first: bool = True,
                      min_words: int = 0, on_step: OnStep = _no_progress) -> tuple[np.ndarray, dict[str, int]]:
    """Boolean mask of tokens inside a duplicated span of at least ``min_tokens`` tokens.

    With ``keep_first``, each duplicated window is kept in its first holder -- unless cutting
    leaves that holder with fewer than ``min_words`` tokens, so that the stage will drop it: then
    the first holder that stays keeps the window, else the span would survive nowhere. One round
    is enough: moving a keeper only removes cuts from documents that stay."""
    n_tokens = len(token_hash)
    covered = np.zeros(n_tokens, dtype=bool)
    stats = {"tokens": int(n_tokens), "duplicate_windows": 0}
    if n_tokens < min_tokens:
        return covered, stats
    rank = window_ranks(token_hash, min_tokens, on_step)
    on_step("sorting token windows", sort_steps(min_tokens), sort_steps(min_tokens), "sorts")
    counts = np.diff(doc_offsets)
    token_doc = np.repeat(np.arange(len(counts)), counts)
    valid = np.arange(n_tokens) + min_tokens <= doc_offsets[1:][token_doc]  # window inside its document
    del token_doc
    pos = np.flatnonzero(valid)
    del valid
    r = rank[pos]
    del rank
    order = np.argsort(r, kind="stable")  # by window, then position: the depth-limited suffix array
    r, pos = r[order], pos[order]
    del order
    first = np.empty(len(r), dtype=bool)
    if len(r):
        first[0] = True
        np.not_equal(r[1:], r[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, len(r)))
    shared = np.repeat(sizes > 1, sizes)
    dup = shared & ~first if keep_first else shared
    covered = _cover(pos[dup], n_tokens, min_tokens)
    if keep_first and min_words > 0 and len(starts):
        doc_of = np.searchsorted(doc_offsets, np.arange(n_tokens), side="right") - 1
        cut = np.bincount(doc_of[covered], minlength=len(counts))
        dropped = (cut > 0) & (counts - cut < min_words)
        if dropped.any():
            index = np.where(dropped[doc_of[pos]], len(pos), np.arange(len(pos)))
            keeper_at = np.minimum.reduceat(index, starts)
            keeper_at = np.where(keeper_at == len(pos), starts, keeper_at)  # every holder dropped: the first
            keeper = np.zeros(len(pos), dtype=bool)
            keeper[keeper_at] = True
            dup = shared & ~keeper
            covered = _cover(pos[dup], n_tokens, min_tokens)
            stats["keepers_moved"] = int((keeper_at != starts).sum())
    stats["duplicate_windows"] = int(dup.sum())
    return covered, stats


def _cover(dup_pos: np.ndarray, n_tokens: int, min_tokens: int) -> np.ndarray:
    """Tokens covered by a window starting at one of ``dup_pos``."""
    delta = np.zeros(n_tokens + 1, dtype=np.int32)
    np.add.at(delta, dup_pos, 1)
    np.add.at(delta, dup_pos + min_tokens, -1)
    return np.cumsum(delta[:-1]) > 0


def substring_task(shards: list[dict[str, Any]], min_tokens: int, keep_first: bool, batch_size: int = 1000,
                   seed: int = 0, min_words: int = 0) -> dict[str, Any]:
    """One partition: ``shards`` is a list of ``{"name", "input_uri", "output_uri"}`` in doc-key
    order. Writes, per shard, ``id, starts, ends, cut_tokens`` for every document with cuts
    (``starts``/``ends``: codepoint offsets of the spans to cut)."""
    started = time.time()
    # a partition runs for minutes (~70 s for 12M tokens, the 1 GiB budget's): say where it is
    step = StepLines(f"[dedup substring] partition {_span(shards)}:", log)
    hashes: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    tok_starts: list[np.ndarray] = []
    tok_ends: list[np.ndarray] = []
    ids: list[pa.Array] = []
    sources: dict[str, list[str] | None] = {}
    doc_base = 0
    for shard_no, shard in enumerate(shards):
        present, data = read_shard(shard["input_uri"])
        table = as_text(parquet.parse_table(shard["input_uri"], data,
                                            columns=["id", "text"] + (["source"] if "source" in present else [])))
        del data
        ids.append(table.column("id").cast(pa.string()))
        check_unique_ids(ids[-1], shard["input_uri"])
        if "source" in table.column_names:
            distinct = pc.unique(table.column("source").drop_null())
            sources[shard["name"]] = sorted(distinct.to_pylist()) if len(distinct) <= MAX_SOURCES else None
        docs_expected = (doc_base + table.num_rows) * len(shards) / (shard_no + 1)  # exact at the last shard
        for lo in range(0, table.num_rows, batch_size):
            step("tokenizing", doc_base + lo, docs_expected, "docs")
            raw = raw_tokenize(table.column("text").slice(lo, batch_size).to_pylist(), seed=seed)
            hashes.append(raw.token_hash)
            tok_starts.append(raw.starts)
            tok_ends.append(raw.ends)
            offsets.append(raw.doc_offsets[1:] + (offsets[-1][-1] if offsets else 0))
        del table
        doc_base += len(ids[-1])
    token_hash = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
    doc_offsets = np.concatenate([[0]] + offsets).astype(np.int64) if offsets else np.zeros(1, np.int64)
    del hashes
    starts = np.concatenate(tok_starts) if tok_starts else np.empty(0, np.int64)
    ends = np.concatenate(tok_ends) if tok_ends else np.empty(0, np.int64)
    covered, stats = duplicated_tokens(token_hash, doc_offsets, min_tokens, keep_first, min_words, on_step=step)
    del token_hash
    # runs of covered tokens inside one document -> character spans
    counts = np.diff(doc_offsets)
    token_doc = np.repeat(np.arange(len(counts)), counts)
    cov = np.flatnonzero(covered)
    run_start = np.ones(len(cov), dtype=bool)
    if len(cov):
        run_start[1:] = (np.diff(cov) != 1) | (token_doc[cov[1:]] != token_doc[cov[:-1]])
    first_tok = cov[run_start]
    last_tok = cov[np.append(np.flatnonzero(run_start)[1:] - 1, len(cov) - 1)] if len(cov) else cov
    span_doc = token_doc[first_tok]
    span_start, span_end = starts[first_tok], ends[last_tok]
    cut_tokens = np.bincount(token_doc[cov], minlength=len(counts)) if len(counts) else np.zeros(0, np.int64)
    doc_first = np.cumsum([0] + [len(i) for i in ids])
    docs_cut = 0
    for s_i, shard in enumerate(shards):
        lo, hi = doc_first[s_i], doc_first[s_i + 1]
        sel = (span_doc >= lo) & (span_doc < hi)
        d = span_doc[sel] - lo
        docs = np.unique(d)
        bounds = np.searchsorted(d, docs, side="left").tolist() + [len(d)]
        s_start, s_end = span_start[sel], span_end[sel]
        out = pa.table({
            "id": ids[s_i].take(pa.array(docs, pa.int64())) if len(docs) else pa.array([], pa.string()),
            "starts": pa.array([s_start[bounds[j]:bounds[j + 1]].astype(np.int32) for j in range(len(docs))], pa.list_(pa.int32())),
            "ends": pa.array([s_end[bounds[j]:bounds[j + 1]].astype(np.int32) for j in range(len(docs))], pa.list_(pa.int32())),
            "cut_tokens": pa.array(cut_tokens[lo:hi][docs].astype(np.int32) if len(docs) else np.zeros(0, np.int32)),
        })
        parquet.write_table(out, shard["output_uri"])
        docs_cut += len(docs)
    elapsed = time.time() - started
    log.info("[dedup substring] partition of %d shard(s): %d tokens, %d cut in %d docs, %.1fs",
             len(shards), stats["tokens"], int(covered.sum()), docs_cut, elapsed, extra=TASK_SUMMARY)
    return {"docs": int(doc_base), "tokens": stats["tokens"], "duplicate_windows": stats["duplicate_windows"],
            "cut_tokens": int(covered.sum()), "docs_cut": docs_cut, "shard_sources": sources}


def _span(shards: list[dict[str, Any]]) -> str:
    """``first..last`` of a partition's shards, as the executor names its task."""
    return f"{shards[0]['name']}..{shards[-1]['name']}" if shards else "(empty)"
