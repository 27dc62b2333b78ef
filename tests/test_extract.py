"""TrafilaturaExtractor (both backends) on real WARC records and trafilatura's own evaluation pages."""

from __future__ import annotations

import copy
import gzip
import json
import os
import pickle
import random
import re
import signal
import tarfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from refinery.schema import DOCUMENT_SCHEMA
from refinery.stages.base import METRIC, REASON
from refinery.stages.extract import (
    BACKENDS,
    REFINEDWEB_PARAMS,
    TrafilaturaExtractor,
    clean_text,
    decode_html,
)
from refinery.stages.registry import stage_class

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_WARCS = ROOT / "data" / "sample" / "warc"
EVAL_TARBALL = ROOT.parent / "shared" / "data" / "extraction" / "trafilatura_eval_e90b0ef.tar.gz"
REASONS = {
    "html_too_large", "extraction_timeout", "extraction_failed", "no_text_extracted", "empty_html", "empty_text", "undecodable",
    "html_too_many_attributes", "html_too_many_tags",
}
URL_RE = re.compile(r"https?://\S|\bwww\.\w")

PROSE = (
    "The committee met on Tuesday to discuss the proposed changes to the city's recycling program. "
    "Several residents spoke in favour of expanding curbside collection to apartment buildings, "
    "while others worried about the cost of new trucks and the time needed to train drivers. "
)


def make_batch(htmls: list[bytes | None], content_types: list[str | None] | None = None, urls=None) -> pa.RecordBatch:
    n = len(htmls)
    return pa.RecordBatch.from_pydict(
        {
            "id": [f"t/{i}" for i in range(n)],
            "url": urls or [f"https://example.com/{i}" for i in range(n)],
            "warc_record_id": [None] * n,
            "warc_date": [None] * n,
            "content_type": content_types or ["text/html"] * n,
            "source": ["test"] * n,
            "html": htmls,
            "text": [None] * n,
        },
        schema=DOCUMENT_SCHEMA,
    )


def check(out: pa.RecordBatch, batch: pa.RecordBatch) -> list[str | None]:
    """Invariants of every run: same rows, html nulled everywhere, text only on kept rows."""
    assert out.num_rows == batch.num_rows
    assert out.column("id").to_pylist() == batch.column("id").to_pylist()
    assert out.schema.field("html").type == pa.binary()
    assert out.column("html").null_count == out.num_rows
    reasons = out.column(REASON).to_pylist()
    assert set(reasons) - {None} <= REASONS
    for reason, text in zip(reasons, out.column("text").to_pylist()):
        assert (text is not None) == (reason is None)
        if text is not None:
            assert text.strip() and "\n\n\n" not in text and not URL_RE.search(text)
    return reasons


def page(body: str, head: str = "") -> str:
    return f"<!DOCTYPE html><html><head>{head}<title>t</title></head><body><article>{body}</article></body></html>"


def load_warc_records() -> pa.RecordBatch:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    htmls, cts, urls = [], [], []
    for path in sorted(SAMPLE_WARCS.glob("*.warc.gz")):
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
                urls.append(rec.headers.get("WARC-Target-URI"))
                cts.append(rec.http_headers.get("Content-Type") if rec.http_headers else None)
                htmls.append(rec.reader.read())
    return make_batch(htmls, cts, urls)


def test_sample_warcs() -> None:
    batch = load_warc_records()
    assert batch.num_rows >= 80
    stage = TrafilaturaExtractor()
    out = stage(batch)
    reasons = check(out, batch)
    kept = [t for t in out.column("text").to_pylist() if t]
    # measured: 84 of 84 kept (before issue 13's fallback pass: 80, four shop pages came out empty)
    assert len(kept) >= 0.95 * batch.num_rows
    assert set(reasons) <= {None, "no_text_extracted"}
    assert any("Creative Commons" in t for t in kept)
    assert any("Стратегия пожарной безопасности" in t for t in kept)  # windows-1251 page
    # speed is measured by benchmarks/extraction.py, not asserted here: a shared machine's load
    # decides wall time (29 s for these 84 pages at load 7)
    # the helper process and the pre-screen change nothing on real pages: same texts, same reasons
    # as extraction in this process without either (what the stage did before the helper existed)
    inproc = TrafilaturaExtractor(timeout_s=0, prescreen=False)(batch)
    assert out.column("text").to_pylist() == inproc.column("text").to_pylist()
    assert reasons == inproc.column(REASON).to_pylist()
    assert out.column("quote_lines").to_pylist() == inproc.column("quote_lines").to_pylist()


def load_eval_subset(tmp_path: Path, n: int = 60) -> list[tuple[str, bytes, dict]]:
    """``n`` pages of trafilatura's evaluation set (fixed shuffle): (url, html bytes, item)."""
    with tarfile.open(EVAL_TARBALL, "r:gz") as tar:
        evaldata = json.load(tar.extractfile("tests/evaldata.json"))  # type: ignore[arg-type]
        items = sorted(evaldata.items())
        random.Random(0).shuffle(items)
        wanted = {it["file"] for _, it in items[:n]}
        members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name in wanted]
        tar.extractall(tmp_path, members=members, filter="data")
    files = {Path(m.name).name: tmp_path / m.name for m in members}
    return [(url, files[it["file"]].read_bytes(), it) for url, it in items[:n] if it["file"] in files]


def snippet_rates(rows: list[tuple[str, bytes, dict]], texts: list[str | None]) -> tuple[float, float]:
    """(share of "with" snippets found, share of "without" snippets leaked); "with" snippets holding
    a URL are skipped."""
    norm = lambda s: re.sub(r"\s+", " ", s).strip()
    found = expected = leaked = unwanted = 0
    for (_, _, item), text in zip(rows, texts):
        text = norm(text or "")
        for snippet in item["with"]:
            if URL_RE.search(snippet):  # URLs are removed on purpose (RefinedWeb)
                continue
            expected += 1
            found += norm(snippet) in text
        for snippet in item["without"]:
            unwanted += 1
            leaked += norm(snippet) in text
    return found / expected, leaked / unwanted


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_trafilatura_eval_subset(tmp_path: Path) -> None:
    rows = load_eval_subset(tmp_path)
    assert len(rows) >= 55
    batch = make_batch([r[1] for r in rows], [None] * len(rows), [r[0] for r in rows])
    out = TrafilaturaExtractor()(batch)
    check(out, batch)
    found, leaked = snippet_rates(rows, out.column("text").to_pylist())
    # measured on this subset: 90% of "with" snippets found, 6% of "without" snippets leaked
    # (on all 990 pages: 93% / 7.8%; the old defaults without tables or fallback 87% / 6% here,
    # 90% / 7.1% on all: docs/extraction.md)
    assert found > 0.85
    assert leaked < 0.10
    # identical to extraction in this process without helper or pre-screen (all 990 pages and the
    # sample WARCs, both backends, were checked against the code before the helper: docs/reliability.md)
    inproc = TrafilaturaExtractor(timeout_s=0, prescreen=False)(batch)
    assert out.column("text").to_pylist() == inproc.column("text").to_pylist()


def warm(stage: TrafilaturaExtractor) -> None:
    """One small page through ``stage``: its helper process is started (or restarted after a kill)
    and ready, so what a test times next is the page, not the helper's start-up."""
    assert check(stage(make_batch([page(f"<p>{PROSE}</p>").encode()])), make_batch([b"x"])) == [None]


def attribute_bomb(n: int, every: int = 0) -> bytes:
    """The issue's page: one <p> with ``n`` valueless attributes; with ``every``, a quoted "<" every
    ``every`` attributes (hides the tag from the pre-screen's cheap candidate search)."""
    parts = []
    for i in range(n):
        parts.append(f"a{i}")
        if every and i % every == every - 1:
            parts.append('t="<"')
    return page(f"<p>{PROSE}</p><p {' '.join(parts)}>{PROSE}</p>").encode()


def test_timeout_on_pathological_page() -> None:
    # 5,000 blocks (~1 MB, below max_html_bytes, not caught by the pre-screen): trafilatura needs
    # ~0.25 s of CPU for it; the helper process running it is killed at the deadline (0.1 s: at
    # 0.3 s the test failed on a quiet machine, where the page finished in time)
    body = "".join(f"<div class='c{i}'><p>{PROSE}</p><span>{i}</span></div>" for i in range(5000))
    html = page(body).encode()
    assert len(html) < 2_000_000
    batch = make_batch([html, page(f"<p>{PROSE}</p>").encode()])
    stage = TrafilaturaExtractor(timeout_s=0.1)
    warm(stage)
    t0 = time.perf_counter()
    out = stage(batch)
    # the page's 0.1 s, plus the replacement helper's start-up for the small page after it
    assert time.perf_counter() - t0 < 0.1 + 4.0
    reasons = check(out, batch)
    assert reasons[0] == "extraction_timeout"
    assert 0.1 <= out.column(METRIC)[0].as_py() < 0.1 + 0.5
    # the small page after it still gets its full time budget, from a fresh helper
    assert reasons[1] is None
    # no signal handler or timer is involved any more
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.default_int_handler, None)


def test_outer_timer_and_handler_are_restored() -> None:
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        TrafilaturaExtractor(timeout_s=1.0)(make_batch([page(f"<p>{PROSE}</p>").encode()]))
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25.0 < left <= 30.0
        assert not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# Issue 18 item 6: the time limit must hold inside lxml's C parser, where no signal reaches.
TIMEOUT = 0.5
MARGIN = 1.0  # kill, reap and bookkeeping; measured ~0.01 s


def test_attribute_bomb_is_removed_by_the_prescreen_in_milliseconds() -> None:
    # the issue's pages: 200k valueless attributes in one <p> (1.3 MB, under the 2 MB cap: ran for
    # 90 s to 15 min against timeout_s 5) and 40k in a 235 KB page (72 s)
    big, small = attribute_bomb(200_000), attribute_bomb(40_000)
    assert 1_300_000 < len(big) < 1_500_000 and len(small) < 300_000
    batch = make_batch([big, small, page(f"<p {'a ' * 900}>{PROSE}</p>").encode()])
    stage = TrafilaturaExtractor(timeout_s=5)
    warm(stage)
    t0 = time.perf_counter()
    out = stage(batch)
    assert time.perf_counter() - t0 < 2.0  # measured ~0.2 s, the prescreen's regexes
    assert check(out, batch) == ["html_too_many_attributes", "html_too_many_attributes", None]
    assert out.column(METRIC).to_pylist()[:2] == [200_000, 40_000]


# the deadline is the helper process's, whatever runs in it: checked with the two parser families
# (lxml via trafilatura, lexbor via resiliparse); the learned backend's lexbor parser is the latter's
DEADLINE_BACKENDS = ("trafilatura", "resiliparse")


@pytest.mark.parametrize("backend", DEADLINE_BACKENDS)
def test_attribute_bomb_without_prescreen_is_killed_at_the_deadline(backend: str) -> None:
    # the pre-screen off: the helper process alone bounds the page
    pytest.importorskip(backend)
    stage = TrafilaturaExtractor(timeout_s=TIMEOUT, prescreen=False, backend=backend)
    warm(stage)
    batch = make_batch([attribute_bomb(200_000)])
    t0 = time.perf_counter()
    out = stage(batch)
    assert time.perf_counter() - t0 < TIMEOUT + MARGIN
    assert check(out, batch) == ["extraction_timeout"]
    assert TIMEOUT <= out.column(METRIC)[0].as_py() < TIMEOUT + MARGIN


ADVERSARIAL = {
    # the attribute bomb with a quoted "<" every 300 attributes: the pre-screen does not see it
    # (trafilatura: ~7 s, one C call; Resiliparse ~4 s)
    "hidden_attribute_bomb": lambda: attribute_bomb(40_000, every=300),
    # 30k nested <div> (below MAX_TAGS): Resiliparse > 20 s; trafilatura ~0.4 s (libxml2 stops at depth 256)
    "deep_nesting": lambda: page("<div>" * 30_000 + PROSE + "</div>" * 30_000).encode(),
    # 90k tiny tags (below MAX_TAGS): trafilatura ~2 s
    "many_tiny_tags": lambda: page("<b>x</b>" * 90_000).encode(),
    # 1,000 tags with 300 attributes each (below MAX_ATTRIBUTES_PER_TAG), 1.4 MB: trafilatura ~1.5 s
    "many_attributes_everywhere": lambda: page(
        "".join("<p " + " ".join(f"a{i}" for i in range(300)) + ">x</p>" for _ in range(1000))).encode(),
    # a 1.5 MB attribute value and 20k paragraphs of prose: a real-looking but huge page
    "huge_value_and_prose": lambda: page(f'<p title="{"x" * 500_000}">a</p>' + f"<p>{PROSE}</p>" * 4000).encode(),
}


