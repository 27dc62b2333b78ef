"""Connected components over candidate pairs, distributable over partitions (numpy kernels).

Documents are nodes named by their 64-bit doc key; candidate pairs are edges. Every cluster keeps
its *smallest* key (the earliest document by shard order, then row), so the result does not depend
on partitioning, task order or the executor.

The algorithm is the alternating *large-star / small-star* of Kiveris, Lattanzi, Mirrokni,
Rastogi and Vassilvitskii, "Connected Components in MapReduce and Beyond" (SoCC 2014). Each step is
a group-by over edges partitioned by node, so a step is P independent tasks whose memory is bounded
by their partition, and neither step increases the number of edges:

- large-star: for node ``u`` with neighbours ``N(u)`` and ``m = min(N(u) + {u})``, replace each edge
  to a *larger* neighbour ``v`` by ``(v, m)``;
- small-star: for node ``u`` with *smaller* neighbours ``S(u)`` and ``m = min(S(u) + {u})``, replace
  those edges by ``(v, m)`` for ``v`` in ``S(u)`` plus ``(u, m)``.

It ends when every component is a star around its minimum, which the large-star step detects
locally: every node has either no smaller neighbour (a root) or exactly one and no larger one (a
leaf). Rounds grow like O(log^2 n) in theory; dedup graphs (cliques and stars) take a few.
"""

from __future__ import annotations

import numpy as np

_U64 = np.uint64


def dedupe_pairs(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique ``(u, v)`` pairs without self-loops, sorted by ``u`` then ``v``."""
    keep = u != v
    if not keep.all():
        u, v = u[keep], v[keep]
    if len(u) == 0:
        return u, v
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    first = np.empty(len(u), dtype=bool)
    first[0] = True
    np.not_equal(u[1:], u[:-1], out=first[1:])
    first[1:] |= v[1:] != v[:-1]
    return u[first], v[first]


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    starts = np.empty(len(sorted_keys), dtype=bool)
    if len(starts):
        starts[0] = True
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=starts[1:])
    return np.flatnonzero(starts)


def bucket_star_edges(keys: np.ndarray, docs: np.ndarray, path: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Edges ``(smallest doc of the bucket, other doc)`` for every bucket (equal key) holding
    several documents: a star per bucket connects it with one edge per extra member.

    ``path``: also link consecutive members (by doc key). When edges are verified, a star alone
    would lose a bucket whose smallest member is the odd one out (its edges all fail although the
    others are near-copies of each other); the path keeps them linked at k - 2 extra edges."""
    stats = {"bucket_rows": len(keys), "shared_buckets": 0, "pairs": 0}
    if len(keys) == 0:
        return np.empty(0, _U64), np.empty(0, _U64), stats
    order = np.argsort(keys, kind="stable")
    k, d = keys[order], docs[order]
    del order
    starts = _group_starts(k)
    counts = np.diff(np.append(starts, len(k)))
    shared = counts > 1
    stats["shared_buckets"] = int(shared.sum())
    if not shared.any():
        return np.empty(0, _U64), np.empty(0, _U64), stats
    root = np.repeat(np.minimum.reduceat(d, starts), counts)
    in_shared = np.repeat(shared, counts)
    member = in_shared & (d != root)
    u, v = root[member], d[member]
    if path:
        # sort members by doc within each bucket; link each to its predecessor in the bucket
        order = np.lexsort((d, k))
        ks, ds = k[order], d[order]
        same = np.zeros(len(ks), dtype=bool)
        same[1:] = ks[1:] == ks[:-1]
        prev = np.flatnonzero(same)
        u, v = np.concatenate([u, ds[prev - 1]]), np.concatenate([v, ds[prev]])
    u, v = dedupe_pairs(u, v)
    stats["pairs"] = len(u)
    return u, v, stats


def large_star(src: np.ndarray, dst: np.ndarray) -> dict[str, object]:
    """One large-star step on directed edges ``src -> dst`` (both directions of every edge present,
    grouped here by ``src``). Returns the new edges as ``(hi, lo)`` with ``lo < hi``, whether this
    partition is already a min-star forest, and the final ``(node, root)`` rows if it is."""
    src, dst = dedupe_pairs(src, dst)
    starts = _group_starts(src)
    counts = np.diff(np.append(starts, len(src)))
    node = src[starts]
    smaller = dst < src
    n_smaller = np.add.reduceat(smaller.astype(np.int64), starts) if len(src) else np.empty(0, np.int64)
    n_larger = counts - n_smaller
    min_nb = np.minimum.reduceat(dst, starts) if len(src) else np.empty(0, _U64)
    m = np.minimum(node, min_nb)
    m_edge = np.repeat(m, counts)
    larger = ~smaller
    out_hi, out_lo = dst[larger], m_edge[larger]
    star = bool(np.all((n_smaller == 0) | ((n_smaller == 1) & (n_larger == 0))))
    result: dict[str, object] = {"hi": out_hi, "lo": out_lo, "star": star, "edges_in": len(src)}
    if star:
        is_root = n_smaller == 0
        root = np.where(is_root, node, min_nb)
        size = np.where(is_root, n_larger + 1, 0).astype(np.int64)
        result.update(node=node, root=root, size=size)
    return result


def small_star(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One small-star step on edges ``src -> dst`` with ``dst < src``, grouped by ``src``.
    Returns new edges ``(hi, lo)`` with ``lo < hi``."""
    src, dst = dedupe_pairs(src, dst)
    if len(src) == 0:
        return src, dst
    starts = _group_starts(src)
    counts = np.diff(np.append(starts, len(src)))
    node = src[starts]
    m = np.minimum.reduceat(dst, starts)  # every dst < src, so this is min(S(u) + {u})
    m_edge = np.repeat(m, counts)
    other = dst != m_edge
    hi = np.concatenate([dst[other], node])
    lo = np.concatenate([m_edge[other], m])
    return hi, lo


def cluster_size_histogram(sizes: np.ndarray) -> dict[str, int]:
    """Cluster sizes -> counts; exact up to 16, then power-of-two bins such as ``"17-32"``."""
    hist: dict[str, int] = {}
    values, counts = np.unique(sizes[sizes > 0], return_counts=True)
    for size, count in zip(values.tolist(), counts.tolist()):
        if size <= 16:
            key = str(size)
        else:
            upper = 1 << (int(size) - 1).bit_length()
            key = f"{upper // 2 + 1}-{upper}"
        hist[key] = hist.get(key, 0) + int(count)
    return hist


def merge_histograms(hists: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for h in hists:
        for k, v in h.items():
            merged[k] = merged.get(k, 0) + v

    def order(key: str) -> int:
        return int(key.split("-")[0])

    return {k: merged[k] for k in sorted(merged, key=order)}


def union_find_roots(u: np.ndarray, v: np.ndarray) -> dict[int, int]:
    """Reference: node -> smallest node of its component, by a plain union-find (tests)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in zip(u.tolist(), v.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in list(parent)}
