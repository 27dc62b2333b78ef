"""``refinery stats RUN --what-if STAGE.PARAM=V`` against real reruns with that value, document by document.

    python benchmarks/whatif_vs_rerun.py [--input DIR] [--config YAML] [--per-side 1] [--only STAGE]

A what-if that does not match what a rerun removes looks exact and misleads (docs/stats.md, session
47). This runs the recipe once on INPUT (default: the bundled sample, data/sample; tokenization left
out), reads every threshold the what-if can move from the run itself (``run_thresholds``: the
stages' and the dedup passes'), picks values each way from the run's own metric values (quantiles of
the documents the rule passed, for a stricter value, and of those it removed, for a looser one, so
that something changes), and for each value compares the what-if's documents with a rerun's:

- "would be removed": the documents the rerun's stage removes for this rule's reasons that the base
  run's stage did not remove at all;
- "would pass this rule": the documents the base run removed for this rule that the rerun does not.

A document-stage threshold is rerun with the stages up to that stage only (a new output: later
stages and dedup passes cannot change what it removes); a dedup pass's threshold on a copy of the
base run with ``--force``, which reuses the passes before it. Each row is classed:

- ``exact``: both sets equal;
- ``re-labelled``: equal, and the rerun also moved documents between the stage's own reasons (rules
  are checked in order: a stricter ``min_words`` takes documents ``alpha_words`` removed first); the
  what-if counts documents, not reasons, and says so;
- ``not judged``: the rerun removed more, all of them documents the stage passed without computing
  the metric (gopher_repetition stops at its deciding rule), which the what-if reports as "not
  judged";
- ``keepers moved``: the differences are documents whose metric itself moved in the rerun: the
  lines pass gives each repeated line to its first holder that stays, so a value that removes a
  line's keeper hands it to the next holder, whose cut fraction falls (the what-if says so);
- ``earlier stage differed``: the differences are documents an earlier stage decided otherwise in
  the rerun (extraction's per-document timeout on a busy machine);
- ``refused``: the what-if refuses the value as a rerun would (no rerun made);

Besides those values, a rule a rerun can switch off (the config's null: ``line_corrections``' and the
lines pass's ``min_words_after_cuts``, ``toxicity``'s thresholds) is checked off too, as ``null`` and,
for a floor, as 0 (the values a researcher types for "nothing removed for this"; session 48);
- ``MISMATCH``: anything else. The script exits 1 when there is one.

``--together SPEC,SPEC[,...]`` (repeatable; ``default``: :data:`DEFAULT_TOGETHER`) checks several
thresholds moved at once (``stats --what-if A --what-if B``, session 48, h193) against one rerun with
every value (the stages up to the last of them): the stage at which each document is removed, as
predicted (a moved document at the first stage in order whose new value fails it, every other as
run) against the rerun's, and the corpus documents lost; a combination the what-if refuses is
``refused`` (no rerun made).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from refinery.dedup.config import pass_name  # noqa: E402
from refinery.rerun_refusal import rerun_refusal  # noqa: E402
from refinery.io import fs  # noqa: E402
from refinery.io.parquet import read_columns  # noqa: E402
from refinery.rundir import RunDir  # noqa: E402
from refinery.stats.funnel import load_run_stats  # noqa: E402
from refinery.stats.thresholds import (  # noqa: E402
    effective_params,
    load_run_manifest,
    run_thresholds,
    stage_kinds,
)
from refinery.stats.whatif import (  # noqa: E402
    UNCOMPUTED_WHEN_NULL,
    WhatIfError,
    counts_for_column,
    parse_spec,
    threshold_rule,
    what_if,
)
from refinery.stats.whatif_together import what_if_together  # noqa: E402

DEFAULT_INPUT = ROOT / "data" / "sample"
DEFAULT_CONFIG = ROOT / "configs" / "refinedweb.yaml"
#: how far into the documents on each side of the threshold a new value sits: a stricter value at
#: these quantiles of the values the rule passed (nearest the threshold first), a looser one at these
#: of the values it removed
STRICTER_AT = (0.1, 0.3)
LOOSER_AT = (0.5, 1.0)
#: thresholds moved together by ``--together default``: the question asked (two stages, one before the
#: other, whose removals overlap), three rules over three stages, and a looser value (refused)
DEFAULT_TOGETHER = (("language_id.min_score=0.8", "gopher_quality.min_words=100"),
                    ("gopher_repetition.dup_line_frac=0.2", "gopher_quality.min_stop_words=4",
                     "line_corrections.max_removed_word_frac=0.03"),
                    ("language_id.min_score=0.8", "gopher_quality.min_words=30"))

Key = tuple[str, str]  # (shard, id): how the what-if names a document
Fate = Any  # (removed_stage, removed_reason), or "kept"


@dataclass(frozen=True)
class Threshold:
    stage: str
    param: str
    column: str
    value: float
    kind: str | None  # the stage type (a dedup pass: the type applying it, lines_dedup)
    dedup: bool


@dataclass
class Row:
    threshold: Threshold
    value: float | None  # None: the rule off (the config's null)
    side: str  # "stricter" / "looser"
    predicted: int = 0
    real: int = 0
    verdict: str = ""
    note: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- runs


def _run(config: dict[str, Any], input_dir: str, out: Path, workers: int, force: bool = False) -> None:
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "refinery", "run", str(path), "-i", input_dir, "-o", str(out), "--workers", str(workers)]
    done = subprocess.run(cmd + (["--force"] if force else []), capture_output=True, text=True, cwd=out.parent,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-3000:])
        raise SystemExit(f"refinery run {path} failed (exit {done.returncode})")


def base_config(path: Path) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text())
    config.pop("tokenize", None)  # token shards do not change what a threshold removes
    return config


def rerun_config(config: dict[str, Any], t: Threshold, value: float | None) -> dict[str, Any]:
    """``config`` with ``t`` at ``value``: a document stage's threshold with the stages up to it only
    (nothing after it changes what it removes), a dedup pass's with every stage and pass."""
    return together_config(config, [(t, value)])


