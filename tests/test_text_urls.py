"""URL removal without holes (``extract.keep_needed_urls``, session 50, h213): RefinedWeb's
``clean_text`` drops every URL, and where a link's text was its URL the sentence lost a word
("... source code from.", ``URL = f""``, "()"). The lines below are real pages' lines (trafilatura's
evaluation set, the bundled WARCs)."""

from __future__ import annotations

import pytest

from refinery.config import load_config
from refinery.stages.extract import TrafilaturaExtractor, clean_text
from tests.conftest import ROOT
from tests.test_extract import EVAL_TARBALL, load_eval_pages, make_batch, page

CODE_LINES = "code_lines"

#: (a page's line, the line with needed URLs kept): a sentence's URL stays, quoted or bracketed
#: ones as the sentence needs them
KEPT = [
    ("Download the latest version of the rsync source code from http://www.samba.org/rsync/.", None),
    ("Weitere Infos unter www.itfjuniors.de.", None),
    ("Radon-Messungen in Gebäuden sind kostengünstig. Unter www.bfs.de/radon-messen kann man sich näher "
     "über das Thema informieren.", None),
    ("There is more information on how Coronavirus has affected National Rail services at "
     "www.nationalrail.co.uk/coronavirus", None),
    ("bietet unter der Internetadresse „www.chefkoch.de“ ebenfalls eine kostenfrei abrufbare Rezeptsammlung", None),
    ("- Nun kopieren Sie die URL Ihres Twitter-Kontos (z.B.: https://twitter.com/dehypotheses) in das Textfeld.",
     None),
    ("Weitere Details und das Anmeldeformular finden Sie unter: https://www.jagdverband.de/online-akademie", None),
    ("Host names are in reverse notation and a leading www. is stripped: www.subdomain.example.com becomes "
     "com.example.subdomain.", None),
]
#: (a page's line, what is left of it): the URL goes with what would be left of it
CUT = [
    ("Robert Austin (https://www.youtube.com/watch?v=tMSNl66etMg)", "Robert Austin"),
    ("Auch wir fordern diese in unserem Programm ( https://wiki.piratenpartei.at/wiki/Parteiprogramm ). Zwar",
     "Auch wir fordern diese in unserem Programm. Zwar"),
    ("Navy Beach / https://www.navybeach.com", "Navy Beach"),
    ("Image credit: www.apple.com/in/", ""),
    ("- Internet: www.abugarcia-fishing.eu", ""),
    ("Apple’s proprietary face unlock system. Image credit: www.apple.com/in/", "Apple’s proprietary face unlock system."),
    # as RefinedWeb: alone, after a sentence's end, a name or a tag, at a line's start before a title
    ("http://dx.doi.org/10.1098/rsbl.2017.0484", ""),
    ("I, for one, am glad to see he is back, and well! https://t.co/mIWVeRMnOJ", "I, for one, am glad to see he is back, and well!"),
    ("Presseförderung: Studie zweifelt an Stütze vom Staat via Horizont https://ift.tt/2loCdek",
     "Presseförderung: Studie zweifelt an Stütze vom Staat via Horizont"),
    ("kein Abenteuerspielplatz! #wegvomgleis https://t.co/IV9TPpXpka", "kein Abenteuerspielplatz! #wegvomgleis"),
    ("http://wakenews.net/html/wake_news_radio.html Wake News Radio – Stream", "Wake News Radio – Stream"),
    ("Heute: „Alles ist gekennzeichnet“ https://t.co/9qWLKki5QF pic.twitter.com/x", "Heute: „Alles ist gekennzeichnet“ pic.twitter.com/x"),
]


@pytest.mark.parametrize(("line", "want"), KEPT + CUT)
def test_needed_urls_stay_and_the_others_go_without_a_hole(line: str, want: str | None) -> None:
    assert clean_text(line, needed_urls=True) == (line if want is None else want)


def test_refinedweb_removal_is_unchanged_without_the_setting() -> None:
    """Off (the default, as runs made before it ran): every URL goes with the space before it."""
    assert clean_text(KEPT[0][0]) == "Download the latest version of the rsync source code from."
    assert clean_text(CUT[0][0]) == "Robert Austin ()"
    assert clean_text(KEPT[4][0]) == "bietet unter der Internetadresse „ ebenfalls eine kostenfrei abrufbare Rezeptsammlung"


def test_code_lines_keep_their_urls_and_their_marks() -> None:
    """A code line's URL stays wherever it stands (hackernoon's ``URL = f"..."`` read ``URL = f""``);
    the line is still marked as code and a blockquote's line keeps its mark; a prose line's
    needed URL stays, a bracketed one goes with the brackets."""
    intro = "First build the address of the search page from the query the user typed in, like this:"
    body = (f"<p>{intro}</p><pre><code>URL = f\"https://google.com/search?q={{query}}\"\n"
            "headers = {\"user-agent\": USER_AGENT}</code></pre>"
            "<blockquote>Download the latest version of the rsync source code from http://www.samba.org/rsync/.</blockquote>"
            "<p>The library is documented in full (https://docs.python-requests.org/) with examples for each call.</p>")
    stage = TrafilaturaExtractor(timeout_s=0, keep_needed_urls=True)
    out = stage(make_batch([page(body).encode()]))
    lines = out.column("text")[0].as_py().split("\n")
    assert lines == [intro, 'URL = f"https://google.com/search?q={query}"', 'headers = {"user-agent": USER_AGENT}',
                     "Download the latest version of the rsync source code from http://www.samba.org/rsync/.",
                     "The library is documented in full with examples for each call."]
    assert out.column(CODE_LINES).to_pylist() == [[1, 2]]
    assert out.column("quote_lines").to_pylist() == [[3]]
    old = TrafilaturaExtractor(timeout_s=0)(make_batch([page(body).encode()])).column("text")[0].as_py().split("\n")
    assert old[1] == 'URL = f""' and old[3].endswith("source code from.")


def test_the_recipe_keeps_needed_urls() -> None:
    config = load_config(ROOT / "configs" / "refinedweb.yaml")
    extract = next(s for s in config.stages if s.type == "extract").build()
    assert extract.keep_needed_urls is True


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_real_pages_lose_no_word_with_their_urls(tmp_path) -> None:  # noqa: ANN001
    """Pages of trafilatura's evaluation set through the recipe's ``extract``: a sentence's URL, a
    quoted address and a code comment's URL stay; bracketed URLs go with their brackets and
    "Image credit:" labels with their URLs."""
    files = ("berliner-feuerwehr.de-Ehrenzeichen.html", "rechtambild.de.kochbuch.html", "caktusgroup.com.django.html",
             "mitternachtskabinett.wordpress.com.gentrifizierung.html", "economictimes.indiatimes.com.slideshow.html")
    rows = load_eval_pages(tmp_path, files)
    config = load_config(ROOT / "configs" / "refinedweb.yaml")
    extract = next(s for s in config.stages if s.type == "extract").build()
    extract.timeout_s = 0
    texts = extract(make_batch([r[1] for r in rows], None, [r[0] for r in rows])).column("text").to_pylist()
    feuerwehr, recht, caktus, kabinett, times = texts
    assert "finden Sie unter https://www.berliner-feuerwehr.de/ueber-uns/freiwillige-feuerwehr/." in feuerwehr
    assert "Internetadresse „www.chefkoch.de“ ebenfalls" in recht and "„ " not in recht
    assert "# See https://code.djangoproject.com/ticket/24197" in caktus
    assert "Robert Austin\n" in kabinett + "\n" and "()" not in kabinett
    assert "Image credit" not in times and "face unlock system." in times
