"""The learned block classifier as a second opinion on trafilatura's text (issue 13; an experiment,
not a stage option): is its score a better boilerplate signal than the hand rules tried before?

    python benchmarks/learned_veto.py [--model-b PATH] [--article-gold /tmp/article-gold]
                                      [-p fallback_mode=balanced ...] [--text-only] [--merge-balanced W]

For every page of trafilatura's evaluation set, the extract stage's text at its defaults (in-process
cascade, through ``clean_text``) is changed by two rules over the blocks of
``refinery.extract_fast`` (scores mixed with their neighbours' as the model's sidecar says):

- **veto**: drop an output line of <= ``w`` words whose block scores below ``t`` (a line's score is
  its exact block's, else the highest of the blocks holding it, else the mean of the blocks it holds;
  lines matching no block are kept);
- **add**: keep a block of >= ``w`` words scored >= ``t`` that trafilatura dropped, when it stands
  between the first and last block trafilatura kept.

Scores are **cross-fitted**: pages of half 1 (``split_pages``) are scored by the shipped model
(trained on half 0 + the sample WARCs), pages of half 0 by a model trained here on half 1 + the same
WARCs (``classifiers.extractor.train``, ~1 min CPU; ``--model-b`` reuses one). So no page is scored
by a model that saw it. Rule parameters are chosen on one half ("with" >= 93% with the least
leakage) and reported on the other. Then the CPU the model adds per page, and token F1 against
publisher article bodies (``benchmarks/article_gold.py --no-score``) if that directory exists.

``-p KEY=VALUE`` changes the extract stage's parameters for the text the rules start from (e.g.
``fallback_mode=balanced``). ``--merge-balanced W`` starts from that text plus the lines of
trafilatura's balanced mode (``fast``, no fallback) it lacks that have >= W words and end a sentence
(:func:`merge_lines`). ``--text-only`` asks whether the DOM is needed: the veto's scores
then come from a fastText model of a line's own words (its word count, last character and first 10
words; no walk, ~0.6 ms per page), trained on the same teacher-labelled blocks, cross-fitted the
same way; only veto rules are scored.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_TOKEN = re.compile(r"\w+")
VETO = [(-1.0, 0)] + list(itertools.product((0.02, 0.05, 0.1, 0.2), (3, 6, 10, 15)))
ADD = [(2.0, 0)] + list(itertools.product((0.9, 0.95), (4, 20)))


def _toks(s: str) -> str:
    return " ".join(_TOKEN.findall(s.lower()))


class Page:
    """One page's output lines with their block scores, and the blocks trafilatura dropped."""

    def __init__(self, text: str, blocks: list, scores: list[float]) -> None:
        btoks = [_toks(b.text) for b in blocks]
        best: dict[str, float] = {}
        for t, s in zip(btoks, scores):
            best[t] = max(s, best.get(t, 0.0))
        self.lines: list[tuple[str, float | None, int]] = []
        for line in text.split("\n"):
            lt = _toks(line)
            if not lt:
                self.lines.append((line, None, 0))
                continue
            score = best.get(lt)
            if score is None:
                holding = [s for t, s in zip(btoks, scores) if t and f" {lt} " in f" {t} "]
                held = [s for t, s in zip(btoks, scores) if t and f" {t} " in f" {lt} "]
                score = max(holding) if holding else (sum(held) / len(held) if held else None)
            self.lines.append((line, score, len(lt.split())))
        full = f" {_toks(text)} "
        kept = [i for i, t in enumerate(btoks) if t and f" {t} " in full]
        self.dropped: list[tuple[str, float, int]] = []
        if kept:
            inside = set(kept)
            self.dropped = [(blocks[i].text, scores[i], len(btoks[i].split()))
                            for i in range(kept[0], kept[-1] + 1) if i not in inside]

    def text(self, veto: tuple[float, int], add: tuple[float, int]) -> str:
        out = [ln for ln, s, w in self.lines if not (s is not None and s < veto[0] and w <= veto[1])]
        out += [t for t, s, w in self.dropped if s >= add[0] and w >= add[1]]  # order does not matter to snippets
        return "\n".join(out)


