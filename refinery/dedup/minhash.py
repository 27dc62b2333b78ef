"""MinHash signatures for a batch of documents, and LSH band keys.

Pipeline per batch: :func:`refinery.dedup.text.tokenize` (normalize, hash words) ->
:func:`~refinery.dedup.text.shingle_hashes` (word n-grams, 64-bit) -> a MinHash backend ->
``uint32`` signatures ``[docs, num_perm]`` -> :meth:`MinHasher.band_keys` (one 64-bit key per band).

Backends (same interface; signatures of different backends are *not* comparable, so the backend
and its version are recorded in the dedup manifest and checked):

- ``rensa`` (default): `rensa <https://pypi.org/project/rensa/>`_'s R-MinHash over our shingle
  hashes, in one call per batch (``digest_matrix_from_flat_token_hashes``). R-MinHash adapts
  Fast Similarity Sketching (Dahlgaard, Knudsen, Thorup 2017): each shingle is thrown into a few
  slots instead of being hashed once per slot, and every slot still collides with probability
  equal to the Jaccard similarity. ~100x less work than k independent permutations.
- ``numpy``: classic k-permutation MinHash, vectorized: slot ``i`` of a document is
  ``min over shingles x of (a_i * x + b_i) mod 2**64 >> 32`` (multiply-add-shift, a 2-independent
  family for the 32-bit shingle keys), computed for all shingles of a chunk at once and
  min-reduced per document. No compiled dependency; used as the fallback and as a cross-check.

Band keys: band ``j`` of a signature is hashed with a seed that depends on ``j``, so equal values in
different bands never collide. Keys are 64-bit: with N documents and b bands the expected number of
accidental key collisions is about ``b * N**2 / 2**65`` (0.4 for a billion documents and 14 bands).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from refinery.dedup.text import mix64, mix64_int, shingle_hashes, word_hashes

Backend = Literal["rensa", "numpy"]
_U64 = np.uint64
EMPTY = np.uint32(0xFFFFFFFF)  # the value of every slot of a document without shingles
CHUNK_CHARS = 1 << 20


@dataclass(frozen=True)
class LshParams:
    """MinHash / LSH parameters. ``bands * rows`` slots of a ``num_perm`` signature are banded."""

    num_perm: int = 128
    bands: int = 14
    rows: int = 8
    ngram: int = 5
    seed: int = 0
    backend: Backend = "rensa"

    def __post_init__(self) -> None:
        if self.bands < 1 or self.rows < 1 or self.ngram < 1:
            raise ValueError(f"bands, rows and ngram must be >= 1 (got {self.bands}, {self.rows}, {self.ngram})")
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        if self.backend not in ("rensa", "numpy"):
            raise ValueError(f"unknown MinHash backend {self.backend!r}: use 'rensa' or 'numpy'")

    @property
    def threshold(self) -> float:
        """Jaccard similarity at which a pair becomes a candidate with probability ~1/2."""
        return (1.0 / self.bands) ** (1.0 / self.rows)

    def candidate_probability(self, jaccard: float) -> float:
        """P(a pair with this Jaccard similarity shares at least one band): 1 - (1 - J^r)^b."""
        return 1.0 - (1.0 - jaccard**self.rows) ** self.bands


#: Named settings. ``default``: 14 bands x 8 rows (datatrove's default; threshold ~0.72, a pair
#: at J = 0.85 is found with p = 0.988, at J = 0.5 with p = 0.05). ``refinedweb``: the paper's
#: 9,000 hashes = 450 bands x 20 rows (threshold ~0.74, sharper: p(0.85) ~ 1, p(0.5) = 0.0004).
PRESETS: dict[str, dict[str, int]] = {
    "default": {"num_perm": 128, "bands": 14, "rows": 8},
    "refinedweb": {"num_perm": 9000, "bands": 450, "rows": 20},
}


def optimal_bands_rows(threshold: float, num_perm: int, false_positive_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising weighted false positive/negative mass around ``threshold``
    (datasketch's LSH parameter search; datasketch is a project dependency)."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, false_positive_weight, 1.0 - false_positive_weight)


def _rensa_version() -> str:
    import rensa

    return f"rensa-{getattr(rensa.RMinHash, 'ALGORITHM_VERSION', '?')}"


class MinHasher:
    """Signatures and band keys for batches of texts. Cheap to build and to pickle."""

    def __init__(self, params: LshParams) -> None:
        self.params = params
        if params.backend == "rensa":
            # R-MinHash batches may fan out over Rayon threads; our parallelism is one process
            # per core, so keep each process to one thread unless the user said otherwise.
            os.environ.setdefault("RAYON_NUM_THREADS", "1")
            import rensa  # noqa: F401 - fail early if missing

        rng = np.random.default_rng([0x4D494E48, params.seed])
        self._a = rng.integers(1, 2**64 - 1, size=params.num_perm, dtype=_U64, endpoint=True)
        self._b = rng.integers(0, 2**64 - 1, size=params.num_perm, dtype=_U64, endpoint=True)
        self._band_seeds = np.array(
            [mix64_int((params.seed << 20) + 0xBA4D + j) for j in range(params.bands)], dtype=_U64
        )

    @property
    def algorithm(self) -> str:
        """What produced the signatures; signatures with different algorithms never mix."""
        p = self.params
        name = _rensa_version() if p.backend == "rensa" else "numpy-mas-1"
        return f"{name}/text-v2/ngram{p.ngram}/perm{p.num_perm}/seed{p.seed}"

    def signatures(self, texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """``(signatures uint32 [n, num_perm], has_signature bool [n])``."""
        texts = list(texts)
        sizes = np.cumsum([len(t) if t else 0 for t in texts])
        if len(texts) > 1 and sizes[-1] > CHUNK_CHARS:
            # ~1 MB of text per chunk keeps the per-character arrays in cache (~1.5x faster)
            cuts = np.searchsorted(sizes, np.arange(CHUNK_CHARS, sizes[-1], CHUNK_CHARS), side="right")
            bounds = [0] + sorted({int(c) for c in cuts if 0 < c < len(texts)}) + [len(texts)]
            parts = [self._signatures(texts[a:b]) for a, b in itertools.pairwise(bounds)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        return self._signatures(texts)

    def _signatures(self, texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        tokens = word_hashes(texts, seed=self.params.seed)
        hashes, offsets = shingle_hashes(tokens, self.params.ngram)
        has = np.diff(offsets) > 0
        if self.params.backend == "rensa":
            sig = self._rensa(hashes, offsets)
        else:
            sig = self._numpy(hashes, offsets)
        sig[~has] = EMPTY
        return sig, has

    def _rensa(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        import array

        import rensa

        n = len(offsets) - 1
        if n == 0:
            return np.empty((0, self.params.num_perm), dtype=np.uint32)
        matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(hashes, offsets, self.params.num_perm, self.params.seed)
        flat = array.array("I")
        for row in matrix.to_rows():  # the matrix exposes no buffer; this is ~2 us per document
            flat.extend(row)
        return np.frombuffer(flat, dtype=np.uint32).reshape(n, self.params.num_perm).copy()

    def _numpy(self, hashes: np.ndarray, offsets: np.ndarray, chunk_elems: int = 1 << 19) -> np.ndarray:
        n = len(offsets) - 1
        P = self.params.num_perm
        out = np.full((n, P), EMPTY, dtype=np.uint32)
        keys = hashes >> _U64(32)  # 32-bit keys: multiply-add-shift is 2-independent on them
        offs = offsets.astype(np.int64)
        a, b = self._a[:, None], self._b[:, None]
        per_chunk = max(1, chunk_elems // P)
        d = 0
        while d < n:
            # a run of documents whose shingles fit one chunk (a long document is its own chunk)
            lo = offs[d]
            e = int(np.searchsorted(offs, lo + per_chunk, side="right")) - 1
            e = min(max(e, d + 1), n)
            hi = offs[e]
            if hi > lo:
                m = a * keys[None, lo:hi]  # [P, shingles]: contiguous rows vectorize well
                m += b
                docs = np.flatnonzero(offs[d:e] < offs[d + 1 : e + 1]) + d
                mins = np.minimum.reduceat(m, offs[docs] - lo, axis=1)
                out[docs] = (mins >> _U64(32)).astype(np.uint32).T
            d = e
        return out

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """``uint64 [n, bands]``: one hash per band of ``rows`` consecutive slots."""
        p = self.params
        n = sig.shape[0]
        banded = sig[:, : p.bands * p.rows].reshape(n, p.bands, p.rows).astype(_U64)
        h = np.broadcast_to(self._band_seeds, (n, p.bands)).copy()
        for j in range(p.rows):
            h ^= banded[:, :, j]
            h *= _U64(0x9E3779B97F4A7C15)
            h ^= h >> _U64(29)
        return mix64(h)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of equal slots: an unbiased estimate of the Jaccard similarity."""
    return float(np.mean(sig_a == sig_b))


def expected_abs_error(jaccard: float, num_perm: int) -> float:
    """E|estimate - J| for k independent slots (binomial), for reference in tests and docs."""
    return math.sqrt(2.0 / math.pi) * math.sqrt(max(jaccard * (1 - jaccard), 0.0) / num_perm)


def estimate_jaccard_rows(sig_a: np.ndarray, sig_b: np.ndarray, chunk: int = 1 << 14) -> np.ndarray:
    """Row-wise :func:`estimate_jaccard` of two ``[n, k]`` signature arrays (float32 ``[n]``),
    in chunks so the boolean temporary stays small."""
    n = sig_a.shape[0]
    out = np.empty(n, dtype=np.float32)
    k = sig_a.shape[1] if sig_a.ndim == 2 else 1
    for lo in range(0, n, chunk):
        eq = sig_a[lo : lo + chunk] == sig_b[lo : lo + chunk]
        out[lo : lo + chunk] = np.count_nonzero(eq, axis=1) / k
    return out
