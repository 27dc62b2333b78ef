"""Captions and picture credits (session 50, h213): trafilatura drops ``<figure>`` and lower-case
"caption" classes, but not a credit box, "imageCaption" or a photographer's name in a ``div.cred``
(``extract.drop_credit_blocks``); nor a caption line that names the lead picture or ends with a
bare credit (``line_corrections.drop_caption_credits``). Markup and lines are real pages'."""

from __future__ import annotations

import pytest

from refinery.config import load_config
from refinery.stages import credits
from refinery.stages.extract import TrafilaturaExtractor
from refinery.stages.line_corrections import LineCorrections
from tests.conftest import ROOT
from tests.test_extract import EVAL_TARBALL, load_eval_pages, make_batch, page

P1 = ("I have been wondering what exactly the number 3 represents for the rapper, embossed on hats, shirts "
      "and more inside the music center on Saturday night.")
P2 = "The real one was watching him take 75 minutes of his night to bring a coloring book back to life."
P3 = "AMO found Sunday 475 pounds of cocaine concealed inside a vessel being removed from the water."
#: a credit card offer is not a picture's credit; a long "caption" wrapper is content
CARD = "Compare the cashback rates of the cards below before you apply for any of them online."
WRAPPER = " ".join(["This long paragraph sits in a wrapper whose class happens to name captions."] * 6)


def _recipe(kind: str):  # noqa: ANN202 - a stage
    config = load_config(ROOT / "configs" / "refinedweb.yaml")
    return next(s for s in config.stages if s.type == kind).build()


BODY = (f"<p>{P1}</p><div class='img-box'><div class='inner-img-box'><img src='a.jpg'><div class='insert no-cap'>"
        "<table><tr><td><div class='cred'>Violeta Alvarez</div></td></tr></table></div></div></div>"
        f"<p>{P2}</p><p class='imageCaption'>Fitness guru Joe Wicks has also called on the Prime Minister</p>"
        f"<div class='col-md-12 summary-credit'><p>{P3} By U.S. CUSTOMS AND BORDER PROTECTION</p></div>"
        f"<p><span class='ee-has-fotocredit alignnone'>(Bild: Dieter Stork)</span></p>"
        f"<div class='credit-card-offers'><p>{CARD}</p></div><div class='Caption-wrap'><p>{WRAPPER}</p></div>")


def test_credit_blocks_go_at_extraction() -> None:
    """Elements named as a caption or credit (a word of the class, any case) go; a credit card's
    box and a long wrapper so named stay. Off (trafilatura's rules): the credits stay."""
    on = TrafilaturaExtractor(timeout_s=0, drop_credit_blocks=True)(make_batch([page(BODY).encode()]))
    text = on.column("text")[0].as_py()
    assert text.split("\n") == [P1, P2, CARD, WRAPPER]
    off = TrafilaturaExtractor(timeout_s=0)(make_batch([page(BODY).encode()])).column("text")[0].as_py()
    assert all(credit in off for credit in ("Violeta Alvarez", "Joe Wicks", "CUSTOMS", "(Bild: Dieter Stork)"))


def test_credit_named_reads_class_words() -> None:
    from refinery.stages._trafilatura_rules import credit_named
    from lxml import html

    def named(cls: str) -> bool:
        return credit_named(html.fromstring(f"<div class='{cls}'>x</div>"))

    for cls in ("cred", "imageCaption", "tr-caption-container", "photo-credits white-bg", "ACredit_sign",
                "imgcredits", "credito-image-bk", "cb-credit-line", "GoogleDfpAd-adCaption"):
        assert named(cls), cls
    for cls in ("credit-card-offers", "creditScore", "ContentHeaderAccreditation", "incredible", "capital",
                "escape", "card"):
        assert not named(cls), cls


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_the_recipe_drops_credit_blocks_of_real_pages(tmp_path) -> None:  # noqa: ANN001
    """dailymail's ``p.imageCaption`` captions and gitarrebass' "(Bild: ...)" credit spans through the
    recipe's ``extract``; their articles' text stays."""
    rows = load_eval_pages(tmp_path, ("dailymail.co.uk.food.html", "gitarrebass.de-dieneue.html"))
    extract = _recipe("extract")
    extract.timeout_s = 0
    mail, bass = extract(make_batch([r[1] for r in rows], None, [r[0] for r in rows])).column("text").to_pylist()
    assert "Fitness guru Joe Wicks has also called on the Prime Minister" not in mail
    assert "Jamie Oliver" in mail and len(mail) > 20_000
    assert "(Bild:" not in bass and "Newsletter" in bass


#: real pages' lines (the 1,086 extracted texts of benchmarks/real_pages.py) the rule drops
CAPTIONS = [
    "Header Image: People have lived in Ecuador’s Amazon forests for thousands of years, including those who "
    "made this petroglyph (rock art) in Napo province. Credit: Tomas Munita/CIFOR (CC BY-NC-ND 2.0)",
    "featured image: Tetbir Salim via Unsplash",
    "The real state epidemiologist Anders Tegnell at one of the Public Health Agency's daily briefings. "
    "Photo: Jonathan Nackstrand/AFP",
    "Taiwanese President Tsai Ing-wen speaks during a televised policy debate in Taipei on December 29. Photo: AP",
    "Words: Rudolf Fischer, Simon Kohler Photos: Simon Kohler",
]
#: lines naming a picture or a credit that are content
CONTENT = [
    "Original NASA Blue Marble-Foto links, Visualisierung rechts. Credit: MPI-M, DKRZ, NVIDIA. Zum Starten "
    "des Videos bitte das Bild anklicken.",
    "He gave me credit: a lot of it, more than I deserved for the work.",
    "Our featured image: a look at the new model that the team built over the summer.",
    "The bank cut the rates for new customers. Credit: a loan you pay back later.",
]


def test_caption_credit_lines_go() -> None:
    lines = CAPTIONS + CONTENT
    assert credits.caption_credit_lines(lines) == set(range(len(CAPTIONS)))
    intro = " ".join(["The tattoo parlour was busy all day, and the artist worked on one portrait."] * 3)
    text = "\n".join([intro, *CAPTIONS, *CONTENT])
    on = LineCorrections(max_removed_word_frac=1.0, drop_caption_credits=True).correct(text)[0]
    assert on.split("\n") == [intro, *CONTENT]
    assert _recipe("line_corrections").drop_caption_credits is True