def _model_b(path: Path | None, tmp: Path) -> Path:
    from classifiers.extractor import DATA_DIR, eval_pages, train, warc_pages

    if path is not None:
        return path
    out = tmp / "extractor-half1.ftz"
    pages = eval_pages(DATA_DIR, half=1) + warc_pages([DATA_DIR / "warc", ROOT / "data" / "sample" / "warc"])
    print(f"training the half-1 model on {len(pages)} pages ...", flush=True)
    train(pages, out)
    return out


def line_features(text: str, first_words: int = 10) -> str:
    """A line as the text-only model sees it: word-count bucket, last character's class, first words."""
    words = _TOKEN.findall(text.lower())
    n = len(words)
    stripped = text.rstrip()
    last = stripped[-1] if stripped else ""
    end = ("e_none" if not last else "e_stop" if last in ".!?" else "e_colon" if last == ":"
           else "e_alnum" if last.isalnum() else "e_other")
    bucket = n if n < 8 else 8 if n < 12 else 12 if n < 20 else 20
    return f"wc_{bucket} {end} " + " ".join(words[:first_words])


class TextLineModel:
    """fastText over :func:`line_features` of every block of the training pages, labelled by the
    teacher as the block model is (``teacher_labels``)."""

    def __init__(self, pages: list, texts: list[str], workdir: Path) -> None:
        import random

        from classifiers.extractor import PARAMS
        from refinery.classifiers.common import train_fasttext
        from refinery.extract_fast import _load_fasttext, blocks_of, teacher_labels

        ex = []
        for page, text in zip(pages, texts):
            blocks = blocks_of(page.html)
            ex += [(str(y), line_features(b.text)) for b, y in zip(blocks, teacher_labels(blocks, text))]
        random.Random(0).shuffle(ex)
        workdir.mkdir(parents=True, exist_ok=True)
        model_bin, _, _ = train_fasttext(ex, PARAMS, workdir)
        self.model = _load_fasttext(model_bin)

    def score(self, line: str) -> float:
        labels, probs = self.model.predict(line_features(line), k=2)
        return float(dict(zip(labels, probs)).get("__label__1", 0.0))


def run_text_only(overrides: dict) -> None:
    """The veto with a text-only line model (see the module docstring)."""
    from classifiers.extractor import DATA_DIR, eval_pages, teacher, warc_pages
    from refinery.eval_extract import snippet_counts, split_pages
    from refinery.stages.extract import clean_text

    traf = teacher(**overrides)

    pages = eval_pages(DATA_DIR, None)
    held = {p.name for p in split_pages(pages, 1)}
    texts = {p.name: clean_text(traf(p.html, p.url) or "") for p in pages}
    warcs = warc_pages([DATA_DIR / "warc", ROOT / "data" / "sample" / "warc"])
    warc_texts = [clean_text(traf(p.html, p.url) or "") for p in warcs]
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for half in (0, 1):  # the model for a half is trained on the other half + the WARCs
            train = [p for p in pages if int(p.name in held) != half]
            print(f"training the text-only model for half {half} on {len(train) + len(warcs)} pages ...", flush=True)
            models[half] = TextLineModel(train + warcs, [texts[p.name] for p in train] + warc_texts, Path(tmp) / str(half))
    rows, t_model = [], 0.0
    for p in pages:
        half = int(p.name in held)
        t0 = time.process_time()
        lines = [(ln, models[half].score(ln) if 0 < len(_TOKEN.findall(ln)) <= 15 else None, len(_TOKEN.findall(ln)))
                 for ln in texts[p.name].split("\n")]
        t_model += time.process_time() - t0
        rows.append((p, half, lines))
    print(f"{len(rows)} pages ({overrides or 'stage defaults'}); text-only scores {1000 * t_model / len(rows):.2f} ms CPU per page")
    print(f"\n{'rule (veto t, w)':<22} {'half 0':>16}  {'half 1':>16}  {'all':>16}   (\"with\" found / \"without\" leaked)")
    for t, w in [(-1.0, 0)] + [(t, w) for t in (0.02, 0.05, 0.1, 0.3) for w in (3, 6, 10)]:
        acc = {0: [0, 0, 0, 0], 1: [0, 0, 0, 0]}
        for p, half, lines in rows:
            kept = "\n".join(ln for ln, sc, n in lines if not (sc is not None and sc < t and n <= w))
            acc[half] = [a + b for a, b in zip(acc[half], snippet_counts(kept, p.with_snippets, p.without_snippets))]
        tot = [a + b for a, b in zip(acc[0], acc[1])]
        label = "none" if t < 0 else f"veto {t}, <= {w}"
        print(f"{label:<22} " + "  ".join(f"{r[0] / r[1]:6.2%} / {r[2] / r[3]:5.2%}" for r in (acc[0], acc[1], tot)))


