"""A full-text gold set for modern article pages, built from real pages: the publisher's own
``articleBody`` (schema.org JSON-LD), then scored with ``refinery eval-extract``.

Why: trafilatura's evaluation set has snippets only ("with" / "without"), so token precision /
recall / F1 of whole articles (how the held-out check of issue 13 scores modern pages) cannot be
computed from it. Many news and magazine pages state their article text in a
``<script type="application/ld+json">`` block (``"articleBody": "..."``), written by the publisher
for search engines: a hand-independent gold for the article body.

A page becomes a gold pair when
- its longest ``articleBody`` has >= ``--min-words`` words (shorter ones are teasers or paywalls);
- >= ``--min-coverage`` of those words (bag of words) are in the page's visible text, so the gold is
  really on the page (not a paywalled full text or another language's version);
- the JSON-LD blocks are **removed** from the HTML the extractor gets, so no extractor can read the
  answer (trafilatura's ``baseline`` would).

Sources (real, nothing downloaded): trafilatura's evaluation pages in ``../shared/data/extraction``
(the snippet set our extraction defaults were chosen on: ``--source eval``), and the HTML responses
of the WARCs in ``data/sample/warc`` and ``../shared/data/warc`` (``--source warc``: independent of
that choice). Limits: ``articleBody`` omits headings, captions and tables that the page shows, so
its precision figures are a lower bound; publishers sometimes shorten it.

    python benchmarks/article_gold.py                      # build /tmp/article-gold and score the recipe's extract
    python benchmarks/article_gold.py -p include_tables=false -p fallback=false
    refinery eval-extract configs/refinedweb.yaml --gold /tmp/article-gold   # the same pairs, by hand
"""

from __future__ import annotations

import argparse
import hashlib
import html as html_lib
import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the project first: benchmarks/classifiers.py must not shadow the classifiers package
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

_LD_JSON = re.compile(r"<script[^>]*application/ld\+json[^>]*>.*?</script\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_BOM = "\ufeff"  # decode_html trusts a BOM before any <meta charset> of the original page


def article_bodies(html: str) -> list[str]:
    """Every ``articleBody`` string in the page's JSON-LD blocks, tags removed, entities decoded."""
    found: list[str] = []
    for block in _LD_JSON.findall(html):
        payload = block[block.index(">") + 1: block.rindex("<")]
        try:
            data = json.loads(payload, strict=False)
        except ValueError:
            continue
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for key, value in item.items():
                    if key == "articleBody" and isinstance(value, str):
                        found.append(html_lib.unescape(_TAG.sub(" ", value)).strip())
                    else:
                        stack.append(value)
            elif isinstance(item, list):
                stack.extend(item)
    return found


def visible_text(html: str) -> str:
    from lxml import html as lxml_html

    try:
        tree = lxml_html.fromstring(html)
    except (ValueError, lxml_html.etree.ParserError):
        return ""
    for bad in tree.xpath("//script|//style|//noscript|//template"):
        bad.drop_tree()
    return tree.text_content()


def gold_pair(html: str, min_words: int, min_coverage: float) -> tuple[str, str] | None:
    """``(html without JSON-LD, gold text)`` or None when the page has no usable article body."""
    from refinery.eval_extract import tokens

    bodies = article_bodies(html)
    if not bodies:
        return None
    body = max(bodies, key=len)
    body_tokens = Counter(tokens(body))
    if sum(body_tokens.values()) < min_words:
        return None
    stripped = _LD_JSON.sub("", html)
    shown = Counter(tokens(visible_text(stripped)))
    coverage = sum((body_tokens & shown).values()) / sum(body_tokens.values())
    if coverage < min_coverage:
        return None
    return stripped, body


def build(out: Path, sources: list[str], min_words: int, min_coverage: float) -> dict[str, int]:
    from real_pages import _eval_pages, _sample_pages, warc_pages  # type: ignore[import-not-found]

    from refinery.stages.extract import decode_html

    pages = []
    if "eval" in sources:
        pages += [("eval", p) for p in _eval_pages()]
    if "warc" in sources:
        pages += [("warc", p) for p in _sample_pages()] + [("warc", p) for p in warc_pages(ROOT.parent / "shared" / "data" / "warc")]
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    for source, page in pages:
        html, _ = decode_html(page.body, page.content_type)
        pair = gold_pair(html, min_words, min_coverage)
        counts[f"{source}_pages"] += 1
        if pair is None or page.url in seen:
            continue
        seen.add(page.url)
        name = f"{source}-{hashlib.sha1(page.url.encode()).hexdigest()[:12]}"
        (out / f"{name}.html").write_text(_BOM + pair[0], encoding="utf-8")
        (out / f"{name}.txt").write_text(pair[1] + "\n", encoding="utf-8")
        (out / f"{name}.url").write_text(page.url + "\n", encoding="utf-8")
        counts[f"{source}_gold"] += 1
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/article-gold")
    parser.add_argument("--source", default="eval,warc", help="eval, warc or both")
    parser.add_argument("--min-words", type=int, default=150)
    parser.add_argument("--min-coverage", type=float, default=0.9)
    parser.add_argument("--config", default=str(ROOT / "configs" / "refinedweb.yaml"))
    parser.add_argument("-p", dest="params", action="append", default=[], help="extract param override KEY=VALUE")
    parser.add_argument("--no-score", action="store_true")
    args = parser.parse_args()

    from refinery.eval_extract import evaluate, extract_stage_from_config, load_gold, through_stages_from_config
    from refinery.yaml_safe import load_yaml

    out = Path(args.out)
    counts = build(out, [s.strip() for s in args.source.split(",")], args.min_words, args.min_coverage)
    print("gold pairs:", counts)
    if args.no_score:
        return
    overrides = {k.strip(): load_yaml(v) for k, _, v in (p.partition("=") for p in args.params)}
    stage = extract_stage_from_config(args.config, overrides)
    pages = load_gold(out)
    result = evaluate(stage, pages, through=through_stages_from_config(args.config))
    for label, scored in (("extraction", result), ("after " + ",".join(result.through), result.after)):
        print(f"{label}: " + " | ".join(f"{k} {v}" for k, v in scored.table()))
        by_source: dict[str, list[float]] = {}
        for page in scored.per_page:
            by_source.setdefault(page.name.split("-")[0], []).append(page.f1 or 0.0)
        print("   per source (pages, mean F1, median F1, pages >= 0.965):",
              {k: (len(v), round(sum(v) / len(v), 4), round(statistics.median(v), 4), sum(f >= 0.965 for f in v))
               for k, v in by_source.items()})


if __name__ == "__main__":
    main()
