"""The report's "Thresholds" section: for each numeric threshold of a run, what moving it would remove
(a curve over a range of values around the one it ran with) and the documents nearest it on both
sides -- the kept ones that barely passed beside the removed ones that barely failed.

The same reading as ``refinery stats --what-if`` (:mod:`refinery.stats.whatif`): every document that
reached a stage is in a pass's ``removed/`` (removed by the stage or a later one) or in the run's
``kept/``, with the stage's metric columns. The outputs are read once for every threshold: the ids,
URLs, removal columns and the thresholds' metric columns (never the text), as numpy arrays; the text
of the few documents shown is then read from their own shards only.

At scale (h158) the section reads a sample: above ``ROW_BUDGET`` documents, every k-th shard name of
the run (the same names in every pass: a pass keeps its input's shard names, so a document is
followed through the passes), and each row counts for the documents of its stratum (its removing
stage and reason, or the corpus) in the whole run, from ``stats.json``'s totals. The curves are then
estimates, the nearest documents those of the sample, and the section says so. Shards of unequal
size made the budget an average only (a run's one big shard among small ones read whole: 1.7x and
more), so when the shards chosen hold more rows than the budget, the ``budget`` documents of them
with the smallest hash of (shard, id) are read (session 48): a bound, uniform over the documents of
each stratum, the same documents every time and in every pass (``ROW_SEED``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from refinery.io import fs
from refinery.io.parquet import read_columns
from refinery.io.readahead import read_ahead
from refinery.rundir import PassFiles
from refinery.stats.funnel import counted_outputs
from refinery.stats.thresholds import stage_kinds
from refinery.stats.whatif import Rule, also_in_rerun, counts_for_column, threshold_rule

#: values the curve is computed at (the value as run is added)
CURVE_POINTS = 25
#: a log-scale column's curve spans [value / SPAN, value * SPAN]; others [0, 2 * value]
LOG_SPAN = 4.0
SNIPPET_CHARS = 300
#: documents (rows of every removed/ and the final kept/) read at most, about: above it a sample of
#: shards is read. ~550 MB per million rows (28 metric columns; 2M rows: 1.3 GB peak, 200k: 340 MB)
ROW_BUDGET = 1_000_000
#: the seed of the hash of (shard, id) that picks the rows read when the chosen shards hold more than
#: the budget (scripts/check_report.py picks them with :func:`row_hashes` too)
ROW_SEED = 0
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
    weight: dict[str, np.ndarray]  # per side, the documents of the run each row stands for (1.0 unsampled)
    sample: dict[str, Any] | None = None  # {"shards": names read, "of": shard names in the run} when sampled
    stored: dict[str, pa.DataType] | None = None  # each metric column's type in the shards (float32: compared so)

    def values(self, side: str, column: str) -> np.ndarray:
        table = self.removed if side == "removed" else self.kept
        return pc.fill_null(table.column(column).cast(pa.float64()), math.nan).to_numpy(zero_copy_only=False)


def _read_dir(found: list[str], columns: list[str], uris: list[str],
              stored: dict[str, pa.DataType] | None = None, cut: int | None = None) -> pa.Table:
    """The ``columns`` of the shards ``found`` as one table (metric columns as float64), each row
    tagged with its shard's index in ``uris`` (appended to); ``stored`` gets each column's type as
    the shards hold it; ``cut``: only the rows whose :func:`row_hashes` are at most it."""
    parts = []
    for uri, table in zip(found, read_ahead(lambda u: read_columns(u, columns), found)):
        if cut is not None:  # filtered shard by shard: never more than the budget held
            table = table.filter(pa.array(row_hashes(fs.basename(uri), table.column("id").to_pylist()) <= np.uint64(cut)))
        parts.append(table.append_column("source", pa.array(np.full(table.num_rows, len(uris), np.int32))))
        uris.append(uri)
        if stored is not None:
            stored.update((f.name, f.type) for f in table.schema if not pa.types.is_null(f.type))
    table = pa.concat_tables(parts, promote_options="permissive") if parts else None
    # one cast per column for the run, not per shard (a shard lacking a column has it as nulls)
    text_like = set(_ID_COLUMNS + _REMOVAL_COLUMNS)
    arrays = [(table.column(c) if table is not None else pa.chunked_array([], pa.null()))
              .cast(pa.string() if c in text_like else pa.float64()) for c in columns]
    source = table.column("source") if table is not None else pa.chunked_array([], pa.int32())
    return pa.table(arrays + [source], names=columns + ["source"])


def row_hashes(shard: str, ids: Sequence[Any], seed: int = ROW_SEED) -> np.ndarray:
    """A uint64 hash per document of ``shard`` (a shard file's name, ``part-00001.parquet``), the
    same in every pass: the rows of the budget are those with the smallest."""
    prefix = f"{shard}\x1f"
    return np.fromiter((xxhash.xxh64_intdigest((prefix + str(i)).encode(), seed) for i in ids), np.uint64, len(ids))


def _row_cut(found: list[str], budget: int) -> tuple[int | None, int]:
    """(the largest hash read, or None when every row fits the ``budget``; the rows in ``found``):
    the smallest ``budget`` hashes of their documents, a uniform sample of them without replacement."""
    hashes = [row_hashes(fs.basename(uri), table.column("id").to_pylist())
              for uri, table in zip(found, read_ahead(lambda u: read_columns(u, ["id"]), found))]
    every = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    if len(every) <= budget:
        return None, len(every)
    return int(np.partition(every, budget - 1)[budget - 1]), len(every)


def sampled_names(names: list[str], docs: int, budget: int) -> list[str]:
    """The shard names read: all of them when the run's ``docs`` fit the ``budget``, else every k-th
    of the sorted names (spread over the run, the same every time), about ``budget`` documents."""
    step = math.ceil(docs / budget) if budget > 0 else len(names)
    if step <= 1:
        return names
    return names[step // 2::step] or names[:1]


def _stratum_weights(removed: pa.Table, kept_rows: int, stats: dict[str, Any], scale: float) -> dict[str, np.ndarray]:
    """Per row, the documents of the run it stands for: its stratum's total in ``stats`` (removed by
    its stage for its reason; the corpus) over the rows read of it (``scale``, the shard fraction, for
    a stratum the stats do not count)."""
    totals = {(s["stage"], r): n for s in stats.get("stages") or [] for r, n in (s.get("removed") or {}).items()}
    key = pc.binary_join_element_wise(pc.fill_null(removed.column("removed_stage"), ""),
                                      pc.fill_null(removed.column("removed_reason"), ""), "\x1f")
    encoded = key.combine_chunks().dictionary_encode() if removed.num_rows else None
    removed_w = np.ones(removed.num_rows)
    if encoded is not None:
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        read = np.bincount(codes, minlength=len(encoded.dictionary))
        per = np.array([totals.get(tuple(k.split("\x1f", 1)), n * scale) / n if n else scale
                        for k, n in zip(encoded.dictionary.to_pylist(), read)])
        removed_w = per[codes]
    kept_total = stats.get("docs_kept")
    kept_w = (kept_total / kept_rows) if kept_rows and kept_total is not None else scale
    return {"removed": removed_w, "kept": np.full(kept_rows, float(kept_w))}


def _of(uris: list[str], shards: set[str] | None) -> list[str]:
    """The shard files of ``uris`` that are of ``shards`` (all of them when None)."""
    return uris if shards is None else [u for u in uris if fs.basename(u).rsplit(".", 1)[0] in shards]


def load_outputs(run_dir: str, columns: list[str], stats: dict[str, Any] | None = None,
                 budget: int | None = None, files: PassFiles | None = None) -> Outputs:
    """Every pass's ``removed/`` and the run's ``kept/``, with ``columns`` (metric columns); a sample
    of their shards when the run (``stats``' documents) is over ``budget`` (``ROW_BUDGET``).
    ``files``: the command's listings (the report's), so no directory is listed twice."""
    uris: list[str] = []
    files = files or PassFiles()
    # a run under way: the passes and shards its funnel counts so far (the plan's last kept/ is absent)
    passes, shards = counted_outputs(run_dir, stats or {}, files)
    removed_dirs = [_of(files.files(p.removed_dir, (".parquet",)), shards) for p in passes]
    kept_dir = _of(files.files(passes[-1].kept_dir, (".parquet",)), shards)
    names = sorted({fs.basename(u) for found in removed_dirs + [kept_dir] for u in found})
    docs = int((stats or {}).get("docs_kept") or 0) + int((stats or {}).get("docs_removed") or 0)
    chosen = sampled_names(names, docs, ROW_BUDGET if budget is None else budget)
    sample = None if len(chosen) == len(names) else {"shards": chosen, "of": len(names),
                                                      "step": math.ceil(docs / (ROW_BUDGET if budget is None else budget))}
    cut = None
    if sample:
        wanted = set(chosen)
        removed_dirs = [[u for u in found if fs.basename(u) in wanted] for found in removed_dirs]
        kept_dir = [u for u in kept_dir if fs.basename(u) in wanted]
        cut, rows = _row_cut([u for found in removed_dirs + [kept_dir] for u in found], ROW_BUDGET if budget is None else budget)
        sample.update({"rows_in_shards": rows, "row_cut": cut})
    stored: dict[str, pa.DataType] = {}
    removed_parts = [_read_dir(found, _ID_COLUMNS + _REMOVAL_COLUMNS + columns, uris, stored, cut) for found in removed_dirs]
    kept = _read_dir(kept_dir, _ID_COLUMNS + columns, uris, stored, cut)
    if sample:
        sample["rows"] = sum(t.num_rows for t in removed_parts) + kept.num_rows
    removed = pa.concat_tables(removed_parts)
    shard_names = pa.array([fs.basename(u) for u in uris], pa.string())
    keys = pa.table({"shard": pa.concat_arrays([shard_names.take(t.column("source").combine_chunks()) for t in (removed, kept)]),
                     "id": pa.concat_arrays([t.column("id").combine_chunks() for t in (removed, kept)])})
    order = pc.sort_indices(keys, sort_keys=[("shard", "ascending"), ("id", "ascending")]).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    weight = ({"removed": np.ones(removed.num_rows), "kept": np.ones(kept.num_rows)} if sample is None
              else _stratum_weights(removed, kept.num_rows, stats or {}, len(names) / len(chosen)))
    return Outputs(uris, removed, kept, {"removed": rank[:removed.num_rows], "kept": rank[removed.num_rows:]},
                   weight, sample, stored)


class _Weighted:
    """Values sorted with their rows' weights summed, to count (weigh) those beyond a value."""

    def __init__(self, x: np.ndarray, w: np.ndarray) -> None:
        order = np.argsort(x, kind="stable")
        self.x = x[order]
        self.cum = np.concatenate([[0.0], np.cumsum(w[order])])

    def failing(self, t: float, rule: Rule) -> float:
        """The documents the rule removes at ``t`` (below it, or above it; at it too when it says so)."""
        limit = rule.limit(t)
        if rule.lower:
            return float(self.cum[np.searchsorted(self.x, limit, side="right" if rule.at_value else "left")])
        return float(self.cum[-1] - self.cum[np.searchsorted(self.x, limit, side="left" if rule.at_value else "right")])


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
    rule_of = threshold_rule(kind, param, (out.stored or {}).get(column))
    lower, fails = rule_of.lower, rule_of.fails
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
    by_rule = np.flatnonzero(for_rule & ~np.isnan(x_removed) & fails(x_removed, current))
    passed_removed = np.flatnonzero(later & ~np.isnan(x_removed))
    passed_kept = np.flatnonzero(~np.isnan(x_kept))
    w_removed, w_kept = out.weight["removed"], out.weight["kept"]
    passed = _Weighted(np.concatenate([x_kept[passed_kept], x_removed[passed_removed]]),
                       np.concatenate([w_kept[passed_kept], w_removed[passed_removed]]))
    kept = _Weighted(x_kept[passed_kept], w_kept[passed_kept])
    by_rule_w = _Weighted(x_removed[by_rule], w_removed[by_rule])
    # the kept documents shown are those that passed this rule (a stage may keep some beyond it)
    inside_kept = passed_kept[~fails(x_kept[passed_kept], current)]
    inside_removed = passed_removed[~fails(x_removed[passed_removed], current)]
    observed = np.concatenate([passed.x, by_rule_w.x])
    # weighted sums, rounded: whole counts unsampled, estimates of the run's counts sampled
    curve = [{"x": t, "removed": round(passed.failing(t, rule_of) + by_rule_w.failing(t, rule_of)),
              "corpus": round(kept.failing(t, rule_of))} for t in curve_values(current, scale, observed)]
    reached = float(w_kept.sum() + w_removed[later].sum() + w_removed[mine].sum())
    return {
        "stage": stage, "column": column, "param": param, "value": current, "removes": "below" if lower else "above",
        "scale": scale, "reached": round(reached), "corpus_docs": round(float(w_kept.sum())),
        "removed_for_rule": round(by_rule_w.cum[-1]), "curve": curve, "sampled": out.sample is not None,
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


def _with_text(rows: list[dict[str, Any]], sampled: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
    """Give each row shown its text's first characters and length, reading each shard once. A row
    without text (removed before extraction: ``removed/`` keeps no HTML) shows its removed sample's
    snippet of the page's HTML when ``sampled`` (``{(shard, id): sample row}``) holds it, else
    ``no_text``: why there is none and where the page is (it read "(no text)", h188)."""
    by_uri: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_uri.setdefault(r["uri"], []).append(r)
    uris = sorted(by_uri)
    columns = ["id", "text", "warc_record_id", "source"]
    for uri, table in zip(uris, read_ahead(lambda u: read_columns(u, columns), uris)):
        found = {i: row for i, row in zip(table.column("id").cast(pa.string()).to_pylist(),
                                         table.select(columns[1:]).to_pylist())}
        for r in by_uri[uri]:
            row = found.get(r["id"]) or {}
            text = row.get("text") or ""
            r["chars"], r["head"] = len(text), text[:SNIPPET_CHARS]
            if text:
                continue
            sample = (sampled or {}).get((r["shard"], r["id"]))
            if sample and sample.get("snippet"):
                r["head"], r["head_from"] = sample["snippet"][:SNIPPET_CHARS], sample["snippet_source"]
                continue
            r["no_text"] = _why_no_text(r, row)


def _why_no_text(r: dict[str, Any], row: dict[str, Any]) -> str:
    """Why a document shown has no text, and where its page is: "removed by prescreen
    (prescreen_language) before any text was extracted; removed/ keeps no HTML and no removed sample
    holds this page: WARC record <urn:uuid:...> of <input>"."""
    where = ""
    if row.get("warc_record_id"):
        where = f": WARC record {row['warc_record_id']}" + (f" of {row['source']}" if row.get("source") else "")
    elif row.get("source"):
        where = f": in {row['source']}"
    if r.get("removed_stage"):
        why = (f"removed by {r['removed_stage']} ({r['removed_reason']}) with no text (before extraction, or "
               "extraction found none); removed/ keeps no HTML and no removed sample holds this page")
    else:
        why = "kept with an empty text"
    return f"no text: {why}{where}"


def threshold_views(run_dir: str, stats: dict[str, Any], manifest: dict[str, Any],
                    thresholds: dict[str, dict[str, list[dict[str, Any]]]], near: int = 3,
                    sample: dict[str, Any] | None = None, files: PassFiles | None = None,
                    sampled: dict[tuple[str, str], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every threshold drawn on a histogram of the run, in stage order: its what-if curve and the
    ``near`` documents nearest it on each side (:func:`threshold_view`), with their text's head
    (a document without text: its removed sample's, from ``sampled`` by (shard, id), if any).
    ``sample`` (a dict, filled in): the shards read when the run was sampled (see the module doc)."""
    order = [s["stage"] for s in stats["stages"]]
    hists = stats.get("histograms") or {}
    marks = [(stage, column, m) for stage in order for column, ms in (thresholds.get(stage) or {}).items()
             for m in ms if column in (hists.get(stage) or {})]
    if not marks:
        return []
    out = load_outputs(run_dir, sorted({column for _, column, _ in marks}), stats, files=files)
    kinds = stage_kinds(manifest)
    views = [threshold_view(out, order, kinds.get(stage), stage, column, m["param"], float(m["value"]),
                            str(hists[stage][column].get("scale")), near) for stage, column, m in marks]
    for view in views:  # the other floors a rerun at another min_words moves (session 47, h175)
        view["also_in_rerun"] = also_in_rerun(manifest, view["stage"], view["param"], view["value"])
    _with_text([r for v in views for r in v["kept_near"] + v["removed_near"]], sampled)
    if sample is not None and out.sample:
        sample.update(out.sample)
    return views
