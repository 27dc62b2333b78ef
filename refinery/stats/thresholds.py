"""Which config parameter is the threshold on which metric column, read from a run's ``run.json``.

The report draws thresholds on histograms. Values come from the run's recorded config (the
parameters the user gave), completed with what the stage constructor made of them (the stage is
built from the recorded config -- stages are cheap to build, models load lazily -- and its
attributes read; if that fails, the constructor's signature defaults are used).
Which parameter applies to which column is, in order:

1. the stage class's ``threshold_params`` attribute, ``{column: [param, ...]}``, if it has one;
2. :data:`KNOWN` below;
3. a name rule: parameter ``min_X`` / ``max_X`` / ``X`` applies to column ``X`` or ``*_X``.

A parameter may be indexed, ``top_n_grams[2]``, for dict (or list-of-pairs) parameters.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from refinery.dedup.config import pass_name
from refinery.io import fs
from refinery.rundir import RunDir

log = logging.getLogger("refinery.stats")

#: stage type -> {metric column -> [parameter names]}
KNOWN: dict[str, dict[str, list[str]]] = {
    "language_id": {"language_score": ["min_score"]},
    "line_corrections": {"line_corrections_removed_frac": ["max_removed_word_frac"],
                         "line_corrections_words_after_cuts": ["min_words_after_cuts"]},
    "gopher_repetition": {
        "gopher_dup_line_frac": ["dup_line_frac"],
        "gopher_dup_para_frac": ["dup_para_frac"],
        "gopher_top_2_gram": ["top_n_grams[2]"],
        "gopher_dup_5_gram": ["dup_n_grams[5]"],
    },
    "gopher_quality": {
        "gopher_word_count": ["min_words", "max_words"],
        "gopher_mean_word_length": ["min_mean_word_length", "max_mean_word_length"],
        "gopher_symbol_word_ratio": ["max_symbol_word_ratio"],
        "gopher_alpha_words_frac": ["min_alpha_words_frac"],
        "gopher_stop_words": ["min_stop_words"],
    },
    "toxicity": {"toxicity_score": ["threshold"], "profanity_word_frac": ["max_profanity_frac"]},
    "quality": {"quality_score": ["threshold"]},
    # a YAML pipeline's substring_dedup stage: its min_words, given or the index's (threshold_values)
    "substring_dedup": {"substring_words_after_cuts": ["min_words"]},
}
#: stage type -> {removal reason -> the metric column holding the value that triggered it}; a
#: stage class's ``reason_metrics`` attribute adds to / overrides this
REASON_METRICS: dict[str, dict[str, str]] = {
    "toxicity": {"toxic": "toxicity_score", "profanity": "profanity_word_frac"},
    "quality": {"low_quality": "quality_score"},
    "language_id": {"language_not_kept": "language_score", "low_language_score": "language_score"},
}
#: reader -> {removal reason -> what its ``_metric`` holds}: readers have no metric columns, so a
#: removed sample's metric read "metric = 1.307e+04" (13,070 bytes missing) without a name
READER_METRICS: dict[str, dict[str, str]] = {
    "warc_reader": {"truncated_record": "bytes missing", "corrupt_stream": "byte offset", "http_status": "HTTP status",
                    "body_too_large": "body bytes", "undecodable": "share not UTF-8"},
    "jsonl_reader": {reason: "line" for reason in ("corrupt_stream", "line_too_long", "invalid_utf8", "bad_json",
                                                   "bad_id", "bad_text", "invalid_unicode")},
}
#: stage type -> {param: value} that must hold for its thresholds to mean anything
CONDITIONS: dict[str, dict[str, Any]] = {"quality": {"mode": "threshold"}}


def load_run_manifest(run_dir: str) -> dict[str, Any]:
    return fs.read_json_if_any(RunDir(run_dir).run_json) or {}


def _stage_class(kind: str) -> type | None:
    try:
        from refinery.stages.registry import stage_class

        return stage_class(kind)
    except Exception as exc:  # noqa: BLE001 - a missing optional stage module must not break the report
        log.debug("cannot import stage %s for threshold defaults: %s", kind, exc)
        return None


def neutral_params(kind: str | None) -> frozenset[str]:
    """The stage's params that change how it runs, never what it outputs (``Stage.neutral_params``)."""
    cls = _stage_class(kind) if kind else None
    return frozenset(getattr(cls, "neutral_params", ()) or ())


