"""Corpus-level repeated-line removal (``method: lines``): the CCNet / Dolma paragraph-dedup idea,
restricted to lines that recur across *sites*. Navigation ("Jump to navigation Jump to search"),
Q&A chrome ("By clicking "Post Your Answer", you agree ..."), share widgets and library-catalogue
labels repeat verbatim over thousands of pages of many domains; hand-written patterns
(``line_corrections``) cannot list them all, counting finds them.

A *candidate* line is short (``min_words`` .. ``max_words`` words, at least ``min_chars``
normalized characters, at least one letter): long lines are prose, and prose quoted on several
sites must survive. Lines are compared normalized (NFKC, casefolded, whitespace collapsed, digits
folded to ``0``). A candidate is *boilerplate* when it occurs in at least ``min_docs`` documents
of at least ``min_domains`` (>= 2) registered domains of the ``url`` column; documents without a
URL count as documents but add no domain, so a line is never cut on the word of one site by
this rule. ``min_site_docs`` (off by default) adds a second one for a site's own template: a
candidate in at least that many documents of one registered domain is boilerplate too.

Each boilerplate line is kept in the *first* document holding it that the removal keeps (doc key
order: shard, then row; ``keep_first``, the default; see :func:`assign_keepers`) and cut from
every other one, as EXACTSUBSTR keeps a
span's first copy. Without that, content published on several sites -- a wire story, a poem, a
licence paragraph -- had every short line cut from every copy, and the 5% rule then removed all
copies: the text survived nowhere. A cross-site boilerplate line now survives in one document of
the corpus. ``keep_first: false`` cuts every copy (CCNet's behaviour).

Passes (same flow and resumability as the other dedup methods, see :mod:`refinery.dedup.driver`)::

    line_counts (per shard): distinct candidate lines per document -> (line, domain, docs, first
        document) rows, pre-aggregated in the shard, written partitioned by line hash (refinery.dedup.shuffle);
        with keep_first also each document's candidate hashes and their words (doc_lines/)
    boilerplate (per hash partition): (docs, distinct domains, first document) per line -> the
        boilerplate hashes with the id hash of their first holder
    line_holders (per shard, from doc_lines/: the text is not read again) + keepers (driver): each
        line's keeper, the first holder that stays (keepers/lines.parquet: the index the stage reads)
    remove (per shard): the normal shard runner with ``lines_dedup`` (refinery/stages/line_dedup.py)

Memory: a ``line_counts`` task holds one shard's rows (~52 bytes per (document, candidate line));
a ``boilerplate`` task holds one partition (``LINE_BYTES_PER_ROW``). The number of partitions is
fixed before hashing, from the shards' text sizes in their Parquet footers and
``TEXT_BYTES_PER_ROW`` (a conservative ratio measured on real Common Crawl text).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refinery.dedup.datelines import dateline_key
from refinery.dedup.passes import (
    MAX_SOURCES,
    DedupInputError,
    as_text,
    check_unique_ids,
    checked_footer,
    footer_text_bytes,
    read_shard,
    text_bytes_by_uri,
)
from refinery.dedup.shuffle import partition_of, read_partition, write_partitioned
from refinery.executors.base import TASK_SUMMARY, summary_level
from refinery.io import fs, parquet
from refinery.stats.domains import NO_URL, DomainCounter

if TYPE_CHECKING:  # the driver imports this module lazily; at run time these are only annotations
    from refinery.dedup.config import DedupConfig
    from refinery.dedup.driver import Shard, WorkDir
    from refinery.executors import Executor

log = logging.getLogger("refinery.dedup")

_U64 = np.uint64
#: peak bytes per (line, domain, docs, first, first_id) row in a boilerplate task: 36 read + 8
#: lexsort index + 36 sorted copies + masks and group arrays, + ~15 with ``min_site_docs``
#: (measured with tracemalloc on 1M rows: 100 without, 115 with; 104 was 117 before a review)
LINE_BYTES_PER_ROW = 120
#: text bytes per count row, to size partitions before any line is hashed. cc_docs (717 real CC
#: documents) has ~180 bytes of text per (document, candidate line); a third of it, so partitions
#: are over- rather than under-estimated.
TEXT_BYTES_PER_ROW = 64
_TASK_BASELINE_BYTES = 160 * 2**20

_WS = re.compile(r"\s+")
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[^\W\d_]")
_BOILERPLATE_SCHEMA = pa.schema([("line_hash", pa.uint64()), ("docs", pa.uint32()), ("domains", pa.uint32()),
                                 ("keeper", pa.uint64()), ("keeper_shard", pa.uint32()), ("site_docs", pa.uint32())])


@dataclass(frozen=True)
class LineRule:
    """Which lines are candidates and how they are compared; shared by the index and the stage
    (both must hash a line identically)."""

    min_chars: int = 10
    min_words: int = 2
    max_words: int = 30
    fold_digits: bool = True
    #: datelines keep their digits (refinery.dedup.datelines): folded, every date of a month was
    #: one line on many sites, cut from every article but one
    exact_dates: bool = False

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> LineRule:
        # an index written before ``exact_dates`` folded every line's digits
        return cls(int(params["min_chars"]), int(params["min_words"]), int(params["max_words"]),
                   bool(params["fold_digits"]), bool(params.get("exact_dates", False)))

    def normalize(self, line: str) -> str:
        norm = unicodedata.normalize("NFKC", line).casefold()
        if self.fold_digits:
            # a dateline keeps its date's digits only: its counters ("3 comments") stay folded
            dated = dateline_key(norm) if self.exact_dates else None
            norm = dated if dated is not None else _DIGIT.sub("0", norm)
        return _WS.sub(" ", norm).strip()

    def key(self, line: str) -> int | None:
        """The line's 64-bit hash if it is a candidate, else None."""
        found = self.candidate(line)
        return None if found is None else found[0]

    def candidate(self, line: str) -> tuple[int, int] | None:
        """``(64-bit hash, words)`` of a candidate line, else None. The words are
        ``line_corrections.count_words``'s count (the stage's): for a candidate the CJK count below
        stays under its limit, so it is exact."""
        import xxhash

        n_words = len(line.split())
        if n_words > self.max_words:
            return None
        if n_words and not line.isascii():
            # CJK characters count as words, as in every other stage: a Chinese line is one
            # whitespace "word", below min_words, so no CJK line was ever cut (adversarial testing);
            # counted up to the limit only (a long CJK line is prose either way)
            from refinery.stages.line_corrections import count_cjk

            n_words += count_cjk(line, self.max_words)
        if n_words < self.min_words or n_words > self.max_words:
            return None
        norm = self.normalize(line)
        if len(norm) < self.min_chars or not _LETTER.search(norm):
            return None
        return xxhash.xxh3_64_intdigest(norm.encode("utf-8", "surrogatepass")), n_words

    def doc_keys(self, text: str | None) -> set[int]:
        """Distinct candidate hashes of a document (a line repeated inside it counts once)."""
        if not text:
            return set()
        keys = (self.key(line) for line in text.split("\n"))
        return {k for k in keys if k is not None}

    def doc_line_words(self, text: str | None, gopher: bool = False) -> dict[int, list[int]]:
        """Distinct candidate hashes of a document, in the order they first occur, each with the
        words of all its copies there: ``[line_corrections' count, Gopher's count]`` (the second
        0 unless ``gopher``)."""
        from refinery.stages.gopher import word_count

        found: dict[int, list[int]] = {}
        if not text:
            return found
        for line in text.split("\n"):
            hit = self.candidate(line)
            if hit is None:
                continue
            words = found.get(hit[0])
            if words is None:
                found[hit[0]] = [hit[1], word_count(line) if gopher else 0]
            else:
                words[0] += hit[1]
                words[1] += word_count(line) if gopher else 0
        return found


