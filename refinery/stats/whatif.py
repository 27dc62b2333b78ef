"""``refinery stats RUN --what-if STAGE.PARAM=VALUE``: what moving one threshold would change, counted
exactly on the run's own Parquet outputs (no rerun).

Every document that reached a stage is in the run's outputs with the stage's metric columns: removed
by it or by a later stage (``removed/``, every pass), or kept to the end (the run's ``kept/``). So
for a threshold on a metric column, moving it from its value as run to another says exactly which
documents the stage kept would now be removed (and how many of those the corpus holds, how many a
later stage removed anyway), and which documents it removed *for that column's reason* would pass
this rule (an upper bound on those it would keep: another of its rules may still remove them). The
documents that would change side are listed nearest the threshold as run first: the marginal
decisions a researcher reads before moving it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from refinery.io import fs
from refinery.io.parquet import read_columns
from refinery.io.readahead import read_ahead
from refinery.rundir import RunDir
from refinery.stats.funnel import load_run_stats
from refinery.stats.svg import fmt_value
from refinery.stats.thresholds import load_run_manifest, reason_metric, run_thresholds, stage_kinds

#: unprefixed threshold params that are lower bounds (documents below are removed); every other
#: unprefixed one (``dup_line_frac``, ``top_n_grams[2]``, toxicity's ``threshold``) is an upper bound
LOWER_BOUNDS: dict[str, frozenset[str]] = {"quality": frozenset({"threshold"})}

#: reasons whose metric is the column but whose rule is another param's: language_id removes a
#: page whose top language is not kept at any score (its metric is that score)
OTHER_RULES: dict[str, frozenset[str]] = {"language_id": frozenset({"language_not_kept"})}

_SPEC = re.compile(r"^([^.=\s]+)\.([^=\s]+)=(.+)$")


class WhatIfError(ValueError):
    """A --what-if that names no threshold of the run (one line, exit 2)."""


def parse_spec(spec: str) -> tuple[str, str, float]:
    """``"gopher_quality.min_words=100"`` -> ``("gopher_quality", "min_words", 100.0)``."""
    found = _SPEC.match(spec.strip())
    if not found:
        raise WhatIfError(f"--what-if {spec!r}: give STAGE.PARAM=VALUE, e.g. gopher_quality.min_words=100")
    try:
        value = float(found.group(3))
    except ValueError:
        raise WhatIfError(f"--what-if {spec!r}: {found.group(3)!r} is not a number") from None
    if math.isnan(value):
        raise WhatIfError(f"--what-if {spec!r}: the value is NaN")
    return found.group(1), found.group(2), value


def is_lower_bound(kind: str | None, param: str) -> bool:
    """Whether documents *below* the param's value are removed (``min_*``, quality's threshold)."""
    bare = param.split("[")[0].split(".")[-1]
    if bare.startswith(("min_", "max_")):
        return bare.startswith("min_")
    return bare in LOWER_BOUNDS.get(kind or "", frozenset())


def counts_for_column(kind: str | None, reason: str, column: str) -> bool:
    """Whether a removal for ``reason`` by a stage of type ``kind`` is this column's rule's: its metric
    is the column and no other param decides it (``OTHER_RULES``). The report's curves count the same."""
    return (reason_metric(kind, reason, [column]) == column
            and reason not in OTHER_RULES.get(kind or "", frozenset()))


def _find_threshold(run_dir: str, stage: str, param: str) -> tuple[str | None, str, float, list[str]]:
    """(stage type, metric column, value as run, the stage order) of ``stage``'s ``param``."""
    stats = load_run_stats(run_dir)
    manifest = load_run_manifest(run_dir)
    order = [s["stage"] for s in stats["stages"]]
    thresholds = run_thresholds(manifest, stats.get("histograms") or {})
    if stage not in order:
        raise WhatIfError(f"--what-if: no stage {stage!r} in {run_dir} (stages: {', '.join(order)})")
    mine = thresholds.get(stage) or {}
    for column, marks in mine.items():
        for mark in marks:
            if mark["param"] in (param, param.split(".")[-1]) or mark["param"].split(".")[-1] == param:
                return stage_kinds(manifest).get(stage), column, float(mark["value"]), order
    known = sorted({m["param"] for marks in mine.values() for m in marks})
    raise WhatIfError(f"--what-if: {stage} has no threshold {param!r} on a metric column"
                      + (f" (its thresholds: {', '.join(known)})" if known else " (it has none)"))


