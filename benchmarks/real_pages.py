"""Real web pages packed as WARC files, for benchmarks that need HTML input of a known language mix.

Sources (read-only, nothing downloaded):
- trafilatura's evaluation pages (``../shared/data/extraction/trafilatura_eval_e90b0ef.tar.gz``:
  1,032 real HTML pages, ~70% German, ~17% English, Spanish, French, Polish...), with their URL
  from ``evaldata.json`` (pages without an entry get ``https://<file stem>/``);
- the HTTP responses of the bundled sample WARCs (``data/sample/warc``; Japanese ClueWeb, English
  crawls), copied with their URL and ``Content-Type``.

``pages(english_share=None)`` gives every page (~80% non-English); ``english_share=0.5`` keeps every
English page and as many non-English ones (a fixed, seeded choice) so half the input is English.
"English" here is the top LID-176 label of Resiliparse's main-content text: a way to compose the
mix, not part of any measured chain.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL_TARBALL = ROOT.parent / "shared" / "data" / "extraction" / "trafilatura_eval_e90b0ef.tar.gz"
SAMPLE_WARCS = ROOT / "data" / "sample" / "warc"


@dataclass(frozen=True)
class Page:
    url: str
    body: bytes
    content_type: str


def _eval_pages() -> list[Page]:
    if not EVAL_TARBALL.is_file():
        raise SystemExit(f"{EVAL_TARBALL}: not found (the team's shared data)")
    bodies: dict[str, bytes] = {}
    urls: dict[str, str] = {}
    with tarfile.open(EVAL_TARBALL, "r:gz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            f = tar.extractfile(member)
            assert f is not None
            name = Path(member.name).name
            if name.endswith((".html", ".htm")):
                bodies[name] = f.read()
            elif name == "evaldata.json":
                urls = {v["file"]: url for url, v in json.load(f).items() if isinstance(v, dict) and "file" in v}
    return [Page(urls.get(name) or f"https://{Path(name).stem}/", body, "text/html")
            for name, body in sorted(bodies.items())]


def _sample_pages() -> list[Page]:
    return warc_pages(SAMPLE_WARCS)


def warc_pages(folder: Path) -> list[Page]:
    """The HTML responses of the WARC files in ``folder``, with their URL and ``Content-Type``."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    pages = []
    for path in sorted(folder.glob("*.warc*")):
        try:
            with open(path, "rb") as f:
                for record in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
                    ctype = record.http_headers.get("Content-Type") or ""
                    if "html" not in ctype.lower():
                        continue
                    url = (record.headers.get("WARC-Target-URI") or "").strip("<>")
                    pages.append(Page(url, record.reader.read(), ctype))
        except Exception:  # noqa: BLE001 - a clipped WARC ends early: keep what was read
            pass
    return pages


def is_english(pages: list[Page]) -> list[bool]:
    """Top LID-176 label of each page's Resiliparse main-content text is ``en``."""
    from resiliparse.extract.html2text import extract_plain_text

    from refinery.stages.extract import decode_html
    from refinery.stages.language_id import LanguageId

    texts = [extract_plain_text(decode_html(p.body, p.content_type)[0], main_content=True) for p in pages]
    langs, _ = LanguageId().predict(texts)
    return [lang == "en" for lang in langs]


def pages(english_share: float | None = None, seed: int = 17) -> list[Page]:
    """Every real page, or a seeded subset with ``english_share`` of English pages."""
    allp = _eval_pages() + _sample_pages()
    if english_share is None:
        return allp
    english = is_english(allp)
    en = [p for p, e in zip(allp, english) if e]
    other = [p for p, e in zip(allp, english) if not e]
    want_other = round(len(en) * (1 - english_share) / english_share)
    if want_other <= len(other):
        other = random.Random(seed).sample(other, want_other)
    else:
        en = random.Random(seed).sample(en, round(len(other) * english_share / (1 - english_share)))
    chosen = en + other
    random.Random(seed).shuffle(chosen)
    return chosen


def write_warcs(items: list[Page], dest: Path, per_file: int = 250, prefix: str = "pages") -> list[Path]:
    """Pack pages as gzipped WARC response records, ``per_file`` to a file; returns the files."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(0, len(items), per_file):
        path = dest / f"{prefix}-{k // per_file:04d}.warc.gz"
        with open(path, "wb") as f:
            writer = WARCWriter(f, gzip=True)
            for p in items[k : k + per_file]:
                http = StatusAndHeaders("200 OK", [("Content-Type", p.content_type)], protocol="HTTP/1.1")
                # a stable record id per (url, body): both systems and every rerun see the same ids
                uid = hashlib.sha1(p.url.encode() + p.body).hexdigest()
                rid = f"<urn:uuid:{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:32]}>"
                # as Common Crawl writes it (datatrove's reader trusts it; without it, it sniffs with libmagic)
                mime = p.content_type.split(";")[0].strip().lower()
                record = writer.create_warc_record(p.url, "response", payload=io.BytesIO(p.body), http_headers=http,
                                                   warc_headers_dict={"WARC-Record-ID": rid,
                                                                      "WARC-Identified-Payload-Type": mime})
                writer.write_record(record)
        files.append(path)
    return files


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/real_pages.py OUT_DIR [--english-share 0.5] [--per-file 250]``: the
    pages as WARC files in OUT_DIR, an input for ``refinery run`` (a probe ran it and got nothing:
    the module had no command line)."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path, help="where to write the WARC files")
    ap.add_argument("--english-share", type=float, default=None,
                    help="share of English pages, e.g. 0.5 (default: every page, ~20%% English)")
    ap.add_argument("--per-file", type=int, default=250, help="pages per WARC file")
    args = ap.parse_args(argv)
    if args.english_share is not None and not 0 < args.english_share < 1:
        ap.error("--english-share must be between 0 and 1")
    chosen = pages(args.english_share)
    files = write_warcs(chosen, args.out_dir, per_file=args.per_file)
    print(f"{len(chosen)} pages in {len(files)} WARC file(s) under {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