def _scores(fx, blocks: list) -> list[float]:
    from refinery.extract_fast import mix_scores

    s = fx.scores(blocks)
    return mix_scores(blocks, s, fx.mix) if fx.mix < 1.0 else s


_SENTENCE_END = tuple('.!?"\u201d\u00bb)\u2026')


def merge_lines(first: str, other: str, min_words: int) -> str:
    """``first`` with the lines of ``other`` it lacks that look like prose (>= ``min_words`` words,
    ending a sentence), each inserted where it stands in ``other`` (a line diff of the two)."""
    import difflib

    if not first:
        return other
    a, b = first.split("\n"), other.split("\n")
    out: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "insert":
            out += a[i1:i2]
        if tag in ("insert", "replace"):
            out += [ln for ln in b[j1:j2] if len(ln.split()) >= min_words and ln.rstrip().endswith(_SENTENCE_END)]
    return "\n".join(out)


def run(model_b: Path | None, article_gold: Path | None, overrides: dict | None = None,
        merge_balanced: int = 0) -> None:
    from classifiers.extractor import DATA_DIR, eval_pages, teacher
    from refinery.eval_extract import load_gold, snippet_counts, split_pages, token_score
    from refinery.extract_fast import FastExtractor, blocks_of
    from refinery.stages.extract import clean_text, decode_html

    traf = teacher(**(overrides or {}))
    if merge_balanced:  # the first text plus the prose lines of trafilatura's balanced mode (fast, no fallback)
        precision, balanced = traf, teacher(favor_precision=False, fast=True, fallback=False)
        traf = lambda html, url: merge_lines(precision(html, url) or "", balanced(html, url) or "",  # noqa: E731
                                             merge_balanced)
    with tempfile.TemporaryDirectory() as tmp:
        fx = {1: FastExtractor(), 0: FastExtractor(_model_b(model_b, Path(tmp)))}  # half -> model not trained on it
    pages = eval_pages(DATA_DIR, None)
    held = {p.name for p in split_pages(pages, 1)}
    rows, t_traf, t_model = [], 0.0, 0.0
    for p in pages:
        t0 = time.process_time()
        text = clean_text(traf(p.html, p.url) or "")
        t1 = time.process_time()
        blocks = blocks_of(p.html)
        scores = _scores(fx[int(p.name in held)], blocks)
        t2 = time.process_time()
        t_traf, t_model = t_traf + t1 - t0, t_model + t2 - t1
        rows.append((p, int(p.name in held), Page(text, blocks, scores)))
    n = len(rows)
    print(f"{n} pages; CPU per page: trafilatura ({overrides or 'stage defaults'}) {1000 * t_traf / n:.1f} ms, "
          f"the model's walk + features + scores {1000 * t_model / n:.1f} ms (+{t_model / t_traf:.0%})")

    def figures(veto, add) -> list[tuple[float, float]]:
        acc = {0: [0, 0, 0, 0], 1: [0, 0, 0, 0]}
        for p, half, page in rows:
            c = snippet_counts(page.text(veto, add), p.with_snippets, p.without_snippets)
            acc[half] = [a + b for a, b in zip(acc[half], c)]
        tot = [a + b for a, b in zip(acc[0], acc[1])]
        return [(r[0] / r[1], r[2] / r[3]) for r in (acc[0], acc[1], tot)]

    grid = {(v, a): figures(v, a) for v in VETO for a in ADD}
    fmt = lambda f: "  ".join(f"{w:6.2%} / {u:5.2%}" for w, u in f)  # noqa: E731
    print(f"\n{'rule (veto t, w | add t, w)':<34} {'half 0':>16}  {'half 1':>16}  {'all':>16}   (\"with\" found / \"without\" leaked)")
    for key in [((-1.0, 0), (2.0, 0)), ((0.02, 6), (2.0, 0)), ((0.05, 6), (2.0, 0)), ((0.05, 10), (2.0, 0)),
                ((0.1, 15), (2.0, 0)), ((-1.0, 0), (0.9, 20)), ((-1.0, 0), (0.95, 4)), ((0.05, 6), (0.9, 20)),
                ((0.05, 6), (0.95, 4))]:
        (v, a) = key
        label = ("none" if v[0] < 0 else f"veto {v[0]}, <= {v[1]}") + (" | " + ("-" if a[0] > 1 else f"add {a[0]}, >= {a[1]}"))
        print(f"{label:<34} {fmt(grid[key])}")
    for chosen_on in (0, 1):
        ok = [(k, f) for k, f in grid.items() if f[chosen_on][0] >= 0.93]
        if not ok:
            print(f"\nchosen on half {chosen_on}: no rule reaches 93% \"with\" there")
            continue
        k, f = min(ok, key=lambda kf: (kf[1][chosen_on][1], -kf[1][chosen_on][0]))
        print(f"\nchosen on half {chosen_on} (>= 93% \"with\", least leakage): veto {k[0]} add {k[1]}")
        print(f"  half {chosen_on}: {fmt([f[chosen_on]])}   held-out half {1 - chosen_on}: {fmt([f[1 - chosen_on]])}   all: {fmt([f[2]])}")

    if article_gold is not None and article_gold.is_dir():
        gold = [g for g in load_gold(article_gold) if g.text is not None]
        gheld = {g.name for g in split_pages(gold, 1)}
        arts = []
        for g in gold:
            html = decode_html(g.html, None)[0]
            blocks = blocks_of(html)
            arts.append((g, Page(clean_text(traf(html, g.url) or ""), blocks, _scores(fx[int(g.name in gheld)], blocks))))
        print(f"\narticle gold ({article_gold}, {len(arts)} pages): token F1 / precision / recall, mean per page")
        for v, a in [((-1.0, 0), (2.0, 0)), ((0.05, 6), (2.0, 0)), ((0.05, 10), (2.0, 0)), ((0.05, 6), (0.9, 20)), ((0.05, 6), (0.95, 4))]:
            ss = [token_score(page.text(v, a) or None, g.text) for g, page in arts]
            m = lambda xs: sum(xs) / len(xs)  # noqa: E731
            print(f"  veto {v} add {a}: F1 {m([s.f1 for s in ss]):.4f}  P {m([s.precision for s in ss]):.4f}  R {m([s.recall for s in ss]):.4f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-b", type=Path, default=None, help="a model trained on half 1 + the WARCs (else trained here)")
    ap.add_argument("--article-gold", type=Path, default=Path("/tmp/article-gold"))
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="an extract stage parameter for the base text (YAML value), e.g. fallback_mode=balanced")
    ap.add_argument("--merge-balanced", type=int, default=0, metavar="W",
                    help="start from the defaults plus balanced mode's lines of >= W words that end a sentence")
    ap.add_argument("--text-only", action="store_true", help="the veto from a text-only line model (no DOM walk)")
    args = ap.parse_args(argv)
    import yaml

    overrides = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"-p {item}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    if args.text_only:
        run_text_only(overrides)
    else:
        run(args.model_b, args.article_gold, overrides, args.merge_balanced)
    return 0


if __name__ == "__main__":
    sys.exit(main())
