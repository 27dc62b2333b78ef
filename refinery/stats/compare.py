"""Compare two runs' funnels: how a config change moved each stage and each removal reason.

Stages are matched by name (a stage present in one run only shows blanks on the other side), and
the runs' readers with each other whatever their format (as a run of mixed inputs merges its
readers into one row), so the documents each run read sit on its first row.
For every stage and reason: documents removed in A and B and the difference, the removal rate
(% of the documents that reached the stage) in A and B and its change in percentage points;
for every stage also the share of the run's input still kept after it, the words cut from the
documents it kept (edits) and its named counters in A and B; and what the runs' readers repaired
(``reader_notes``) in A and B.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from refinery.stats.funnel import (READER_KINDS, FitWidth, fill_stage_table, funnel_rows, has_edits, name_layouts,
                                   reader_name, reader_note_meaning, stage_groups)


def _pp(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{stage, reason, removed_a, removed_b, delta, rate_a, rate_b, rate_pp, kept_a, kept_b, kept_pp,
    words_cut_a, words_cut_b, words_cut_delta, docs_edited_a, docs_edited_b, counters_a, counters_b}``
    (the edit and counter fields are None / {} on reason rows); the reader's row also has
    ``reader_notes_a`` and ``reader_notes_b``, what each run's readers repaired (None: a run whose
    stats hold no notes, made before session 50 merged them)."""
    key_a, key_b = _row_names(a, b)
    reader_row = _reader_row_name(a, b)
    rows_a = {(key_a(r["stage"]), r["reason"]): r for r in funnel_rows(a)}
    rows_b = {(key_b(r["stage"]), r["reason"]): r for r in funnel_rows(b)}
    out: list[dict[str, Any]] = []
    for stage in stage_order(a, b):
        reasons = sorted(
            {k[1] for k in list(rows_a) + list(rows_b) if k[0] == stage and k[1]},
            key=lambda reason: (-max(rows_a.get((stage, reason), {}).get("removed", 0),
                                     rows_b.get((stage, reason), {}).get("removed", 0)), reason),
        )
        for reason in [""] + reasons:
            ra, rb = rows_a.get((stage, reason)), rows_b.get((stage, reason))
            if reason and ra is None and (stage, "") in rows_a:  # the stage ran in A but never removed for it
                ra = {"removed": 0, "removed_pct_of_stage": 0.0}
            if reason and rb is None and (stage, "") in rows_b:
                rb = {"removed": 0, "removed_pct_of_stage": 0.0}
            removed_a = None if ra is None else ra["removed"]
            removed_b = None if rb is None else rb["removed"]
            # a stage that saw no document has no removal rate (it read as 0%, an "improvement")
            rate_a = None if ra is None or _saw_none(rows_a, stage) else ra["removed_pct_of_stage"]
            rate_b = None if rb is None or _saw_none(rows_b, stage) else rb["removed_pct_of_stage"]
            kept_a = None if ra is None else ra.get("kept_pct_of_input")
            kept_b = None if rb is None else rb.get("kept_pct_of_input")
            out.append({
                "stage": stage, "reason": reason,
                "docs_in_a": None if ra is None else ra.get("docs_in"),
                "docs_in_b": None if rb is None else rb.get("docs_in"),
                "removed_a": removed_a, "removed_b": removed_b,
                "delta": None if removed_a is None or removed_b is None else removed_b - removed_a,
                "rate_a": rate_a, "rate_b": rate_b, "rate_pp": _pp(rate_a, rate_b),
                "kept_a": kept_a, "kept_b": kept_b, "kept_pp": _pp(kept_a, kept_b),
                **_edits(ra, rb),
            })
            if stage == reader_row and not reason:
                out[-1].update(reader_notes_a=_notes(a), reader_notes_b=_notes(b))
    return out