def domain_hash(domain: str) -> int:
    """Hash of a registered domain; 0 means "no URL" (no domain is counted)."""
    import xxhash

    if domain == NO_URL:
        return 0
    return xxhash.xxh3_64_intdigest(domain.encode("utf-8", "surrogatepass")) or 1


def doc_id_hash(doc_id: Any) -> int:
    """The 64-bit hash a boilerplate line's keeper is named by (the document's ``id`` as text)."""
    import xxhash

    return xxhash.xxh3_64_intdigest(("" if doc_id is None else str(doc_id)).encode("utf-8", "surrogatepass"))


#: how the index names a line's keeper (the manifest's ``keeper_key``): by the hash of the
#: document's id and, in ``keeper_shard``, its shard's position in the manifest. By id alone, ids
#: repeated across files (``doc-0`` in every Parquet file of a dataset) made every such document
#: a keeper, and the line stayed in each; by the ``source`` column (constant in Dolma-style data)
#: or a path, it did too, or matched no document once the files moved (found by adversarial
#: testing). A removal stage that cannot tell its shard compares ids alone, as before.
KEEPER_KEY = "shard_id"


def aggregate_pairs(line: np.ndarray, domain: np.ndarray, docs: np.ndarray, first: np.ndarray | None = None,
                    first_id: np.ndarray | None = None, site_docs: bool = False) -> tuple[np.ndarray, ...]:
    """``(line, domain, docs[, first, first_id])`` rows (pairs may repeat) -> per distinct line:
    ``(line, docs, distinct non-zero domains[, keeper, keeper shard][, site docs])``, lines
    ascending; ``keeper`` is the ``first_id`` of the row with the lowest ``first`` (doc key) of the
    line; ``site docs`` (with ``site_docs=True``) the most documents of one non-zero domain."""
    keepers = first is not None and first_id is not None
    if not len(line):
        empty = (np.empty(0, _U64), np.empty(0, np.int64), np.empty(0, np.int64))
        return (empty + ((np.empty(0, _U64), np.empty(0, np.uint32)) if keepers else ())
                + ((np.empty(0, np.int64),) if site_docs else ()))
    order = np.lexsort((domain, line))
    line, domain, docs = line[order], domain[order], docs[order].astype(np.int64)
    if keepers:
        first, first_id = first[order], first_id[order]
    del order
    new_line = np.empty(len(line), dtype=bool)
    new_line[0] = True
    np.not_equal(line[1:], line[:-1], out=new_line[1:])
    new_pair = new_line.copy()
    new_pair[1:] |= domain[1:] != domain[:-1]
    starts = np.flatnonzero(new_line)
    line_docs = np.add.reduceat(docs, starts)
    # a (line, domain) pair seen in several shards counts one domain; domain 0 (no URL) none
    counted = new_pair & (domain != 0)
    line_domains = np.add.reduceat(counted.astype(np.int64), starts)
    del counted
    site = ()
    if site_docs:  # a (line, domain) pair's documents over all its shards' rows, the largest per line
        pair_starts = np.flatnonzero(new_pair)
        del new_pair
        pair_docs = np.add.reduceat(docs, pair_starts)
        pair_docs[domain[pair_starts] == 0] = 0  # documents without a URL are no site
        line_at = np.flatnonzero(new_line[pair_starts])
        del pair_starts
        site = (np.maximum.reduceat(pair_docs, line_at),)
        del pair_docs, line_at
    del new_line, domain, docs
    if not keepers:
        return (line[starts], line_docs, line_domains) + site
    # doc keys are unique, so exactly one row per line holds the line's lowest
    lowest = np.minimum.reduceat(first, starts)
    at = np.flatnonzero(first == np.repeat(lowest, np.diff(np.append(starts, len(line)))))
    return (line[starts], line_docs, line_domains, first_id[at], (first[at] >> np.uint64(32)).astype(np.uint32)) + site