def together_config(config: dict[str, Any], moved: list[tuple[Threshold, float | None]]) -> dict[str, Any]:
    """``config`` with every threshold of ``moved`` at its value: with the stages up to the last of
    them only when all are document stages' (nothing after changes what they remove)."""
    config = copy.deepcopy(config)
    for t, value in moved:
        _set_value(config, t, value)
    if not any(t.dedup for t, _ in moved):
        names = [s.get("name") or s["type"] for s in config["stages"]]
        config["stages"] = config["stages"][: max(names.index(t.stage) for t, _ in moved) + 1]
        config["dedup"] = []
    return config


def _set_value(config: dict[str, Any], t: Threshold, value: float | None) -> None:
    """Set ``t``'s param to ``value`` in ``config`` (in place)."""
    if t.dedup:
        for entry in config.get("dedup") or []:
            if pass_name(entry.get("method"), entry.get("name")) == t.stage:
                section, _, key = t.param.partition(".")
                entry.setdefault(section, {})[key] = _typed(entry.get(section, {}).get(key), value)
                return
        raise SystemExit(f"no dedup pass {t.stage} in the config")
    entry = next(s for s in config["stages"] if (s.get("name") or s["type"]) == t.stage)
    params = entry.setdefault("params", {})
    if t.param.endswith("]"):  # top_n_grams[2]: the whole dict as the stage holds it, one key moved
        name, _, key = t.param[:-1].partition("[")
        held = effective_params(entry["type"], params).get(name)
        table = {int(k) if str(k).lstrip("-").isdigit() else k: v for k, v in dict(held or {}).items()}
        k = int(key) if key.lstrip("-").isdigit() else key
        table[k] = _typed(table.get(k), value)
        params[name] = table
    else:
        params[t.param] = _typed(effective_params(entry["type"], params).get(t.param), value)


