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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from refinery.dedup.config import pass_name
from refinery.io import fs
from refinery.io.parquet import read_columns
from refinery.io.readahead import read_ahead
from refinery.stats.funnel import counted_outputs, load_run_stats, pass_not_counted_yet
from refinery.stats.svg import fmt_value
from refinery.stats.thresholds import load_run_manifest, reason_metric, run_thresholds, stage_kinds

#: unprefixed threshold params that are lower bounds (documents below are removed); every other
#: unprefixed one (``dup_line_frac``, ``top_n_grams[2]``, toxicity's ``threshold``) is an upper bound
LOWER_BOUNDS: dict[str, frozenset[str]] = {"quality": frozenset({"threshold"})}

#: params whose rule removes a document *at* the value too (toxicity: ``score >= threshold``); every
#: other rule removes strictly beyond it (``words < min_words``, ``frac > dup_line_frac``)
REMOVED_AT_VALUE: dict[str, frozenset[str]] = {"toxicity": frozenset({"threshold"})}

#: stage types that may pass a document without computing a metric its rules test (gopher_repetition
#: stops at its deciding rule, and past ``dup_n_grams[5]`` when no longer n-gram can fail): such a
#: null is "not computed". Elsewhere a null means the rule does not apply (line_corrections' floor
#: judges only the documents it edited; prescreen does not screen short pages)
UNCOMPUTED_WHEN_NULL: frozenset[str] = frozenset({"gopher_repetition"})

#: stage types whose metric itself moves with the threshold: the lines pass's keeper walk gives each
#: repeated line to its first holder that stays, so a stricter value that removes a line's keeper
#: hands the line to its next holder, whose cut fraction (and words left) fall: a rerun with
#: ``max_removed_word_frac`` 0.2 -> 0 removed 19 of the 20 counted (benchmarks/whatif_vs_rerun.py, h176)
KEEPERS_MOVE: frozenset[str] = frozenset({"lines_dedup"})

#: reasons whose metric is the column but whose rule is another param's: language_id removes a
#: page whose top language is not kept at any score (its metric is that score)
OTHER_RULES: dict[str, frozenset[str]] = {"language_id": frozenset({"language_not_kept"})}

#: where a recipe's config writes gopher_quality's ``min_words`` when the recipe does not set them
#: (``refinery.config.PipelineConfig._fill_min_words_after_cuts``): a stage type after it, and a dedup
#: method's (section, param). A rerun at another ``min_words`` moves them too (session 47, h175)
MIN_WORDS_STAGES: dict[str, str] = {"line_corrections": "min_words_after_cuts"}
MIN_WORDS_PASSES: dict[str, tuple[str, str]] = {"lines": ("lines", "min_words_after_cuts"),
                                                "substring": ("substring", "min_words")}

_SPEC = re.compile(r"^([^.=\s]+)\.([^=\s]+)=(.+)$")

#: how a user writes "the rule off" (the config's null: line_corrections' and the lines pass's
#: ``min_words_after_cuts``, toxicity's ``threshold``); answered when a rerun takes null there
OFF_SPELLINGS: frozenset[str] = frozenset({"null", "none", "off", "~"})


class WhatIfError(ValueError):
    """A --what-if that names no threshold of the run (one line, exit 2)."""


def parse_spec(spec: str) -> tuple[str, str, float | None]:
    """``"gopher_quality.min_words=100"`` -> ``("gopher_quality", "min_words", 100.0)``; a value of
    ``null`` / ``none`` / ``off`` -> None (the rule off: whether a rerun takes it is checked apart)."""
    found = _SPEC.match(spec.strip())
    if not found:
        raise WhatIfError(f"--what-if {spec!r}: give STAGE.PARAM=VALUE, e.g. gopher_quality.min_words=100")
    if found.group(3).strip().lower() in OFF_SPELLINGS:
        return found.group(1), found.group(2), None
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


