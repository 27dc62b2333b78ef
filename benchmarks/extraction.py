"""Extraction settings side by side: docs/s per core, peak RSS, snippet quality, pages emptied.

    python benchmarks/extraction.py [--passes 3] [--eval-pages 0] [--warc-repeat 4]
        [--variants old-defaults trafilatura resiliparse] [--rounds 1]
    python benchmarks/extraction.py --lean-ab [--rounds 1]   (plain vs lean trafilatura calls: lean_ab)
    python benchmarks/extraction.py --lean-ab --plain-old-defaults   (plain = trafilatura as RefinedWeb ran it)
    python benchmarks/extraction.py --lean-ab --plain-old-defaults -p fallback_below_chars=250   (the lean side's stage params)
    python benchmarks/extraction.py --lean-ab --plain-library-defaults   (plain = trafilatura.extract(html, url=url) as shipped)
    python benchmarks/extraction.py --xpath-check            (the lean path's XPath replacements vs lxml's)
    python benchmarks/extraction.py --xpath-ab REV [--rounds 2]   (the Python selections of git revision REV vs now)
    python benchmarks/extraction.py --repair-ab [--rounds 2]      (trafilatura's invalid-character repair vs the lean one)
    python benchmarks/extraction.py --totext-ab [--rounds 2]      (trafilatura's result tree -> text vs the lean one)

Runs the ``extract`` stage (``TrafilaturaExtractor``) with each variant (``VARIANTS``: the current
defaults, the defaults before issue 13, Resiliparse), each in a fresh child process (so peak RSS is
its own), ``--rounds`` times interleaved (A B A B: the machine's load hits both alike), on

* trafilatura's evaluation set (/work/shared/data/extraction/trafilatura_eval_*.tar.gz: 990 real
  pages with hand-picked snippets that must / must not be in the extract): docs/s and the share of
  "with" snippets found / "without" snippets leaked, scored as in tests/test_extract.py;
* the bundled sample WARCs (read by ``WarcReader``, kept records only, repeated ``--warc-repeat``
  times): docs/s, documents kept.

Rates are documents per CPU-second of the child and its extraction helper process (with
``timeout_s > 0`` the stage extracts in a helper process it can kill; ``--timeout-s 0`` extracts in
the child itself), best of ``--passes`` passes after a warm-up batch; the stage waits while its
helper works, so this is per core and robust to other jobs on the machine. Wall-clock rates are
printed next to them.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import random
import re
import resource
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow as pa

from refinery.schema import DOCUMENT_SCHEMA
from refinery.stages.base import METRIC, REASON
from refinery.stages.extract import REFINEDWEB_PARAMS, TrafilaturaExtractor, decode_html

DEFAULT_EVAL = ROOT.parent / "shared" / "data" / "extraction" / "trafilatura_eval_e90b0ef.tar.gz"
URL_RE = re.compile(r"https?://\S|\bwww\.\w")

#: variant name -> extract stage params
VARIANTS: dict[str, dict] = {
    "trafilatura": {},  # the defaults: precision + tables + fast, fallback pass, baseline (issue 13)
    # the defaults before issue 13: RefinedWeb's precision mode without tables, full cascade, no fallback
    "old-defaults": REFINEDWEB_PARAMS,
    "resiliparse": {"backend": "resiliparse"},
}


def load_eval(tarball: Path, limit: int) -> tuple[pa.RecordBatch, list[dict]]:
    # one sequential pass: random access into a .tar.gz re-reads it from the start every time
    pages: dict[str, bytes] = {}
    with tarfile.open(tarball, "r|gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith((".html", ".json")):
                pages[Path(member.name).name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    items = sorted(json.loads(pages.pop("evaldata.json")).items())
    if limit:
        random.Random(0).shuffle(items)
        items = items[:limit]
    rows = [(url, pages[it["file"]], it) for url, it in items if it["file"] in pages]
    del pages
    n = len(rows)
    batch = pa.RecordBatch.from_pydict(
        {
            "id": [f"eval/{i}" for i in range(n)], "url": [r[0] for r in rows], "warc_record_id": [None] * n,
            "warc_date": [None] * n, "content_type": [None] * n, "source": ["trafilatura-eval"] * n,
            "html": [r[1] for r in rows], "text": [None] * n,
        },
        schema=DOCUMENT_SCHEMA,
    )
    return batch, [r[2] for r in rows]


def load_warcs(folder: Path, repeat: int) -> pa.RecordBatch:
    from refinery.io.warc import WarcReader

    batches = []
    for path in sorted(folder.glob("*.warc.gz")):
        with open(path, "rb") as f:
            batches.extend(WarcReader().read(f, source=str(path)))
    table = pa.Table.from_batches(batches)
    table = table.filter(table.column(REASON).is_null()).drop_columns([REASON, METRIC]).cast(DOCUMENT_SCHEMA)
    return pa.concat_tables([table] * repeat).combine_chunks().to_batches()[0]


def snippet_rates(items: list[dict], texts: list[str | None]) -> tuple[float, float]:
    norm = lambda s: re.sub(r"\s+", " ", s).strip()
    found = expected = leaked = unwanted = 0
    for item, text in zip(items, texts):
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


def cpu_seconds() -> float:
    """CPU time of this process plus its children: the extraction helper processes (live ones via
    /proc, through psutil; killed and reaped ones via RUSAGE_CHILDREN)."""
    total = time.process_time()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    total += ru.ru_utime + ru.ru_stime
    try:
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                t = child.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    except ImportError:  # pragma: no cover
        pass
    return total


def timed(stage: TrafilaturaExtractor, batch: pa.RecordBatch, passes: int) -> tuple[pa.RecordBatch, float, float]:
    """Best-of-``passes`` rates: (output, docs per CPU-second, docs per wall-second)."""
    best_cpu = best_wall = 0.0
    out = None
    for _ in range(passes):
        c0, w0 = cpu_seconds(), time.perf_counter()
        out = stage(batch)
        cpu, wall = cpu_seconds() - c0, time.perf_counter() - w0
        best_cpu, best_wall = max(best_cpu, batch.num_rows / cpu), max(best_wall, batch.num_rows / wall)
    return out, best_cpu, best_wall


def run_backend(backend: str, args: argparse.Namespace, queue: mp.Queue) -> None:  # backend = variant name
    """In a fresh process: the WARCs first (small input, so peak RSS is mostly the backend's), then
    the evaluation pages (145 MB of HTML held in memory)."""
    peak_mb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    warc_batch = load_warcs(Path(args.warcs), args.warc_repeat)
    stage = TrafilaturaExtractor(timeout_s=args.timeout_s, **VARIANTS[backend])
    stage(warc_batch.slice(0, 5))  # imports, lazy set-up
    out, warc_cpu, warc_wall = timed(stage, warc_batch, args.passes)
    warc_kept = out.column(REASON).null_count  # null reason = kept
    rss_warc = peak_mb()
    print(f"[{backend}] sample WARCs: {warc_cpu:.0f} docs/s/core", file=sys.stderr, flush=True)
    eval_batch, items = load_eval(Path(args.eval_tarball), args.eval_pages)
    out, eval_cpu, eval_wall = timed(stage, eval_batch, args.passes)
    found, leaked = snippet_rates(items, out.column("text").to_pylist())
    from collections import Counter

    kept_paths = zip(out.column("extract_path").to_pylist(), out.column(REASON).to_pylist())
    paths = Counter(p for p, r in kept_paths if r is None)
    print(f"[{backend}] evaluation pages: {eval_cpu:.0f} docs/s/core", file=sys.stderr, flush=True)
    queue.put({
        "backend": backend, "eval_docs": eval_batch.num_rows, "eval_kept": out.column(REASON).null_count,
        "eval_cpu": eval_cpu, "eval_wall": eval_wall, "found": found, "leaked": leaked,
        "warc_docs": warc_batch.num_rows, "warc_kept": warc_kept, "warc_cpu": warc_cpu, "warc_wall": warc_wall,
        "rss_warc": rss_warc, "rss": peak_mb(), "paths": dict(paths),
    })


def xpath_check() -> None:
    """``--xpath-check``: every trafilatura XPath the lean path replaces (by a Python selection or a
    guarded XPath, refinery/stages/_xpath_to_python.py) against lxml's original, on the filter
    benchmark's real pages, on their raw trees and after trafilatura's tree cleaning (the XPaths
    run on both). Prints how many evaluations, elements selected and differences (0 expected)."""
    from trafilatura.htmlprocessing import tree_cleaning
    from trafilatura.settings import Extractor
    from trafilatura.utils import load_html

    from refinery.stages import _extract_helper

    sys.path.append(str(ROOT / "benchmarks"))  # last: benchmarks/classifiers.py must not shadow the package
    from real_pages import pages

    _extract_helper._install_c_class_lookup()
    if not _extract_helper._install_faster_xpaths():
        sys.exit("the faster XPaths are not installed for this trafilatura (its XPaths changed)")
    replaced = [(original, new) for _, _, original, new in _extract_helper._REPLACED_XPATHS]
    # the lists the lean raw-tree pruning selects in one walk (_extract_helper._install_fast_prune)
    from trafilatura import xpaths

    from refinery.stages._xpath_to_python import compile_selections

    originals = {id(new): original for original, new in replaced}
    for lists in ((xpaths.RAW_TREE_PRUNE_XPATH, xpaths.REMOVE_COMMENTS_AND_LISTS_XPATH),):
        expressions = [e for nodelist in lists for e in nodelist]
        fused = compile_selections([e.path for e in expressions])
        wanted = [originals[id(e)] for e in expressions]
        replaced.append((type("Fused", (), {"path": " + ".join(e.path.strip()[:30] for e in expressions),
                                            "__call__": lambda self, root, w=wanted: [x(root) for x in w]})(),
                         lambda root, f=fused: f(root)))
    options = Extractor(precision=True, tables=True)
    evaluations = selected = differences = n = 0
    for page in pages():
        tree = load_html(_extract_helper.strip_dropped_elements(decode_html(page.body, page.content_type)[0]))
        if tree is None:
            continue
        n += 1
        for root in (tree, tree_cleaning(copy.deepcopy(tree), options)):
            for original, new in replaced:
                want = original(root)
                count = sum(map(len, want)) if want and isinstance(want[0], list) else len(want)
                evaluations, selected = evaluations + 1, selected + count
                if new(root) != want:
                    differences += 1
                    print(f"differs: {page.url}: {original.path.strip()[:80]}")
    print(f"{n} pages, {len(replaced)} XPaths, {evaluations:,} evaluations, {selected:,} elements selected, "
          f"{differences} differences")


def ab_page_sets(args: argparse.Namespace, stage: TrafilaturaExtractor) -> dict[str, list[tuple[str, str]]]:
    """The A/B modes' pages: the filter benchmark's 1,087 and the evaluation set's, decoded, as
    ``(url, html)``, keeping those the stage would send to trafilatura (not too many bad
    characters, not too big, no parser bomb)."""
    from refinery.stages.extract import pathological_html

    sys.path.append(str(ROOT / "benchmarks"))  # last: benchmarks/classifiers.py must not shadow the package
    from real_pages import pages

    eval_batch, _ = load_eval(Path(args.eval_tarball), args.eval_pages)
    sets = {
        "filter benchmark pages": [(p.url, p.body, p.content_type) for p in pages()],
        "evaluation pages": list(zip(eval_batch.column("url").to_pylist(), eval_batch.column("html").to_pylist(),
                                     [None] * eval_batch.num_rows)),
    }
    kept: dict[str, list[tuple[str, str]]] = {}
    for name, rows in sets.items():
        kept[name] = []
        for url, body, ctype in rows:
            html, bad = decode_html(body, ctype)
            if bad <= 0.05 and len(body) <= stage.max_html_bytes and pathological_html(html) is None:
                kept[name].append((url, html))
    return kept


#: pages the lean-ab's helper side extracts back to back, after the other sides have done them
HELPER_BLOCK = 50


def lean_ab(args: argparse.Namespace) -> None:
    """``--lean-ab``: CPU per page of the trafilatura cascade as plain ``trafilatura.extract`` calls
    (lxml.html's stock parser, settings built per call, the whole page parsed, trafilatura's own
    pruning and XPaths) against the lean path the stage uses (refinery/stages/_extract_helper.py:
    C class lookup, settings built once, scripts/styles/comments cut before parsing, outermost
    pruned elements found in one walk, its XPaths as Python selections), page by page in one process
    (A then B on each page, so the machine's load hits both alike), on the filter benchmark's 1,087 real pages and the
    990 evaluation pages; plus the stage's own bad-character count (regex vs bytes.translate).
    Prints ms of CPU per page, docs/s/core, the reduction and how many texts are byte-identical.
    A third side (``--no-helper`` leaves it out) is the stage as it runs: the same pages sent to its
    extraction helper process, with its ``helper_allocator`` (mimalloc where installed:
    refinery/allocator.py), in blocks of ``HELPER_BLOCK`` pages back to back after the other sides
    did them, its CPU read from the kernel around each page set; its texts are compared with the
    lean side's. Plain and lean share this process's allocator (glibc's).

    ``--plain-old-defaults``: the plain side runs trafilatura as RefinedWeb did (and this stage
    before issue 13): precision mode, no tables, its full readability/justext comparison, no
    fallback pass. That is the "trafilatura's speed" of issue 17 item 1; the lean side stays the
    stage as shipped (``-p KEY=VALUE``: with those params). The texts then differ by design (their quality: the variants table).
    ``--plain-library-defaults``: the plain side is ``trafilatura.extract(html, url=url)`` with the
    library's own defaults (balanced mode, tables and comments on, the full comparison)."""
    import logging
    import os

    from refinery.stages import _extract_helper
    from refinery.stages.extract import _BAD_CHARS, _bad_chars

    import yaml

    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--param {item!r}: expected KEY=VALUE")
        params[key] = yaml.safe_load(value)
    stage = TrafilaturaExtractor(**params)
    config = {**stage._cascade_config(), "log_level": logging.ERROR}
    # trafilatura as shipped makes no quote marks (a second conversion of pages holding a blockquote)
    plain_config = {**config, "lean": False, "quote_marks": False}
    as_shipped = {"fallback": None, "rules": None, "code_blocks": False, "anchor_headings": False}
    if args.plain_old_defaults:
        plain_config |= {"kwargs": {**config["kwargs"], "include_tables": False, "fast": False}, **as_shipped}
    elif args.plain_library_defaults:
        plain_config |= {"kwargs": {}, **as_shipped}
    plain = _extract_helper.make_extract(plain_config)
    lean = _extract_helper.make_extract(config)  # installs the lean replacements in trafilatura
    sets = ab_page_sets(args, stage)
    # the third side: the stage as it runs, in its helper process (with its helper_allocator), whose
    # CPU is read from the kernel around each page set (no deadline: no page may kill it)
    helper = None
    if not args.no_helper:
        import psutil

        from refinery import allocator
        from refinery.stages.extract import _HELPERS

        helper = _HELPERS.acquire(stage._helper_key())
        helper.wait_ready()
        helper_cpu = psutil.Process(helper.proc.pid).cpu_times
        preload = allocator.preloaded_library(stage.helper_allocator)
        print(f"stage side: its helper process, helper_allocator {stage.helper_allocator!r}: "
              f"{'mimalloc ' + preload if preload else 'the system malloc'}")
    load_before = os.getloadavg()[0]
    print("| pages | n | plain ms/page (docs/s/core) | lean ms/page (docs/s/core) | CPU cut | identical "
          "| stage in its helper ms/page (docs/s/core) | plain / lean, plain / stage "
          "| bad-char count ms/page: regex / translate |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, docs in sets.items():
        t_plain = t_lean = t_re = t_tr = 0.0
        same = same_helper = 0
        before = sum(helper_cpu()[:2]) if helper else 0.0
        block: list[tuple[str, str, object]] = []
        for r in range(args.rounds):
            for i, (url, html) in enumerate(docs):
                with _extract_helper.plain_trafilatura():
                    c0 = time.process_time()
                    a = plain(html, url)
                    c1 = time.process_time()
                c1_lean = time.process_time()
                b = lean(html, url)
                c2 = time.process_time()
                sample = html[:100_000]
                n_re = len(_BAD_CHARS.findall(sample))
                c3 = time.process_time()
                n_tr = _bad_chars(sample)
                c4 = time.process_time()
                t_plain, t_lean, t_re, t_tr = t_plain + c1 - c0, t_lean + c2 - c1_lean, t_re + c3 - c2, t_tr + c4 - c3
                assert n_re == n_tr
                same += r == 0 and a[:2] == b[:2]  # (text, path); the lean side adds quote marks
                if helper:
                    block.append((url, html, b))
                if helper and (len(block) == HELPER_BLOCK or i == len(docs) - 1):
                    # the helper extracts the block's pages back to back, as in a run: one page
                    # each between the other sides' pages left it cold (its caches and its
                    # allocator's free pages lost to their work: ~5-10% more CPU)
                    for url_, html_, lean_text in block:
                        status, c = helper.extract(html_, url_, 3600.0)
                        if status != "ok":
                            raise SystemExit(f"the stage's helper answered {status} {c!r} on {url_}")
                        same_helper += r == 0 and tuple(c) == tuple(lean_text)  # the lean path's text
                    block = []
        k = len(docs) * args.rounds
        t_helper = sum(helper_cpu()[:2]) - before if helper else float("nan")
        stage_cell = f"{1000 * t_helper / k:.2f} ({k / t_helper:.0f}), {same_helper} same as lean" if helper else "-"
        print(f"| {name} | {len(docs)} | {1000 * t_plain / k:.2f} ({k / t_plain:.0f}) | {1000 * t_lean / k:.2f} "
              f"({k / t_lean:.0f}) | {1 - t_lean / t_plain:.1%} | {same}/{len(docs)} ({same / len(docs):.2%}) "
              f"| {stage_cell} | {t_plain / t_lean:.2f}x, {t_plain / t_helper:.2f}x "
              f"| {1000 * t_re / k:.3f} / {1000 * t_tr / k:.3f} |", flush=True)
    print(f"machine: {os.cpu_count()} cores shared with other work (load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after); {args.rounds} round(s); CPU seconds of this process "
          f"(plain and lean in process; the stage's side: its helper's CPU seconds); peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if helper:
        helper.close()


def part_ab(args: argparse.Namespace) -> None:
    """One piece of the lean path against what it replaced, page by page in one process (the two
    sides swapped in before each page, in alternating order), on the filter benchmark's 1,087 real
    pages and the 990 evaluation pages; the rest of the stage's cascade as shipped. Prints ms of
    CPU per page for each side, the cut, and how many texts are identical (all should be).

    - ``--xpath-ab REV``: the Python selections compiled by ``refinery/stages/_xpath_to_python.py``
      as it was at git revision ``REV`` ("before") against the working tree's ("now");
    - ``--repair-ab``: trafilatura's own ``repair_faulty_html`` (its invalid-character regex over
      every page) against the lean one (the regex only where a check in C finds one may be);
    - ``--totext-ab``: trafilatura's own ``xmltotxt`` after the XPath line joining against the lean
      conversion that joins in the same walk (``refinery/stages/_lean_totext.py``)."""
    import importlib.util
    import logging
    import os
    import subprocess
    import tempfile

    from trafilatura import utils as tutils

    from refinery.stages import _extract_helper

    stage = TrafilaturaExtractor()
    cascade = _extract_helper.make_extract({**stage._cascade_config(), "log_level": logging.ERROR})
    sides: dict[str, list] = {"before": [], "now": []}
    if args.xpath_ab:
        label = args.xpath_ab
        source = subprocess.run(["git", "show", f"{args.xpath_ab}:refinery/stages/_xpath_to_python.py"], cwd=ROOT,
                                check=True, capture_output=True, text=True).stdout
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(source)
        spec = importlib.util.spec_from_file_location("xpath_to_python_before", f.name)
        before = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(before)
        os.unlink(f.name)
        for container, key, original, new in _extract_helper._REPLACED_XPATHS:
            try:
                old = before.compile_xpath(original.path) if not isinstance(new, type(original)) else new
            except before.Unsupported:
                old = new
            sides["before"].append((container, key, old))
            sides["now"].append((container, key, new))
    elif args.totext_ab:
        label = "trafilatura's xmltotxt"
        sides["before"].append((_extract_helper, "LEAN_TOTEXT", False))
        sides["now"].append((_extract_helper, "LEAN_TOTEXT", True))
    else:
        label = "trafilatura's repair"
        lean_repair = tutils.repair_faulty_html
        sides["before"].append((tutils, "repair_faulty_html", lean_repair._original))
        sides["now"].append((tutils, "repair_faulty_html", lean_repair))
    sets = ab_page_sets(args, stage)
    load_before = os.getloadavg()[0]
    print(f"| pages | n | {label} ms/page (docs/s/core) | now ms/page (docs/s/core) | CPU cut | identical |")
    print("|---|---|---|---|---|---|")
    for name, docs in sets.items():
        cpu = {"before": 0.0, "now": 0.0}
        same = 0
        for r in range(args.rounds):
            for i, (url, html) in enumerate(docs):
                texts = {}
                for side in (("before", "now") if (i + r) % 2 == 0 else ("now", "before")):
                    for container, key, fn in sides[side]:
                        _extract_helper._set(container, key, fn)
                    c0 = time.process_time()
                    texts[side] = cascade(html, url)
                    cpu[side] += time.process_time() - c0
                same += texts["before"] == texts["now"]
        k = len(docs) * args.rounds
        print(f"| {name} | {len(docs)} | {1000 * cpu['before'] / k:.2f} ({k / cpu['before']:.0f}) "
              f"| {1000 * cpu['now'] / k:.2f} ({k / cpu['now']:.0f}) | {1 - cpu['now'] / cpu['before']:.1%} "
              f"| {same}/{k} |", flush=True)
    print(f"machine: {os.cpu_count()} cores (load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} "
          f"after); {args.rounds} round(s); CPU seconds of this process (in process, no helper)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-tarball", default=str(DEFAULT_EVAL))
    parser.add_argument("--eval-pages", type=int, default=0, help="0 = all 990 pages")
    parser.add_argument("--warcs", default=str(ROOT / "data" / "sample" / "warc"))
    parser.add_argument("--warc-repeat", type=int, default=4)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--variants", "--backends", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=1, help="run the variants this many times, interleaved")
    parser.add_argument("--timeout-s", type=float, default=5.0,
                        help="the stage's timeout_s (default 5, as in the stage; 0 = in this process, no helper)")
    parser.add_argument("--xpath-check", action="store_true",
                        help="compare the lean path's XPath replacements with lxml's originals on real pages")
    parser.add_argument("--lean-ab", action="store_true",
                        help="CPU per page, plain trafilatura calls vs the stage's lean path, and identical texts")
    plain_side = parser.add_mutually_exclusive_group()
    plain_side.add_argument("--plain-old-defaults", action="store_true",
                            help="with --lean-ab: the plain side at RefinedWeb's settings (precision, no tables, "
                                 "not fast, no fallback)")
    plain_side.add_argument("--plain-library-defaults", action="store_true",
                            help="with --lean-ab: the plain side is trafilatura.extract(html, url=url) with the "
                                 "library's defaults")
    parser.add_argument("--no-helper", action="store_true",
                        help="with --lean-ab: leave out the third side (the stage in its helper process)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="with --lean-ab: an extract stage param of the lean side (YAML value), e.g. "
                             "-p fallback_below_chars=250")
    parser.add_argument("--xpath-ab", metavar="REV",
                        help="CPU per page with the Python selections of git revision REV vs the working tree's")
    parser.add_argument("--repair-ab", action="store_true",
                        help="CPU per page with trafilatura's invalid-character repair vs the lean one")
    parser.add_argument("--totext-ab", action="store_true",
                        help="CPU per page with trafilatura's result tree -> text (and line joining) vs the lean one")
    args = parser.parse_args()
    if args.xpath_ab or args.repair_ab or args.totext_ab:
        part_ab(args)
        return
    if args.lean_ab:
        lean_ab(args)
        return
    if args.xpath_check:
        xpath_check()
        return

    ctx = mp.get_context("spawn")  # fresh interpreter per backend: its own imports and peak RSS
    import os
    import platform

    load_before = os.getloadavg()
    results = []
    for backend in [v for _ in range(args.rounds) for v in args.variants]:
        queue = ctx.Queue()
        proc = ctx.Process(target=run_backend, args=(backend, args, queue))
        proc.start()
        result = queue.get()
        proc.join()
        results.append(result)

    r0 = results[0]
    load_after = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (other jobs share the machine: CPU-second "
          f"rates are the comparable figure)")
    print(f"evaluation pages: {r0['eval_docs']}; sample WARC records: {r0['warc_docs']} "
          f"(x{args.warc_repeat}); best of {args.passes} passes; rates per CPU-second (wall in brackets)")
    print("| variant | eval docs/s/core | \"with\" found | \"without\" leaked | eval kept | WARC docs/s/core "
          "| WARC kept | peak RSS MB: WARC phase / with eval pages loaded | eval paths |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        paths = ", ".join(f"{k} {v}" for k, v in sorted(r["paths"].items()))
        print(f"| {r['backend']} | {r['eval_cpu']:,.0f} ({r['eval_wall']:,.0f}) | {r['found']:.1%} | {r['leaked']:.1%} "
              f"| {r['eval_kept']}/{r['eval_docs']} | {r['warc_cpu']:,.0f} ({r['warc_wall']:,.0f}) "
              f"| {r['warc_kept']}/{r['warc_docs']} | {r['rss_warc']:.0f} / {r['rss']:.0f} | {paths} |")


if __name__ == "__main__":
    main()
