"""A self-contained HTML report of a run: funnel, score histograms with thresholds, languages,
top removed domains and sampled removed documents.

Self-contained means one file with everything inline: CSS in a ``<style>``, charts as inline SVG
(:mod:`refinery.stats.svg`), no scripts, fonts, images or links to fetch, so it opens offline, in
a mail attachment or from S3. Every value that comes from the data (URLs, reasons, snippets,
stage names) is HTML-escaped.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable
from html import escape
from typing import Any
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refinery import __version__
from refinery.dedup.config import pass_name, without_added_defaults
from refinery.io import fs, parquet
from refinery.io.readahead import read_ahead
from refinery.rundir import PassFiles, RunDir
from refinery.stats.counters import CHARS_PER_TOKEN, est_tokens
from refinery.stats.domains import merge_top_domains
from refinery.stats.funnel import (RUN_TOP_DOMAINS, counter_rows, funnel_rows, funnel_stage, load_run_stats,
                                   reader_note_rows)
from refinery.stats.samples import load_samples, pick_per_reason
from refinery.stats.whatif import counts_for_column, threshold_rule
from refinery.stats.svg import fmt_int, fmt_value, funnel_svg, histogram_svg, languages_svg, whatif_svg
from refinery.stats.compare import compare_counter_rows, compare_rows, merged_order, stage_order
from refinery.stats.thresholds import (READER_METRICS, effective_params, load_run_manifest, neutral_params, reason_metric,
                                      run_thresholds, stage_kinds)

TOP_DOMAINS_SHOWN = 10
LANGUAGES_CHARTED = 15
LANGUAGES_LISTED = 25

CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; --card:#fff; --kept:#2f6fb3;
        --removed:#e4572e; --accent:#0f4c81; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif; }
header { background:#0f2a44; color:#fff; padding:28px 40px 22px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:650; letter-spacing:-.01em; }
header .sub { color:#b9c7d6; font-size:13px; word-break:break-all; }
nav { background:#0f2a44; padding:0 40px 14px; }
nav a { color:#dce6f0; text-decoration:none; margin-right:18px; font-size:13px; }
nav a:hover { color:#fff; text-decoration:underline; }
main { max-width:1240px; margin:0 auto; padding:24px 28px 60px; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:20px 24px;
          margin:0 0 22px; box-shadow:0 1px 2px rgba(0,0,0,.03); }
h2 { font-size:18px; margin:0 0 4px; }
h3 { font-size:15px; margin:22px 0 8px; }
h4 { font-size:13.5px; margin:14px 0 6px; color:#374151; }
p.note, .note { color:var(--muted); font-size:12.5px; margin:2px 0 12px; }
p.partial { background:#fff4e5; border:1px solid #f0b429; border-radius:6px; padding:8px 12px; color:#7a4a00; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(170px,1fr)); gap:12px; margin-top:8px; }
.card { border:1px solid var(--line); border-radius:8px; padding:12px 14px; background:#fbfcfd; }
.card .v { font-size:22px; font-weight:650; font-variant-numeric:tabular-nums; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .d { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { padding:6px 8px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { background:#f3f4f6; font-weight:600; font-size:12px; color:#374151; position:sticky; top:0; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
td.num { white-space:nowrap; }
.scroll { overflow-x:auto; }
td.zero { color:#c3c8cf; }
tr.stage td { font-weight:600; background:#fafbfc; }
tr.reason td:first-child { color:transparent; }
tr.reason td.reason { padding-left:22px; color:#374151; }
.bar { display:inline-block; height:8px; background:var(--removed); border-radius:2px; vertical-align:middle; }
.chart { max-width:100%; height:auto; display:block; }
.funnel-chart { margin:6px 0 8px; }
.grid3 { display:grid; grid-template-columns:repeat(auto-fill,minmax(340px,1fr)); gap:6px 22px; align-items:start; }
table.compact td { padding:3px 8px; font-size:12.5px; }
.domains h4 { margin:10px 0 4px; }
.grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(540px,1fr)); gap:18px; }
figure { margin:0; border:1px solid var(--line); border-radius:8px; padding:10px 12px 8px; }
figcaption { color:var(--muted); font-size:12px; margin-top:4px; }
.legend span { display:inline-block; margin-right:14px; font-size:12px; color:var(--muted); }
.legend i { display:inline-block; width:10px; height:10px; margin-right:5px; vertical-align:-1px; border-radius:2px; }
code, .mono { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12px; }
.params code { background:#f3f4f6; border-radius:4px; padding:1px 5px; margin:0 4px 3px 0; display:inline-block; }
.params code.given { background:#e0ecf8; color:#0f4c81; font-weight:600; }
details { border:1px solid var(--line); border-radius:8px; margin:10px 0; background:#fff; }
details > summary { cursor:pointer; padding:9px 14px; font-weight:600; list-style-position:inside; }
details > summary .count { color:var(--muted); font-weight:normal; margin-left:6px; }
details[open] > summary { border-bottom:1px solid var(--line); }
details .inner { padding:4px 12px 10px; overflow-x:auto; }
.snippet { white-space:pre-wrap; word-break:break-word; max-height:9.5em; overflow:auto; font-size:12.5px;
           background:#fafafa; border-left:3px solid var(--removed); padding:6px 9px; border-radius:3px; }
.snippet.excerpt { max-height:24em; }
.snippet mark { background:#ffe08a; color:inherit; border-radius:2px; }
.snippet .gap { color:var(--muted); font-style:italic; }
.url { word-break:break-all; font-size:12px; }
.metric { font-weight:600; color:#b2361a; }
.beyond { font-size:11px; color:#b2361a; margin-bottom:4px; }
.evidence { font-size:11.5px; margin-bottom:4px; word-break:break-word; }
.tag { display:inline-block; background:#eef2f7; color:#374151; border-radius:10px; padding:0 8px; font-size:11.5px; }
.warn { background:#fff5f5; border-color:#f5c2c0; }
.sides { display:grid; grid-template-columns:1fr 1fr; gap:18px; align-items:start; }
.sides > div { min-width:0; }
.side-label { font-weight:650; color:var(--accent); margin:0 0 6px; word-break:break-all; }
.missing { color:var(--muted); font-style:italic; padding:20px 12px; border:1px dashed var(--line); border-radius:8px; }
tr.diff td { background:#fff7e6; }
td.pos { color:#b2361a; } td.neg { color:#2f6f3e; }
.pair { border-top:1px solid var(--line); padding:10px 0 6px; }
.pair .snippet { max-height:7em; }
ul.diff { margin:6px 0 0; padding-left:18px; font-size:12px; }
.whatif .near { border-top:1px solid var(--line); padding:6px 0 4px; }
.whatif .near .snippet { max-height:6em; }
.whatif [data-side="kept"] .snippet { border-left-color:var(--kept); }
ul.diff del { background:#fde2dd; text-decoration:none; } ul.diff ins { background:#dcf2e3; text-decoration:none; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:10px; }
"""


#: C0 controls (but tab, newline, form feed, carriage return) and DEL, shown as their control
#: pictures (U+2400 + code): a NUL in a document's text went into the page as is (a parse error
#: for browsers, and `grep` took the report for a binary file)
_CONTROL_PICTURES = {c: 0x2400 + c for c in range(0x20) if chr(c) not in "\t\n\x0c\r"} | {0x7F: 0x2421}


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True).translate(_CONTROL_PICTURES)


def _fmt_metric(value: Any) -> str:
    """A metric value as the samples show it: whole numbers whole (a word count of 400,000 read
    "4e+05"), others to 6 significant digits (enough not to round onto a threshold like 0.0005),
    with thousands separators from a million up (:func:`fmt_value`, as the thresholds are shown)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return fmt_value(value)


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}%"


def _num(v: int | None) -> str:
    return "" if v is None else f"{v:,}"


def _section(anchor: str, title: str, body: str, note: str = "", cls: str = "") -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{anchor}" class="{cls}"><h2>{escape(title)}</h2>{note_html}{body}</section>'


# -- sections -----------------------------------------------------------------------------------
def _summary(stats: dict[str, Any], manifest: dict[str, Any], tokens: dict[str, Any] | None = None) -> str:
    stages = stats["stages"]
    last = stages[-1] if stages else {}
    read, kept, removed = stats["docs_read"], stats["docs_kept"], stats["docs_removed"]
    kept_pct = 100.0 * kept / read if read else 0.0
    seconds = sum(s.get("seconds", 0.0) for s in stages)
    words_cut = sum(s.get("words_cut", 0) for s in stages)
    failed = stats.get("failed_shards") or []
    cards = [
        ("documents read", fmt_int(read), f"{stats['shards']:,} shard(s)"),
        ("documents kept", fmt_int(kept), f"{kept_pct:.1f}% of input"),
        ("documents removed", fmt_int(removed), "every one with a stage and reason"),
        ("words kept", fmt_int(last.get("words_out", 0)),
         (f"{fmt_int(tokens['n_tokens'])} tokens ({tokens['tokenizer']}, counted)" if tokens
          else f"≈ {fmt_int(est_tokens(last.get('chars_out', 0)))} tokens (est.)")
         # every stage's cuts, from documents it kept: a later stage may have removed some of them
         + (f"; {fmt_int(words_cut)} words cut by edits (net; some from documents removed later)" if words_cut else "")),
        ("stage time", f"{seconds:,.1f} s", f"{read / seconds:,.0f} docs/s (one core)" if seconds else ""),
    ]
    if failed:
        cards.append(("failed shards", str(len(failed)), ", ".join(failed[:3]) + ("…" if len(failed) > 3 else "")))
    aside = [a["shard"] for a in stats.get("set_aside_shards") or []]
    if aside:  # failed inputs the run went on without: their documents are in no count here
        cards.append(("inputs set aside", str(len(aside)), "failed, not read: " + ", ".join(aside[:3])
                      + ("…" if len(aside) > 3 else "")))
    from refinery.stats.alerts import nothing_read, suspicious_removals

    alerts = suspicious_removals(stats, input_name=manifest.get("input"))
    if nothing_read(stats):  # an empty input: no removal to suspect
        cards.append(("nothing read", "0 documents", alerts[0]))
    elif alerts:  # one stage removing nearly everything it saw: a setting, not the data (e.g. English stop words)
        cards.append(("suspicious removals", str(len(alerts)), "; ".join(alerts[:2]) + ("…" if len(alerts) > 2 else "")))
    partial = stats.get("partial")
    banner = (f'<p class="partial" id="partial"><b>Unfinished run.</b> {_e(partial["note"][0].upper() + partial["note"][1:])}.'
              f'</p>' if partial else "")
    banner += _limited_banner(manifest)
    html = banner + '<div class="cards">' + "".join(
        f'<div class="card" data-card="{_e(k)}"><div class="k">{escape(k)}</div><div class="v">{v}</div>'
        f'<div class="d">{_e(d)}</div></div>' for k, v, d in cards) + "</div>"
    config = manifest.get("config") or {}
    if config.get("stages"):
        rows = []
        for s in config["stages"]:
            given = s.get("params") or {}
            params = effective_params(s["type"], given)
            chips = "".join(
                f'<code class="{"given" if k in given else ""}">{_e(k)}={_e(json.dumps(v) if not isinstance(v, str) else v)}</code>'
                for k, v in params.items()
            )
            rows.append(f"<tr><td><b>{_e(s.get('name') or s['type'])}</b></td><td><span class='tag'>{_e(s['type'])}</span></td>"
                        f"<td class='params'>{chips or '<span class=note>defaults</span>'}</td></tr>")
        for name, values in other_settings(manifest).items():  # dedup, tokens, reader: how the corpus was made
            chips = "".join(f'<code>{_e(k)}={_e(_fmt_param(v))}</code>' for k, v in values.items())
            kind = "run" if name == "run" else "reader" if name == "reader" else "pass"
            rows.append(f"<tr><td><b>{_e(name)}</b></td><td><span class='tag'>{kind}</span></td>"
                        f"<td class='params'>{chips}</td></tr>")
        html += ("<h3>Configuration</h3><p class='note'>Parameters as run: highlighted values were set in the config, "
                 "the others are the stage's defaults; then the passes after the stages, the reader and the run."
                 "</p><table><thead><tr><th>stage</th><th>type</th><th>parameters</th>"
                 f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return _section("summary", "Summary", html)


def _limited_banner(manifest: dict[str, Any]) -> str:
    """A banner for a ``--limit`` run: its figures are a sample's, which nothing else said."""
    from refinery.stats.alerts import limited_run_note

    note = limited_run_note(manifest)
    return f'<p class="partial" id="limited"><b>Sample run.</b> {_e(note[0].upper() + note[1:])}.</p>' if note else ""


