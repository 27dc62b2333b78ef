"""refinery vs datatrove 0.10.1, side by side in one run, on the same input.

    python benchmarks/vs_datatrove.py dedup [--sizes 20000,200000] [--repeats 2] [--work /tmp/vs-datatrove]
    python benchmarks/vs_datatrove.py filter ...   (the filter-chain comparison: its own section below)

datatrove is installed in its own virtual environment (``--dt-venv``, default /tmp/dt-venv: ``python -m
venv`` + ``pip install datatrove==0.10.1 spacy pyarrow``), created once and reused. Each system runs in a
fresh subprocess with one worker (one core), so wall time and peak RSS (``ru_maxrss`` of the process and
its children) are its own; runs are interleaved (refinery, datatrove, refinery, ...) and repeated, and the
min and median are printed. The machine is shared: the figures say so and state the load average.

**dedup**: a corpus derived from real text (sentences of the 10,033 Wikipedia lead sections in
``/work/shared/data/quality/summaries_en-us.json`` and the bundled Common Crawl documents, ~20 – 40
sentences per document, so documents are distinct) with injected duplicates at known rates: 10% near-copies
of an earlier original (~0.5% of words substituted, some with a boilerplate footer: J ~ 0.9) and 3% partial
copies (57% of an original, the rest other text: J ~ 0.4), shuffled over the shards. refinery: ``run_dedup``
(MinHash 14 x 8 of 128, word 5-grams, verification on) over Parquet shards, writing kept/removed Parquet.
datatrove: its four-stage ``MinhashDedup{Signature,Buckets,Cluster,Filter}`` (14 x 8, 5-grams; 14 bucket
tasks) over the same Parquet shards, writing kept/removed Parquet. Scored on the same ground truth:
recall = near-copy pairs (true J >= 0.85) of which one document was removed; precision = removed documents
that belong to an injected pair with J >= 0.5; "< 0.5" = removed documents whose true word-5-gram Jaccard
with the document their cluster kept is below 0.5 (true Jaccard on refinery's normalized words).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUMMARIES = Path("/work/shared/data/quality/summaries_en-us.json")
DT_SPEC = ["datatrove==0.10.1", "spacy>=3.8,<3.9", "pyarrow>=15", "regex", "xxhash<4", "tokenizers"]  # what MinhashDedup imports (spaCy: English words)
BOILERPLATE = (" Share this article: Facebook | Twitter | Email. Subscribe to our newsletter for weekly updates. "
               "Copyright 2024 All rights reserved. Privacy Policy | Terms of Use | Contact Us.")


# -- datatrove's environment ---------------------------------------------------------------------
def ensure_dt_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    marker = venv / ".refinery-bench-ok"
    if marker.exists():
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *DT_SPEC], check=True)
    subprocess.run([str(python), "-c", "import datatrove.pipeline.dedup, spacy, pyarrow"], check=True)
    marker.write_text(" ".join(DT_SPEC))
    return python


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its children: the per-core cost, which a
    busy shared machine does not inflate the way it inflates wall time."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _peak_rss() -> int:
    """Peak RSS in bytes of this process (VmHWM) and of any child it waited for. Not ru_maxrss of
    the process itself: an exec'd child inherits its forking parent's RSS there (the parent holds
    the corpus), so it would report the parent's size."""
    own = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                own = int(line.split()[1])
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) * 1024  # KiB


