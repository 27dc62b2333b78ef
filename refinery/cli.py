"""The ``refinery`` command line."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn raw web crawls into a clean pretraining corpus.")
console = Console(stderr=False)
err = Console(stderr=True)

#: Modules that add their own commands with ``register(app)``; keeps this file small.
COMMAND_MODULES: list[str] = []


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def run(
    config: Path = typer.Argument(..., help="pipeline YAML, e.g. configs/refinedweb.yaml"),
    input: Optional[str] = typer.Option(None, "--input", "-i", help="input directory/file (local path or s3://)"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="output run directory (local path or s3://)"),
    executor: Optional[str] = typer.Option(None, help="local (default) or ray"),
    workers: Optional[int] = typer.Option(None, help="parallel workers (default: all cores)"),
    force: bool = typer.Option(False, help="redo shards that already finished"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run a pipeline over every shard of INPUT, writing kept/removed Parquet and stats to OUTPUT."""
    from refinery.config import ConfigError, load_config
    from refinery.pipeline import run_pipeline
    from refinery.stats.funnel import render_funnel

    _setup_logging(verbose)
    try:
        cfg = load_config(config)
        summary = run_pipeline(cfg, input, output, executor=executor, workers=workers, force=force)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(2)
    if summary.stats:
        console.print(render_funnel(summary.stats, title=f"{cfg.name}: {summary.output}"))
    if summary.failed:
        err.print(f"[red]{len(summary.failed)} shard(s) failed[/red] (details in {summary.output}/failed/):")
        for o in summary.failed:
            err.print(f"  {o.shard}: {(o.error or '').splitlines()[0]}", highlight=False)
        raise typer.Exit(1)


@app.command()
def stats(
    run_dir: str = typer.Argument(..., help="a run's output directory (local or s3://)"),
    json_out: bool = typer.Option(False, "--json", help="print the merged stats as JSON"),
) -> None:
    """Print a run's funnel: documents in/out and removed, per stage and per reason."""
    import json

    from refinery.stats.funnel import load_run_stats, render_funnel

    try:
        summary = load_run_stats(run_dir)
    except FileNotFoundError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    if json_out:
        console.print_json(json.dumps(summary))
    else:
        console.print(render_funnel(summary, title=f"funnel: {run_dir}"))


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
