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

A shard's stats marker holds its histograms in the compact form (:meth:`Histogram.to_marker_dict`,
``"form": "sparse"``): counts as ``[bin, count, ...]`` pairs of the non-zero bins, and a default
scale's edges named by the scale instead of listed (they are fixed by the column's name). Markers
were ~80% edges and zero counts, and parsing them was most of what closing a pass, `status` and
`stats` cost at thousands of shards. Merged summaries (``stats.json``, ``stats --json``) keep the
dense form (:meth:`Histogram.to_dict`); :meth:`Histogram.from_dict` reads both, so a run whose
markers mix them (old shards, some rerun) merges as one.
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
    return list(_UNIT_EDGES)


def log_edges() -> list[float]:
    return list(_LOG_EDGES)


def int_edges() -> list[float]:
    return list(_INT_EDGES)


# computed once: a compact marker's histograms are rebuilt from these, thousands a pass
_UNIT_EDGES = tuple(list(UNIT_FINE_EDGES) + [round(i / UNIT_BINS, 6) for i in range(1, UNIT_BINS + 1)])
# [0, 1) catches zeros (an empty line count, a 0-word document) without a -inf on a log axis
_LOG_EDGES = tuple([0.0] + [float(f"{10 ** (i / LOG_BINS_PER_DECADE):.6g}")
                            for i in range(LOG_BINS_PER_DECADE * LOG_DECADES + 1)])
_INT_EDGES = tuple(float(i) for i in range(INT_BINS + 1))
#: the default scales' edges, which a compact histogram names instead of listing
SCALE_EDGES: dict[str, tuple[float, ...]] = {"linear": _UNIT_EDGES, "log": _LOG_EDGES, "int": _INT_EDGES}
#: ``form`` of a histogram dict in the compact marker form (the dense form has no ``form``)
SPARSE_FORM = "sparse"


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
        self._edges_key = tuple(self.edges)
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
        self._widen(other.lo, other.hi)

    def _widen(self, lo: float | None, hi: float | None) -> None:
        """The range seen, widened by another's (None: nothing seen there)."""
        for attr, theirs, pick in (("lo", lo, min), ("hi", hi, max)):
            mine = getattr(self, attr)
            setattr(self, attr, theirs if mine is None else mine if theirs is None else pick(mine, theirs))

    def merge_dict(self, d: dict[str, Any]) -> None:
        """:meth:`merge` of a histogram dict (either form), a compact one added bin by bin without
        building its histogram: building one per marker was most of merging a pass's funnel."""
        if d.get("form") != SPARSE_FORM:
            self.merge(Histogram.from_dict(d))
            return
        nbins = len(self.edges) - 1
        if "edges" in d:
            same_edges = [float(e) for e in d["edges"]] == self.edges
        else:  # its scale's default edges: compared as tuples, not copied per marker
            same_edges = SCALE_EDGES.get(d.get("scale")) == self._edges_key
        if not same_edges or d.get("bins") != nbins:
            self.merge(Histogram.from_dict(d))  # refuses it, naming the column
            return
        for side in SIDES:
            _add_pairs(self.counts[side], d["counts"].get(side, []))
            for key, mine in (("under", self.under), ("over", self.over), ("null", self.null)):
                mine[side] += d.get(key, {}).get(side, 0)
            theirs = d.get("sum", {}).get(side, 0.0)
            _add_exact(self._partials.setdefault(side, []), [theirs] if theirs else [])
            self.total[side] = math.fsum(self._partials[side])
        for reason, pairs in d.get("by_reason", {}).items():
            _add_pairs(self.by_reason.setdefault(reason, [0] * nbins), pairs)
        self._widen(d.get("min"), d.get("max"))

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

    def to_marker_dict(self) -> dict[str, Any]:
        """The compact form a shard's stats marker holds: ``counts`` and ``by_reason`` as flat
        ``[bin, count, bin, count, ...]`` lists of the non-zero bins, ``bins`` their number, and
        ``edges`` only when they are not the default ones of ``scale`` (a stage's
        ``metric_bins``); ``by_reason``, ``under``, ``over`` and ``null`` only when not empty or
        zero. :meth:`from_dict` gives back the same histogram."""
        d: dict[str, Any] = {"form": SPARSE_FORM, "column": self.column, "scale": self.scale,
                             "bins": len(self.edges) - 1}
        if tuple(self.edges) != SCALE_EDGES.get(self.scale):
            d["edges"] = self.edges
        d["counts"] = {side: _sparse(c) for side, c in self.counts.items()}
        if self.by_reason:
            d["by_reason"] = {r: _sparse(c) for r, c in sorted(self.by_reason.items())}
        for key, counts in (("under", self.under), ("over", self.over), ("null", self.null)):
            if any(counts.values()):  # left out when zero on both sides, as most are
                d[key] = counts
        return d | {"sum": {k: round(v, 6) for k, v in self.total.items()}, "min": self.lo, "max": self.hi}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Histogram":
        """A histogram from its dense dict (:meth:`to_dict`: merged summaries, markers written
        before session 44) or its compact one (:meth:`to_marker_dict`: markers since)."""
        if d.get("form") == SPARSE_FORM:
            edges = _marker_edges(d)
            nbins = len(edges) - 1
            counts = {k: _dense(v, nbins) for k, v in d["counts"].items()}
            by_reason = {k: _dense(v, nbins) for k, v in d.get("by_reason", {}).items()}
            d = {"under": {}, "over": {}, "null": {}} | d  # left out when zero (filled in by __post_init__)
        elif "form" in d:
            raise ValueError(f"histogram {d.get('column')}: unknown form {d['form']!r} (written by a newer refinery?)")
        else:
            edges = list(d["edges"])
            counts = {k: list(v) for k, v in d["counts"].items()}
            by_reason = {k: list(v) for k, v in d.get("by_reason", {}).items()}
        return cls(
            column=d["column"], scale=d.get("scale", "custom"), edges=edges, counts=counts,
            under=dict(d["under"]), over=dict(d["over"]), null=dict(d["null"]), total=dict(d.get("sum", {})),
            lo=d.get("min"), hi=d.get("max"), by_reason=by_reason,
        )


