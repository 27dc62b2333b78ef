"""The task functions of the dedup passes. Each reads its inputs from storage (local or S3), writes
its output atomically, and returns small counters; :mod:`refinery.dedup.driver` chains them.

Documents are named by a 64-bit *doc key* ``(shard index << 32) | row``: shard index in the sorted
list of input shards, row within the shard. "Keep the smallest key" therefore means "keep the first
document in input order" -- for URL dedup that is the first shard (by name) and row holding the URL.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refinery.dedup import components
from refinery.dedup.minhash import LshParams, MinHasher, estimate_jaccard_rows
from refinery.dedup.shuffle import column_numpy, partition_of, read_partition, write_partitioned
from refinery.dedup.text import document_hashes, mix64, word_hashes
from refinery.executors.base import TASK_SUMMARY, summary_level
from refinery.io import fs, parquet
from refinery.io.readahead import read_ahead
from refinery.schema import repeated_column
from refinery.rundir import PassDir

log = logging.getLogger("refinery.dedup")

_U64 = np.uint64
MAX_SOURCES = 64  # distinct `source` values remembered per shard (to find a shard from its rows)
FINAL_ROW_GROUP = 1 << 16  # final (node, root) files: small row groups so a shard's range is cheap to read


class DedupInputError(ValueError):
    """The input shards cannot be deduplicated as they are (the message says why)."""


def doc_keys(shard_index: int, rows: np.ndarray) -> np.ndarray:
    return (np.uint64(shard_index) << _U64(32)) | rows.astype(_U64)


def node_partition(nodes: np.ndarray, num_parts: int) -> np.ndarray:
    """Connected-components partition of a node: by a hash of its key, so clusters' roots (the
    earliest documents) do not all land in the partitions of the first shards."""
    return partition_of(mix64(nodes.astype(_U64, copy=True)), num_parts)


# -- keys -----------------------------------------------------------------------------------
_AUTHORITY_END = re.compile(r"[/?#]")
#: query parameters that track a visit, not name a page (Google Analytics' utm_*, ad click ids)
_TRACKING_PARAM = re.compile(r"^(utm_[a-z_]+|fbclid|gclid|dclid|gbraid|wbraid|msclkid|yclid|igshid|mc_cid|mc_eid|_ga)$",
                             re.IGNORECASE)
#: percent-escapes of unreserved characters (RFC 3986 2.3): ``%7E`` is ``~``
_UNRESERVED_ESCAPE = re.compile(r"%(2[DdEe]|5[Ff]|7[Ee]|3[0-9]|[46][1-9A-Fa-f]|[57][0-9Aa])")
_ANY_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_SESSION_ID = re.compile(r";jsessionid=[^/?#]*", re.IGNORECASE)


def normalize_url(url: str | None) -> str | None:
    """The URL as compared by URL dedup: trimmed, scheme and host lowercased (a trailing dot of
    the host dropped), ``http``/``https``, a leading ``www.`` and default ports not distinguished;
    the fragment dropped, except a route (``#!/jack``, ``#/article/123``), where single-page sites
    put the page; a ``;jsessionid`` dropped; tracking parameters (``utm_*``,
    ``fbclid``, ``gclid``, ...) dropped and the others sorted; escapes of unreserved characters
    decoded (``%7E`` = ``~``). ``None`` for empty URLs. (Session 30, adversarial testing: a visit's
    ``utm_source`` made one page many, and ``#/article/123`` and ``#/article/456`` were one page.)"""
    if not url:
        return None
    url, _, fragment = url.strip().partition("#")
    # a route is the page (MediaWiki's "#/media/File:..." is a viewer over the article: not a page)
    if fragment.startswith(("!", "/")) and fragment.strip("!/") and not fragment.startswith("/media/"):
        url = f"{url}#{fragment}"
        fragment_kept = True
    else:
        fragment_kept = False
    if not url:
        return None
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    scheme = scheme.lower()
    if scheme in ("http", "https"):
        scheme = ""
    # the authority ends at the first "/" or "?" ("https://sho.rt?v=Ab3" has an empty path: its
    # query is case-sensitive and must not be lowercased or stripped as if it were the host)
    end = _AUTHORITY_END.search(rest)
    host, path = (rest[: end.start()], rest[end.start():].removeprefix("/")) if end else (rest, "")
    host = host.lower()
    host = host.removeprefix("www.")
    name, colon, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if colon and port.isdigit():
        host = name.rstrip(".") + ("" if port in ("80", "443") else f":{port}")
    else:
        host = host.rstrip(".")
    if not fragment_kept:
        path = _normalize_path_and_query(path)
    else:
        page, _, route = path.partition("#")
        path = f"{_normalize_path_and_query(page)}#{route}"
    return f"{scheme}://{host}/{path}" if scheme else f"{host}/{path}"


def _escapes(text: str) -> str:
    """Escapes of unreserved characters decoded, the others' hex digits upper-cased (``%2f`` is ``%2F``)."""
    text = _UNRESERVED_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    return _ANY_ESCAPE.sub(lambda m: m.group(0).upper(), text)


def _normalize_path_and_query(path: str) -> str:
    path, q, query = path.partition("?")
    path = _escapes(_SESSION_ID.sub("", path))
    if not path.strip("/"):
        path = ""  # the root, with or without "/"; elsewhere "a/" and "a" stay apart (a directory
        # and a file may differ, and MinHash catches the same content under both)
    if q:
        params = [_escapes(p) for p in query.split("&") if p and not _TRACKING_PARAM.match(p.split("=", 1)[0])]
        # by name only, a stable sort: a repeated name keeps its values' order (?id=1&id=2 is a list)
        query = "&".join(sorted(params, key=lambda p: p.split("=", 1)[0]))
    return f"{path}?{query}" if q and query else path


def url_keys(urls: list[str | None], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    import xxhash

    keys = np.zeros(len(urls), dtype=_U64)
    has = np.zeros(len(urls), dtype=bool)
    for i, url in enumerate(urls):
        norm = normalize_url(url)
        if norm is not None:
            keys[i] = xxhash.xxh3_64_intdigest(norm.encode("utf-8", "surrogatepass"), seed=seed)
            has[i] = True
    return keys, has


def _read_columns(uri: str, columns: list[str]) -> pa.Table:
    """Just these columns of a signature file (ranged reads: the stored signatures are ~80% of it)."""
    with fs.open_parquet_input(uri) as f:
        return pq.read_table(f, columns=columns)


def read_shard(uri: str) -> tuple[list[str], pa.Buffer]:
    """An index task's input shard read whole once, and its column names (:func:`_columns`) from
    those bytes: its footer read on its own first was a GET per shard per index task on S3 (2 of
    the recipe's requests per shard; session 48, h186). Parse it with ``parquet.parse_table``."""
    data = parquet.read_buffer(uri)
    return _columns(uri, data), data


def _columns(uri: str, data: pa.Buffer | None = None) -> list[str]:
    """The shard's column names (from ``data``, its bytes, when read already); DedupInputError
    naming the file and column when one repeats (the index tasks failed with Arrow's "Multiple
    matches for FieldRef", after building the index)."""
    return checked_footer(uri, data)[0]


def checked_footer(uri: str, data: pa.Buffer | None = None) -> tuple[list[str], pq.FileMetaData]:
    """:func:`_columns` and the Parquet footer they come from, read once."""
    try:
        schema, meta = parquet.schema_and_metadata(uri, data)
        check_dedup_schema(uri, schema)
    except parquet.ShardReadError as exc:
        raise DedupInputError(str(exc)) from None
    return schema.names, meta


def check_dedup_schema(uri: str, schema: pa.Schema) -> None:
    """:class:`~refinery.io.parquet.ShardReadError` in one line naming the shard ``uri`` when a
    column of ``schema`` repeats or a document column has a type dedup cannot read."""
    twice = repeated_column(schema.names)
    if twice:
        raise parquet.ShardReadError(f"shard {uri} has the column {twice!r} more than once; rename or drop one")
    # the types the removal pass reads its documents with (refinery.io.parquet): an int or nested
    # ``text`` / ``url`` failed a signature task with a bare TypeError naming neither file nor
    # column, and a float ``id`` only at the removal, after every index was built (found by adversarial testing)
    parquet.check_document_types(uri, schema)


def footer_text_bytes(meta: pq.FileMetaData) -> int:
    """Uncompressed bytes of a Parquet file's ``text`` column, from its footer (0 without one):
    what the lines and substring passes plan their memory with."""
    names = meta.schema.names
    if "text" not in names:
        return 0
    col = names.index("text")
    return sum(meta.row_group(g).column(col).total_uncompressed_size for g in range(meta.num_row_groups))


def text_bytes_by_uri(uris: list[str], known: Mapping[str, int] | None, read: Callable[[str], int]) -> dict[str, int]:
    """Each shard's :func:`footer_text_bytes`: those the driver's column check read (``known``: a
    standalone dedup reads every footer before its lock), the others by ``read`` (a footer each,
    16 at a time on S3): one read of each input footer per pass, not two (session 49, h205). A
    shard ``read`` refuses is refused in shard order, as a loop would."""
    known = known or {}
    rest = [u for u in uris if u not in known]
    found = dict(zip(rest, read_ahead(read, rest)))
    return {u: known[u] if u in known else found[u] for u in uris}


# -- pass 1: signatures / keys per shard ------------------------------------------------------
def as_text(table: pa.Table) -> pa.Table:
    """``text``, ``url`` and ``source`` as UTF-8 strings when a shard stores them as binary (Hive
    and Impala write strings so), invalid bytes replaced, as the runner reads them: the dedup
    tasks failed on bytes, and a binary ``source`` could not be written to the manifest (found
    by adversarial testing)."""
    for name in ("text", "url", "source"):
        if name not in table.column_names:
            continue
        column = table.column(name)
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            values = [None if v is None else v.decode("utf-8", "replace") for v in column.to_pylist()]
            table = table.set_column(table.column_names.index(name), name, pa.array(values, pa.large_string()))
    return table


def check_unique_ids(ids: pa.Array | pa.ChunkedArray, input_uri: str) -> None:
    """DedupInputError unless every id is set and unique: the removal pass finds documents by id
    (substring cuts, a line's keeper), so a repeated id cut or kept the wrong document."""
    if ids.null_count or (len(ids) and pc.count_distinct(ids).as_py() != len(ids)):
        raise DedupInputError(
            f"shard {input_uri}: document ids must be non-null and unique within a shard "
            f"(the removal pass finds documents by id)")


def signature_task(
    input_uri: str, shard: str, shard_index: int, output_uri: str, method: str, lsh: dict[str, Any],
    batch_size: int = 1000, sig_slots: int = 0,
) -> dict[str, Any]:
    """Per shard (share-nothing): the dedup keys of every document. MinHash: one key per LSH band;
    exact: a hash of the normalized text; url: a hash of the normalized URL. Writes
    ``row, id, has_key, keys`` (documents without words / URL have no key), and with
    ``sig_slots`` the first ``sig_slots`` MinHash values as ``sig`` (candidate verification)."""
    started = time.time()
    present, data = read_shard(input_uri)
    needed = ["id", "url" if method == "url" else "text"]
    missing = [c for c in needed if c not in present]
    if missing:
        raise DedupInputError(f"shard {input_uri} lacks column(s) {missing} needed by {method} dedup")
    table = as_text(parquet.parse_table(input_uri, data, columns=needed + (["source"] if "source" in present else [])))
    del data
    n = table.num_rows
    ids = table.column("id").cast(pa.string())
    check_unique_ids(ids, input_uri)
    params = LshParams(**lsh)
    width = params.bands if method == "minhash" else 1
    keys = np.zeros((n, width), dtype=_U64)
    has = np.zeros(n, dtype=bool)
    sig_slots = min(sig_slots, params.num_perm) if method == "minhash" else 0
    stored = np.empty((n, sig_slots), dtype=np.uint32)
    last_log = started
    if method == "minhash":
        hasher = MinHasher(params)
        for lo in range(0, n, batch_size):
            texts = table.column("text").slice(lo, batch_size).to_pylist()
            sig, ok = hasher.signatures(texts)
            keys[lo : lo + len(texts)] = hasher.band_keys(sig)
            stored[lo : lo + len(texts)] = sig[:, :sig_slots]
            has[lo : lo + len(texts)] = ok
            if time.time() - last_log >= 10:
                last_log = time.time()
                log.info("[dedup minhash/signatures] shard %s: %d/%d docs, %.0f docs/s", shard, lo + len(texts), n,
                         (lo + len(texts)) / (last_log - started))
    elif method == "exact":
        for lo in range(0, n, batch_size):
            tokens = word_hashes(table.column("text").slice(lo, batch_size).to_pylist(), seed=params.seed)
            h, ok = document_hashes(tokens)
            keys[lo : lo + len(h), 0] = h
            has[lo : lo + len(h)] = ok
    elif method == "url":
        k, ok = url_keys(table.column("url").to_pylist(), seed=params.seed)
        keys[:, 0], has[:] = k, ok
    else:
        raise ValueError(f"unknown dedup method {method!r}")
    sources: list[str] | None = None
    if "source" in table.column_names:
        distinct = pc.unique(table.column("source").drop_null())
        sources = sorted(distinct.to_pylist()) if len(distinct) <= MAX_SOURCES else None
    columns = {
        "row": pa.array(np.arange(n, dtype=np.uint32)),
        "id": ids,
        "has_key": pa.array(has),
        "keys": pa.FixedSizeListArray.from_arrays(pa.array(keys.reshape(-1)), width),
    }
    if sig_slots:
        columns["sig"] = pa.FixedSizeListArray.from_arrays(pa.array(stored.reshape(-1)), sig_slots)
    if sig_slots and n:
        # MinHash values are random: no dictionary, no compression (6x faster to write, 2x to read)
        with fs.atomic_output(output_uri) as f:
            pq.write_table(pa.table(columns), f, row_group_size=100_000, use_dictionary=["id"],
                           compression={"row": "zstd", "id": "zstd", "has_key": "zstd", "keys": "zstd", "sig": "none"})
    else:  # an empty shard too: no (empty) row group, which Hugging Face `datasets` cannot read
        parquet.write_table(pa.table(columns), output_uri, row_group_size=100_000)
    elapsed = time.time() - started
    log.log(summary_level(), "[dedup %s/signatures] shard %s: %d docs (%d with keys) in %.1fs, %.0f docs/s",
             method, shard, n, int(has.sum()), elapsed, n / max(elapsed, 1e-9), extra=TASK_SUMMARY)
    return {"docs": n, "with_key": int(has.sum()), "sources": sources, "width": width}


# -- pass 2: bucket rows partitioned by key range ----------------------------------------------
def bucket_task(signature_uri: str, shard_index: int, output_uri: str, num_parts: int) -> dict[str, Any]:
    """Per shard: one ``(key, doc)`` row per (document, band), grouped into ``num_parts``
    partitions by key range, so each partition can be clustered within the memory budget."""
    table = _read_columns(signature_uri, ["row", "has_key", "keys"])
    has = table.column("has_key").to_numpy(zero_copy_only=False)
    width = table.schema.field("keys").type.list_size
    rows = table.column("row").to_numpy()[has]
    keys = pc.list_flatten(table.column("keys")).to_numpy().reshape(-1, width)[has]
    del table
    key = keys.reshape(-1)
    doc = np.repeat(doc_keys(shard_index, rows), width)  # doc-major: rows stay in doc order
    counts = write_partitioned(output_uri, {"key": key, "doc": doc}, partition_of(key, num_parts), num_parts)
    return {"rows": len(key), "max_partition_rows": max(counts) if counts else 0}


# -- pass 3: candidate pairs per partition -----------------------------------------------------
def candidate_task(bucket_uris: list[str], part: int, output_uri: str, cc_parts: int,
                   verify_shards: int = 0) -> dict[str, Any]:
    """Per key partition: documents sharing a key (a band bucket, or an exact hash) become star
    edges to the bucket's smallest document; written in both directions for large-star.

    ``verify_shards`` (MinHash verification): the edges (plus a path through each bucket) are
    written once, ``(u, v)`` with ``u < v``, grouped by the shard of ``u``, for
    :func:`verify_attach_task`."""
    data = read_partition(bucket_uris, part, ["key", "doc"], {"key": _U64, "doc": _U64})
    u, v, stats = components.bucket_star_edges(data["key"], data["doc"], path=bool(verify_shards))
    del data
    if verify_shards:
        write_partitioned(output_uri, {"u": u, "v": v}, shard_of(u), verify_shards)
        return stats
    src, dst = np.concatenate([u, v]), np.concatenate([v, u])
    write_partitioned(output_uri, {"src": src, "dst": dst}, node_partition(src, cc_parts), cc_parts)
    return stats


# -- pass 3b: candidate verification (MinHash) -------------------------------------------------
# Both documents of a pair need their signatures, and signatures live in their shards' files: a
# join in two hops, each a task per shard that holds one shard's signatures (512 bytes per
# document at 128 slots): attach u's signature and regroup by v's shard, then compare with v's.
def shard_of(keys: np.ndarray) -> np.ndarray:
    return (keys >> _U64(32)).astype(np.int64)


def _shard_signatures(signature_uri: str) -> np.ndarray:
    return column_numpy(_read_columns(signature_uri, ["sig"]).column("sig"))


def verify_attach_task(pair_uris: list[str], shard_index: int, signature_uri: str, output_uri: str,
                       num_shards: int, slots: int, a: str = "u", b: str = "v") -> dict[str, Any]:
    """Per shard: the pairs whose ``a`` document is in this shard get ``a``'s signature attached
    and are regrouped by the shard of ``b``. Used for bucket pairs (u, v) and, after clustering,
    for (root, node) pairs."""
    data = read_partition(pair_uris, shard_index, [a, b], {a: _U64, b: _U64})
    x, y = components.dedupe_pairs(data[a], data[b]) if a == "u" else (data[a], data[b])
    del data
    if len(x):
        attached = _shard_signatures(signature_uri)[(x & _U64(0xFFFFFFFF)).astype(np.int64)]
    else:  # every file of the shuffle has the same width, empty ones too
        attached = np.empty((0, slots), np.uint32)
    counts = write_partitioned(output_uri, {a: x, b: y, "sig": attached}, shard_of(y), num_shards)
    # the shards this file has rows for: the driver hands each shard's next task only those files
    # (each task opened every shard's file: shards x shards footers, 28 min at 4,000 shards)
    return {"pairs": len(x), "parts": [p for p, n in enumerate(counts) if n]}


def _compare(attach_uris: list[str], shard_index: int, signature_uri: str, a: str, b: str
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, estimated Jaccard)`` for the pairs whose ``b`` document is in this shard."""
    data = read_partition(attach_uris, shard_index, [a, b, "sig"], {a: _U64, b: _U64, "sig": np.uint32})
    x, y, sig_x = data[a], data[b], data["sig"]
    if len(x) == 0:
        return x, y, np.empty(0, np.float32)
    sig = _shard_signatures(signature_uri)
    return x, y, estimate_jaccard_rows(sig_x, sig[(y & _U64(0xFFFFFFFF)).astype(np.int64)])


def verify_task(attach_uris: list[str], shard_index: int, signature_uri: str, output_uri: str, cc_parts: int,
                threshold: float) -> dict[str, Any]:
    """Per shard: keep the pairs whose estimated Jaccard reaches ``threshold``; written in both
    directions grouped by node partition, as :func:`candidate_task` does without verification."""
    u, v, est = _compare(attach_uris, shard_index, signature_uri, "u", "v")
    ok = est >= threshold
    u, v = u[ok], v[ok]
    src, dst = np.concatenate([u, v]), np.concatenate([v, u])
    write_partitioned(output_uri, {"src": src, "dst": dst}, node_partition(src, cc_parts), cc_parts)
    return {"checked": len(ok), "verified": int(ok.sum()), "rejected": int((~ok).sum()),
            "rejected_above_0_5": int(((est >= 0.5) & ~ok).sum())}


# -- pass 4: connected components, alternating large-star / small-star --------------------------
def large_star_task(input_uris: list[str], part: int, output_uri: str, final_uri: str, cc_parts: int,
                    roots_uri: str | None = None, num_shards: int = 0) -> dict[str, Any]:
    data = read_partition(input_uris, part, ["src", "dst"], {"src": _U64, "dst": _U64})
    r = components.large_star(data["src"], data["dst"])
    del data
    hi, lo = r["hi"], r["lo"]
    write_partitioned(output_uri, {"src": hi, "dst": lo}, node_partition(hi, cc_parts), cc_parts)
    result: dict[str, Any] = {"edges": r["edges_in"], "star": r["star"]}
    if r["star"]:
        node, root, size = r["node"], r["root"], r["size"]
        final = pa.table({"node": pa.array(node), "root": pa.array(root)})
        parquet.write_table(final, final_uri, row_group_size=FINAL_ROW_GROUP)
        if roots_uri:
            # (root, node) of every document to remove, grouped by the root's shard: the first hop
            # of the check against the cluster's kept copy (verify_attach_task / removal_list_task)
            member = node != root
            write_partitioned(roots_uri, {"root": root[member], "node": node[member]}, shard_of(root[member]), num_shards)
        result.update(
            nodes=len(node),
            clusters=int((size > 0).sum()),
            histogram=components.cluster_size_histogram(size),
            largest=int(size.max()) if len(size) else 0,
        )
    return result


def small_star_task(input_uris: list[str], part: int, output_uri: str, cc_parts: int) -> dict[str, Any]:
    data = read_partition(input_uris, part, ["src", "dst"], {"src": _U64, "dst": _U64})
    hi, lo = components.small_star(data["src"], data["dst"])
    edges_in = len(data["src"])
    del data
    src, dst = np.concatenate([hi, lo]), np.concatenate([lo, hi])
    write_partitioned(output_uri, {"src": src, "dst": dst}, node_partition(src, cc_parts), cc_parts)
    return {"edges": edges_in}


# -- pass 5: per-shard removal lists -----------------------------------------------------------
def removal_list_task(shard: str, shard_index: int, signature_uri: str, final_uris: list[str], output_uri: str,
                      root_attach_uris: list[str] | None = None, threshold: float = 0.0) -> dict[str, Any]:
    """Per shard: every clustered document's id, cluster id (the kept document's key) and whether
    it is removed (it is not its cluster's smallest key).

    ``root_attach_uris`` (MinHash verification): a document is removed only if its estimated
    Jaccard with its cluster's kept copy reaches ``threshold``. Verified edges bound each link of
    a chain, not the chain, so a far end of a chain (A ~ B ~ C with A, C apart) is checked here
    against the root and, failing, kept and left out of the list."""
    lo = pa.scalar(shard_index << 32, pa.uint64())
    hi = pa.scalar((shard_index + 1) << 32, pa.uint64())
    expr = (pc.field("node") >= lo) & (pc.field("node") < hi)
    parts = []
    for uri in final_uris:
        with fs.open_parquet_input(uri) as f:
            parts.append(pq.read_table(f, filters=expr))  # row-group pruning
    final = pa.concat_tables(parts) if parts else pa.table({"node": pa.array([], pa.uint64()), "root": pa.array([], pa.uint64())})
    node = final.column("node").to_numpy()
    root = final.column("root").to_numpy()
    order = np.argsort(node)
    node, root = node[order], root[order]
    root_rejected = 0
    similarity = np.full(len(node), np.nan, dtype=np.float32)  # null: not measured (no verification)
    if root_attach_uris is not None:
        r, x, est = _compare(root_attach_uris, shard_index, signature_uri, "root", "node")
        far = x[est < threshold]
        root_rejected = len(far)
        if root_rejected:
            keep = ~np.isin(node, far)
            node, root, similarity = node[keep], root[keep], similarity[keep]
        # each removed document's estimated Jaccard with the copy its cluster keeps: the metric
        # that removed it, so a removal can be audited without recomputing signatures
        if len(x) and len(node):
            at = np.searchsorted(node, x).clip(max=len(node) - 1)
            hit = node[at] == x
            similarity[at[hit]] = est[hit]
    rows = (node & _U64(0xFFFFFFFF)).astype(np.int64)
    ids = _read_columns(signature_uri, ["id"]).column("id")
    removed = node != root
    out = pa.table({
        "id": ids.take(pa.array(rows)),
        "row": pa.array(rows.astype(np.uint32)),
        "cluster_id": pa.array(root.astype(np.int64)),
        "removed": pa.array(removed),
        "similarity": pa.array(similarity, mask=np.isnan(similarity) | ~removed),
    })
    parquet.write_table(out, output_uri)
    return {"clustered": len(node), "removed": int(removed.sum()), "kept_representatives": int((~removed).sum()),
            "root_rejected": root_rejected}


# -- pass 6: the removal run, through the normal shard runner ----------------------------------
#: the removal runner of the pass this worker last ran shards of: (key, runner). One stage serves
#: every shard of the pass (its ``shard`` set per task), so what it loads for the whole index --
#: the manifest (a list of every shard: parsed per shard, quadratic in the shards) and the lines
#: pass's corpus-wide line set -- loads once per worker, not once per shard (session 44, h136)
_REMOVAL_RUNNER: list[tuple[tuple[Any, ...], Any]] = []


def drop_removal_runner() -> None:
    """Forget the cached removal runner (and the index it holds): a worker's memory probe calls
    this, so a later pass's budget does not count an earlier pass's index."""
    _REMOVAL_RUNNER.clear()


def index_version(dedup_dir: str) -> tuple[int, str] | None:
    """The index manifest's (size, version), or None when it cannot be read (the stage says why)."""
    manifest = fs.join(dedup_dir, "manifest.json")
    try:
        return fs.file_versions(manifest, [manifest])[manifest]
    except (OSError, fs.StorageError):
        return None


def removal_runner(stage_kind: str, stage_params: dict[str, Any], shard: str, fingerprint: str | None,
                   version: tuple[int, str] | None = None) -> Any:
    """The :class:`~refinery.runner.ShardRunner` that applies the index at ``stage_params["dedup_dir"]``
    to ``shard``: this worker's runner of the pass when the index is the one it was built for (same
    fingerprint, manifest unchanged), else a new one. ``version``: the manifest's, as the driver
    took it once for the pass; without it each call looks (:func:`index_version`)."""
    from refinery.runner import ShardRunner
    from refinery.stages.registry import stage_class

    version = tuple(version) if version is not None else index_version(stage_params.get("dedup_dir", ""))
    key = (stage_kind, json.dumps(stage_params, sort_keys=True, default=str), fingerprint, version)
    runner = _REMOVAL_RUNNER[0][1] if _REMOVAL_RUNNER and _REMOVAL_RUNNER[0][0] == key else None
    if runner is None or version is None:
        drop_removal_runner()
        runner = ShardRunner([stage_class(stage_kind)(shard=shard, **stage_params)])
        if version is not None:
            _REMOVAL_RUNNER.append((key, runner))
    stage = runner.stages[0]
    stage.shard = shard
    stage.__dict__.pop("_lazy_tables", None)  # the shard's own index rows: read by its task, as before
    runner.forget_partial_stage_columns()  # a probe that failed (an unreadable index file) is redone
    return runner


def removal_run_task(kept_uri: str, out: PassDir, shard: str, stage_kind: str, stage_params: dict[str, Any],
                     force: bool = False, fingerprint: str | None = None,
                     index_version: tuple[int, str] | None = None, unmarked: bool = False) -> dict[str, Any]:
    """Apply the index to one shard. ``index_version``: the manifest's version, taken by the driver
    once for the pass after the index was built (a HEAD per shard on S3 before: 4 of the recipe's
    requests per shard; session 48, h186). The manifest is read pinned to it (``If-Match`` on S3,
    the mtime locally), so a manifest rewritten since fails the shard (``InputChangedError``)
    instead of a runner of another index serving under this one's key. ``unmarked``: the driver's
    listing of stats/ showed no marker for the shard (:attr:`ShardTask.unmarked`)."""
    from refinery.runner import ShardTask, written_result

    runner = removal_runner(stage_kind, stage_params, shard, fingerprint, index_version)
    manifest = fs.join(runner.stages[0].dedup_dir, "manifest.json")  # the URI the stage reads
    with fs.expecting_version(manifest, index_version[1] if index_version is not None else None):
        # a shard counts as finished only if it was produced from this very index (its fingerprint)
        result = runner.run(ShardTask(kept_uri, out, shard, unmarked=unmarked), force=force, fingerprint=fingerprint)
    stats = result.stats
    return {"docs": int(stats.get("docs_read", 0)), "kept": int(stats.get("docs_kept", 0)),
            "removed": int(stats.get("docs_removed", 0)), "skipped": result.skipped, **written_result(result)}
