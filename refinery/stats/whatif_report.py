"""The report's "Thresholds" section: for each numeric threshold of a run, what moving it would remove
(a curve over a range of values around the one it ran with) and the documents nearest it on both
sides -- the kept ones that barely passed beside the removed ones that barely failed.

The same reading as ``refinery stats --what-if`` (:mod:`refinery.stats.whatif`): every document that
reached a stage is in a pass's ``removed/`` (removed by the stage or a later one) or in the run's
``kept/``, with the stage's metric columns. The outputs are read once for every threshold: the ids,
URLs, removal columns and the thresholds' metric columns (never the text), as numpy arrays; the text
of the few documents shown is then read from their own shards only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refinery.io import fs
from refinery.io.parquet import read_columns
from refinery.io.readahead import read_ahead
from refinery.rundir import RunDir
from refinery.stats.thresholds import stage_kinds
from refinery.stats.whatif import counts_for_column, is_lower_bound

#: values the curve is computed at (the value as run is added)
CURVE_POINTS = 25
#: a log-scale column's curve spans [value / SPAN, value * SPAN]; others [0, 2 * value]
LOG_SPAN = 4.0
SNIPPET_CHARS = 300
_ID_COLUMNS = ["id", "url"]
_REMOVAL_COLUMNS = ["removed_stage", "removed_reason"]


@dataclass
class Outputs:
    """The metric columns (float64, NaN for no value) of every removed and finally kept document,
    with where each row is (``source``: an index into ``uris``)."""

    uris: list[str]
    removed: pa.Table  # id, url, removed_stage, removed_reason, metric columns..., source
    kept: pa.Table  # id, url, metric columns..., source
    rank: dict[str, np.ndarray]  # per side, each row's place in (shard, id) order: ties broken the same way

    def values(self, side: str, column: str) -> np.ndarray:
        table = self.removed if side == "removed" else self.kept
        return pc.fill_null(table.column(column).cast(pa.float64()), math.nan).to_numpy(zero_copy_only=False)


def _read_dir(directory: str, columns: list[str], uris: list[str]) -> pa.Table:
    """The ``columns`` of every shard in ``directory`` as one table (metric columns as float64),
    each row tagged with its shard's index in ``uris`` (appended to)."""
    found = fs.list_files_if_any(directory, (".parquet",))
    parts = []
    for uri, table in zip(found, read_ahead(lambda u: read_columns(u, columns), found)):
        parts.append(table.append_column("source", pa.array(np.full(table.num_rows, len(uris), np.int32))))
        uris.append(uri)
    table = pa.concat_tables(parts, promote_options="permissive") if parts else None
    # one cast per column for the run, not per shard (a shard lacking a column has it as nulls)
    text_like = set(_ID_COLUMNS + _REMOVAL_COLUMNS)
    arrays = [(table.column(c) if table is not None else pa.chunked_array([], pa.null()))
              .cast(pa.string() if c in text_like else pa.float64()) for c in columns]
    source = table.column("source") if table is not None else pa.chunked_array([], pa.int32())
    return pa.table(arrays + [source], names=columns + ["source"])


def load_outputs(run_dir: str, columns: list[str]) -> Outputs:
    """Every pass's ``removed/`` and the run's ``kept/``, with ``columns`` (metric columns)."""
    uris: list[str] = []
    passes = RunDir(run_dir).document_pass_dirs()
    removed_parts = [_read_dir(p.removed_dir, _ID_COLUMNS + _REMOVAL_COLUMNS + columns, uris) for p in passes]
    kept = _read_dir(passes[-1].kept_dir, _ID_COLUMNS + columns, uris)
    removed = pa.concat_tables(removed_parts)
    names = pa.array([fs.basename(u) for u in uris], pa.string())
    keys = pa.table({"shard": pa.concat_arrays([names.take(t.column("source").combine_chunks()) for t in (removed, kept)]),
                     "id": pa.concat_arrays([t.column("id").combine_chunks() for t in (removed, kept)])})
    order = pc.sort_indices(keys, sort_keys=[("shard", "ascending"), ("id", "ascending")]).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return Outputs(uris, removed, kept, {"removed": rank[:removed.num_rows], "kept": rank[removed.num_rows:]})