def _typed(current: Any, value: float | None) -> Any:
    """``value`` as an int where the param holds one (``min_words``), else a float (None: null)."""
    return int(value) if value is not None and isinstance(current, int) and not isinstance(current, bool) and value == int(value) else value


def fates(run: Path) -> dict[Key, Fate]:
    """Every document of a run: where it was removed (stage, reason), or "kept"."""
    out: dict[Key, Fate] = {}
    passes = RunDir(str(run)).document_pass_dirs()
    for d in passes:
        for uri in fs.list_files_if_any(d.removed_dir, (".parquet",)):
            shard = fs.basename(uri)[: -len(".parquet")]
            for r in read_columns(uri, ["id", "removed_stage", "removed_reason"]).to_pylist():
                out[(shard, r["id"])] = (r["removed_stage"], r["removed_reason"])
    for uri in fs.list_files_if_any(passes[-1].kept_dir, (".parquet",)):
        shard = fs.basename(uri)[: -len(".parquet")]
        out.update(((shard, r["id"]), "kept") for r in read_columns(uri, ["id"]).to_pylist())
    return out


def metric_values(run: Path, column: str) -> dict[Key, float | None]:
    """``column`` of every document of the run that has it (null: not computed / not reached)."""
    out: dict[Key, float | None] = {}
    passes = RunDir(str(run)).document_pass_dirs()
    for d in [p.removed_dir for p in passes] + [passes[-1].kept_dir]:
        for uri in fs.list_files_if_any(d, (".parquet",)):
            shard = fs.basename(uri)[: -len(".parquet")]
            for r in read_columns(uri, ["id", column]).to_pylist():
                v = r[column]
                out[(shard, r["id"])] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    return out


# ---------------------------------------------------------------- thresholds and values


def thresholds_of(run: Path) -> list[Threshold]:
    """Every threshold the what-if can move, read from the run (its run.json and histograms)."""
    manifest = load_run_manifest(str(run))
    kinds = stage_kinds(manifest)
    stages = {s.get("name") or s["type"] for s in manifest["config"]["stages"]}  # the rest: dedup passes
    found = run_thresholds(manifest, load_run_stats(str(run)).get("histograms") or {})
    return [Threshold(stage, mark["param"], column, float(mark["value"]), kinds.get(stage), stage not in stages)
            for stage, columns in found.items() for column, marks in columns.items() for mark in marks]


def new_values(t: Threshold, base: dict[Key, Fate], values: dict[Key, float | None], order: list[str],
               per_side: int) -> list[tuple[str, float]]:
    """Values each way from the run's own metric values: stricter ones among the documents the rule
    passed, looser ones among those it removed for this column (none where that side is empty)."""
    rule = threshold_rule(t.kind, t.param)
    after = set(order[order.index(t.stage):])
    reached = {k for k, f in base.items() if f == "kept" or f[0] in after}
    removed = {k for k in reached if base[k] != "kept" and base[k][0] == t.stage
               and counts_for_column(t.kind, base[k][1], t.column)}
    x_passed = sorted(v for k in reached - removed if (v := values.get(k)) is not None and not rule.fails(v, t.value))
    x_removed = sorted(v for k in removed if (v := values.get(k)) is not None and rule.fails(v, t.value))
    if rule.lower:  # nearest the threshold first
        x_removed = x_removed[::-1]
    else:
        x_passed = x_passed[::-1]
    out: list[tuple[str, float]] = []
    for side, xs, at in (("stricter", x_passed, STRICTER_AT), ("looser", x_removed, LOOSER_AT)):
        picked: list[float] = []
        for q in at[:per_side] if xs else ():
            v = _moving(xs[min(len(xs) - 1, int(q * (len(xs) - 1)))], t, side, xs)
            beyond = v is not None and (v > t.value) == (rule.lower == (side == "stricter"))
            if beyond and v != t.value and v not in picked:
                picked.append(v)
        out += [(side, v) for v in picked]
    return out