def _funnel(stats: dict[str, Any]) -> str:
    first_in = stats["stages"][0]["docs_in"] if stats["stages"] else 0
    note = (f"Documents left after each stage as a share of the {first_in:,} documents read (RefinedWeb, Fig. 2 style). "
            "Words are whitespace-separated words, counted exactly on the text each stage saw; "
            "edited: documents the stage kept but changed (line corrections, substring cuts cut text; pii "
            "replaces it with placeholders), with the words and ≈ tokens cut from them, net: what the stage "
            "took out minus what it put in (a replacement shortens a text without cutting it, or lengthens "
            "it: a negative figure); "
            f"tokens are an estimate (characters / {CHARS_PER_TOKEN:g}, GPT-2 BPE on English web text).")
    return _section("funnel", "Funnel", _funnel_body(stats), note)


def _stage_rate(row: dict[str, Any]) -> str:
    """A funnel row's "% of stage input": none for a stage that saw no document (it read "0.0%",
    a rate of nothing, after a stage that removed everything; `stats --compare` gives none either)."""
    if row["docs_in"] == 0:
        return '<span title="the stage saw no document">–</span>'
    return _pct(row["removed_pct_of_stage"])


def _funnel_body(stats: dict[str, Any], table_id: str = "funnel-table") -> str:
    rows = funnel_rows(stats)
    max_removed = max((r["removed"] for r in rows), default=0) or 1
    body = []
    for r in rows:
        is_stage = not r["reason"]
        bar = f'<span class="bar" style="width:{60 * r["removed"] / max_removed:.1f}px"></span>' if r["removed"] else ""
        speed = ""
        if is_stage and r["seconds"]:
            speed = f"{r['docs_in'] / r['seconds']:,.0f}" if r["docs_in"] else ""
        body.append(
            f'<tr class="{"stage" if is_stage else "reason"}" data-stage="{_e(r["stage"])}" data-reason="{_e(r["reason"])}">'
            f'<td>{_e(r["stage"])}</td><td class="reason">{_e(r["reason"])}</td>'
            f'<td class="num" data-field="docs_in">{_num(r["docs_in"])}</td>'
            f'<td class="num" data-field="docs_out">{_num(r["docs_out"])}</td>'
            f'<td class="num" data-field="removed">{_num(r["removed"])} {bar}</td>'
            f'<td class="num" data-field="removed_pct_of_stage">{_stage_rate(r)}</td>'
            f'<td class="num" data-field="kept_pct_of_input">{_pct(r["kept_pct_of_input"])}</td>'
            f'<td class="num" data-field="words_removed">{_num(r["words_removed"])}</td>'
            f'<td class="num" data-field="est_tokens_removed">{_num(r["est_tokens_removed"])}</td>'
            f'<td class="num" data-field="docs_edited">{_num(r["docs_edited"])}</td>'
            f'<td class="num" data-field="words_cut">{_num(r["words_cut"])}</td>'
            f'<td class="num" data-field="est_tokens_cut">{_num(r["est_tokens_cut"])}</td>'
            f'<td class="num">{speed}</td></tr>'
        )
    table = (
        f'<div class="scroll"><table id="{table_id}"><thead><tr><th>stage</th><th>reason</th><th class="num">docs in</th>'
        '<th class="num">docs out</th><th class="num">removed</th><th class="num">% of stage input</th>'
        '<th class="num">% of input kept</th><th class="num">words removed</th>'
        '<th class="num">≈ tokens removed</th><th class="num">docs edited</th><th class="num">words cut (net)</th>'
        '<th class="num">≈ tokens cut (net)</th><th class="num">docs/s</th></tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table></div>'
    )
    legend = ('<div class="legend"><span><i style="background:#2f6fb3"></i>kept after the stage</span>'
              '<span><i style="background:#f6b9a6;border:1px dashed #e4572e"></i>removed by the stage</span></div>')
    return (f'<div class="funnel-chart">{funnel_svg(stats["stages"])}</div>{legend}{table}{_reader_notes(stats, table_id)}'
            f'{_counters(stats, table_id)}')


def _reader_notes(stats: dict[str, Any], table_id: str) -> str:
    """What the readers repaired (``reader_notes``: null or repeated ids, bytes not UTF-8), if
    anything: under the funnel, next to the reader's row, as no document was removed for it."""
    rows = reader_note_rows(stats)
    if not rows:
        return ""
    body = "".join(f'<tr data-stage="{_e(r["stage"])}" data-note="{_e(r["note"])}"><td>{_e(r["stage"])}</td>'
                   f'<td>{_e(r["note"])}</td><td class="num" data-field="count">{_num(r["count"])}</td>'
                   f'<td>{_e(r["meaning"])}</td></tr>' for r in rows)
    return (f'<h3>Repaired by the reader (no document removed)</h3><div class="scroll"><table id="{table_id}-reader-notes">'
            f'<thead><tr><th>stage</th><th>note</th><th class="num">count</th><th>what</th></tr></thead>'
            f'<tbody>{body}</tbody></table></div>')


def _counters(stats: dict[str, Any], table_id: str) -> str:
    """The named counters stages reported (``Stage.take_counters``), if any."""
    rows = counter_rows(stats)
    if not rows:
        return ""
    body = "".join(f'<tr data-stage="{_e(r["stage"])}" data-counter="{_e(r["counter"])}"><td>{_e(r["stage"])}</td>'
                   f'<td>{_e(r["counter"])}</td><td class="num" data-field="count">{_num(r["count"])}</td></tr>'
                   for r in rows)
    return (f'<h3>Stage counters</h3><div class="scroll"><table id="{table_id}-counters"><thead><tr><th>stage</th>'
            f'<th>counter</th><th class="num">count</th></tr></thead><tbody>{body}</tbody></table></div>')


def _has_values(h: dict[str, Any]) -> bool:
    """Whether a histogram counted any value (not only nulls): a chart of nothing is not drawn."""
    return any(sum(h["counts"][side]) + h["under"][side] + h["over"][side] for side in ("kept", "removed"))


def _figure(stage: str, column: str, h: dict[str, Any], marks: list[dict[str, Any]], title: str | None = None) -> str:
    n_kept = sum(h["counts"]["kept"]) + h["under"]["kept"] + h["over"]["kept"]
    n_removed = sum(h["counts"]["removed"]) + h["under"]["removed"] + h["over"]["removed"]
    means = []
    for side, n in (("kept", n_kept), ("removed", n_removed)):
        if n:
            means.append(f"mean {side} {h['sum'][side] / n:.3g}")
    extra = []
    nulls = h["null"]["kept"] + h["null"]["removed"]
    if nulls:  # per side: "0 removed by extract" read as the stage's count when its 27 removals had no value (h188)
        extra.append(f"{nulls:,} without a value ({h['null']['kept']:,} kept, {h['null']['removed']:,} removed)")
    outside = h["under"]["kept"] + h["under"]["removed"] + h["over"]["kept"] + h["over"]["removed"]
    if outside:
        extra.append(f"{outside:,} outside the axis")
    with_value = " with a value" if nulls else ""
    caption = (f"{n_kept:,} kept, {n_removed:,} removed by {escape(stage)}{with_value}; " + "; ".join(means + extra)
               + (f"; range {h['min']:.4g} – {h['max']:.4g}" if h.get("min") is not None else ""))
    return (f'<figure data-stage="{_e(stage)}" data-column="{_e(column)}">'
            f"{histogram_svg(h, marks, title or f'{stage} · {column}')}<figcaption>{caption}</figcaption></figure>")