def _fails(x: np.ndarray, t: float, lower: bool) -> np.ndarray:
    return x < t if lower else x > t


def _count_failing(sorted_x: np.ndarray, t: float, lower: bool) -> int:
    """How many of ``sorted_x`` the rule removes at ``t`` (below it, or above it)."""
    if lower:
        return int(np.searchsorted(sorted_x, t, side="left"))
    return int(len(sorted_x) - np.searchsorted(sorted_x, t, side="right"))


def curve_values(current: float, scale: str, observed: np.ndarray, points: int = CURVE_POINTS) -> list[float]:
    """The threshold values a curve is drawn at: around ``current`` (geometric for a log-scale column,
    from 0 to twice it otherwise; [0, 1] scores stay in [0, 1]), whole numbers for a count column of
    whole numbers (word counts), the value as run among them."""
    if scale == "log" and current > 0:
        grid = np.geomspace(current / LOG_SPAN, current * LOG_SPAN, points)
    else:
        top = 2 * current if current > 0 else (float(np.max(observed)) if len(observed) else 1.0) or 1.0
        if scale == "linear" and current <= 1:
            top = min(top, 1.0)  # a score or fraction: nothing lies beyond 1
        grid = np.linspace(min(0.0, current), top, points)
    if scale in ("log", "int") and len(observed) and np.all(observed == np.floor(observed)):
        grid = np.round(grid)  # word counts: whole numbers (not a fraction that happens to be 0 everywhere)
    return sorted({float(v) for v in grid} | {float(current)})


def threshold_view(out: Outputs, order: list[str], kind: str | None, stage: str, column: str, param: str,
                   current: float, scale: str, near: int) -> dict[str, Any]:
    """One threshold's curve and nearest documents (the rows shown, without their text yet)."""
    lower = is_lower_bound(kind, param)
    after = order[order.index(stage) + 1:]
    stage_col = out.removed.column("removed_stage")
    reasons = out.removed.column("removed_reason")
    x_removed = out.values("removed", column)
    x_kept = out.values("kept", column)
    later = pc.is_in(stage_col, value_set=pa.array(after, pa.string())).to_numpy(zero_copy_only=False)
    mine = pc.equal(stage_col, stage).fill_null(False).to_numpy(zero_copy_only=False)
    rule = set(r for r in pc.unique(pc.filter(reasons, pc.equal(stage_col, stage).fill_null(False))).to_pylist()
               if r is not None and counts_for_column(kind, r, column))
    for_rule = mine & pc.is_in(reasons, value_set=pa.array(sorted(rule), pa.string())).to_numpy(zero_copy_only=False)
    # removed for this column's reason and beyond the value as run (min_words, not max_words)
    by_rule = np.flatnonzero(for_rule & ~np.isnan(x_removed) & _fails(x_removed, current, lower))
    passed_removed = np.flatnonzero(later & ~np.isnan(x_removed))
    passed_kept = np.flatnonzero(~np.isnan(x_kept))
    passed_x = np.sort(np.concatenate([x_kept[passed_kept], x_removed[passed_removed]]))
    kept_x = np.sort(x_kept[passed_kept])
    # the kept documents shown are those that passed this rule (a stage may keep some beyond it)
    inside_kept = passed_kept[~_fails(x_kept[passed_kept], current, lower)]
    inside_removed = passed_removed[~_fails(x_removed[passed_removed], current, lower)]
    rule_x = np.sort(x_removed[by_rule])
    observed = np.concatenate([passed_x, rule_x])
    curve = [{"x": t, "removed": _count_failing(passed_x, t, lower) + _count_failing(rule_x, t, lower),
              "corpus": _count_failing(kept_x, t, lower)} for t in curve_values(current, scale, observed)]
    return {
        "stage": stage, "column": column, "param": param, "value": current, "removes": "below" if lower else "above",
        "scale": scale, "reached": int(len(x_kept) + np.count_nonzero(later) + np.count_nonzero(mine)),
        "corpus_docs": int(out.kept.num_rows), "removed_for_rule": int(len(by_rule)), "curve": curve,
        # kept by the stage: kept to the end or removed by a later stage; removed: for this rule
        "kept_near": _nearest_rows(out, current, [("kept", inside_kept, x_kept), ("removed", inside_removed, x_removed)],
                                   near),
        "removed_near": _nearest_rows(out, current, [("removed", by_rule, x_removed)], near),
    }