def merged_order(names_a: list[str], names_b: list[str], group: Callable[[str], int] | None = None) -> list[str]:
    """Two runs' stages (or passes, or config sections) side by side: A's names in A's order, each
    name only B has below every name B ran before it and below the names only A has that follow
    those (a stage renamed from ``a`` to ``b``: r, a, b, c, not r, b, a, c); at the start if B ran
    none before it. ``group`` (the reader 0, document stages 1, corpus passes 2: :func:`stage_groups`)
    keeps each group apart, in its order: a B-only stage never lands among the dedup passes, nor a
    B-only pass among the stages."""
    if group is None:
        return _merged_group(names_a, names_b)
    order: list[str] = []
    for g in sorted({group(n) for n in names_a + names_b}):
        order += _merged_group([n for n in names_a if group(n) == g], [n for n in names_b if group(n) == g])
    return order


def _merged_group(names_a: list[str], names_b: list[str]) -> list[str]:
    order = list(names_a)
    in_b = set(names_b)
    for i, name in enumerate(names_b):
        if name in order:
            continue
        # below every name B ran before it: after only the last of them (B: r, gr, gq, x against
        # A: r, gq, gr) x sat between gq and gr, mid-table, above a stage B ran before it
        before = [order.index(n) for n in names_b[:i] if n in order]
        at = max(before) + 1 if before else 0
        while at < len(order) and order[at] not in in_b:  # A's own names stay first: A's order leads
            at += 1
        order.insert(at, name)
    return order