@pytest.mark.parametrize("backend", DEADLINE_BACKENDS)
def test_adversarial_pages_never_exceed_the_deadline(backend: str) -> None:
    pytest.importorskip(backend)
    # half the other tests' deadline: on mimalloc (the helper's allocator since session 39) the 90k
    # tiny tags take ~0.5 s (0.9 s on glibc), so at 0.5 s only the attribute bomb was sure to be slow
    deadline = TIMEOUT / 2
    stage = TrafilaturaExtractor(timeout_s=deadline, backend=backend)
    slow = 0
    for name, make in ADVERSARIAL.items():
        html = make()
        assert len(html) < 2_000_000, name
        warm(stage)
        batch = make_batch([html])
        t0 = time.perf_counter()
        out = stage(batch)
        elapsed = time.perf_counter() - t0
        assert elapsed < deadline + MARGIN, (name, elapsed)
        reason = check(out, batch)[0]
        # each is either done in time (kept, or removed for another reason) or removed at the deadline
        assert reason in (None, "no_text_extracted", "extraction_timeout"), (name, reason)
        if reason == "extraction_timeout":
            slow += 1
            assert deadline <= out.column(METRIC)[0].as_py() < deadline + MARGIN
    assert slow >= 2  # they are slow: the attribute bomb and the tiny tags run past the deadline


def test_deadline_holds_outside_the_main_thread() -> None:
    # SIGALRM only reaches the main thread; the helper process is killed from any thread
    stage = TrafilaturaExtractor(timeout_s=TIMEOUT)
    batch = make_batch([attribute_bomb(40_000, every=300), page(f"<p>{PROSE * 3}</p>").encode()])
    result = {}

    def run() -> None:
        warm(stage)
        t0 = time.perf_counter()
        result["out"] = stage(batch.slice(0, 1))
        result["elapsed"] = time.perf_counter() - t0
        result["next"] = stage(batch.slice(1, 1))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert result["elapsed"] < TIMEOUT + MARGIN
    assert check(result["out"], batch.slice(0, 1)) == ["extraction_timeout"]
    assert check(result["next"], batch.slice(1, 1)) == [None]


def _helpers(parent: int | None = None) -> list:
    """The live extraction helper processes started by ``parent`` (default: this process)."""
    import psutil

    found = []
    for proc in psutil.Process(parent).children():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and "_extract_helper.py" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def _helper_pids() -> set[int]:
    return {p.pid for p in _helpers()}


def test_helper_crash_removes_only_that_page() -> None:
    # a parser crash (segfault, OOM kill) in the helper: the page is extraction_failed, the next
    # page is extracted by a new helper
    pytest.importorskip("psutil")
    stage = TrafilaturaExtractor(timeout_s=30)
    warm(stage)
    batch = make_batch([attribute_bomb(40_000, every=300), page(f"<p>{PROSE}</p>").encode()])
    before = _helper_pids()
    killer = threading.Timer(0.5, lambda: [os.kill(pid, signal.SIGKILL) for pid in _helper_pids()])
    killer.start()
    t0 = time.perf_counter()
    out = stage(batch)
    killer.join()
    assert time.perf_counter() - t0 < 10
    assert check(out, batch) == ["extraction_failed", None]
    assert before and not before & _helper_pids()


