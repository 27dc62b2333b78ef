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
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole: people grep and copy them

#: Modules that add their own commands with ``register(app)``; keeps this file small.
COMMAND_MODULES: list[str] = [
    "refinery.cli_report",
    "refinery.cli_dedup",
    "refinery.cli_classifiers",
    "refinery.cli_tokens",
    "refinery.cli_scale",
]


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
    force: bool = typer.Option(False, help="redo the passes whose config changed (or all) and every pass after them"),
    limit: Optional[int] = typer.Option(None, min=1, help="sample mode: read at most N documents per input shard"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run a recipe over every shard of INPUT into the run directory OUTPUT: the document stages,
    then each dedup pass, then tokenization, each pass resuming where it stopped."""
    from refinery.config import ConfigError, load_config
    from refinery.pipeline import run_pipeline
    from refinery.stats.funnel import render_funnel

    _setup_logging(verbose)
    try:
        cfg = load_config(config)
        summary = run_pipeline(cfg, input, output, executor=executor, workers=workers, force=force, limit=limit)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(2)
    if summary.stats:
        out = console if console.is_terminal else Console(width=160)
        out.print(render_funnel(summary.stats, title=f"{cfg.name}: {summary.output}"))
    if summary.failed:
        blocked = [n for n, s in summary.passes.items() if s == "blocked"]
        err.print(f"[red]{len(summary.failed)} shard(s) failed[/red] in pass {summary.failed_pass} "
                  f"(details in its failed/ directory){'; not run: ' + ', '.join(blocked) if blocked else ''}:")
        for o in summary.failed:
            err.print(f"  {o.shard}: {o.first_error_line}", highlight=False)
        raise typer.Exit(1)
    console.print("passes: " + ", ".join(f"{n} {s}" for n, s in summary.passes.items()), highlight=False, soft_wrap=True)


@app.command()
def stats(
    run_dir: Optional[str] = typer.Argument(None, help="a run's output directory (local or s3://)"),
    json_out: bool = typer.Option(False, "--json", help="print the merged stats as JSON"),
    compare: Optional[tuple[str, str]] = typer.Option(
        None, "--compare", metavar="RUN_A RUN_B", help="show how each stage/reason moved from run A to run B"
    ),
) -> None:
    """Print a run's funnel (documents in/out and removed, per stage and per reason), or compare two runs."""
    import json

    from refinery.io.fs import StorageError
    from refinery.stats.compare import compare_rows, render_compare
    from refinery.stats.funnel import load_run_stats, render_funnel

    if (run_dir is None) == (compare is None):
        err.print("[red]error:[/red] give either RUN_DIR or --compare RUN_A RUN_B")
        raise typer.Exit(2)
    try:
        runs = [load_run_stats(d) for d in (compare or (run_dir,))]
    except (FileNotFoundError, StorageError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2)
    # piped or captured output: wide enough that no number is cut to "12…"
    out = console if console.is_terminal else Console(width=220)
    if compare:
        if json_out:
            out.print_json(json.dumps(compare_rows(*runs)))
        else:
            out.print(render_compare(*runs, name_a=compare[0], name_b=compare[1]))
    elif json_out:
        out.print_json(json.dumps(runs[0]))
    else:
        out.print(render_funnel(runs[0], title=f"funnel: {run_dir}"))


@app.command()
def status(
    run_dir: str = typer.Argument(..., help="a run's output directory (local or s3://)"),
    json_out: bool = typer.Option(False, "--json", help="print the status as JSON"),
) -> None:
    """Where a run stands: shards finished / failed / pending, documents so far. Exit code 0 when
    complete, 1 when shards failed, 3 while shards are pending."""
    import json

    from refinery.status import run_status

    try:
        st = run_status(run_dir)
    except FileNotFoundError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2)
    if json_out:
        console.print_json(json.dumps(st.to_dict()))
    else:
        console.print(
            f"{st.name or 'run'} {run_dir}: {st.shards_finished}/{st.shards_planned} shards finished, "
            f"{st.shards_failed} failed, {st.shards_pending} pending; {st.docs_read:,} documents read, "
            f"{st.docs_kept:,} kept; {st.shard_seconds:.1f} shard-seconds", highlight=False, soft_wrap=True,
        )
        for p in st.passes:
            console.print(f"  pass {p['name']:<16} {p['state']:<9} {p.get('detail', '')}", highlight=False, soft_wrap=True)
        for shard, error in sorted(st.failed.items()):
            console.print(f"  failed {shard}: {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if st.complete else 1 if st.shards_failed else 3)


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
