"""The article-body gold builder (benchmarks/article_gold.py): publisher JSON-LD bodies become gold
text only when they are on the page, and the extractor never sees them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

# last: benchmarks/classifiers.py must not shadow the classifiers package
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))

from article_gold import article_bodies, gold_pair  # noqa: E402

BODY = ("The council met on Tuesday to discuss the new bridge over the river. " * 12).strip()


def _page(body: str, shown: str) -> str:
    ld = json.dumps({"@context": "https://schema.org", "@graph": [{"@type": "NewsArticle", "headline": "Bridge",
                                                                     "articleBody": body}]})
    return (f"<html><head><script type=\"application/ld+json\">{ld}</script></head><body>"
            f"<nav><a href='/'>Home</a></nav><article><p>{shown}</p></article></body></html>")


def test_a_body_shown_on_the_page_becomes_gold_and_leaves_the_html():
    html = _page(BODY.replace("river.", "river.<br>", 1), BODY)
    (body,) = article_bodies(html)
    assert "<br>" not in body and body.split() == BODY.split()  # markup inside the body is dropped
    pair = gold_pair(html, min_words=100, min_coverage=0.9)
    assert pair is not None
    stripped, gold = pair
    assert "ld+json" not in stripped and "articleBody" not in stripped  # the answer is not handed over
    assert "The council met" in stripped and gold.startswith("The council met")


def test_teasers_and_bodies_not_on_the_page_are_refused():
    assert gold_pair(_page("Short teaser only.", BODY), min_words=100, min_coverage=0.9) is None
    other = ("Der Rat tagte am Dienstag und sprach über die neue Brücke über den Fluss. " * 12).strip()
    assert gold_pair(_page(other, BODY), min_words=100, min_coverage=0.9) is None  # another language's text
    assert gold_pair("<html><body><p>no json-ld</p></body></html>", 10, 0.9) is None
