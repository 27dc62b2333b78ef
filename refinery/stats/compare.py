"""Compare two runs' funnels: how a config change moved each stage and each removal reason.

Stages are matched by name (a stage present in one run only shows blanks on the other side).
For every stage and reason: documents removed in A and B and the difference, the removal rate
(% of the documents that reached the stage) in A and B and its change in percentage points;
for every stage also the share of the run's input still kept after it.
"""

from __future__ import annotations

from typing import Any

from refinery.stats.funnel import FitWidth, fill_stage_table, funnel_rows, name_layouts


def _pp(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{stage, reason, removed_a, removed_b, delta, rate_a, rate_b, rate_pp, kept_a, kept_b, kept_pp}``."""
    rows_a = {(r["stage"], r["reason"]): r for r in funnel_rows(a)}
    rows_b = {(r["stage"], r["reason"]): r for r in funnel_rows(b)}
    stage_order = [s["stage"] for s in a["stages"]]
    previous = None
    for s in b["stages"]:  # a stage only B has goes right after its predecessor in B
        name = s["stage"]
        if name not in stage_order:
            stage_order.insert(stage_order.index(previous) + 1 if previous in stage_order else 0, name)
        previous = name
    out: list[dict[str, Any]] = []
    for stage in stage_order:
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
            rate_a = None if ra is None else ra["removed_pct_of_stage"]
            rate_b = None if rb is None else rb["removed_pct_of_stage"]
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
            })
    return out


#: compare columns: (key, header); numbers, after the stage / reason name(s)
COMPARE_COLUMNS = (("removed_a", "removed A"), ("removed_b", "removed B"), ("delta", "Δ docs"),
                   ("rate_a", "rate A"), ("rate_b", "rate B"), ("rate_pp", "Δ rate pp"),
                   ("kept_a", "kept % A"), ("kept_b", "kept % B"), ("kept_pp", "Δ kept pp"))
#: dropped in this order when the table is too wide: the differences stay longest
COMPARE_DROP_ORDER = ("rate_a", "rate_b", "kept_a", "kept_b", "kept_pp", "removed_a")


def render_compare(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B") -> FitWidth:
    """The comparison table, fitted to the console's width (:class:`~refinery.stats.funnel.FitWidth`):
    narrower, the reasons sit indented under their stage and the rates and kept shares of A and B
    are left out before their differences (the caption says which); numbers are never truncated and
    names never broken."""
    from rich.text import Text

    rows = compare_rows(a, b)
    headers = dict(COMPARE_COLUMNS)

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
        if key in ("removed_a", "removed_b"):
            return n(r[key])
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

        hidden = [headers[k] for k, _ in COMPARE_COLUMNS if k not in keys]
        caption = f"hidden at this width: {', '.join(hidden)} (see --json)" if hidden else None
        table = Table(title=Text(f"A = {name_a}\nB = {name_b}"), title_justify="left", caption=caption,
                      box=box.HEAVY_HEAD if separate else box.SIMPLE_HEAD)
        return fill_stage_table(table, rows, keys, headers, cell, separate)

    layouts = name_layouts([k for k, _ in COMPARE_COLUMNS], COMPARE_DROP_ORDER)
    return FitWidth([lambda sep=sep, keys=keys: build(sep, keys) for sep, keys in layouts])