@dataclass(frozen=True)
class Rule:
    """How a threshold's rule compares a document's metric with a value, as the stage does.

    ``float32``: the metric column is stored as float32 (Gopher's fractions, language scores), so a
    value is compared as float32 too. A document at exactly 0.1 of its lines repeated is stored as
    0.10000000149, which is above 0.1 read as a float64: a rerun with ``dup_line_frac: 0.1`` keeps it
    (0.1 > 0.1 is false), and the what-if counted it removed (found by rerunning, session 47). A
    value computed within float32's rounding of the threshold but not at it is misjudged instead:
    ~1e-8 relative, against the exact ties that fractions of small counts hit."""

    lower: bool  # documents below the value are removed (min_*), else those above it
    at_value: bool = False  # the value itself is removed too (REMOVED_AT_VALUE)
    float32: bool = False

    def limit(self, value: float) -> float:
        """The value as the stored column compares with it."""
        return float(np.float32(value)) if self.float32 else float(value)

    def fails(self, x: Any, value: float | None) -> Any:
        """Whether metric ``x`` (a number or a numpy array) is removed at ``value`` (None: the rule
        off, nothing is)."""
        if value is None:
            return np.zeros(np.shape(x), dtype=bool) if np.ndim(x) else False
        t = self.limit(value)
        if self.lower:
            return x <= t if self.at_value else x < t
        return x >= t if self.at_value else x > t


def threshold_rule(kind: str | None, param: str, column_type: pa.DataType | None = None) -> Rule:
    """The :class:`Rule` of ``kind``'s ``param`` on a metric column of ``column_type``."""
    bare = param.split("[")[0].split(".")[-1]
    return Rule(lower=is_lower_bound(kind, param), at_value=bare in REMOVED_AT_VALUE.get(kind or "", frozenset()),
                float32=column_type is not None and pa.types.is_float32(column_type))


def counts_for_column(kind: str | None, reason: str, column: str) -> bool:
    """Whether a removal for ``reason`` by a stage of type ``kind`` is this column's rule's: its metric
    is the column and no other param decides it (``OTHER_RULES``). The report's curves count the same."""
    return (reason_metric(kind, reason, [column]) == column
            and reason not in OTHER_RULES.get(kind or "", frozenset()))


def find_threshold(run_dir: str, stage: str, param: str,
                    stats: dict[str, Any]) -> tuple[str | None, str, float, list[str]]:
    """(stage type, metric column, value as run, the stage order) of ``stage``'s ``param`` in the run
    ``stats`` (:func:`load_run_stats`) sum up."""
    manifest = load_run_manifest(run_dir)
    order = [s["stage"] for s in stats["stages"]]
    thresholds = run_thresholds(manifest, stats.get("histograms") or {})
    if stage not in order:
        if waiting := pass_not_counted_yet(stats, stage):
            raise WhatIfError(f"--what-if: {run_dir}: {waiting}")
        raise WhatIfError(f"--what-if: no stage {stage!r} in {run_dir} (stages: {', '.join(order)})")
    mine = thresholds.get(stage) or {}
    for column, marks in mine.items():
        for mark in marks:
            if mark["param"] in (param, param.split(".")[-1]) or mark["param"].split(".")[-1] == param:
                return stage_kinds(manifest).get(stage), column, float(mark["value"]), order
    known = sorted({m["param"] for marks in mine.values() for m in marks})
    raise WhatIfError(f"--what-if: {stage} has no threshold {param!r} on a metric column"
                      + (f" (its thresholds: {', '.join(known)})" if known else " (it has none)"))


def also_in_rerun(manifest: dict[str, Any], stage: str, param: str, value_as_run: float) -> list[str]:
    """The other params a rerun with another value of ``stage``'s ``param`` would move with it:
    for gopher_quality's ``min_words``, the word floors after it that hold its value as run
    (:data:`MIN_WORDS_STAGES`, :data:`MIN_WORDS_PASSES`; filled from it, or set to the same value:
    run.json cannot tell), as ``"line_corrections.min_words_after_cuts"``. One the recipe set to
    another value stays, so it is not named."""
    config = manifest.get("config") or {}
    stages = config.get("stages") or []
    names = [s.get("name") or s.get("type") for s in stages]
    if param.split(".")[-1] != "min_words" or stage not in names or stages[names.index(stage)].get("type") != "gopher_quality":
        return []

    def holds(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value) == value_as_run

    places = [f"{name}.{own}" for name, s in zip(names[names.index(stage) + 1:], stages[names.index(stage) + 1:])
              if (own := MIN_WORDS_STAGES.get(str(s.get("type")))) and holds((s.get("params") or {}).get(own))]
    for entry in config.get("dedup") or []:
        section, own = MIN_WORDS_PASSES.get(str(entry.get("method")), ("", ""))
        if section and holds((entry.get(section) or {}).get(own)):
            places.append(f"{pass_name(entry.get('method'), entry.get('name'))}.{section}.{own}")
    return places


