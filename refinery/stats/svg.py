"""Hand-built inline SVG charts for the HTML report: no plotting library, no scripts, no fonts to
fetch. Every text node is escaped. Charts scale with the page through their ``viewBox``."""

from __future__ import annotations

import math
from html import escape
from typing import Any

KEPT = "#2f6fb3"
REMOVED = "#e4572e"
REMOVED_LIGHT = "#f6b9a6"
GRID = "#e6e8eb"
AXIS = "#6b7280"
INK = "#1f2937"
THRESHOLD = "#111827"
#: removal reasons, in order of size (first = largest)
REASON_COLORS = ("#e4572e", "#f3a712", "#8e44ad", "#b33951", "#17a398", "#5c4d7d", "#d35400", "#7f8c8d")
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif\""


def _t(x: float, y: float, text: str, size: int = 12, anchor: str = "middle", fill: str = INK,
       weight: str = "normal", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" '
            f'font-weight="{weight}" {extra}>{escape(text)}</text>')


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    # width = natural size (CSS caps it at 100%): text never grows past its design size
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" role="img" '
            f'aria-label="{escape(label, quote=True)}" {FONT} class="chart">'
            f"<title>{escape(label)}</title>{''.join(body)}</svg>")


def fmt_int(n: float) -> str:
    return f"{int(round(n)):,}"


def fmt_compact(n: float) -> str:
    n = float(n)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}" if n != int(n) else f"{int(n)}"


def fmt_value(v: float) -> str:
    """A metric or threshold value in full, as the report writes one: whole numbers with
    thousands separators, others to 6 significant digits, with separators from a million up
    (a threshold of 100,000,000 read "1e+08" beside axis ticks of "100M"; h165)."""
    v = float(v)
    if not math.isfinite(v) or abs(v) >= 1e15:
        return f"{v:.6g}"
    if v.is_integer():
        return f"{int(v):,}"
    return f"{v:,.1f}" if abs(v) >= 1e6 else f"{v:.6g}"


def _tick(v: float, spec: str) -> str:
    """An axis tick: ``spec``, or compact from a million up ("25M", as log axes say, not "2.5e+07")."""
    return fmt_compact(v) if abs(v) >= 1e6 else format(v, spec)


def _nice_max(v: float) -> tuple[float, float]:
    """A round axis maximum >= v and a tick step (1, 2 or 5 x 10^k)."""
    if v <= 0:
        return 1.0, 0.25
    raw = v / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return step * math.ceil(v / step), step