# -- pass 1: per shard -------------------------------------------------------------------------
#: the candidate lines of a shard's documents, as ``line_counts`` finds them, kept for
#: ``line_holders`` (``doc_lines/<shard>.parquet``): one row per document holding any, with its
#: distinct line hashes (in the order they first occur) and the words of their copies, and the
#: document's words in all. The holders step read and hashed the shard's text again for these (the
#: pass read each shard whole three times: counts, holders, removal); ~20 bytes a (document,
#: line) pair here against ~180 of text.
_DOC_LINES_SCHEMA = pa.schema([("row", pa.int64()), ("id_hash", pa.uint64()), ("total_words", pa.int64()),
                               ("total_gopher_words", pa.int64()), ("lines", pa.list_(pa.uint64())),
                               ("words", pa.list_(pa.int32())), ("gopher_words", pa.list_(pa.int32()))])
#: the schema metadata naming what a doc_lines file was made with (a file made otherwise is not used)
_DOC_LINES_META = "refinery.doc_lines"


def doc_lines_table(ids: pa.ChunkedArray, texts: pa.ChunkedArray, rule: dict[str, Any], gopher: bool,
                    batch_size: int = 1000) -> pa.Table:
    """The shard's candidate lines per document (``_DOC_LINES_SCHEMA``); Gopher's word counts
    only with ``gopher`` (for ``min_words_after_cuts``; 0 otherwise)."""
    from refinery.stages.gopher import word_count
    from refinery.stages.line_corrections import count_words

    line_rule = LineRule.from_params(rule)
    rows: list[int] = []
    id_hashes: list[int] = []
    totals: list[int] = []
    gopher_totals: list[int] = []
    line_parts: list[np.ndarray] = []
    word_parts: list[np.ndarray] = []
    for lo in range(0, len(texts), batch_size):
        batch = zip(texts.slice(lo, batch_size).to_pylist(), ids.slice(lo, batch_size).to_pylist())
        for row, (text, doc_id) in enumerate(batch, start=lo):
            found = line_rule.doc_line_words(text, gopher)
            if not found:
                continue
            rows.append(row)
            id_hashes.append(doc_id_hash(doc_id))
            totals.append(count_words(text))
            gopher_totals.append(word_count(text) if gopher else 0)
            line_parts.append(np.fromiter(found, dtype=_U64, count=len(found)))
            word_parts.append(np.array(list(found.values()), dtype=np.int32).reshape(-1, 2))
    lengths = np.fromiter((len(p) for p in line_parts), dtype=np.int32, count=len(line_parts))
    offsets = pa.array(np.concatenate(([0], np.cumsum(lengths, dtype=np.int32))), pa.int32())
    line = np.concatenate(line_parts) if line_parts else np.empty(0, _U64)
    words = np.concatenate(word_parts) if word_parts else np.empty((0, 2), np.int32)
    del line_parts, word_parts

    def listed(values: np.ndarray) -> pa.ListArray:
        return pa.ListArray.from_arrays(offsets, pa.array(values))

    made = {"docs": len(texts), "rule": rule, "gopher": gopher}
    return pa.table([pa.array(rows, pa.int64()), pa.array(id_hashes, pa.uint64()), pa.array(totals, pa.int64()),
                     pa.array(gopher_totals, pa.int64()), listed(line), listed(words[:, 0]), listed(words[:, 1])],
                    schema=_DOC_LINES_SCHEMA.with_metadata({_DOC_LINES_META: json.dumps(made, sort_keys=True)}))


def _made_with(doc_lines: pa.Table) -> dict[str, Any]:
    return json.loads((doc_lines.schema.metadata or {}).get(_DOC_LINES_META.encode(), b"{}"))


