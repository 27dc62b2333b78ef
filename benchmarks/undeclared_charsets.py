"""Undeclared legacy-encoded pages: how often ``decode_html`` gets them exactly right.

    python benchmarks/undeclared_charsets.py [--limit 0]

Each of trafilatura's 990 evaluation pages (real HTML, /work/shared/data/extraction/...) is decoded
as the stage decodes it, then re-encoded in the first legacy encoding that can hold its text
(windows-1252, -1250, -1251, -1253, -1254, -1257; for pages with CJK text also Shift_JIS, GB18030,
EUC-KR, Big5), with its ``<meta charset>`` removed and no HTTP charset: the page a legacy server
sends without a declaration. Pages that are ASCII, or that no legacy encoding holds, are skipped.
The re-encoded page is decoded again with no header; it is "exact" when the text equals the
re-encoded page's own, "U+FFFD" when replacement characters came in, "wrong" otherwise (another
codec: mojibake). Prints the counts per encoding and the seconds spent.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))

from extraction import DEFAULT_EVAL, load_eval  # noqa: E402

from refinery.stages.extract import decode_html  # noqa: E402

META = re.compile(rb"<meta[^>]*charset[^>]*>", re.IGNORECASE)
LEGACY = ("cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1257")
CJK_LEGACY = ("shift_jis", "gb18030", "euc_kr", "big5")
CJK = re.compile("[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7a3]")


def legacy_encoding(text: str) -> str | None:
    for codec in LEGACY + (CJK_LEGACY if CJK.search(text) else ()):
        try:
            text.encode(codec)
        except UnicodeEncodeError:
            continue
        return codec
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-tarball", default=str(DEFAULT_EVAL))
    parser.add_argument("--limit", type=int, default=0, help="0 = all 990 pages")
    args = parser.parse_args()
    batch, _ = load_eval(Path(args.eval_tarball), args.limit)
    counts: dict[str, Counter] = {}
    started = time.process_time()
    for body in batch.column("html").to_pylist():
        text, bad = decode_html(body, "text/html")
        if bad > 0.001 or text.isascii():
            continue
        codec = legacy_encoding(text)
        if codec is None:
            continue
        page = META.sub(b"", text.encode(codec))
        got, _ = decode_html(page, "text/html")
        verdict = "exact" if got == page.decode(codec) else "U+FFFD" if "\ufffd" in got else "wrong"
        counts.setdefault(codec, Counter())[verdict] += 1
    seconds = time.process_time() - started
    total: Counter = Counter()
    print("| encoding | pages | exact | wrong codec | U+FFFD |")
    print("|---|---|---|---|---|")
    for codec, c in counts.items():
        total.update(c)
        print(f"| {codec} | {sum(c.values())} | {c['exact']} | {c['wrong']} | {c['U+FFFD']} |")
    print(f"| all | {sum(total.values())} | {total['exact']} | {total['wrong']} | {total['U+FFFD']} |")
    print(f"{seconds:.1f} CPU s ({len(batch)} evaluation pages read)")


if __name__ == "__main__":
    main()