# -- funnel -----------------------------------------------------------------------------------
def funnel_svg(stages: list[dict[str, Any]]) -> str:
    """RefinedWeb-style waterfall: per stage, % of the run's input documents still kept (solid)
    and the share this stage removed (light, stacked on top), labelled with both."""
    if not stages:
        return ""
    first = stages[0]["docs_in"] or 1
    n = len(stages)
    slot = max(76, min(170, 1000 // n))
    labels = [_wrap(s["stage"], max(9, int(slot / 7.5))) for s in stages]
    left, right, top = 56, 16, 34
    bottom = 18 + 14 * max(len(lines) for lines in labels) + 14
    width = left + right + slot * n
    plot_h = 270
    height = top + plot_h + bottom
    body: list[str] = []
    for pct in range(0, 101, 20):
        y = top + plot_h * (1 - pct / 100)
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(_t(left - 8, y + 4, f"{pct}%", 11, "end", AXIS))
    body.append(_t(14, top + plot_h / 2, "% of input documents", 11, "middle", AXIS,
                   extra=f'transform="rotate(-90 14 {top + plot_h / 2:.1f})"'))
    bar_w = slot * 0.62
    for i, s in enumerate(stages):
        kept_pct = 100.0 * s["docs_out"] / first
        before_pct = 100.0 * s["docs_in"] / first
        x = left + slot * i + (slot - bar_w) / 2
        cx = x + bar_w / 2
        y_kept = top + plot_h * (1 - kept_pct / 100)
        y_before = top + plot_h * (1 - before_pct / 100)
        removed_h = y_kept - y_before
        tip = f"{s['stage']}: {s['docs_out']:,} of {s['docs_in']:,} kept, {s['docs_removed']:,} removed"
        body.append(f'<g class="funnel-bar" data-stage="{escape(s["stage"], quote=True)}" '
                    f'data-kept-pct="{kept_pct:.1f}"><title>{escape(tip)}</title>')
        if removed_h > 0.01:
            body.append(f'<rect x="{x:.1f}" y="{y_before:.1f}" width="{bar_w:.1f}" height="{removed_h:.1f}" '
                        f'fill="{REMOVED_LIGHT}" stroke="{REMOVED}" stroke-width="0.8" stroke-dasharray="3 2"/>')
        body.append(f'<rect x="{x:.1f}" y="{y_kept:.1f}" width="{bar_w:.1f}" '
                    f'height="{top + plot_h - y_kept:.1f}" fill="{KEPT}" rx="1.5"/>')
        body.append(_t(cx, y_before - 18 if removed_h > 0.01 else y_kept - 18, f"{kept_pct:.1f}%", 13, weight="600"))
        if s["docs_removed"]:
            removed_pct = 100.0 * s["docs_removed"] / first
            # a removal too small for one decimal is "< 0.1", not "0.0" (1 of 4,182 read: testing)
            label = f"−{removed_pct:.1f} pt" if removed_pct >= 0.05 else "< −0.1 pt"
            body.append(_t(cx, (y_before if removed_h > 0.01 else y_kept) - 5, label, 10, fill=REMOVED))
        body.append("</g>")
        lines = labels[i]
        for j, text in enumerate(lines):
            body.append(_t(cx, top + plot_h + 18 + 14 * j, text, 11.5, fill=INK))
        body.append(_t(cx, top + plot_h + 18 + 14 * len(lines) + 2, f"{s['docs_out']:,} docs", 10, fill=AXIS))
    body.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{AXIS}"/>')
    return _svg(width, height, body, "funnel: % of input documents kept after each stage")


def _wrap(name: str, width: int) -> list[str]:
    """Stage names wrapped after underscores (at most 3 lines) so long names stay readable."""
    words = name.replace("_", "_\u200b").split("\u200b")
    lines, line = [], ""
    for w in words:
        if line and len(line + w) > width:
            lines.append(line)
            line = w
        else:
            line += w
    lines.append(line)
    return lines[:3]


# -- histograms -------------------------------------------------------------------------------
def _position(edges: list[float], scale: str, value: float) -> float | None:
    """Fractional bin index of ``value`` (bins drawn with equal widths), None if off the axis."""
    if value < edges[0] or value > edges[-1]:
        return None
    for i in range(len(edges) - 1):
        a, b = edges[i], edges[i + 1]
        if a <= value <= b:
            if scale == "log" and a > 0:
                return i + (math.log(value / a) / math.log(b / a) if value > 0 else 0.0)
            return i + (value - a) / (b - a)
    return None


def _stack(body: list[str], x: float, width: float, y0: float, stack: list[tuple[int, str]], ph: float, ymax: float,
           extra: str = "") -> float:
    """Bars of ``(count, color)`` stacked up from ``y0``, ``width`` wide from ``x`` (``ph`` px for
    ``ymax`` documents), appended to ``body``; returns the stack's top."""
    for count, color in stack:
        if count:
            hgt = ph * count / ymax
            body.append(f'<rect x="{x:.1f}" y="{y0 - hgt:.1f}" width="{max(width, 0.8):.1f}" '
                        f'height="{hgt:.1f}" fill="{color}"{extra}/>')
            y0 -= hgt
    return y0


def _split_bin(i: int, marks_at: dict[int, tuple[float, dict[str, Any]]], by_reason: dict[str, list[int]],
               kept: list[int]) -> tuple[float, dict[str, Any]] | None:
    """(the line's place in bin ``i``, its threshold) when a line falls inside the bin and the bin
    holds documents of a known side (kept, or removed by its rule): the bar is split there.
    A bin's bar was drawn whole beside the line (``min_words = 50`` in the log bin [44.7, 50.1): the
    kept document at 50 drawn left of it, with the 8 removed; h188)."""
    found = marks_at.get(i)
    if found is None:
        return None
    own = sum(by_reason[r][i] for r in found[1]["reasons"] if r in by_reason)
    return found if kept[i] or own else None


def _ticks(edges: list[float], scale: str, lo: int, hi: int) -> list[tuple[float, str]]:
    if scale == "log":
        out = [(0.0, "0")] if lo == 0 else []
        first, last = edges[max(lo, 1)], edges[hi]
        decades = range(math.floor(math.log10(first)), math.ceil(math.log10(last)) + 1)
        # 1-2-5 ticks over a narrow range, decades only over a wide one
        multipliers = (1, 2, 3, 5) if len(decades) <= 2 else (1, 2, 5) if len(decades) <= 3 else (1,)
        for k in decades:
            for m in multipliers:
                v = m * 10.0 ** k
                pos = _position(edges, scale, v) if first <= v <= last else None
                if pos is not None:
                    out.append((pos, fmt_compact(v)))
        return out
    span = hi - lo
    step = max(1, round(span / 5))
    if scale == "linear" and edges[0] == 0.0 and len(edges) > 2 and edges[1] < (edges[-1] - edges[0]) / 60:
        # [0, 1] with finer bins near 0: label round values, placed by value, not by bin
        top_value = edges[hi]
        _, vstep = _nice_max(top_value)
        values = [0.0, 0.01, 0.02] + [k * vstep for k in range(1, int(round(top_value / vstep)) + 1)]
        out: list[tuple[float, str]] = []
        for v in sorted(set(round(v, 9) for v in values)):
            pos = _position(edges, scale, v)
            if pos is None or pos < lo or pos > hi:
                continue
            if out and pos - out[-1][0] < max(2.5, span / 16):
                continue
            out.append((pos, _tick(v, "g")))
        return out
    if scale == "int":  # label bin centres with their integer
        return [(i + 0.5, _tick(edges[i], "g")) for i in range(lo, hi, max(1, round(span / 10)))]
    return [(float(i), _tick(edges[i], ".4g")) for i in range(lo, hi + 1, step)]


#: histograms whose bins are categories, not numbers: each bin's name on the axis, keyed by column
#: and edges (the same column binned otherwise draws numbers). ``extract_pass`` (the extract
#: stage's ``metric_bins``; refinery.stages._extract_helper.PATHS): its ticks 0-4 named no path (h192)
CATEGORY_BINS: dict[tuple[str, tuple[float, ...]], tuple[str, ...]] = {
    ("extract_pass", (0.0, 1.0, 2.0, 3.0, 4.0)): ("input", "first pass", "fallback", "baseline"),
}


def category_names(h: dict[str, Any]) -> tuple[str, ...] | None:
    """The names of ``h``'s bins when they are categories (:data:`CATEGORY_BINS`), else None."""
    return CATEGORY_BINS.get((h.get("column"), tuple(float(e) for e in h["edges"])))


OTHER_REASONS = "other reasons"
OTHER_COLOR = "#9ca3af"
MAX_REASON_COLORS = 5


def reason_series(h: dict[str, Any]) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Removed-count series per reason (the largest few, the rest as "other reasons") and colors."""
    by_reason = h.get("by_reason") or {}
    if not by_reason:
        removed = h["counts"]["removed"]
        return ({"removed": removed}, {"removed": REMOVED}) if any(removed) else ({}, {})
    order = sorted(by_reason, key=lambda r: (-sum(by_reason[r]), r))
    series = {r: by_reason[r] for r in order[:MAX_REASON_COLORS]}
    colors = {r: REASON_COLORS[i] for i, r in enumerate(series)}
    rest = order[MAX_REASON_COLORS:]
    if rest:
        series[OTHER_REASONS] = [sum(vals) for vals in zip(*(by_reason[r] for r in rest))]
        colors[OTHER_REASONS] = OTHER_COLOR
    return series, colors


def histogram_svg(h: dict[str, Any], thresholds: list[dict[str, Any]] | None = None, title: str = "") -> str:
    """Stacked histogram (kept, then removed by this stage per reason) with threshold lines;
    "" when no value was counted (only nulls): an empty chart says nothing."""
    edges: list[float] = h["edges"]
    if not any(sum(h["counts"][side]) + h["under"][side] + h["over"][side] for side in ("kept", "removed")):
        return ""
    kept, removed = h["counts"]["kept"], h["counts"]["removed"]
    by_reason, colors = reason_series(h)
    totals = [a + b for a, b in zip(kept, removed)]
    nbins = len(totals)
    nonzero = [i for i, t in enumerate(totals) if t]
    thresholds = thresholds or []
    marks = [p for p in (_position(edges, h["scale"], t["value"]) for t in thresholds) if p is not None]
    # a line strictly inside a bin whose rule's direction is known (``lower``, ``reasons``: the report
    # adds them): the bin's kept documents passed it, its own removals failed it (h196)
    marks_at = {int(p): (p - int(p), t) for t, p in ((t, _position(edges, h["scale"], t["value"])) for t in thresholds)
                if p is not None and 0 < p - int(p) < 1 and "lower" in t}
    idx = nonzero + [int(p) for p in marks]
    names = category_names(h)
    if names:  # categories (extraction's paths) have no value between them
        marks_at = {}
    if names:  # every category, the empty ones too: "no fallback" is an answer
        lo, hi = 0, nbins
    elif h["scale"] == "linear":  # from 0 up to the data and thresholds, in steps of 5 bins
        lo = 0
        hi = min(nbins, -(-(max(idx) + 3) // 5) * 5) if idx else nbins
    else:  # show the populated range (and the thresholds), not seven empty decades
        lo = max(0, min(idx) - 2) if idx else 0
        hi = min(nbins, max(idx) + 3) if idx else nbins
    # legend entries laid out in rows: kept + each reason with its count
    legend = [("kept", KEPT, sum(kept))] + [(r, colors[r], sum(by_reason[r])) for r in colors]
    width, height = 580, 270
    placed, lx, row = [], 8.0, 0
    for label, color, n in legend:
        text = f"{label} ({n:,})"
        w = 13 + 6.2 * len(text) + 14
        if lx + w > width - 8 and lx > 8:
            lx, row = 8.0, row + 1
        placed.append((lx, 25 + 15 * row, text, color))
        lx += w
    left, right, top, bottom = 52, 14, 48 + 15 * row, 40
    height += 15 * row
    pw, ph = width - left - right, height - top - bottom
    ymax, ystep = _nice_max(max(totals[lo:hi] or [0]))
    bw = pw / max(hi - lo, 1)
    body = [_t(8, 16, title, 13, "start", INK, "600")] if title else []
    for x, y, text, color in placed:
        body.append(f'<rect x="{x:.1f}" y="{y}" width="9" height="9" fill="{color}" rx="1.5"/>')
        body.append(_t(x + 13, y + 8.5, text, 11, "start", AXIS))
    y = 0.0
    while y <= ymax + 1e-9:
        py = top + ph * (1 - y / ymax)
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{py:.1f}" y2="{py:.1f}" stroke="{GRID}"/>')
        body.append(_t(left - 6, py + 4, fmt_compact(y), 11, "end", AXIS))
        y += ystep
    for i in range(lo, hi):
        if not totals[i]:
            continue
        x = left + (i - lo) * bw
        parts = [f"{kept[i]:,} kept"] + [f"{c[i]:,} {r}" for r, c in by_reason.items() if c[i]]
        where = names[i] if names else f"[{_tick(edges[i], '.4g')}, {_tick(edges[i + 1], '.4g')})"  # as the axis says
        tip = f"{where}: " + ", ".join(parts)
        body.append(f"<g><title>{escape(tip)}</title>")
        y0 = top + ph
        inside = _split_bin(i, marks_at, by_reason, kept)
        if inside is not None:  # a line inside this bin: its documents drawn on their side of it
            frac, mark = inside
            cut = x + frac * bw  # the line; the kept side at least 2 px wide (into the next bin's gap)
            sides = {"pass": (cut, max(x + bw - 1.0 - cut, 2.0)), "fail": (x + 0.5, cut - x - 1.0)} if mark["lower"] else \
                {"pass": (min(x + 0.5, cut - 2.5), max(cut - x - 1.0, 2.0)), "fail": (cut, x + bw - 1.0 - cut)}
            stacks = {"pass": [(kept[i], KEPT)], "fail": [(by_reason[r][i], colors[r]) for r in colors
                                                       if r in mark["reasons"]]}
            # the other reasons' removals, either side of the line: over the whole bin, above both
            y0 = min(_stack(body, *sides[side], y0, stack, ph, ymax, f' data-side="{side}"')
                     for side, stack in stacks.items())
            rest = [(by_reason[r][i], colors[r]) for r in colors if r not in mark["reasons"]]
        else:
            rest = [(kept[i], KEPT)] + [(by_reason[r][i], colors[r]) for r in colors]
        _stack(body, x + 0.5, bw - 1, y0, rest, ph, ymax)
        body.append("</g>")
    body.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="{AXIS}"/>')
    # the y axis said no unit (the funnel's does): counts of documents, not of tokens or shards (h188)
    body.append(_t(11, top + ph / 2, "documents", 10.5, "middle", AXIS,
                   extra=f'transform="rotate(-90 11 {top + ph / 2:.1f})"'))
    last_right = -math.inf
    ticks = [(i + 0.5, name) for i, name in enumerate(names)] if names else _ticks(edges, h["scale"], lo, hi)
    for pos, label in ticks:
        px = left + (pos - lo) * bw
        half = 3.3 * len(label)  # ~6.6 px a character at 11 px
        if px - half < last_right + 4:  # a log axis's "0" and "1" sit one bin apart: they read "01" (h188)
            continue
        last_right = px + half
        body.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="{AXIS}"/>')
        body.append(_t(px, top + ph + 16, label, 11, fill=AXIS))
    scale_note = "log scale" if h["scale"] == "log" else ""
    if h["scale"] == "linear" and len(edges) > 2 and edges[1] < (edges[-1] - edges[0]) / 60:
        scale_note = "finer bins below 0.02"
    body.append(_t(left + pw, top + ph + 32, f"{h['column']} {('(' + scale_note + ')') if scale_note else ''}",
                   10.5, "end", AXIS))
    for k, t in enumerate(thresholds):
        pos = _position(edges, h["scale"], t["value"])
        if pos is None or not lo <= pos <= hi:
            continue
        px = left + (pos - lo) * bw
        body.append(f'<line class="threshold" data-value="{t["value"]}" x1="{px:.1f}" x2="{px:.1f}" y1="{top - 4}" '
                    f'y2="{top + ph}" stroke="{THRESHOLD}" stroke-width="1.6" stroke-dasharray="5 3"/>')
        anchor = "start" if px < left + pw * 0.7 else "end"
        dx = 4 if anchor == "start" else -4
        body.append(_t(px + dx, top + 10 + 13 * k, f"{t['param']} = {fmt_value(t['value'])}", 10.5, anchor, THRESHOLD, "600"))
    return _svg(width, height, body, title or h["column"])


# -- languages --------------------------------------------------------------------------------
def languages_svg(rows: list[dict[str, Any]]) -> str:
    """Horizontal bars per language: documents that reached language ID (light) and kept (solid)."""
    if not rows:
        return ""
    width = 640
    row_h, left, right, top = 22, 70, 150, 10
    height = top + row_h * len(rows) + 26
    vmax = max(r["docs_in"] for r in rows) or 1
    pw = width - left - right
    body: list[str] = []
    for i, r in enumerate(rows):
        y = top + i * row_h
        w_in = pw * r["docs_in"] / vmax
        w_kept = pw * r["docs_kept"] / vmax
        body.append(_t(left - 8, y + 15, r["language"], 12, "end", INK, "600"))
        body.append(f'<rect x="{left}" y="{y + 4}" width="{max(w_in, 0.5):.1f}" height="{row_h - 8}" fill="#d7e3f1"/>')
        if w_kept:
            body.append(f'<rect x="{left}" y="{y + 4}" width="{w_kept:.1f}" height="{row_h - 8}" fill="{KEPT}"/>')
        pct = 100.0 * r["docs_kept"] / r["docs_in"] if r["docs_in"] else 0.0
        body.append(_t(left + max(w_in, 0.5) + 6, y + 15, f"{r['docs_kept']:,} / {r['docs_in']:,} ({pct:.0f}% kept)",
                       10.5, "start", AXIS))
    y = top + row_h * len(rows) + 16
    body.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="#d7e3f1"/>')
    body.append(_t(left + 14, y, "reached language ID", 10.5, "start", AXIS))
    body.append(f'<rect x="{left + 150}" y="{y - 9}" width="10" height="10" fill="{KEPT}"/>')
    body.append(_t(left + 164, y, "kept at the end of the run", 10.5, "start", AXIS))
    return _svg(width, height, body, "documents per language")


# -- what-if curves ---------------------------------------------------------------------------
#: the what-if chart's y axis is cut to the curve near the value as run when the curve's maximum is
#: more than this many times the largest count there (a jump at the window's edge flattened the rest)
WHATIF_JUMP = 3.0


def whatif_y_top(curve: list[dict[str, Any]], current: float, where: Any) -> float:
    """The largest count the what-if chart's y axis must show: the curve's maximum, or when that is
    over ``WHATIF_JUMP`` times the largest count in the middle half of the chart (``where(x)``: the
    fraction of the x axis; the value as run included), that count: language ID's curve jumps to
    every document at a min_score of 1.0 and drew the part around 0.65 as a flat line."""
    top = max(p["removed"] for p in curve)
    near = [p["removed"] for p in curve if 0.25 <= where(p["x"]) <= 0.75 or p["x"] == current]
    local = max(near) if near else top
    return float(local) if top > WHATIF_JUMP * max(local, 1) else float(top)


def whatif_svg(view: dict[str, Any], title: str = "") -> str:
    """Documents a threshold's rule would remove (red) and how many of them the corpus holds (blue)
    as the threshold moves over ``view["curve"]`` (:mod:`refinery.stats.whatif_report`), the value
    as run dashed. Each point carries its figures (``data-x``, ``data-removed``, ``data-corpus``)."""
    curve = view["curve"]
    if not curve:
        return ""
    xs = [p["x"] for p in curve]
    log_x = view["scale"] == "log" and xs[0] > 0
    lo, hi = (math.log(xs[0]), math.log(xs[-1])) if log_x else (xs[0], xs[-1])
    width, height, left, right, top, bottom = 580, 250, 52, 14, 44, 40
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        v = math.log(x) if log_x else x
        return left + (pw * (v - lo) / (hi - lo) if hi > lo else pw / 2)

    ymax, ystep = _nice_max(whatif_y_top(curve, view["value"], lambda x: (px(x) - left) / pw))

    def py(n: float) -> float:
        return top + ph * (1 - min(n, ymax) / ymax)  # a point above the axis sits on its top edge

    body = [_t(8, 16, title, 13, "start", INK, "600")] if title else []
    for i, (label, color) in enumerate((("removed by this rule", REMOVED), ("of them in the corpus now", KEPT))):
        x = 8 + 190 * i
        body.append(f'<rect x="{x}" y="25" width="9" height="9" fill="{color}" rx="1.5"/>')
        body.append(_t(x + 13, 33.5, label, 11, "start", AXIS))
    y = 0.0
    while y <= ymax + 1e-9:
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="{GRID}"/>')
        body.append(_t(left - 6, py(y) + 4, fmt_compact(y), 11, "end", AXIS))
        y += ystep
    body.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="{AXIS}"/>')
    body.append(_t(11, top + ph / 2, "documents", 10.5, "middle", AXIS,
                   extra=f'transform="rotate(-90 11 {top + ph / 2:.1f})"'))

    def mid(a: float, b: float) -> float:
        return math.sqrt(a * b) if log_x else (a + b) / 2

    current = view["value"]
    ticks: list[float] = []
    for x_value in (xs[0], mid(xs[0], current), current, mid(current, xs[-1]), xs[-1]):  # the value as run labelled
        if all(abs(px(x_value) - px(t)) >= 30 for t in ticks):
            ticks.append(x_value)
    for x_value in ticks:
        body.append(f'<line x1="{px(x_value):.1f}" x2="{px(x_value):.1f}" y1="{top + ph}" y2="{top + ph + 4}" '
                    f'stroke="{AXIS}"/>')
        body.append(_t(px(x_value), top + ph + 16, fmt_compact(x_value), 11, fill=AXIS))
    body.append(_t(left + pw, top + ph + 32, f"{view['column']} threshold{' (log scale)' if log_x else ''}",
                   10.5, "end", AXIS))
    for key, color in (("removed", REMOVED), ("corpus", KEPT)):
        path = " ".join(f"{px(p['x']):.1f},{py(p[key]):.1f}" for p in curve)
        body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.8"/>')
    reached, corpus = view["reached"] or 1, view["corpus_docs"] or 1
    off = [p for p in curve if p["removed"] > ymax]
    if off:  # the axis is cut to the curve near the value as run: say what lies above it
        body.append(_t(left + pw, 33.5, f"↑ {len(off)} point{'s' * (len(off) > 1)} above {fmt_compact(ymax)}, up to "
                       f"{fmt_int(max(p['removed'] for p in off))}", 10.5, "end", REMOVED))
    for p in curve:
        tip = (f"{fmt_value(p['x'])}: {p['removed']:,} removed ({100 * p['removed'] / reached:.1f}%), "
               f"{p['corpus']:,} from the corpus ({100 * p['corpus'] / corpus:.1f}%)")
        body.append(f'<circle class="whatif-pt" data-x="{p["x"]!r}" data-removed="{p["removed"]}" '
                    f'data-corpus="{p["corpus"]}" cx="{px(p["x"]):.1f}" cy="{py(p["removed"]):.1f}" r="2.4" '
                    + (f'fill="white" stroke="{REMOVED}"' if p["removed"] > ymax else f'fill="{REMOVED}"')
                    + f'><title>{escape(tip)}</title></circle>')
    cx = px(view["value"])
    body.append(f'<line class="as-run" data-value="{view["value"]!r}" x1="{cx:.1f}" x2="{cx:.1f}" y1="{top - 4}" '
                f'y2="{top + ph}" stroke="{THRESHOLD}" stroke-width="1.6" stroke-dasharray="5 3"/>')
    anchor, dx = ("start", 4) if cx < left + pw * 0.7 else ("end", -4)
    body.append(_t(cx + dx, top + 10, f"{view['param']} = {fmt_value(view['value'])} (as run)", 10.5, anchor, THRESHOLD, "600"))
    return _svg(width, height, body, title or f"what if {view['stage']}.{view['param']} moves")