def stage_order(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The comparison's stage rows in order (as :func:`compare_rows` lists them)."""
    key_a, key_b = _row_names(a, b)
    groups = {key_b(n): g for n, g in stage_groups(b).items()} | {key_a(n): g for n, g in stage_groups(a).items()}
    return merged_order([key_a(s["stage"]) for s in a["stages"]], [key_b(s["stage"]) for s in b["stages"]],
                        lambda name: groups.get(name, 1))


def _row_names(a: dict[str, Any], b: dict[str, Any]) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """How each run's stage names are shown: as they are, but for readers of different names,
    which share one row named ``<A's reader> / <B's reader>`` (a run that read WARC and one that
    read JSONL had two reader rows, each blank on the other side and B's above A's)."""
    ra, rb = reader_name(a), reader_name(b)
    if ra is None or rb is None or ra == rb:
        return (lambda name: name), (lambda name: name)
    joint = f"{ra} / {rb}"
    return (lambda name: joint if name == ra else name), (lambda name: joint if name == rb else name)


def _reader_row_name(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The comparison's reader row (``<A's reader> / <B's reader>`` when they differ), or None."""
    key_a, key_b = _row_names(a, b)
    ra, rb = reader_name(a), reader_name(b)
    return key_a(ra) if ra is not None else None if rb is None else key_b(rb)


def _notes(summary: dict[str, Any]) -> dict[str, int] | None:
    """A run's non-zero reader notes; None when its stats hold none at all (made before session 50)."""
    notes = summary.get("reader_notes")
    return None if notes is None else {k: int(n) for k, n in sorted(notes.items()) if n}


def compare_reader_note_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """``{stage, note, count_a, count_b, delta, meaning}`` for every reader note (what the readers
    repaired, ``reader_notes``) of A or B, under the comparison's reader row: a note of one run only
    counts 0 in the other (its readers repaired none), None (no delta) in a run whose stats hold no
    notes at all."""
    notes_a, notes_b = _notes(a), _notes(b)
    stage = _reader_row_name(a, b) or "reader"
    rows = []
    for name in sorted(set(notes_a or {}) | set(notes_b or {})):
        ca = None if notes_a is None else notes_a.get(name, 0)
        cb = None if notes_b is None else notes_b.get(name, 0)
        rows.append({"stage": stage, "note": name, "count_a": ca, "count_b": cb,
                     "delta": None if ca is None or cb is None else cb - ca, "meaning": reader_note_meaning(name)})
    return rows


def _saw_none(rows: dict[tuple[str, str], dict[str, Any]], stage: str) -> bool:
    return (rows.get((stage, "")) or {}).get("docs_in") == 0


def order_note(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """One line when the stages both runs have ran in another order in B (the comparison lists
    them in A's order, so B's kept shares would read out of sequence); else None."""
    names_a = [s["stage"] for s in a.get("stages", [])]
    names_b = [s["stage"] for s in b.get("stages", [])]
    common = set(names_a) & set(names_b)
    seq_a = [n for n in names_a if n in common]
    seq_b = [n for n in names_b if n in common]
    if seq_a == seq_b:
        return None
    return f"the runs ran their stages in another order (rows follow A's): A {' → '.join(seq_a)}; B {' → '.join(seq_b)}"


def _edits(ra: dict[str, Any] | None, rb: dict[str, Any] | None) -> dict[str, Any]:
    cut_a = None if ra is None else ra.get("words_cut")
    cut_b = None if rb is None else rb.get("words_cut")
    return {
        "words_cut_a": cut_a, "words_cut_b": cut_b,
        "words_cut_delta": None if cut_a is None or cut_b is None else cut_b - cut_a,
        "docs_edited_a": None if ra is None else ra.get("docs_edited"),
        "docs_edited_b": None if rb is None else rb.get("docs_edited"),
        "counters_a": {} if ra is None else dict(ra.get("counters") or {}),
        "counters_b": {} if rb is None else dict(rb.get("counters") or {}),
    }


def compare_counter_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """``{stage, counter, count_a, count_b, delta}`` for every named stage counter in A or B
    (None where the stage did not run in that run; 0 where it ran but never counted it)."""
    rows = []
    for r in compare_rows(a, b):
        if r["reason"]:
            continue
        ran_a, ran_b = r["removed_a"] is not None, r["removed_b"] is not None
        for name in sorted(set(r["counters_a"]) | set(r["counters_b"])):
            ca = r["counters_a"].get(name, 0) if ran_a else None
            cb = r["counters_b"].get(name, 0) if ran_b else None
            rows.append({"stage": r["stage"], "counter": name, "count_a": ca, "count_b": cb,
                         "delta": None if ca is None or cb is None else cb - ca})
    return rows


#: compare columns: (key, header); numbers, after the stage / reason name(s)
COMPARE_COLUMNS = (("removed_a", "removed A"), ("removed_b", "removed B"), ("delta", "Δ docs"),
                   ("rate_a", "rate A"), ("rate_b", "rate B"), ("rate_pp", "Δ rate pp"),
                   ("kept_a", "kept % A"), ("kept_b", "kept % B"), ("kept_pp", "Δ kept pp"),
                   ("words_cut_a", "words cut (net) A"), ("words_cut_b", "words cut (net) B"))
#: shown only when A or B cut text from kept documents
COMPARE_EDIT_COLUMNS = ("words_cut_a", "words_cut_b")
#: dropped in this order when the table is too wide: the differences stay longest
COMPARE_DROP_ORDER = ("rate_a", "rate_b", "kept_a", "kept_b", "words_cut_a", "kept_pp", "removed_a")


def render_compare(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B") -> FitWidth:
    """The comparison table, fitted to the console's width (:class:`~refinery.stats.funnel.FitWidth`):
    narrower, the reasons sit indented under their stage and the rates and kept shares of A and B
    are left out before their differences (the caption says which); numbers are never truncated and
    names never broken."""
    from rich.text import Text

    rows = compare_rows(a, b)
    edits = has_edits(a) or has_edits(b)
    columns = [(k, h) for k, h in COMPARE_COLUMNS if edits or k not in COMPARE_EDIT_COLUMNS]
    headers = dict(columns)

    def n(v: int | None) -> str:
        return "–" if v is None else f"{v:,}"

    def pct(v: float | None) -> str:
        return "" if v is None else f"{v:.1f}%"

    def signed(v: float | int | None, fmt: str, more_is_good: bool = False) -> "str | Text":
        # red = more documents removed / fewer kept than in A; green = the opposite
        if v is None:
            return "–"
        text = format(v, fmt)
        if text.strip("-0.,") == "":
            return text.lstrip("-")
        # styled Text, not markup: the table is printed with markup off (stage names are user data)
        if v > 0:
            return Text(f"+{text}", style="green" if more_is_good else "red")
        return Text(text, style="red" if more_is_good else "green")

    def cell(r: dict[str, Any], key: str) -> "str | Text":
        if key in ("removed_a", "removed_b", "words_cut_a", "words_cut_b"):
            return n(r[key]) if not (r["reason"] and key.startswith("words_cut")) else ""
        if key == "delta":
            return signed(r["delta"], ",")
        if key in ("rate_a", "rate_b", "kept_a", "kept_b"):
            return pct(r[key])
        if key == "rate_pp":
            return signed(r["rate_pp"], ".1f")
        return "" if r["reason"] else signed(r["kept_pp"], ".1f", more_is_good=True)

    def build(separate: bool, keys: list[str]) -> Any:
        from rich.table import Table

        from rich import box

        hidden = [headers[k] for k, _ in columns if k not in keys]
        caption = f"hidden at this width: {', '.join(hidden)} (see --json)" if hidden else None
        table = Table(title=Text(f"A = {name_a}\nB = {name_b}"), title_justify="left", caption=caption,
                      box=box.HEAVY_HEAD if separate else box.SIMPLE_HEAD)
        return fill_stage_table(table, rows, keys, headers, cell, separate)

    layouts = name_layouts([k for k, _ in columns], tuple(k for k in COMPARE_DROP_ORDER if k in headers))
    return FitWidth([lambda sep=sep, keys=keys: build(sep, keys) for sep, keys in layouts],
                    after=[t for t in [_reader_notes_table(a, b), _counters_table(a, b)] if t is not None])


def _reader_notes_table(a: dict[str, Any], b: dict[str, Any]) -> Any:
    """What the readers of A and B repaired and the difference (a rich Table), or None: as the
    one-run funnel shows them, under the comparison and above the stage counters."""
    return _side_by_side_table("reader notes (repaired, none removed)", "note", compare_reader_note_rows(a, b))


def _counters_table(a: dict[str, Any], b: dict[str, Any]) -> Any:
    """The named stage counters of A and B and their difference (a rich Table), or None."""
    return _side_by_side_table("stage counters", "counter", compare_counter_rows(a, b))


def _side_by_side_table(title: str, name: str, rows: list[dict[str, Any]]) -> Any:
    """Named counts of A and B (``{stage, <name>, count_a, count_b, delta[, meaning]}`` rows) with
    their difference, "–" where a run has no count (a rich Table), or None when there are none."""
    if not rows:
        return None
    from rich.table import Table

    from rich import box

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for header in ("stage", name):
        table.add_column(header, no_wrap=True)
    for header in ("A", "B", "Δ"):
        table.add_column(header, justify="right", no_wrap=True)
    meanings = "meaning" in rows[0]
    if meanings:
        table.add_column("what")
    for r in rows:
        delta = "–" if r["delta"] is None else f"{r['delta']:+,}" if r["delta"] else "0"
        table.add_row(r["stage"], r[name], *("–" if v is None else f"{v:,}" for v in (r["count_a"], r["count_b"])),
                      delta, *([r["meaning"]] if meanings else []))
    return table


def setting_changes(differing: list[dict]) -> list[str]:
    """The differing settings, one entry per key, a stage present in one run only as one entry
    (a dropped stage's 7 parameters hid the input and pass-order changes behind "...": testing)."""
    by_stage: dict[str, list[dict]] = {}
    for r in differing:
        by_stage.setdefault(str(r["stage"]), []).append(r)
    parts: list[str] = []
    for stage, rows in by_stage.items():
        if len(rows) > 1 and all(r["b"] is None for r in rows):
            parts.append(f"{stage}: only in A")
        elif len(rows) > 1 and all(r["a"] is None for r in rows):
            parts.append(f"{stage}: only in B")
        else:
            parts += [f"{stage}.{r['param']}: {_setting(r['a'])} -> {_setting(r['b'])}" for r in rows]
    return parts


def _setting(value: object) -> str:
    """A setting as compare prints it: a run without the key says so ("None" read as a value)."""
    return "(not set)" if value is None else str(value)