def off_values(t: Threshold, manifest: dict[str, Any]) -> list[tuple[str, float | None]]:
    """The rule switched off, where a rerun takes the param's null: ``null``, and 0 for a floor
    (removes nothing, as null does) where a rerun takes 0 too; each a looser value."""
    if not _checked(manifest, t) or rerun_refusal(manifest, t.stage, t.param, None) is not None:
        return []
    zero = threshold_rule(t.kind, t.param).lower and t.value != 0 and rerun_refusal(manifest, t.stage, t.param, 0) is None
    return [("looser", None)] + ([("looser", 0.0)] if zero else [])


def _checked(manifest: dict[str, Any], t: Threshold) -> bool:
    """Whether a rerun's refusal of ``t``'s param is checked here: ``rerun_refusal`` answers None
    (accepted) for a setting it cannot check too, so a value no param takes must be refused."""
    return rerun_refusal(manifest, t.stage, t.param, -1.5) is not None


def _moving(x: float, t: Threshold, side: str, xs: list[float]) -> float | None:
    """A value as a user would type it (whole words for a count, two significant digits otherwise)
    that moves the document at ``x`` to the other side: rounded to the nearest first (fractions of
    small counts sit at such values: the ties a what-if must get right), else away from it; failing
    that (``x`` is 0 and most values are), one that moves any document of ``xs``."""
    rule = replace(threshold_rule(t.kind, t.param), float32=True)  # the stored values are float32 or ints
    up = (side == "stricter") == rule.lower  # the direction that moves it
    if _counts(t):
        candidates = [x + (1 if up else -1) if side == "stricter" else x]
    elif x == 0:
        candidates = [0.0]
    else:
        scale = 10.0 ** (math.floor(math.log10(abs(x))) - 1)
        candidates = [float(f"{x:.2g}"), float(f"{(math.ceil if up else math.floor)(x / scale) * scale:.2g}"), x]
    for v in candidates:
        if rule.fails(x, v) == (side == "stricter"):
            return float(v)
    moving = [float(v) for v in candidates if any(rule.fails(y, v) == (side == "stricter") for y in xs)]
    # a stricter value that moves none of the values seen may still remove documents that have none
    # (gopher_repetition's uncomputed n-gram fractions: the what-if's "not judged")
    return moving[0] if moving else float(candidates[0]) if side == "stricter" else None


def _counts(t: Threshold) -> bool:
    """Whether the threshold is a count of words (min_words, min_stop_words, min_words_after_cuts)."""
    return t.param.split(".")[-1].endswith(("words", "words_after_cuts"))


# ---------------------------------------------------------------- one check


def check(base_dir: Path, base: dict[Key, Fate], t: Threshold, side: str, value: float, config: dict[str, Any],
          input_dir: str, scratch: Path, workers: int) -> Row:
    row = Row(t, value, side)
    started = time.perf_counter()
    spec = f"{t.stage}.{t.param}={'null' if value is None else f'{value:g}'}"
    try:
        w = what_if(str(base_dir), t.stage, t.param, value, show=10**9)
    except WhatIfError as exc:
        row.verdict, row.note = "refused", str(exc)
        return row
    out = scratch / spec.replace("[", "_").replace("]", "").replace("=", "_").replace(".", "_")
    shutil.rmtree(out, ignore_errors=True)
    if t.dedup:  # reuse the passes before this one
        shutil.copytree(base_dir, out)
    _run(rerun_config(config, t, value), input_dir, out, workers, force=t.dedup)
    rerun = fates(out)
    # the lines pass's metric moves with its value (its keepers): the rerun's own values, to tell
    rerun_values = metric_values(out, t.column) if w.get("keepers_move") else {}
    row.seconds = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    classify(row, w, base_dir, base, rerun, rerun_values)
    row.details["spec"] = spec
    return row