def effective_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The given params completed with the stage's defaults, as the stage holds them."""
    cls = _stage_class(kind)
    merged: dict[str, Any] = {}
    if cls is None:
        return dict(params or {})
    names = []
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "name") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        names.append(name)
        if p.default is not inspect.Parameter.empty:
            merged[name] = p.default
    merged.update(params or {})
    try:
        stage = cls(**(params or {}))
    except Exception as exc:  # noqa: BLE001 - e.g. a model file absent on the machine making the report
        log.debug("cannot build stage %s to read its parameters: %s", kind, exc)
        return merged
    for name in names:
        if not hasattr(stage, name):
            continue  # kept under another name (pii's switches live in ``enabled``): as given or default
        value = getattr(stage, name)
        if isinstance(value, (int, float, str, bool, list, dict, tuple)) or value is None:
            merged[name] = value
    merged.update(_applied_values(stage, kind))
    return merged


def _applied_values(stage: Any, kind: str) -> dict[str, Any]:
    """The thresholds a stage applies that its params leave to something else (``Stage.
    threshold_values``: a YAML ``lines_dedup`` stage's ``max_removed_word_frac`` and floor come
    from its index when not given, so its histograms had no line where the recipe's lines pass's
    had one); none when that cannot be read here (an index not on this machine)."""
    applied = getattr(stage, "threshold_values", None)
    if not callable(applied):
        return {}
    try:
        return {k: v for k, v in applied().items() if v is not None}
    except Exception as exc:  # noqa: BLE001 - the report is made without the line, not refused
        log.debug("cannot read the thresholds stage %s applies: %s", kind, exc)
        return {}


def _lookup(values: dict[str, Any], spec: str) -> Any:
    """``values[spec]``, or ``values[name][key]`` for ``name[key]`` (dicts or lists of pairs)."""
    if not spec.endswith("]") or "[" not in spec:
        return values.get(spec)
    name, _, key = spec[:-1].partition("[")
    container = values.get(name)
    if isinstance(container, dict):
        for k in (key, int(key) if key.lstrip("-").isdigit() else key):
            if k in container:
                return container[k]
        return None
    if isinstance(container, (list, tuple)):
        for pair in container:
            if isinstance(pair, (list, tuple)) and len(pair) == 2 and str(pair[0]) == key:
                return pair[1]
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rule_matches(param: str, column: str) -> bool:
    core = param
    for prefix in ("min_", "max_"):
        if core.startswith(prefix):
            core = core[len(prefix):]
    return column == core or column.endswith("_" + core)


def stage_thresholds(kind: str, params: dict[str, Any], columns: list[str]) -> dict[str, list[dict[str, Any]]]:
    """``{column: [{"param": name, "value": number}, ...]}`` for the given metric columns."""
    values = effective_params(kind, params)
    if any(values.get(k) != v for k, v in CONDITIONS.get(kind, {}).items()):
        return {}
    cls = _stage_class(kind)
    declared = dict(KNOWN.get(kind, {}))
    declared.update(getattr(cls, "threshold_params", None) or {})
    out: dict[str, list[dict[str, Any]]] = {}
    for column in columns:
        names = declared.get(column)
        if names is None:
            names = [p for p in values if _rule_matches(p, column)]
        found = [{"param": p, "value": float(_lookup(values, p))} for p in names if _is_number(_lookup(values, p))]
        if found:
            out[column] = found
    return out


def reason_metric(kind: str | None, reason: str, columns: list[str]) -> str | None:
    """The metric column (one of ``columns``) whose value triggered a removal for ``reason`` by a
    stage of type ``kind``: the stage class's ``reason_metrics``, then :data:`REASON_METRICS`,
    then the column named ``reason`` or ``*_<reason>``. None when no column is known to hold it."""
    declared: dict[str, str] = {}
    if kind:
        declared.update(REASON_METRICS.get(kind, {}))
        declared.update(getattr(_stage_class(kind), "reason_metrics", None) or {})
    column = declared.get(reason)
    if column in columns:
        return column
    matches = [c for c in columns if c == reason or c.endswith("_" + reason)]
    return matches[0] if len(matches) == 1 else None


