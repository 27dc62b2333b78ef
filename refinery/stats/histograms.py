"""Score histograms with fixed bin edges, so per-shard histograms merge across shards by addition.

Edges are chosen from the metric column's *name*, never from the data: every shard of every job
computes the same edges for the same column, so merging is adding count arrays.

- ``*score*``, ``*frac*``, ``*ratio*``, ``*prob*``, ``*share*``, ``*_<n>_gram``: [0, 1] (scale
  ``linear``) in 0.02-wide bins, the first one split finer (0, 0.0005, 0.001, 0.002, 0.003, 0.005,
  0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02) so small scores (``quality_score`` around its 0.01
  threshold) are readable
- ``*stop_words``, ``*_small_count``: one bin per integer 0..20 (scale ``int``)
- everything else (word counts, lengths, ...): bin [0, 1) then 20 log-spaced bins per decade
  from 1 to 10^7 (scale ``log``)

Values outside the edges go to ``under`` / ``over``; nulls and NaNs to ``null``, so every row a
stage saw is counted exactly once. Removed rows are also binned per removal reason
(``by_reason``), so a chart can show which rule removed what. On the [0, 1] scale, values within
1e-3 outside it (fastText's probabilities reach 1.00001) are counted in the edge bins.
A stage can override the edges for its columns by defining ``metric_bins() -> {column: [edges]}``
(duck-typed; see docs/stats.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SIDES = ("kept", "removed")

_UNIT = re.compile(r"(score|frac|ratio|prob|share|fraction|percent|_\d+_gram$)", re.IGNORECASE)
_SMALL_INT = re.compile(r"(stop_words|_small_count)$", re.IGNORECASE)
INT_BINS = 21
UNIT_BINS = 50
UNIT_TOLERANCE = 1e-3
LOG_BINS_PER_DECADE = 20
LOG_DECADES = 7


#: the first 0.02-wide bin of the [0, 1] scale, split so scores near 0 stay apart
UNIT_FINE_EDGES = (0.0, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175)


def unit_edges() -> list[float]:
    return list(UNIT_FINE_EDGES) + [round(i / UNIT_BINS, 6) for i in range(1, UNIT_BINS + 1)]


def log_edges() -> list[float]:
    # [0, 1) catches zeros (an empty line count, a 0-word document) without a -inf on a log axis
    steps = LOG_BINS_PER_DECADE * LOG_DECADES
    return [0.0] + [float(f"{10 ** (i / LOG_BINS_PER_DECADE):.6g}") for i in range(steps + 1)]


def int_edges() -> list[float]:
    return [float(i) for i in range(INT_BINS + 1)]


def default_edges(column: str) -> tuple[str, list[float]]:
    """(scale, edges) for a metric column, from its name only (deterministic across shards)."""
    if _SMALL_INT.search(column):
        return "int", int_edges()
    if _UNIT.search(column):
        return "linear", unit_edges()
    return "log", log_edges()


def is_numeric(arrow_type: pa.DataType) -> bool:
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type)


@dataclass
class Histogram:
    """Counts of one metric over fixed edges, split by the stage's decision (kept / removed)."""

    column: str
    scale: str
    edges: list[float]
    counts: dict[str, list[int]] = field(default_factory=dict)
    under: dict[str, int] = field(default_factory=dict)
    over: dict[str, int] = field(default_factory=dict)
    null: dict[str, int] = field(default_factory=dict)
    total: dict[str, float] = field(default_factory=dict)  # sums, for means (exact: see _partials)
    by_reason: dict[str, list[int]] = field(default_factory=dict)  # removed rows' bins per reason
    lo: float | None = None
    hi: float | None = None

    def __post_init__(self) -> None:
        if len(self.edges) < 2 or any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"histogram {self.column}: edges must increase strictly, got {self.edges[:5]}...")
        nbins = len(self.edges) - 1
        for side in SIDES:
            self.counts.setdefault(side, [0] * nbins)
            self.under.setdefault(side, 0)
            self.over.setdefault(side, 0)
            self.null.setdefault(side, 0)
            self.total.setdefault(side, 0.0)
        self._np_edges = np.asarray(self.edges, dtype=np.float64)
        # each side's sum as floats whose exact sum is the total (:func:`_add_exact`), so the sum
        # does not depend on how rows were split into batches (a shard's stats are
        # byte-identical at any reader.batch_size; a float sum added batch by batch was not)
        self._partials: dict[str, list[float]] = {side: [v] if v else [] for side, v in self.total.items()}

    @classmethod
    def for_column(cls, column: str, edges: list[float] | None = None) -> "Histogram":
        if edges is not None:
            return cls(column, "custom", [float(e) for e in edges])
        scale, default = default_edges(column)
        return cls(column, scale, default)

    def add(self, values: pa.Array | pa.ChunkedArray, side: str, reason: str | None = None) -> None:
        """Count ``values`` (any numeric/bool Arrow array) on ``side`` ("kept" or "removed"),
        removed ones also under their ``reason``."""
        if len(values) == 0:
            return
        if pa.types.is_boolean(values.type):
            values = pc.cast(values, pa.int8())
        arr = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
        finite = ~np.isnan(arr)
        self.null[side] += int((~finite).sum())
        arr = arr[finite]
        if arr.size == 0:
            return
        edges = self._np_edges
        if self.scale == "linear":  # float noise just past 0 or 1 belongs in the edge bins
            tol = UNIT_TOLERANCE * (edges[-1] - edges[0])
            arr = np.where((arr > edges[-1]) & (arr <= edges[-1] + tol), edges[-1], arr)
            arr = np.where((arr < edges[0]) & (arr >= edges[0] - tol), edges[0], arr)
        below = arr < edges[0]
        above = arr > edges[-1]
        self.under[side] += int(below.sum())
        self.over[side] += int(above.sum())
        inside = arr[~below & ~above]
        # bins are [a, b) except the last, which is [a, b] (numpy.histogram's convention)
        idx = np.clip(np.searchsorted(edges, inside, side="right") - 1, 0, len(edges) - 2)
        binned = np.bincount(idx, minlength=len(edges) - 1)
        counts = self.counts[side]
        per_reason = self.by_reason.setdefault(reason, [0] * (len(edges) - 1)) if reason is not None else None
        for i in np.flatnonzero(binned):
            counts[i] += int(binned[i])
            if per_reason is not None:
                per_reason[i] += int(binned[i])
        _add_exact(self._partials.setdefault(side, []), arr.tolist())
        self.total[side] = math.fsum(self._partials[side])
        lo, hi = float(arr.min()), float(arr.max())
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)

    def n(self, side: str | None = None) -> int:
        sides = SIDES if side is None else (side,)
        return sum(sum(self.counts[s]) + self.under[s] + self.over[s] + self.null[s] for s in sides)

    def merge(self, other: "Histogram") -> None:
        if other.edges != self.edges:
            raise ValueError(
                f"cannot merge histograms of {self.column}: bin edges differ "
                f"({len(self.edges)} vs {len(other.edges)} edges); edges must be fixed per column"
            )
        for side in SIDES:
            self.counts[side] = [a + b for a, b in zip(self.counts[side], other.counts[side])]
            self.under[side] += other.under[side]
            self.over[side] += other.over[side]
            self.null[side] += other.null[side]
            _add_exact(self._partials.setdefault(side, []), other._partials.get(side, []))
            self.total[side] = math.fsum(self._partials[side])
        for reason, counts in other.by_reason.items():
            mine = self.by_reason.setdefault(reason, [0] * len(counts))
            self.by_reason[reason] = [a + b for a, b in zip(mine, counts)]
        for attr, pick in (("lo", min), ("hi", max)):
            mine, theirs = getattr(self, attr), getattr(other, attr)
            setattr(self, attr, theirs if mine is None else mine if theirs is None else pick(mine, theirs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "scale": self.scale,
            "edges": self.edges,
            "counts": self.counts,
            "by_reason": dict(sorted(self.by_reason.items())),
            "under": self.under,
            "over": self.over,
            "null": self.null,
            "sum": {k: round(v, 6) for k, v in self.total.items()},
            "min": self.lo,
            "max": self.hi,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Histogram":
        return cls(
            column=d["column"], scale=d.get("scale", "custom"), edges=list(d["edges"]),
            counts={k: list(v) for k, v in d["counts"].items()}, under=dict(d["under"]), over=dict(d["over"]),
            null=dict(d["null"]), total=dict(d.get("sum", {})), lo=d.get("min"), hi=d.get("max"),
            by_reason={k: list(v) for k, v in d.get("by_reason", {}).items()},
        )


def _add_exact(partials: list[float], values: list[float]) -> None:
    """Add ``values`` to ``partials`` in place, exactly: ``partials`` becomes non-overlapping floats
    whose exact sum is that of every value added, so ``math.fsum(partials)`` is the correctly
    rounded sum in any order or batch split. Each float is fsum's correctly rounded remainder of
    the last (C speed: Shewchuk's loop in Python cost ~0.7 us per value); a remainder is a multiple
    of the smallest subnormal and so exact once it fits one float, usually after one or two."""
    terms = partials + values
    try:
        rest: list[float] = []
        while (part := math.fsum(terms + [-x for x in rest])) != 0.0:
            if not math.isfinite(part):  # fsum gives NaN for a NaN term: the loop never ended
                raise ValueError(part)
            rest.append(part)
    except (OverflowError, ValueError):  # infinities or NaN, or a sum past the float range
        partials[:] = [sum(terms)]
        return
    partials[:] = rest


class HistogramMapMerge:
    """``{stage: {column: histogram dict}}`` maps (one per shard) added one at a time."""

    def __init__(self) -> None:
        self.merged: dict[str, dict[str, Histogram]] = {}

    def add(self, m: dict[str, dict[str, dict[str, Any]]] | None) -> None:
        for stage, columns in (m or {}).items():
            target = self.merged.setdefault(stage, {})
            for column, d in columns.items():
                h = Histogram.from_dict(d)
                if column in target:
                    target[column].merge(h)
                else:
                    target[column] = h

    def result(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {stage: {c: h.to_dict() for c, h in cols.items()} for stage, cols in self.merged.items()}


def merge_histogram_maps(maps: Iterable[dict[str, dict[str, dict[str, Any]]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Merge ``{stage: {column: histogram dict}}`` maps (one per shard) by addition."""
    merge = HistogramMapMerge()
    for m in maps:
        merge.add(m)
    return merge.result()