def classify(row: Row, w: dict[str, Any], base_dir: Path, base: dict[Key, Fate], rerun: dict[Key, Fate],
             rerun_values: dict[Key, float | None]) -> None:
    """Compare the what-if's documents with the rerun's and class the row (see the module doc)."""
    t = row.threshold
    order = [s["stage"] for s in load_run_stats(str(base_dir))["stages"]]
    before = set(order[: order.index(t.stage)])

    def by_rule(f: Fate) -> bool:
        return f != "kept" and f is not None and f[0] == t.stage and counts_for_column(t.kind, f[1], t.column)

    def by_stage(f: Fate) -> bool:
        return f != "kept" and f is not None and f[0] == t.stage

    pred_rm = {(d["shard"], d["id"]) for d in w["documents"] if d["change"] == "would be removed"}
    pred_pass = {(d["shard"], d["id"]) for d in w["documents"] if d["change"] == "would pass this rule"}
    real_rm = {k for k, f in rerun.items() if by_rule(f) and not by_stage(base.get(k))}
    real_pass = {k for k, f in base.items() if by_rule(f) and not by_rule(rerun.get(k))}
    relabelled = sum(1 for k, f in rerun.items() if by_stage(f) and by_stage(base.get(k)) and f != base.get(k))
    earlier = {k for k in set(base) | set(rerun)
               if _earlier(base.get(k), before) != _earlier(rerun.get(k), before)}
    pred, real = (pred_rm, real_rm) if row.side == "stricter" else (pred_pass, real_pass)
    row.predicted, row.real = len(pred), len(real)
    diff = pred ^ real
    values = metric_values(base_dir, t.column) if diff else {}
    said_unjudged = t.kind in UNCOMPUTED_WHEN_NULL and w["passed_without_value"]
    unjudged = {k for k in real - pred if values.get(k) is None} if said_unjudged else set()
    moved = {k for k in diff if rerun_values.get(k) != values.get(k)} if w.get("keepers_move") else set()
    row.details = {"predicted_from_corpus": w["would_remove_from_corpus"],
                   "not_judged_said": w["passed_without_value"], "relabelled": relabelled,
                   "earlier_differed": len(earlier), "pred_not_real": sorted(map(list, pred - real))[:5],
                   "real_not_pred": sorted(map(list, real - pred))[:5]}
    if not diff:
        row.verdict = "re-labelled" if relabelled else "exact"
        row.note = f"{relabelled} moved between the stage's reasons" if relabelled else ""
    elif diff <= unjudged | earlier | moved:
        row.verdict, row.note = max(
            [("not judged", unjudged, f"{len(unjudged)} removed had no {t.column} "
                                      f"(said: {w['passed_without_value']} not judged)"),
             ("keepers moved", moved, f"{len(moved)} had another {t.column} in the rerun (said: keepers move)"),
             ("earlier stage differed", diff & earlier, f"{len(diff & earlier)} decided otherwise before {t.stage}")],
            key=lambda c: len(c[1]))[::2]
    else:
        row.verdict = "MISMATCH"
        row.note = f"{len(pred - real)} predicted only, {len(real - pred)} real only"


def _earlier(f: Fate, before: set[str]) -> Fate:
    """A document's fate if an earlier stage decided it, else None (it reached the stage)."""
    return f if f is None or (f != "kept" and f[0] in before) else None


# ---------------------------------------------------------------- several thresholds together


