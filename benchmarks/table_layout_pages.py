"""Extraction on the evaluation pages laid out with tables: the closest local stand-in for the
held-out check's older, table-layout pages (issue 13).

A page is "laid out with tables" when at least ``--min-td-share`` of its visible text (scripts,
styles and noscript removed) sits in outermost ``<td>`` cells. On those pages, and on the others,
it prints "with" snippets found, "without" snippets leaked and pages emptied for the stage as the
recipe configures it and for trafilatura as RefinedWeb ran it (precision mode, no tables, its full
comparison, no fallback):

    python benchmarks/table_layout_pages.py [--config configs/refinedweb.yaml] [--min-td-share 0.5]

The evaluation set is read from ``../shared/data/extraction`` (trafilatura's tests/eval, Apache-2.0).
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refinery.eval_extract import GoldPage, evaluate, extract_stage_from_config, load_gold  # noqa: E402
from refinery.stages.extract import REFINEDWEB_PARAMS, decode_html  # noqa: E402

DEFAULT_EVAL = ROOT.parent / "shared" / "data" / "extraction" / "trafilatura_eval_e90b0ef.tar.gz"


def td_share(page: GoldPage) -> float:
    """Share of the page's visible text inside outermost ``<td>`` cells (0 for pages lxml cannot read)."""
    from lxml import etree
    from lxml import html as lxml_html

    try:
        tree = lxml_html.fromstring(decode_html(page.html, None)[0])
    except (ValueError, etree.ParserError):
        return 0.0
    for element in tree.xpath("//script|//style|//noscript"):
        element.drop_tree()
    body = tree.find("body")
    total = len(body.text_content()) if body is not None else 0
    if not total:
        return 0.0
    return sum(len(td.text_content()) for td in body.xpath(".//td[not(ancestor::td)]")) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "refinedweb.yaml"))
    parser.add_argument("--eval-tarball", default=str(DEFAULT_EVAL))
    parser.add_argument("--min-td-share", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(args.eval_tarball) as tar:
            tar.extractall(tmp, filter="data")
        pages = [p for p in load_gold(Path(tmp) / "tests" / "evaldata.json") if p.with_snippets or p.without_snippets]
    layout: list[GoldPage] = []
    others: list[GoldPage] = []
    for page in pages:
        (layout if td_share(page) >= args.min_td_share else others).append(page)
    stage = extract_stage_from_config(args.config)
    refinedweb = extract_stage_from_config(args.config, REFINEDWEB_PARAMS)
    print(f"pages with >= {args.min_td_share:.0%} of their visible text in <td> cells: {len(layout)} of {len(pages)}")
    print("| pages | n | extraction | \"with\" found | \"without\" leaked | emptied |")
    print("|---|---|---|---|---|---|")
    for name, subset in (("table layout", layout), ("others", others)):
        for label, extractor in (("the recipe's extract stage", stage), ("RefinedWeb's trafilatura", refinedweb)):
            result = evaluate(extractor, subset)
            found = sum(p.found for p in result.per_page)
            wanted = sum(p.expected for p in result.per_page)
            leaked = sum(p.leaked for p in result.per_page)
            unwanted = sum(p.unwanted for p in result.per_page)
            print(f"| {name} | {len(subset)} | {label} | {found}/{wanted} ({found / max(wanted, 1):.1%}) "
                  f"| {leaked}/{unwanted} ({leaked / max(unwanted, 1):.1%}) | {result.emptied} |", flush=True)


if __name__ == "__main__":
    main()