def _rows(directory: str, wanted: list[str], types: dict[str, pa.DataType] | None = None,
          shards: set[str] | None = None) -> list[dict[str, Any]]:
    """The ``wanted`` columns of every shard of ``directory`` (of ``shards`` when given) as rows;
    ``types`` gets each column's stored type (of a shard that has it)."""
    uris = [u for u in fs.list_files_if_any(directory, (".parquet",))
            if shards is None or fs.basename(u)[: -len(".parquet")] in shards]
    rows: list[dict[str, Any]] = []
    for uri, table in zip(uris, read_ahead(lambda u: read_columns(u, wanted), uris)):
        shard = fs.basename(uri)[: -len(".parquet")]
        rows.extend({**r, "shard": shard} for r in table.to_pylist())
        if types is not None:
            types.update((f.name, f.type) for f in table.schema if not pa.types.is_null(f.type))
    return rows


def _value(r: dict[str, Any], column: str) -> float | None:
    v = r.get(column)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


@dataclass
class RunRows:
    """The rows a what-if counts on, read once for every rule asked (:func:`read_run_rows`)."""

    stats: dict[str, Any]
    removed: list[dict[str, Any]]  # id, url, the metric columns, removed_stage, removed_reason, shard
    kept: list[dict[str, Any]]  # id, url, the metric columns, shard
    types: dict[str, pa.DataType]  # each column's stored type


def read_run_rows(run_dir: str, columns: list[str], stats: dict[str, Any] | None = None) -> RunRows:
    """The metric ``columns`` of every removed and finally kept document the run's funnel counts,
    read once: several thresholds moved together read the outputs once, not once a rule (h196)."""
    stats = stats if stats is not None else load_run_stats(run_dir)
    columns = list(dict.fromkeys(columns))
    types: dict[str, pa.DataType] = {}
    passes, shards = counted_outputs(run_dir, stats)  # a run under way: what its funnel counts so far
    removed = [r for d in passes for r in _rows(d.removed_dir, ["id", "url", *columns, "removed_stage", "removed_reason"],
                                                 types, shards)]
    kept = _rows(passes[-1].kept_dir, ["id", "url", *columns], types, shards)
    return RunRows(stats, removed, kept, types)


def what_if(run_dir: str, stage: str, param: str, value: float | None, show: int = 20,
            rows: RunRows | None = None) -> dict[str, Any]:
    """What moving ``stage``'s threshold ``param`` to ``value`` would change (see the module doc);
    None: the rule off (the config's null), so every document it removed would pass it.
    ``rows``: the run's rows already read (:func:`read_run_rows`, with this rule's column)."""
    stats = rows.stats if rows is not None else load_run_stats(run_dir)
    kind, column, current, order = find_threshold(run_dir, stage, param, stats)
    after = set(order[order.index(stage) + 1:])
    rows = rows if rows is not None else read_run_rows(run_dir, [column], stats)
    removed, kept, types = rows.removed, rows.kept, rows.types
    rule = threshold_rule(kind, param, types.get(column))
    lower, fails = rule.lower, rule.fails
    passed = [dict(r, fate="kept") for r in kept] + [dict(r, fate=f"removed by {r['removed_stage']}")
                                                    for r in removed if r["removed_stage"] in after]
    # removed for this column's reason *and* beyond this param as run (min_words, not max_words)
    by_column = [r for r in removed if r["removed_stage"] == stage
                 and counts_for_column(kind, r["removed_reason"], column)
                 and (x := _value(r, column)) is not None and fails(x, current)]
    newly_removed = [r for r in passed if (x := _value(r, column)) is not None and fails(x, value)]
    newly_passing = [r for r in by_column if (x := _value(r, column)) is not None and not fails(x, value)]
    # a stage may leave a metric uncomputed (gopher_repetition stops at its deciding rule): the
    # documents it passed without a value cannot be judged at another value, so they are counted apart
    no_value = sum(1 for r in passed if _value(r, column) is None) if kind in UNCOMPUTED_WHEN_NULL else 0
    changed = ([dict(r, change="would be removed") for r in newly_removed]
               + [dict(r, change="would pass this rule") for r in newly_passing])
    changed.sort(key=lambda r: (abs(_value(r, column) - current), r["shard"], str(r["id"])))  # marginal first
    return {
        "stage": stage, "param": param, "column": column, "value_as_run": current, "value": value,
        "removes": "below" if lower else "above", "removes_at_value": rule.at_value,
        "reached_stage": len(passed) + sum(1 for r in removed if r["removed_stage"] == stage),
        "removed_for_column": len(by_column),
        "would_remove": len(newly_removed),
        "would_remove_from_corpus": sum(1 for r in newly_removed if r["fate"] == "kept"),
        "corpus_docs": len(kept),
        "would_pass_rule": len(newly_passing),
        "passed_without_value": no_value,
        "also_in_rerun": also_in_rerun(load_run_manifest(run_dir), stage, param, current),
        "keepers_move": kind in KEEPERS_MOVE,
        "unfinished": (stats.get("partial") or {}).get("note") or None,
        "documents": [{"shard": r["shard"], "id": r["id"], "url": r["url"], column: _value(r, column),
                       "change": r["change"], "now": r.get("fate") or f"removed for {r['removed_reason']}"}
                      for r in changed[:show]],
    }


