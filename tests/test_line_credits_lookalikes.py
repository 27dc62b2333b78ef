"""line_corrections' drop_credits (refinery/stages/credits.py) and drop_lookalikes
(refinery/stages/lookalikes.py) on real lines: session 33, a reading probe of kept documents."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest

from refinery.stages import credits, lookalikes
from refinery.stages.base import REASON
from refinery.stages.line_corrections import LineCorrections
from tests.test_line_corrections import _wikipedia_lead_lines

ROOT = Path(__file__).resolve().parents[1]
CC_DOCS = ROOT / "data" / "sample" / "cc_docs" / "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"
PROSE = "The council met on Tuesday and agreed on a plan to repair the old bridge over the river."
ON = LineCorrections(drop_credits=True, drop_lookalikes=True)

#: credit lines found in real extracted text (the evaluation pages, cc_docs)
CREDIT_LINES = [
    "(Credit: Clayton Aldern / Grist)",  # salon.com
    "Photo Source: Markus Spiske from Pexels.",  # diem25.org
    "photo credit: Walking With The Wounded via photopin cc",  # cc_docs
    "Photo by Joshua Humphrey on Unsplash.",  # cc_docs
    "Photo credit: Josep Emili",  # cc_docs
    "© Oli Scarff/Getty Images",  # amnesty.de
    "Click for a larger image.",  # cc_docs
    "Featured image by Alberto Riva/The Points Guy.",  # thepointsguy.com (session 33's reading probe)
    "Photo by Got Credit",  # cc_docs (a Flickr account's name)
]


@pytest.mark.parametrize("line", CREDIT_LINES)
def test_credit_lines_go(line: str) -> None:
    text = f"{PROSE}\n{line}\n{PROSE}"
    assert ON.correct(text)[0] == f"{PROSE}\n{PROSE}"
    assert LineCorrections(drop_credits=False).correct(text)[0] == text  # the option is the rule's


def test_a_picture_label_goes_only_when_repeated() -> None:
    """'Photo : Luis Castilla' six times in one cc_docs article is its credit slot; one 'Photo: ...'
    line may open a tweet or a caption."""
    once = f"{PROSE}\nPhoto: Me and my sister at the beach\n{PROSE}"
    assert ON.correct(once)[0] == once
    twice = f"{PROSE}\nPhoto : Luis Castilla\n{PROSE}\nPhoto : Luis Castilla\n{PROSE}"
    assert ON.correct(twice)[0] == f"{PROSE}\n{PROSE}\n{PROSE}"


def test_the_credit_slot_of_a_real_article_goes() -> None:
    with gzip.open(CC_DOCS, "rt", encoding="utf-8") as fh:
        text = next(r["text"] for r in map(json.loads, fh) if r["id"] == "frpdesgelxqrjcihv5xl3d4dzglbokb2")
    lines = text.split("\n")
    cut = {lines[i].strip() for i in credits.credit_lines(lines)}
    assert cut == {"Photo\xa0: Luis Castilla", "Photos\xa0: Luis Castilla"}
    corrected = ON.correct(text)[0]
    assert "Luis Castilla" not in corrected and "Manuela Papino" in corrected


@pytest.mark.parametrize("line", [
    "| Image | Name | Description | Source |",  # stardewvalleywiki.com's table header
    "[[Image:Heroes.jpg|thumb|Troy, Hamilton and Dillon]]",  # wiki markup (cc_docs)
    "VIDEO: Breast Cancer Symptoms That Aren't Lumps",  # a link to a video, not a credit
    "Photographs of the old bridge were taken by the council in 1921.",  # a sentence
])
def test_tables_markup_and_sentences_stay(line: str) -> None:
    text = f"{PROSE}\n{line}\n{PROSE}\n{line}\n{PROSE}"
    assert credits.credit_lines(text.split("\n")) == set()


#: lines of Latin words with Cyrillic look-alike letters, from real text
LOOKALIKE_LINES = [
    # breakingbelizenews.com (an evaluation page): Cyrillic А е і ѕ В у с
    "Аdvеrtіѕе wіth thе most visited news site in Веlіzе ~ Wе оffеr fullу сuѕtоmіzаblе аnd flехіblе dіgіtаl "
    "mаrkеtіng расkаgеѕ. Yоur соntеnt іѕ dеlіvеrеd іnѕtаntlу tо thоuѕаndѕ оf uѕеrѕ іn Веlіzе аnd аbrоаd! Соntасt uѕ "
    "аt marketing@breakingbelizenews.com оr саll uѕ аt 501-601-0315.",
    "@USER Hеy! I am 21 years old. I'm waiting for you hеre 👉 URL 👈 👰 😗 🌷",  # an OLID spam tweet
]


@pytest.mark.parametrize("line", LOOKALIKE_LINES)
def test_lookalike_lines_go(line: str) -> None:
    text = f"{PROSE}\n{line}\n{PROSE}"
    assert ON.correct(text)[0] == f"{PROSE}\n{PROSE}"
    assert LineCorrections(drop_lookalikes=False).correct(text)[0] == text


@pytest.mark.parametrize("line", [
    # an OLID tweet with one Cyrillic е: a typo, not a disguise
    "#HappyRMday I bought pizza and chocolates, but I did not have enough money for a cake I plan to make a "
    "tradition, buy pizza on the birthday of my loved ones .. even if we are not acquainted and will never meet, "
    "you are still a close person to mе thank you i luv u 생일 축하합니다 URL",
    # Cyrillic text with Latin letters or names (Leipzig sentences, cc_docs)
    "Разны абраз «Нараджэнне Iiсуса Хрыста» з удзячнасцю прыняў у дар Патрыярх Маскоўскi i ўсяе Русi Аляксiй II.",
    "Адамдар тәрізді маймылдар Адамдар тәрізді маймылдар(Homіnoіdea, Anhropomorphіdae) — маймылдар отрядының "
    "тартанаулылар тобының бір тұқымдасы.",
    "Увага! Ви не авторизувалися на сайті. Ваша IP-адреса буде публічно видима, якщо Ви будете вносити будь-які "
    "редагування. Якщо Ви увійдете або створите обліковий запис, редагування будуть натомість пов'язані з Вашим "
    "іменем користувача, а ще у Вас з'являться інші переваги.",
    "• Мультиплекс в ТЦ «ПортCity». Кількість екранів: 4. Відкрито у 2013 році.",
    # Greek in science (Wikipedia leads)
    "Penicillins are a group of β-lactam antibiotics originally obtained from Penicillium moulds, principally"
    " P. chrysogenum and P. rubens. Eight species of Penicillium, in the section Chrysogena, produce "
    "penicillins. Most penicillins in clinical use are synthesised by P. chrysogenum using deep tank "
    "fermentation and then purified. A number of natural penicillins have been discovered, but only two "
    "purified compounds are in clinical use: penicillin G and penicillin V. Penicillins were among the first "
    "medications to be effective against many bacterial infections caused by staphylococci and streptococci. "
    "They are still widely used today for various bacterial infections, though many types of bacteria have "
    "developed resistance following extensive use.",
])
def test_cyrillic_text_greek_and_a_single_typo_stay(line: str) -> None:
    assert not lookalikes.is_lookalike_line(line)


def test_no_wikipedia_lead_line_is_a_credit_or_a_lookalike() -> None:
    lines = _wikipedia_lead_lines()
    assert [line for line in lines if lookalikes.is_lookalike_line(line)] == []
    assert [lines[i] for i in credits.credit_lines(lines)] == []


@pytest.mark.parametrize("line", [
    # written (the shared data holds none): a course catalogue, a price, a film's credits, a thank-you
    # ("Credit:" without a name)
    "Credits: 3 (ECTS)", "Credit: 4 units", "Credit: $500 per month", "Credits: music by John Williams",
    "Credit: the author thanks her mother for the recipe.",
    # a sentence naming a stock site, not a credit ending with it
    "Photos from Flickr show the flood.", "Photo by Unsplash founder Mikael Cho, 2013.",
    "Photos via Getty Images show the damage.", "Photos from our trip to Canva headquarters",
    # documentation: an image's source is not a picture credit
    "Image sources and formats", "Image source code is on GitHub.",
])
def test_content_lines_naming_credits_or_stock_sites_stay(line: str) -> None:
    text = f"{PROSE}\n{line}\n{PROSE}"
    assert ON.correct(text)[0] == text


def test_repeated_captions_after_a_picture_label_stay() -> None:
    """Two captions ("Photo: A man walks ...") are not a credit slot; two names are."""
    text = f"{PROSE}\nPhoto: A man walks past a mural in Kyiv.\n{PROSE}\nPhoto: Firefighters at the scene on Monday\n{PROSE}"
    assert ON.correct(text)[0] == text
    names = f"{PROSE}\nPhoto: YONHAP News\n{PROSE}\nPhoto: Clayton Aldern for The New York Times\n{PROSE}"
    assert ON.correct(names)[0] == f"{PROSE}\n{PROSE}\n{PROSE}"


def test_credits_leave_the_budget_but_lines_refinedwebs_patterns_cut_still_count() -> None:
    """A credit is neither removed words nor the document's words; a line RefinedWeb's patterns cut
    already ("Click here to enlarge", "Advertisement - Scroll to continue") counts as it did."""
    credit = f"{PROSE}\nPhoto by Joshua Humphrey on Unsplash.\n{PROSE}"
    assert ON.correct(credit) == (f"{PROSE}\n{PROSE}", 0, 36)
    off = LineCorrections()
    for line in ("Click here to enlarge", "Advertisement - Scroll to continue"):
        text = f"{PROSE}\n{line}\n{PROSE}"
        assert off.correct(text)[1] > 0  # RefinedWeb's patterns count it
        corrected, removed, total = ON.correct(text)
        assert corrected == f"{PROSE}\n{PROSE}" and removed == len(line.split()) and total == off.correct(text)[2]


def test_a_document_of_credits_alone_is_removed_as_empty() -> None:
    batch = pa.record_batch({"id": ["0", "1"], "text": ["Photo credit: Josep Emili\nClick for a larger image.",
                                                       f"{PROSE}\nPhoto credit: Josep Emili"]})
    out = LineCorrections(drop_credits=True)(batch)
    assert out.column(REASON).to_pylist() == ["empty_text", None]
    assert out.column("text").to_pylist()[1] == PROSE


# credits_in_more_languages (session 35): the census of leaked "without" snippets found picture
# credits in German and French that drop_credits, written for English, leaves
MORE = LineCorrections(drop_credits=True, credits_in_more_languages=True)

#: credit lines in other languages found in real extracted text (half 0 of the evaluation pages, cc_docs)
OTHER_CREDIT_LINES = [
    "Titelbild: Geyres Christophe/ABACA/picture-alliance",  # fluter.de
    "Beitragsbild: Titelseite der FAZ vom 2.4.2019, Ausriss.",  # spektrum.de
    "Crédits photos : Bestimage",  # gala.fr
    "Crédit photo : KB / Bondy Blog",  # bondyblog.fr
    "Bildquelle: Peter Ferstl",  # apolut.net
    "Bildcredit: (c) yakushkina - depositphotos.com",  # haustiermagazin.com
    "Titelbild: Fachy Marín on Unsplash",  # spontis.de
    "Crédito de la imagen: www.flickr.com/photos/31984053@N00/117725027",  # cc_docs
]


@pytest.mark.parametrize("line", OTHER_CREDIT_LINES)
def test_credit_lines_in_other_languages_go(line: str) -> None:
    text = f"{PROSE}\n{line}\n{PROSE}"
    assert MORE.correct(text)[0] == f"{PROSE}\n{PROSE}"
    assert ON.correct(text)[0] == text  # drop_credits alone: English only, as before


def test_a_picture_label_in_another_language_goes_only_when_repeated() -> None:
    """gitarrebass.de credits each of its 13 pictures "(Bild: Dieter Stork)"; one "Foto: X" stays, as
    one "Photo: X" does, and so do captions after the label."""
    once = f"{PROSE}\nFoto: Michael von Lingen (Copyright)\n{PROSE}"  # dbjr.de
    assert MORE.correct(once)[0] == once
    twice = f"{PROSE}\n(Bild: Dieter Stork)\n{PROSE}\nFotos: Tobias König und Michael Romstöck\n{PROSE}"
    assert MORE.correct(twice)[0] == f"{PROSE}\n{PROSE}\n{PROSE}"
    captions = f"{PROSE}\nFoto: Ein Mann geht an einem Wandbild vorbei\n{PROSE}\nBild: Feuerwehrleute löschen den Brand\n{PROSE}"
    assert MORE.correct(captions)[0] == captions


def test_repeated_captions_after_a_picture_label_stay() -> None:
    """German capitalises a caption's nouns as it does names: repeated captions that start with an
    article, or are not in Latin letters, are not credits (a review's crafted lines)."""
    for a, b in (("Bild: Der Neubau der Schule", "Bild: Die Kirche St. Martin"),
                 ("Imagen: La Casa Blanca", "Imagen: El Presidente"),
                 ("Foto: صورة من الحفل", "Foto: صورة أخرى")):
        text = f"{PROSE}\n{a}\n{PROSE}\n{b}\n{PROSE}"
        assert MORE.correct(text)[0] == text


@pytest.mark.parametrize("line", [
    # a text's source (a news agency, a study) is not a picture credit (half 0 of the evaluation pages)
    "Quelle: dpa-AFX", "Quelle: Science, Rice University, Princeton University",
    # sentences and long captions naming pictures (half 0 of the evaluation pages)
    "Bilder von der Pressekonferenz sind über das Fotoservice des Bundeskanzleramts kostenfrei abrufbar.",
    "Bild: Die neuen im „Sturm der Liebe“-Bunde: Soluna-Delta Kokol, Robin Schick (r.) und Martin Walde. / Quelle: ARD/Christof Arnold",
    "Fotografie ist für mich ein Akt der Aufmerksamkeit.",
])
def test_other_language_lines_naming_pictures_stay(line: str) -> None:
    text = f"{PROSE}\n{line}\n{PROSE}"
    assert MORE.correct(text)[0] == text


def test_no_leipzig_sentence_is_a_credit_in_more_languages() -> None:
    from tests.conftest import SHARED_DATA

    root = SHARED_DATA / "langid" / "lingua-testdata" / "sentences"
    if not root.is_dir():
        pytest.skip("shared/ data not present")
    for lang in ("de", "fr", "es", "it", "nl", "pt"):
        lines = (root / f"{lang}.txt").read_text(encoding="utf-8").split("\n")
        assert len(lines) > 900
        assert [lines[i] for i in credits.credit_lines(lines, more_languages=True)] == [], lang


def test_leaked_credits_of_evaluation_pages_go(tmp_path: Path) -> None:
    """The three "without" snippets of half 0 the option removes, on the recipe's extracted text;
    every "with" snippet the text held stays."""
    from refinery.eval_extract import _batch, _norm, extract_stage_from_config, load_gold
    from tests.test_extract import EVAL_TARBALL, load_eval_pages

    if not EVAL_TARBALL.is_file():
        pytest.skip("shared/ evaluation data not present")
    pages = load_eval_pages(tmp_path, ("fluter.de.vorbild.html", "gala.fr.surnom.html", "spektrum.de.engelbart.html"))
    gold = tmp_path / "gold.json"
    for _, html, item in pages:
        (tmp_path / item["file"]).write_bytes(html)
    gold.write_text(json.dumps({url: item for url, _, item in pages}))
    stage = extract_stage_from_config(ROOT / "configs" / "refinedweb.yaml", {"timeout_s": 0})
    gold_pages = load_gold(gold)
    texts = dict(zip((p.url for p in gold_pages), stage(_batch(gold_pages)).column("text").to_pylist()))
    leaked = {"Titelbild:", "Crédits photos : Bestimage", "Beitragsbild"}
    for url, _, item in pages:
        text = texts[url]
        before, after = _norm(ON.correct(text)[0]), _norm(MORE.correct(text)[0])
        gone = [s for s in item["without"] if s in leaked]
        assert gone and all(_norm(s) in before and _norm(s) not in after for s in gone), item["file"]
        assert [s for s in item["with"] if _norm(s) in before] == [s for s in item["with"] if _norm(s) in after]


CAPTIONS = LineCorrections(drop_credits=True, drop_credited_captions=True)


@pytest.mark.parametrize("line", [
    # thelocal.se (session 37's reading probe), nationnews.com, scmp.com (evaluation pages)
    "The real state epidemiologist Anders Tegnell at one of the Public Health Agency's daily briefings. "
    "Photo: Jonathan Nackstrand/AFP",
    "Chief Education Officer Dr Ramona Archer-Bradshaw. (Picture by Jameel Springer)",
    "Taiwanese President Tsai Ing-wen speaks during a televised policy debate in Taipei. Photo: AP",
    "Costa Rican President-elect Rodrigo Chaves (Photo by Ezequiel BECERRA / AFP)",
])
def test_a_caption_ending_with_its_credit_goes(line: str) -> None:
    text = f"{PROSE}\n{line}\n{PROSE}"
    assert CAPTIONS.correct(text)[0] == f"{PROSE}\n{PROSE}"
    assert ON.correct(text)[0] == text  # drop_credits alone: only credit lines, as before


@pytest.mark.parametrize("line", [
    "In a departure from its flagships, the phone gets a fingerprint sensor. Image credit:",  # no name
    "We went to the beach in the morning and took a photo by the pier.",
    "He showed me the photo: a man walks past a mural in the old town.",
    "The exhibition opens today. Pictures by Picasso hang in the Louvre",
    "Photo: Getty Images",  # a credit line alone is credit_lines' job (once: it stays)
    "| Tegnell at a briefing. Photo: Jonathan Nackstrand/AFP |",  # a table's row
])
def test_lines_that_are_not_a_credited_caption_stay(line: str) -> None:
    text = f"{PROSE}\n{line}\n{PROSE}"
    assert CAPTIONS.correct(text)[0] == text


def test_no_wikipedia_lead_line_is_a_credited_caption() -> None:
    lines = _wikipedia_lead_lines()
    assert credits.credited_caption_lines(lines) == set()


# drop_copyright_credits (session 38's reading probe): a picture's holder after "©", in any language
COPYRIGHT = LineCorrections(drop_credits=True, drop_copyright_credits=True)


@pytest.mark.parametrize("line", [
    "© Shutterstock",  # de.starsinsider.com (evaluation half 0)
    "© Nordex",  # iwrpressedienst.de (half 0)
    "© Cover Media",  # tvtoday.de (half 0)
    "Rubriklistenbild: © KCNA/dpa",  # fr.de (half 0)
    "Symbolgrafik:© Butch - stock.adobe.com",  # juraforum.de (half 0)
    "Marco Odermatt, Ski-Star aus der Schweiz. © AFP / MARCO BERTORELLO",  # sportnews.bz (half 0)
    "© Bundesrat | Frank Bräuer",  # bundesrat.de (half 1: a "without" snippet)
    "© dpa | Kay Nietfeld",  # bundesrat.de (half 1)
    "(c) Wiley-VCH",  # idw-online.de (half 1)
    "Logo des Sustainable Award in Finance von Bankmagazin  | © Springer",  # springer.com (half 1)
    "© MusiqueMag",  # cc_docs
])
def test_a_copyright_marked_credit_goes(line: str) -> None:
    text = f"{PROSE}\n{line}\n{PROSE}"
    assert COPYRIGHT.correct(text) == (f"{PROSE}\n{PROSE}", 0, 36)  # dropped, outside the 5% budget
    assert ON.correct(text)[0] == text  # without the option: as before
    # off is the old behaviour: runs made before it resume (left out of their fingerprint)
    assert LineCorrections.added_params["drop_copyright_credits"] is False


@pytest.mark.parametrize("line", [
    "The © sign marks a work under copyright, and (c) is often typed for it.",
    "From the book The Great Democracy by Ganesh Sitaraman. Copyright © 2019 by Ganesh Sitaraman. "
    "Reprinted by permission of Basic Books, New York, NY. All rights reserved.",  # newrepublic.com: prose
    "© this is how we work",  # a sentence after the mark, not a name
    "| © Nordex | 2019 |",  # a table's row
    "© 2021 KulturKaufhaus Dussmann | Friedrichstrasse 90 | powered by beeline web",  # a footer, not a credit
])
def test_lines_naming_copyright_that_are_not_credits_stay(line: str) -> None:
    text = f"{PROSE}\n{line}\n{PROSE}"
    assert COPYRIGHT.correct(text)[0] == text


@pytest.mark.parametrize("items", [
    ["(A) London", "(B) Berlin", "(C) Paris", "(D) Rome"],  # a quiz's options
    ["(a) Definitions", "(b) Payment", "(c) Termination", "(d) Exhibits"],  # a contract's clauses
])
def test_an_enumerated_c_is_an_item_not_a_copyright_mark(items: list[str]) -> None:
    text = "\n".join([PROSE, *items, PROSE])
    assert COPYRIGHT.correct(text)[0] == text
    # "©" is a mark whatever the text enumerates
    assert COPYRIGHT.correct(f"{text}\n© Shutterstock")[0] == text


def test_no_wikipedia_lead_or_leipzig_sentence_is_a_copyright_credit() -> None:
    from tests.conftest import SHARED_DATA

    assert credits.copyright_credit_lines(_wikipedia_lead_lines()) == set()
    root = SHARED_DATA / "langid" / "lingua-testdata" / "sentences"
    if not root.is_dir():
        pytest.skip("shared/ data not present")
    for lang in ("en", "de", "fr", "es", "it", "nl", "pt"):
        lines = (root / f"{lang}.txt").read_text(encoding="utf-8").split("\n")
        assert [lines[i] for i in credits.copyright_credit_lines(lines)] == [], lang
