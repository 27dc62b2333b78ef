"""Code blocks and headings trafilatura cut or flattened (session 50, h217; docs/extraction.md, "Code
blocks and headings trafilatura cut"): a code listing in Jekyll's ``<figure class="highlight">`` went
whole, one laid out in a table (WP-Syntax, Rouge's line numbers) came out on one line, ``<br>`` in
a ``<code>`` put its lines behind the next sentence, a heading whose text is a named anchor went
as a link list, and a page without a content area lost its section headings. The snippets are cut
from real pages (the source is named at each); a few cases are written in the shape a renderer
writes, and say so."""

from __future__ import annotations

from lxml import html as lxml_html

from refinery.config import StageConfig
from refinery.stages.extract import TrafilaturaExtractor
from tests.test_extract import make_batch, page

INTRO = "Organize your project so that its file structure looks like this, then add the package's modules:"

# maria-antoniak.github.io/2020/03/25/pip.html (the bundled sample WARCs): Jekyll's highlight tag
JEKYLL_FIGURE = (
    "<p>For example, here is the <code class=\"language-plaintext highlighter-rouge\">__init__.py</code> file for "
    "<a href=\"https://github.com/maria-antoniak/little-mallet-wrapper\">little-mallet-wrapper</a>:</p>\n\n"
    "<figure class=\"highlight\"><pre><code class=\"language-python\" data-lang=\"python\"><span class=\"kn\">from"
    "</span> <span class=\"nn\">.little_mallet_wrapper</span> <span class=\"kn\">import</span> <span class=\"p\">("
    "</span>\n  <span class=\"n\">process_string</span><span class=\"p\">,</span>\n  <span class=\"n\">"
    "train_topic_model</span><span class=\"p\">,</span>\n  <span class=\"n\">load_topic_keys</span>\n<span "
    "class=\"p\">)</span></code></pre></figure>\n\n<p><code class=\"language-plaintext highlighter-rouge\">setup.py"
    "</code> should include all the specifications for your project.</p>")
JEKYLL_CODE = ["from .little_mallet_wrapper import (", "  process_string,", "  train_topic_model,",
               "  load_topic_keys", ")"]

# statisticsglobe.com/change-font-size-of-ggplot2-plot-in-r-axis-text-main-title-legend (trafilatura's
# evaluation pages): WP-Syntax's table around GeSHi's <pre>, and its hidden copy of the code
WP_SYNTAX = (
    "<p>If we want to draw a ggplot2 plot of this data frame, we need to install and load the <a href=\"https://"
    "cran.r-project.org/web/packages/ggplot2/ggplot2.pdf\" rel=\"noopener noreferrer\" target=\"_blank\">ggplot2 "
    "package</a> to R:</p>\n\n<div class=\"wp_syntax\" style=\"position:relative;\"><table><tr><td class=\"code\">"
    "<pre class=\"csharp\" style=\"font-family:monospace;\">install<span style=\"color: #008000;\">.</span><span "
    "style=\"color: #0000FF;\">packages</span><span style=\"color: #008000;\">&#40;</span><span style=\"color: "
    "#666666;\">&quot;ggplot2&quot;</span><span style=\"color: #008000;\">&#41;</span>                          "
    "             <span style=\"color: #008080;\"># Install ggplot2</span>\nlibrary<span style=\"color: #008000;\">"
    "&#40;</span><span style=\"color: #666666;\">&quot;ggplot2&quot;</span><span style=\"color: #008000;\">&#41;"
    "</span>                                                <span style=\"color: #008080;\"># Load ggplot2</span>"
    "</pre></td></tr></table><p class=\"theCode\" style=\"display:none;\">install.packages(&quot;ggplot2&quot;)"
    "                                       # Install ggplot2\nlibrary(&quot;ggplot2&quot;)                     "
    "                           # Load ggplot2</p></div>\n\n<p>Now, we can draw a barchart of our data as "
    "follows, with the default font sizes of every text element of the plot:</p>")

# netbits.us/docs/stunnel_rsync.html (trafilatura's evaluation pages)
NETBITS = ("<blockquote><p>To build rsync the configure line that I recommend is the one below, with its "
           "configuration in /etc:\n<p>\n<code>./configure --prefix=/usr/local --sysconfdir=/etc </code>\n"
           "<p>The process should be familiar by now:\n<p>\n<code>make\n<br>su\n<br>make install\n<br>make distclean\n"
           "</code>\nNow that all the software is installed (on both client and server), we'll configure and test.\n"
           "</blockquote>")