def line_count_task(input_uri: str, shard: str, output_uri: str, num_parts: int, rule: dict[str, Any],
                    batch_size: int = 1000, shard_index: int = 0, doc_lines_uri: str | None = None,
                    gopher_words: bool = False) -> dict[str, Any]:
    """Per shard: every (candidate line, registered domain) pair with its number of documents and
    the first of them (``first``: doc key ``shard_index << 32 | row``; ``first_id``: its id's
    hash), partitioned by line hash; with ``doc_lines_uri``, the shard's candidate lines per
    document there too (:func:`doc_lines_table`, for ``line_holders``)."""
    present, data = read_shard(input_uri)
    missing = [c for c in ("id", "text", "url") if c not in present]
    if missing:
        raise DedupInputError(f"shard {input_uri} lacks column(s) {missing} needed by lines dedup "
                              f"(lines are counted per registered domain of `url`)")
    domains = DomainCounter()
    columns = ["id", "text", "url"] + (["source"] if "source" in present else [])
    table = as_text(parquet.parse_table(input_uri, data, columns=columns))
    del data
    check_unique_ids(table.column("id").cast(pa.string()), input_uri)
    n = table.num_rows
    doc_lines = doc_lines_table(table.column("id"), table.column("text"), rule, gopher_words, batch_size)
    if doc_lines_uri is not None:
        parquet.write_table(doc_lines, doc_lines_uri, row_group_size=1 << 20)
    doc_domain = np.empty(n, dtype=_U64)
    for lo in range(0, n, batch_size):
        urls = table.column("url").slice(lo, batch_size).to_pylist()
        doc_domain[lo:lo + len(urls)] = [domain_hash(domains.domain(url)) for url in urls]
    no_domain = int((doc_domain == 0).sum())
    lines_of = doc_lines.column("lines").combine_chunks()
    line = pc.list_flatten(lines_of).to_numpy()
    doc_rows = doc_lines.column("row").to_numpy()
    doc_ids = doc_lines.column("id_hash").to_numpy()
    row = np.repeat(doc_rows, pc.list_value_length(lines_of).to_numpy())
    del doc_lines, lines_of
    domain = doc_domain[row]
    pairs = len(line)
    # pre-aggregate the shard: one row per distinct (line, domain) pair, with its document count
    # and its first document (lexsort is stable: rows stay in order within a pair)
    if pairs:
        order = np.lexsort((domain, line))
        line, domain, row = line[order], domain[order], row[order]
        new_pair = np.ones(pairs, dtype=bool)
        new_pair[1:] = (line[1:] != line[:-1]) | (domain[1:] != domain[:-1])
        starts = np.flatnonzero(new_pair)
        docs = np.diff(np.append(starts, pairs)).astype(np.uint32)
        line, domain, row = line[starts], domain[starts], row[starts]
    else:
        docs = np.empty(0, np.uint32)
    first = (np.uint64(shard_index) << np.uint64(32)) | row.astype(_U64)
    first_id = doc_ids[np.searchsorted(doc_rows, row)] if len(row) else np.empty(0, _U64)
    counts = write_partitioned(output_uri, {"line": line, "domain": domain, "docs": docs, "first": first,
                                            "first_id": first_id}, partition_of(line, num_parts), num_parts)
    sources: list[str] | None = None
    if "source" in table.column_names:
        distinct = pc.unique(table.column("source").drop_null())
        sources = sorted(distinct.to_pylist()) if len(distinct) <= MAX_SOURCES else None
    log.log(summary_level(), "[dedup lines/line_counts] shard %s: %d docs, %d (doc, line) pairs -> %d rows", shard, n, pairs, len(line),
             extra=TASK_SUMMARY)
    return {"docs": n, "docs_without_domain": no_domain, "doc_lines": pairs, "rows": len(line),
            "max_partition_rows": max(counts) if counts else 0, "sources": sources}


# -- pass 2: per hash partition ----------------------------------------------------------------
def boilerplate_task(count_uris: list[str], part: int, output_uri: str, min_docs: int, min_domains: int,
                     min_site_docs: int | None = None) -> dict[str, Any]:
    """Per line-hash partition: documents and distinct domains of each line; writes the hashes of
    the lines over both thresholds, or in ``min_site_docs`` documents of one domain
    (``line_hash, docs, domains, keeper, keeper_shard, site_docs``)."""
    data = read_partition(count_uris, part, ["line", "domain", "docs", "first", "first_id"],
                          {"line": _U64, "domain": _U64, "docs": np.uint32, "first": _U64, "first_id": _U64})
    rows = len(data["line"])
    line, docs, doms, keeper, keeper_shard, *site_ = aggregate_pairs(
        data["line"], data["domain"], data["docs"], data["first"], data["first_id"], site_docs=bool(min_site_docs))
    del data
    site = site_[0] if site_ else np.zeros(len(line), dtype=np.int64)  # 0: not counted, the rule is off
    across = (docs >= min_docs) & (doms >= min_domains)
    one_site = (site >= min_site_docs) & ~across if min_site_docs else np.zeros(len(line), dtype=bool)
    hit = across | one_site
    out = pa.table({"line_hash": pa.array(line[hit]), "docs": pa.array(docs[hit].astype(np.uint32)),
                    "domains": pa.array(doms[hit].astype(np.uint32)), "keeper": pa.array(keeper[hit]),
                    "keeper_shard": pa.array(keeper_shard[hit]), "site_docs": pa.array(site[hit].astype(np.uint32))},
                   schema=_BOILERPLATE_SCHEMA)
    parquet.write_table(out, output_uri, row_group_size=1 << 20)
    return {"rows": rows, "max_partition_rows": rows, "distinct_lines": len(line), "boilerplate_lines": int(hit.sum()),
            "site_boilerplate_lines": int(one_site.sum()), "boilerplate_doc_lines": int(docs[hit].sum())}