# ================================================================================================
# dedup
# ================================================================================================
def _sentences() -> list[str]:
    import gzip
    import re

    data = json.loads(SUMMARIES.read_text())
    pool: list[str] = []
    split = re.compile(r"(?<=[.!?])\s+")
    for v in data.values():
        pool.extend(s for s in split.split(v["extract"]) if 6 <= len(s.split()) <= 60)
    for path in sorted((ROOT / "data" / "sample" / "cc_docs").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                # long "sentences" (unsplittable scripts) would recur in many documents: near-copies we did not make
                pool.extend(s for s in split.split(json.loads(line)["text"]) if 6 <= len(s.split()) <= 60)
    return pool


def _edit(text: str, rate: float, rng: random.Random) -> str:
    return " ".join(f"w{rng.randint(0, 10**9)}" if rng.random() < rate else w for w in text.split(" "))


def make_corpus(n: int, directory: Path, shards: int, seed: int = 0) -> dict:
    """``n`` documents in ``shards`` Parquet files plus ``truth.json`` (injected pairs)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    pool = _sentences()
    n_near, n_part = int(n * 0.10), int(n * 0.03)
    n_orig = n - n_near - n_part
    docs = [" ".join(rng.choices(pool, k=rng.randint(20, 40))) for _ in range(n_orig)]
    ids = [f"o{i}" for i in range(n_orig)]
    pairs = []
    for k in range(n_near):
        i = rng.randrange(n_orig)
        text = _edit(docs[i], 0.005, rng) + (BOILERPLATE if k % 3 == 0 else "")
        docs.append(text)
        ids.append(f"n{k}")
        pairs.append((f"o{i}", f"n{k}", "near"))
    for k in range(n_part):
        i = rng.randrange(n_orig)
        words = docs[i].split(" ")
        keep = int(len(words) * 0.57)
        filler = " ".join(rng.choices(pool, k=40)).split(" ")[: len(words) - keep]
        docs.append(" ".join(words[:keep] + filler))
        ids.append(f"p{k}")
        pairs.append((f"o{i}", f"p{k}", "partial"))
    order = list(range(len(docs)))
    rng.shuffle(order)
    directory.mkdir(parents=True, exist_ok=True)
    per = -(-len(order) // shards)
    for s in range(shards):
        part = order[s * per : (s + 1) * per]
        table = pa.table({"id": [ids[i] for i in part], "text": [docs[i] for i in part]})
        pq.write_table(table, directory / f"shard-{s:04d}.parquet", compression="zstd")
    return {"pairs": pairs, "docs": len(docs)}


def _shingles(texts: list[str]) -> list:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from refinery.dedup.text import shingle_hashes, tokenize

    out = []
    for lo in range(0, len(texts), 2000):
        hashes, offsets = shingle_hashes(tokenize(texts[lo : lo + 2000]), 5)
        out.extend(np.unique(hashes[offsets[i] : offsets[i + 1]]) for i in range(len(offsets) - 1))
    return out


def _jaccard(a, b) -> float:
    import numpy as np

    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def _read_dir(directory: Path, columns: list[str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for f in sorted(directory.rglob("*.parquet")):
        t = pq.read_table(f)
        tables.append(t.select([c for c in columns if c in t.column_names]))
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def score(corpus_dir: Path, out: Path, system: str) -> dict:
    """Recall / precision against the injected pairs and removals below J = 0.5 (true Jaccard)."""
    texts: dict[str, str] = {}
    for t in [_read_dir(corpus_dir, ["id", "text"])]:
        texts = dict(zip(t.column("id").to_pylist(), t.column("text").to_pylist()))
    truth = json.loads((corpus_dir / "truth.json").read_text())
    cluster_col = "minhash_cluster_id" if system == "datatrove" else "dedup_cluster_id"
    kept = _read_dir(out / "kept", ["id", cluster_col])
    removed = _read_dir(out / "removed", ["id", cluster_col])
    removed_ids = removed.column("id").to_pylist() if removed is not None else []
    removed_set = set(removed_ids)
    kept_of = {}
    if kept is not None and cluster_col in kept.column_names:
        for i, c in zip(kept.column("id").to_pylist(), kept.column(cluster_col).to_pylist()):
            if c is not None and c != -1:
                kept_of[c] = i
    # true Jaccard of every injected pair and of every removed document with its cluster's kept copy
    pair_ids = [(a, b) for a, b, _k in truth["pairs"]]
    rem_clusters = removed.column(cluster_col).to_pylist() if removed is not None and removed_ids else []
    rem_pairs = [(d, kept_of.get(c)) for d, c in zip(removed_ids, rem_clusters)]
    need = sorted({x for p in pair_ids + rem_pairs for x in p if x is not None})
    sh = dict(zip(need, _shingles([texts[x] for x in need])))
    pj = {(a, b): _jaccard(sh[a], sh[b]) for a, b in pair_ids}
    high = [p for p in pair_ids if pj[p] >= 0.85]
    found = sum(a in removed_set or b in removed_set for a, b in high)
    in_pairs = {x for p in pair_ids if pj[p] >= 0.5 for x in p}
    true_pos = sum(d in in_pairs for d in removed_ids)
    below = sum(1 for d, k in rem_pairs if k is None or _jaccard(sh[d], sh[k]) < 0.5)
    return {"removed": len(removed_ids), "recall": found / max(len(high), 1), "high_pairs": len(high),
            "precision": true_pos / max(len(removed_ids), 1), "below_0_5": below}


def run_refinery(corpus_dir: Path, out: Path, verify: bool = True) -> dict:
    sys.path.insert(0, str(ROOT))
    from refinery.dedup.config import DedupConfig, MinhashConfig
    from refinery.dedup.driver import run_dedup
    from refinery.executors.local import LocalExecutor

    started = time.time()
    with LocalExecutor(1, progress=False) as ex:
        stats = run_dedup(str(corpus_dir), str(out), DedupConfig(method="minhash", minhash=MinhashConfig(verify=verify)), ex)
    wall = time.time() - started
    passes = {k: v.get("wall_seconds") for k, v in stats["passes"].items()}
    return {"wall": wall, "cpu": _cpu_seconds(), "peak_rss": _peak_rss(), "passes": passes}


def run_datatrove(corpus_dir: Path, out: Path, tasks: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
    work, logs = out / "work", out / "logs"
    reader = lambda: ParquetReader(str(corpus_dir), glob_pattern="*.parquet")  # noqa: E731
    stages = [
        LocalPipelineExecutor(pipeline=[reader(), MinhashDedupSignature(output_folder=str(work / "sigs"), config=config)],
                              tasks=tasks, workers=1, logging_dir=str(logs / "1")),
        LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"),
                                                            config=config)],
                              tasks=config.num_buckets, workers=1, logging_dir=str(logs / "2")),
        LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"),
                                                            config=config, save_cluster_id=True)],
                              tasks=1, workers=1, logging_dir=str(logs / "3")),
        LocalPipelineExecutor(pipeline=[reader(), MinhashDedupFilter(input_folder=str(work / "remove"), load_cluster_ids=True,
                                                                     exclusion_writer=ParquetWriter(str(out / "removed"), compression="zstd", expand_metadata=True)),
                                        ParquetWriter(str(out / "kept"), compression="zstd", expand_metadata=True)],
                              tasks=tasks, workers=1, logging_dir=str(logs / "4")),
    ]
    started = time.time()
    walls = []
    for stage in stages:
        t0 = time.time()
        stage.run()
        walls.append(round(time.time() - t0, 2))
    return {"wall": time.time() - started, "cpu": _cpu_seconds(), "peak_rss": _peak_rss(),
            "passes": dict(zip(["signatures", "buckets", "cluster", "filter"], walls))}


def dedup(args: argparse.Namespace) -> None:
    import shutil

    dt_python = ensure_dt_venv(Path(args.dt_venv))
    work = Path(args.work)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        corpus = work / f"corpus-{n}"
        shards = max(2, n // 10_000)
        if not (corpus / "truth.json").exists():
            t0 = time.time()
            truth = make_corpus(n, corpus, shards)
            (corpus / "truth.json").write_text(json.dumps(truth))
            print(f"corpus {n:,} docs in {shards} shards: {time.time() - t0:.0f}s", flush=True)
        systems = args.systems.split(",")
        results: dict[str, list[dict]] = {s: [] for s in systems}
        for rep in range(args.repeats):
            for system in systems:  # interleaved
                out = work / f"out-{n}-{system}-{rep}"
                shutil.rmtree(out, ignore_errors=True)
                python = str(dt_python) if system == "datatrove" else sys.executable
                cmd = [python, __file__, "_run", system, str(corpus), str(out), str(shards)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
                if proc.returncode != 0:
                    sys.exit(f"{system} failed at {n:,} docs:\n{proc.stderr[-3000:]}")
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                res.update(score(corpus, out, system))
                results[system].append(res)
                print(f"  {n:>8,} {system:<10} rep {rep}: wall {res['wall']:7.1f}s cpu {res['cpu']:7.1f}s  "
                      f"{n / res['cpu']:8.0f} docs/cpu-s  "
                      f"peak {res['peak_rss'] / 2**20:5.0f} MiB  removed {res['removed']:,}  recall {res['recall']:.3f}  "
                      f"precision {res['precision']:.3f}  <0.5: {res['below_0_5']}  passes {res['passes']}", flush=True)
                if not args.keep:
                    shutil.rmtree(out, ignore_errors=True)
        rows.append((n, results))
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end (shared with other work); "
          f"one worker per system")
    print("docs/s/core = documents / CPU seconds (user + sys, process and children; one worker); wall is inflated "
          "by whatever else runs")
    print(f"{'docs':>8} {'system':<10} {'wall s (min-med)':>17} {'cpu s (min-med)':>16} {'docs/s/core':>12} {'peak RSS':>9} "
          f"{'recall':>7} {'precision':>9} {'<0.5':>5} {'ratio':>6}")
    for n, results in rows:
        med = {s: statistics.median(r["cpu"] for r in rs) for s, rs in results.items()}
        for system, rs in results.items():
            walls = sorted(r["wall"] for r in rs)
            cpus = sorted(r["cpu"] for r in rs)
            r0 = rs[-1]
            ratio = f"{med['datatrove'] / med['refinery']:.1f}x" if system == "refinery" and "datatrove" in med else ""
            print(f"{n:>8,} {system:<10} {walls[0]:>8.1f}-{statistics.median(walls):<8.1f} "
                  f"{cpus[0]:>7.1f}-{med[system]:<8.1f} {n / med[system]:>12.0f} "
                  f"{max(r['peak_rss'] for r in rs) / 2**20:>6.0f} MiB {r0['recall']:>7.3f} {r0['precision']:>9.3f} "
                  f"{max(r['below_0_5'] for r in rs):>5} {ratio:>6}")


# ================================================================================================
# filter (the filter-chain comparison; its own engineer fills this section)
# ================================================================================================
def filter_chain(args: argparse.Namespace) -> None:
    """URL filter -> trafilatura -> LID -> Gopher, refinery vs datatrove: benchmarks/vs_datatrove_filter.py."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vs_datatrove_filter import filter_chain as run

    run(args)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_filter_run":  # one measured filter-chain run (refinery)
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from vs_datatrove_filter import child_main

        child_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_run":  # one measured run, in its own process
        system, corpus, out, shards = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])
        if system == "datatrove":
            res = run_datatrove(corpus, out, shards)
        else:  # "refinery", or "refinery-unverified" (verification off: what the check costs and prevents)
            res = run_refinery(corpus, out, verify=system == "refinery")
        print(json.dumps(res))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dedup", help="MinHash dedup: refinery vs datatrove's four-stage MinhashDedup")
    d.add_argument("--sizes", default="20000,200000")
    d.add_argument("--repeats", type=int, default=2)
    d.add_argument("--work", default="/tmp/vs-datatrove")
    d.add_argument("--dt-venv", default="/tmp/dt-venv")
    d.add_argument("--keep", action="store_true", help="keep the output directories")
    d.add_argument("--systems", default="refinery,datatrove", help="also: refinery-unverified")
    d.set_defaults(func=dedup)
    f = sub.add_parser("filter", help="the filter chain (URL filter -> extraction -> LID -> Gopher)")
    f.add_argument("--dt-venv", default="/tmp/dt-venv")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vs_datatrove_filter import add_arguments

    add_arguments(f)
    f.set_defaults(func=filter_chain)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
