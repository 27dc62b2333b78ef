"""``refinery dedup``: deduplicate a run directory into a new run directory."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from refinery.cli_common import VERBOSE_HELP, check_shard_log_interval, check_uris, fail, print_error, remake_report, setup_logging
from refinery.cli_common import out as console


def register(app: typer.Typer) -> None:
    app.command("dedup")(dedup)


def dedup(
    run_dir: str = typer.Argument(..., help="a run directory (uses its kept/*.parquet) or a directory of Parquet shards"),
    output: str = typer.Option(..., "--output", "-o", metavar="URI", help="the new run directory (local path or s3://)"),
    method: str | None = typer.Option(None, help="minhash (default), exact, url, substring, lines or decontaminate (a YAML names its benchmarks)"),
    config: str | None = typer.Option(None, "--config", "-c", metavar="PATH", help="dedup YAML, e.g. configs/dedup.yaml"),
    name: str | None = typer.Option(None, help="the pass's name (default <method>_dedup): labels its removals "
                                    "(removed_stage, the funnel's row) and passes/<name>.json, like the name: of a recipe's dedup entry"),
    preset: str | None = typer.Option(None, help="MinHash preset: default (14x8 of 128) or refinedweb (450x20 of 9000)"),
    bands: int | None = typer.Option(None, help="LSH bands"),
    rows: int | None = typer.Option(None, help="MinHash values per band"),
    num_perm: int | None = typer.Option(None, help="MinHash permutations (>= bands x rows)"),
    ngram: int | None = typer.Option(None, help="words per shingle (default 5)"),
    seed: int | None = typer.Option(None, help="hash seed"),
    backend: str | None = typer.Option(None, help="MinHash backend: rensa (default) or numpy"),
    min_tokens: int | None = typer.Option(None, help="substring: cut duplicated spans of at least this many tokens (50)"),
    memory_budget: str | None = typer.Option(None, help="per-task memory for bucket/cluster/suffix-array passes, e.g. 2GiB"),
    partitions: int | None = typer.Option(None, help="force the number of partitions"),
    executor: str | None = typer.Option(None, help="local (process pool, default) or ray"),
    workers: int | None = typer.Option(None, min=1, help="parallel workers (default: all cores)"),
    ray_address: str | None = typer.Option(None, help="an existing Ray cluster (default: start a local one)"),
    work_dir: str | None = typer.Option(None, metavar="URI", help="dedup index / intermediate files (default: OUTPUT/dedup)"),
    force: bool = typer.Option(False, help="recompute every pass and shard"),
    json_out: bool = typer.Option(False, "--json", help="print the dedup stats as JSON"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Remove duplicates across all shards of RUN_DIR into a new run directory.

    Methods: MinHash (fuzzy), exact text, URL, exact substrings, repeated lines, or benchmark
    decontamination. OUTPUT gets kept/, removed/ and stats like a pipeline run, plus
    OUTPUT/dedup_stats.json. Ctrl-C or SIGTERM stops it with one line (exit code 130 or 143), its
    lock or S3 claim released: the same command resumes."""
    from refinery.dedup.config import DedupConfigError, load_dedup_config
    from refinery.dedup.driver import DedupError, run_dedup
    from refinery.executors import TaskError
    from refinery.dedup.passes import DedupInputError
    from refinery.io.fs import StorageError

    setup_logging(verbose)
    check_shard_log_interval()
    check_uris(RUN_DIR=run_dir, **{"--output": output, "--work-dir": work_dir})
    out = console
    try:
        cfg = load_dedup_config(config, {
            "method": method, "name": name, "minhash.preset": preset, "minhash.bands": bands, "minhash.rows": rows,
            "minhash.num_perm": num_perm, "minhash.ngram": ngram, "minhash.seed": seed, "minhash.backend": backend,
            "substring.min_tokens": min_tokens, "memory_budget": memory_budget, "partitions": partitions,
            "executor.type": executor, "executor.workers": workers, "executor.ray_address": ray_address,
        })
        # the executor is made from cfg.executor by run_dedup, inside the output's lock or claim:
        # made here, it outlived them (released while an interrupted dedup's workers still wrote)
        stats = run_dedup(run_dir, output, cfg, work_dir=work_dir, force=force)
    except (DedupConfigError, DedupInputError, StorageError, ValueError) as exc:
        fail(exc)
    except (DedupError, TaskError) as exc:
        print_error(exc, "dedup failed:")
        raise typer.Exit(1)
    remake_report(output)  # OUTPUT is a run directory: a report of it made before now shows an earlier state
    if json_out:
        out.print_json(json.dumps(stats))
        return
    table = Table(title=f"dedup ({stats['method']}): {output}")
    table.add_column("")
    table.add_column("value", justify="right")
    for key in ("docs_read", "docs_kept", "docs_removed", "docs_with_keys", "candidate_pairs", "clusters",
                "docs_in_clusters", "largest_cluster", "tokens", "cut_tokens", "docs_cut", "wall_seconds"):
        if key in stats:
            table.add_row(key, f"{stats[key]:,}" if isinstance(stats[key], int) else str(stats[key]))
    hist = stats.get("cluster_size_histogram") or {}
    if hist:
        table.add_row("cluster sizes", ", ".join(f"{k}: {v}" for k, v in hist.items()))
    for name, p in stats.get("passes", {}).items():
        table.add_row(f"pass {name}", f"{p.get('wall_seconds', 0):.1f}s, peak RSS {p.get('peak_rss_max', 0) / 2**20:.0f} MiB")
    out.print(table)
