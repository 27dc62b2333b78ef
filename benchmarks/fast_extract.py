"""The fast learned extractor (``refinery/extract_fast.py``) against trafilatura at the extract
stage's settings, on held-out pages (issue 17 item 1; docs/extraction.md, "Fast learned extractor").

    python benchmarks/fast_extract.py [--model refinery/resources/models/extractor.ftz] [--article-gold /tmp/article-gold]
    python benchmarks/fast_extract.py --ceiling    (how far a learned first pass could take the stage: see ceiling())

On half 1 of trafilatura's evaluation set (never trained or tuned on; ``split_pages(pages, 1)``)
and, labelled, on all pages: "with" snippets found / "without" leaked / pages emptied (scored by
``refinery.eval_extract.snippet_counts``, both texts through the stage's ``clean_text``), CPU
seconds per page (``time.process_time``, both extractors on the same pages in the same process,
interleaved page by page; Resiliparse's ``main_content``, the stage's other backend, for
reference), docs/s per core, peak RSS; then the cascade (trafilatura only where the
model is unsure, by the rule chosen in training and stored in the model's .json); then token F1 against publisher article bodies (``benchmarks/article_gold.py
--no-score`` builds them; pages of half 1 are the held-out ones).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _conditions() -> str:
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start "
            "(other work may be running: figures are CPU seconds of this process, not wall time)")


def run(model: Path, article_gold: Path | None) -> None:
    from classifiers.extractor import DATA_DIR, eval_pages, teacher
    from refinery.eval_extract import load_gold, snippet_counts, split_pages, token_score
    from refinery.extract_fast import FastExtractor
    from refinery.stages.extract import clean_text, decode_html

    print(f"machine: {_conditions()}")
    from refinery.stages.extract import TrafilaturaExtractor

    fx = FastExtractor(model)
    traf = teacher()
    resil = TrafilaturaExtractor(backend="resiliparse", timeout_s=0)._extract_fn()  # the stage's other backend
    print(f"model: {model} ({model.stat().st_size:,} bytes), threshold {fx.threshold}, smooth {fx.smooth}")
    pages = eval_pages(DATA_DIR, None)
    held = {p.name for p in split_pages(pages, 1)}  # TrainPage has .url/.name as GoldPage does

    rows = []  # per page: name, t_traf, t_fast, traf text, fast text, cascade text, went to trafilatura
    for p in pages:
        t0 = time.process_time()
        tt = traf(p.html, p.url)
        t1 = time.process_time()
        r = fx.predict(p.html)  # blocks, scores, decisions, and whether a cascade sends it on
        t2 = time.process_time()
        rt = resil(p.html, p.url)[0]
        t3 = time.process_time()
        rows.append((p, t1 - t0, t2 - t1, clean_text(tt or ""), clean_text(r.text or ""), r.unsure,
                     clean_text(rt or ""), t3 - t2))

    def report(label: str, sel: list) -> None:
        n = len(sel)
        print(f"\n== {label}: {n} pages ==")
        print(f"{'extractor':<34} {'with':>7} {'without':>8} {'emptied':>8} {'ms CPU/page':>12} {'docs/s/core':>12}")
        variants = {
            "trafilatura (stage defaults)": [(r[3], r[1]) for r in sel],
            "fast learned": [(r[4], r[2]) for r in sel],
            "cascade (fast, else trafilatura)": [((r[3] if r[5] else r[4]), r[2] + (r[1] if r[5] else 0.0)) for r in sel],
            "resiliparse main_content (stage)": [(r[6], r[7]) for r in sel],
        }
        for name, out in variants.items():
            f = e = lk = u = 0
            for r, (text, _) in zip(sel, out):
                c = snippet_counts(text, r[0].with_snippets, r[0].without_snippets)
                f, e, lk, u = f + c[0], e + c[1], lk + c[2], u + c[3]
            cpu = sum(t for _, t in out)
            emptied = sum(1 for text, _ in out if not text.strip())
            print(f"{name:<34} {f / e:>7.1%} {lk / u:>8.1%} {emptied:>8d} {1000 * cpu / n:>12.2f} {n / cpu:>12.1f}")
        went = sum(r[5] for r in sel)
        c = fx.cascade
        print(f"cascade: {went} of {n} pages ({went / n:.1%}) went to trafilatura (kept text < {c['short_chars']:.0f} "
              f"chars, or > {c['share']:.0%} of the text in blocks scored within {c['band']} of the threshold)")

    report("eval half 1 (held out)", [r for r in rows if r[0].name in held])
    report("all eval pages (half 0 was trained on: not a held-out figure)", rows)

    if article_gold is not None:
        if not article_gold.is_dir():
            print(f"\narticle gold: {article_gold} not found (python benchmarks/article_gold.py --no-score)")
        else:
            gold = [g for g in load_gold(article_gold) if g.text is not None]
            gheld = {g.name for g in split_pages(gold, 1)}
            print(f"\n== article gold ({article_gold}): token F1 (mean per page), precision, recall ==")
            for label, sel in (("half 1 (held out)", [g for g in gold if g.name in gheld]), ("all", gold)):
                res = {"trafilatura": [], "fast learned": [], "cascade": []}
                for g in sel:
                    html = decode_html(g.html, None)[0]
                    tt = clean_text(traf(html, g.url) or "")
                    r = fx.predict(html)
                    ft, go = clean_text(r.text or ""), r.unsure
                    for k, text in (("trafilatura", tt), ("fast learned", ft), ("cascade", tt if go else ft)):
                        res[k].append(token_score(text or None, g.text))
                for k, ss in res.items():
                    if ss:
                        m = lambda xs: sum(xs) / len(xs)  # noqa: E731
                        print(f"  {label:<18} {k:<14} F1 {m([s.f1 for s in ss]):.4f}  P {m([s.precision for s in ss]):.4f}  "
                              f"R {m([s.recall for s in ss]):.4f}  ({len(ss)} pages)")
    print(f"\npeak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


#: bag-of-words F1 levels at which a first pass's text counts as "the cascade's text"
AGREEMENT_LEVELS = (0.99, 0.97, 0.95, 0.90)


def traverse_walk(html: str) -> None:
    """The least a Python walk of the page can cost: selectolax's ``traverse()`` (its C iterator)
    over the body, reading each node's tag and its text or attributes and keeping the stack of open
    elements from parent ids (``traverse`` gives no end events: a block ends where the stack
    pops). No block logic: timed by ``ceiling``, nothing is kept."""
    from selectolax.lexbor import LexborHTMLParser

    body = LexborHTMLParser(html).body
    if body is None:
        return
    stack = [body.mem_id]
    for node in body.traverse(include_text=True):
        parent = node.parent.mem_id
        while stack and stack[-1] != parent:
            stack.pop()
        # read, not used: what a block walk must read of every node is part of the cost
        if node.tag == "-text":
            node.text_content
        else:
            node.attributes
            stack.append(node.mem_id)


class CeilingRow(NamedTuple):
    """One evaluation page in ``ceiling``: CPU seconds of each part, and agreement with the cascade."""

    held_out: bool
    t_cascade: float
    t_parse: float
    t_blocks: float  # blocks_of: parse + walk
    t_model: float  # features, scores, decisions
    t_resiliparse: float
    t_traverse: float
    oracle_f1: float  # oracle blocks vs the cascade's text
    model_f1: float
    model_sure: bool
    resiliparse_recall: float
    resiliparse_oracle_f1: float  # oracle line veto on Resiliparse's lines


def ceiling(model: Path) -> None:
    """``--ceiling``: what a learned first pass in front of the stage's cascade (issue 17 item 1's
    "trafilatura only where the fast path is unsure") could give, on the evaluation pages (half 1,
    held out from the model's training, and all). Per page, CPU seconds of: the cascade (the stage
    at its defaults, the teacher), lexbor's parse, ``blocks_of`` (parse + the Python walk), the
    model's features and scores; then the share of pages on which a text agrees with the cascade's
    at each bag-of-words F1 level (``token_score``) for (a) the oracle: the blocks
    ``teacher_labels`` marks as in the cascade's text, the best any block classifier over these
    blocks can do, and (b) the packaged model, overall and on the pages its cascade rule is sure
    of; and the CPU per page a sure-path would cost with a perfect judge at the cheapest possible
    fast pass (the parse alone) and at today's (fast pass + cascade on every page it disagrees on).
    Also (c) the oracle over the lines of Resiliparse's main-content text (C++, no Python walk):
    the lines ``teacher_labels`` marks, i.e. a perfect line veto on Resiliparse's output, with the
    share of pages whose cascade text Resiliparse's output already holds (token recall)."""
    from classifiers.extractor import DATA_DIR, eval_pages, teacher
    from refinery.eval_extract import split_pages, token_score
    from refinery.extract_fast import FastExtractor, blocks_of, teacher_labels
    from resiliparse.extract.html2text import extract_plain_text
    from selectolax.lexbor import LexborHTMLParser

    print(f"machine: {_conditions()}")
    fx = FastExtractor(model)
    cascade = teacher()
    pages = eval_pages(DATA_DIR, None)
    held = {p.name for p in split_pages(pages, 1)}
    rows: list[CeilingRow] = []
    for p in pages:
        t0 = time.process_time()
        ref = cascade(p.html, p.url) or ""
        t1 = time.process_time()
        LexborHTMLParser(p.html).body
        t2 = time.process_time()
        blocks = blocks_of(p.html)
        t3 = time.process_time()
        scores = fx.scores(blocks)
        keep = fx.decide(blocks, scores)
        text = "\n".join(b.text for b, k in zip(blocks, keep) if k)
        sure = not fx.is_unsure(blocks, scores, text)
        t4 = time.process_time()
        resil = extract_plain_text(p.html, main_content=True) or ""
        t5 = time.process_time()
        traverse_walk(p.html)
        t6 = time.process_time()
        oracle = "\n".join(b.text for b, k in zip(blocks, teacher_labels(blocks, ref)) if k)
        lines = [SimpleNamespace(text=line) for line in resil.split("\n") if line.strip()]
        vetoed = "\n".join(b.text for b, k in zip(lines, teacher_labels(lines, ref)) if k)
        rows.append(CeilingRow(p.name in held, t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5,
                               token_score(oracle, ref).f1, token_score(text, ref).f1, sure,
                               token_score(resil, ref).recall, token_score(vetoed, ref).f1))

    for label, sel in (("eval half 1 (held out)", [r for r in rows if r.held_out]), ("all eval pages", rows)):
        n = len(sel)

        def ms(field: str) -> float:
            return 1000 * sum(getattr(r, field) for r in sel) / n

        cascade_ms, parse_ms = ms("t_cascade"), ms("t_parse")
        print(f"\n== {label}: {n} pages ==")
        print(f"ms CPU/page: cascade {cascade_ms:.2f}; lexbor parse {parse_ms:.2f}; blocks_of (parse + walk) "
              f"{ms('t_blocks'):.2f}; features + model {ms('t_model'):.2f}; Resiliparse main content "
              f"{ms('t_resiliparse'):.2f}; a traverse() walk (parse + every node's tag, text or attributes, "
              f"open elements tracked) {ms('t_traverse'):.2f}")
        print("| text | " + " | ".join(f"F1 >= {a}" for a in AGREEMENT_LEVELS) + " |")
        print("|---|" + "---|" * len(AGREEMENT_LEVELS))
        sure = [r for r in sel if r.model_sure]
        for name, group, field in (("oracle blocks", sel, "oracle_f1"), ("packaged model", sel, "model_f1"),
                                   (f"packaged model, sure pages ({len(sure) / n:.0%})", sure, "model_f1"),
                                   ("Resiliparse main content: token recall", sel, "resiliparse_recall"),
                                   ("Resiliparse main content, oracle line veto", sel, "resiliparse_oracle_f1")):
            shares = [sum(getattr(r, field) >= a for r in group) / max(len(group), 1) for a in AGREEMENT_LEVELS]
            print(f"| {name} | " + " | ".join(f"{s:.1%}" for s in shares) + " |")
        fast = ms("t_blocks") + ms("t_model")
        for a in (0.99, 0.97):
            agree = sum(r.model_f1 >= a for r in sel) / n
            print(f"perfect judge at F1 >= {a}: the model agrees on {agree:.1%}; sure-path CPU with today's fast pass "
                  f"{fast + (1 - agree) * cascade_ms:.2f} ms/page, with a fast pass as cheap as the parse alone "
                  f"{parse_ms + (1 - agree) * cascade_ms:.2f} (cascade alone {cascade_ms:.2f})")
    print(f"\npeak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    from refinery.extract_fast import DEFAULT_MODEL

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--article-gold", type=Path, default=Path("/tmp/article-gold"))
    ap.add_argument("--ceiling", action="store_true", help="what a learned first pass could give (see ceiling())")
    args = ap.parse_args(argv)
    if not args.model.is_file():
        print(f"error: model not found: {args.model} (python -m classifiers.extractor --out {args.model})", file=sys.stderr)
        return 2
    if args.ceiling:
        ceiling(args.model)
    else:
        run(args.model, args.article_gold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