def _rows(directory: str, wanted: list[str]) -> list[dict[str, Any]]:
    uris = fs.list_files_if_any(directory, (".parquet",))
    rows: list[dict[str, Any]] = []
    for uri, table in zip(uris, read_ahead(lambda u: read_columns(u, wanted), uris)):
        shard = fs.basename(uri)[: -len(".parquet")]
        rows.extend({**r, "shard": shard} for r in table.to_pylist())
    return rows


def _value(r: dict[str, Any], column: str) -> float | None:
    v = r.get(column)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def what_if(run_dir: str, stage: str, param: str, value: float, show: int = 20) -> dict[str, Any]:
    """What moving ``stage``'s threshold ``param`` to ``value`` would change (see the module doc)."""
    kind, column, current, order = _find_threshold(run_dir, stage, param)
    lower = is_lower_bound(kind, param)
    fails = (lambda x, t: x < t) if lower else (lambda x, t: x > t)
    after = set(order[order.index(stage) + 1:])
    wanted = ["id", "url", column, "removed_stage", "removed_reason"]
    removed = [r for d in RunDir(run_dir).document_pass_dirs() for r in _rows(d.removed_dir, wanted)]
    passes = RunDir(run_dir).document_pass_dirs()
    kept = _rows(passes[-1].kept_dir, wanted[:3])
    passed = [dict(r, fate="kept") for r in kept] + [dict(r, fate=f"removed by {r['removed_stage']}")
                                                    for r in removed if r["removed_stage"] in after]
    # removed for this column's reason *and* beyond this param as run (min_words, not max_words)
    by_column = [r for r in removed if r["removed_stage"] == stage
                 and counts_for_column(kind, r["removed_reason"], column)
                 and (x := _value(r, column)) is not None and fails(x, current)]
    newly_removed = [r for r in passed if (x := _value(r, column)) is not None and fails(x, value)]
    newly_passing = [r for r in by_column if (x := _value(r, column)) is not None and not fails(x, value)]
    changed = ([dict(r, change="would be removed") for r in newly_removed]
               + [dict(r, change="would pass this rule") for r in newly_passing])
    changed.sort(key=lambda r: (abs(_value(r, column) - current), r["shard"], str(r["id"])))  # marginal first
    return {
        "stage": stage, "param": param, "column": column, "value_as_run": current, "value": value,
        "removes": "below" if lower else "above",
        "reached_stage": len(passed) + sum(1 for r in removed if r["removed_stage"] == stage),
        "removed_for_column": len(by_column),
        "would_remove": len(newly_removed),
        "would_remove_from_corpus": sum(1 for r in newly_removed if r["fate"] == "kept"),
        "corpus_docs": len(kept),
        "would_pass_rule": len(newly_passing),
        "documents": [{"shard": r["shard"], "id": r["id"], "url": r["url"], column: _value(r, column),
                       "change": r["change"], "now": r.get("fate") or f"removed for {r['removed_reason']}"}
                      for r in changed[:show]],
    }


def render_what_if(w: dict[str, Any]) -> list[str]:
    """The lines ``refinery stats --what-if`` prints."""
    col, pct = w["column"], (100.0 * w["would_remove_from_corpus"] / w["corpus_docs"] if w["corpus_docs"] else 0.0)
    lines = [
        f"what if {w['stage']}.{w['param']} = {fmt_value(w['value_as_run'])} -> {fmt_value(w['value'])} "
        f"(column {col}; documents {w['removes']} it are removed), of {w['reached_stage']:,} documents that reached "
        f"{w['stage']}:",
        f"  would be removed:     {w['would_remove']:,} of the documents it kept, {w['would_remove_from_corpus']:,} of them in the "
        f"corpus ({pct:.1f}% of its {w['corpus_docs']:,}), the rest removed by later stages anyway",
        f"  would pass this rule: {w['would_pass_rule']:,} of the {w['removed_for_column']:,} it removed for {col} "
        "(at most: another of its rules, or a later stage, may still remove them)",
    ]
    if w["documents"]:
        lines.append(f"  nearest the threshold as run first ({len(w['documents'])} shown):")
        lines += [f"    {fmt_value(d[col]):>10}  {d['change']:<21} now {d['now']:<28} {d['shard']}  {d['id']}  {d['url'] or ''}"
                  for d in w["documents"]]
    return lines