# eatsmarter.de/rezepte/vanille-hafer-porridge-mit-leinsamen-und-apfel (trafilatura's evaluation pages),
# shortened: the ingredients' and the steps' headings, each a named anchor
EATSMARTER = (
    "<div class=\"ingredients-tab\"><div class=\"field field-name-field-ingredients field-type-ingredients "
    "field-label-above ingredients\"><div class=\"label-yield-container\"><h2 class=\"pane-title ingredients-title\">"
    "<a name=\"ingredients\">Zutaten</a></h2>\n<div class=\"yield p-yield\"><div class=\"yield-row\"><div "
    "class=\"yield-prefix\">für</div>\n<div class=\"yield-value\"><div class=\"value\" yc-original-value=\"2\">2</div>"
    "\n</div></div><div class=\"yield-row\"><div class=\"yield-empty\"></div>\n<label class=\"yield-unit\" "
    "for=\"yield-value\">Portionen </label>\n</div></div></div><dl><dt class=\"ingredient-group-hidden first\">Zutaten"
    "</dt><dd class=\"last\"><span class=\"ingredient p-ingredient\"><span class=\"amount\">300 <span class=\"type\">ml"
    "</span>\n</span>\n<div class=\"ingredient-container\"><a href=\"/lexikon/warenkunde/getraenke/hafermilch\" "
    "class=\"name\">Haferdrink (Hafermilch)</a> <span class=\"suffix\">oder Wasser</span></div></span>\n</dd>"
    "<dd class=\"last\"><span class=\"ingredient p-ingredient\"><span class=\"amount\">80 <span class=\"type\">g</span>"
    "\n</span>\n<div class=\"ingredient-container\"><span class=\"prefix\">kernige</span> <a href=\"/lexikon/"
    "warenkunde/getreide/hafer\" class=\"name\">Haferflocken</a></div></span>\n</dd></dl></div></div>"
    "<div id=\"preparation\" class=\"preparation-step-tab\"><div class=\"field-collection-container clearfix\">\n"
    "<div class=\"field field-name-field-preparation-steps field-type-field-collection field-label-above\">\n"
    "      <h2  class=\"preparation-steps-title\">\n      <a name=\"preparation-steps\">Zubereitungsschritte</a>\n"
    "    </h2>\n        <div class=\"field-collection-view clearfix view-mode-full preparation-step e-instructions\">"
    "  <div class=\"preparation-step-items\"><div class=\"preparation-step-count\">1.</div>\n<div class=\"preparation-"
    "step-content\">\n<div class=\"field field-name-field-text field-type-text-long field-label-hidden\">\n        <p>"
    "Haferdrink mit Haferflocken, Vanille und Zimt, Leinsamen in einem Topf aufkochen und ca. 2 Minuten köcheln "
    "lassen. Anschließend vom Herd nehmen und ca. 10 Minuten quellen lassen.</p>\n    </div>\n</div></div></div>"
    "      <div class=\"field-collection-view clearfix view-mode-full field-collection-view-final preparation-step "
    "e-instructions\">  <div class=\"preparation-step-items\"><div class=\"preparation-step-count\">2.</div>\n<div "
    "class=\"preparation-step-content\">\n<div class=\"field field-name-field-text field-type-text-long "
    "field-label-hidden\">\n        <p>Nüsse trocken in einer Pfanne anrösten. Äpfel waschen, halbieren, entkernen "
    "und in kleine Würfel schneiden. Brei mit den Äpfeln und Nüssen servieren.</p>\n    </div>\n</div></div></div>"
    "</div></div></div>")


def _extract(body: str, **params) -> tuple[list[str], list[int]]:
    """The stage's text of ``page(body)`` as lines, and its code lines."""
    out = TrafilaturaExtractor(timeout_s=0, **params)(make_batch([page(body).encode()]))
    return out.column("text")[0].as_py().split("\n"), out.column("code_lines")[0].as_py() or []


def _run(lines: list[str], run: list[str]) -> int | None:
    """Where ``run`` starts as consecutive lines of ``lines``, or None."""
    return next((i for i in range(len(lines)) if lines[i:i + len(run)] == run), None)