def _nearest_rows(out: Outputs, current: float, groups: list[tuple[str, np.ndarray, np.ndarray]],
                  near: int) -> list[dict[str, Any]]:
    """The ``near`` rows of ``groups`` ((side, row indices, that side's values)) nearest ``current``,
    ties broken by (shard, id) so that the same documents are shown every time."""
    total = sum(len(rows) for _, rows, _ in groups)
    if not total or near <= 0:
        return []
    starts = np.cumsum([0] + [len(rows) for _, rows, _ in groups])
    distance = np.abs(np.concatenate([x[rows] for _, rows, x in groups]) - current)
    rank = np.concatenate([out.rank[side][rows] for side, rows, _ in groups])
    k = min(near, total)
    # the k nearest and their ties (thousands of documents may share a fraction of 0), then in order
    candidates = np.flatnonzero(distance <= np.partition(distance, k - 1)[k - 1])
    picked = candidates[np.lexsort((rank[candidates], distance[candidates]))[:k]]
    rows = []
    for p in picked:
        g = int(np.searchsorted(starts, p, side="right")) - 1
        rows.append(_row(out, groups[g][0], int(groups[g][1][p - starts[g]])))
    return rows


def _row(out: Outputs, side: str, i: int) -> dict[str, Any]:
    table = out.removed if side == "removed" else out.kept
    r = {c: table.column(c)[i].as_py() for c in table.column_names}
    r["fate"] = "kept" if side == "kept" else f"removed by {r['removed_stage']} ({r['removed_reason']})"
    r["uri"] = out.uris[r.pop("source")]
    r["shard"] = fs.basename(r["uri"])[: -len(".parquet")]
    return r


def _with_text(rows: list[dict[str, Any]]) -> None:
    """Give each row shown its text's first characters and length, reading each shard once."""
    by_uri: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_uri.setdefault(r["uri"], []).append(r)
    uris = sorted(by_uri)
    for uri, table in zip(uris, read_ahead(lambda u: read_columns(u, ["id", "text"]), uris)):
        texts = dict(zip(table.column("id").cast(pa.string()).to_pylist(), table.column("text").to_pylist()))
        for r in by_uri[uri]:
            text = texts.get(r["id"]) or ""
            r["chars"], r["head"] = len(text), text[:SNIPPET_CHARS]


def threshold_views(run_dir: str, stats: dict[str, Any], manifest: dict[str, Any],
                    thresholds: dict[str, dict[str, list[dict[str, Any]]]], near: int = 3) -> list[dict[str, Any]]:
    """Every threshold drawn on a histogram of the run, in stage order: its what-if curve and the
    ``near`` documents nearest it on each side (:func:`threshold_view`), with their text's head."""
    order = [s["stage"] for s in stats["stages"]]
    hists = stats.get("histograms") or {}
    marks = [(stage, column, m) for stage in order for column, ms in (thresholds.get(stage) or {}).items()
             for m in ms if column in (hists.get(stage) or {})]
    if not marks:
        return []
    out = load_outputs(run_dir, sorted({column for _, column, _ in marks}))
    kinds = stage_kinds(manifest)
    views = [threshold_view(out, order, kinds.get(stage), stage, column, m["param"], float(m["value"]),
                            str(hists[stage][column].get("scale")), near) for stage, column, m in marks]
    _with_text([r for v in views for r in v["kept_near"] + v["removed_near"]])
    return views
