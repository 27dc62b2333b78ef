"""``refinery stats RUN --what-if A --what-if B ...``: what several moved thresholds would remove
together, counted exactly on the run's Parquet outputs where that can be done, refused in one line
where it cannot.

Exact when every value only *tightens* its rule (removes a superset of what it removed as run):
each document stage decides a document on its own text, which no threshold changes, so a document
the run removed stays removed (a stricter earlier rule may remove it first: its reason changes, not
its fate), and a document the run kept is lost exactly when one of the new values fails its metric
as run. A later dedup pass keeps each document it kept as run (fewer documents reach it: no keeper
is taken away, fewer lines and spans repeat), so the corpus documents lost are exact after it too;
a copy it removed in place of a lost document may be kept instead (said, not counted).

Refused (one line, why): a looser value that lets documents pass (they reach later stages, which
never judged them: the one-rule what-if only bounds it), a rule whose metric moves with the other
documents (the lines pass's keepers; a dedup pass or a stage after one, behind another moved
threshold), and a rule that passed documents without computing its metric ("not judged").
"""

from __future__ import annotations

from typing import Any

from refinery.stats.funnel import PASS_KINDS, load_run_stats
from refinery.stats.svg import fmt_value
from refinery.stats.whatif import WhatIfError, find_threshold, read_run_rows, what_if

#: stage kinds whose decisions and metrics depend on the other documents that reach them (dedup
#: passes, and YAML stages of those types): decontamination compares each document with fixed
#: benchmarks, so it is not one
CROSS_DOCUMENT_KINDS: frozenset[str] = frozenset(PASS_KINDS) - {"decontaminate"}

Key = tuple[str, str]  # (shard, id)


def _spec(w: dict[str, Any]) -> str:
    value = "null" if w["value"] is None else fmt_value(w["value"])
    return f"{w['stage']}.{w['param']}={value}"


def is_stricter(w: dict[str, Any]) -> bool | None:
    """Whether a one-rule what-if's value tightens its rule (True), loosens it (False) or is the
    value as run (None). Compared as given: float32 rounding is monotone, so a stricter float64
    value is never a looser float32 one."""
    value, current = w["value"], w["value_as_run"]
    if value is None:
        return False
    if value == current:
        return None
    return (value > current) == (w["removes"] == "below")


def _refusal(w: dict[str, Any], stricter: bool | None) -> str | None:
    """Why this rule's what-if cannot be counted with others, or None."""
    spec = _spec(w)
    if stricter is False and w["would_pass_rule"]:
        return (f"{spec} is looser: {w['would_pass_rule']:,} documents {w['stage']} removed would pass this rule and reach "
                "its other rules and the later stages, which never judged them (asked alone it gives an upper bound); "
                "several thresholds are counted together only when each is stricter")
    if stricter and w.get("keepers_move"):
        return (f"{spec}: the pass's fractions move with the documents it keeps (a removed line's keeper hands the line "
                "to the next holder), so its removals are not exact even alone; ask for it alone")
    if stricter and w.get("passed_without_value"):
        return (f"{spec}: {w['passed_without_value']:,} documents that reached {w['stage']} have no {w['column']} (it "
                "decided without computing it), so what the value removes is not known; ask for it alone")
    return None


def _order_refusal(moving: list[dict[str, Any]], order: list[str], kinds: dict[str, str]) -> str | None:
    """A rule whose metric depends on other documents (a dedup pass, or a stage after one) behind an
    earlier moved rule: the documents reaching it, and its metric, change with that rule."""
    first = min(moving, key=lambda w: order.index(w["stage"]))
    start = order.index(first["stage"])
    for w in moving:
        at = order.index(w["stage"])
        if at == start:
            continue
        between = [s for s in order[start:at + 1] if kinds.get(s) in CROSS_DOCUMENT_KINDS]
        if between:
            where = (f"{w['stage']} is a dedup pass" if between[-1] == w["stage"]
                     else f"{w['stage']} comes after the dedup pass {between[0]}")
            return (f"{_spec(w)} with {_spec(first)}: {where}, whose removals and metrics depend on which other "
                    f"documents reach it, which {first['stage']} changes: not counted together (a rerun answers it)")
    return None


def _moved(w: dict[str, Any]) -> dict[Key, str]:
    """The documents a one-rule what-if (read with every document listed) would newly remove:
    (shard, id) -> their fate as run ("kept" or "removed by STAGE")."""
    return {(d["shard"], str(d["id"])): d["now"] for d in w["documents"] if d["change"] == "would be removed"}