def test_a_code_block_in_a_jekyll_figure_comes_out() -> None:
    """trafilatura deletes every ``<figure>``: the listing Jekyll's highlight tag wraps in one went
    whole; now its lines come, in order, marked as code; ``keep_code_blocks: false`` as before."""
    lines, code = _extract(f"<p>{INTRO}</p>{JEKYLL_FIGURE}")
    at = _run(lines, JEKYLL_CODE)
    assert at is not None and set(range(at, at + len(JEKYLL_CODE))) <= set(code)
    old, _ = _extract(f"<p>{INTRO}</p>{JEKYLL_FIGURE}", keep_code_blocks=False)
    assert not any("process_string" in line for line in old)


def test_a_code_table_comes_out_in_lines() -> None:
    """A table cell is one line of trafilatura's text: WP-Syntax's code came out as one line. Now
    each line of the code is one, marked as code; its hidden copy stays out."""
    lines, code = _extract(WP_SYNTAX)
    listing = ['install.packages("ggplot2")                                       # Install ggplot2',
               'library("ggplot2")                                                # Load ggplot2']
    at = _run(lines, listing)
    assert at is not None and {at, at + 1} <= set(code)
    assert sum("Install ggplot2" in line for line in lines) == 1
    old, _ = _extract(WP_SYNTAX, keep_code_blocks=False)
    assert _run(old, listing) is None and any("Install ggplot2" in line and "library" in line for line in old)


def test_a_line_number_gutter_goes_and_a_data_table_stays() -> None:
    """In the shape Rouge's ``linenos`` and Pygments' ``highlighttable`` write (a gutter cell of
    numbers beside the code cell, the table itself inside ``<pre><code>`` for Rouge), the code's
    lines come without the numbers; a table whose cells hold text outside a ``<pre>`` is data and
    stays a table."""
    rouge = ("<figure class=\"highlight\"><pre><code class=\"language-ruby\"><table class=\"rouge-table\"><tbody><tr>"
             "<td class=\"gutter gl\"><pre class=\"lineno\">1\n2\n3\n</pre></td><td class=\"code\"><pre>def greet(name)\n"
             "  puts \"Hello, #{name}\"\nend\n</pre></td></tr></tbody></table></code></pre></figure>")
    lines, code = _extract(f"<p>{INTRO}</p>{rouge}<p>Call it with any name and it prints its greeting on a line.</p>")
    at = _run(lines, ["def greet(name)", '  puts "Hello, #{name}"', "end"])
    assert at is not None and {at, at + 1, at + 2} <= set(code)
    assert not any(line.strip() in ("1", "2", "3", "1 2 3") for line in lines)
    data = ("<table><tr><th>Option</th><th>Example</th></tr><tr><td>verbose output</td><td><pre>rsync -v</pre></td></tr>"
            "<tr><td>archive mode</td><td><pre>rsync -a</pre></td></tr></table>")
    lines, _ = _extract(f"<p>{INTRO}</p>{data}<p>Both options can be combined on one command line as needed.</p>")
    assert "| verbose output | rsync -v |" in lines


def test_line_breaks_in_code_stay_where_they_were() -> None:
    """``<code>make<br>su<br>make install</code> Now that...``: trafilatura put the ``<br>`` lines behind
    the sentence after the code, unmarked; now they follow ``make``, each a code line."""
    lines, code = _extract(NETBITS)
    commands = ["make", "su", "make install", "make distclean"]
    at = _run(lines, commands)
    assert at is not None and set(range(at, at + 4)) <= set(code)
    old, _ = _extract(NETBITS, keep_code_blocks=False)
    assert _run(old, commands) is None


def test_a_heading_whose_text_is_a_named_anchor_stays() -> None:
    """``<h2><a name="preparation-steps">Zubereitungsschritte</a></h2>``: an ``<a>`` without ``href`` is
    no link, but trafilatura removed the heading as all link. Now it stays; a heading that is a real link over a
    list of links still goes."""
    lines, _ = _extract(EATSMARTER)
    assert lines[0] == "Zubereitungsschritte" and lines[1].startswith("Haferdrink mit Haferflocken")
    old, _ = _extract(EATSMARTER, keep_anchor_headings=False)
    assert old == lines[1:]
    related = ("<h2><a href=\"/rezepte/\">Mehr Rezepte</a></h2><ul><li><a href=\"/r/a\">Porridge mit Beeren</a></li>"
               "<li><a href=\"/r/b\">Overnight Oats mit Apfel</a></li><li><a href=\"/r/c\">Bircher Müsli</a></li></ul>")
    lines, _ = _extract(EATSMARTER + related)
    assert "Mehr Rezepte" not in lines