def stage_kinds(manifest: dict[str, Any]) -> dict[str, str]:
    """``{stage name: stage type}`` from a run's ``run.json``, its dedup passes too: a pass is applied
    by the stage type its unnamed pass is called (``lines`` -> ``lines_dedup``), whose
    ``reason_metrics`` say which column its removals' reasons are judged on. Without them a what-if
    on ``lines.max_removed_word_frac`` counted none of the pass's removals as its rule's: "would pass
    this rule: 0 of the 0" where a rerun kept 18 (benchmarks/whatif_vs_rerun.py, session 47)."""
    config = manifest.get("config") or {}
    kinds = {(s.get("name") or s["type"]): s["type"] for s in config.get("stages", [])}
    for entry in dedup_entries(manifest):
        if isinstance(entry, dict) and entry.get("method"):
            kinds.setdefault(pass_name(entry["method"], entry.get("name")), pass_name(entry["method"]))
    return kinds


#: dedup method -> {metric column -> (config section, parameter)}: a dedup pass's own threshold
DEDUP_THRESHOLDS: dict[str, dict[str, tuple[str, str]]] = {
    "lines": {"lines_dedup_removed_frac": ("lines", "max_removed_word_frac"),
              "lines_dedup_words_after_cuts": ("lines", "min_words_after_cuts")},
    "substring": {"substring_words_after_cuts": ("substring", "min_words")},
}


def dedup_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's dedup passes' settings as recorded: its recipe's ``dedup:`` entries in order, or
    ``refinery dedup``'s (its run.json has them under "dedup", the pass named by the run)."""
    entries = [e for e in (manifest.get("config") or {}).get("dedup") or [] if isinstance(e, dict)]
    standalone = manifest.get("dedup")
    if manifest.get("kind") == "dedup" and isinstance(standalone, dict) and isinstance(standalone.get("config"), dict):
        entries.append({**standalone["config"], "name": manifest.get("name")})
    return entries


#: a dedup entry's method sections (each read by its own method only)
DEDUP_SECTIONS: frozenset[str] = frozenset({"minhash", "substring", "lines", "decontaminate"})


def own_sections(entry: dict[str, Any]) -> dict[str, Any]:
    """A recorded dedup entry's settings, its own method's section only: another's, as an older
    refinery dumped it (fewer keys), is refused by the check that a section under another method
    does nothing. Without its name (a label, not a setting)."""
    others = DEDUP_SECTIONS - {entry.get("method")} | {"name"}
    return {k: v for k, v in entry.items() if k not in others}


def dedup_thresholds(entry: dict[str, Any], columns: list[str]) -> dict[str, list[dict[str, Any]]]:
    """A dedup pass's thresholds, from its recorded config completed with the defaults."""
    known = DEDUP_THRESHOLDS.get(str(entry.get("method")), {})
    if not known or not any(c in known for c in columns):
        return {}
    try:
        from refinery.dedup.config import DedupConfig

        config = DedupConfig.model_validate(own_sections(entry)).model_dump()
    except Exception as exc:  # noqa: BLE001 - a config of another version must not break the report
        log.debug("cannot read dedup pass %s's settings: %s", entry.get("name"), exc)
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for column, (section, param) in known.items():
        value = (config.get(section) or {}).get(param)
        if column in columns and _is_number(value):
            out[column] = [{"param": f"{section}.{param}", "value": float(value)}]
    return out


def run_thresholds(manifest: dict[str, Any], histograms: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{stage name: {column: thresholds}}`` for every histogram of the run, dedup passes' too
    (the lines pass's chart had no line at its max_removed_word_frac: found by testing the stats)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    config = manifest.get("config") or {}
    for stage in config.get("stages", []):
        name = stage.get("name") or stage["type"]
        columns = list(histograms.get(name, {}))
        if columns:
            found = stage_thresholds(stage["type"], stage.get("params") or {}, columns)
            if found:
                out[name] = found
    for entry in dedup_entries(manifest):
        name = pass_name(entry.get("method"), entry.get("name"))
        found = dedup_thresholds(entry, list(histograms.get(name, {})))
        if found:
            out[name] = found
    return out