def what_if_together(run_dir: str, specs: list[tuple[str, str, float | None]], show: int = 20) -> dict[str, Any]:
    """What moving every threshold of ``specs`` ((stage, param, value), as :func:`parse_spec` gives
    them) together would remove (see the module doc); :class:`WhatIfError` (one line) where that
    cannot be counted exactly."""
    seen: set[tuple[str, str]] = set()
    alone = []
    stats = load_run_stats(run_dir)
    # every rule's column read in one pass over the outputs (each rule read them all: h193's cost)
    rows = read_run_rows(run_dir, [find_threshold(run_dir, stage, param, stats)[1] for stage, param, _ in specs], stats)
    for stage, param, value in specs:
        w = what_if(run_dir, stage, param, value, show=10**9, rows=rows)
        key = (w["stage"], w["param"].split(".")[-1])
        if key in seen:
            raise WhatIfError(f"--what-if: {stage}.{param} is given twice")
        seen.add(key)
        alone.append(w)
    order = [s["stage"] for s in stats["stages"]]
    kinds = {s["stage"]: str(s.get("kind") or "") for s in stats["stages"]}
    stricter = [is_stricter(w) for w in alone]
    for w, s in zip(alone, stricter):
        if why := _refusal(w, s):
            raise WhatIfError(f"--what-if: {why}")
    moving = [w for w, s in zip(alone, stricter) if s]
    if why := _order_refusal(moving, order, kinds) if moving else None:
        raise WhatIfError(f"--what-if: {why}")
    # each document to the first rule, in stage order, that removes it: the stage a rerun removes it at
    in_order = sorted(range(len(alone)), key=lambda i: order.index(alone[i]["stage"]))
    first_rule: dict[Key, int] = {}
    fails: dict[Key, list[int]] = {}
    fate: dict[Key, str] = {}
    for i in in_order:
        for key, now in _moved(alone[i]).items():
            first_rule.setdefault(key, i)
            fails.setdefault(key, []).append(i)
            fate[key] = now
    lost = [k for k in first_rule if fate[k] == "kept"]
    stage_of = [w["stage"] for w in alone]
    first_stages = [alone[i]["stage"] for i in in_order if stricter[i]]
    last_rule_stage = max((order.index(w["stage"]) for w in moving), default=len(order) - 1)
    passes_after = [s for s in order[last_rule_stage + 1:] if kinds.get(s) in CROSS_DOCUMENT_KINDS]
    # the corpus documents lost first, then those removed earlier than as run; each by its first rule
    shown = sorted(first_rule, key=lambda k: (fate[k] != "kept", order.index(stage_of[first_rule[k]]), k))[:show]
    corpus = alone[0]["corpus_docs"]
    return {
        "rules": [{"stage": w["stage"], "param": w["param"], "column": w["column"], "value_as_run": w["value_as_run"],
                   "value": w["value"], "removes": w["removes"], "removes_at_value": w["removes_at_value"],
                   "change": {True: "stricter", False: "looser, lets none pass", None: "as run"}[s],
                   "would_remove": w["would_remove"], "would_remove_from_corpus": w["would_remove_from_corpus"],
                   "also_in_rerun": w["also_in_rerun"]} for w, s in zip(alone, stricter)],
        "docs_read": int(stats.get("docs_read") or 0), "docs_removed_as_run": int(stats.get("docs_removed") or 0),
        "corpus_docs": corpus,
        "corpus_lost": len(lost),
        # per stage, in order: the corpus documents whose first failing rule is there (the rerun's removing stage)
        "lost_first_by": {st: sum(1 for k in lost if stage_of[first_rule[k]] == st) for st in dict.fromkeys(first_stages)},
        "lost_to_several": sum(1 for k in lost if len(fails[k]) > 1),
        "removed_earlier": len(first_rule) - len(lost),  # removed as run at a later stage: reason changes, not fate
        "removed_together": int(stats.get("docs_removed") or 0) + len(lost),
        "passes_after": passes_after,
        "unfinished": alone[0]["unfinished"],
        "documents": [{"shard": k[0], "id": k[1], "now": fate[k], "stage": stage_of[first_rule[k]],
                       "first": f"{stage_of[first_rule[k]]}.{alone[first_rule[k]]['param']}",
                       "fails": [f"{stage_of[i]}.{alone[i]['param']}" for i in fails[k]]} for k in shown],
    }


def render_what_if_together(t: dict[str, Any]) -> list[str]:
    """The lines ``refinery stats --what-if A --what-if B`` prints."""
    corpus = t["corpus_docs"]
    pct = 100.0 * t["corpus_lost"] / corpus if corpus else 0.0
    lines = [f"what if {len(t['rules'])} thresholds move together (each stricter or unchanged in effect: counted exactly, "
             f"on the run's outputs), of {t['docs_read']:,} documents read, {corpus:,} kept:"]
    for r in t["rules"]:
        value = "off (null)" if r["value"] is None else fmt_value(r["value"])
        lines.append(f"  {r['stage']}.{r['param']} = {fmt_value(r['value_as_run'])} -> {value} ({r['change']}; column "
                     f"{r['column']}): alone {r['would_remove_from_corpus']:,} from the corpus, {r['would_remove']:,} of the "
                     "documents it kept")
    firsts = ", ".join(f"{n:,} first by {stage}" for stage, n in t["lost_first_by"].items())
    lines.append(f"  corpus lost together: {t['corpus_lost']:,} of its {corpus:,} ({pct:.1f}%)"
                 + (f": {firsts}" if firsts else "") + f"; {t['lost_to_several']:,} fail more than one rule")
    lines.append(f"  removed in all:       {t['removed_together']:,} of {t['docs_read']:,} ({t['docs_removed_as_run']:,} as run "
                 f"+ {t['corpus_lost']:,}); {t['removed_earlier']:,} the run removed at a later stage would be removed "
                 "earlier instead (their reason changes, not their fate)")
    if t["passes_after"]:
        lines.append(f"  after them {', '.join(t['passes_after'])}: a copy they removed in place of a lost document may be "
                     "kept instead (not counted)")
    for r in t["rules"]:
        if r["also_in_rerun"]:
            lines.append(f"  in a rerun {r['stage']}.{r['param']} is also {', '.join(r['also_in_rerun'])} (filled from it "
                         "where the recipe does not set them): not counted here")
    if t.get("unfinished"):
        lines.append(f"  note: {t['unfinished']}")
    lost = [d for d in t["documents"] if d["now"] == "kept"]
    if lost:
        lines.append(f"  corpus documents lost ({len(lost)} shown), by the first rule that removes them:")
        lines += [f"    {d['first']:<36} {d['shard']}  {d['id']}" + (f"  (also {', '.join(d['fails'][1:])})" if len(d["fails"]) > 1 else "")
                  for d in lost]
    return lines