def _sparse(counts: list[int]) -> list[int]:
    """``[bin, count, ...]`` of the non-zero bins of ``counts``, in bin order."""
    return [x for i, n in enumerate(counts) if n for x in (i, n)]


def _dense(pairs: list[int], nbins: int) -> list[int]:
    """The ``nbins`` counts of a :func:`_sparse` list."""
    counts = [0] * nbins
    _add_pairs(counts, pairs)
    return counts


def _add_pairs(counts: list[int], pairs: list[int]) -> None:
    """Add a :func:`_sparse` list to ``counts`` in place."""
    for i in range(0, len(pairs), 2):
        counts[pairs[i]] += pairs[i + 1]


def _marker_edges(d: dict[str, Any]) -> list[float]:
    """A compact histogram's edges: listed, or its scale's defaults, whose number of bins must be
    the one recorded (edges changed by a later version would otherwise mis-bin silently)."""
    if "edges" in d:
        edges = [float(e) for e in d["edges"]]
    elif d.get("scale") in SCALE_EDGES:
        edges = list(SCALE_EDGES[d["scale"]])
    else:
        raise ValueError(f"histogram {d.get('column')}: no edges for scale {d.get('scale')!r}")
    if len(edges) - 1 != d["bins"]:
        raise ValueError(f"histogram {d.get('column')}: {d['bins']} bins recorded, but scale "
                         f"{d.get('scale')!r} has {len(edges) - 1} here; edges must be fixed per column")
    return edges


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
                if column in target:
                    target[column].merge_dict(d)
                else:
                    target[column] = Histogram.from_dict(d)

    def result(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {stage: {c: h.to_dict() for c, h in cols.items()} for stage, cols in self.merged.items()}


def merge_histogram_maps(maps: Iterable[dict[str, dict[str, dict[str, Any]]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Merge ``{stage: {column: histogram dict}}`` maps (one per shard) by addition."""
    merge = HistogramMapMerge()
    for m in maps:
        merge.add(m)
    return merge.result()
