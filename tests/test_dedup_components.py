"""Connected components: the partitioned large-star / small-star passes against a plain union-find,
and the partitioned shuffle files they exchange."""

from __future__ import annotations

import numpy as np
import pytest

from refinery.dedup import components as C
from refinery.dedup import passes
from refinery.dedup.shuffle import partition_of, read_partition, write_partitioned

U64 = np.uint64


def _components_via_passes(tmp_path, u: np.ndarray, v: np.ndarray, parts: int) -> tuple[dict[int, int], int, dict]:
    """Run the real task functions (files on disk, `parts` partitions) and return node -> root."""
    src, dst = np.concatenate([u, v]), np.concatenate([v, u])
    seed = str(tmp_path / "cand.parquet")
    write_partitioned(seed, {"src": src, "dst": dst}, passes.node_partition(src, parts), parts)
    inputs = [seed]
    for r in range(64):
        large = [str(tmp_path / f"r{r}-large-{q}.parquet") for q in range(parts)]
        final = [str(tmp_path / f"r{r}-final-{q}.parquet") for q in range(parts)]
        results = [passes.large_star_task(inputs, q, large[q], final[q], parts) for q in range(parts)]
        if all(res["star"] for res in results):
            roots: dict[int, int] = {}
            import pyarrow.parquet as pq

            for f in final:
                t = pq.read_table(f)
                roots.update(zip(t.column("node").to_pylist(), t.column("root").to_pylist()))
            hist = C.merge_histograms([res["histogram"] for res in results])
            return roots, r + 1, hist
        small = [str(tmp_path / f"r{r}-small-{q}.parquet") for q in range(parts)]
        for q in range(parts):
            passes.small_star_task(large, q, small[q], parts)
        inputs = small
    raise AssertionError("did not converge")


def _graphs():
    rng = np.random.default_rng(11)
    n = 400
    # random sparse graph with many small components
    a = rng.integers(0, n, 300).astype(U64)
    b = rng.integers(0, n, 300).astype(U64)
    yield "random", a * U64(7919) % U64(10**9), b * U64(7919) % U64(10**9)
    # a long path in shuffled label order (the slowest case for label propagation)
    labels = rng.permutation(1000).astype(U64) + U64(1 << 33)
    yield "path", labels[:-1], labels[1:]
    # big star + cliques + duplicate edges + keys from several shards
    star = np.full(200, 5, dtype=U64), np.arange(6, 206, dtype=U64)
    clique = np.array([(x, y) for x in range(300, 310) for y in range(300, 310) if x != y], dtype=U64)
    shard_keys = (np.arange(1, 4, dtype=U64) << U64(32)) | U64(9)
    yield "mixed", np.concatenate([star[0], clique[:, 0], shard_keys[:-1], [U64(7)]]), \
        np.concatenate([star[1], clique[:, 1], shard_keys[1:], [U64(6)]])


@pytest.mark.parametrize("parts", [1, 3, 8])
def test_partitioned_components_equal_union_find(tmp_path, parts):
    for name, u, v in _graphs():
        expected = C.union_find_roots(u, v)
        got, rounds, hist = _components_via_passes(tmp_path / f"{name}-{parts}", u, v, parts)
        assert got == expected, name
        sizes: dict[int, int] = {}
        for root in expected.values():
            sizes[root] = sizes.get(root, 0) + 1
        assert sum(hist.values()) == len(sizes)
        assert sum(hist.get(str(s), 0) for s in range(2, 17)) == sum(1 for s in sizes.values() if s <= 16)
        assert rounds <= 12, (name, rounds)


def test_bucket_star_edges_link_each_bucket_to_its_smallest_document():
    keys = np.array([9, 4, 9, 7, 4, 9, 1], dtype=U64)
    docs = np.array([30, 10, 20, 40, 50, 25, 60], dtype=U64)
    u, v, stats = C.bucket_star_edges(keys, docs)
    assert sorted(zip(u.tolist(), v.tolist())) == [(10, 50), (20, 25), (20, 30)]
    assert stats == {"bucket_rows": 7, "shared_buckets": 2, "pairs": 3}


def test_cluster_size_histogram_bins():
    hist = C.cluster_size_histogram(np.array([0, 2, 2, 3, 16, 17, 32, 33, 1000]))
    assert hist == {"2": 2, "3": 1, "16": 1, "17-32": 2, "33-64": 1, "513-1024": 1}


def test_partitioned_file_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 2**64 - 1, 5000, dtype=U64, endpoint=True)
    vals = np.arange(5000, dtype=U64)
    part = partition_of(keys, 6)
    assert part.min() >= 0 and part.max() <= 5 and len(np.unique(part)) == 6
    files = []
    for i in range(2):
        f = str(tmp_path / f"f{i}.parquet")
        write_partitioned(f, {"key": keys[i::2], "val": vals[i::2]}, part[i::2], 6)
        files.append(f)
    for p in range(6):
        got = read_partition(files, p, ["key", "val"], {"key": U64, "val": U64})
        want = np.concatenate([vals[i::2][part[i::2] == p] for i in range(2)])  # file order, stable within
        assert np.array_equal(got["val"], want)
        assert np.array_equal(got["key"], keys[want.astype(np.int64)])
    assert read_partition(files, 99, ["key"], {"key": U64})["key"].size == 0
