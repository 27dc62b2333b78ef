"""Which pages benchmarks/table_layout_pages.py counts as laid out with tables."""
from __future__ import annotations

import sys
from pathlib import Path

# last: benchmarks/classifiers.py must not shadow the classifiers package
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))

from table_layout_pages import td_share  # noqa: E402

from refinery.eval_extract import GoldPage  # noqa: E402

PROSE = "The club met every Sunday on a borrowed field behind the old mill. " * 10


def _page(body: str) -> GoldPage:
    return GoldPage("p", f"<html><body>{body}<script>var x = '{PROSE}';</script></body></html>".encode())


def test_the_share_of_visible_text_in_outermost_cells() -> None:
    layout = _page(f"<table><tr><td>Home News</td><td><table><tr><td>{PROSE}</td></tr></table></td></tr></table>")
    assert td_share(layout) == 1.0  # nested cells are counted once, in their outermost cell
    article = _page(f"<nav>Home News</nav><article><p>{PROSE}</p><table><tr><td>1</td><td>2</td></tr></table></article>")
    assert td_share(article) < 0.01  # a data table inside an article; the script's text is not visible
    assert td_share(GoldPage("empty", b"")) == 0.0 and td_share(_page("")) == 0.0