PHILLY_INTRO = ("In perhaps their biggest game of the young NBA season, the Sixers played host to the fellow 5-1 Boston "
                "Celtics Wednesday night. Here's what stood out in the Sixers' too close for comfort, 106-103, win:")
PHILLY_FIRST = ("• It was an underwhelming first quarter on both sides, as the Sixers and Celtics each struggled mightily "
                "to knock down shots.")
PHILLY_SECOND = ("• The Sixers got a terrific five-minute stint out of Paul Reed to open the second quarter. He scored "
                 "six points and grabbed four rebounds.")


def _no_content_area_page() -> str:
    """A page trafilatura finds no content area in (its text is the wild-text pass's paragraphs):
    phillyvoice.com's game notes (trafilatura's evaluation pages: ``div.rich-text``, ``<h3>`` over
    paragraphs), under the page's ``<h1>``, beside nestle-marktplatz.de's teaser card (the same
    pages: a headline over one blurb in a container of its own; its ``<article>`` written as a ``<div>``
    here, which trafilatura would take for the content area)."""
    card = ("<div class=\"contentContainerTyp1 layoutTyp6 teaser_6364006\"><div class=\"descriptionContainer\">"
            "<h2 class=\"descriptionHeadline textTyp2\">NESQUIK Trinkfertig-Produkttest</h2><div class=\"descriptionText"
            " textTyp10\"><p>2.000 Familien haben NESQUIK Produkte getestet. Erfahre hier, wie es ihnen geschmeckt "
            "hat.</p></div><section class=\"buttonContainer button\"><a class=\"naviItem\" href=\"/mitmachen/produkttests"
            "/nesquik-trinkfertig\">Ergebnisse anschauen</a></section></div></div>")
    return ("<html><body><div class=\"wrap\"><h1>Sixers vs. Celtics takeaways</h1><div class=\"rich-text\"><p>"
            f"{PHILLY_INTRO}</p><h3><b>First Quarter</b></h3><p>{PHILLY_FIRST}</p><h3><b>Second Quarter</b></h3><p>"
            f"{PHILLY_SECOND}</p></div>{card}</div></body></html>")


def test_wild_headings_are_section_headings() -> None:
    """``keep_wild_headings`` takes a heading over a paragraph of the wild-text pass when it heads a
    section: in a container of two paragraphs or more, not an ``<h1>``. The card's headline over its
    one blurb and the page's title stay out, the quarters' headings come (before: every heading
    right over a taken paragraph came, nestle's card headlines and dw.com's titles too)."""
    html = _no_content_area_page()
    off = TrafilaturaExtractor(timeout_s=0, fallback=False)._extract_fn()(html, "https://example.org/x")[0].split("\n")
    on = TrafilaturaExtractor(timeout_s=0, fallback=False, keep_wild_headings=True)._extract_fn()(
        html, "https://example.org/x")[0].split("\n")
    assert "First Quarter" not in off and "2.000 Familien haben NESQUIK Produkte getestet." in " ".join(off)
    assert _run(on, ["First Quarter", PHILLY_FIRST, "Second Quarter", PHILLY_SECOND]) is not None
    assert "NESQUIK Trinkfertig-Produkttest" not in on and "Sixers vs. Celtics takeaways" not in on
    assert [line for line in on if line not in ("First Quarter", "Second Quarter")] == off


def test_the_recipe_keeps_wild_headings_and_old_runs_resume() -> None:
    """The recipe turns ``keep_wild_headings`` on; ``keep_code_blocks`` and ``keep_anchor_headings``
    are on by default, and off (what runs did before them) they are left out of the fingerprint, so
    such a run resumes."""
    from refinery.config import load_config
    from tests.conftest import ROOT

    extract = next(s for s in load_config(ROOT / "configs" / "refinedweb.yaml").stages if s.type == "extract")
    assert extract.params.get("keep_wild_headings") is True
    stage = TrafilaturaExtractor()
    assert stage.keep_code_blocks and stage.keep_anchor_headings
    before = StageConfig(type="extract", params={"keep_code_blocks": False, "keep_anchor_headings": False})
    assert not {"keep_code_blocks", "keep_anchor_headings"} & set(before.fingerprint_params())
    # on (the default), a run made before them is told its text changes, not resumed as if the same
    assert {"keep_code_blocks", "keep_anchor_headings"} <= set(StageConfig(type="extract", params={}).fingerprint_params())


