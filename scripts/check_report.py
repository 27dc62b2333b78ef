"""Recompute a run's statistics and report figures from its Parquet outputs and say where they differ.

    python scripts/check_report.py RUN_DIR [--report RUN_DIR/report.html]

An audit tool (session 45, h151): ``stats.json`` and ``report.html`` are built from the shard
markers the runner writes; this script rebuilds the figures from the data itself -- every
``removed/*.parquet`` (stage, reason, metric, metric columns), the run's final ``kept/`` and the
``samples/`` -- and compares:

- per stage and reason, documents removed; docs read / kept / removed; each stage's docs in / out
  (the chain: what earlier stages left);
- the report's funnel table (every ``data-field`` cell: counts and both percentages) and summary cards;
- every histogram, bin by bin, kept side and per reason, binned again from the Parquet metric
  columns of the documents that reached the stage (kept = removed later or kept at the end);
- every removed sample: in ``removed/`` for its stage and reason, with the same metric, and
  ``population`` = that shard's removals for the reason; every sample the report shows likewise,
  and its "k of N" header;
- the "Thresholds" section (session 46, h155): every point of each what-if curve, and the documents
  shown nearest each threshold (on their side of it, for its rule, the nearest ones); a section
  estimated from a sample of shards (h158) is checked on the shards it names, scaled the same way
  (each row weighs its stratum's run total over the rows read of it), to within 1 per point;
- thresholds drawn: each line's value is the stage's parameter (effective params of ``run.json``),
  and how many documents a stage *kept* sit beyond one of its lines (the rule's direction from
  ``refinery.stats.whatif.is_lower_bound``) (a line drawn in the
  wrong place shows up as kept documents on the removed side);
- languages (docs per language reaching language ID, kept) and top-domain totals, and the report's
  "Top removed domains" section: each (stage, reason) shown with the documents removed for it;
- what the readers repaired (``reader_notes``, session 50, h219): the run's and the report's figures
  are the sums of the shard markers', and the data holds at least as many ids of the forms the
  repairs give (``<shard>/<row>`` for ``ids_derived``, ``...#dup<n>`` for ``ids_deduplicated``;
  an input may hold such ids itself, hence "at least"). ``<column>_utf8_replaced`` is checked
  against the markers only: later stages may cut the replaced bytes from the text.

A row of ``removed/`` names the stage that removed it; a run of inputs of several formats counts
its readers' removals under one funnel row (``jsonl_reader+warc_reader``,
``refinery.stats.funnel.funnel_stage``), and so does this check (session 48, h183).

Exit 0 when everything matches, 1 with one line per mismatch otherwise. Local run directories only.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import sys
from collections import Counter, defaultdict
from html import unescape
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from refinery.stats.funnel import counted_outputs, funnel_rows, funnel_stage, load_run_stats  # noqa: E402
from refinery.stats.histograms import Histogram  # noqa: E402
from refinery.stats.thresholds import effective_params, load_run_manifest  # noqa: E402
from refinery.stats.whatif import is_lower_bound, threshold_rule  # noqa: E402


class Audit:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.checked = 0

    def eq(self, what: str, found: Any, expected: Any) -> None:
        self.checked += 1
        if found != expected:
            self.problems.append(f"{what}: report/stats say {found!r}, the data says {expected!r}")


#: the bulk of a document's row, which no check reads: left unread (read, then dropped, they made
#: the check's peak memory the run's text: session 48)
_BULKY = ("text", "html")


def _read(paths: list[str], columns: list[str] | None = None, skip: tuple[str, ...] = ()) -> pa.Table | None:
    tables = []
    for p in sorted(paths):
        names = pq.read_schema(p).names
        cols = [c for c in (names if columns is None else columns) if c in names and c not in skip]
        tables.append(pq.read_table(p, columns=cols).add_column(0, "_shard", pa.array(
            [os.path.basename(p)[: -len(".parquet")]] * pq.read_metadata(p).num_rows, pa.string())))
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def _counted(run_dir: str) -> tuple[list[Any], Any]:
    """The passes, and shards (None: all), whose outputs the run's funnel counts: every pass of a
    finished run; of one under way, those finished so far (``refinery.stats.funnel.counted_outputs``:
    the plan's last kept/ is absent until the run ends; session 48, h180)."""
    return counted_outputs(run_dir, load_run_stats(run_dir))


def _files(directory: str, shards: Any) -> list[str]:
    found = glob.glob(os.path.join(directory, "*.parquet"))
    return found if shards is None else [f for f in found if os.path.basename(f)[: -len(".parquet")] in shards]


def load_outputs(run_dir: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(removed rows of every pass in pass order, final kept rows, sample rows)."""
    passes, shards = _counted(run_dir)
    removed, samples = [], []
    for p in passes:
        t = _read(_files(p.removed_dir, shards), skip=_BULKY)
        if t is not None:
            removed += t.to_pylist()
        s = _read(_files(p.samples_dir, shards))
        if s is not None:
            samples += s.to_pylist()
    kept_t = _read(_files(passes[-1].kept_dir, shards), skip=_BULKY)
    kept = [] if kept_t is None else kept_t.to_pylist()
    return removed, kept, samples


def stored_types(run_dir: str) -> dict[str, pa.DataType]:
    """Each column's type as the run's removed/ and kept/ shards hold it: a float32 metric is compared
    with a threshold as float32, as the stages compare it (``refinery.stats.whatif.Rule``)."""
    passes, shards = _counted(run_dir)
    paths = [f for p in passes for f in _files(p.removed_dir, shards)]
    paths += _files(passes[-1].kept_dir, shards)
    return {f.name: f.type for path in paths for f in pq.read_schema(path) if not pa.types.is_null(f.type)}


def per_row(stats: dict[str, Any], removed: list[dict[str, Any]]) -> Counter:
    """Documents removed per (funnel row, reason): a row of ``removed/`` names the reader that removed
    it (``warc_reader``), the funnel of a run of mixed inputs their merged row (``jsonl_reader+warc_reader``)."""
    return Counter((funnel_stage(stats, r["removed_stage"]), r["removed_reason"]) for r in removed)


def check_funnel(a: Audit, stats: dict[str, Any], removed: list[dict[str, Any]], kept: list[dict[str, Any]]) -> None:
    by_reason = per_row(stats, removed)
    a.eq("docs_kept", stats["docs_kept"], len(kept))
    a.eq("docs_removed", stats["docs_removed"], len(removed))
    a.eq("docs_read", stats["docs_read"], len(kept) + len(removed))
    left = len(kept) + len(removed)
    for s in stats["stages"]:
        a.eq(f"{s['stage']} docs_in", s["docs_in"], left)
        data = {reason: n for (stage, reason), n in by_reason.items() if stage == s["stage"]}
        a.eq(f"{s['stage']} removed per reason", dict(sorted(s["removed"].items())), dict(sorted(data.items())))
        left -= sum(data.values())
        a.eq(f"{s['stage']} docs_out", s["docs_out"], left)
    stages = {s["stage"] for s in stats["stages"]}
    for (stage, reason), n in by_reason.items():
        if stage not in stages:
            a.eq(f"removed by {stage}/{reason}: a funnel row", None, n)


def check_histograms(a: Audit, stats: dict[str, Any], removed: list[dict[str, Any]], kept: list[dict[str, Any]]) -> None:
    order = [s["stage"] for s in stats["stages"]]
    rank = {s: i for i, s in enumerate(order)}
    for stage, columns in (stats.get("histograms") or {}).items():
        i = rank[stage]
        later = [r for r in removed if rank.get(r["removed_stage"], -1) > i] + kept
        mine = [r for r in removed if r["removed_stage"] == stage]
        for column, h in columns.items():
            ours = Histogram.for_column(column, h["edges"] if h.get("scale") == "custom" else None)
            ours.add(pa.array([r.get(column) for r in later], pa.float64()), "kept")
            for reason in sorted({r["removed_reason"] for r in mine}):
                ours.add(pa.array([r.get(column) for r in mine if r["removed_reason"] == reason], pa.float64()),
                         "removed", reason)
            d = ours.to_dict()
            what = f"histogram {stage}.{column}"
            for key in ("counts", "under", "over", "null"):
                a.eq(f"{what} {key}", h[key], d[key])
            a.eq(f"{what} by_reason", {k: v for k, v in (h.get("by_reason") or {}).items() if any(v)},
                 {k: v for k, v in (d.get("by_reason") or {}).items() if any(v)})
            reached = sum(sum(h["counts"][s]) + h["under"][s] + h["over"][s] + h["null"][s] for s in ("kept", "removed"))
            a.eq(f"{what} total = documents that reached {stage}", reached, len(later) + len(mine))


def _same(x: Any, y: Any) -> bool:
    if x is None or y is None:
        return x is None and y is None
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return abs(float(x) - float(y)) <= 1e-6 * max(1.0, abs(float(y)))


def check_samples(a: Audit, samples: list[dict[str, Any]], removed: list[dict[str, Any]]) -> None:
    index = {(r["_shard"], r["id"], r["removed_stage"]): r for r in removed}
    population = Counter((r["_shard"], r["removed_stage"], r["removed_reason"]) for r in removed)
    for s in samples:
        a.checked += 1
        r = index.get((s["shard"], s["id"], s["stage"]))
        if r is None or r["removed_reason"] != s["reason"]:
            a.problems.append(f"sample {s['shard']}/{s['id']} ({s['stage']}/{s['reason']}) is not removed for that "
                              f"reason in removed/ (found {r and r['removed_reason']})")
            continue
        if not _same(s["metric"], r["removed_metric"]):
            a.problems.append(f"sample {s['id']}: metric {s['metric']} but removed_metric {r['removed_metric']}")
        a.eq(f"sample {s['id']} population", s["population"], population[(s["shard"], s["stage"], s["reason"])])


_ROW = re.compile(r'<tr class="(?:stage|reason)" data-stage="([^"]*)" data-reason="([^"]*)">(.*?)</tr>', re.S)
_CELL = re.compile(r'data-field="([a-z_]+)">(.*?)</td>', re.S)


def _number(cell: str) -> float | None:
    text = re.sub(r"<[^>]+>", "", cell).strip().replace(",", "").rstrip("%")
    return None if text in ("", "–", "-") else float(text)


def check_report_html(a: Audit, html: str, stats: dict[str, Any], removed: list[dict[str, Any]],
                      kept: list[dict[str, Any]]) -> None:
    read = len(kept) + len(removed)
    rows = {(unescape(s), unescape(r)): dict(_CELL.findall(body)) for s, r, body in _ROW.findall(html.split('id="scores"')[0])}
    by_reason = per_row(stats, removed)
    left = read
    for s in stats["stages"]:
        stage_removed = sum(n for (st, _), n in by_reason.items() if st == s["stage"])
        cells = rows.get((s["stage"], ""))
        if cells is None:
            a.problems.append(f"funnel table: no row for stage {s['stage']}")
            continue
        a.eq(f"funnel {s['stage']} docs_in", _number(cells["docs_in"]), left)
        a.eq(f"funnel {s['stage']} removed", _number(cells["removed"]), stage_removed)
        rate = _number(cells["removed_pct_of_stage"])
        a.eq(f"funnel {s['stage']} % of stage input", rate, round(100 * stage_removed / left, 1) if left else None)
        left -= stage_removed
        a.eq(f"funnel {s['stage']} docs_out", _number(cells["docs_out"]), left)
        a.eq(f"funnel {s['stage']} % of input kept", _number(cells["kept_pct_of_input"]),
             round(100 * left / read, 1) if read else None)
        for (st, reason), n in by_reason.items():
            if st == s["stage"]:
                rc = rows.get((st, reason))
                a.eq(f"funnel {st}/{reason} removed", rc and _number(rc["removed"]), n)
    cards = dict(re.findall(r'data-card="([^"]+)"><div class="k">[^<]*</div><div class="v">([^<]*)</div>', html))
    a.eq("card documents read", _number(cards.get("documents read", "")), read)
    a.eq("card documents kept", _number(cards.get("documents kept", "")), len(kept))
    a.eq("card documents removed", _number(cards.get("documents removed", "")), len(removed))
    # the samples shown: each is removed for its stage and reason; "k of N" names all of them
    section = html.split('<section id="samples"', 1)[-1].split("</section>", 1)[0]
    removed_ids = {(funnel_stage(stats, r["removed_stage"]), r["removed_reason"], r["id"]) for r in removed}
    for stage, reason, body in re.findall(r'<details [^>]*data-stage="([^"]*)" data-reason="([^"]*)">(.*?)</details>',
                                          section, re.S):
        stage, reason = unescape(stage), unescape(reason)
        shown = re.search(r'<span class="count">(\d+) of ([\d,]+) ', body)
        a.eq(f"samples {stage}/{reason}: N", shown and int(shown.group(2).replace(",", "")), by_reason[(stage, reason)])
        ids = [unescape(i) for i in re.findall(r'<div class="note mono">([^<]*)</div>', body)]
        a.eq(f"samples {stage}/{reason}: k", shown and int(shown.group(1)), len(ids))
        for i in ids:
            a.checked += 1
            if (stage, reason, i) not in removed_ids:
                a.problems.append(f"sample shown under {stage}/{reason}: {i} is not removed for it")


def check_domains_html(a: Audit, html: str, stats: dict[str, Any], removed: list[dict[str, Any]]) -> None:
    """The "Top removed domains" section: every (stage, reason) of ``top_domains`` under its funnel
    row, with the documents the data has removed for it (a mixed-input run's reader went unshown: h183)."""
    section = html.split('<section id="domains"', 1)[-1].split("</section>", 1)[0] if 'id="domains"' in html else ""
    shown = {}
    for stage, body in re.findall(r'<details [^>]*data-stage="([^"]*)"><summary>.*?</summary>(.*?)</details>', section, re.S):
        for reason, n in re.findall(r'<h4>(.*?) <span class="note">([\d,]+) documents?</span></h4>', body):
            shown[(unescape(stage), unescape(reason))] = int(n.replace(",", ""))
    by_reason = per_row(stats, removed)
    listed = {(funnel_stage(stats, stage), reason) for stage, reasons in (stats.get("top_domains") or {}).items()
              for reason in reasons}
    for row, reason in sorted(listed):
        a.eq(f"top domains shown {row}/{reason}: documents", shown.get((row, reason)), by_reason[(row, reason)])


def check_thresholds(a: Audit, html: str, manifest: dict[str, Any], removed: list[dict[str, Any]],
                     kept: list[dict[str, Any]], stats: dict[str, Any]) -> list[str]:
    """Each drawn line's value is one of its stage's parameters; returns notes on documents the
    stage kept beyond a line (below a minimum, above a maximum) (not always wrong: a rule may apply only above a size)."""
    params_of: dict[str, dict[str, Any]] = {}
    for p in manifest.get("passes") or []:
        for s in (p.get("params") or {}).get("stages") or []:
            params_of[s.get("name") or s["type"]] = effective_params(s["type"], s.get("params") or {})
    order = [s["stage"] for s in stats["stages"]]
    kinds = {s["stage"]: s.get("kind") for s in stats["stages"]}
    notes = []
    for stage, column, body in re.findall(r'<figure data-stage="([^"]*)" data-column="([^"]*)">(.*?)</figure>', html, re.S):
        for value, label in re.findall(r'<line class="threshold" data-value="([^"]+)".*?<text[^>]*>([^<]*)</text>', body, re.S):
            param, _, _ = unescape(label).partition(" = ")
            a.checked += 1
            flat = json.dumps(params_of.get(stage, {}))
            if stage in params_of and not re.search(rf"(?<![\d.]){re.escape(value)}(?![\d])", flat.replace(".0,", ",")) \
                    and float(value) not in _numbers(params_of[stage]):
                a.problems.append(f"threshold {stage}.{column} {param} = {value}: not among {stage}'s parameters")
            if stage not in order:
                continue
            i = order.index(stage)
            later = [r for r in removed if r["removed_stage"] in order[i + 1:]] + kept
            v = float(value)
            # the rule's direction as the code has it: guessed from where the stage's removals lie, a
            # stage that removed nothing for the column (quality_score on the demo run) read as a maximum
            is_min = is_lower_bound(kinds.get(stage), param)
            beyond = [r for r in later if r.get(column) is not None and not math.isnan(r[column])
                      and (r[column] < v if is_min else r[column] > v)]
            if beyond:
                notes.append(f"{stage}.{column}: {len(beyond)} of {len(later)} documents it kept are beyond "
                             f"{param} = {value}")
    return notes


def _is_minimum(param: str, column: str, value: float, removed_here: list[dict[str, Any]]) -> bool:
    """min_* / max_* by name; else (``threshold``, ``dup_line_frac``) by where the stage's removed
    documents mostly lie."""
    bare = param.split("[")[0].split(".")[-1]
    if bare.startswith(("min_", "max_")):
        return bare.startswith("min_")
    values = [r[column] for r in removed_here if r.get(column) is not None and not math.isnan(r[column])]
    return sum(x < value for x in values) > len(values) / 2


def _numbers(obj: Any) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return []


_WHATIF = re.compile(r'<details [^>]*class="whatif" data-stage="([^"]*)" data-column="([^"]*)" data-param="([^"]*)" '
                     r'data-value="([^"]*)" data-removes="(below|above)">(.*?)</details>', re.S)
_POINT = re.compile(r'<circle class="whatif-pt" data-x="([^"]+)" data-removed="(\d+)" data-corpus="(\d+)"')
_SAMPLE = re.compile(r'<p class="note whatif-sample" data-shards="([^"]*)" data-of="(\d+)"(?: data-row-cut="(\d+)")?>')
_NEAR = re.compile(r'<div class="near" data-id="([^"]*)" data-shard="([^"]*)" data-value="([^"]*)">')
#: documents the report shows on each side of a threshold (its NEAR_SHOWN, with --samples >= 3)
NEAR_SHOWN = 3


def _x(r: dict[str, Any], column: str) -> float | None:
    v = r.get(column)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def check_whatif(a: Audit, html: str, stats: dict[str, Any], removed: list[dict[str, Any]],
                 kept: list[dict[str, Any]], stored: dict[str, pa.DataType] | None = None) -> None:
    """The "Thresholds" section: every point of each what-if curve (documents the rule removes at that
    value, and of them the corpus's) counted again from the rows, and the documents shown beside it: on
    their side of the threshold, for the right reason, and the nearest ones. A removal is the rule's
    when its reason's declared metric is the column (``reason_metric``: the one thing taken from the
    code), its ``removed_metric`` is the row's value of the column and lies beyond the value as run;
    language_id's ``language_not_kept`` is another rule's. A value is compared as the rule compares
    it (``threshold_rule``: float32 for a float32 column, ``stored`` (:func:`stored_types`), and
    toxicity's threshold removes at the value too)."""
    from refinery.stats.thresholds import reason_metric
    from refinery.stats.whatif import OTHER_RULES

    order = [s["stage"] for s in stats["stages"]]
    kinds = {s["stage"]: s.get("kind") for s in stats["stages"]}
    sampled = _SAMPLE.search(html)
    weight = lambda r: 1.0  # noqa: E731
    if sampled:  # the section read these shards only: so does the check, with the same scaling
        cut = None if sampled.group(3) is None else int(sampled.group(3))
        removed, kept, weight = _sampled(unescape(sampled.group(1)).split(), removed, kept, stats, cut)
    slack = 1 if sampled else 0  # weighted sums rounded: summed in another order, they may round apart
    for stage, column, param, value, removes, body in _WHATIF.findall(html):
        stage, column, param = unescape(stage), unescape(column), unescape(param)
        t0, lower = float(value), removes == "below"
        what = f"what-if {stage}.{param}"
        fails = threshold_rule(kinds.get(stage), param, (stored or {}).get(column)).fails
        mine = [r for r in removed if r["removed_stage"] == stage]
        later = set(order[order.index(stage) + 1:]) if stage in order else set()
        passed = kept + [r for r in removed if r["removed_stage"] in later]
        # the rule's removals: its reason's declared metric is the column (a top_4_gram removal whose value
        # equals its dup_5_gram is top_4_gram's), and the row's value triggered it, beyond the value as run
        rule = [r for r in mine if reason_metric(kinds.get(stage), r["removed_reason"], [column]) == column
                and r["removed_reason"] not in OTHER_RULES.get(kinds.get(stage) or "", frozenset())
                and (x := _x(r, column)) is not None and _same(r.get("removed_metric"), x) and fails(x, t0)]
        # removals this column triggered: where they lie says which side the rule removes
        triggered = [r for r in mine if reason_metric(kinds.get(stage), r["removed_reason"], [column]) == column
                     and (x := _x(r, column)) is not None and _same(r.get("removed_metric"), x)]
        bare = param.split("[")[0].split(".")[-1]
        if bare.startswith(("min_", "max_")) or triggered:
            a.eq(f"{what} direction", lower, _is_minimum(param, column, t0, triggered))
        for x_text, n_removed, n_corpus in _POINT.findall(body):
            t = float(x_text)
            for label, shown, rows in (("removed", n_removed, passed + rule), ("of them in the corpus", n_corpus, kept)):
                counted = round(sum(weight(r) for r in rows if (x := _x(r, column)) is not None and fails(x, t)))
                a.eq(f"{what} at {t:g}: {label}", int(shown), int(shown) if abs(int(shown) - counted) <= slack else counted)
        a.eq(f"{what}: a point at the value as run", t0 in [float(x) for x, _, _ in _POINT.findall(body)], True)
        for side, candidates in (("removed", rule), ("kept", [r for r in passed if (x := _x(r, column)) is not None
                                                              and not fails(x, t0)])):
            part = body.split(f'<div data-side="{side}">', 1)[-1].split('<div data-side="', 1)[0]
            shown = [(unescape(i), unescape(sh), float(v)) for i, sh, v in _NEAR.findall(part)]
            where = {(r["_shard"], str(r["id"])): _x(r, column) for r in candidates}
            for i, shard, v in shown:
                a.checked += 1
                if (shard, i) not in where or not _same(where[(shard, i)], v):
                    a.problems.append(f"{what}: {side} document {shard}/{i} ({column} = {v}) is not one the stage "
                                      f"{'removed for this rule' if side == 'removed' else 'kept'} with that value")
            farthest = max((abs(v - t0) for _, _, v in shown), default=-1.0)
            nearer = sum(1 for x in where.values() if abs(x - t0) < farthest)
            a.eq(f"{what}: {side} shown are the nearest", nearer <= len(shown) - 1 or not shown, True)
            a.eq(f"{what}: {side} shown", len(shown), min(NEAR_SHOWN, len(where)))


def _sampled(shards: list[str], removed: list[dict[str, Any]], kept: list[dict[str, Any]],
             stats: dict[str, Any], cut: int | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    """The rows of the shards a sampled section read (``cut``: those whose hash of shard and id is
    at most it, as the section picked them), and each row's weight: the run's documents of its
    stratum (removed by its stage for its reason, or kept) over the rows read of it."""
    from refinery.stats.whatif_report import row_hashes

    names = {n[: -len(".parquet")] if n.endswith(".parquet") else n for n in shards}

    def read(r: dict[str, Any]) -> bool:
        return r["_shard"] in names and (cut is None or int(row_hashes(r["_shard"] + ".parquet", [r["id"]])[0]) <= cut)

    removed = [r for r in removed if read(r)]
    kept = [r for r in kept if read(r)]
    read = Counter((r["removed_stage"], r["removed_reason"]) for r in removed)
    totals = {(s["stage"], reason): n for s in stats["stages"] for reason, n in (s.get("removed") or {}).items()}
    per = {k: totals.get(k, n) / n for k, n in read.items()}
    kept_w = stats["docs_kept"] / len(kept) if kept else 1.0
    return removed, kept, lambda r: per[(r["removed_stage"], r["removed_reason"])] if r.get("removed_stage") else kept_w


def check_languages_domains(a: Audit, stats: dict[str, Any], removed: list[dict[str, Any]], kept: list[dict[str, Any]]) -> None:
    langs = (stats.get("languages") or {}).get("by_language") or {}
    column = (stats.get("languages") or {}).get("column") or "language"
    if langs:
        reached = [r for r in removed if r.get(column) is not None] + kept
        docs_in = Counter((r.get(column) or "unknown") for r in reached)
        docs_kept = Counter((r.get(column) or "unknown") for r in kept)
        a.eq("languages docs_in", {k: v["docs_in"] for k, v in sorted(langs.items())}, dict(sorted(docs_in.items())))
        a.eq("languages docs_kept", {k: v["docs_kept"] for k, v in sorted(langs.items()) if v["docs_kept"]},
             dict(sorted(docs_kept.items())))
    by_reason = Counter((r["removed_stage"], r["removed_reason"]) for r in removed)
    for stage, reasons in (stats.get("top_domains") or {}).items():
        for reason, d in reasons.items():
            a.eq(f"top domains {stage}/{reason} total", d["total"], by_reason[(stage, reason)])
            a.eq(f"top domains {stage}/{reason} top+other", sum(d["top"].values()) + d.get("other", 0), d["total"])


#: the ids :class:`refinery.io.ids.UniqueIds` gives: a derived one (``<shard>/<row>``, maybe then
#: suffixed as repeated) and a repeated one (``<id>#dup<n>``)
_DERIVED_ID = r"{shard}/\d+(?:#dup\d+)*"
_DEDUPLICATED_ID = re.compile(r".*#dup\d+")


def check_reader_notes(a: Audit, run_dir: str, stats: dict[str, Any], removed: list[dict[str, Any]],
                       kept: list[dict[str, Any]], html: str | None) -> None:
    """``reader_notes`` of the run (and its report) against its markers, and the ids against them."""
    passes, shards = _counted(run_dir)
    markers: Counter = Counter()
    for p in passes:
        for path in glob.glob(os.path.join(p.stats_dir, "*.json")):
            if shards is None or os.path.basename(path)[: -len(".json")] in shards:
                with open(path, encoding="utf-8") as f:
                    markers.update(json.load(f).get("reader_notes") or {})
    notes = {k: n for k, n in (stats.get("reader_notes") or {}).items() if n}
    a.eq("reader_notes (sum of the shard markers')", notes, {k: n for k, n in sorted(markers.items()) if n})
    rows = removed + kept
    forms = {"ids_derived": sum(1 for r in rows if r.get("id") is not None and
                                re.fullmatch(_DERIVED_ID.format(shard=re.escape(r["_shard"])), r["id"])),
             "ids_deduplicated": sum(1 for r in rows if r.get("id") is not None and _DEDUPLICATED_ID.fullmatch(r["id"]))}
    for note, found in forms.items():
        a.checked += 1
        if notes.get(note, 0) > found:
            a.problems.append(f"reader_notes.{note}: stats say {notes[note]}, the data holds {found} ids of that form")
    if html is None:
        return
    shown = {unescape(n): int(v.replace(",", "")) for n, v in re.findall(
        r'<tr data-stage="[^"]*" data-note="([^"]*)">.*?data-field="count">([\d,]+)</td>', html.split('id="scores"')[0])}
    a.eq("report reader notes", shown, notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--report", help="the report to check (default RUN_DIR/report.html, if there)")
    args = ap.parse_args(argv)
    try:
        stats = load_run_stats(args.run_dir)
    except FileNotFoundError as exc:  # not a run directory: one line, exit 2, as the CLI says it (h162)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.report and not os.path.exists(args.report):  # named and missing: not a silent pass of the data alone
        print(f"error: {args.report}: no such report", file=sys.stderr)
        return 2
    manifest = load_run_manifest(args.run_dir)
    removed, kept, samples = load_outputs(args.run_dir)
    a = Audit()
    check_funnel(a, stats, removed, kept)
    check_histograms(a, stats, removed, kept)
    check_samples(a, samples, removed)
    check_languages_domains(a, stats, removed, kept)
    notes: list[str] = []
    report = args.report or os.path.join(args.run_dir, "report.html")
    html = open(report, encoding="utf-8").read() if os.path.exists(report) else None
    check_reader_notes(a, args.run_dir, stats, removed, kept, html)
    if html is not None:
        check_report_html(a, html, stats, removed, kept)
        check_domains_html(a, html, stats, removed)
        notes = check_thresholds(a, html, manifest, removed, kept, stats)
        check_whatif(a, html, stats, removed, kept, stored_types(args.run_dir))
        if sampled := _SAMPLE.search(html):
            notes.append(f"the Thresholds section is estimated from {len(sampled.group(1).split()):,} of "
                         f"{int(sampled.group(2)):,} shards{' (a hash sample of their documents)' if sampled.group(3) else ''}: "
                         "checked on those documents, with the same scaling")
    for n in notes:
        print(f"note: {n}")
    for p in a.problems:
        print(f"MISMATCH {p}")
    print(f"{a.checked:,} figures checked against {len(kept) + len(removed):,} documents "
          f"({len(kept):,} kept, {len(removed):,} removed, {len(samples):,} samples): {len(a.problems)} mismatches")
    return 1 if a.problems else 0


if __name__ == "__main__":
    sys.exit(main())