@dataclass
class TogetherRow:
    specs: tuple[str, ...]
    verdict: str = ""
    note: str = ""
    lost: tuple[int, int] = (0, 0)  # corpus documents lost: (predicted, real)
    newly: tuple[int, int] = (0, 0)  # documents removed that passed the last moved stage as run
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def check_together(base_dir: Path, base: dict[Key, Fate], specs: tuple[str, ...], config: dict[str, Any],
                   input_dir: str, scratch: Path, workers: int) -> TogetherRow:
    """``stats --what-if`` with every spec at once against one rerun with every value."""
    row = TogetherRow(specs)
    started = time.perf_counter()
    parsed = [parse_spec(spec) for spec in specs]
    try:
        w = what_if_together(str(base_dir), parsed, show=10**9)
    except WhatIfError as exc:
        row.verdict, row.note = "refused", str(exc)
        return row
    known = {(t.stage, t.param): t for t in thresholds_of(base_dir)}
    moved = [(known[(stage, param)], value) for stage, param, value in parsed]
    out = scratch / ("together_" + "_".join(f"{t.stage}_{t.param}_{'null' if value is None else f'{value:g}'}" for t, value in moved)
                     .replace("[", "_").replace("]", "").replace(".", "_"))
    shutil.rmtree(out, ignore_errors=True)
    dedup = any(t.dedup for t, _ in moved)
    if dedup:  # reuse the passes before this one
        shutil.copytree(base_dir, out)
    _run(together_config(config, moved), input_dir, out, workers, force=dedup)
    rerun = fates(out)
    row.seconds = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    compare_together(row, w, base_dir, base, rerun, [t for t, _ in moved], dedup)
    return row


def compare_together(row: TogetherRow, w: dict[str, Any], base_dir: Path, base: dict[Key, Fate],
                     rerun: dict[Key, Fate], moved: list[Threshold], dedup: bool) -> None:
    """Per document, the stage that removes it as the what-if predicts (its first failing rule's, or
    as run) against the rerun's; documents that passed the rerun's last stage count as "passed"."""
    order = [st["stage"] for st in load_run_stats(str(base_dir))["stages"]]
    last = len(order) - 1 if dedup else max(order.index(t.stage) for t in moved)
    upto = set(order[: last + 1])
    before = set(order[: min(order.index(t.stage) for t in moved)])
    first = {(d["shard"], d["id"]): d["stage"] for d in w["documents"]}

    def passed(f: Fate) -> bool:
        return f == "kept" or f is None or f[0] not in upto

    def predicted(k: Key) -> str:
        return first.get(k) or ("passed" if passed(base[k]) else base[k][0])

    def real(k: Key) -> str:
        f = rerun.get(k)
        return "passed" if passed(f) else f[0]

    keys = set(base) | set(rerun)
    differ = {k for k in keys if k in base and predicted(k) != real(k)}
    earlier = {k for k in keys if _earlier(base.get(k), before) != _earlier(rerun.get(k), before)}
    lost_pred = {k for k, f in base.items() if f == "kept" and predicted(k) != "passed"}
    lost_real = {k for k, f in base.items() if f == "kept" and real(k) != "passed"}
    row.lost = (len(lost_pred), len(lost_real))
    row.newly = (sum(1 for k, f in base.items() if passed(f) and predicted(k) != "passed"),
                 sum(1 for k, f in base.items() if passed(f) and real(k) != "passed"))
    assert len(lost_pred) == w["corpus_lost"], (len(lost_pred), w["corpus_lost"])
    row.details = {"lost_first_by": w["lost_first_by"], "lost_to_several": w["lost_to_several"],
                   "removed_earlier": w["removed_earlier"], "differ": sorted(map(list, differ))[:5]}
    if not differ:
        row.verdict = "exact"
        row.note = (f"every removing stage equal; {w['removed_earlier']} removed earlier than as run, "
                    f"{w['lost_to_several']} lost fail several")
    elif differ <= earlier:
        row.verdict, row.note = "earlier stage differed", f"{len(differ)} decided otherwise before the first moved stage"
    else:
        row.verdict, row.note = "MISMATCH", f"{len(differ - earlier)} removed at another stage than predicted"