def test_fix_page_rewrites_only_those_shapes() -> None:
    """``fix_page`` on parsed trees: a figure holding a ``<pre>`` becomes a ``<div>`` (one holding an
    image stays a figure), a code table its ``<pre>`` (in a ``<pre>`` already: its text), ``<br>`` in
    ``<code>`` a line break, a heading's named anchor its text (a link in a heading, an anchor in a
    paragraph stay); each switch alone."""
    from refinery.stages._html_fixes import fix_page

    source = ("<div><figure><img src='a.png'><figcaption>A cat</figcaption></figure><figure class='highlight'><pre>"
              "x = 1</pre></figure><table><tr><td><pre>1\n2</pre></td><td><pre>a()\nb()</pre></td></tr></table>"
              "<p>Run <code>make<br>make install</code> now.</p><h2><a name='s'>Setup</a></h2>"
              "<h3><a href='/x'>Elsewhere</a></h3><p><a name='p'>Placeholder</a> text</p></div>")
    tree = lxml_html.fromstring(source)
    assert fix_page(tree) == 4
    out = lxml_html.tostring(tree, encoding="unicode")
    assert "<figure><img" in out and "<div class=\"highlight\"><pre>x = 1</pre></div>" in out
    assert "<table" not in out and "<pre>a()\nb()</pre>" in out and "1\n2" not in out
    assert "<code>make\nmake install</code>" in out
    assert "<h2>Setup</h2>" in out and "<a href=\"/x\">Elsewhere</a>" in out and "<a name=\"p\">" in out
    nested = lxml_html.fromstring("<div><pre><code><table><tr><td><pre>1</pre></td><td><pre>end</pre></td></tr>"
                                  "</table></code></pre></div>")
    fix_page(nested)
    assert lxml_html.tostring(nested, encoding="unicode") == "<div><pre><code>end</code></pre></div>"
    tree = lxml_html.fromstring(source)
    assert fix_page(tree, code_blocks=False) == 1 and "<figure class" in lxml_html.tostring(tree, encoding="unicode")
    tree = lxml_html.fromstring(source)
    assert fix_page(tree, anchor_headings=False) == 3 and "<a name=\"s\">" in lxml_html.tostring(tree, encoding="unicode")


# idw-online.de's search-help modal (trafilatura's evaluation pages): headings over paragraphs the
# wild-text pass takes, beside the page's text
IDW_MODAL = (
    "<div id=\"ews_hilfe\" class=\"reveal-modal\"><h2>Hilfe</h2><h5>Verknüpfungen</h5><p>Sie können Suchbegriffe "
    "mit und, oder und / oder nicht verknüpfen.</p><h5>Klammern</h5><p>Verknüpfungen können Sie mit Klammern "
    "voneinander trennen.</p></div>")


def test_wild_headings_beside_the_text_stay_out() -> None:
    """A heading over a modal's (or a sidebar widget's) paragraphs is no section heading of the page's
    text, though trafilatura took the paragraphs (session 51: 8 such headings on 5 of the real pages,
    every one wrong); the section headings of the text region still come, under a wrapper whose class
    names an aside (biobiochile's ``div.post-main-aside-container``)."""
    html = _no_content_area_page().replace("<div class=\"wrap\">", "<div class=\"post-main-aside-container\">")
    html = html.replace("</body>", IDW_MODAL + "</body>")
    on = TrafilaturaExtractor(timeout_s=0, fallback=False, keep_wild_headings=True)._extract_fn()(
        html, "https://example.org/x")[0].split("\n")
    assert _run(on, ["First Quarter", PHILLY_FIRST, "Second Quarter", PHILLY_SECOND]) is not None
    assert "Sie können Suchbegriffe mit und, oder und / oder nicht verknüpfen." in on
    assert not {"Hilfe", "Verknüpfungen", "Klammern"} & set(on)