def _ordered_histograms(stats: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    hists = stats.get("histograms") or {}
    order = [s["stage"] for s in stats["stages"]]
    return [(stage, column, h)
            for stage, columns in sorted(hists.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
            for column, h in columns.items()]


def _no_values_note(empty: list[tuple[str, str, dict[str, Any]]]) -> str:
    if not empty:
        return ""
    items = ", ".join(f"<code>{_e(s)} · {_e(c)}</code>" for s, c, _ in empty)
    return f"<p class='note' id='no-values'>Not charted, no document has a value: {items}.</p>"


def _sided(kind: str | None, column: str, h: dict[str, Any], marks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each threshold with its rule's direction and the reasons its rule removes for: a chart draws
    the documents of a bin the line falls inside on their side of it (svg.histogram_svg)."""
    reasons = [r for r in h.get("by_reason") or {} if counts_for_column(kind, r, column)]
    return [{**m, "lower": threshold_rule(kind, m["param"]).lower, "reasons": reasons} for m in marks]


def _histograms(stats: dict[str, Any], thresholds: dict[str, dict[str, list[dict[str, Any]]]],
                kinds: dict[str, str] | None = None) -> str:
    all_hists = _ordered_histograms(stats)
    if not all_hists:
        return _section("scores", "Filter scores", "<p class='note'>No stage in this run reported metric columns.</p>")
    kinds = kinds or {}
    figures = [_figure(stage, column, h, _sided(kinds.get(stage), column, h, thresholds.get(stage, {}).get(column, [])))
               for stage, column, h in all_hists if _has_values(h)]
    empty = [x for x in all_hists if not _has_values(x[2])]
    note = ("Every document each stage saw, binned on fixed edges (so shards add up), stacked: kept by the stage "
            "(blue), then removed by it, per reason. Dashed lines: thresholds from the run's config (run.json). "
            "Scores on [0, 1] use 0.02-wide bins, finer below 0.02 (the axis is not to scale there). "
            "Longer n-gram fractions are only computed as far as the decision needed (see docs/stats.md).")
    return _section("scores", "Filter scores", f'<div class="grid">{"".join(figures)}</div>{_no_values_note(empty)}', note)


def _no_languages_note(stats: dict[str, Any], section: dict[str, Any]) -> str:
    """Why a run has no language rows: no language stage, or one that no document reached (it was
    said to have no language identification stage when earlier stages removed every document)."""
    lid = [s for s in stats.get("stages") or [] if isinstance(s, dict) and s.get("kind") == "language_id"]
    if lid and not any(s.get("docs_in") for s in lid):
        return (f"No document reached {_e(lid[0].get('stage', 'language_id'))}: the stages before it removed "
                "every one (see the funnel).")
    return (f"No <code>{_e(section.get('column', 'language'))}</code> column in this run "
            "(no language identification stage).")


def _languages(stats: dict[str, Any], counted: dict[str, Any] | None = None) -> str:
    section = stats.get("languages") or {}
    by_lang = section.get("by_language") or {}
    if not by_lang:
        return _section("languages", "Languages", f"<p class='note'>{_no_languages_note(stats, section)}</p>")
    rows = [{"language": k, **v} for k, v in by_lang.items()]
    rows.sort(key=lambda r: (-r["docs_in"], r["language"]))
    stages_seen: list[str] = []
    for r in rows:
        for s in r["removed"]:
            if s not in stages_seen:
                stages_seen.append(s)
    order = [s["stage"] for s in stats["stages"]]
    stages_seen.sort(key=lambda s: order.index(s) if s in order else len(order))
    total_in = sum(r["docs_in"] for r in rows) or 1
    shown = rows[:LANGUAGES_LISTED]
    rest = rows[LANGUAGES_LISTED:]
    head = "".join(f'<th class="num">removed by {escape(s)}</th>' for s in stages_seen)
    tokens_of, tokens_head, tokens_note = _language_tokens(rows, counted)
    body = []
    for r in shown:
        cells = "".join(f'<td class="num{"" if r["removed"].get(s) else " zero"}">{_num(r["removed"].get(s, 0))}</td>'
                        for s in stages_seen)
        kept_pct = 100.0 * r["docs_kept"] / r["docs_in"] if r["docs_in"] else 0.0
        body.append(f'<tr data-language="{_e(r["language"])}"><td><b>{_e(r["language"])}</b></td>'
                    f'<td class="num">{_num(r["docs_in"])}</td><td class="num">{100.0 * r["docs_in"] / total_in:.1f}%</td>'
                    f'{cells}<td class="num">{_num(r["docs_kept"])}</td><td class="num">{kept_pct:.1f}%</td>'
                    f'<td class="num">{_num(tokens_of([r]))}</td></tr>')
    if rest:
        agg_in = sum(r["docs_in"] for r in rest)
        agg_kept = sum(r["docs_kept"] for r in rest)
        cells = "".join(f'<td class="num">{_num(sum(r["removed"].get(s, 0) for r in rest))}</td>' for s in stages_seen)
        body.append(f'<tr><td><i>{len(rest)} more</i></td><td class="num">{_num(agg_in)}</td>'
                    f'<td class="num">{100.0 * agg_in / total_in:.1f}%</td>{cells}<td class="num">{_num(agg_kept)}</td>'
                    f'<td class="num"></td><td class="num">{_num(tokens_of(rest))}</td></tr>')
    table = (f'<div class="scroll"><table id="language-table"><thead><tr><th>language</th><th class="num">docs</th><th class="num">share</th>{head}'
             '<th class="num">kept</th><th class="num">% kept</th>'
             f'<th class="num">{tokens_head}</th></tr></thead>'
             f'<tbody>{"".join(body)}</tbody></table></div>')
    chart = languages_svg(rows[:LANGUAGES_CHARTED])
    note = (f"Documents counted from the first stage that sets <code>{_e(section.get('column', 'language'))}</code> "
            "(documents removed before it have no language). Per language, documents = removed by the stages listed + kept. "
            + tokens_note)
    return _section("languages", "Languages", f'<div style="max-width:760px">{chart}</div>{table}', note)


def _language_tokens(rows: list[dict[str, Any]], counted: dict[str, Any] | None) -> tuple[Any, str, str]:
    """(tokens of some language rows, the column's heading, a note saying where they come from):
    the tokens pass's counts where it ran and they reconcile with the rows, else an estimate from
    characters, labelled as one."""
    by_language = (counted or {}).get("by_language")
    if by_language is not None and set(by_language) <= {r["language"] for r in rows}:
        return (lambda rs: sum(by_language.get(r["language"], 0) for r in rs),
                f"tokens kept ({_e(counted['tokenizer'])})",
                f"Tokens: counted by the tokens pass ({_e(counted['tokenizer'])}, "
                f"{fmt_int(counted['n_tokens'])} in all, end-of-document tokens included), as in the summary.")
    why = ("the tokens pass's counts could not be matched to the kept documents' languages; it counted "
           f"{fmt_int(counted['n_tokens'])} in all (summary)" if counted else "no token shards in the run's tokens/ directory")  # (a `refinery tokenize -o ELSEWHERE` is not seen)
    return (lambda rs: est_tokens(sum(r["chars_kept"] for r in rs)), "≈ tokens kept (est.)",
            f"Tokens: an estimate, characters kept / {CHARS_PER_TOKEN:g} (GPT-2 BPE on English web text): {why}.")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _domains(stats: dict[str, Any]) -> str:
    # keyed by the stage that removed: a run of mixed inputs has one reader row (h183: its domains went unshown)
    top = merge_top_domains([{funnel_stage(stats, stage): reasons} for stage, reasons in
                             (stats.get("top_domains") or {}).items()], RUN_TOP_DOMAINS)
    if not top:
        return _section("domains", "Top removed domains", "<p class='note'>Nothing was removed.</p>")
    stages = [s for s in stats["stages"] if s["stage"] in top]
    biggest = {s["stage"] for s in sorted(stages, key=lambda s: -s["docs_removed"])[:2]}
    groups = []
    for s in stages:
        stage = s["stage"]
        tables = []
        for reason, d in sorted(top[stage].items(), key=lambda kv: (-kv[1]["total"], kv[0])):
            shown = list(d["top"].items())[:TOP_DOMAINS_SHOWN]
            rows = "".join(
                f'<tr><td class="url">{_e(dom)}</td><td class="num">{n:,}</td>'
                f'<td class="num">{100.0 * n / d["total"]:.0f}%</td></tr>' for dom, n in shown
            )
            hidden = d["total"] - sum(n for _, n in shown)
            if hidden:
                rows += (f'<tr><td><i>other domains</i></td><td class="num">{hidden:,}</td>'
                         f'<td class="num">{100.0 * hidden / d["total"]:.0f}%</td></tr>')
            tables.append(
                f'<div class="domains"><h4>{escape(reason)} <span class="note">{_plural(d["total"], "document")}</span></h4>'
                f'<table class="compact"><tbody>{rows}</tbody></table></div>'
            )
        groups.append(
            f'<details {"open" if stage in biggest else ""} data-stage="{_e(stage)}"><summary>{escape(stage)}'
            f'<span class="count">{_plural(s["docs_removed"], "removed document")}, '
            f'{_plural(len(top[stage]), "reason")}</span></summary>'
            f'<div class="inner"><div class="grid3">{"".join(tables)}</div></div></details>'
        )
    note = ("Registered domains (public-suffix aware, e.g. <code>bbc.co.uk</code>) of removed documents, per stage and "
            f"reason, top {TOP_DOMAINS_SHOWN}. Counts merge per-shard top-100 lists: exact for domains in every shard's "
            "top 100, a lower bound otherwise.")
    return _section("domains", "Top removed domains", "".join(groups), note)


def _metric_name(metric: float | None, metrics: dict[str, Any]) -> str | None:
    """The metric column whose value is the removal metric, if one is (float32 columns: ~1e-6)."""
    if metric is None:
        return None
    for name, value in metrics.items():
        if isinstance(value, (int, float)) and abs(value - metric) <= 1e-5 * max(1.0, abs(metric)):
            return name
    return None


def _trigger(kind: str | None, reason: str, metric: float | None, metrics: dict[str, Any]) -> str | None:
    """The metric column that triggered the removal: the stage's reason -> column mapping, else
    the one column whose value equals the removal metric (None if that is ambiguous)."""
    if metric is None:
        return None
    named = reason_metric(kind, reason, list(metrics))
    if named is not None:
        return named
    matches = [k for k in metrics if _metric_name(metric, {k: metrics[k]}) is not None]
    return matches[0] if len(matches) == 1 else None


def _beyond(kind: str | None, metric: float, marks: list[dict[str, Any]]) -> str:
    """The run's threshold(s) on a sample's trigger column, said against its value ("below min_words
    = 50"): a value without its threshold did not say how far past the line a removal was (h188)."""
    said = []
    for mark in marks:
        rule = threshold_rule(kind, mark["param"])
        if mark["value"] is None or not rule.fails(metric, float(mark["value"])):
            continue
        side = ("at or below" if rule.at_value else "below") if rule.lower else ("at or above" if rule.at_value else "above")
        said.append(f"{side} {mark['param']} = {fmt_value(mark['value'])}")
    if not said:  # a removal within every line of its column (another rule decided): the lines, as run
        said = [f"{m['param']} = {fmt_value(m['value'])}" for m in marks if m["value"] is not None]
        if said:
            said[0] = "threshold " + said[0]
    return "".join(f"<div class='beyond mono'>{_e(x)}</div>" for x in said)


def _samples(stats: dict[str, Any], samples: pa.Table, per_reason: int, kinds: dict[str, str] | None = None,
             thresholds: dict[str, dict[str, list[dict[str, Any]]]] | None = None) -> str:
    kinds, thresholds = kinds or {}, thresholds or {}
    if samples.num_rows == 0:
        return _section("samples", "Removed samples", "<p class='note'>No removed documents were sampled.</p>")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in samples.to_pylist():  # under its funnel row: a reader's, in a run of mixed inputs, is merged (h183)
        groups.setdefault((funnel_stage(stats, r["stage"]), r["reason"]), []).append(r)
    removed_counts = {(s["stage"], reason): n for s in stats["stages"] for reason, n in s["removed"].items()}
    order = [s["stage"] for s in stats["stages"]]
    keys = sorted(groups, key=lambda k: (order.index(k[0]) if k[0] in order else len(order), -removed_counts.get(k, 0), k[1]))
    parts = []
    for stage, reason in keys:
        rows = []
        for r in groups[(stage, reason)]:
            url = r["url"] or ""
            shown = unquote(url)  # readable (percent-decoded); the link keeps the exact URL
            url_html = (f'<a href="{_e(url)}" rel="noopener noreferrer nofollow" target="_blank">{_e(shown)}</a>'
                        if url.startswith(("http://", "https://")) else f'<span title="{_e(url)}">{_e(shown)}</span>')
            metrics = json.loads(r["metrics"] or "{}")
            trigger = _trigger(kinds.get(r["stage"]), reason, r["metric"], metrics)
            metric_bits = "".join(f"<div class='mono'>{_e(k)} = {_e(_fmt_metric(v))}</div>" for k, v in metrics.items()
                                  if k != trigger and v is not None)
            metric = ""
            if r["metric"] is not None:
                label = trigger or READER_METRICS.get(r["stage"], {}).get(reason) or "metric"
                metric = (f"<div class='metric mono' data-trigger=\"{_e(trigger or '')}\">"
                          f"{_e(label)} = {_e(_fmt_metric(r['metric']))}</div>")
                marks = (thresholds.get(r["stage"]) or {}).get(trigger or "") or []
                metric += _beyond(kinds.get(r["stage"]), r["metric"], marks)
            if r.get("evidence"):
                # what decided it (the word a URL matched, the line a text repeats): the snippet's first
                # 500 characters may not show it (h191)
                metric += (f"<div class='evidence mono' title='what in the document decided the removal'>"
                           f"{_e(r['evidence'])}</div>")
            lang = f"<span class='tag'>{_e(r['language'])}</span>" if r["language"] else ""
            src = "" if r["snippet_source"] in ("text", "") else f"<div class='note'>from {_e(r['snippet_source'])}</div>"
            snippet = (r["snippet"] or "").strip()  # stored as an exact prefix; shown without edge blank lines
            prefix = (r["snippet"] or "").removesuffix("…")  # text_snippet marks a cut with "…"
            if r["snippet_source"] == "text" and (r["chars"] or 0) > len(prefix):
                # a 4 MB text showed as its first 500 characters and a "…", its size nowhere
                src = f"<div class='note' data-truncated>first {len(prefix):,} of {r['chars']:,} characters</div>"
            text_html = f'{src}<div class="snippet" dir="auto">{_e(snippet) or "<i>(no text)</i>"}</div>'
            if r.get("excerpt"):  # where the evidence sits, which the first 500 characters may not show
                text_html = _excerpt_html(r["excerpt"])
            rows.append(
                f'<tr><td style="width:26%"><div class="url">{url_html}</div><div class="note mono">{_e(r["id"])}</div>{lang}</td>'
                f'<td style="width:14%">{metric}{metric_bits}</td><td>{text_html}</td></tr>'
            )
        total = removed_counts.get((stage, reason), 0)
        parts.append(
            f'<details {"open" if len(parts) < 3 else ""} data-stage="{_e(stage)}" data-reason="{_e(reason)}">'
            f'<summary>{escape(stage)} · {escape(reason)}<span class="count">{len(rows)} of {_plural(total, "removed document")}</span></summary>'
            f'<div class="inner"><table><thead><tr><th>document</th><th>metric</th><th>text</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></details>'
        )
    note = (f"A uniform random sample of at most {per_reason} removed documents per stage and reason across the run "
            "(reservoir per shard, merged weighted by each shard's removals). In red: the metric column that triggered "
            "the removal (named from the stage's reason), with its value and the run's threshold it is beyond; under it, "
            "when the stage records it, the removal's evidence (<code>removed_evidence</code>: the word or list entry "
            "a URL matched, the line or n-gram a text repeats most, which may sit past the text shown). Every removed document is in <code>removed/&lt;shard&gt;.parquet</code>; the samples are in "
            "<code>samples/&lt;shard&gt;.parquet</code>.")
    return _section("samples", "Removed samples", "".join(parts), note)


def _excerpt_html(excerpt: str) -> str:
    """A sample's excerpt (:func:`refinery.stats.samples.excerpt`): its segments in order, what the
    evidence names marked, the characters left out between them said."""
    data = json.loads(excerpt)
    parts, at = [], 0
    for segment in data["segments"]:
        if segment["at"] > at:
            parts.append(f'<span class="gap">[… {segment["at"] - at:,} characters …]</span>\n')
        text, done = segment["text"], 0
        for start, end in segment["marks"]:
            start = max(start, done)  # marks do not overlap (excerpt() merges them); never twice
            if end > start:
                parts.append(_e(text[done:start]) + f"<mark>{_e(text[start:end])}</mark>")
                done = end
        parts.append(_e(text[done:]))
        at = segment["at"] + len(text)
    if data["chars"] > at:
        parts.append(f'\n<span class="gap">[… {data["chars"] - at:,} characters to the end]</span>')
    places = "the place" if data["spans"] == 1 else f'{data["shown"]:,} of the {data["spans"]:,} places'
    note = (f"<div class='note' data-excerpt>{data['chars']:,} characters; around what decided the removal: "
            f"{places} marked</div>")
    return f'{note}<div class="snippet excerpt" dir="auto">{"".join(parts)}</div>'


#: removed duplicates shown beside their kept twins per dedup stage (``stats --pairs`` shows more)
PAIRS_SHOWN = 3


def _url_html(url: str | None) -> str:
    url = url or ""
    shown = unquote(url)  # readable (percent-decoded); the link keeps the exact URL
    if url.startswith(("http://", "https://")):
        return f'<a href="{_e(url)}" rel="noopener noreferrer nofollow" target="_blank">{_e(shown)}</a>'
    return f'<span title="{_e(url)}">{_e(shown) or "(no url)"}</span>'


def _pair_side(label: str, side: dict[str, Any] | None, missing: str = "") -> str:
    if side is None:
        return f'<div data-side="{label}"><div class="side-label">{label}</div><div class="missing">{_e(missing)}</div></div>'
    where = "" if side["where"] in ("kept", "") or label == "removed" else f'<div class="note">{_e(side["where"])}</div>'
    cut = len(side["head"]) < side["chars"]
    return (f'<div data-side="{label}"><div class="side-label">{label}</div><div class="url">{_url_html(side["url"])}</div>'
            f'<div class="note mono">{_e(side["id"])} · {_e(side["shard"])} · {side["chars"]:,} characters'
            f'{" (first " + format(len(side["head"]), ",") + " shown)" if cut else ""}</div>{where}'
            f'<div class="snippet" dir="auto">{_e(side["head"].strip()) or "<i>(no text)</i>"}</div></div>')


def _dedup_pairs(run_dir: str, stats: dict[str, Any], samples: pa.Table, shown: int) -> str:
    """Per cluster-based dedup stage, a few of the sampled removed documents beside the document
    their cluster kept (refinery.stats.pairs): the pairs a researcher reads to judge precision."""
    from refinery.stats.pairs import dedup_pairs, dedup_stages

    stages = dedup_stages(stats)
    if not stages or not shown:
        return ""
    parts = []
    for stage in stages:
        try:
            result = dedup_pairs(run_dir, stage, show=shown, samples=samples, stats=stats)
        except (FileNotFoundError, fs.StorageError, parquet.ShardReadError, pa.ArrowException, OSError, ValueError) as exc:
            parts.append(f'<p class="note" data-stage="{_e(stage)}">{_e(stage)}: no pairs ({_e(str(exc).splitlines()[0])})</p>')
            continue
        items = []
        for p in result["pairs"]:
            figures = " · ".join(x for x in (
                f"estimated Jaccard <b>{p['estimated_jaccard']:.3f}</b>" if p["estimated_jaccard"] is not None else "",
                f"true Jaccard <b data-field='jaccard'>{p['jaccard']:.3f}</b>" if p["jaccard"] is not None else "",
                "same words" if p["identical"] else "", f"cluster {p['cluster_id']}" if p["cluster_id"] is not None else "")
                if x)
            diff = "".join(f"<li>at word {d['at_word']:,}: <del>{_e(d['removed']) or '∅'}</del> → "
                           f"<ins>{_e(d['kept']) or '∅'}</ins></li>" for d in p["diff"])
            items.append(f'<div class="pair" data-stage="{_e(stage)}"><div class="note">{figures}</div>'
                         f'<div class="sides">{_pair_side("removed", p["removed"])}'
                         f'{_pair_side("kept", p["kept"], p["missing"])}</div>'
                         + (f'<ul class="diff mono">{diff}</ul>' if diff else "") + "</div>")
        if items:
            parts.append(f'<details open data-stage="{_e(stage)}"><summary>{escape(stage)}<span class="count">'
                         f'{len(items)} of {_plural(result["removed"], "removed document")}</span></summary>'
                         f'<div class="inner">{"".join(items)}</div></details>')
    if not parts:
        return ""
    note = ("Removed duplicates (left) beside the document their cluster kept in their place (right), drawn from the "
            "removed samples above; the estimated Jaccard is the stage's MinHash estimate against the kept copy, the "
            "true Jaccard that of the two texts' word n-grams as the dedup normalizes them; then the first spans where "
            f"their words differ. <code>refinery stats RUN --pairs STAGE --show N</code> lists more.")
    return _section("pairs", "Dedup pairs", "".join(parts), note)


#: documents shown on each side of a threshold (at most ``--samples``)
NEAR_SHOWN = 3


def _near_doc(view: dict[str, Any], r: dict[str, Any]) -> str:
    column = view["column"]
    later = "" if r["fate"] == "kept" or r.get("removed_stage") == view["stage"] else f" · later {r['fate']}"
    head = (r.get("head") or "").strip()
    cut = f" (first {len(r.get('head') or ''):,} shown)" if r.get("chars", 0) > len(r.get("head") or "") else ""
    size = f"{r.get('chars', 0):,} characters{cut}"
    if r.get("head_from"):  # no text (removed before extraction): the page as its removed sample holds it
        size = f"no text; the start of its page's {r['head_from']}, tags stripped (its removed sample)"
    missing = r.get("no_text") or "no text"
    return (f'<div class="near" data-id="{_e(r["id"])}" data-shard="{_e(r["shard"])}" data-value="{r[column]!r}">'
            f'<div class="metric mono">{_e(column)} = {_e(_fmt_metric(r[column]))}</div>'
            f'<div class="url">{_url_html(r["url"])}</div>'
            f'<div class="note mono">{_e(r["id"])} · {_e(r["shard"])} · {_e(size)}{_e(later)}</div>'
            f'<div class="snippet" dir="auto">{_e(head) or f"<i data-no-text>({_e(missing)})</i>"}</div></div>')


def _threshold_block(view: dict[str, Any], open_: bool) -> str:
    at = next(p for p in view["curve"] if p["x"] == view["value"])
    reached = view["reached"]
    first, last = view["curve"][0], view["curve"][-1]
    about = "~" if view.get("sampled") else ""  # estimated from a sample of shards (the section says so)
    summary = (f'{_e(view["stage"])} · {_e(view["param"])} = {fmt_value(view["value"])}<span class="count">'
               f'{_e(view["column"])}: documents {view["removes"]} it are removed; {about}{at["removed"]:,} of '
               f'{reached:,} that reached it</span>')
    caption = (f"Documents this rule would remove as {view['param']} moves from {fmt_value(first['x'])} to {fmt_value(last['x'])} "
               f"({'estimated, ' if about else ''}{first['removed']:,} → {last['removed']:,}; as run, {at['removed']:,} = "
               f"{100 * at['removed'] / reached if reached else 0:.1f}% of the {reached:,} that reached "
               f"{_e(view['stage'])}), and how many of them the corpus holds now (of {view['corpus_docs']:,}). "
               "Hover a point for its figures (% of those that reached the stage, % of the corpus).")
    if view.get("also_in_rerun"):
        caption += (f" In a rerun this value is also {_e(', '.join(view['also_in_rerun']))} (filled from it where the "
                    f"recipe does not set them; {fmt_value(view['value'])} in this run): not counted here.")
    sides = "".join(
        f'<div data-side="{side}"><div class="side-label">{label}</div>'
        + ("".join(_near_doc(view, r) for r in rows) or f'<div class="missing">{none}</div>') + "</div>"
        for side, label, rows, none in (
            ("removed", f"removed, nearest {fmt_value(view['value'])}", view["removed_near"],
             "none removed for this rule"),
            ("kept", f"kept by {view['stage']}, nearest {fmt_value(view['value'])}", view["kept_near"],
             "none kept with a value")))
    return (f'<details {"open" if open_ else ""} class="whatif" data-stage="{_e(view["stage"])}" '
            f'data-column="{_e(view["column"])}" data-param="{_e(view["param"])}" data-value="{view["value"]!r}" '
            f'data-removes="{view["removes"]}"><summary>{summary}</summary><div class="inner">'
            f'<div class="sides"><div><div class="whatif-chart">{whatif_svg(view)}</div>'
            f'<p class="note">{caption}</p></div><div class="sides">{sides}</div></div></div></details>')


def _thresholds(run_dir: str, stats: dict[str, Any], manifest: dict[str, Any],
                thresholds: dict[str, dict[str, list[dict[str, Any]]]], near: int, files: PassFiles | None = None,
                sampled: dict[tuple[str, str], dict[str, Any]] | None = None) -> str:
    """Per threshold of the run: the what-if curve, and the removed documents that barely failed it
    beside the kept ones that barely passed it (refinery.stats.whatif_report)."""
    from refinery.stats.whatif_report import threshold_views

    sample: dict[str, Any] = {}
    try:
        views = threshold_views(run_dir, stats, manifest, thresholds, near, sample, files, sampled)
    except (FileNotFoundError, fs.StorageError, parquet.ShardReadError, pa.ArrowException, OSError, ValueError) as exc:
        return _section("thresholds", "Thresholds: what if", f'<p class="note">Not available: '
                        f'{_e(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}</p>')
    if not views:
        return ""
    blocks = _sample_note(sample) + "".join(_threshold_block(v, open_=i < 3) for i, v in enumerate(views))
    note = ("Each threshold drawn on a chart above, moved: the documents its rule would remove over a range around "
            "the value as run (counted on the metric columns of every document that reached the stage, as "
            "<code>refinery stats RUN --what-if STAGE.PARAM=VALUE</code> counts them; below the value as run, the "
            "removed are at most: another rule of the stage may remove them too); then the documents nearest the "
            f"threshold on each side, at most {near} each (the removed ones that barely failed it, the kept ones that "
            "barely passed it; ties by shard and id): what to read before moving it. A kept document removed by a "
            "later stage says so; its text is as that stage saw it, a kept one's as the corpus holds it.")
    return _section("thresholds", "Thresholds: what if", blocks, note)


def _sample_note(sample: dict[str, Any]) -> str:
    """What the section read when the run was too large to read whole (``whatif_report.ROW_BUDGET``):
    the shards (named in ``data-shards``, for scripts/check_report.py) and how the counts are scaled."""
    if not sample:
        return ""
    read, of = len(sample["shards"]), sample["of"]
    cut = sample.get("row_cut")
    # the chosen shards held more than the budget: its documents of the smallest hash (whatif_report.row_hashes)
    rows = ("" if cut is None else f', and of their {sample["rows_in_shards"]:,} documents the {sample["rows"]:,} '
            "of the smallest hash of shard and id (a uniform sample, the same every time)")
    return (f'<p class="note whatif-sample" data-shards="{_e(" ".join(sample["shards"]))}" data-of="{of}"'
            + ("" if cut is None else f' data-row-cut="{cut}"') + ">"
            f'<b>Estimated from {read:,} of {of:,} shards ({100 * read / of:.1f}%)</b>, every '
            f'{sample["step"]:,}th by name, the same shards in every pass{rows}: the run is too large to read '
            "whole. Each curve's counts are scaled to the whole run, per removing stage and reason (and for the corpus) "
            "by the run's own totals; the documents nearest each threshold are the nearest in these shards.</p>")


#: failed shards detailed in the report (all are counted)
FAILED_SHOWN = 20


def _failed_shards(run_dir: str, stats: dict[str, Any]) -> str:
    """A table of the run's failed shards: pass, shard, the stage it failed in, attempts and the
    first line of its error, from each pass's ``failed/<shard>.json`` (the card named them only)."""
    aside = {a["shard"] for a in stats.get("set_aside_shards") or []}
    names = set(stats.get("failed_shards") or []) | aside
    if not names:
        return ""
    rows, found = [], set()
    for pass_dir in RunDir(run_dir).document_pass_dirs():
        try:
            uris = fs.list_files_if_any(pass_dir.failed_dir, (".json",))
        except (fs.StorageError, OSError):
            continue
        for uri in uris:
            shard = fs.basename(uri)[: -len(".json")]
            if shard not in names or len(rows) >= FAILED_SHOWN:
                continue
            try:
                record = fs.read_json(uri)
            except (fs.StorageError, OSError, ValueError):
                record = {"shard": shard, "error": f"(its record {uri} cannot be read)"}
            error = (record.get("error") or "").strip()
            line = error.splitlines()[0] if error else ""
            line = fs.explain_s3_failure(line, "this run uses") or line  # as `refinery status` says it
            stage = record.get("stage")
            attempts = record.get("attempts")
            found.add(shard)
            rows.append(
                f'<tr data-shard="{_e(shard)}"><td>{_e(record.get("pass") or fs.basename(pass_dir.root))}</td>'
                f'<td class="mono">{_e(shard)}{" <span class=tag>set aside</span>" if shard in aside else ""}</td>'
                f'<td data-field="stage">{_e(stage) if stage else "<span class=note>none named</span>"}</td>'
                f'<td class="num" data-field="attempts">{_e(attempts) if attempts is not None else "–"}</td>'
                f'<td class="mono" data-field="error">{_e(line) or "<span class=note>(no error recorded)</span>"}</td></tr>')
    missing = sorted(names - found)
    more = len(names) - len(rows) - len(missing)
    note = (f"From each pass's <code>failed/&lt;shard&gt;.json</code>: the first line of the error (the whole text "
            f"is in the file), the stage that raised it (none named: the shard failed reading its input, writing its "
            f"outputs, or its worker died) and the attempts made."
            + (f" {more:,} more not shown." if more > 0 else "")
            + (f" No record for {_e(', '.join(missing[:5]))}{'…' if len(missing) > 5 else ''}." if missing else ""))
    table = ('<div class="scroll"><table id="failed-table"><thead><tr><th>pass</th><th>shard</th><th>stage</th>'
             f'<th class="num">attempts</th><th>error</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
    return _section("failed", "Failed shards", table if rows else "", note, cls="warn")


#: cut lines shown per stage in the report
CUT_LINES_SHOWN = 25


def _cut_lines(stats: dict[str, Any]) -> str:
    """The lines each line-cutting stage (line corrections, repeated lines) cut most often from
    documents it kept: what its edits were, not only how many words."""
    stages = [st for st in stats["stages"] if st.get("cut_lines")]
    note = ("The lines each line-cutting stage cut most often from documents it kept (whitespace "
            "collapsed; a line the stage only shortened counts with its whole text; each shard's 100 most "
            "frequent, summed over shards, of which the run keeps 100; e-mail addresses, phone numbers, IP addresses and card numbers "
            "redacted as a pii stage of default settings would). Lines of documents a stage removed are in "
            "Removed samples.")
    if not stages:
        return _section("cut-lines", "Lines cut", "<p class='note'>No stage cut lines from the documents it kept.</p>",
                        note)
    parts = []
    for st in stages:
        ranked = sorted(st["cut_lines"].items(), key=lambda kv: (-kv[1], kv[0]))
        # lines cut once fill a short list in alphabetical order ("/ A", "0.0.0-..."), hiding
        # nothing that recurs: only recurring lines are listed (an audit found 7 of 25 rows such)
        rows = [(line, n) for line, n in ranked if n > 1][:CUT_LINES_SHOWN]
        once = sum(1 for _, n in ranked if n == 1)
        body = "".join(f'<tr><td class="num">{_num(n)}</td><td class="mono"><bdi>{_e(line)}</bdi></td></tr>' for line, n in rows)
        tail = (f"<p class='note'>and {once:,} more line{'s' if once != 1 else ''} cut once "
                f"(<code>cut_lines</code> in stats.json)</p>" if once else "")
        parts.append(f'<h3>{_e(st["stage"])}: {_num(st.get("docs_edited"))} documents edited, '
                     f'{_num(st.get("words_cut"))} words cut</h3><div class="scroll"><table '
                     f'data-stage="{_e(st["stage"])}"><thead><tr><th class="num">times</th><th>line</th></tr></thead>'
                     f'<tbody>{body}</tbody></table></div>{tail}')
    return _section("cut-lines", "Lines cut", "".join(parts), note)


def _counted_tokens(run_dir: str, column: str = "language", files: PassFiles | None = None) -> dict[str, Any] | None:
    """``{"n_tokens", "tokenizer", "by_language"}`` from the run's token manifest, when its tokens
    pass made one; ``by_language`` (``None`` when it cannot be told) sums each kept document's
    counted tokens by its ``column``."""
    uri = fs.join(run_dir, "tokens", "manifest.json")
    try:
        data = fs.read_bytes_if_any(uri)
        manifest = json.loads(data) if data is not None else None
        if not manifest:
            return None
        counted = {"n_tokens": int(manifest["totals"]["n_tokens"]), "tokenizer": str(manifest["tokenizer"]["id"])}
    except (fs.StorageError, OSError, ValueError, KeyError, TypeError):
        return None  # a damaged manifest: the estimate, as before (verify-tokens names the damage)
    counted["by_language"] = _tokens_by_language(run_dir, manifest, column, counted["n_tokens"], files)
    return counted


def _tokens_by_language(run_dir: str, manifest: dict[str, Any], column: str, total: int,
                        files: PassFiles | None = None) -> dict[str, int] | None:
    """Counted tokens per language: each token shard's per-document lengths (its index) by the
    document's id, joined to the kept shards' ``column``. The languages table estimated tokens
    from characters (26,347 on the README demo) beside the 23,430 the tokens pass counted (found
    by a new user's trial). ``None`` when the two do not reconcile to the manifest's total (a
    kept shard changed since, an id with two languages, no language column): the estimate is
    shown then.

    Ids are unique within a shard only (two input files numbering their documents from 0 gave
    one language's tokens to another: en 77,360 shown for 55,250 counted), so an unshuffled
    token shard is joined to its own kept shard, one shard in memory at a time (a run-wide dict
    of ids took ~250 bytes a document: 25 GB for 100M); shuffled ones mix every kept shard,
    joined run-wide by id, and an id kept in two languages cannot be told."""
    from refinery.tokens.format import ShardFile, TokenShardError, list_versions
    from refinery.tokens.writer import TokenizeError, kept_shards

    token_dir = fs.join(run_dir, "tokens")
    try:
        # the names the tokens pass gave them; kept/ from the report's listing of it (was listed again: h165)
        kept = kept_shards(run_dir, allow_unfinished=True, files=files)
        run_wide = _kept_languages(list(kept.values()), column) if manifest.get("shuffle") else None
        listing = list_versions(token_dir)  # the files' sizes and versions: one LIST, not two HEADs a shard

        def shard_tokens(entry: dict[str, Any]) -> dict[str, int] | None:
            name = str(entry["name"])
            languages_of = (lambda: run_wide) if manifest.get("shuffle") else (lambda: _kept_languages([kept[name]], column))
            return _shard_tokens_by_language(ShardFile(token_dir, name, listing), languages_of)

        by_language: dict[str, int] = {}
        # three files a token shard (its index, its ids, its kept shard): read ahead, a request each on S3
        for counts in read_ahead(shard_tokens, manifest.get("shards") or []):
            if counts is None:
                return None
            for lang, n in counts.items():
                by_language[lang] = by_language.get(lang, 0) + n
    except (fs.StorageError, OSError, ValueError, KeyError, TypeError, TokenShardError, TokenizeError,
            parquet.ShardReadError, pa.ArrowException):
        return None
    return by_language if sum(by_language.values()) == total else None


def _shard_tokens_by_language(shard: Any, languages_of: Callable[[], pa.Table | None]) -> dict[str, int] | None:
    """One token shard's counted tokens per language of its documents (``languages_of()``: the
    ``(id, language)`` pairs its documents are found in), or None when they cannot be told."""
    lengths = np.diff(shard.read_offsets())
    if not len(lengths):
        return {}
    ids = parquet.read_table(shard.uris["ids"], columns=["id"]).column("id")
    languages = languages_of()
    if languages is None or len(ids) != len(lengths):
        return None
    where = pc.index_in(ids.cast(pa.string()), value_set=languages.column("id"))
    if where.null_count:  # a document the kept shards do not hold
        return None
    summed = pa.table({"language": languages.column("language").take(where), "n": lengths}) \
        .group_by("language").aggregate([("n", "sum")])
    return {lang: int(n) for lang, n in zip(summed.column("language").to_pylist(), summed.column("n_sum").to_pylist())}


class _NoLanguage(Exception):
    """A kept shard with documents but no language column."""


def _kept_languages(uris: list[str], column: str) -> pa.Table | None:
    """``(id, language)`` of the documents kept in ``uris``, one row per id (a null language is
    ""); ``None`` when a shard with documents has no ``column`` or an id has two languages."""
    try:
        parts = [t for t in read_ahead(lambda uri: _id_languages(uri, column), uris) if t is not None]
    except _NoLanguage:
        return None
    if not parts:
        return pa.table({"id": pa.array([], pa.string()), "language": pa.array([], pa.string())})
    # one thread: groups in first-seen order (threads over the shards' chunks gave another order per
    # call, so two reads of the same shards compared unequal: a flaky CI)
    pairs = pa.concat_tables(parts).group_by(["id", "language"], use_threads=False).aggregate([])
    return pairs if pc.count_distinct(pairs.column("id"), mode="all").as_py() == pairs.num_rows else None


def _id_languages(uri: str, column: str) -> pa.Table | None:
    """``(id, language)`` of one kept shard's documents; None for an empty shard without columns."""
    try:
        table = parquet.read_table(uri, columns=["id", column])
    except parquet.ShardReadError:  # an empty shard may have no columns; else no language
        if parquet.read_table(uri, columns=[]).num_rows:
            raise _NoLanguage(uri) from None
        return None
    return pa.table({"id": table.column("id").cast(pa.string()),
                     "language": pc.fill_null(table.column(column).cast(pa.string()), "")})


def build_report(run_dir: str, samples_per_reason: int = 8) -> str:
    """The report's HTML for the run at ``run_dir`` (local path or s3://)."""
    files = PassFiles()  # each pass directory listed once for the whole report (h156)
    stats = load_run_stats(run_dir, files)
    manifest = load_run_manifest(run_dir)
    every_sample = load_samples(run_dir, files=files)  # every shard's: a document shown without text may be one
    samples = pick_per_reason(every_sample, samples_per_reason)
    thresholds = run_thresholds(manifest, stats.get("histograms") or {})
    name = (manifest.get("config") or {}).get("name") or fs.basename(run_dir)
    counted = _counted_tokens(run_dir, (stats.get("languages") or {}).get("column") or "language", files)
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    updated = manifest.get("updated_at")
    sub = " · ".join(x for x in (
        f"run {run_dir}", f"input {manifest.get('input', '?')}", f"started {manifest.get('started_at', '?')}",
        f"last run {updated}" if updated and updated != manifest.get("started_at") else "",
        f"--limit {manifest['limit']} per shard" if manifest.get("limit") else "",
        f"refinery {manifest.get('refinery_version', __version__)}") if x)
    failed = _failed_shards(run_dir, stats)
    pairs = _dedup_pairs(run_dir, stats, samples, min(PAIRS_SHOWN, samples_per_reason))
    what_if = _thresholds(run_dir, stats, manifest, thresholds, min(NEAR_SHOWN, samples_per_reason), files,
                          {(r["shard"], r["id"]): r for r in every_sample.select(["shard", "id", "snippet", "snippet_source"])
                           .to_pylist()})
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("summary", "Summary"), ("failed", "Failed shards" if failed else ""), ("funnel", "Funnel"),
        ("scores", "Filter scores"), ("thresholds", "Thresholds" if what_if else ""), ("languages", "Languages"), ("domains", "Removed domains"),
        ("samples", "Removed samples"), ("pairs", "Dedup pairs" if pairs else ""), ("cut-lines", "Lines cut")) if t)
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<meta name=\"{_SAMPLES_META}\" content=\"{int(samples_per_reason)}\">"
        f"<meta name=\"{_STATE_META}\" content=\"{report_state(stats)}\">"
        f"<title>refinery report · {escape(name)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>refinery report · {escape(name)}</h1><div class=\"sub\">{escape(sub)}</div></header><nav>{nav}</nav><main>"
        f"{_summary(stats, manifest, counted)}{failed}{_funnel(stats)}{_histograms(stats, thresholds, stage_kinds(manifest))}{what_if}{_languages(stats, counted)}"
        f"{_domains(stats)}{_samples(stats, samples, samples_per_reason, stage_kinds(manifest), thresholds)}"
        f"{pairs}{_cut_lines(stats)}"
        f"</main><footer>generated {generated} by refinery {escape(__version__)} · self-contained: no JavaScript, "
        f"no external resources</footer></body></html>"
    )


def write_report(run_dir: str, out: str | None = None, samples_per_reason: int = 8) -> str:
    """Write the report (default ``<run_dir>/report.html``) atomically; returns its URI."""
    out = out or RunDir(run_dir).report_html
    fs.write_bytes(out, build_report(run_dir, samples_per_reason).encode("utf-8"))
    return out


#: the ``--samples`` a report was made with, so that remaking it keeps them
_SAMPLES_META = "refinery-samples-per-reason"
_SAMPLES_RE = re.compile(rf'<meta name="{_SAMPLES_META}" content="(\d+)">')
#: a digest of the stats a report shows, so that a run can tell a report of its current state
#: from one of an earlier state without remaking it
_STATE_META = "refinery-state"
_STATE_RE = re.compile(rf'<meta name="{_STATE_META}" content="([0-9a-f]+)">')


def report_state(stats: dict[str, Any]) -> str:
    """The digest of a run's stats (``load_run_stats``) that its report carries."""
    return hashlib.sha256(json.dumps(stats, sort_keys=True, default=str).encode()).hexdigest()[:16]


def remake_report(run_dir: str, only_if_stale: bool = False) -> str | None:
    """Write ``<run_dir>/report.html`` again, with the samples it was made with, if there is one
    (else None): a run that finished or moved on leaves it showing an earlier state (made while
    the run was going, or after an earlier run of the directory). About 0.2 s on the demo run.
    ``only_if_stale``: leave it (None) when it already shows the run's current stats; a rerun
    that redid nothing still remakes a report its previous run could not (stopped while remaking
    it, it showed the run's earlier state for good)."""
    uri = RunDir(run_dir).report_html
    data = fs.read_bytes_if_any(uri)
    if data is None:
        return None
    head = data[:4096].decode("utf-8", "replace")
    found = _SAMPLES_RE.search(head)
    if not found:  # not a run report of ours: written by hand, by another tool, a --compare --out
        raise NotARunReport(f"{uri} is no `refinery report` of this version (no {_SAMPLES_META} tag): left as it is")
    state = _STATE_RE.search(head)
    if only_if_stale and state and state.group(1) == report_state(load_run_stats(run_dir)):
        return None
    return write_report(run_dir, uri, samples_per_reason=int(found.group(1)))


class NotARunReport(ValueError):
    """The run directory's report.html was not written by :func:`write_report` (it carries no
    samples tag): a finished run overwrote it with its report (a file written by hand, another
    tool's, a comparison written there with ``--out``)."""


# -- two runs side by side ----------------------------------------------------------------------
def _fmt_param(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def config_diff(manifest_a: dict[str, Any], manifest_b: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{stage, param, a, b, differs}`` over both runs' stages (matched by name) with their
    effective parameters; ``a`` / ``b`` is None for a stage or parameter a run does not have."""
    def stages(manifest: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
        return {(s.get("name") or s["type"]): (s["type"], effective_params(s["type"], s.get("params") or {}))
                for s in (manifest.get("config") or {}).get("stages", [])}

    sa, sb = stages(manifest_a), stages(manifest_b)
    order = merged_order(list(sa), list(sb))  # as the funnel's rows (B's own stages had come last)
    rows: list[dict[str, Any]] = []
    for name in order:
        ta, pa_ = sa.get(name, (None, None))
        tb, pb = sb.get(name, (None, None))
        rows.append({"stage": name, "param": "type", "a": ta, "b": tb, "differs": ta != tb})
        keys = list(pa_ or {}) + [k for k in (pb or {}) if k not in (pa_ or {})]
        # shown, but not a difference: a param that changes how a stage runs (the extraction
        # helper's allocator) does not explain why two runs' outputs differ
        neutral = neutral_params(ta) | neutral_params(tb)
        for k in keys:
            va = None if pa_ is None or k not in pa_ else _fmt_param(pa_[k])
            vb = None if pb is None or k not in pb else _fmt_param(pb[k])
            rows.append({"stage": name, "param": k, "a": va, "b": vb, "differs": va != vb and k not in neutral})
    # the order the stages and passes ran in: reordered, the same stages remove other documents
    # (found by adversarial testing: a reordered recipe was "the same stages, passes and parameters")
    for what, la, lb in (("stages", list(sa), list(sb)), ("passes", _pass_order(manifest_a), _pass_order(manifest_b))):
        va, vb = " → ".join(la), " → ".join(lb)
        rows.append({"stage": "(order)", "param": what, "a": va, "b": vb, "differs": va != vb})
    # the passes after the stages, and what else decides the output (found by adversarial testing:
    # two runs whose MinHash bands differed were reported as having "the same stages and parameters")
    oa, ob = other_settings(manifest_a), other_settings(manifest_b)
    for name in list(oa) + [n for n in ob if n not in oa]:
        pa_, pb = oa.get(name), ob.get(name)
        for k in list(pa_ or {}) + [k for k in (pb or {}) if k not in (pa_ or {})]:
            va = None if pa_ is None or k not in pa_ else _fmt_param(pa_[k])
            vb = None if pb is None or k not in pb else _fmt_param(pb[k])
            rows.append({"stage": name, "param": k, "a": va, "b": vb, "differs": va != vb})
    return rows


def _pass_order(manifest: dict[str, Any]) -> list[str]:
    """The run's passes in order (from its plan; else from its config's dedup list)."""
    passes = [p.get("name") for p in manifest.get("passes") or [] if isinstance(p, dict)]
    if passes:
        return [str(p) for p in passes]
    config = manifest.get("config") or {}
    return [pass_name(d.get("method"), d.get("name")) for d in config.get("dedup") or []]


def other_settings(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{section: {dotted key: value}}`` of a run's settings besides its stages: each dedup pass
    (by its pass name), the tokens pass, the reader, and the run's input and ``--limit``."""
    config = manifest.get("config") or {}

    def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(obj, dict):
            return {prefix: obj}
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if k not in ("executor", "name"):  # where a pass runs, not what it does
                out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out

    method_sections = ("minhash", "substring", "lines", "decontaminate")

    def own(d: dict[str, Any]) -> dict[str, Any]:
        """A pass's own settings: every pass's config holds every method's section, and a URL pass
        listed MinHash's bands (a newcomer's puzzle); url and exact use MinHash's seed alone."""
        method = d.get("method")
        kept = {k: v for k, v in d.items() if k not in method_sections or k == method}
        if method in ("url", "exact") and isinstance(d.get("minhash"), dict):
            kept["minhash"] = {"seed": d["minhash"].get("seed")}
        return kept

    passes = list(config.get("dedup") or [])
    standalone = manifest.get("dedup")  # `refinery dedup`'s run.json keeps its one pass's config here
    if not passes and isinstance(standalone, dict) and isinstance(standalone.get("config"), dict):
        passes = [standalone["config"]]
    sections = {pass_name(d.get("method"), d.get("name")): flat(own(without_added_defaults(d))) for d in passes}
    if config.get("tokenize"):
        sections["tokens"] = flat(config["tokenize"])
    if config.get("reader"):
        sections["reader"] = flat(config["reader"])
    sections["run"] = {"input": manifest.get("input"), "limit": manifest.get("limit")}
    # the code that decided: two runs of one config by two refinery or trafilatura versions
    # differ, and compare named no setting change (testing)
    code: dict[str, Any] = {}
    for p in manifest.get("passes") or []:
        code.update((p.get("params") or {}).get("code") or {})
    if "refinery" not in code and manifest.get("refinery_version"):  # standalone dedup, older runs
        code["refinery"] = manifest["refinery_version"]
    if code:
        sections["code"] = dict(sorted(code.items()))
    return sections


def _config_diff_section(manifest_a: dict[str, Any], manifest_b: dict[str, Any]) -> str:
    rows = config_diff(manifest_a, manifest_b)
    differing = [r for r in rows if r["differs"]]

    def cell(v: Any) -> str:
        return "<span class='note'>(not in this run)</span>" if v is None else f"<code>{_e(v)}</code>"

    def table(rs: list[dict[str, Any]], table_id: str) -> str:
        body = "".join(
            f'<tr class="{"diff" if r["differs"] else ""}" data-stage="{_e(r["stage"])}" data-param="{_e(r["param"])}">'
            f'<td><b>{_e(r["stage"])}</b></td><td class="mono">{_e(r["param"])}</td>'
            f'<td data-side="a">{cell(r["a"])}</td><td data-side="b">{cell(r["b"])}</td></tr>' for r in rs)
        return (f'<div class="scroll"><table id="{table_id}"><thead><tr><th>stage</th><th>parameter</th>'
                f'<th>run A</th><th>run B</th></tr></thead><tbody>{body}</tbody></table></div>')

    head = (table(differing, "config-diff") if differing
            else "<p class='note' id='config-diff'>The two runs have the same stages, passes and parameters.</p>")
    full = (f'<details><summary>all parameters<span class="count">{len(rows)} rows</span></summary>'
            f'<div class="inner">{table(rows, "config-all")}</div></details>')
    note = ("Effective parameters (the config's values completed with the stages' defaults), stages matched by name; "
            "rows that differ are highlighted.")
    return _section("config", "Config diff", head + full, note)


def _compare_table(stats_a: dict[str, Any], stats_b: dict[str, Any]) -> str:
    def num(v: Any, pct: bool = False, signed: bool = False) -> str:
        if v is None:
            return ""
        if pct:
            return f"{v:.1f}%" if not signed else "0.0 pt" if v == 0 else f"{v:+.1f} pt"
        return f"{v:,}" if not signed else "0" if v == 0 else f"{v:+,}"  # no change: "0", not "+0"

    def sign(v: Any) -> str:
        return "" if not v else " pos" if v > 0 else " neg"

    body = []
    for r in compare_rows(stats_a, stats_b):
        is_stage = not r["reason"]
        body.append(
            f'<tr class="{"stage" if is_stage else "reason"}" data-stage="{_e(r["stage"])}" data-reason="{_e(r["reason"])}">'
            f'<td>{_e(r["stage"])}</td><td class="reason">{_e(r["reason"])}</td>'
            f'<td class="num">{num(r["removed_a"])}</td><td class="num">{num(r["removed_b"])}</td>'
            f'<td class="num{sign(r["delta"])}">{num(r["delta"], signed=True)}</td>'
            f'<td class="num">{num(r["rate_a"], True)}</td><td class="num">{num(r["rate_b"], True)}</td>'
            f'<td class="num{sign(r["rate_pp"])}">{num(r["rate_pp"], True, True)}</td>'
            f'<td class="num">{num(r["kept_a"], True)}</td><td class="num">{num(r["kept_b"], True)}</td>'
            f'<td class="num" data-field="words_cut_a">{num(r["words_cut_a"])}</td>'
            f'<td class="num" data-field="words_cut_b">{num(r["words_cut_b"])}</td>'
            f'<td class="num{sign(r["words_cut_delta"])}" data-field="words_cut_delta">{num(r["words_cut_delta"], signed=True)}</td></tr>')
    counters = "".join(
        f'<tr data-stage="{_e(r["stage"])}" data-counter="{_e(r["counter"])}"><td>{_e(r["stage"])}</td><td>{_e(r["counter"])}</td>'
        f'<td class="num">{num(r["count_a"])}</td><td class="num">{num(r["count_b"])}</td>'
        f'<td class="num{sign(r["delta"])}">{num(r["delta"], signed=True)}</td></tr>'
        for r in compare_counter_rows(stats_a, stats_b))
    counters_table = ('<h3>Stage counters, A vs B</h3><div class="scroll"><table id="compare-counters"><thead><tr>'
                      '<th>stage</th><th>counter</th><th class="num">A</th><th class="num">B</th><th class="num">Δ</th>'
                      f'</tr></thead><tbody>{counters}</tbody></table></div>') if counters else ""
    return ('<div class="scroll"><table id="compare-table"><thead><tr><th>stage</th><th>reason</th>'
            '<th class="num">removed A</th><th class="num">removed B</th><th class="num">Δ</th>'
            '<th class="num">% of stage A</th><th class="num">% of stage B</th><th class="num">Δ</th>'
            '<th class="num">% kept A</th><th class="num">% kept B</th>'
            '<th class="num">words cut (net) A</th><th class="num">words cut (net) B</th><th class="num">Δ</th></tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{counters_table}')


def _histogram_order(keys_a: Iterable[tuple[str, str]], keys_b: Iterable[tuple[str, str]],
                     stages: list[str]) -> list[tuple[str, str]]:
    """Both runs' (stage, column) histograms in the funnel's stage order ``stages`` (a stage only B
    has came last, after every stage of A; a stage of neither funnel goes last)."""
    keys_a, keys_b = list(keys_a), list(keys_b)
    keys = keys_a + [k for k in keys_b if k not in keys_a]
    at = {stage: i for i, stage in enumerate(stages)}
    return sorted(keys, key=lambda k: at.get(k[0], len(at)))  # stable: each stage's columns as they came


def build_compare_report(run_a: str, run_b: str) -> str:
    """HTML comparing two runs: funnels side by side, the per-reason differences, each metric's
    histograms side by side (with each run's thresholds) and the config diff."""
    stats = {"a": load_run_stats(run_a), "b": load_run_stats(run_b)}
    manifests = {"a": load_run_manifest(run_a), "b": load_run_manifest(run_b)}
    dirs = {"a": run_a, "b": run_b}
    names = {k: (manifests[k].get("config") or {}).get("name") or fs.basename(dirs[k]) for k in dirs}
    thresholds = {k: run_thresholds(manifests[k], stats[k].get("histograms") or {}) for k in dirs}

    def label(k: str) -> str:
        s = stats[k]
        return (f'<div class="side-label">run {k.upper()} · {_e(names[k])}</div>'
                f'<div class="note">{_e(dirs[k])} · {s["docs_read"]:,} read, {s["docs_kept"]:,} kept '
                f'({100.0 * s["docs_kept"] / s["docs_read"] if s["docs_read"] else 0.0:.1f}%)</div>'
                + _run_notes(s, manifests[k]))

    funnels = "".join(f'<div class="side" data-run="{k}">{label(k)}{_funnel_body(stats[k], f"funnel-table-{k}")}</div>'
                      for k in dirs)
    funnel_section = _section(
        "funnel", "Funnels", f'<div class="sides">{funnels}</div><h3>Removed per stage and reason, A vs B</h3>'
        f'{_compare_table(stats["a"], stats["b"])}',
        "Each run's funnel (% of its own input kept after each stage) side by side; below, the documents removed "
        "per stage and reason in both runs and the change (red: more removed in B).")

    hists = {k: {(s, c): h for s, c, h in _ordered_histograms(stats[k])} for k in dirs}
    keys = _histogram_order(hists["a"], hists["b"], stage_order(stats["a"], stats["b"]))
    pairs, empty = [], []
    for stage, column in keys:
        sides = []
        for k in dirs:
            h = hists[k].get((stage, column))
            if h is not None and _has_values(h):
                fig = _figure(stage, column, h, thresholds[k].get(stage, {}).get(column, []),
                              f"{k.upper()} · {stage} · {column}")
                sides.append(f'<div data-run="{k}">{fig}</div>')
            else:
                why = "not in this run" if h is None else "no document has a value"
                sides.append(f'<div data-run="{k}"><div class="missing">run {k.upper()}: {_e(stage)} · {_e(column)}: '
                             f'{why}</div></div>')
        if all((hists[k].get((stage, column)) is None or not _has_values(hists[k][(stage, column)])) for k in dirs):
            empty.append((stage, column, {}))
            continue
        pairs.append(f'<div class="sides pair" data-stage="{_e(stage)}" data-column="{_e(column)}" '
                     f'style="margin-bottom:14px">{"".join(sides)}</div>')
    scores = _section("scores", "Filter scores", "".join(pairs) + _no_values_note(empty),
                      "Each metric's histogram in run A (left) and run B (right), with each run's thresholds; "
                      "counts are each run's own (y axes differ).")
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    title = f"{names['a']} vs {names['b']}"
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (("funnel", "Funnels"), ("scores", "Filter scores"),
                                                        ("config", "Config diff")))
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>refinery compare · {escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>refinery compare · {escape(title)}</h1><div class=\"sub\">A: {escape(run_a)} · B: "
        f"{escape(run_b)}</div></header><nav>{nav}</nav><main>"
        f"{funnel_section}{scores}{_config_diff_section(manifests['a'], manifests['b'])}"
        f"</main><footer>generated {generated} by refinery {escape(__version__)} · self-contained: no JavaScript, "
        f"no external resources</footer></body></html>"
    )


def _run_notes(stats: dict[str, Any], manifest: dict[str, Any]) -> str:
    """What ``refinery stats --compare`` says of a run under its table, as HTML: unfinished, inputs
    set aside, failed shards, a stage removing nearly everything. The comparison showed an
    unfinished run's funnel as final (found by adversarial testing)."""
    from refinery.stats.alerts import suspicious_removals

    notes = []
    partial = stats.get("partial")
    if partial:
        notes.append(f'<p class="partial"><b>Unfinished run.</b> {_e(partial["note"][0].upper() + partial["note"][1:])}.</p>')
    failed = stats.get("failed_shards") or []
    if failed and not partial:
        notes.append(f'<p class="partial"><b>Failed shards:</b> {_e(", ".join(failed[:3]) + ("…" if len(failed) > 3 else ""))}'
                     f'</p>')
    for aside in stats.get("set_aside_shards") or []:  # their documents are in no count of this run
        notes.append(f'<p class="partial">Input {_e(aside.get("input") or aside["shard"])} failed and was set aside, '
                     f'its documents not read.</p>')
    notes.append(_limited_banner(manifest))
    notes += [f'<p class="note">{_e(n)}</p>' for n in suspicious_removals(stats, input_name=manifest.get("input"))]
    return "".join(notes)


def write_compare_report(run_a: str, run_b: str, out: str | None = None) -> str:
    """Write the comparison (default ``<run_a>/compare-<basename of run_b>.html``); returns its URI."""
    out = out or fs.join(run_a, f"compare-{fs.basename(run_b.rstrip('/')) or 'b'}.html")
    fs.write_bytes(out, build_compare_report(run_a, run_b).encode("utf-8"))
    return out
