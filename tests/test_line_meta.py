"""``line_corrections.drop_meta_lines``: lines that are only a date stamp, a byline or a reading time."""

from __future__ import annotations

import pytest

from refinery.config import load_config
from refinery.stages import meta_lines
from refinery.stages.line_corrections import LineCorrections
from tests.conftest import ROOT, SHARED_DATA
from tests.test_line_corrections import _wikipedia_lead_lines

PROSE = "The council met on Tuesday and agreed on a plan to repair the old bridge over the river."

#: metadata lines in real extracted text: evaluation pages (breakingbelizenews, californiaglobe,
#: bbc), the bundled WARCs (maria-antoniak.github.io, creativecommons.org), cc_docs
META_LINES = [
    "Posted: Thursday, April 21, 2022. 10:11 pm CST.",
    "By Evan Symon, August 14, 2020 2:30 pm",
    "By Nada Tawfik, BBC News, New York",
    "Updated: July 24, 2023",
    "Posted 28 March 2024",
    "By Timothy Foster",
    "Published 23 Jul 2014, 10:57",
    "Last Modified: 07 Mar 2017 06:30",
    "by EM News March 09, 2015",
    "By Kate O’Sullivan and Laura Benitez Apr 8 2014",
    "5 min read",
]

#: lines that look like metadata and are content: a story's scene date and a news item's date
#: heading (bare dates: cc_docs, kyleclo.com), sentences and headings (a date of digits alone, a
#: value under its label such as "2/4/1855", is RefinedWeb's numeric line, dropped either way)
CONTENT_LINES = [
    "June 26, 1973",
    "Feb 1, 2024",
    "May 2019: Defended my dissertation!",
    "By the end of 2020, the bridge was repaired.",
    "By contrast",
    "By Car",
    "By Design: How We Built It",
    "Updated guidance was published on March 3, 2020.",
    "Released on vinyl in March 2020, it sold out.",
]


@pytest.mark.parametrize("line", META_LINES)
def test_meta_lines_go_when_asked(line: str) -> None:
    text = f"{PROSE}\n{line}\n{PROSE}"
    assert LineCorrections(drop_meta_lines=True).correct(text)[0] == f"{PROSE}\n{PROSE}", line
    assert LineCorrections().correct(text)[0] == text, line  # off by default


@pytest.mark.parametrize("line", CONTENT_LINES)
def test_lines_that_only_look_like_metadata_stay(line: str) -> None:
    text = f"{PROSE}\n{line}\n{PROSE}"
    assert LineCorrections(drop_meta_lines=True).correct(text)[0] == text, line


def test_option_is_off_and_resumable() -> None:
    assert LineCorrections().drop_meta_lines is False
    assert LineCorrections.added_params["drop_meta_lines"] is False


def test_no_wikipedia_lead_or_leipzig_sentence_is_a_meta_line() -> None:
    lines = _wikipedia_lead_lines()
    leipzig = SHARED_DATA / "langid" / "lingua-testdata" / "sentences" / "en.txt"
    if leipzig.is_file():
        lines += leipzig.read_text(encoding="utf-8").split("\n")
    assert [line for line in lines if meta_lines.is_meta_line(line.strip(), len(line.split()))] == []


def _recipe_line_corrections() -> LineCorrections:
    config = load_config(ROOT / "configs" / "refinedweb.yaml")
    return next(s for s in config.stages if s.type == "line_corrections").build()


def test_the_recipe_drops_meta_lines() -> None:
    """On in configs/refinedweb.yaml since session 49's labelled reading audit (docs/extraction.md):
    meta lines were the commonest boilerplate in a random sample of 60 kept documents (8), and
    these three, the rule's kind, were among them; on all 1,087 real pages it cuts 8 such lines
    and changes no decision."""
    recipe = _recipe_line_corrections()
    for line in ("Posted: Thursday, April 21, 2022. 10:11 pm CST.", "By Evan Symon, August 14, 2020 2:30 pm",
                 "Updated March 19, 2023"):
        assert recipe.correct(f"{PROSE}\n{line}\n{PROSE}")[0] == f"{PROSE}\n{PROSE}", line
    for line in CONTENT_LINES:
        text = f"{PROSE}\n{line}\n{PROSE}"
        assert recipe.correct(text)[0] == text, line