def test_the_text_region_takes_in_a_list_of_like_entries() -> None:
    """A lexicon's entries (nalas-loewenseiten.info: ``div.PagePost`` siblings): one entry may hold half
    the text, and the region is its box, but the headings of its sibling entries are in the text too;
    a widget's heading inside the region is not."""
    from refinery.stages._trafilatura_rules import in_text_region, text_region

    entry = "<div class=\"PagePost\"><h2>{}</h2><div class=\"Content\"><p>{}</p><p>{}</p></div></div>"
    tree = lxml_html.fromstring(
        "<div id=\"main\">" + entry.format("Mähne", "Die Mähne " * 40, "Grundsätzliches " * 20)
        + entry.format("Mähnenlos", "Aber es gibt eben nicht nur diese", "Schnuckllöwen")
        + "<div class=\"sidebar-box\"><h2>Newsletter</h2><p>Abonnieren</p></div></div>")
    region = text_region(tree.iter("p"))
    assert region.get("class") == "Content"
    first, second, box = (heading.getnext() if heading.getnext().tag == "p" else heading.getnext()[0]
                          for heading in tree.iter("h2"))
    assert in_text_region(first, region) and in_text_region(second, region) and not in_text_region(box, region)


# netbits.us/docs/stunnel_rsync.html (the bundled sample WARCs): each section a named-anchor heading over
# a <blockquote>, on a page without a content area
NETBITS_SECTIONS = (
    "<html><body><h1>Rsync + Stunnel 4.x</h1><h2><a name=\"purpose\">Purpose / Overview</a></h2><blockquote><p>A while "
    "back I went to a great TCLUG meeting with Mick Bauer giving the main presentation.</p><p>One of Mick's columns "
    "and a portion of his book deal with setting up stunnel to tunnel rsync over an SSL encrypted connection.</p>"
    "</blockquote><h2><a name=\"firewall\">Firewall</a></h2><blockquote><p>If you run a firewall, open port 273 to the "
    "hosts that should reach the rsync server over stunnel.</p></blockquote></body></html>")


def test_a_wild_heading_over_a_quote_comes() -> None:
    """A section that opens with a ``<blockquote>`` (a quote in trafilatura's tree) has its heading
    taken as one over a paragraph is (session 51: netbits' nine section headings)."""
    on = TrafilaturaExtractor(timeout_s=0, fallback=False, keep_wild_headings=True)._extract_fn()(
        NETBITS_SECTIONS, "https://example.org/x")[0].split("\n")
    assert on[0] == "Purpose / Overview" and on[1].startswith("A while back I went")
    assert _run(on, ["Firewall", "If you run a firewall, open port 273 to the hosts that should reach the rsync "
                                 "server over stunnel."]) is not None


# commoncrawl.org/blog/march-april-2024-newsletter (the bundled sample WARCs): Webflow's code embed
COMMONCRAWL_EMBED = (
    "<p>These can both be used to programmatically retrieve information for the latest release, such as:</p>"
    "<div class=\"w-embed\"><pre class=\"dark-bg-code\">\n$ curl -s https://index.commoncrawl.org/collinfo.json | "
    "jq '.[0].id'\n\"CC-MAIN-2024-10\"\n</pre></div><p>We are pleased to announce that the crawl is now served "
    "faster from the AWS regions.</p>")


def test_a_code_block_in_an_embed_box_comes_out() -> None:
    """trafilatura removes every box whose class holds "embed": Webflow's code embed went with its
    listing; a box so named that holds code alone stays, its lines marked as code. An embed box with
    text beside its code (a player's frame and caption) still goes."""
    lines, code = _extract(COMMONCRAWL_EMBED)
    at = next(i for i, line in enumerate(lines) if line.startswith("$ curl -s"))  # its URL: clean_text's
    assert lines[at + 1] == "\"CC-MAIN-2024-10\"" and {at, at + 1} <= set(code)
    old, _ = _extract(COMMONCRAWL_EMBED, keep_code_blocks=False)
    assert not any("curl" in line for line in old)
    player = COMMONCRAWL_EMBED.replace("<pre class", "<span>Watch the video</span><pre class")
    lines, _ = _extract(player)
    assert not any("curl" in line or "Watch the video" in line for line in lines)