def load_boilerplate(uris: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """The sorted boilerplate line hashes of a finished index (what the removal stage looks up)
    and, aligned with them, the id hash of the document that keeps each (None for an index
    written before keepers were recorded)."""
    keys, keepers, _ = load_boilerplate_keepers(uris)
    return keys, keepers


def load_boilerplate_keepers(uris: list[str]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """:func:`load_boilerplate` plus each keeper's shard (its position among the manifest's
    shards; None for an index written before they were recorded)."""
    tables = [parquet.read_table(u) for u in uris]
    keys = np.concatenate([t.column("line_hash").to_numpy() for t in tables]) if tables else np.empty(0, _U64)
    keys = keys.astype(_U64, copy=False)
    order = np.argsort(keys, kind="stable")
    if not all("keeper" in t.column_names for t in tables):
        return keys[order], None, None
    keepers = np.concatenate([t.column("keeper").to_numpy() for t in tables]) if tables else np.empty(0, _U64)
    shards = None
    if all("keeper_shard" in t.column_names for t in tables):
        shards = (np.concatenate([t.column("keeper_shard").to_numpy() for t in tables]) if tables
                  else np.empty(0, np.uint32)).astype(np.uint32, copy=False)[order]
    return keys[order], keepers.astype(_U64, copy=False)[order], shards


# -- pass 3: which holder keeps each line --------------------------------------------------------
_HOLDERS_SCHEMA = pa.schema([("doc", pa.uint64()), ("id_hash", pa.uint64()), ("total_words", pa.int64()),
                             ("line_pos", pa.int64()), ("words", pa.int64())])
#: what the task writes with ``min_words_after_cuts``: the same counts as gopher_quality's
#: ``min_words`` counts them too (the cut text's Gopher words are the total's less its cut lines')
_HOLDERS_WRITTEN = pa.schema(list(_HOLDERS_SCHEMA) + [pa.field("total_gopher_words", pa.int64()),
                                                      pa.field("gopher_words", pa.int64())])


def line_holders_task(doc_lines_uri: str, input_uri: str, shard: str, output_uri: str, boilerplate_uris: list[str],
                      rule: dict[str, Any], gopher_words: bool = False, batch_size: int = 1000,
                      shard_index: int = 0) -> dict[str, Any]:
    """Per shard: every document holding boilerplate lines, one row per line it holds (its
    position in the sorted index, and the words of its copies there), with the document's key,
    id hash and words in all -- the removal stage's counts, so the keeper pass can tell which
    holders the stage will keep. Read from the shard's ``doc_lines`` file (``line_counts`` wrote
    it), not from its text; Gopher's counts (``total_gopher_words``, ``gopher_words``) only with
    ``gopher_words``."""
    keys, _ = load_boilerplate(boilerplate_uris)
    doc_lines = parquet.read_table_if_any(doc_lines_uri)
    made = {} if doc_lines is None else _made_with(doc_lines)
    if (made.get("rule"), made.get("gopher")) != (rule, gopher_words):
        # an index whose line_counts ran before it wrote these (or with other settings): from the
        # text, as that step finds them
        table = as_text(parquet.read_table(input_uri, columns=["id", "text"]))
        doc_lines = doc_lines_table(table.column("id"), table.column("text"), rule, gopher_words, batch_size)
        del table
    lines_of = doc_lines.column("lines").combine_chunks()
    line = pc.list_flatten(lines_of).to_numpy()
    owner = np.repeat(np.arange(doc_lines.num_rows), pc.list_value_length(lines_of).to_numpy())
    if len(keys) and len(line):
        pos = np.searchsorted(keys, line).clip(max=len(keys) - 1)
        hit = np.flatnonzero(keys[pos] == line)
    else:
        pos = hit = np.empty(0, np.int64)
    owner, pos = owner[hit], pos[hit]

    def per_doc(name: str) -> np.ndarray:
        return doc_lines.column(name).to_numpy()[owner]

    def per_line(name: str) -> np.ndarray:
        return pc.list_flatten(doc_lines.column(name).combine_chunks()).to_numpy()[hit].astype(np.int64)

    doc = (np.uint64(shard_index) << np.uint64(32)) | per_doc("row").astype(_U64)
    held = {"doc": doc, "id_hash": per_doc("id_hash"), "total_words": per_doc("total_words"), "line_pos": pos,
            "words": per_line("words")}
    schema = _HOLDERS_SCHEMA
    if gopher_words:
        held |= {"total_gopher_words": per_doc("total_gopher_words"), "gopher_words": per_line("gopher_words")}
        schema = _HOLDERS_WRITTEN
    parquet.write_table(pa.table({f.name: pa.array(held[f.name], f.type) for f in schema}, schema=schema), output_uri)
    return {"docs": _made_with(doc_lines)["docs"], "holders": len(np.unique(owner)), "rows": len(owner)}


def too_many_cut(cut: int, total: int, max_removed_word_frac: float, min_words_left: int | None = None) -> bool:
    """The removal rule of the lines pass (the stage and the keeper walk must agree): a document
    losing every word, or more than ``max_removed_word_frac`` of them while fewer than
    ``min_words_left`` remain (any number, when it is None), is removed."""
    if not cut:
        return False
    if cut >= total:
        return True
    return cut / total > max_removed_word_frac and (min_words_left is None or total - cut < min_words_left)


def too_short_after(lines_cut: int, words_left: int, min_words_after_cuts: int | None) -> bool:
    """The pass's other removal (the stage and the keeper walk must agree): a document it edits
    (``lines_cut`` > 0) is removed when fewer than ``min_words_after_cuts`` words (Gopher's count)
    are left: it passed the recipe's gopher_quality ``min_words`` only with the lines cut."""
    return min_words_after_cuts is not None and lines_cut > 0 and words_left < min_words_after_cuts


def assign_keepers(holder_uris: list[str], n_lines: int, max_removed_word_frac: float,
                   min_words_left: int | None = None, min_words_after_cuts: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Each boilerplate line's keeper: the first holder (doc key order) that the removal stage
    will keep. Documents are taken in order; one stays when the lines kept by earlier staying
    documents hold at most ``max_removed_word_frac`` of its words (and not all of them), and it
    then keeps every line it holds that no earlier one kept. The first holder alone (the
    index's first pass) is not enough: a page that keeps one story's lines but loses another's
    to an earlier site is removed by the 5% rule, and the story it was to keep survived nowhere
    (found by adversarial testing). ``holder_uris``: the shards' ``line_holders_task`` files in
    shard order (the order of their ``shard_index``). Returns ``(keeper id hash per line, its
    shard's position, whether it has one, counts)``; a line whose every holder is removed has
    none (no copy of it stays anyway)."""
    kept = np.zeros(n_lines, dtype=bool)
    keeper = np.zeros(n_lines, dtype=_U64)
    keeper_shard = np.zeros(n_lines, dtype=np.uint32)
    holders = removed = 0
    # one shard's file at a time, in shard order: the documents' order, so memory is the per-line
    # arrays plus one shard's holders (all pairs at once, ~100 B each, outgrew the driver)
    for uri in holder_uris:
        data = parquet.read_table(uri)
        doc = data.column("doc").to_numpy().astype(_U64, copy=False)
        line_pos = data.column("line_pos").to_numpy()
        if len(doc) > 1 and (doc[1:] < doc[:-1]).any():  # written in row order; sorted if not
            order = np.argsort(doc, kind="stable")
            doc, line_pos = doc[order], line_pos[order]
            data = data.take(pa.array(order))
        id_hash = data.column("id_hash").to_numpy()
        total = data.column("total_words").to_numpy()
        words = data.column("words").to_numpy()
        # Gopher's counts only when the floor is on (two more arrays); holders written before them
        # (a resumed index) have the pass's own counts stand in
        gopher = min_words_after_cuts is not None and "gopher_words" in data.column_names
        g_total = data.column("total_gopher_words").to_numpy() if gopher else total
        g_words = data.column("gopher_words").to_numpy() if gopher else words
        del data
        starts = np.flatnonzero(np.concatenate(([True], doc[1:] != doc[:-1]))) if len(doc) else np.empty(0, np.int64)
        ends = np.append(starts[1:], len(doc))
        holders += len(starts)
        for s, e in zip(starts.tolist(), ends.tolist()):
            pos = line_pos[s:e]
            held = kept[pos]
            cut = int(words[s:e][held].sum())
            t = int(total[s])
            left = int(g_total[s]) - int(g_words[s:e][held].sum())
            if too_many_cut(cut, t, max_removed_word_frac, min_words_left) or \
                    too_short_after(int(held.sum()), left, min_words_after_cuts):
                removed += 1
                continue
            new = pos[~held]
            kept[new] = True
            keeper[new] = id_hash[s]
            keeper_shard[new] = int(doc[s]) >> 32
    return keeper, keeper_shard, kept, {"holders": holders, "holders_removed": removed, "lines_kept": int(kept.sum()),
                          "lines_lost": int(n_lines - kept.sum())}


def doc_lines_uri(work: WorkDir, shard: Shard) -> str:
    """Where ``line_counts`` leaves a shard's candidate lines for ``line_holders``."""
    return work.path("doc_lines", f"{shard.name}.parquet")


def keeper_pass(work: WorkDir, shards: list[Shard], config: DedupConfig, executor: Executor, rule: dict[str, Any],
                boiler_uris: list[str], passes: dict[str, Any]) -> list[str]:
    """Run :func:`line_holders_task` over the shards and :func:`assign_keepers` over its output;
    writes the index with those keepers (``keepers/lines.parquet``, the boilerplate schema) and
    returns its paths relative to the dedup directory; the figures go into ``passes``
    (``line_holders``, ``keepers``: the driver's walk)."""
    from refinery.dedup.driver import _run_pass

    relative = ["keepers/lines.parquet"]
    done = work.done("keepers")
    if done is not None:
        holders = work.done("line_holders")
        if holders is not None:  # the step before's record too, as a run that did both has it (chaos probe)
            passes["line_holders"] = holders
        passes["keepers"] = done
        return relative
    holder_uri = {s.name: work.path("line_holders", f"{s.name}.parquet") for s in shards}
    tasks = [{"doc_lines_uri": doc_lines_uri(work, s), "input_uri": s.uri, "shard": s.name,
              "output_uri": holder_uri[s.name], "boilerplate_uris": boiler_uris, "rule": rule,
              "gopher_words": config.lines.min_words_after_cuts is not None, "batch_size": config.batch_size,
              "shard_index": i} for i, s in enumerate(shards)]
    passes["line_holders"] = _run_pass(work, "line_holders", line_holders_task, tasks, executor, [s.name for s in shards])
    started = time.time()
    tables = [parquet.read_table(u) for u in boiler_uris]
    index = pa.concat_tables(tables) if tables else _BOILERPLATE_SCHEMA.empty_table()
    index = index.take(pc.sort_indices(index, [("line_hash", "ascending")]))
    first_keepers = index.column("keeper").to_numpy()
    first_shards = index.column("keeper_shard").to_numpy()
    keeper, keeper_shard, has, counts = assign_keepers([holder_uri[s.name] for s in shards], index.num_rows,
                                                       config.lines.max_removed_word_frac,
                                                       config.lines.min_words_left,
                                                       config.lines.min_words_after_cuts)
    moved = int((has & ((keeper != first_keepers) | (keeper_shard != first_shards))).sum())
    index = index.set_column(index.schema.get_field_index("keeper"), "keeper", pa.array(keeper, pa.uint64()))
    index = index.set_column(index.schema.get_field_index("keeper_shard"), "keeper_shard",
                             pa.array(keeper_shard, pa.uint32()))
    parquet.write_table(index.cast(_BOILERPLATE_SCHEMA), work.path(*relative[0].split("/")), row_group_size=1 << 20)
    passes["keepers"] = work.finish("keepers", counts | {"keepers_moved": moved,
                                                                   "wall_seconds": round(time.time() - started, 3)})
    log.info("[dedup lines] keepers: %d holders, %d of them removed by the %.0f%% rule; %d lines' keeper moved to a "
             "later holder that stays, %d lines kept by no holder", counts["holders"], counts["holders_removed"],
             100 * config.lines.max_removed_word_frac, moved, counts["lines_lost"])
    return relative


# -- the driver's part -------------------------------------------------------------------------
def estimate_partitions(shards: list[Shard], budget: int, baseline: int = _TASK_BASELINE_BYTES) -> int:
    """Partitions for the boilerplate pass, from the text bytes in the shards' Parquet footers;
    a shard without the columns the pass reads is refused here, before any task runs."""
    return partitions_for_text(text_bytes_of(shards), budget, baseline)


def text_bytes_of(shards: list[Shard], known: Mapping[str, int] | None = None) -> int:
    """Uncompressed bytes of the shards' ``text`` columns (Parquet footers only; ``known``: those
    the driver's column check read already); a shard without the columns the pass reads is
    refused here, before any task runs."""
    return sum(text_bytes_by_uri([s.uri for s in shards], known, _checked_text_bytes).values())


def _checked_text_bytes(uri: str) -> int:
    # one footer read (it was two); names as Arrow reads them: a Parquet footer names a list's leaves
    present, meta = checked_footer(uri)
    missing = [c for c in ("id", "text", "url") if c not in present]
    if missing:
        raise DedupInputError(f"shard {uri} lacks column(s) {missing} needed by lines dedup "
                              f"(lines are counted per registered domain of `url`)")
    return footer_text_bytes(meta)


def partitions_for_text(text_bytes: int, budget: int, baseline: int = _TASK_BASELINE_BYTES) -> int:
    rows = text_bytes / TEXT_BYTES_PER_ROW
    usable = max(budget - max(baseline, _TASK_BASELINE_BYTES), 16 * 2**20)
    return max(1, math.ceil(rows * LINE_BYTES_PER_ROW / usable))


def lines_passes(work: WorkDir, shards: list[Shard], config: DedupConfig, executor: Executor,
                 passes: dict[str, Any], known_text_bytes: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Build the boilerplate-line index in ``work``; returns the figures for ``dedup_stats.json``.
    ``known_text_bytes``: the shards' text bytes by URI that the driver's column check read."""
    from refinery.dedup.driver import _method_params, _run_pass, _write_manifest, worker_baseline_bytes

    lines = config.lines
    rule = {k: getattr(lines, k) for k in ("min_chars", "min_words", "max_words", "fold_digits", "exact_dates")}
    text_bytes = text_bytes_of(shards, known_text_bytes)  # checks the shards' columns before any task runs
    # a step begun and stopped keeps the partitions its finished tasks were written with
    P = config.partitions or (work.done("line_counts") or {}).get("partitions") \
        or work.planned("line_counts", lambda: {"partitions": partitions_for_text(
            text_bytes, config.memory_budget, worker_baseline_bytes(executor, config.method))})["partitions"]
    names = [s.name for s in shards]
    count_uri = {s.name: work.path("line_counts", f"{s.name}.parquet") for s in shards}
    # with keep_first, each shard's candidate lines are kept for line_holders (it read the text again)
    tasks = [{"input_uri": s.uri, "shard": s.name, "output_uri": count_uri[s.name], "num_parts": P, "rule": rule,
              "batch_size": config.batch_size, "shard_index": i}
             | ({"doc_lines_uri": doc_lines_uri(work, s), "gopher_words": lines.min_words_after_cuts is not None}
                if lines.keep_first else {}) for i, s in enumerate(shards)]
    counted = _run_pass(work, "line_counts", line_count_task, tasks, executor, names,
                        extra=lambda rs: {"per_shard": [{"sources": r.get("sources")} for r in rs], "partitions": P})
    P = counted.get("partitions", P)  # a resumed index keeps the partitioning it was written with
    passes["line_counts"] = {k: v for k, v in counted.items() if k != "per_shard"}
    boiler_uris = [work.path("boilerplate", f"part-{p:05d}.parquet") for p in range(P)]
    tasks = [{"count_uris": [count_uri[s.name] for s in shards], "part": p, "output_uri": boiler_uris[p],
              "min_docs": lines.min_docs, "min_domains": lines.min_domains, "min_site_docs": lines.min_site_docs}
             for p in range(P)]
    passes["boilerplate"] = _run_pass(work, "boilerplate", boilerplate_task, tasks, executor,
                                      [f"part-{p}" for p in range(P)], units="rows")
    # the removal stage reads the index by paths relative to the dedup directory
    index_files = [f"boilerplate/part-{p:05d}.parquet" for p in range(P)]
    if lines.keep_first:  # each line's keeper: the first holder that stays, not only the first
        index_files = keeper_pass(work, shards, config, executor, rule, boiler_uris, passes)
    _write_manifest(work, "lines", _method_params(config), shards, counted["per_shard"], partitions=P,
                    boilerplate=index_files)
    b = passes["boilerplate"]
    c = passes["line_counts"]
    log.info("[dedup lines] %d distinct candidate lines, %d boilerplate (%d partitions)", b.get("distinct_lines", 0),
             b.get("boilerplate_lines", 0), P)
    return {"distinct_lines": b.get("distinct_lines", 0), "boilerplate_lines": b.get("boilerplate_lines", 0),
            "site_boilerplate_lines": b.get("site_boilerplate_lines", 0),
            "boilerplate_doc_lines": b.get("boilerplate_doc_lines", 0),
            "docs_without_domain": c.get("docs_without_domain", 0), "partitions": P}


def lines_summary(kept_dir: str, removed_dir: str) -> dict[str, int]:
    """Cuts recorded by the removal run (columns of its output shards): lines and characters cut
    from kept documents, documents edited, documents removed by the 5% rule."""
    from refinery.stages.gopher import TOO_SHORT_AFTER_CUTS
    from refinery.stages.line_dedup import CUT_CHARS, CUT_LINES, REASON

    out = {"docs_edited": 0, "lines_cut": 0, "chars_cut": 0, "docs_removed_for_lines": 0, "lines_in_removed_docs": 0,
           "docs_removed_too_short": 0}
    for root, removed in ((kept_dir, False), (removed_dir, True)):
        try:
            files = fs.list_files(root, (".parquet",))
        except fs.StorageError:
            if fs.exists(root):  # a failed listing: its cuts were left out of the counts
                raise
            continue
        for uri in files:
            with fs.open_parquet_input(uri) as f:
                pf = pq.ParquetFile(f)
                names = pf.schema_arrow.names
                if CUT_LINES not in names:
                    continue
                cols = [CUT_LINES, CUT_CHARS] + (["removed_reason"] if removed and "removed_reason" in names else [])
                t = pf.read(columns=cols)
            cut = pc.fill_null(t.column(CUT_LINES), 0).to_numpy(zero_copy_only=False)
            if removed:
                reason = t.column("removed_reason") if "removed_reason" in t.column_names else None
                mine = np.asarray(pc.equal(reason, REASON).fill_null(False)) if reason is not None else np.zeros(len(cut), bool)
                short = (np.asarray(pc.equal(reason, TOO_SHORT_AFTER_CUTS).fill_null(False)) if reason is not None
                         else np.zeros(len(cut), bool))
                out["docs_removed_for_lines"] += int(mine.sum())
                out["docs_removed_too_short"] += int(short.sum())
                out["lines_in_removed_docs"] += int(cut[mine | short].sum())
            else:
                chars = pc.fill_null(t.column(CUT_CHARS), 0).to_numpy(zero_copy_only=False)
                out["docs_edited"] += int((cut > 0).sum())
                out["lines_cut"] += int(cut.sum())
                out["chars_cut"] += int(chars.sum())
    return out
