"""The language pre-screen on real pages (bundled sample WARCs, real CC text), with the real
LID-176 model, Resiliparse and trafilatura: it removes clearly non-English pages, passes English
pages and pages it cannot judge, and the final language_id still decides on the extracted text.
Kept-set agreement with the plain chain on ~1k real pages: benchmarks/prescreen.py."""

from __future__ import annotations

import gzip
import html as htmllib
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from refinery.config import parse_config
from refinery.io.warc import read_warc
from refinery.stages.base import METRIC, REASON
from refinery.stages.extract import TrafilaturaExtractor
from refinery.stages.gopher import GopherQuality
from refinery.stages.language_id import LanguageId
from refinery.stages.prescreen import LanguagePrescreen

ROOT = Path(__file__).resolve().parents[1]
WARCS = ROOT / "data" / "sample" / "warc"
CC_MAIN = ROOT / "data" / "sample" / "cc_docs" / "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"


def _strip(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch.drop_columns([c for c in (REASON, METRIC) if c in batch.schema.names])


@pytest.fixture(scope="module")
def sample() -> pa.RecordBatch:
    """The 85 HTTP responses of the bundled real WARCs, as the reader yields them."""
    batches = []
    for path in sorted(WARCS.glob("*.warc.gz")):
        with open(path, "rb") as f:
            batches += [_strip(b) for b in read_warc(f, source=path.name)]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


@pytest.fixture(scope="module")
def screened(sample: pa.RecordBatch) -> pa.RecordBatch:
    return LanguagePrescreen()(sample)


def _page(paragraphs: list[str]) -> bytes:
    body = "".join(f"<p>{htmllib.escape(p)}</p>\n" for p in paragraphs if p.strip())
    return f"<html><head><title>t</title></head><body><article>{body}</article></body></html>".encode()


def _batch(bodies: list[bytes | None]) -> pa.RecordBatch:
    n = len(bodies)
    return pa.RecordBatch.from_pydict({
        "id": [f"p{i}" for i in range(n)], "url": [f"https://example.org/{i}" for i in range(n)],
        "content_type": ["text/html; charset=utf-8"] * n, "html": pa.array(bodies, pa.binary()),
        "text": pa.nulls(n, pa.string()),
    })


def test_removes_real_non_english_pages_and_keeps_english(sample: pa.RecordBatch, screened: pa.RecordBatch) -> None:
    assert screened.num_rows == sample.num_rows
    assert screened.column("html").equals(sample.column("html"))  # left for extract
    reasons = screened.column(REASON).to_pylist()
    scores = screened.column("prescreen_language_score").to_pylist()
    metrics = screened.column(METRIC).to_pylist()
    sources = sample.column("source").to_pylist()
    urls = sample.column("url").to_pylist()
    assert set(reasons) <= {None, "prescreen_language"}
    for r, s, m in zip(reasons, scores, metrics):
        if r is not None:
            assert s < 0.3 and m == pytest.approx(s)
    # ClueWeb's Japanese shop pages: every one with text is removed
    japanese = [i for i, u in enumerate(urls) if u and "uraharajuku.st" in u]
    assert len(japanese) >= 25 and all(reasons[i] == "prescreen_language" for i in japanese)
    # the Common Crawl excerpt: Chinese, Russian, Dutch... pages go
    cc = [i for i, s in enumerate(sources) if s == "resiliparse_warcfile.warc.gz"]
    assert sum(reasons[i] is not None for i in cc) >= 10
    for i, u in enumerate(urls):
        if u and any(host in u for host in ("003338.cn", "0513mt.com", "01spb.ru", "0900-hovenier.nl")):
            assert reasons[i] == "prescreen_language", u
    # the English wget crawls (allenai, Common Crawl's site, personal pages): none removed, all scored
    english = [i for i, s in enumerate(sources) if s.startswith("warc_sample-")]
    assert len(english) >= 35
    assert all(reasons[i] is None and scores[i] >= 0.6 for i in english)


def test_removed_pages_cannot_survive_the_plain_chain(sample: pa.RecordBatch, screened: pa.RecordBatch) -> None:
    """What the pre-screen removes, trafilatura + language_id (+ Gopher's 50-word minimum) would
    have removed too: extract a sample of the removed real pages and ask the final stages."""
    removed = [i for i, r in enumerate(screened.column(REASON).to_pylist()) if r is not None]
    picked = sorted(set(removed[::4]) | {i for i in removed if "uraharajuku" not in sample.column("url")[i].as_py()})
    pages = sample.take(pa.array(picked[:16]))
    extracted = TrafilaturaExtractor(timeout_s=0)(pages)
    # language_id by parts keeps more (mostly-English documents quoting other languages): not these
    for final in (LanguageId(), LanguageId(by_parts_min_share=0.5)):
        lid = final(_strip(extracted))
        quality = GopherQuality()(_strip(lid))
        for ex, lr, qr in zip(*(b.column(REASON).to_pylist() for b in (extracted, lid, quality))):
            assert ex is not None or lr is not None or qr in {"too_few_words", "empty_text"}


LEADS = ROOT.parent / "shared" / "data" / "quality" / "summaries_en-us.json"
LINGUA = ROOT.parent / "shared" / "data" / "langid" / "lingua-testdata" / "sentences"


@pytest.mark.skipif(not (LEADS.is_file() and LINGUA.is_dir()), reason="../shared/data not present")
def test_english_pages_quoting_other_languages_reach_language_id() -> None:
    """Pages that language_id keeps by parts must not be thrown away before extraction: real
    Wikipedia leads with 1-5 paragraphs of real Japanese, Russian or German sentences inserted,
    as HTML pages (one <p> per paragraph)."""
    import random

    rng = random.Random(11)
    leads = [v["extract"] for v in json.loads(LEADS.read_text(encoding="utf-8")).values() if len(v.get("extract", "")) > 300]
    foreign = {lang: [s for s in (LINGUA / f"{lang}.txt").read_text(encoding="utf-8").splitlines() if s.strip()][:300]
               for lang in ("ja", "ru", "de")}
    texts = []
    for i in range(45):
        paras = leads[4 * i : 4 * i + 4]
        lang = sorted(foreign)[i % 3]
        for _ in range(rng.randint(1, 5)):
            paras.insert(rng.randint(1, len(paras)), " ".join(rng.sample(foreign[lang], rng.choice([1, 3, 5]))))
        texts.append("\n".join(paras))
    kept = LanguageId(by_parts_min_share=0.5)(pa.RecordBatch.from_pydict({"id": [str(i) for i in range(45)], "text": texts}))
    by_parts = [i for i, share in enumerate(kept.column("language_parts_share").to_pylist())
                if share is not None and kept.column(REASON)[i].as_py() is None]
    assert len(by_parts) >= 5
    pages = [("<html><body>" + "".join(f"<p>{htmllib.escape(p)}</p>" for p in texts[i].split("\n")) + "</body></html>").encode()
             for i in by_parts]
    n = len(pages)
    screened = LanguagePrescreen()(pa.RecordBatch.from_pydict(
        {"id": [str(i) for i in range(n)], "html": pages, "content_type": ["text/html; charset=utf-8"] * n}))
    assert screened.column(REASON).to_pylist() == [None] * n


def test_pages_it_cannot_judge_pass(sample: pa.RecordBatch) -> None:
    docs = [json.loads(line) for line in gzip.open(CC_MAIN, "rt")]
    german = next(d["text"] for d in docs if d["id"] == "zu4asflgbrwjmzkqhtwdm7fvgzx2mrip")  # Werder (Havel), real
    bodies = [
        None,                                               # no body
        b"",                                                # empty body
        b"<html><body><script>var x = 1;</script></body></html>",  # no text at all
        _page([german[:150]]),                              # German, but too little cheap text
        _page([german]) * 3000,                             # German, but over max_html_bytes: extract's call
        b"<div " + b"a " * 5000 + b">" + _page([german]),  # parser-hostile: extract's pre-screen removes it
        b"<div>" * 100_000 + _page([german]),               # deep nesting (23 s in lexbor): extract's deadline
        _page([german]),                                    # the control: judged and removed
    ]
    out = LanguagePrescreen()(_batch(bodies))
    assert out.column(REASON).to_pylist() == [None] * 7 + ["prescreen_language"]
    assert out.column("prescreen_language_score").to_pylist()[:7] == [None] * 7
    # text input (no html column) and "every language" configs pass everything, with the column
    text_only = pa.RecordBatch.from_pydict({"id": ["a"], "text": [german]})
    assert LanguagePrescreen()(text_only).column(REASON).to_pylist() == [None]
    assert LanguagePrescreen(languages=[])(_batch([_page([german])])).column(REASON).to_pylist() == [None]
    assert LanguagePrescreen(languages=["de"])(_batch([_page([german])])).column(REASON).to_pylist() == [None]


def test_final_language_id_still_decides() -> None:
    """A real German article with a real English passage: the passage's windows are English, so
    the pre-screen keeps the page (a check of the whole page's top label would have dropped it),
    and language_id removes it on the extracted text."""
    docs = {d["id"]: d["text"] for d in map(json.loads, gzip.open(CC_MAIN, "rt"))}
    german = docs["zu4asflgbrwjmzkqhtwdm7fvgzx2mrip"]
    english = docs["x4ta76qugdlmekjkk5omvxtinnvitz3i"]
    page = _page((german + "\n" + english[: int(len(english) * 0.7)]).split("\n"))
    batch = _batch([page])
    screened = LanguagePrescreen()(batch)
    score = screened.column("prescreen_language_score")[0].as_py()
    assert screened.column(REASON)[0].as_py() is None and score >= 0.3
    extracted = TrafilaturaExtractor(timeout_s=0)(_strip(screened))
    assert extracted.column(REASON)[0].as_py() is None
    final = LanguageId()(_strip(extracted))
    assert final.column(REASON)[0].as_py() in {"language_not_kept", "low_language_score"}


def test_scores_match_language_id_and_pickle_without_model(screened: pa.RecordBatch) -> None:
    stage = LanguagePrescreen()
    texts = ["The quick brown fox jumps over the lazy dog near the river bank.",
             "Der schnelle braune Fuchs springt über den faulen Hund am Flussufer."]
    langs, top = stage._lid.predict(texts)
    wanted = stage._lid.wanted_scores(texts)
    assert langs[0] == "en" and wanted[0] == pytest.approx(top[0], abs=1e-6)
    assert langs[1] != "en" and wanted[1] < top[1]
    clone = pickle.loads(pickle.dumps(stage))
    assert "_lazy_model" not in clone._lid.__dict__ and "_lazy_html2text" not in clone.__dict__
    assert np.allclose(clone._lid.wanted_scores(texts), wanted)


def test_collapsed_texts_skip_the_input_cleaning_with_the_same_scores(sample: pa.RecordBatch) -> None:
    # selectolax's cheap text is collapsed (" ".join(text.split())), so its windows and samples
    # hold nothing LanguageId._inputs would replace: the pre-screen skips that scan (collapsed=True)
    # and every real page's fastText inputs and scores stay the same; the resiliparse text is
    # not collapsed, and is cleaned as before
    from refinery.stages.prescreen import SAMPLE_CHARS, sample_text, sample_windows

    stage = LanguagePrescreen()
    bodies, ctypes = sample.column("html").to_pylist(), sample.column("content_type").to_pylist()
    texts = [t for t in (stage.cheap_text(b, c) for b, c in zip(bodies, ctypes) if b) if t]
    spaced = "English\u00a0joined\u3000by\u2003odd\u202fspaces,\nline\rbreaks\tand\x1ccontrols. " * 30
    texts.append(stage.cheap_text(_page([spaced, "Zweiter\u00a0Absatz, auf Deutsch. " * 20]), "text/html"))
    assert len(texts) > 60 and "English joined by odd spaces, line breaks and controls." in texts[-1]
    inputs = [sample_text(t, SAMPLE_CHARS) for t in texts] + [w for t in texts for w in sample_windows(t, stage.max_chars)]
    assert stage._lid._inputs(inputs) == stage._lid._inputs(inputs, collapsed=True) == inputs
    scores = stage._lid.wanted_scores(inputs, collapsed=True)
    assert scores.tobytes() == stage._lid.wanted_scores(inputs).tobytes()
    # what the skip must not see: text that is not collapsed (resiliparse's, language_id's)
    raw = "English\u00a0joined by no-break spaces\nover two lines"
    assert stage._lid._inputs([raw]) == ["English joined by no-break spaces over two lines"]


def test_config_places_it_and_checks_params() -> None:
    config = parse_config({"name": "t", "stages": [{"type": "prescreen", "params": {"min_score": 0.2}},
                                                    {"type": "extract"}]})
    stage = config.build_stages()[0]
    assert isinstance(stage, LanguagePrescreen) and stage.min_score == 0.2
    with pytest.raises(ValueError, match="min_score"):
        parse_config({"name": "t", "stages": [{"type": "prescreen", "params": {"min_score": 1.5}}]}).build_stages()
    with pytest.raises(ValueError, match="backend must be one of selectolax, resiliparse"):
        LanguagePrescreen(backend="lxml")
    with pytest.raises(ValueError, match="main_content: needs backend 'resiliparse'"):
        LanguagePrescreen(main_content=True)


def test_selectolax_and_resiliparse_texts_give_the_same_decisions(sample: pa.RecordBatch,
                                                                  screened: pa.RecordBatch) -> None:
    """The default text (selectolax, ~2x cheaper) removes the same real pages as Resiliparse's,
    with scores close to its (on ~1k pages: benchmarks/prescreen.py --backend)."""
    assert screened.column("prescreen_language_score").to_pylist()  # the default is selectolax
    assert LanguagePrescreen().backend == "selectolax"
    other = LanguagePrescreen(backend="resiliparse")(sample)
    assert other.column(REASON).to_pylist() == screened.column(REASON).to_pylist()
    a = np.array(screened.column("prescreen_language_score").to_pylist(), dtype=float)
    b = np.array(other.column("prescreen_language_score").to_pylist(), dtype=float)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.nanmedian(np.abs(a - b)) < 0.05
    # no script or style text, white space collapsed
    page = (b"<html><head><style>p{color:red}</style></head><body><script>var secret = 1;</script>"
            b"<p>Hello\n\n   world</p><template>hidden</template><p>again</p></body></html>")
    assert LanguagePrescreen().cheap_text(page, "text/html") == "Hello world again"


def test_cheap_text_is_lexbors_stripped_node_texts_collapsed(sample: pa.RecordBatch) -> None:
    # _selectolax_text joins the raw node texts (no per-node str.strip(), white-space-only nodes
    # skipped) before collapsing: the same text as stripping every node first, on every real
    # page, as bytes and as str, and on nodes of only (no-break) spaces, words split by tags and
    # bytes that are not UTF-8
    from selectolax.lexbor import LexborHTMLParser

    from refinery.stages.prescreen import _NOT_TEXT, _selectolax_text

    def stripped(html: str | bytes) -> str:
        tree = LexborHTMLParser(html)
        tree.strip_tags(_NOT_TEXT)
        return " ".join(tree.body.text(separator=" ", strip=True).split()) if tree.body is not None else ""

    pages = [b for b in sample.column("html").to_pylist() if b]
    pages += [p.decode("utf-8", "replace") for p in pages]
    pages += [b"<body><p>one</p>\n   \n<p> two\xc2\xa0 </p><p>\xc2\xa0</p>th<b>re</b>e<i> </i>four\t</body>",
              "<p>\u3000\u2003</p><div>\n<span>caf\u00e9</span>\u00a0<span>bar</span></div>\x1c<p>x</p>".encode(),
              b"<p>bad \xe2\x82</p><p>\x80\x80 end\xff</p><p>\xe2</p>x", b"", b"<html></html>", b"<body> \n </body>"]
    assert len(pages) > 170
    assert [_selectolax_text(p) for p in pages] == [stripped(p) for p in pages]


def test_utf8_pages_are_parsed_from_their_bytes_with_the_same_text(sample: pa.RecordBatch) -> None:
    # lexbor takes UTF-8 bytes as they are: no decode in Python, no re-encode in selectolax; the
    # text is the one the decoded page gives, on every real page and on the awkward cases
    stage = LanguagePrescreen()
    bodies, ctypes = sample.column("html").to_pylist(), sample.column("content_type").to_pylist()
    same = [stage.cheap_text(b, c) == stage._decoded_text(b, c) for b, c in zip(bodies, ctypes) if b]
    assert len(same) > 80 and all(same)
    calls = []
    real = stage._utf8_text
    stage._utf8_text = lambda raw: calls.append(1) or real(raw)
    english = "The committee met on Tuesday to discuss the changes to the recycling programme. " * 5
    cases = [
        (_page([english]), "text/html; charset=utf-8", True),
        (b"\xef\xbb\xbf" + _page([english + " caf\u00e9"]), None, True),   # UTF-8 BOM
        (_page([english + " na\u00efve \u4e2d\u6587 \ufffd"]), None, True),  # a real U+FFFD stays
        (_page([english + " caf\xe9"]).decode().encode("cp1252"), None, True),  # undeclared cp1252: invalid UTF-8
        (_page([english]).replace(b"<p>", b"<p>\x01\x02\x03" * 40), None, True),  # C0 controls: undecodable
        (_page([english]), "text/html; charset=iso-8859-1", False),  # declared otherwise: decoded first
    ]
    for body, ctype, utf8_first in cases:
        calls.clear()
        assert stage.cheap_text(body, ctype) == stage._decoded_text(body, ctype), body[:80]
        assert bool(calls) == utf8_first
    assert "caf\u00e9" in stage.cheap_text(cases[3][0], None)  # read as cp1252 after the UTF-8 attempt
    assert stage.cheap_text(cases[4][0], None) is None


def test_parser_bomb_checks_on_bytes_agree_with_the_decoded_checks() -> None:
    from refinery.stages.extract import MAX_TAGS, pathological_html, pathological_utf8, tag_starts

    prose = "<p>" + "The committee met on Tuesday to discuss the recycling programme. " * 20 + "</p>"
    wide = "\u00e9\u4e2d"
    def bomb(n: int, every: int = 0, sep: str = " ") -> str:
        parts = [f"a{i}" + ('t="<"' if every and i % every == every - 1 else "") for i in range(n)]
        return f"<html><body>{prose}<p {sep.join(parts)}>x</p>{prose}</body></html>"
    pages = [
        bomb(999), bomb(1001), bomb(5000), bomb(5000, every=300),   # at, over, far over, hidden by "<"
        "<html><body>" + "<b>x</b>" * (MAX_TAGS // 2 + 10) + "</body></html>",   # over MAX_TAGS tags
        "<html><body>" + "< x" * (MAX_TAGS + 10) + prose + "</body></html>",     # many "<", few tags
        f"<html><head><script>{'var a = 1; ' * 2000}</script></head><body>{prose}</body></html>",  # long gap, no bomb
        "<html><body><p " + " ".join(f'd{i}="{wide}"' for i in range(1200)) + ">x</p></body></html>",  # non-ASCII values
    ]
    for html in pages:
        raw = html.encode()
        assert pathological_utf8(raw, tag_starts(raw)) == pathological_html(html), html[:60]
    assert pathological_utf8(bomb(5000).encode(), tag_starts(bomb(5000).encode()))[0] == "html_too_many_attributes"
    # attributes split by no-break spaces are one name to an HTML tokenizer (ASCII white space only)
    nbsp = bomb(5000, sep="\u00a0").encode()
    assert pathological_utf8(nbsp, tag_starts(nbsp)) is None
    assert LanguagePrescreen().cheap_text(bomb(5000).encode(), "text/html; charset=utf-8") is None


def _hidden_bombs() -> dict[str, bytes]:
    """Tags of 3,000-40,000 attributes that the gaps between "<"s do not show: each trick an HTML
    tokenizer allows (quoted "<" or ">", "<" inside names, no white space after quoted values, an
    unterminated last value, attributes on an end tag)."""
    prose = "<p>" + "The committee met on Tuesday to discuss the recycling programme. " * 20 + "</p>"
    def page(tag: str) -> bytes:
        return f"<html><body>{prose}{tag}{prose}</body></html>".encode()
    names = [f"a{i}" for i in range(3000)]
    return {
        "quoted <": page("<p " + " ".join(n + (' t="<"' if i % 300 == 299 else "") for i, n in enumerate(names)) + ">x</p>"),
        "quoted >": page("<p " + " ".join(f'{n} t=">"' for n in names) + ">x</p>"),
        "single-quoted >": page("<p " + " ".join(f"{n}='>'" for n in names) + ">x</p>"),
        "spaced quoted >": page("<p " + " ".join(f'{n} =  ">"' for n in names) + ">x</p>"),
        "< in names": page("<p " + " ".join(f"a<{i}" for i in range(3000)) + ">x</p>"),
        "no white space": page("<p " + "".join(f'{n}=""' for n in names) + ">x</p>"),
        "unterminated value": page("<p " + " ".join(names) + ' t="x</p>'),
        "end tag": page("<p>x</p " + " ".join(names) + ">"),
        "40k, quoted < every 300": page("<p " + " ".join(
            f"a{i}" + (' t="<"' if i % 300 == 299 else "") for i in range(40_000)) + ">x</p>"),
    }


def test_tags_hidden_from_the_quick_check_are_not_parsed_here(sample: pa.RecordBatch) -> None:
    """The pre-screen parses in this process, without extract's deadline: lexbor takes ~6 s on
    the 40k-attribute tag (80k: 32 s). A tokenizer-faithful check finds every such tag
    in milliseconds, and finds none on real pages."""
    import time

    from refinery.stages.extract import (
        pathological_utf8,
        tag_starts,
        tokenizer_attribute_bomb,
        tokenizer_attribute_bomb_utf8,
    )

    stage = LanguagePrescreen()
    bombs = _hidden_bombs()
    missed = {name for name, raw in bombs.items() if pathological_utf8(raw, tag_starts(raw)) is None}
    assert {"quoted <", "< in names", "end tag", "40k, quoted < every 300"} <= missed  # extract's quick check
    for name, raw in bombs.items():
        assert tokenizer_attribute_bomb_utf8(raw, tag_starts(raw)), name
        assert tokenizer_attribute_bomb(raw.decode()), name
        t0 = time.perf_counter()
        assert stage.cheap_text(raw, "text/html; charset=utf-8") is None, name
        assert stage.cheap_text(raw, "text/html; charset=iso-8859-1") is None, name  # the decoded path
        assert time.perf_counter() - t0 < 0.5, name
    # the limit itself: 1,000 attributes are parsed, 1,001 are not
    at = "<p " + " ".join(f'a{i} t=">"' for i in range(500)) + ">x</p>"
    assert not tokenizer_attribute_bomb(at) and tokenizer_attribute_bomb(at.replace("<p ", "<p extra "))
    htmls = sample.column("html").to_pylist()
    assert sum(1 for h in htmls if h) >= 80
    for raw in filter(None, htmls):
        assert not tokenizer_attribute_bomb_utf8(raw, tag_starts(raw))
        assert not tokenizer_attribute_bomb(raw.decode("utf-8", "replace"))
