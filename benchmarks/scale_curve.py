"""The scale curve: the recipe's text passes at 10k, 100k, 1M documents, per pass, per executor.

    python benchmarks/scale_curve.py run --sizes 10000,100000 --executor local [--workers 2]
    python benchmarks/scale_curve.py run --sizes 10000 --executor ray2     # two Ray nodes on loopback
    python benchmarks/scale_curve.py report                                # table + docs/scale-curve.svg

Input: ``benchmarks/corpus.py`` corpora (real text recombined, near-duplicates injected at known
rates; generated once per size under ``--work`` and reused). They are already-extracted documents,
so the recipe runs from its text stages on: configs/refinedweb.yaml minus url_filter / prescreen /
extract (the stages that need HTML; extraction speed is measured by benchmarks/extraction.py and
vs_datatrove.py) -- language_id, gopher_*, line_corrections, pii, toxicity, quality, then the
lines / url / minhash / substring dedup passes and tokenization.

Executors: ``local`` (process pool, ``--workers``), ``ray`` (a local Ray cluster of ``--workers``
CPUs), ``ray2`` (two Ray nodes of one CPU each on this machine, ``ray start`` under temp dirs of
their own, as the SageMaker bootstrap starts them; wall time excludes starting Ray).

Per pass it records: documents in, wall seconds, docs/s per core (docs / wall / workers), docs per
CPU-second of our process tree (the figure that survives a shared machine's load), peak RSS
per task (the workers' high-water mark the task reported: long-lived workers carry the models of
earlier passes in it) against the pass's ``memory_budget``, and the removals; plus the machine load
(``uptime``) before and after, since the 2 cores are shared. Each run appends one JSON line to
``--work``/results.jsonl (with the dedup passes' recall against the generator's truth); ``report``
renders them. Figures and findings: docs/benchmarks.md, "Scale curve".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import psutil  # noqa: E402
import yaml  # noqa: E402

from corpus import CorpusSpec, generate  # noqa: E402

#: stages that read HTML: not applicable to already-extracted documents
HTML_STAGES = ("url_filter", "prescreen", "extract")
DEFAULT_WORK = Path("/tmp/refinery-scale")


def recipe_spec(name: str, executor: str) -> dict[str, Any]:
    spec = yaml.safe_load((ROOT / "configs" / "refinedweb.yaml").read_text())
    spec["name"] = name
    spec["stages"] = [s for s in spec["stages"] if s["type"] not in HTML_STAGES]
    spec["executor"] = {"type": "ray" if executor.startswith("ray") else "local", "object_store_memory": 256 * 2**20}
    return spec


def corpus_dir(work: Path, docs: int, seed: int) -> Path:
    """The corpus of ``docs`` documents, generated on first use (streamed, bounded memory)."""
    d = work / f"corpus-{docs}" if seed == 0 else work / f"corpus-{docs}-s{seed}"
    meta = d / "corpus.json"
    if meta.exists() and json.loads(meta.read_text())["docs"] == docs:
        return d
    shutil.rmtree(d, ignore_errors=True)
    print(f"generating {docs:,} documents into {d} ...", flush=True)
    generate(d, CorpusSpec(docs=docs, seed=seed), log=True)
    return d


class TreeMeter:
    """Peak summed RSS of this process tree and its CPU seconds over time, sampled every 0.5 s.

    Why CPU seconds: the 2 cores are shared with other engineers' work, so wall-clock docs/s per
    core moves with the load; docs per CPU-second of our own processes moves much less. A process
    that exits keeps the CPU time last sampled for it (under-counts its last < 0.5 s)."""

    def __init__(self, interval: float = 0.5, roots: list[psutil.Process] | None = None) -> None:
        self.roots = roots or []  # processes outside our tree to count too (a `ray start` node's)
        self.peak = 0
        self.samples: list[tuple[float, float]] = []  # (time.time(), CPU seconds so far)
        self._cpu: dict[int, float] = {}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        rss = 0
        procs = {p.pid: p for p in [me, *me.children(recursive=True)]}
        for root in self.roots:
            try:
                procs.update({p.pid: p for p in [root, *root.children(recursive=True)]})
            except psutil.Error:
                pass
        for p in procs.values():
            try:
                with p.oneshot():
                    rss += p.memory_info().rss
                    t = p.cpu_times()
                    self._cpu[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        self.peak = max(self.peak, rss)
        self.samples.append((time.time(), sum(self._cpu.values())))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def cpu_between(self, t0: float, t1: float) -> float:
        def at(t: float) -> float:  # before the first sample: the first (the run's baseline)
            before = [c for s, c in self.samples if s <= t]
            return before[-1] if before else (self.samples[0][1] if self.samples else 0.0)
        return at(t1) - at(t0)

    def __enter__(self) -> "TreeMeter":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _budget(entry: dict[str, Any]) -> int | None:
    from refinery.dedup.config import parse_size

    b = entry.get("memory_budget")
    return parse_size(b) if b else None


def pass_figures(out: Path, spec: dict[str, Any], summary: Any, workers: int, meter: TreeMeter) -> list[dict[str, Any]]:
    """Per pass: docs, wall, docs/s/core, peak RSS per task, budget, removals (from the run dir)."""
    budgets = {f"{d['method']}_dedup": _budget(d) for d in spec.get("dedup", [])}
    rows = []
    for p in [json.loads((out / "passes" / f"{name}.json").read_text()) for name in summary.passes]:
        name, s = p["pass"], p["summary"]
        docs = s.get("docs_read", s.get("docs", 0))
        wall = s["wall_seconds"]
        end = datetime.strptime(p["finished_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp() + 0.5
        cpu = meter.cpu_between(end - wall, end)
        peak, partitions = None, None
        stats_file = out / name / "dedup_stats.json"
        if name == "filter":
            peak = max((o.result.get("peak_rss", 0) for o in summary.outcomes), default=0)
        elif stats_file.exists():
            sub = json.loads(stats_file.read_text())["passes"]
            peak = max((v.get("peak_rss_max", 0) for v in sub.values() if isinstance(v, dict)), default=0)
            partitions = max((v.get("partitions", 1) for v in sub.values() if isinstance(v, dict)), default=1)
        rows.append({"pass": name, "docs": docs, "wall_s": round(wall, 2),
                     "docs_per_s_per_core": round(docs / wall / workers, 1) if wall else None,
                     "cpu_s": round(cpu, 1), "docs_per_cpu_s": round(docs / cpu, 1) if cpu > 0 else None,
                     "removed": s.get("docs_removed"), "tokens": s.get("tokens"),
                     "peak_rss_task_mb": round(peak / 2**20) if peak else None,
                     "budget_mb": round(budgets[name] / 2**20) if budgets.get(name) else None,
                     "partitions": partitions})
    return rows


def _removed_ids(out: Path, pass_name: str) -> set[str]:
    import pyarrow.parquet as pq

    ids: set[str] = set()
    for f in sorted((out / pass_name / "removed").glob("*.parquet")):
        ids.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    return ids


def dedup_vs_truth(out: Path, corpus: Path) -> dict[str, Any]:
    """Injected pairs found by the dedup pass meant for them (both documents reached the pass):
    near + exact copies by MinHash, URL duplicates by URL dedup; and MinHash removals of documents
    that are in no injected pair (false positives)."""
    import pyarrow.parquet as pq

    truth = pq.read_table(corpus / "truth", columns=["id", "kind", "source_id"]).to_pylist()
    # the passes in the run's order (the recipe moved lines dedup after MinHash in session 30)
    plan = json.loads((out / "run.json").read_text())
    order = [p["name"] for p in plan["passes"] if p.get("kind") != "tokenize"]
    removed = {p: _removed_ids(out, p) for p in order if p in ("filter", "lines_dedup", "url_dedup", "minhash_dedup")}
    gone_before: dict[str, set] = {}
    seen: set = set()
    for name in order:
        gone_before[name] = set(seen)
        seen |= removed.get(name, set())
    before_url, before_minhash = gone_before["url_dedup"], gone_before["minhash_dedup"]
    result: dict[str, Any] = {}
    for label, kinds, gone, pass_removed in (("minhash", ("near", "exact"), before_minhash, removed["minhash_dedup"]),
                                             ("url", ("url_dup",), before_url, removed["url_dedup"])):
        pairs = [(t["id"], t["source_id"]) for t in truth if t["kind"] in kinds
                 and t["id"] not in gone and t["source_id"] not in gone]
        hit = sum(1 for a, b in pairs if a in pass_removed or b in pass_removed)
        result[f"{label}_pairs"] = len(pairs)
        result[f"{label}_recall"] = round(hit / len(pairs), 4) if pairs else None
    in_pairs = {t["id"] for t in truth if t["source_id"]} | {t["source_id"] for t in truth if t["source_id"]}
    result["minhash_removed_outside_pairs"] = len(removed["minhash_dedup"] - in_pairs)
    return result


def accounted(out: Path) -> bool:
    """Every document pass and dedup pass accounts for each document: read = kept + removed."""
    ok = True
    for f in sorted((out / "passes").glob("*.json")):
        s = json.loads(f.read_text())["summary"]
        if "docs_read" in s:
            ok &= s["docs_read"] == s["docs_kept"] + s["docs_removed"]
    return ok


class TwoNodes:
    """Two Ray nodes of one CPU each on 127.0.0.1 (``ray start`` under temp dirs of our own, as the
    SageMaker bootstrap does); ``stop`` ends only the processes of those two temp dirs."""

    def __init__(self) -> None:
        import secrets

        from refinery.launch.bootstrap import RayNode
        from refinery.executors.ray_cluster import configure_environment

        configure_environment(local=True)  # usage stats off; no token on a loopback-only cluster
        tag = secrets.token_hex(3)
        self.nodes = [RayNode(f"/tmp/rfy-sc{tag}-{n}", num_cpus=1, object_store_memory=128 * 2**20) for n in ("h", "w")]
        port = _free_port()
        self.nodes[0].start_head("127.0.0.1", port)
        self.nodes[1].start_worker("127.0.0.1", port, "127.0.0.1")
        self.address = f"127.0.0.1:{port}"

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
            shutil.rmtree(node.temp_dir, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(kind: str) -> TwoNodes | None:
    """``ray``: nothing (run_pipeline starts a local cluster); ``ray2``: two 1-CPU nodes on loopback."""
    if kind != "ray2":
        return None
    cluster = TwoNodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    return cluster


def local_ray(workers: int) -> None:
    """A new local cluster, whatever ``/tmp/ray/ray_current_cluster`` says: ``ray.init()`` without an
    address joins the cluster that file names (any ``ray start`` on this machine, even a dead one)
    and then refuses ``num_cpus``. The executor then uses this cluster (Ray is initialised)."""
    import ray

    from refinery.executors.ray_cluster import configure_environment

    configure_environment(local=True)
    ray.init(address="local", num_cpus=workers, object_store_memory=256 * 2**20, include_dashboard=False,
             _node_ip_address="127.0.0.1", log_to_driver=False, namespace="refinery")


def run_one(work: Path, size: int, kind: str, workers: int, seed: int) -> dict[str, Any]:
    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline

    data = corpus_dir(work, size, seed)
    truth = json.loads((data / "corpus.json").read_text())
    out = work / f"run-{kind}-{size}"
    shutil.rmtree(out, ignore_errors=True)
    spec = recipe_spec(f"scale-{kind}-{size}", kind)
    cluster = start_cluster(kind)
    if kind == "ray":
        local_ray(workers)
    load_before = load_avg()
    try:
        roots = [p for node in cluster.nodes for p in node.processes()] if cluster is not None else []
        with TreeMeter(roots=roots) as rss:
            t0 = time.perf_counter()
            summary = run_pipeline(parse_config(spec), str(data / "docs"), str(out), executor=spec["executor"]["type"],
                                   workers=workers, progress=False)
            wall = time.perf_counter() - t0
        # local pool outcomes name a pid, Ray outcomes a node id
        nodes = sorted({o.node for o in summary.outcomes if o.node}) if kind.startswith("ray") else ["local"]
    finally:
        if kind.startswith("ray"):
            import ray

            ray.shutdown()
        if cluster is not None:
            cluster.stop()
            os.environ.pop("RAY_ADDRESS", None)
    if summary.failed or set(summary.passes.values()) != {"done"}:
        raise SystemExit(f"run {kind} {size}: passes {summary.passes}, failed shards {[o.name for o in summary.failed]}")
    passes = pass_figures(out, spec, summary, workers, rss)
    cpu = rss.samples[-1][1] - rss.samples[0][1]
    result = {
        "executor": kind, "docs": size, "workers": workers, "shards": len(summary.outcomes), "nodes": len(nodes),
        "wall_s": round(wall, 1), "docs_per_s_per_core": round(size / wall / workers, 1),
        "cpu_s": round(cpu, 1), "docs_per_cpu_s": round(size / cpu, 1),
        "tree_peak_rss_mb": round(rss.peak / 2**20), "load_before": load_before, "load_after": load_avg(),
        "accounted": accounted(out), "injected": truth["kinds"], "vs_truth": dedup_vs_truth(out, data), "text_mb": round(truth["text_chars"] / 1e6),
        "passes": passes, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    shutil.rmtree(out, ignore_errors=True)  # 1M documents: GBs of shards
    return result


def print_result(r: dict[str, Any]) -> None:
    print(f"\n{r['executor']} x{r['workers']} ({r['nodes']} node(s)), {r['docs']:,} docs in {r['shards']} shards: "
          f"{r['wall_s']:.0f} s total, {r['docs_per_s_per_core']:.1f} docs/s/core end to end, {r['docs_per_cpu_s']:.1f} "
          f"docs per CPU-second of our processes; process-tree peak "
          f"{r['tree_peak_rss_mb']} MB; load {r['load_before']} -> {r['load_after']}; accounted: {r['accounted']}")
    print(f"injected {r['injected']}; found: {r['vs_truth']}")
    print(f"{'pass':<17}{'docs in':>10}{'wall s':>9}{'docs/s/core':>13}{'docs/CPU-s':>12}{'removed':>9}{'peak RSS/task':>15}{'budget':>9}")
    for p in r["passes"]:
        peak = f"{p['peak_rss_task_mb']} MB" if p["peak_rss_task_mb"] else "-"
        budget = f"{p['budget_mb']} MB" if p["budget_mb"] else "-"
        print(f"{p['pass']:<17}{p['docs']:>10,}{p['wall_s']:>9.1f}{p['docs_per_s_per_core'] or 0:>13.1f}{p['docs_per_cpu_s'] or 0:>12.1f}"
              f"{p['removed'] if p['removed'] is not None else '-':>9}{peak:>15}{budget:>9}")


# -- report ----------------------------------------------------------------------------------------
def load_results(work: Path) -> list[dict[str, Any]]:
    f = work / "results.jsonl"
    latest: dict[tuple[str, int], dict] = {}
    for line in f.read_text().splitlines() if f.exists() else []:
        r = json.loads(line)
        latest[(r["executor"], r["docs"])] = r  # a rerun replaces the earlier figure
    return sorted(latest.values(), key=lambda r: (r["executor"], r["docs"]))


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per run (end to end), then per pass of each executor vs size."""
    out = ["| executor | docs | shards | wall s | docs/s/core (wall) | docs per CPU-s | process-tree peak MB | "
           "load 1-min before→after | MinHash recall (pairs) | URL recall | MinHash removals outside pairs |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r.get("vs_truth") or {}
        mh = f"{t['minhash_recall']:.4f} ({t['minhash_pairs']:,})" if t.get("minhash_recall") is not None else "-"
        url = f"{t['url_recall']:.3f}" if t.get("url_recall") is not None else "-"
        out.append(f"| {r['executor']} x{r['workers']}{' (2 nodes)' if r['nodes'] == 2 else ''} | {r['docs']:,} | "
                   f"{r['shards']} | {r['wall_s']:,.0f} | {r['docs_per_s_per_core']:.1f} | {r.get('docs_per_cpu_s', 0):.1f} | "
                   f"{r['tree_peak_rss_mb']:,} | {r['load_before'][0]}→{r['load_after'][0]} | {mh} | {url} | "
                   f"{t.get('minhash_removed_outside_pairs', '-')} |")
    for kind in sorted({r["executor"] for r in results}):
        runs = [r for r in results if r["executor"] == kind]
        if len(runs) < 2 and kind != "local":
            continue
        base = {p["pass"]: p for p in runs[0]["passes"]}
        out += ["", f"Per pass, {kind} executor: docs/s/core (wall) · docs per CPU-second (ratio to the "
                f"{runs[0]['docs']:,} run) · peak RSS per task MB (budget)", "",
                "| pass | " + " | ".join(f"{r['docs']:,} docs" for r in runs) + " |", "|---|" + "---|" * len(runs)]
        for name in base:
            cells = []
            for r in runs:
                p = next(x for x in r["passes"] if x["pass"] == name)
                b = base[name].get("docs_per_cpu_s")
                ratio = f" ({p['docs_per_cpu_s'] / b:.2f}x)" if b and p.get("docs_per_cpu_s") and r is not runs[0] else ""
                peak = f"{p['peak_rss_task_mb']}" if p.get("peak_rss_task_mb") else "-"
                budget = f" ({p['budget_mb']})" if p.get("budget_mb") else ""
                cells.append(f"{p['docs_per_s_per_core'] or 0:,.0f} · {p.get('docs_per_cpu_s') or 0:,.0f}{ratio} · {peak}{budget}")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def curve_svg(results: list[dict[str, Any]]) -> str:
    """docs/s/core vs documents (log x), one line per executor and per pass of the local runs."""
    import math

    from refinery.stats.svg import AXIS, GRID, INK, KEPT, REASON_COLORS, _svg, _t

    series: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if r.get("docs_per_cpu_s"):
            series.setdefault(f"{r['executor']}: recipe, docs/CPU-s", []).append((r["docs"], r["docs_per_cpu_s"]))
        series.setdefault(f"{r['executor']}: recipe, docs/s/core wall", []).append((r["docs"], r["docs_per_s_per_core"]))
        if r["executor"] == "local":
            for p in r["passes"]:
                if p.get("docs_per_cpu_s"):
                    series.setdefault(f"local {p['pass']}, docs/CPU-s", []).append((r["docs"], p["docs_per_cpu_s"]))
    w, h, left, right, top, bottom = 820, 440, 70, 270, 30, 50
    xs = [x for s in series.values() for x, _ in s] or [10_000]
    ys = [y for s in series.values() for _, y in s] or [1]
    x0, x1 = math.log10(min(xs)) - 0.15, math.log10(max(xs)) + 0.15
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))

    def px(x: float) -> float:
        return left + (math.log10(x) - x0) / (x1 - x0) * (w - left - right)

    def py(y: float) -> float:
        return h - bottom - (math.log10(y) - y0) / max(1e-9, y1 - y0) * (h - top - bottom)

    body = [f'<rect x="0" y="0" width="{w}" height="{h}" fill="white"/>']
    for e in range(y0, y1 + 1):
        body.append(f'<line x1="{left}" x2="{w - right}" y1="{py(10 ** e):.1f}" y2="{py(10 ** e):.1f}" stroke="{GRID}"/>')
        body.append(_t(left - 6, py(10 ** e) + 4, f"{10 ** e:,}", 11, "end", AXIS))
    for x in sorted(set(xs)):
        body.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{h - bottom}" stroke="{GRID}"/>')
        body.append(_t(px(x), h - bottom + 16, f"{x:,}", 11, "middle", AXIS))
    body.append(_t((left + w - right) / 2, h - 10, "documents in the corpus (log scale)", 12))
    body.append(_t(16, (top + h - bottom) / 2, "documents per second (log scale)", 12, "middle", AXIS,
                   extra=f'transform="rotate(-90 16 {(top + h - bottom) / 2})"'))
    for i, (name, pts) in enumerate(sorted(series.items())):
        palette = (KEPT, INK, *REASON_COLORS, "#6aa84f", "#3d85c6", "#999999")
        color = palette[i % len(palette)]
        dash = '' if ": recipe" in name else ' stroke-dasharray="5 3"'
        pts = sorted(pts)
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        body += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>' for x, y in pts]
        ly = top + 14 + i * 18
        body.append(f'<line x1="{w - right + 12}" x2="{w - right + 36}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2"{dash}/>')
        body.append(_t(w - right + 42, ly, name, 11, "start"))
    return _svg(w, h, body, "refinery scale curve: throughput vs corpus size")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["run", "report", "generate"])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--executor", default="local", choices=["local", "ray", "ray2"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="corpora, run dirs, results.jsonl")
    ap.add_argument("--svg", type=Path, default=ROOT / "docs" / "scale-curve.svg")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    if args.what == "generate":
        for size in sizes:
            corpus_dir(args.work, size, args.seed)
        return
    if args.what == "report":
        results = load_results(args.work)
        print(table(results))
        args.svg.write_text(curve_svg(results))
        print(f"\nwrote {args.svg}")
        return
    workers = 2 if args.executor == "ray2" else args.workers
    for size in sizes:
        result = run_one(args.work, size, args.executor, workers, args.seed)
        print_result(result)
        with open(args.work / "results.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