def _together_line(r: TogetherRow) -> str:
    if r.verdict == "refused":
        return f"{' + '.join(r.specs):<90} refused: {r.note}"
    return (f"{' + '.join(r.specs):<90} corpus lost predicted {r.lost[0]:>4} real {r.lost[1]:>4}; removed past the last "
            f"stage predicted {r.newly[0]:>4} real {r.newly[1]:>4}  {r.verdict:<22} {r.note}")


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", default=str(DEFAULT_INPUT), help="input directory (default: data/sample)")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the recipe (default: configs/refinedweb.yaml)")
    ap.add_argument("--per-side", type=int, choices=(1, 2), default=1, help="values each way per threshold")
    ap.add_argument("--only", action="append", default=[], metavar="STAGE", help="only this stage's thresholds (repeatable)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scratch", type=Path, default=None, help="where the runs go (default: a temporary directory)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--together", action="append", default=[], metavar="SPEC,SPEC",
                    help="thresholds moved at once, against one rerun (repeatable; 'default': DEFAULT_TOGETHER); "
                         "without --only, the single thresholds are not checked")
    args = ap.parse_args(argv)

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="whatif_vs_rerun_"))
    scratch.mkdir(parents=True, exist_ok=True)
    config = base_config(args.config)
    base_dir = scratch / "base"
    started = time.perf_counter()
    if not (base_dir / "stats.json").exists():
        _run(config, args.input, base_dir, args.workers)
    base = fates(base_dir)
    order = [s["stage"] for s in load_run_stats(str(base_dir))["stages"]]
    print(f"base run: {len(base):,} documents, {sum(1 for f in base.values() if f == 'kept'):,} kept "
          f"({time.perf_counter() - started:.0f} s); {base_dir}")
    rows: list[Row] = []
    manifest = load_run_manifest(str(base_dir))
    for t in thresholds_of(base_dir):
        if args.only and t.stage not in args.only or args.together and not args.only:
            continue
        values = metric_values(base_dir, t.column)
        for side, value in new_values(t, base, values, order, args.per_side) + off_values(t, manifest):
            row = check(base_dir, base, t, side, value, config, args.input, scratch, args.workers)
            rows.append(row)
            print(_line(row), flush=True)
    combos = [c for spec in args.together for c in (DEFAULT_TOGETHER if spec == "default" else [tuple(spec.split(","))])]
    together: list[TogetherRow] = []
    for combo in combos:
        together.append(check_together(base_dir, base, combo, config, args.input, scratch, args.workers))
        print(_together_line(together[-1]), flush=True)
    _summary(rows)
    if args.json:
        args.json.write_text(json.dumps([{"stage": r.threshold.stage, "param": r.threshold.param,
                                          "as_run": r.threshold.value, "value": r.value, "side": r.side,
                                          "predicted": r.predicted, "real": r.real, "verdict": r.verdict,
                                          "note": r.note, "seconds": round(r.seconds, 1), **r.details}
                                         for r in rows]
                                        + [{"together": list(r.specs), "lost": r.lost, "removed_past_last_stage": r.newly,
                                            "verdict": r.verdict, "note": r.note, "seconds": round(r.seconds, 1), **r.details}
                                           for r in together], indent=1, default=str))
    if args.scratch is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if any(r.verdict == "MISMATCH" for r in [*rows, *together]) else 0


def _line(r: Row) -> str:
    t = r.threshold
    what = "removed" if r.side == "stricter" else "pass"
    name = f"{t.stage}.{t.param}"
    value = "null" if r.value is None else f"{r.value:g}"
    return (f"{name:<44} {t.value:>9g} -> {value:<9} {what:<7} predicted {r.predicted:>4}  real {r.real:>4}  "
            f"{'yes' if r.verdict in ('exact', 're-labelled') else 'no ':<3}  {r.verdict:<22} {r.note}")


def _summary(rows: list[Row]) -> None:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    stages = len({r.threshold.stage for r in rows})
    params = len({(r.threshold.stage, r.threshold.param) for r in rows})
    print(f"{len(rows)} values of {params} thresholds of {stages} stages/passes: "
          + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))


if __name__ == "__main__":
    raise SystemExit(main())