def test_helper_dies_with_its_parent(tmp_path: Path) -> None:
    # a worker killed mid-page (kill -9) leaves no helper burning CPU on the page
    pytest.importorskip("psutil")
    import psutil

    script = tmp_path / "worker.py"
    script.write_text(
        "import sys\n"
        f"sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]\n"
        "from test_extract import make_batch, attribute_bomb\n"
        "from refinery.stages.extract import TrafilaturaExtractor\n"
        "print('go', flush=True)\n"
        "TrafilaturaExtractor(timeout_s=600)(make_batch([attribute_bomb(200_000, every=300)]))\n"
    )
    import subprocess
    import sys as _sys

    proc = subprocess.Popen([_sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "go"
        deadline = time.monotonic() + 30
        helpers: list = []
        while not helpers and time.monotonic() < deadline:
            helpers = _helpers(proc.pid)
            time.sleep(0.1)
        assert helpers
        time.sleep(1.0)  # the helper is inside the page now
        proc.kill()
        proc.wait()
        gone, alive = psutil.wait_procs(helpers, timeout=5)
        assert not alive
    finally:
        proc.kill()
        proc.stdout.close()


def test_html_too_large_empty_and_undecodable() -> None:
    big = b"<html><body>" + b"<p>" + b"a" * (50 * 1024 * 1024) + b"</p></body></html>"
    noise = random.Random(0).randbytes(20_000)
    bomb = gzip.compress(page("<p>" + "x " * 2_000_000 + "</p>").encode())
    batch = make_batch([big, None, b"", b" \n\t ", noise, bomb, page("").encode()])
    out = TrafilaturaExtractor()(batch)
    reasons = check(out, batch)
    metrics = out.column(METRIC).to_pylist()
    assert reasons == [
        "html_too_large", "empty_html", "empty_html", "empty_html", "undecodable", "html_too_large",
        "no_text_extracted",
    ]
    assert metrics[0] == len(big)
    assert metrics[4] > 0.05
    assert metrics[5] > 2_000_000  # inflated size, stopped at the limit


def test_charsets() -> None:
    ru = page(f"<p>Москва — столица России. {PROSE}</p>")
    fr = page(f"<p>Le café était fermé à cause de la grève. {PROSE}</p>")
    meta_sjis = '<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">'
    jp = page(f"<p>東京は日本の首都です。{PROSE}</p>", head=meta_sjis)
    bad_utf8 = page(f"<p>Déjà vu {PROSE}</p>").encode().replace(b"vu", b"v\xff")  # one stray byte
    htmls = [
        ru.encode("cp1251"),  # declared in the HTTP header
        fr.encode("latin-1"),  # undeclared, not UTF-8: guessed
        jp.encode("shift_jis"),  # declared in <meta>
        codecs_bom(fr),  # UTF-8 BOM, wrong header
        bad_utf8,
        gzip.compress(ru.encode()),  # HTTP gzip left on the body
    ]
    cts = ["text/html; charset=windows-1251", "text/html", "text/html", "text/html; charset=iso-8859-1", None, None]
    out = TrafilaturaExtractor()(make_batch(htmls, cts))
    reasons = check(out, make_batch(htmls, cts))
    assert reasons == [None] * 6
    texts = out.column("text").to_pylist()
    assert "Москва — столица России" in texts[0]
    assert "Le café était fermé" in texts[1]
    assert "東京は日本の首都です" in texts[2]
    assert "Le café était fermé" in texts[3]
    assert "Déj" in texts[4] and "committee" in texts[4]
    assert "Москва" in texts[5]
    assert decode_html(ru.encode("cp1251"), "text/html; charset=windows-1251")[1] == 0.0


def test_undeclared_and_utf16_pages_decode_without_replacement_characters() -> None:
    """Found by adversarial testing: an undeclared cp1252 page whose accents sit in the middle
    (head and tail all ASCII) went through as UTF-8 with U+FFFD; an HTTP charset=UTF-16LE was
    read as UTF-8 and the page removed as undecodable."""
    filler = "<p>" + "The committee met on Tuesday to discuss the annual budget report. " * 250 + "</p>"
    middle = "<p>It\u2019s the caf\u00e9\u2019s \u201cbest\u201d coffee \u2013 na\u00efve but good.</p>"
    html = f"<html><head><title>Coffee</title></head><body>{filler}{middle}{filler}</body></html>"
    assert len(html) > 30_000
    text, bad = decode_html(html.encode("cp1252"), "text/html")
    assert text == html and bad == 0.0
    # German in cp1252, undeclared: not cp852's "\u0158" for "\u00fc"
    de = page(f"<p>F\u00fcr die Gr\u00fc\u00dfe der B\u00fcrger wurde \u00fcber die \u00c4nderung gesprochen. {PROSE}</p>")
    assert decode_html(de.encode("cp1252"), "text/html")[0] == de
    ascii_page = page(f"<p>{PROSE}</p>")
    for label, codec in (("UTF-16LE", "utf-16-le"), ("utf-16be", "utf-16-be")):
        assert decode_html(ascii_page.encode(codec), f"text/html; charset={label}") == (ascii_page, 0.0)
    # a UTF-16 header on a UTF-8 body (a misconfigured server) is not believed
    assert decode_html(de.encode("utf-8"), "text/html; charset=utf-16le")[0] == de


def codecs_bom(text: str) -> bytes:
    return b"\xef\xbb\xbf" + text.encode("utf-8")


def test_list_markers_on_their_own_line_are_joined_to_their_items() -> None:
    """trafilatura writes "- " and then the item's text from a new line when the item's text
    starts with the page source's line break and indentation (a real publication list of the
    bundled sample, dwadden.github.io, as extracted). Every bare "-" line was then a duplicate line,
    and Gopher's dup_line_frac removed the page for them."""
    items = ["Entity-Centric Query Refinement", "SciFact-Open: Towards open-domain scientific claim verification",
             "MultiVerS: Improving scientific claim verification with weak supervision",
             "Generating Scientific Claims for Zero-Shot Scientific Fact Checking",
             "The Effect of Moderation on Online Mental Health Conversations"]
    venues = ["AKBC, 2022", "EMNLP Findings, 2022", "NAACL Findings, 2022", "ACL, 2022", "ICWSM, 2021"]
    authors = ["David Wadden, Nikita Gupta, Kenton Lee, Kristina Toutanova",
               "David Wadden, Kyle Lo, Bailey Kuehl, Arman Cohan, Iz Beltagy, Lucy Lu Wang, Hannaneh Hajishirzi",
               "David Wadden, Kyle Lo, Lucy Lu Wang, Arman Cohan, Iz Beltagy, Hannaneh Hajishirzi",
               "Dustin Wright, David Wadden, Kyle Lo, Bailey Kuehl, Arman Cohan, Isabelle Augenstein, Lucy Lu Wang",
               "David Wadden, Tal August, Qisheng Li, Tim Althoff"]
    raw = "Publications\nThis list may be out of date; please see my Google Scholar for an up-to-date list.\n" + "".join(
        f"- \n          {title}\n          \n{people}\n{venue}\nArticle\n          \u00a0\n\n           Code\n"
        for title, people, venue in zip(items, authors, venues))
    cleaned = clean_text(raw)
    assert "\n- Entity-Centric Query Refinement\n\nDavid Wadden" in cleaned
    assert [line for line in cleaned.split("\n") if line.startswith("-")] == [f"- {t}" for t in items]
    assert not [line for line in cleaned.split("\n") if line and not line.strip()]  # no whitespace-only lines
    from refinery.stages.gopher import GopherRepetition

    assert GopherRepetition().check(raw)[0] == "dup_line_frac" and GopherRepetition().check(cleaned)[0] is None
    # nesting indentation stays; an empty item's marker goes; a "-" inside a line is text
    assert clean_text("Steps\n- \n\n   One\n  - \n    nested\n- \n- Two\n-") == "Steps\n- One\n  - nested\n- Two"
    assert clean_text("well-known - a dash\n-- not a marker") == "well-known - a dash\n-- not a marker"
    # a line's trailing spaces, tabs and no-break spaces go (trafilatura ends every table row with
    # one; captions keep the source's); its leading indentation stays (code, nested items)
    assert clean_text("| a | b | \nA caption \t\u00a0\n    code()  \n\t\u00a0\nend") == "| a | b |\nA caption\n    code()\n\nend"


def test_urls_removed_and_newlines_capped() -> None:
    assert clean_text("a\n\n\n\nb\n \n \n\nc") == "a\n\nb\n\nc"
    assert clean_text("See https://example.com/x?y=1 for more, or www.example.org.") == "See for more, or."
    # a URL ends at the scripts written without spaces: it ran on through the text after a link
    # written without a space (found by adversarial testing); other letters and commas are its own
    assert clean_text("详情请访问http://www.example.com了解更多信息，谢谢。第二句。") == "详情请访问了解更多信息，谢谢。第二句。"
    assert clean_text("자세한 내용은 https://example.kr/abc에서 확인하세요.") == "자세한 내용은에서 확인하세요."
    assert clean_text("公式サイトwww.example.co.jp/index.htmlをご覧ください。") == "公式サイトをご覧ください。"
    assert clean_text("Map: https://www.google.com/maps/@35.2,-97.4,15z here") == "Map: here"
    # a URL starting a line takes the spaces after it (the line read " Wake News Radio"); code's
    # indentation before one stays
    assert clean_text("LIVE\nhttp://wakenews.net/radio.html Wake News Radio\n  www.a.de\tx\nhttp://b.de, y") == (
        "LIVE\nWake News Radio\n \tx\n, y")
    assert clean_text("Visit https://münchen.de/stadt or https://example.com/wiki/Café now") == "Visit or now"
    assert clean_text("Read xhttp://a.b/c and awww.b.c here") == "Read xhttp://a.b/c and awww.b.c here"
    # the cheap look for "://" or "www." before the URL regex misses nothing that regex drops
    import re
    import sys

    from refinery.stages.extract import _URL, _WWW
    assert [chr(c) for c in range(sys.maxunicode + 1) if re.fullmatch("w", chr(c), re.IGNORECASE)] == ["W", "w"]
    for text in ("Visit WwW.Example.COM now", "FTP://files.example/x", "HTTPS://A.B/c", "x www.a.b", "wwww.x.y z",
                 "no link here: www dot example", "time 10:30 // a/b", "Ww w.x"):
        if _URL.search(text) is not None:
            assert "://" in text or _WWW.search(text) is not None, text
        assert clean_text(text) == _URL.sub("", text).strip(), text
    body = (
        f"<p>{PROSE} Details at https://example.com/report.pdf today.</p>"
        "<p>http://only-a-link.example.com/</p>"
        f"<p>{PROSE}</p>"
    )
    out = TrafilaturaExtractor()(make_batch([page(body).encode()]))
    text = out.column("text")[0].as_py()
    assert "Details at today." in text
    assert "example.com" not in text and "\n\n\n" not in text


# --- Resiliparse backend -------------------------------------------------------------------------


def load_warc_reader_batch() -> pa.RecordBatch:
    """The sample WARCs' kept records, read by our own WarcReader (decision columns dropped)."""
    from refinery.io.warc import WarcReader

    batches = []
    for path in sorted(SAMPLE_WARCS.glob("*.warc.gz")):
        with open(path, "rb") as f:
            batches.extend(WarcReader().read(f, source=str(path)))
    table = pa.Table.from_batches(batches)
    table = table.filter(table.column(REASON).is_null()).drop_columns([REASON, METRIC])
    return table.cast(DOCUMENT_SCHEMA).combine_chunks().to_batches()[0]


def test_resiliparse_sample_warcs() -> None:
    pytest.importorskip("resiliparse")
    batch = load_warc_reader_batch()
    assert batch.num_rows >= 80
    stage = TrafilaturaExtractor(backend="resiliparse")
    out = stage(batch)
    reasons = check(out, batch)
    texts = out.column("text").to_pylist()
    kept = [t for t in texts if t]
    # measured: 83 of 83 kept (it keeps the shop pages trafilatura finds empty: menus and all)
    assert len(kept) >= 0.9 * batch.num_rows
    assert set(reasons) <= {None, "no_text_extracted"}
    assert any("Creative Commons" in t for t in kept)
    assert any("Стратегия пожарной безопасности" in t for t in kept)  # windows-1251 page
    # its speed (~4x trafilatura's) is measured by benchmarks/extraction.py, not asserted here

    # same documents kept by both backends wherever trafilatura finds text, with mostly the same
    # prose: its extract is (nearly) contained in Resiliparse's, which adds boilerplate
    traf = TrafilaturaExtractor()(batch).column("text").to_pylist()
    words = lambda t: set(re.findall(r"\w+", t))
    both = [(a, b) for a, b in zip(traf, texts) if a and b]
    assert len(both) == sum(1 for a in traf if a)
    recall = [len(words(a) & words(b)) / len(words(a)) for a, b in both]
    assert sum(recall) / len(recall) > 0.85  # measured: 0.94 (80 pages; 0 on one: another block won)


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_resiliparse_eval_subset(tmp_path: Path) -> None:
    pytest.importorskip("resiliparse")
    rows = load_eval_subset(tmp_path)
    assert len(rows) >= 55
    batch = make_batch([r[1] for r in rows], [None] * len(rows), [r[0] for r in rows])
    out = TrafilaturaExtractor(backend="resiliparse")(batch)
    check(out, batch)
    found, leaked = snippet_rates(rows, out.column("text").to_pylist())
    # measured on this subset: 89% of "with" snippets found, 20% of "without" snippets leaked
    # (all 990 pages: 95% / 26%; trafilatura 87% / 6% here, 90% / 7% on all): a little more
    # recall, much less precision. Not asserted better than trafilatura: it is not.
    assert found > 0.82
    assert leaked < 0.28


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_share_reasons_and_post_processing(backend: str) -> None:
    pytest.importorskip({"learned": "selectolax"}.get(backend, backend))
    big = b"<html><body><p>" + b"a" * 3_000_000 + b"</p></body></html>"
    noise = random.Random(0).randbytes(20_000)
    body = (
        f"<p>{PROSE} Details at https://example.com/report.pdf today.</p>"
        "<p>http://only-a-link.example.com/</p><br><br><br><br>"
        f"<p>Москва — столица России. {PROSE}</p>"
    )
    htmls = [big, b" ", noise, page("").encode(), page(body).encode("cp1251", "ignore")]
    cts = [None, None, None, None, "text/html; charset=windows-1251"]
    batch = make_batch(htmls, cts)
    out = TrafilaturaExtractor(backend=backend)(batch)
    reasons = check(out, batch)
    assert reasons == ["html_too_large", "empty_html", "undecodable", "no_text_extracted", None]
    assert out.column(METRIC).to_pylist()[0] == len(big)
    text = out.column("text")[4].as_py()
    assert "Details at today." in text and "Москва — столица России" in text
    assert "example.com" not in text and "\n\n\n" not in text


def test_resiliparse_main_content_and_comments() -> None:
    pytest.importorskip("resiliparse")
    html = (
        "<html><head><title>t</title></head><body>"
        "<nav><ul><li><a href='/'>Home</a></li><li><a href='/about'>About our newsroom</a></li></ul></nav>"
        f"<main><article><h1>Recycling</h1><p>{PROSE}</p></article>"
        "<section class='comments' id='comments'><div class='comment'>"
        "<p>I totally disagree with the council on this matter, said Bob.</p></div></section></main>"
        "<footer><p>Copyright 2024 Example Town Newspaper.</p></footer></body></html>"
    ).encode()
    default, with_comments = (
        TrafilaturaExtractor(backend="resiliparse", **kw)(make_batch([html])).column("text")[0].as_py()
        for kw in ({}, {"include_comments": True})
    )
    for text in (default, with_comments):
        assert text.startswith("Recycling\n") and "curbside collection" in text
        assert "About our newsroom" not in text and "Copyright 2024" not in text
    assert "disagree with the council" not in default  # RefinedWeb: no comments
    assert "disagree with the council" in with_comments


def test_resiliparse_timeout_cuts_the_native_call_short() -> None:
    # Resiliparse's extraction is one native call: a signal could not stop it, the helper's kill does
    pytest.importorskip("resiliparse")
    body = "<div>" * 30_000 + PROSE + "</div>" * 30_000  # > 20 s in Resiliparse
    batch = make_batch([page(body).encode(), page(f"<p>{PROSE}</p>").encode()])
    stage = TrafilaturaExtractor(backend="resiliparse", timeout_s=TIMEOUT)
    warm(stage)
    t0 = time.perf_counter()
    out = stage(batch.slice(0, 1))
    assert time.perf_counter() - t0 < TIMEOUT + MARGIN
    rest = stage(batch.slice(1, 1))
    assert check(out, batch.slice(0, 1)) + check(rest, batch.slice(1, 1)) == ["extraction_timeout", None]
    assert TIMEOUT <= out.column(METRIC)[0].as_py() < TIMEOUT + MARGIN
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_backend_from_config_and_pickling() -> None:
    pytest.importorskip("resiliparse")
    stage = stage_class("extract")(backend="resiliparse")
    assert stage.backend == "resiliparse"
    doc = make_batch([page(f"<p>{PROSE}</p>").encode()])
    first = stage(doc).column("text").to_pylist()
    clone = pickle.loads(pickle.dumps(stage))  # after use: the loaded extractor is not pickled
    assert clone.backend == "resiliparse" and clone(doc).column("text").to_pylist() == first
    with pytest.raises(ValueError, match="backend"):
        TrafilaturaExtractor(backend="lxml")  # type: ignore[arg-type]


# --- issue 13: tables, the fallback pass and the extract_path column ----------------------------

#: a real table-layout page of trafilatura's evaluation set (a club's page laid out in <table>):
#: precision mode without tables (the old default) returns nothing for it
TABLE_PAGE = "hundeverein-kreisunna.de.html"
#: a real article page whose precision-mode extract is 290 characters of a 10 kB article
SHORT_PAGE = "fifplay.com.settings.html"


def load_eval_pages(tmp_path: Path, files: tuple[str, ...]) -> list[tuple[str, bytes, dict]]:
    """The named pages of trafilatura's evaluation set: (url, html bytes, item), in ``files`` order."""
    found: dict[str, bytes] = {}
    with tarfile.open(EVAL_TARBALL, "r|gz") as tar:  # one sequential pass, stopped when all are read
        for member in tar:
            name = Path(member.name).name
            if member.isfile() and (name in files or member.name == "tests/evaldata.json"):
                found[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
                if len(found) == len(files) + 1:
                    break
    by_file = {it["file"]: (url, it) for url, it in json.loads(found["evaldata.json"]).items()}
    return [(by_file[f][0], found[f], by_file[f][1]) for f in files]


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_fallback_rescues_a_table_layout_page(tmp_path: Path) -> None:
    rows = load_eval_pages(tmp_path, (TABLE_PAGE, SHORT_PAGE))
    batch = make_batch([r[1] for r in rows], [None, None], [r[0] for r in rows])
    wanted = [r[2]["with"] for r in rows]
    found = lambda text, snippets: sum(re.sub(r"\s+", " ", s) in re.sub(r"\s+", " ", text or "") for s in snippets)

    # in process (timeout_s=0): no helper start-up to wait for; the helper is compared below
    old = TrafilaturaExtractor(**REFINEDWEB_PARAMS, timeout_s=0)(batch)  # old defaults
    assert check(old, batch)[0] == "no_text_extracted"
    assert old.column("extract_path").to_pylist()[0] == "precision"  # the path tried is kept on removal

    # precision mode without tables, with the fallback: the first pass is empty, the second finds it
    rescued = TrafilaturaExtractor(include_tables=False, timeout_s=0)(batch)
    assert check(rescued, batch) == [None, None]
    assert rescued.column("extract_path").to_pylist() == ["fallback", "fallback"]
    assert rescued.column("extract_pass").to_pylist() == [2, 2]
    texts = rescued.column("text").to_pylist()
    assert found(texts[0], wanted[0]) == len(wanted[0]) == 2
    assert found(texts[1], wanted[1]) == 4 and len(texts[1]) > 3 * len(old.column("text")[1].as_py())

    # the new defaults: tables on, so the table page needs no fallback; the short article still does
    new = TrafilaturaExtractor()(batch)
    assert new.column("extract_path").to_pylist() == ["precision", "fallback"]
    assert found(new.column("text")[0].as_py(), wanted[0]) == 2
    assert not any(s in new.column("text")[0].as_py() for s in rows[0][2]["without"])
    # the helper process and in-process extraction take the same paths to the same texts
    inproc = TrafilaturaExtractor(timeout_s=0)(batch)
    for column in ("text", "extract_path", "extract_pass"):
        assert inproc.column(column).to_pylist() == new.column(column).to_pylist()


#: a Spiegel print article: the first pass finds 882 characters, the fallback the 15,337 of the article
SPIEGEL_PAGE = "spiegel.de.albtraum.html"
#: a short news item (870 characters first) whose body holds 5.5x that: the fallback finds the same text
JUDGED_PAGE = "japantimes.co.jp.surgical.html"


def test_body_text_chars_counts_the_body_text_with_whitespace_collapsed() -> None:
    from refinery.stages._extract_helper import body_text_chars

    assert body_text_chars("<html><head><title>not body</title></head><body><p>a \n b</p>\n<p>c</p></body>") == 5
    assert body_text_chars("<p>no body tag</p> <div>at all</div>") == len("no body tag at all")


def _body_text_chars_by_regex(page: str) -> int:
    """body_text_chars as it was before session 34 (whitespace collapsed with re.sub, then strip)."""
    from refinery.stages import _extract_helper as h

    start = h._BODY_START.search(page)
    body_from = start.start() if start else 0
    count = len(re.sub(r"\s+", " ", " ".join(h._TEXT_RUN.findall(page, body_from))).strip())
    for m in h._JSON_LD_START.finditer(page, 0, body_from):
        end = h._SCRIPT_END.search(page, m.end())
        script = page[m.end():end.start() if end else len(page)]
        if h._BASELINE_HOOKS.search(script):
            count += len(script)
    return count


def _eval_pages_slice(n: int) -> list[str]:
    """The first ``n`` HTML pages of the evaluation tarball, decoded."""
    pages = []
    with tarfile.open(EVAL_TARBALL, "r|gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".html"):
                pages.append(decode_html(tar.extractfile(member).read(), None)[0])  # type: ignore[union-attr]
                if len(pages) == n:
                    break
    return pages


def test_body_text_chars_counts_as_the_regex_did_on_edge_cases() -> None:
    """str.split() (the count's words) and the regex \\s (its old collapse) cut at the same characters:
    every code point checked; and the count on whitespace of every kind, astral and combining text."""
    from refinery.stages._extract_helper import body_text_chars

    spaces = re.compile(r"\s")
    for code in range(0x110000):
        if not 0xD800 <= code <= 0xDFFF:
            c = chr(code)
            assert (spaces.fullmatch(c) is not None) == c.isspace() == (len(f"a{c}b".split()) == 2), hex(code)
    pages = [
        "<body><p>\u3000a\x1cb\x1f c\x85d\xa0e\u2028f\u2029\u202fg\u205f\u1680h\u2000i\u200aj\x0bk\x0cl\u3000</p></body>",
        "<body><p>\u200bzero\u200bwidth\u200b</p><p> \U0001F600 \U00020000\u0301e\u0301 </p></body>",
        "<body>  </body>", "<body></body>", "no tags at all", "", ">", "<body><p>\t\n\r</p><b> x </b>",
        "<BODY class='a'>>> a > b <br> c <!-- d --> e</BODY>",
        "<head><script type='application/ld+json'>{\"articleBody\": \"\u3000x\"}</script></head><body> y </body>",
    ]
    for page in pages:
        assert body_text_chars(page) == _body_text_chars_by_regex(page), page


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_body_text_chars_counts_as_the_regex_did_on_real_pages() -> None:
    from refinery.stages._extract_helper import body_text_chars, strip_dropped_elements

    batch = load_warc_records()
    warc = [decode_html(b, c)[0] for b, c in zip(batch.column("html").to_pylist(),
                                                  batch.column("content_type").to_pylist())]
    pages = warc + _eval_pages_slice(150)
    assert len(pages) >= 230
    for page in pages:
        for text in (page, strip_dropped_elements(page)):
            assert body_text_chars(text) == _body_text_chars_by_regex(text)


def test_the_helpers_rarer_collections_still_free_reference_cycles() -> None:
    import gc
    import weakref

    from refinery.stages._extract_helper import GC_THRESHOLD, collect_less_often

    before = gc.get_threshold()
    try:
        collect_less_often()
        assert gc.get_threshold() == (GC_THRESHOLD, *before[1:]) and GC_THRESHOLD > before[0]

        class Node:
            pass

        node = Node()
        node.itself = node
        gone = weakref.ref(node)
        del node
        allocated = [[] for _ in range(2 * GC_THRESHOLD)]  # enough new containers for a young collection
        assert gone() is None and len(allocated) == 2 * GC_THRESHOLD
    finally:
        gc.set_threshold(*before)


def _judged_and_always(page: str):
    import logging

    from refinery.stages._extract_helper import make_extract

    stage = TrafilaturaExtractor()
    config = {"backend": "trafilatura", "kwargs": stage._trafilatura_kwargs(), "fallback": stage._fallback_config(),
              "rules": stage._rules_config(), "join_lines": stage.join_source_lines, "log_level": logging.ERROR}
    always = make_extract({**config, "fallback": {**config["fallback"], "judge_ratio": 0.0}})
    return make_extract(config)(page, None), always(page, None)


def test_fallback_judge_runs_the_fallback_on_a_paywalled_article_in_head_json_ld() -> None:
    """A news page whose article is only in the JSON-LD of its <head> and whose body shows a teaser:
    the fallback's baseline reads the articleBody (45x the teaser); the body text alone is 1x it."""
    import json

    article = " ".join(f"Sentence {i} of the article body that lives only in the JSON-LD block." for i in range(40))
    ld = json.dumps({"@context": "https://schema.org", "@type": "NewsArticle", "articleBody": article})
    page = (f"<html><head><title>T</title><script type='application/ld+json'>{ld}</script></head><body>"
            "<div class='teaser'><p>A short teaser paragraph that the page shows above the paywall.</p></div>"
            "</body></html>")
    judged, always = _judged_and_always(page)
    assert always[1] == "fallback" and len(always[0]) > 2000
    assert judged == always


def test_fallback_judge_runs_the_fallback_on_a_discourse_page() -> None:
    """A Discourse topic's posts are JSON in a ``data-preloaded`` attribute, not body text."""
    import html
    import json

    posts = [{"cooked": "<p>" + " ".join(f"Reply sentence {i} of post {k} explaining the problem." for i in range(12))
              + "</p>"} for k in range(5)]
    preloaded = json.dumps({"topic_1": json.dumps({"post_stream": {"posts": posts}})})
    page = (f"<html><head><title>T</title></head><body><div id='data-preloaded' "
            f"data-preloaded=\"{html.escape(preloaded)}\"></div>"
            "<p>A short line of visible body text that the first pass keeps from this forum page.</p></body></html>")
    judged, always = _judged_and_always(page)
    assert always[1] == "fallback" and len(always[0]) > 2000
    assert judged == always


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_fallback_judge_skips_the_fallback_only_where_it_cannot_win(tmp_path: Path, monkeypatch) -> None:
    """The fallback pass is skipped on a page whose body text is at most ``fallback_judge_ratio``
    times the first text; the page where only the fallback finds the article still gets it."""
    import trafilatura

    from refinery.stages._extract_helper import fallback_may_win, strip_dropped_elements

    rows = load_eval_pages(tmp_path, (SPIEGEL_PAGE, JUDGED_PAGE))
    batch = make_batch([r[1] for r in rows], [None, None], [r[0] for r in rows])
    calls: list[str] = []
    extract = trafilatura.extract

    def counted(html, *args, **kwargs):  # the library's calls per page (the stage binds it lazily)
        calls.append(kwargs["options"].url if "options" in kwargs else kwargs.get("url"))
        return extract(html, *args, **kwargs)

    monkeypatch.setattr(trafilatura, "extract", counted)
    always = TrafilaturaExtractor(timeout_s=0, fallback_judge_ratio=0)(batch)
    assert calls == [rows[0][0], rows[0][0], rows[1][0], rows[1][0]]  # both pages: first pass, fallback
    calls.clear()
    judged = TrafilaturaExtractor(timeout_s=0)(batch)
    assert calls == [rows[0][0], rows[0][0], rows[1][0]]  # the judged page: first pass only
    for column in ("text", "extract_path", "extract_pass"):
        assert judged.column(column).to_pylist() == always.column(column).to_pylist()
    assert judged.column("extract_path").to_pylist() == ["fallback", "precision"]
    assert len(judged.column("text")[0].as_py()) > 10_000  # the whole article

    # the judge's reasons, from the first pass's own text
    firsts = TrafilaturaExtractor(timeout_s=0, fallback=False)(batch).column("text").to_pylist()
    pages = [strip_dropped_elements(decode_html(r[1], None)[0]) for r in rows]
    assert 500 < len(firsts[0]) < 1000 and fallback_may_win(pages[0], firsts[0], 8.0)
    assert 500 < len(firsts[1]) < 1000 and not fallback_may_win(pages[1], firsts[1], 8.0)
    assert fallback_may_win(pages[1], firsts[1], 0.0)  # 0: the judge is off


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_layout_tables_come_out_as_text_and_data_tables_as_tables(tmp_path: Path) -> None:
    """hundeverein-kreisunna.de lays its page out with ``<table>``: its text came out as spacer
    rows (``|  |  |``) and the article as one 2,000-character cell. stardewvalleywiki.com's data
    rows ("| Birthday: | Fall 2 |") and fifplay.com's settings table (options with a sentence of
    description) stay tables, header rules included."""
    rows = load_eval_pages(tmp_path, (TABLE_PAGE, "stardewvalleywiki.com.penny.html", SHORT_PAGE))
    batch = make_batch([r[1] for r in rows], [None] * 3, [r[0] for r in rows])
    layout, wiki, settings = TrafilaturaExtractor(timeout_s=0)(batch).column("text").to_pylist()
    assert layout.startswith("Beate und Norbert Olschewski entschlossen sich im Jahr 1990")
    assert "|" not in layout and all(s in layout for s in rows[0][2]["with"])
    assert "| Birthday: | Fall 2 |" in wiki and "| Time | Location |\n|---|---|" in wiki
    assert "| Option | Value |\n|---|---|\n| Half Lenght Choose how many minutes" in settings


def test_empty_input_text_is_named_empty_text_not_empty_html() -> None:
    """A text-input row (no HTML) with empty text is removed as ``empty_text``; a row with
    neither stays ``empty_html`` (a page whose HTML is missing) when the batch holds HTML; in a
    batch of text input (no HTML at all) a null text is ``empty_text`` too."""
    batch = make_batch([None, None, None, b""])
    batch = batch.set_column(batch.schema.get_field_index("text"), "text", pa.array(["", None, "kept as is", None]))
    out = TrafilaturaExtractor(timeout_s=0)(batch)
    assert check(out, batch) == ["empty_text", "empty_html", None, "empty_html"]
    text_only = make_batch([None, None, None])
    text_only = text_only.set_column(text_only.schema.get_field_index("text"), "text", pa.array(["", None, "kept"]))
    out = TrafilaturaExtractor(timeout_s=0)(text_only)
    assert check(out, text_only) == ["empty_text", "empty_text", None]


def test_extract_path_is_declared_and_counted_in_stats() -> None:
    from refinery.stats.collector import ShardStatsCollector

    stage = TrafilaturaExtractor(timeout_s=0)
    batch = make_batch([page(f"<p>{PROSE}</p>").encode(), page("").encode(), None])
    batch = batch.set_column(batch.schema.get_field_index("text"), "text", pa.array([None, None, "already text"]))
    out = stage(batch)
    assert out.column("extract_path").to_pylist() == ["precision", "baseline", "input"]
    assert out.column("extract_pass").to_pylist() == [1, 3, 0]
    assert out.schema.field("extract_pass").type == pa.int8()
    assert {"extract_pass", "extract_path"} <= set(stage.metric_columns())
    if hasattr(stage, "take_counters"):  # named stage counters: kept documents per path
        assert stage.take_counters() == {"path_precision": 1, "path_input": 1}
    collector = ShardStatsCollector("s", [stage])
    collector.observe(stage.name, batch, out)
    hist = collector.histograms[stage.name]["extract_pass"].to_dict()
    assert hist["edges"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert hist["counts"]["kept"] == [1, 1, 0, 0] and hist["counts"]["removed"] == [0, 0, 0, 1]
    # an empty batch still carries the columns (every shard of a run has one schema)
    empty = stage(batch.slice(0, 0))
    assert {"extract_path", "extract_pass"} <= set(empty.schema.names)
    assert empty.schema.field("quote_lines").type == out.schema.field("quote_lines").type == pa.list_(pa.int32())


def test_blockquote_lines_are_marked_for_later_stages() -> None:
    """A forum reply quoting an earlier post: ``quote_lines`` names the lines of the text that
    came from the ``<blockquote>`` (for ``gopher_repetition``'s ``skip_quoted_repeats``), the text
    itself unchanged. A quoted line starting with a URL, which the cleaning cuts with the space
    after it, keeps its mark (session 48; it dropped the page's marks). A forum's quote ``<div>``
    (mactechnews' ``TexticonQuote``, a class token) is marked too, a ``quote``, ``quotes-carousel``
    or ``TexticonQuotes`` class is not (session 48); text that came as input, another backend, or
    trafilatura without joined lines get none."""
    post = [PROSE.strip(), "Has anyone else seen the draft budget for next year? It leaves out the trucks entirely."]
    reply = "I have, and the council will vote on it in March after a second round of public comments."
    quote = "".join(f"<p>{p}</p>" for p in post)
    forum = page(f"<h1>Recycling</h1>{quote}<p>Mia wrote:</p><blockquote>{quote}</blockquote><p>{reply}</p>")
    url_first = page(f"{quote}<blockquote><p>https://example.org/budget {post[1]}</p></blockquote><p>{reply}</p>")
    batch = make_batch([forum.encode(), url_first.encode(), None])
    batch = batch.set_column(batch.schema.get_field_index("text"), "text", pa.array([None, None, "input\ntext"]))
    out = TrafilaturaExtractor(timeout_s=0)(batch)
    text = out.column("text")[0].as_py()
    assert text.split("\n") == ["Recycling", *post, "Mia wrote:", *post, reply]
    assert out.column("quote_lines").to_pylist() == [[4, 5], [2], None]
    assert out.column("text")[1].as_py().split("\n") == [*post, post[1], reply]  # the quote, its URL cut

    def thread(quote_class: str) -> bytes:  # mactechnews' layout, trimmed: posts in divs, no <p>
        def comment(author: str, inner: str) -> str:
            return (f"<div class='MtnComment'><div class='MtnCommentInformation'><span>{author}</span>"
                    f"<span>28.09.19</span></div><div class='MtnCommentText'>{inner}</div></div>")
        quoted = f"<div class='{quote_class}'><div class='Name'>mia</div><div class='Text'>{post[1]}</div></div>"
        return ("<html><body><main id='content'><h2>Recycling</h2>" + comment("mia", "<br>".join(post))
                + comment("ann", "Me too, see the plan of the council.") + comment("tom", quoted)
                + "</main></body></html>").encode()

    classes = ["Texticon TexticonQuote", "quote", "quotes-carousel", "TexticonQuotes"]
    threads = TrafilaturaExtractor(timeout_s=0)(make_batch([thread(c) for c in classes]))
    texts = threads.column("text").to_pylist()
    assert len(set(texts)) == 1 and texts[0].split("\n")[-2:] == ["mia", post[1]]  # the same text
    assert threads.column("quote_lines").to_pylist() == [[7, 8], None, None, None]
    for other in (TrafilaturaExtractor(timeout_s=0, join_source_lines=False), TrafilaturaExtractor(timeout_s=0, backend="resiliparse")):
        assert other(batch.slice(0, 1)).column("quote_lines").to_pylist() == [None]


# -- the lean trafilatura path (issue 17, session 9): cheaper calls, the same text -----------------
def test_strip_dropped_elements_cuts_only_what_trafilatura_deletes() -> None:
    from refinery.stages._extract_helper import strip_dropped_elements as strip

    ld = '<script type="application/ld+json">{"articleBody": "x"}</script>'
    html = (f"<html><head><TITLE>Using <script> tags</title>{ld}<STYLE>p {{color: red}}</Style>"
            "<script>var a = '<p>not text</p>';</SCRIPT ></head><body><!-- <script> -->"
            "<p>one</p><script src=a.js/><p>two</p><noscript><p>three</p></noscript>"
            "<svg><style>x{}</style><text>four</text></svg><textarea><script></textarea><p>five</p></body></html>")
    out = strip(html)
    assert out == (f"<html><head><TITLE>Using <script> tags</title>{ld}</head><body>"
                   "<p>one</p><p>two</p><noscript><p>three</p></noscript>"
                   "<svg><text>four</text></svg><textarea><script></textarea><p>five</p></body></html>")
    # an element never closed ends the scan: the rest is kept as it is (linear on hostile input)
    assert strip("<p>a</p><style>b<script>c</script>") == "<p>a</p><style>b<script>c</script>"
    assert strip("<p>a</p><!-- b") == "<p>a</p><!-- b"
    assert strip("<p>no scripts</p>") == "<p>no scripts</p>"
    # hostile shapes stay linear: every step moves past a ">" (a regex over the start tag's
    # attributes took 7.5 s on the first one)
    # "<script .../>" is an open script element to browsers (HTML5 ignores the "/"): its JavaScript
    # up to "</script>" is cut; with no end tag after it, only the tag goes (libxml2 closes it there)
    assert strip('<p>a</p><script type="text/javascript"/>\n(function() {\n var x = 1;\n})();\n</script><p>b</p>'
                 ) == "<p>a</p><p>b</p>"
    assert strip('<p>a</p><script src="x.js" /><p>b</p>') == "<p>a</p><p>b</p>"
    # another "<script>" before the next "</script>": that end tag is the other one's (as XHTML reads
    # it), so only the tag goes and the content between stays
    assert strip('<script src="x.js"/><p>b</p><script>y()</script><p>c</p>') == "<p>b</p><p>c</p>"
    for hostile in ("<script " * 200_000, "<script>" * 200_000, "<!--" * 300_000, "<title>" * 200_000,
                    "<script/>x" * 20_000, "<script/></script>" * 20_000, "<script/>" * 20_000 + "</script>"):
        t0 = time.process_time()
        assert strip(hostile) in (hostile, "x" * 20_000, "")
        assert time.process_time() - t0 < 0.5


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_javascript_after_a_self_closing_script_tag_is_not_page_text(tmp_path: Path) -> None:
    """bettycrocker.com writes ``<script type="text/javascript"/>`` and then its JavaScript up to
    ``</script>`` (six times). libxml2 closes the element at "/>", so plain trafilatura extracted
    the JavaScript as the recipe's text; a browser shows none of it."""
    url, body, item = load_eval_pages(tmp_path, ("bettycrocker.com.pineapple.html",))[0]
    html = decode_html(body, None)[0]
    assert html.count('<script type="text/javascript"/>') >= 6
    import trafilatura

    assert "addEventListener" in (trafilatura.extract(html, favor_precision=True, include_tables=True, fast=True) or "")
    out = TrafilaturaExtractor()(pa.RecordBatch.from_pydict({"id": ["b"], "url": [url], "html": [body]}))
    text = out.column("text")[0].as_py()
    assert "addEventListener" not in text and "function()" not in text and "var " not in text
    assert all(snippet in text for snippet in item["with"][:2])  # the recipe is still there


def test_c_class_lookup_gives_lxml_html_classes() -> None:
    from lxml import html as lxml_html
    from trafilatura import utils as tutils

    from refinery.stages._extract_helper import _install_c_class_lookup

    assert _install_c_class_lookup()
    probe = "<html><body><form><input><select></select><textarea></textarea><label>x</label></form><p>y</p></body></html>"
    stock = lxml_html.HTMLParser(collect_ids=False, default_doctype=False, encoding="utf-8", remove_comments=True,
                                 remove_pis=True)
    ours = [type(e) for e in lxml_html.fromstring(probe, parser=tutils.HTML_PARSER).iter()]
    assert ours == [type(e) for e in lxml_html.fromstring(probe, parser=stock).iter()]
    assert lxml_html.FormElement in ours and lxml_html.InputElement in ours


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_lean_path_gives_plain_trafilatura_text_on_real_pages(tmp_path: Path) -> None:
    """The lean cascade (C class lookup, settings built once, scripts/styles cut before parsing,
    memoised pruning, its XPaths as Python selections, no tree copies nobody reads) against plain ``trafilatura.extract``
    calls with lxml.html's stock parser and trafilatura's own XPaths, on real pages: a
    table-layout page, a page that takes the fallback, sample crawl pages, evaluation pages."""
    import logging

    from lxml import etree
    from trafilatura import core, main_extractor, xpaths
    from trafilatura import utils as tutils

    from refinery.stages import _extract_helper
    from refinery.stages._extract_helper import plain_trafilatura, strip_dropped_elements

    stage = TrafilaturaExtractor()
    config = {"backend": "trafilatura", "kwargs": stage._trafilatura_kwargs(), "fallback": stage._fallback_config(),
              "rules": stage._rules_config(), "log_level": logging.ERROR}
    lean = _extract_helper.make_extract(config)
    plain = _extract_helper.make_extract({**config, "lean": False})
    rows = load_eval_pages(tmp_path, (TABLE_PAGE, SHORT_PAGE))
    sample = load_warc_records()
    htmls = [decode_html(r[1], None)[0] for r in rows]
    urls = [r[0] for r in rows]
    for i in range(0, sample.num_rows, 12):  # every 12th sample WARC page with HTML
        body = sample.column("html")[i].as_py()
        if body and b"<html" in body[:2000].lower():
            htmls.append(decode_html(body, sample.column("content_type")[i].as_py())[0])
            urls.append(sample.column("url")[i].as_py())
    assert len(htmls) >= 6
    assert getattr(main_extractor.prune_unwanted_nodes, "_refinery", False)  # installed: the trafilatura it mirrors
    assert getattr(core._prepare_tree, "_refinery", False)
    assert getattr(tutils.repair_faulty_html, "_refinery", False)
    faster = xpaths.OVERALL_DISCARD_XPATH[1]
    assert not isinstance(faster, etree.XPath)  # the Python selections are installed
    paths = set()
    for html, url in zip(htmls, urls):
        with plain_trafilatura():  # lxml.html's own (Python) class lookup, trafilatura's pruning and XPaths
            assert isinstance(xpaths.OVERALL_DISCARD_XPATH[1], etree.XPath)
            assert not hasattr(core._prepare_tree, "_refinery")  # trafilatura's own copies
            assert not hasattr(tutils.repair_faulty_html, "_refinery")
            want = plain(html, url)
        assert lean(html, url) == want, url
        paths.add(want[1])
    assert xpaths.OVERALL_DISCARD_XPATH[1] is faster
    assert {"precision", "fallback"} <= paths
    # the pages really were cut before parsing (most bytes of real pages are scripts and styles)
    assert sum(len(strip_dropped_elements(h)) for h in htmls) < 0.9 * sum(map(len, htmls))


def test_invalid_xml_character_check_never_misses_one() -> None:
    """The check that lets the lean path skip trafilatura's ``INVALID_XML_CHARS`` deletion is false
    only for text without such a character: each of them alone and inside ASCII, Latin-1, Cyrillic,
    CJK and astral text (the Unicode string kinds), the allowed controls, a lone surrogate, and
    real pages (a few of which hold one)."""
    from trafilatura.utils import INVALID_XML_CHARS

    from refinery.stages._extract_helper import may_hold_invalid_xml_chars

    invalid = [chr(c) for c in [*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF]]
    assert all(INVALID_XML_CHARS.fullmatch(c) for c in invalid)  # the set trafilatura deletes
    texts = ["", "plain <p>text</p>\t\r\n", "café crème", "Привет, мир", "漢字とかな", "emoji 🙂 text",
             "lone \udc80 surrogate", "\ufffd replacement", "\ufeff bom", "\u0100\u0101\u010b\u010c", "\x7f\x85\x9f"]
    for base in texts:
        assert not may_hold_invalid_xml_chars(base), repr(base)
        for c in invalid:
            for text in (c + base, base + c, base[:2] + c + base[2:]):
                assert may_hold_invalid_xml_chars(text), repr(text)
    sample = load_warc_records()
    pages = [decode_html(b, None)[0] for b in sample.column("html").to_pylist() if b]
    assert len(pages) > 50
    for page in pages:
        assert may_hold_invalid_xml_chars(page) == (INVALID_XML_CHARS.search(page) is not None)


def test_lean_repair_is_trafilaturas_repair() -> None:
    """The lean ``repair_faulty_html`` gives trafilatura's result: pages with and without invalid
    characters, a doctype trafilatura rewrites, a self-closing ``<html/>``."""
    from trafilatura import utils as tutils

    from refinery.stages._extract_helper import _install_lean_repair, plain_trafilatura

    assert _install_lean_repair()
    lean = tutils.repair_faulty_html
    assert lean._refinery
    with plain_trafilatura():
        original = tutils.repair_faulty_html
    assert original is not lean and tutils.repair_faulty_html is lean
    pages = [
        "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0//EN\" \"http://www.w3.org/TR/xhtml1/DTD/x.dtd\">\n<html><p>a\x0cb</p>",
        "<html/>\n<body><p>x\x00y\ufffe</p></body>", "<html><body><p>клавиша\x1b</p></body></html>",
        "<html><body><p>clean ünïcode text</p></body></html>", "<!doctype html>\n<html>\n<p>ok</p>",
    ]
    sample = load_warc_records()
    pages += [decode_html(b, None)[0] for b in sample.column("html").to_pylist()[:40] if b]
    for page in pages:
        beginning = page[:50].lower()
        assert lean(page, beginning) == original(page, beginning)


def test_lean_justext_stoplist_is_trafilaturas_and_gives_its_paragraphs() -> None:
    """The justext fallback's stoplist built once as a frozenset is the set justext makes of
    trafilatura's union of every stoplist (its ``define_stoplist``), handed back as is; justext's
    paragraphs of real pages are the same with either."""
    from justext import core as justext_core
    from lxml import etree, html as lxml_html
    from trafilatura import external

    from refinery.stages._extract_helper import _install_lean_stoplists, plain_trafilatura

    assert _install_lean_stoplists()
    lean = external.jt_stoplist_init()
    assert isinstance(lean, frozenset) and external.JT_STOPLIST is lean
    assert justext_core.define_stoplist(lean) is lean  # no copy, no hash of 154k words per call
    with plain_trafilatura():
        assert not hasattr(justext_core.define_stoplist, "_refinery")
        shipped = external.jt_stoplist_init()
        assert isinstance(shipped, tuple) and justext_core.define_stoplist(shipped) == lean
    assert external.JT_STOPLIST is lean
    sample = load_warc_records()
    pages = [decode_html(b, None)[0] for b in sample.column("html").to_pylist()[:60] if b]
    texts = []
    for page in pages:
        tree = lxml_html.fromstring(page.encode())
        with plain_trafilatura():
            want = etree.tostring(external.try_justext(copy.deepcopy(tree), None, None))
        got = etree.tostring(external.try_justext(tree, None, None))
        assert got == want
        texts.append(got)
    assert sum(b"<p>" in t for t in texts) > 20  # justext kept paragraphs of most pages


def test_lean_prepare_copies_the_trees_only_where_trafilatura_reads_them_again() -> None:
    """The first pass (fast, precision, no comments) cleans the raw tree in place and keeps no
    backup; a pass that compares with readability/justext, rescues with the baseline or may
    escalate gets trafilatura's two copies (its raw tree and its backup stay untouched)."""
    from lxml import html as lxml_html
    from trafilatura import core
    from trafilatura.settings import Extractor

    from refinery.stages._extract_helper import _install_lean_prepare

    assert _install_lean_prepare()
    page = "<html><body><nav><a href='/'>Home</a></nav><div><p>" + "Some words here. " * 30 + "</p></div></body></html>"
    # settings -> (raw tree copied, backup kept)
    cases = {(("fast", True), ("precision", True), ("comments", False)): (False, False),  # the stage's first pass
             (("fast", True), ("precision", True), ("comments", True)): (False, True),  # forum path reads the backup
             (("fast", False), ("precision", True), ("comments", False)): (True, True),  # comparison reads both
             (("fast", True), ("recall", True), ("comments", False)): (True, False),  # baseline reads the raw tree
             (("fast", True), ("comments", False)): (True, False)}  # balanced: escalation reads it
    for settings, (raw_copied, backup_kept) in cases.items():
        options = Extractor(**dict(settings))
        tree = lxml_html.fromstring(page)
        cleaned, backup = core._prepare_tree(tree, options, None)
        want_cleaned, want_backup = core._prepare_tree._original(lxml_html.fromstring(page), options, None)
        assert lxml_html.tostring(cleaned) == lxml_html.tostring(want_cleaned), settings
        assert (tree.find(".//nav") is not None) is raw_copied, settings  # cleaning removes <nav>
        assert (backup is not None) is backup_kept, settings
        if backup_kept:
            assert lxml_html.tostring(backup) == lxml_html.tostring(want_backup), settings


def test_guarded_regex_tests_are_the_same_tests() -> None:
    """The guard is added only where the regex cannot match "" (an absent attribute is tested as
    ""), keeps the test itself, and a union of attributes is guarded as a whole."""
    from refinery.stages._extract_helper import _selects_elements, guard_regex_tests as guard

    assert guard("//*[re:test(@id, 'a|b')]") == "//*[((@id) and re:test(@id, 'a|b'))]"
    assert guard("//*[re:test(@id|@class, '^x', 'i') or @y]") == "//*[((@id|@class) and re:test(@id|@class, '^x', 'i')) or @y]"
    for matches_empty in ("a*", "^", "x?|y", "(?:a|)"):
        assert guard(f"//*[re:test(@id, '{matches_empty}')]") == f"//*[re:test(@id, '{matches_empty}')]"
    assert guard("//*[re:test(@id, '(unclosed')]") == "//*[re:test(@id, '(unclosed')]"  # left to lxml's error
    assert _selects_elements(".//*[re:test(@id, 'a')][1]") and _selects_elements("(.//*[@x])[1]|(.//main)[1]")
    for strings in ("//a/@href", "//p/text()", "string(//title)", "//*[@x]/attribute::y"):
        assert not _selects_elements(strings)



def _sample_html_trees() -> list:
    """The bundled sample WARCs' HTML pages, parsed with lxml.html (real trees for the lean path's checks)."""
    from lxml import html as lxml_html

    sample = load_warc_records()
    trees = []
    for i in range(sample.num_rows):
        body = sample.column("html")[i].as_py()
        if body and b"<html" in body[:2000].lower():
            trees.append(lxml_html.fromstring(decode_html(body, sample.column("content_type")[i].as_py())[0]))
    return trees

def test_faster_xpaths_select_the_same_elements_on_real_pages() -> None:
    """Every XPath of trafilatura's that the lean path replaces (by a Python function, or guarded)
    selects the same elements, in the same order, as the original on real crawl pages, both on
    the raw page trees and on subtrees (trafilatura also runs them on the article it found)."""
    from lxml import etree

    from refinery.stages import _extract_helper

    assert _extract_helper._install_faster_xpaths()
    replaced = _extract_helper._REPLACED_XPATHS
    functions = [new for _, _, _, new in replaced if not isinstance(new, etree.XPath)]
    guarded = [new for _, _, _, new in replaced if isinstance(new, etree.XPath)]
    assert len(functions) >= 20  # all its extraction's XPaths but BODY_XPATH's last (a positional union)
    assert all(") and re:test(" in new.path for new in guarded)  # the metadata XPaths (absolute paths)
    trees = _sample_html_trees()
    assert len(trees) >= 20
    selected = 0
    for tree in trees:
        subtrees = [e for e in tree.iterdescendants("div", "article", "main") if len(e) >= 3][:3]
        for root in (tree, *subtrees):
            for _, _, original, new in replaced:
                if root is tree or new in functions:
                    want = original(root)
                    assert new(root) == want, original.path
                    selected += len(want)
    assert selected > 1000  # the tests really selected elements


def test_xpath_to_python_mirrors_lxml_on_the_subset() -> None:
    """The translation's semantics, each against lxml on a hand-made page: a union's string is
    its first attribute in the element's order, ``=`` on a union is any, a step's ``[1]`` is the
    first match per parent, ``(...)[1]`` the first overall, translate, not(.//h1), case-insensitive
    regexes, a missing attribute as ""; anything else is refused."""
    from lxml import etree, html as lxml_html

    from refinery.stages._xpath_to_python import Unsupported, compile_xpath

    page = lxml_html.fromstring(
        "<html><body><div class='reply-x' id='zzz'><p id='a'>1</p><p>2</p><p id='b'>3</p></div>"
        "<div id='reply-y' class='q' role='Navigation'><h1>t</h1><ul><li class='Teaser'>4</li></ul></div>"
        "<section class='MainContent post'><p class=''>5</p></section><!-- c --><main>6</main></body></html>")
    ns = {"re": "http://exslt.org/regular-expressions"}
    paths = [
        ".//*[starts-with(@id|@class, 'reply-')]", ".//*[re:test(@class|@id, '^reply-')]",
        ".//*[@id|@class = 'q']", ".//p[@id][1]", ".//*[self::p or self::li][1]", "(.//p[@id])[1]",
        "(.//*[self::div or self::section][not(.//h1)])[1]", ".//*[contains(translate(@class, 'MCT', 'mc'), 'maincon')]",
        ".//*[contains(translate(@role, 'N', 'n'), 'nav')]", ".//*[re:test(@class, 'teaser', 'i')]",
        ".//*[re:test(@class, '^$')]", ".//p[@class or @id = 'b']", ".//cite|.//li|.//main",
        ".//*[self::div][not(self::ol or self::ul) and (@role or @id='zzz')]", ".//*[contains(@class, '')]",
        # elements without the tested attributes are skipped only where the test must be false
        ".//*[not(@id) and re:test(@class, 'q|post')]", ".//p[@class = '']", ".//*[@id or not(@class)]",
        ".//*[@id|@class = 'q' or self::main]", ".//p[@id]|.//main", ".//*[not(re:test(@class, 'x'))]",
        ".//*[starts-with(@id, '')]", ".//*[re:test(@id|@role, 'y|N')][re:test(@class, 'q|^r')]",
    ]
    for path in paths:
        want = etree.XPath(path, namespaces=ns)(page)
        assert compile_xpath(path)(page) == want, path
        assert want or path.endswith("'^$')]"), path  # each selects something (but the empty-regex case)
    for unsupported in ("//p", ".//p[2]", ".//p/text()", ".//p[@id > 3]", "(.//p)[1]|(.//li)[1]",
                        ".//*[local-name()='p']", ".//p[re:test(@id, '(')]"):
        with pytest.raises(Unsupported):
            compile_xpath(unsupported)


def test_fused_selections_mirror_lxml_on_real_pages_and_edge_cases() -> None:
    """``compile_selections`` gives each path's elements, in order, as lxml's XPath of that path,
    from one walk: trafilatura's pruning lists on real crawl pages and their subtrees, and hand-made
    lists for its code paths (a path over every element with tag-filtered ones, paths sharing only
    some attributes, gated and ungated paths, unions of tags, descendants tests); positions are refused."""
    from lxml import etree, html as lxml_html
    from trafilatura import xpaths

    from refinery.stages._xpath_to_python import Unsupported, compile_selections

    ns = {"re": "http://exslt.org/regular-expressions"}
    page = lxml_html.fromstring(
        "<html><body><div class='reply-x' id='zzz'><p id='a'>1</p><p>2</p><p id='b' style='x'>3</p></div>"
        "<div id='reply-y' class='q' role='Navigation'><h1>t</h1><ul class='comment-1'><li class='Teaser'>4</li></ul></div>"
        "<section class='MainContent post'><p class=''>5</p></section><!-- c --><main>6</main><ol id='c'></ol></body></html>")
    edge_cases = [
        [".//*[@id]", ".//p[@class or @id = 'b']", ".//div[re:test(@class, '^reply')]"],
        [".//p[@style]", ".//*[self::div or self::ul][not(@id) and re:test(@class, 'q|comment')]"],
        [".//*[self::div or self::section][not(.//h1)]", ".//cite|.//li|.//main", ".//*[@id or not(@class)]"],
        [".//ul[re:test(@class, 'comment')]", ".//ol[@id]|.//div[@id|@class = 'q']", ".//*[not(re:test(@class, 'x'))]"],
    ]
    lists = [[x.path for x in xpaths.RAW_TREE_PRUNE_XPATH + xpaths.REMOVE_COMMENTS_AND_LISTS_XPATH],
             [x.path for x in xpaths.OVERALL_DISCARD_XPATH], [x.path for x in xpaths.PRECISION_DISCARD_XPATH]]
    for paths in edge_cases:
        want = [etree.XPath(p, namespaces=ns)(page) for p in paths]
        assert compile_selections(paths)(page) == want, paths
        assert all(want), paths
    assert compile_selections(edge_cases[2]).structural == (True, False, False)
    sample = load_warc_records()
    selected = 0
    for i in range(sample.num_rows):
        body = sample.column("html")[i].as_py()
        if not body or b"<html" not in body[:2000].lower():
            continue
        tree = lxml_html.fromstring(decode_html(body, sample.column("content_type")[i].as_py())[0])
        for root in (tree, *[e for e in tree.iterdescendants("div", "article", "main") if len(e) >= 3][:3]):
            for paths in lists:
                want = [etree.XPath(p, namespaces=ns)(root) for p in paths]
                assert compile_selections(paths)(root) == want, paths
                selected += sum(map(len, want))
    assert selected > 1000
    for positional in ([".//p[@id][1]", ".//p[@class]"], ["(.//p[@id])[1]", ".//li[@class]"]):
        with pytest.raises(Unsupported):
            compile_selections(positional)


def test_lean_raw_tree_pruning_matches_trafilatura() -> None:
    """The lean path prunes the raw tree as trafilatura does (RAW_TREE_PRUNE_XPATH, then
    REMOVE_COMMENTS_AND_LISTS_XPATH) on real pages: the elements both lists select in one walk,
    deleted list by list, leave the tree trafilatura's two calls leave (the second list's matches
    inside subtrees the first deleted change only those detached subtrees); and
    ``trafilatura_sequence``, which makes those two calls, gives trafilatura's text."""
    import copy

    from lxml import etree, html as lxml_html
    from trafilatura import core, htmlprocessing
    from trafilatura.settings import Extractor

    from refinery.stages import _extract_helper

    assert _extract_helper._install_fast_prune() and _extract_helper._install_faster_xpaths()
    assert getattr(core.prune_unwanted_nodes, "_refinery", False)
    plain, delete_element = htmlprocessing.prune_unwanted_nodes, htmlprocessing.delete_element
    raw, comments = core.RAW_TREE_PRUNE_XPATH, core.REMOVE_COMMENTS_AND_LISTS_XPATH
    fused = _extract_helper._fused(raw + comments)
    assert fused is not None and not any(fused.structural[1:])
    trees = _sample_html_trees()
    probe = lxml_html.fromstring(
        "<html><body><div id='infinite-scroll'><ul class='comment-list'><li>c</li></ul>x</div>tail"
        "<div class='comments'>d</div><ol id='comment-3'><li>e</li></ol><aside class='elementor-share-buttons'>"
        "<div class='comment-x'>f</div></aside><p>g</p></body></html>")
    changed = 0
    options = Extractor(precision=True, tables=True, comments=False)
    options.fast = True
    for tree in (probe, *trees):
        want, got = copy.deepcopy(tree), copy.deepcopy(tree)
        plain(plain(want, raw), comments)
        for subtrees in fused(got):
            for subtree in subtrees:
                delete_element(subtree)
        assert etree.tostring(got) == etree.tostring(want)
        changed += etree.tostring(got) != etree.tostring(tree)
        lean_text = core.trafilatura_sequence(copy.deepcopy(tree), options, None)[1]
        with _extract_helper.plain_trafilatura():
            assert core.trafilatura_sequence(copy.deepcopy(tree), options, None)[1] == lean_text
    assert changed >= 3  # the prunes really deleted elements


def test_lean_raw_tree_pruning_keeps_matches_for_trafilatura_sequence_only() -> None:
    """The comment lists' matches selected with the raw-tree pruning serve only the next call of
    that same ``trafilatura_sequence`` run (nothing changes the tree between its two calls). A
    caller that changes the tree between two calls of its own (an attribute dropped) gets what
    trafilatura's function deletes, not matches selected before the change; and the sequence
    itself still prunes both lists as trafilatura does."""
    from lxml import etree, html as lxml_html
    from trafilatura import core, htmlprocessing
    from trafilatura.settings import Extractor

    from refinery.stages import _extract_helper

    assert _extract_helper._install_fast_prune() and _extract_helper._install_faster_xpaths()
    lean, plain = core.prune_unwanted_nodes, htmlprocessing.prune_unwanted_nodes
    raw, comments = core.RAW_TREE_PRUNE_XPATH, core.REMOVE_COMMENTS_AND_LISTS_XPATH
    page = ("<html><body><div id='infinite-scroll'><p>more</p></div><article><h1>Title</h1><p>"
            + "Body text of the article, long enough to be kept. " * 8
            + "</p></article><div class='comments'>a reader's comment</div><ul id='comment-list'>"
            "<li>another one</li></ul></body></html>")
    for tree_of in (lambda: lxml_html.fromstring(page), lambda: lxml_html.fromstring(page).find("body")):
        got, want = tree_of(), tree_of()
        for prune in (lean, plain):
            tree = got if prune is lean else want
            prune(tree, raw)
            tree.find(".//div[@class='comments']").attrib.pop("class")  # no longer a comment box
            prune(tree, comments)
        assert etree.tostring(got) == etree.tostring(want)
        assert "a reader's comment" in etree.tostring(got, encoding=str)
    for comments in (False, True):  # off: the second call deletes the kept matches; on: none
        options = Extractor(precision=True, tables=True, comments=comments)
        options.fast = True
        sequence_lean = core.trafilatura_sequence(lxml_html.fromstring(page), options, None)
        with _extract_helper.plain_trafilatura():
            sequence_plain = core.trafilatura_sequence(lxml_html.fromstring(page), options, None)
        assert (sequence_lean[1], sequence_lean[3]) == (sequence_plain[1], sequence_plain[3])
        assert "Body text" in sequence_lean[1] and "comment" not in sequence_lean[1] and "more" not in sequence_lean[1]


def test_lean_pruning_remembers_no_callers_xpaths() -> None:
    """XPath lists a caller builds per call (trafilatura's ``prune_xpath``) are pruned as
    trafilatura does and not remembered: only the lean path's own selections are, or memory grows
    with every page."""
    from lxml import etree, html as lxml_html
    from trafilatura import core, htmlprocessing

    from refinery.stages import _extract_helper

    assert _extract_helper._install_fast_prune()
    page = "<html><body><div class='x'><p id='a'>1</p></div><p>2</p><p class='y'>3</p></body></html>"
    core.prune_unwanted_nodes(lxml_html.fromstring(page), [etree.XPath(".//p[@id]"), etree.XPath(".//p[@class]")])
    remembered = len(_extract_helper._FUSED)
    for _ in range(20):
        paths = [etree.XPath(".//p[@id]"), etree.XPath(".//div[@class]")]
        got = core.prune_unwanted_nodes(lxml_html.fromstring(page), paths)
        want = htmlprocessing.prune_unwanted_nodes(lxml_html.fromstring(page), paths)
        assert etree.tostring(got) == etree.tostring(want)
    assert len(_extract_helper._FUSED) == remembered


def test_regex_memo_answers_as_the_regex_and_stays_bounded() -> None:
    """The remembered regex tests give ``search(...) is not None`` for every value, first time
    and again; long values are not kept, and the memo empties itself at its entry limit."""
    import re

    from refinery.stages._xpath_to_python import _RegexMemo

    regex = re.compile("^hide-|comments-title| hidden|akismet")
    memo = _RegexMemo(regex)
    values = ["hide-x", "x hide-", "post comments-title", "a hidden", "hidden", "", "AKISMET", "akismet-1",
              "x" * 300 + " hidden", "y" * 300]
    for _ in range(2):
        assert [memo[v] for v in values] == [regex.search(v) is not None for v in values]
    assert len(memo) == len(values) - 2  # the two long values were searched, not kept
    limit = _RegexMemo.MAX_ENTRIES
    for k in range(limit + 10):
        memo[f"v{k}"]
    assert len(memo) <= limit


def test_outer_matches_are_the_matches_without_a_matched_ancestor() -> None:
    """The memoised outermost-match walk against trafilatura's any(ancestor in matches) rule, on
    a real page's elements picked at random (nested picks included)."""
    from lxml import html as lxml_html

    from refinery.stages._extract_helper import _outer_matches

    body = load_warc_records().column("html")[3].as_py()
    tree = lxml_html.fromstring(decode_html(body, None)[0])
    elements = list(tree.iter())
    rng = random.Random(1)
    for k in (1, 5, 40, len(elements) // 3):
        matches = dict.fromkeys(rng.sample(elements, min(k, len(elements))))
        want = [e for e in matches if not any(a in matches for a in e.iterancestors())]
        assert _outer_matches(matches) == want


def test_bad_char_count_matches_the_regex() -> None:
    from refinery.stages.extract import _BAD_CHARS, _bad_chars

    rng = random.Random(0)
    alphabet = "ab \t\n\r\x0b\x0c\x00\x01\x08\x0e\x1f\x7f\x80\ufffdé€😀\ud800"
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert _bad_chars(s) == len(_BAD_CHARS.findall(s)), repr(s)


def test_bad_char_count_of_bytes_is_its_definition() -> None:
    # bad_chars_utf8 counts with numpy and skips the U+FFFD search when no byte 0xEF is there: the
    # same counts as the byte-level definition on every byte value, on U+FFFD cut short or next to
    # other 0xEF characters, and on real pages (prescreen's check reads not-yet-decoded bytes)
    from refinery.stages.extract import REPLACEMENT_UTF8, bad_chars_utf8

    c0 = set(range(0x00, 0x09)) | set(range(0x0E, 0x20))

    def definition(raw: bytes) -> int:
        return sum(b in c0 for b in raw) + raw.count(REPLACEMENT_UTF8)

    assert bad_chars_utf8(bytes(range(256))) == definition(bytes(range(256))) == 27
    rng = random.Random(0)
    pieces = [b"a", b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c", b"\x00", b"\x08", b"\x0e", b"\x1f", b"\x20",
              b"\x7f", b"\xef", b"\xef\xbf", REPLACEMENT_UTF8, "\uffef".encode(), "\ufeff".encode(), "é".encode()]
    for _ in range(3000):
        raw = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        assert bad_chars_utf8(raw) == definition(raw), raw
    pages = [p for p in load_warc_records().column("html").to_pylist() if p]
    assert len(pages) >= 80 and sum(b"\xef" in p for p in pages) >= 10
    assert [bad_chars_utf8(p) for p in pages] == [definition(p) for p in pages]


def test_warm_up_starts_one_helper_that_the_first_page_uses() -> None:
    # the helper's imports overlap the work before extract: warm_up starts it without waiting,
    # once per pool key, and the stage's first page is extracted by that same process
    from refinery.stages.extract import _HELPERS

    stage = TrafilaturaExtractor()
    key = stage._helper_key()
    with _HELPERS.lock:  # helpers other tests left idle for the same settings
        left = _HELPERS.idle.pop(key, [])
    for helper in left:
        helper.close()
    text_only = pa.schema([("id", pa.string()), ("text", pa.string())])
    stage.warm_up(text_only)  # text input is passed through: no helper
    assert not [h for h in _HELPERS.idle.get(key, []) if h.alive]
    stage.warm_up(DOCUMENT_SCHEMA)
    stage.warm_up(DOCUMENT_SCHEMA)
    idle = [h for h in _HELPERS.idle.get(key, []) if h.alive]
    assert len(idle) == 1 and not idle[0].ready  # started, not waited for
    pid = idle[0].proc.pid
    warm(stage)
    assert [h.proc.pid for h in _HELPERS.idle[key] if h.alive] == [pid]
    assert TrafilaturaExtractor(timeout_s=0).warm_up(DOCUMENT_SCHEMA) is None  # in-process: nothing to start


def test_runner_warms_stages_up_before_stages_see_the_first_batch_and_not_for_finished_shards(tmp_path: Path, monkeypatch) -> None:
    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline

    events: list[str] = []
    monkeypatch.setattr(TrafilaturaExtractor, "warm_up", lambda self, schema: events.append("warm_up"))
    process = TrafilaturaExtractor.process
    monkeypatch.setattr(TrafilaturaExtractor, "process", lambda self, b: events.append("process") or process(self, b))
    src = tmp_path / "in"
    src.mkdir()
    warc = sorted(SAMPLE_WARCS.glob("*.warc.gz"))[0]
    (src / warc.name).write_bytes(warc.read_bytes())
    config = parse_config({"name": "t", "stages": [{"type": "extract"}]})
    run_pipeline(config, str(src), str(tmp_path / "out"), workers=1, progress=False)
    assert events[0] == "warm_up" and events.count("warm_up") == 1 and "process" in events
    events.clear()
    run_pipeline(config, str(src), str(tmp_path / "out"), workers=1, progress=False)  # finished: skipped
    assert events == []


def test_text_only_input_starts_no_helper(tmp_path: Path, monkeypatch) -> None:
    # Parquet/JSONL documents that already have text are passed through by extract: warm_up sees
    # the first batch's columns (no html) and starts nothing; WARC shards warm up before reading
    import pyarrow.parquet as pq

    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline
    from refinery.stages import extract as extract_mod

    starts: list[str] = []
    monkeypatch.setattr(extract_mod._HELPERS, "start_idle", lambda key: starts.append(key))
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "text": [PROSE, PROSE]}), src / "docs.parquet")
    config = parse_config({"name": "t", "stages": [{"type": "extract"}]})
    run_pipeline(config, str(src), str(tmp_path / "out"), workers=1, progress=False)
    assert starts == []
    warc = sorted(SAMPLE_WARCS.glob("*.warc.gz"))[0]
    (tmp_path / "warc").mkdir()
    (tmp_path / "warc" / warc.name).write_bytes(warc.read_bytes())
    run_pipeline(config, str(tmp_path / "warc"), str(tmp_path / "out2"), workers=1, progress=False)
    assert len(starts) == 1


def test_fallback_keeps_first_puts_the_first_pass_lines_it_lacks_before_it():
    """Opt-in (``fallback_keeps_first``): a Q&A page's first pass found the question (short, so the
    fallback ran), the fallback one answer of six, and the question was lost (found by adversarial
    testing on german.stackexchange). Off by default: on the evaluation set it finds 93.52% of
    the wanted snippets (93.28%) but leaks 7.20% (7.06%), above trafilatura's 7.09%."""
    from refinery.stages import _extract_helper

    question = "Wann benutzt man werden als Vollverb?\nIch verstehe den Unterschied zwischen den Formen nicht."
    answer = "While werden has the meaning become, it is also used for the future.\n" * 4
    assert _extract_helper._with_first_lines(question, answer) == question + "\n" + answer
    longer = question + "\n" + answer  # the fallback holds the first pass's text: kept as it is
    assert _extract_helper._with_first_lines(question, longer) == longer
    html = ("<html><body><div class='q'><p>" + "Short question here? " * 3 + "</p></div>"
            + "".join(f"<div class='comment'><p>{'A long answer sentence with many words in it. ' * 8}</p></div>"
                      for _ in range(3)) + "</body></html>")
    for keeps in (False, True):
        stage = TrafilaturaExtractor(fallback_keeps_first=keeps)
        assert stage._fallback_config()["keeps_first"] is keeps
        extract = _extract_helper.make_extract({"backend": "trafilatura", "kwargs": stage._trafilatura_kwargs(),
                                                "fallback": stage._fallback_config(), "rules": stage._rules_config()})
        text, path = extract(html, None)
        assert text  # the cascade runs with either setting


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_a_recipe_card_pruned_by_precision_mode_comes_back(tmp_path: Path) -> None:
    """Found by adversarial testing: precision mode pruned recipe cards, and the blog prose around
    them was long enough that the fallback never ran: 5 of the 13 recipe pages of the evaluation
    set lost every ingredient or every step. A page declaring a schema.org Recipe whose text lacks
    most of its ingredients and steps gets the fallback's lines holding them."""
    from refinery.stages import _extract_helper

    rows = load_eval_pages(tmp_path, ("foxyfolksy.com.buttercream.html", "elavegan.com-Peanut.html"))
    batch = make_batch([r[1] for r in rows], [None, None], [r[0] for r in rows])
    found = []
    for cards in (False, True):
        out = TrafilaturaExtractor(recipe_cards=cards, timeout_s=0)(batch)
        check(out, batch)
        texts = out.column("text").to_pylist()
        counts = []
        for (url, body, _), text in zip(rows, texts):
            items = _extract_helper.recipe_items(decode_html(body, None)[0])[:7]  # the ingredients
            counts.append(sum(item in _extract_helper._words(text) for item in items))
        found.append(counts)
    assert found[0] == [0, 0] and found[1][0] == 7 and found[1][1] >= 4
    # steps only balanced mode finds (backen.de: 0 of 17 in recall mode): the next source
    [(url, body, _)] = load_eval_pages(tmp_path, ("backen.de.maulwurfkuchen.html",))
    steps = _extract_helper.recipe_items(decode_html(body, None)[0])[-17:]
    batch = make_batch([body], [None], [url])
    counts = [sum(step in _extract_helper._words(TrafilaturaExtractor(recipe_cards=cards, timeout_s=0)(batch)
                                                  .column("text")[0].as_py()) for step in steps)
              for cards in (False, True)]
    assert counts[0] == 0 and counts[1] >= 12
    assert _extract_helper.recipe_items('<html><p>A page about the word "Recipe".</p></html>') == []


def test_recipe_lines_already_in_the_text_are_not_added_again() -> None:
    """Found by session 45's census (h143): nestle-family.com's balanced text holds its steps twice,
    numbered "1" ... "5" on lines of their own, and the recipe rescue appended both copies (a number
    and its step went in as a pair, past the check for lines already there), so
    ``gopher_repetition`` removed the page. An amount repeated over a new ingredient still goes in."""
    from refinery.stages import _extract_helper

    steps = ["Roast the chicken in a 200°C preheated oven for 45-50 minutes or until chicken is cooked.",
             "Meanwhile, heat oil in a large saucepan, add and cook onions with occasional stirring.",
             "Add minced lamb and cook until meat is brown in color, then add spices and stock cubes."]
    recipe = {"@context": "https://schema.org", "@type": "Recipe", "name": "Roasted Chicken",
              "recipeIngredient": ["2 tbsp vegetable oil", "2 tbsp ground cinnamon", "1 medium onion"],
              "recipeInstructions": [{"@type": "HowToStep", "text": s} for s in steps]}
    page = f'<html><head><script type="application/ld+json">{json.dumps(recipe)}</script></head><body></body></html>'
    items = _extract_helper.recipe_items(page)
    first = "Roasted Chicken with Oriental Rice\n- 2 tbsp\n- 1 medium onion\nA family favourite for Sundays."
    numbered = "\n".join(f"{n}\n{s}" for n, s in enumerate(steps, 1))
    balanced = (f"Kindly Login or Register to save this recipe.\n- 2 tbsp\nvegetable oil\n- 2 tbsp\nground cinnamon\n"
                f"{numbered}\nDon't forget to save this recipe.\n{numbered}\n- 1 medium onion")
    text = _extract_helper._with_recipe_lines(first, items, lambda: first, lambda: balanced)
    lines = text.split("\n")
    assert all(lines.count(step) == 1 for step in steps) and all(lines.count(str(n)) == 1 for n in (1, 2, 3))
    assert lines.count("- 1 medium onion") == 1  # in the first text already
    assert "- 2 tbsp\nvegetable oil\n- 2 tbsp\nground cinnamon" in text  # an amount goes with its new ingredient
    assert all(item in _extract_helper._words(text) for item in items)


def _extract_texts(fragments: list[str], **params) -> list[str]:
    filler = "<p>" + "A sentence of filler prose that is long enough to count as content here. " * 20 + "</p>"
    pages = [f"<html><body><article><h1>Title</h1>{f}{filler}</article></body></html>".encode() for f in fragments]
    out = TrafilaturaExtractor(timeout_s=0, **params)(make_batch(pages, [None] * len(pages), ["http://a.example/"] * len(pages)))
    return [t.split("\nA sentence of filler")[0].removeprefix("Title\n") for t in out.column("text").to_pylist()]


def test_source_line_breaks_inside_paragraphs_are_spaces() -> None:
    """A paragraph the page's source wraps after a link or inline code came out as lines ending
    mid-sentence, whose lone last words line-wise corrections cut ("...the string type in" /
    "Mercurial."): the source's line breaks are spaces, as a browser shows them; a <br> and code
    blocks keep theirs, and no line starts or ends with the space of a joined break."""
    fragments = [
        "<p>We never used the <code>str</code> type in\nMercurial.</p>",
        "<p>Read the <a href='/guide'>guide</a> and\n   then the\n   FAQ.</p>",
        "<p>first line<br>second\nline</p>",
        "<pre><code>def f():\n    return 1</code></pre>",
        "<pre>roses are red\nviolets are blue</pre>",
        "<ul><li>an <b>item</b>\ncontinued</li></ul>",
        "<p>\n  Lead <a href='/y'>link</a>\n  tail\n</p>",
        "<p>第一行<br>这是中文\n文字，浏览器不会显示空格。</p>",  # CJK: a break between two characters is removed
    ]
    joined = _extract_texts(fragments)
    assert joined[0] == "We never used the str type in Mercurial."
    assert joined[1] == "Read the guide and then the FAQ."
    assert joined[2] == "first line\nsecond line"
    assert joined[3] == "def f():\n    return 1"  # code keeps its lines and indentation
    assert joined[4] == "roses are red\nviolets are blue"  # a <pre> that is not code too
    assert joined[5] == "- an item continued"
    assert joined[6] == "Lead link tail"
    assert joined[7] == "第一行\n这是中文文字，浏览器不会显示空格。"
    # trafilatura as it was: the breaks stay (join_source_lines: false, as in REFINEDWEB_PARAMS)
    plain = _extract_texts([fragments[0], fragments[2]], join_source_lines=False)
    assert plain == ["We never used the str type in\nMercurial.", "first line\nsecond\nline"]
    assert REFINEDWEB_PARAMS["join_source_lines"] is False


def test_blockquotes_are_joined_and_source_indentation_goes() -> None:
    """Trafilatura makes both a <blockquote> and a <pre> a ``quote``, whose text kept the source's
    line breaks: a blockquote wrapped at 80 columns came out in broken lines. It is joined like a
    paragraph now; a <pre> keeps its lines and indentation. A heading's or
    paragraph's text that trafilatura keeps whole lost no indentation of the source ("  1  Über",
    a blockquote's "\\n  " before its paragraph); a nested list's indentation is trafilatura's
    own and stays."""
    fragments = [
        "<blockquote>A quoted sentence the source wraps\n   at eighty columns, as editors\n   do.</blockquote>",
        "<blockquote>\n  <p>„Dieses Buch ist das Standardwerk.“ – padeluun</p></blockquote>",
        "<pre>roses are red,\n   violets are blue</pre>",
        "<h3>  <div class='number'>1</div>  Über die Baumwipfel</h3>",
        "<ul><li>one<ul><li>nested\n item</li></ul></li><li>two</li></ul>",
    ]
    joined = _extract_texts(fragments)
    assert joined[0] == "A quoted sentence the source wraps at eighty columns, as editors do."
    assert joined[1] == "„Dieses Buch ist das Standardwerk.“ – padeluun"
    assert joined[2] == "roses are red,\n   violets are blue"
    assert joined[3].startswith("1  Über die Baumwipfel")
    assert joined[4] == "- one\n  - nested item\n- two"


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_a_wrapped_real_paragraph_keeps_its_last_word_through_line_corrections(tmp_path: Path) -> None:
    from refinery.stages.line_corrections import LineCorrections

    (url, html, _), = load_eval_pages(tmp_path, ("gregoryszorc.com.python3.html",))
    batch = make_batch([html], [None], [url])
    for join, lone in ((False, True), (True, False)):
        text = TrafilaturaExtractor(timeout_s=0, join_source_lines=join)(batch).column("text")[0].as_py()
        corrected, _, _ = LineCorrections().correct(text)
        assert ("Unicode-based string type in Mercurial." in corrected) is not lone
        assert ("\nMercurial.\n" in text) is lone


@pytest.mark.skipif(not EVAL_TARBALL.is_file(), reason="shared/ evaluation data not present")
def test_a_fallback_text_loses_the_source_indentation_and_keeps_its_lines(tmp_path: Path) -> None:
    """The fallback's lines are not joined (its text is at times a page's blocks in one node), but
    the source's indentation after their breaks goes ("\\t\\tHalo" on a clan's news page), in a
    blockquote too (marked as when joining: a stackexchange answer's quote), and a run of spaces
    with a no-break space is one space ("3. Platz \\u00a0\\u00a0AaS"; a lone one stays)."""
    rows = load_eval_pages(tmp_path, ("archive.org.dzs-clan.de.html", "german.stackexchange.com.ausgeraubt.html"))
    batch = make_batch([r[1] for r in rows], [None, None], [r[0] for r in rows])
    texts = {}
    for join in (True, False):
        out = TrafilaturaExtractor(timeout_s=0, join_source_lines=join)(batch)
        assert out.column("extract_path").to_pylist() == ["fallback", "fallback"]
        texts[join] = out.column("text").to_pylist()
    (clan, answer), (plain_clan, plain_answer) = texts[True], texts[False]  # plain: join_source_lines false
    assert "\n\t\tHalo\n" in plain_clan and "\n\t3. Platz \u00a0\u00a0AaS\n" in plain_clan
    assert "\nHalo\n" in clan and "\n3. Platz AaS\n" in clan and "))))\u00a0konnte" in clan
    assert "\n  Ich werde rot," in plain_answer and "\nIch werde rot," in answer
    for text, plain in zip(texts[True], texts[False]):
        assert not re.search(r"^[ \t]", text, re.M) and not re.search("(?=[ \t]*\u00a0)[ \t\u00a0]{2,}", text)
        assert re.sub(r"\s", "", text) == re.sub(r"\s", "", plain)  # only whitespace changed


def test_idle_helper_exits_at_once_on_close() -> None:
    # the socket closed (the pool's close, the parent's exit): the helper ends without its
    # interpreter's teardown, which the parent's close() waited ~0.1 s for; exit code 0, as before
    from refinery.stages.extract import _HELPERS

    stage = TrafilaturaExtractor()
    key = stage._helper_key()
    helper = _HELPERS.acquire(key)
    helper.wait_ready()
    assert helper.extract("<html><body><p>" + "A sentence of a page. " * 20 + "</p></body></html>", None, 30.0)[0] == "ok"
    t0 = time.perf_counter()
    helper.close()
    assert helper.proc.returncode == 0
    assert time.perf_counter() - t0 < 1.0


def test_a_helper_closed_before_it_is_ready_exits_without_a_traceback(capfd) -> None:
    # a run whose shards hold no page closes the warm-up helper while it is still importing:
    # its "ready" then met a closed socket and printed a BrokenPipeError traceback (empty input dir)
    from refinery.stages.extract import _Helper

    helper = _Helper(json.loads(TrafilaturaExtractor()._helper_key()))
    helper.close()
    assert helper.proc.poll() is not None
    assert "Traceback" not in capfd.readouterr().err


def test_plain_trafilatura_keeps_its_own_stoplist_across_blocks() -> None:
    """The plain side of an A/B is trafilatura as one process runs it: its stoplist union is built
    once, not on every block (which made each plain page reaching justext pay ~75 ms and inflated
    the lean path's measured speed-up)."""
    from trafilatura import external

    from refinery.stages._extract_helper import _install_lean_stoplists, plain_trafilatura

    assert _install_lean_stoplists()
    lean = external.jt_stoplist_init()
    with plain_trafilatura():
        first = external.JT_STOPLIST or external.jt_stoplist_init()
    assert external.JT_STOPLIST is lean
    with plain_trafilatura():
        assert external.JT_STOPLIST is first and isinstance(first, tuple)
    assert external.JT_STOPLIST is lean


def test_lean_justext_stoplist_keeps_trafilaturas_reset_caches() -> None:
    """trafilatura.meta imports justext's define_stoplist and its reset_caches() calls
    ``define_stoplist.cache_clear()``: imported after the lean stoplist is in place (a program that
    extracts, then frees trafilatura's caches), it gets the lean function, which must answer it."""
    import importlib

    from justext import core as justext_core

    from refinery.stages._extract_helper import _install_lean_stoplists

    assert _install_lean_stoplists()
    import trafilatura.meta

    meta = importlib.reload(trafilatura.meta)  # as a first import after the install binds it
    assert meta.define_stoplist is justext_core.define_stoplist
    meta.reset_caches()
    assert justext_core.define_stoplist.cache_info().currsize == 0