def render_what_if(w: dict[str, Any]) -> list[str]:
    """The lines ``refinery stats --what-if`` prints."""
    col, pct = w["column"], (100.0 * w["would_remove_from_corpus"] / w["corpus_docs"] if w["corpus_docs"] else 0.0)
    side = f"at or {w['removes']}" if w.get("removes_at_value") else w["removes"]
    rule = (f"documents {side} it are removed" if w["value"] is not None
            else f"documents {side} {fmt_value(w['value_as_run'])} were removed, now none")
    lines = [
        f"what if {w['stage']}.{w['param']} = {fmt_value(w['value_as_run'])} -> "
        f"{'off (null)' if w['value'] is None else fmt_value(w['value'])} "
        f"(column {col}; {rule}), of {w['reached_stage']:,} documents that reached "
        f"{w['stage']}:",
        # what a rerun with the value would show differs by exactly this (docs/stats.md, session 47)
        "  (counted for this rule alone, on the documents that reached it as run: a rerun also re-labels "
        "documents another of its rules removed, and later stages and dedup passes see the change)",
        f"  would be removed:     {w['would_remove']:,} of the documents it kept, {w['would_remove_from_corpus']:,} of them in the "
        f"corpus ({pct:.1f}% of its {w['corpus_docs']:,}), the rest removed by later stages anyway",
        f"  would pass this rule: {w['would_pass_rule']:,} of the {w['removed_for_column']:,} it removed for {col} "
        "(at most: another of its rules, or a later stage, may still remove them)",
    ]
    if w.get("also_in_rerun"):
        lines.append(f"  in a rerun this value is also {', '.join(w['also_in_rerun'])} (filled from it where the "
                     f"recipe does not set them; {fmt_value(w['value_as_run'])} in this run): not counted here")
    if w.get("passed_without_value"):
        lines.append(f"  not judged:           {w['passed_without_value']:,} of the documents it kept have no {col} (the stage "
                     "decided without computing it): a rerun may remove some of them")
    if w.get("keepers_move"):
        lines.append("  keepers move:         counted on the fractions as run; a repeated line stays in its first holder that "
                     "stays, so removing a line's keeper hands the line to the next holder, whose fraction falls: a rerun "
                     "may remove fewer (stricter) or more (looser)")
    if w.get("unfinished"):
        lines.append(f"  note: {w['unfinished']}")
    if w["documents"]:
        lines.append(f"  nearest the threshold as run first ({len(w['documents'])} shown):")
        lines += [f"    {fmt_value(d[col]):>10}  {d['change']:<21} now {d['now']:<28} {d['shard']}  {d['id']}  {d['url'] or ''}"
                  for d in w["documents"]]
    return lines
