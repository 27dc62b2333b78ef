"""TrafilaturaExtractor (both backends) on real WARC records and trafilatura's own evaluation pages."""

from __future__ import annotations

import gzip
import json
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
    TrafilaturaExtractor,
    clean_text,
    decode_html,
)
from refinery.stages.registry import stage_class

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_WARCS = ROOT / "data" / "sample" / "warc"
EVAL_TARBALL = ROOT.parent / "shared" / "data" / "extraction" / "trafilatura_eval_e90b0ef.tar.gz"
REASONS = {
    "html_too_large", "extraction_timeout", "extraction_failed", "no_text_extracted", "empty_html", "undecodable",
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
    t0 = time.perf_counter()
    out = stage(batch)
    elapsed = time.perf_counter() - t0
    reasons = check(out, batch)
    kept = [t for t in out.column("text").to_pylist() if t]
    # measured: 80 of 84 kept; the others are empty shop pages (no_text_extracted)
    assert len(kept) >= 0.85 * batch.num_rows
    assert set(reasons) <= {None, "no_text_extracted"}
    assert any("Creative Commons" in t for t in kept)
    assert any("Стратегия пожарной безопасности" in t for t in kept)  # windows-1251 page
    assert batch.num_rows / elapsed > 10  # docs/s; measured ~65 on 2 cores


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
    # measured on this subset: 87% of "with" snippets found, 6% of "without" snippets leaked
    # (on all 990 pages: 90% / 7%)
    assert found > 0.78
    assert leaked < 0.12


def test_timeout_on_pathological_page() -> None:
    # 20k nested-ish blocks: ~1.2 MB, well below max_html_bytes, takes trafilatura > 1 s
    body = "".join(f"<div class='c{i}'><p>{PROSE}</p><span>{i}</span></div>" for i in range(5000))
    html = page(body).encode()
    assert len(html) < 2_000_000
    batch = make_batch([html, page(f"<p>{PROSE}</p>").encode()])
    stage = TrafilaturaExtractor(timeout_s=0.05)
    t0 = time.perf_counter()
    out = stage(batch)
    assert time.perf_counter() - t0 < 2.0
    reasons = check(out, batch)
    assert reasons[0] == "extraction_timeout"
    assert 0.04 < out.column(METRIC)[0].as_py() < 1.0
    # the small page after it still gets its full time budget
    assert reasons[1] is None
    # no timer left armed, handler restored
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


def test_no_alarm_outside_main_thread() -> None:
    # signals only reach the main thread: elsewhere the document is extracted without a limit
    batch = make_batch([page(f"<p>{PROSE * 3}</p>").encode()])
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("out", TrafilaturaExtractor(timeout_s=1e-6)(batch)))
    thread.start()
    thread.join(60)
    assert check(result["out"], batch) == [None]


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


def codecs_bom(text: str) -> bytes:
    return b"\xef\xbb\xbf" + text.encode("utf-8")


def test_urls_removed_and_newlines_capped() -> None:
    assert clean_text("a\n\n\n\nb\n \n \n\nc") == "a\n\nb\n\nc"
    assert clean_text("See https://example.com/x?y=1 for more, or www.example.org.") == "See for more, or."
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
    stage(batch.slice(0, 1))  # import outside the clock
    t0 = time.perf_counter()
    out = stage(batch)
    elapsed = time.perf_counter() - t0
    reasons = check(out, batch)
    texts = out.column("text").to_pylist()
    kept = [t for t in texts if t]
    # measured: 83 of 83 kept (it keeps the shop pages trafilatura finds empty: menus and all)
    assert len(kept) >= 0.9 * batch.num_rows
    assert set(reasons) <= {None, "no_text_extracted"}
    assert any("Creative Commons" in t for t in kept)
    assert any("Стратегия пожарной безопасности" in t for t in kept)  # windows-1251 page
    assert batch.num_rows / elapsed > 100  # docs/s; measured ~500 on the shared 2-core VM

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
    pytest.importorskip(backend)
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


def test_resiliparse_timeout_after_native_call() -> None:
    # the extraction is one Rust call: the alarm cannot cut it short, but a document that overran
    # is still removed as extraction_timeout, and the next one gets its full budget
    pytest.importorskip("resiliparse")
    body = "".join(f"<div class='c{i}'><p>{PROSE}</p><span>{i}</span></div>" for i in range(5000))
    batch = make_batch([page(body).encode(), page(f"<p>{PROSE}</p>").encode()])
    stage = TrafilaturaExtractor(backend="resiliparse", timeout_s=0.001)
    stage(make_batch([page("<p>warm-up</p>").encode()]))
    out = stage(batch)
    reasons = check(out, batch)
    assert reasons == ["extraction_timeout", None]
    assert 0.001 <= out.column(METRIC)[0].as_py() < 2.0
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.default_int_handler, None)


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
