"""The ``refinery`` command line."""

from __future__ import annotations

import importlib
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.text import Text

from refinery import cli_common, interrupts
from refinery.cli_common import VERBOSE_HELP, err, fail, print_error, setup_logging

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from refinery.pipeline import RunSummary

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn raw web crawls into a clean pretraining corpus.")
#: markup off everywhere: paths, stage names and errors are user data, never rich markup
console = Console(stderr=False, markup=False, highlight=False)

#: Modules that add their own commands with ``register(app)``; keeps this file small.
COMMAND_MODULES: list[str] = [
    "refinery.cli_report",
    "refinery.cli_dedup",
    "refinery.cli_classifiers",
    "refinery.cli_tokens",
    "refinery.cli_scale",
    "refinery.cli_eval",
    "refinery.cli_watchdog",
]


def _setup_logging(verbose: bool) -> None:
    setup_logging(verbose)


def _failed_fraction(value: Optional[float]) -> Optional[float]:
    """``--max-failed-fraction`` within [0, 1); NaN named as such (click's range check let it
    through to a bound it never broke: "less than or equal to 0.999999", found by adversarial testing)."""
    if value is None:
        return None
    if value != value:
        raise typer.BadParameter("nan is not a share; give a number from 0 to below 1 (e.g. 0.01)")
    if not 0.0 <= value < 1.0:
        raise typer.BadParameter(f"{value:g} is not from 0 to below 1 (1 would let every shard fail)")
    return value


def _version(value: bool) -> None:
    if value:
        from refinery import __version__

        console.print(f"refinery {__version__}", soft_wrap=True)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit"),
) -> None:
    """Turn raw web crawls into a clean pretraining corpus."""


@app.command()
def run(
    config: Path = typer.Argument(..., help="pipeline YAML, e.g. configs/refinedweb.yaml"),
    input: Optional[str] = typer.Option(None, "--input", "-i", metavar="URI",
                                         help="input directory/file (local path or s3://)"),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="URI",
                                          help="output run directory (local path or s3://)"),
    executor: Optional[str] = typer.Option(None, help="local (default) or ray"),
    workers: Optional[int] = typer.Option(None, min=1, help="parallel workers (default: all cores)"),
    force: bool = typer.Option(False, help="redo the passes whose config changed (or all) and every pass after them"),
    limit: Optional[int] = typer.Option(None, min=1, help="sample mode: read at most N documents per input shard"),
    max_failed_fraction: Optional[float] = typer.Option(
        None, callback=_failed_fraction, help="share of the input's shards that may fail (after retries) and be set aside "
        "while the later passes run on the rest; a rerun retries them (default: the config's executor."
        "max_failed_fraction, 0)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Run a recipe over every shard of INPUT into the run directory OUTPUT.

    The document stages run first, then each dedup pass, then tokenization; each pass resumes
    where it stopped. Ctrl-C or SIGTERM stops it with one line (exit code 130 or 143), its lock or
    S3 claim released and its finished shards kept: the same command resumes."""
    from refinery.config import ConfigError, load_config
    from refinery.pipeline import run_pipeline
    from refinery.stats.funnel import render_funnel

    _setup_logging(verbose)
    try:
        cfg = load_config(config)
        if max_failed_fraction is not None:
            cfg.executor.max_failed_fraction = max_failed_fraction
        for note in cfg.notes():  # allowed, but probably not what was meant
            err.print(f"note: {note}", style="yellow", highlight=False, soft_wrap=True)
        summary = run_pipeline(cfg, input, output, executor=executor, workers=workers, force=force, limit=limit,
                               on_complete=_say_complete_if_interrupted)
    except ConfigError as exc:
        fail(exc)
    # a rerun that redid nothing remakes a report still showing an earlier state (its run was
    # stopped while remaking it): the report is never left stale by a finished `run`
    cli_common.remake_report(summary.output, only_if_stale=not any(s == "done" for s in summary.passes.values()))
    if summary.stats:
        from refinery.stats.alerts import limited_run_note, suspicious_removals

        out = console if console.is_terminal else Console(width=160, markup=False, highlight=False)
        out.print(render_funnel(summary.stats, title=f"{cfg.name}: {summary.output}"))
        # a --limit run's funnel reads like the whole input's: said here as `stats` says it
        for note in [limited_run_note({"limit": limit})] + suspicious_removals(summary.stats, input_name=input or cfg.input):
            if not note:
                continue
            err.print(f"note: {note}", style="yellow", highlight=False, soft_wrap=True)
    if summary.failed:
        blocked = [n for n, s in summary.passes.items() if s == "blocked"]
        denied = [o for o in summary.failed if _permission_denied(o.error)]
        if denied:  # one cause for every shard: say it once, with what to do
            # (not "writing to OUT": the refusal may be of a read, the input's or a worker's credentials')
            print_error(f"permission denied: {len(denied)} shard(s) failed ({denied[0].shard}: {denied[0].error_line}); "
                        f"{sum(o.status != 'failed' for o in summary.outcomes)} finished shard(s) of {summary.output} "
                        "are kept; grant the access and run the same command again to finish the rest")
            raise typer.Exit(1)
        err.print(Text.assemble((f"{len(summary.failed)} shard(s) failed", "red"),
                                f" in pass {summary.failed_pass} (details in its failed/ directory)"
                                f"{'; not run: ' + ', '.join(blocked) if blocked else ''}:"))
        for o in summary.failed:
            err.print(f"  {o.shard}: {o.error_line}")
        raise typer.Exit(1)
    if summary.set_aside:
        err.print(Text.assemble((f"{len(summary.set_aside)} of {len(summary.outcomes)} shard(s) failed and were set "
                                 "aside", "yellow"), " (executor.max_failed_fraction): the later passes ran without "
                                f"them, and a rerun retries them (details in the failed/ directory):"))
        for o in summary.set_aside:
            err.print(f"  {o.shard}: {o.error_line}")
    console.print("passes: " + ", ".join(f"{n} {s}" for n, s in summary.passes.items()), highlight=False, soft_wrap=True)


def _say_complete_if_interrupted(summary: "RunSummary") -> None:
    """From here on a Ctrl-C or SIGTERM (stopping the workers, the report, the funnel's printing)
    interrupts a complete run: said so, exit 0 (``main``), not "run the same command again to
    resume", whose rerun found every pass finished."""
    interrupts.finished(f"{summary.output} is complete (every pass finished: {', '.join(summary.passes)}); "
                        f"`refinery stats {summary.output}` prints its funnel")


@app.command()
def stats(
    run_dir: Optional[str] = typer.Argument(None, help="a run's output directory (local or s3://)"),
    json_out: bool = typer.Option(False, "--json", help="print the merged stats as JSON"),
    compare: Optional[tuple[str, str]] = typer.Option(
        None, "--compare", metavar="RUN_A RUN_B", help="show how each stage/reason moved from run A to run B"
    ),
    what_if: Optional[list[str]] = typer.Option(
        None, "--what-if", metavar="STAGE.PARAM=VALUE",
        help="what moving one threshold would remove or let pass, counted on the run's Parquet outputs "
             "(e.g. gopher_quality.min_words=100); given several times, what stricter values remove together"),
    pairs: Optional[str] = typer.Option(
        None, "--pairs", metavar="STAGE",
        help="sampled duplicates a dedup stage removed, each beside the document kept in its place "
             "(e.g. minhash_dedup, url_dedup)"),
    show: Optional[int] = typer.Option(
        None, "--show", min=0,
        help="with --what-if: documents listed, nearest the threshold first (20); with --pairs: pairs shown (10)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Print a run's funnel, compare runs, try a threshold, or show dedup pairs.

    The funnel: documents in, out and removed, per stage and per reason. --what-if: what moving one
    threshold would change. --pairs: removed duplicates beside the documents kept in their place."""
    import json

    if what_if and pairs is not None:
        fail("give --what-if or --pairs, not both")
    if what_if:  # several: counted together where exact, else refused in one line (h193)
        return _what_if(run_dir, what_if, 20 if show is None else show, json_out, compare)
    if pairs is not None:
        return _pairs(run_dir, pairs, 10 if show is None else show, json_out, compare)

    if verbose:  # refinery's debug logs (an error's traceback: main)
        setup_logging(True)

    from refinery.io.fs import StorageError
    from refinery.stats.compare import compare_rows, render_compare
    from refinery.stats.funnel import load_run_stats, render_funnel

    if (run_dir is None) == (compare is None):
        fail("give either RUN_DIR or --compare RUN_A RUN_B")
    cli_common.check_uris(RUN_DIR=run_dir, **{"--compare RUN_A": compare and compare[0], "--compare RUN_B": compare and compare[1]})
    try:
        runs = [load_run_stats(d) for d in (compare or (run_dir,))]
    except (FileNotFoundError, StorageError, ValueError) as exc:
        fail(exc)
    # piped or captured output: wide enough that no number is cut to "12…"
    out = console if console.is_terminal else Console(width=220, markup=False, highlight=False)
    if compare:
        if json_out:
            out.print_json(json.dumps(compare_rows(*runs)))
        else:
            from refinery.stats.compare import order_note, setting_changes

            out.print(render_compare(*runs, name_a=compare[0], name_b=compare[1]))
            for label, name, run in zip("AB", compare, runs):  # each table row's base: its own run
                read, kept = int(run.get("docs_read") or 0), int(run.get("docs_kept") or 0)
                out.print(f"{label}: {name}: {read:,} documents read, {kept:,} kept"
                          + (f" ({100 * kept / read:.1f}%)" if read else ""), highlight=False, markup=False)
            note = order_note(*runs)
            if note:
                err.print(f"note: {note}", style="yellow", highlight=False, soft_wrap=True)
            from refinery.stats.report import config_diff
            from refinery.stats.thresholds import load_run_manifest

            try:  # the settings that differ: the funnel alone does not say why the runs differ
                differing = [r for r in config_diff(*(load_run_manifest(d) for d in compare)) if r["differs"]]
            except (FileNotFoundError, StorageError, ValueError, KeyError):
                differing = []
            if differing:
                parts = setting_changes(differing)
                shown = "; ".join(parts[:12])
                err.print(f"note: the runs' settings differ in {len(differing)} key(s): {shown}"
                          f"{' ...' if len(parts) > 12 else ''} (`refinery report --compare` lists them)",
                          style="yellow", highlight=False, soft_wrap=True)
    elif json_out:
        out.print_json(json.dumps(runs[0]))
    else:
        out.print(render_funnel(runs[0], title=f"funnel: {run_dir}"))
    # notes go to stderr: `stats --json | jq` must read JSON alone (found by adversarial testing)
    from refinery.stats.alerts import limited_run_note, suspicious_removals

    for name, run in zip(compare or (run_dir,), runs):
        manifest = _run_manifest(name)
        for note in [limited_run_note(manifest)] + suspicious_removals(run, input_name=manifest.get("input")):
            if note:
                err.print(f"note: {name}: {note}", style="yellow", highlight=False, soft_wrap=True)
        if run.get("partial"):
            err.print(f"note: {name}: {run['partial']['note']}", style="yellow", highlight=False, soft_wrap=True)
        for aside in run.get("set_aside_shards") or []:  # their documents are in no count above
            err.print(f"note: {name}: input {aside.get('input') or aside['shard']} failed and was set aside, its "
                      f"documents not read: {aside.get('error') or 'see failed/'}", style="yellow",
                      highlight=False, soft_wrap=True)


def _what_if(run_dir: Optional[str], specs: list[str], show: int, json_out: bool, compare: Optional[tuple[str, str]]) -> None:
    """``stats RUN --what-if STAGE.PARAM=VALUE`` (refinery.stats.whatif), given several times: the
    thresholds moved together (refinery.stats.whatif_together)."""
    from refinery.stats.whatif import parse_spec, render_what_if, what_if
    from refinery.stats.whatif_together import render_what_if_together, what_if_together

    def parsed() -> list[tuple[str, str, float | None]]:
        out = []
        for spec in specs:
            stage, param, value = parse_spec(spec)
            _check_what_if_value(run_dir, spec, stage, param, value)
            out.append((stage, param, value))
        return out

    if len(specs) > 1:
        _one_run_view("--what-if", run_dir, compare, json_out, lambda: what_if_together(run_dir, parsed(), show=show),
                      render_what_if_together)
        return
    _one_run_view("--what-if", run_dir, compare, json_out, lambda: what_if(run_dir, *parsed()[0], show=show), render_what_if)


def _check_what_if_value(run_dir: str, spec: str, stage: str, param: str, value: float | None) -> None:
    """Refuse (ValueError, one line) a value a rerun would refuse (``min_words=-5``, a fraction
    above 1, ``null`` where the param takes no null): the what-if answered for a run that cannot be
    made (h173; a dedup pass's, h177; null, session 48)."""
    from refinery.rerun_refusal import rerun_refusal

    number: float | int | None = (value if value is None or not value.is_integer() or abs(value) >= 2**53
                                  else int(value))
    refusal = rerun_refusal(_run_manifest(run_dir), stage, param, number)
    if refusal:
        raise ValueError(f"--what-if {spec!r}: a rerun would refuse it: {refusal}")


def _pairs(run_dir: Optional[str], stage: str, show: int, json_out: bool, compare: Optional[tuple[str, str]]) -> None:
    """``stats RUN --pairs STAGE``: removed duplicates beside their kept twins (refinery.stats.pairs)."""
    from refinery.stats.pairs import dedup_pairs, render_pairs

    _one_run_view("--pairs", run_dir, compare, json_out, lambda: dedup_pairs(run_dir, stage, show=show), render_pairs)


def _one_run_view(option: str, run_dir: Optional[str], compare: Optional[tuple[str, str]], json_out: bool,
                  compute: Callable[[], dict], render: Callable[[dict], Iterable[str]]) -> None:
    """A ``stats`` view of one run (``--what-if``, ``--pairs``): its result as JSON or as lines, a
    storage or input error as one line."""
    import json

    from refinery.io.fs import StorageError
    from refinery.io.parquet import ShardReadError

    if run_dir is None or compare:
        fail(f"{option} takes one RUN_DIR (not --compare)")
    cli_common.check_uris(RUN_DIR=run_dir)
    try:
        result = compute()
    except (FileNotFoundError, StorageError, ShardReadError, ValueError) as exc:
        fail(exc)
    if json_out:
        console.print_json(json.dumps(result))
        return
    out = console if console.is_terminal else Console(width=220, markup=False, highlight=False)
    for line in render(result):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


def _run_manifest(run_dir: str) -> dict:
    """A run's run.json ({} when it cannot be read): its input, its --limit."""
    from refinery.io.fs import StorageError
    from refinery.stats.thresholds import load_run_manifest

    try:
        return load_run_manifest(run_dir) or {}
    except (FileNotFoundError, StorageError, ValueError, KeyError):
        return {}


@app.command()
def status(
    run_dir: str = typer.Argument(..., help="a run's output directory (local or s3://)"),
    json_out: bool = typer.Option(False, "--json", help="print the status as JSON"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Show where a run stands: each pass, its shards, who holds it now.

    Each pass is finished, running, stopped (interrupted: the same command resumes it), failed or
    pending; also the documents read and kept so far, and the command holding the run directory
    now (its lock's process, or its S3 claim and the claim's age). Exit code 0 when complete, 1 when shards
    failed, 3 while shards or passes are pending."""
    import json

    if verbose:  # refinery's debug logs (an error's traceback: main)
        setup_logging(True)

    from refinery.status import input_changes_line, run_status

    cli_common.check_uris(RUN_DIR=run_dir)
    try:
        st = run_status(run_dir, check_input=True)
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    if json_out:
        console.print_json(json.dumps(st.to_dict()))
    else:
        first = f" of {st.passes[0]['name']}" if len(st.passes) > 1 else ""
        passes_done = sum(p["state"] == "finished" for p in st.passes)
        # with passes still to run, "0 kept" read as "done, kept nothing" (found by adversarial testing)
        kept = (f"{st.docs_kept:,} kept" if st.complete or len(st.passes) < 2
                else f"{st.docs_kept:,} in the corpus so far ({passes_done} of {len(st.passes)} passes finished)")
        console.print(
            f"{st.name or 'run'} {run_dir}: {st.shards_finished}/{st.shards_planned} shards{first} finished, "
            f"{st.shards_failed} failed, " + (f"{len(st.set_aside)} set aside, " if st.set_aside else "")
            + f"{st.shards_pending} pending; {st.docs_read:,} documents read, "
            f"{kept}; {st.shard_seconds:.1f} shard-seconds", highlight=False, soft_wrap=True,
        )
        if st.held_by:  # another command at work on it now
            console.print(f"  in use by {st.held_by.line()}", highlight=False, soft_wrap=True)
        for p in st.passes:
            console.print(f"  pass {p['name']:<16} {p['state']:<9} {p.get('detail', '')}", highlight=False, soft_wrap=True)
        for name, shards in st.outputs_missing.items():  # counted above as pending, not finished
            shown = ", ".join(shards[:5]) + (" ..." if len(shards) > 5 else "")
            console.print(f"  missing: {len(shards)} finished shard(s) of pass {name} lost their kept or removed file "
                          f"({shown}); run the same command again to redo them", highlight=False, soft_wrap=True)
        for name, problems in st.outputs_damaged.items():  # counted above as pending, not finished
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            console.print(f"  damaged: {len(problems)} finished shard(s) of pass {name} changed "
                          f"({shown}); run the same command again to redo them", highlight=False, soft_wrap=True)
        for shard, error in sorted(st.failed.items()):
            console.print(f"  failed {shard}: {error}", highlight=False, soft_wrap=True)
        for shard, error in sorted(st.set_aside.items()):
            console.print(f"  set aside {shard}: {error}", highlight=False, soft_wrap=True)
        if st.input_changes:
            console.print(f"  {input_changes_line(st.input_changes, st.passes)}", highlight=False, soft_wrap=True)
    from refinery.stats.alerts import limited_run_note

    if note := limited_run_note({"limit": st.limit}):  # under the counts, on stderr as `stats` says it (h192)
        err.print(f"note: {run_dir}: {note}", style="yellow", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if st.complete else 1 if st.shards_failed else 3)


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)
cli_common.plain_help(app)


def _permission_denied(error: str | None) -> bool:
    text = error or ""
    return any(m in text for m in ("AccessDenied", "Access Denied", "ACCESS_DENIED", "(403)", "PermissionError",
                                   "Permission denied", "HTTP 403", "Forbidden"))


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that come from what the user gave (a file, a key, a URI, credentials, a region):
    one line and exit code 2. Anything else is a bug: one line and exit code 1 (traceback with -v)."""
    from refinery.config import ConfigError
    from refinery.io.fs import StorageError

    types: list[type[BaseException]] = [ConfigError, StorageError, OSError, ValueError, LookupError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        types += [BotoCoreError, ClientError]
    except ImportError:  # pragma: no cover - botocore is a dependency
        pass
    return tuple(types)


def _suggest_options(exc: Exception) -> None:
    """An unknown long option's suggestions, matched without the leading dashes: click matches the
    whole name, and the "--" every option shares made `run --bogus` suggest --verbose and `run
    --forse` --workers too (found by trials). Still click's matching (difflib, its cutoff)."""
    from difflib import get_close_matches

    try:  # typer >= 0.20 vendors click
        from typer._click.exceptions import NoSuchOption
    except ImportError:
        from click.exceptions import NoSuchOption

    ctx = getattr(exc, "ctx", None)
    if not isinstance(exc, NoSuchOption) or ctx is None or not exc.option_name.startswith("--"):
        return
    names = sorted({o[2:] for p in ctx.command.get_params(ctx) for o in (*p.opts, *getattr(p, "secondary_opts", ()))
                    if o.startswith("--")})
    exc.possibilities = [f"--{m}" for m in get_close_matches(exc.option_name[2:], names)]


#: pydantic's wording of a bad option value (typer coerces through pydantic) -> the project's
_PYDANTIC_WORDS = [
    (re.compile(r"Input should be a valid integer.*"), "not a whole number"),
    (re.compile(r"Input should be a valid number.*"), "not a number"),
    (re.compile(r"Input should be a finite number.*"), "not a finite number"),
    (re.compile(r"Input should be a valid boolean.*"), "not true or false"),
    (re.compile(r"Input should be greater than or equal to (\S+)$"), r"must be at least \1"),
    (re.compile(r"Input should be less than or equal to (\S+)$"), r"must be at most \1"),
    (re.compile(r"Input should be greater than (\S+)$"), r"must be more than \1"),
    (re.compile(r"Input should be less than (\S+)$"), r"must be less than \1"),
]


def _usage_message(exc: Exception, args: list[str]) -> str:
    """A usage error in the project's words: ``--workers 'abc': not a whole number`` (the option
    and the value given) instead of click's "Invalid value for '--workers': " and pydantic's
    "Input should be a valid integer, unable to parse string as an integer" (session 45)."""
    message = str(getattr(exc, "message", "")).removeprefix("Value error, ")
    param = getattr(exc, "param", None)
    if param is not None and param.param_type_name == "option" and type(exc).__name__ == "BadParameter":
        name = max(param.opts, key=len)
        for pattern, words in _PYDANTIC_WORDS:
            if pattern.fullmatch(message):
                value = _value_given(args, param.opts)
                said = pattern.sub(words, message)
                return f"{name} {value!r}: {said}" if value is not None else f"{name}: {said}"
        return f"{name}: {message}"  # our own check's words (they name the value)
    # pydantic's ValueError text starts "Value error, " (train-classifier spam: "Invalid value for
    # 'KIND': Value error, 'spam' is not one of ..."; h137)
    return exc.format_message().replace(": Value error, ", ": ")  # type: ignore[attr-defined]


def _value_given(args: list[str], opts: list[str]) -> str | None:
    """The value given to the option named ``opts`` in ``args`` (the last one: click keeps it)."""
    value = None
    for i, arg in enumerate(args):
        if arg in opts and i + 1 < len(args):
            value = args[i + 1]
        elif "=" in arg and arg.split("=", 1)[0] in opts:
            value = arg.split("=", 1)[1]
    return value


def _say_interrupted() -> int:
    """Say how the command was stopped; its exit code: 130 (Ctrl-C) or 143 (SIGTERM), or 0 when its
    work was finished and saved before (:func:`interrupts.finished`): a script reads the exit
    code as "the output is complete", and it is."""
    stop = "stopped by SIGTERM" if interrupts.terminated() else "interrupted"  # SIGTERM: a scheduler's stop
    done = interrupts.finished_work()
    if done:
        cli_common.note(f"{stop} after the run finished: {done}")
        return 0
    print_error(f"{stop}; run the same command again to resume")
    return interrupts.exit_code()


def _explained(exc: Exception) -> str | None:
    """A raw S3 error of pyarrow's said as what it most likely means (wrong credentials, an
    unreachable endpoint), naming the object; None for anything else."""
    from refinery.io.fs import explain_s3_failure

    return explain_s3_failure(str(exc))


#: what to do about a write the command itself (not a task) could not make
_STORAGE_HINTS = {"full": "; free space, then run the same command again (finished work is kept)",
                  "read_only": "; make it writable, then run the same command again (finished work is kept)"}


def _report_error(exc: Exception, verbose: bool) -> int:
    """Print ``exc`` on one line; the exit code: 2 for a user error, 1 for anything else."""
    from refinery.executors.base import TaskError, storage_stop

    user = isinstance(exc, _user_error_types())
    if isinstance(exc, TaskError):  # a task failed after its retries (a worker killed, OOM): not a bug
        message, hint = str(exc), "; the finished tasks are kept: run the same command again to resume"
    elif isinstance(exc, OSError) and storage_stop(exc):  # the command's own write failed (a pass's says so)
        message, hint = str(exc), _STORAGE_HINTS[storage_stop(exc) or ""]
    else:
        message = (_explained(exc) or str(exc)) if user else f"unexpected {type(exc).__name__}: {exc}"
        hint = "" if verbose else " (rerun with -v for the traceback)" if not user else ""
    print_error(f"{message}{hint}" if str(exc) else f"{type(exc).__name__}{hint}")
    return 2 if user else 1


def main(argv: list[str] | None = None, *, exiting: bool = False) -> None:
    """The ``refinery`` entry point: every error ends as one ``error:`` line on stderr (exit code 2
    for a usage or user error, 1 for an unexpected one) and a traceback only with ``-v``.

    ``exiting``: the process ends after this call (the console script), so SIGINT is ignored once
    the command is over instead of handed back to Python."""
    import traceback

    try:  # typer >= 0.20 vendors click
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
        from typer.exceptions import Abort
    except ImportError:
        from click.exceptions import Abort, ClickException, NoArgsIsHelpError

    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("-v", "--verbose") for a in args)
    cli_common.VERBOSE = verbose
    handles_ctrl_c = interrupts.install()
    interrupts.finished(None)  # nothing of this command is finished yet
    interrupted = False
    stdout = sys.stdout
    if hasattr(stdout, "fileno"):  # not under a test runner's capture without a descriptor
        sys.stdout = cli_common.PipeSafeStdout(stdout)
    try:
        if exiting:
            # refinery's own process: its exit skips the collections over the loaded libraries, and
            # pyarrow does not import pandas (unused) to probe the values it converts. Inside the
            # try: the import takes a second, and a SIGTERM or Ctrl-C in it printed a traceback
            from refinery.io.arrow_rows import skip_pandas_probe
            from refinery.pipeline import skip_exit_gc

            skip_exit_gc()
            skip_pandas_probe()
        try:
            code = app(args=args, prog_name="refinery", standalone_mode=False)
        except Abort as abort:
            if isinstance(abort.__cause__, EOFError):
                # click turns an EOFError (a truncated gzip file, say) into Abort, which read as a
                # Ctrl-C: "interrupted", exit 130 (found by adversarial testing)
                raise abort.__cause__ from None
            raise
        if code == 130:  # typer >= 0.20 turns Ctrl-C into Exit(130), returned as is here
            raise KeyboardInterrupt
        # a Ctrl-C whose KeyboardInterrupt a library swallowed, or turned into its own error that
        # the command then reported (cli_common.fail says "interrupted" instead): the command is
        # interrupted all the same, not finished
        interrupts.raise_if_requested()
    except NoArgsIsHelpError:
        code = 2  # the help was printed
    except ClickException as exc:  # usage errors: missing or bad arguments and options
        where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "refinery"
        _suggest_options(exc)
        # typer coerces through pydantic, whose ValueError text starts "Value error, " (train-classifier
        # spam: "Invalid value for 'KIND': Value error, 'spam' is not one of ..."; h137)
        print_error(f"{_usage_message(exc, args)} (see: {where} --help)")
        code = exc.exit_code if exc.exit_code else 2
    except (Abort, KeyboardInterrupt):
        code, interrupted = _say_interrupted(), True
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into one line
        if verbose:
            traceback.print_exc()
        if interrupts.requested():
            # a Ctrl-C turned into another error on its way up: pydantic-core's schema build makes
            # it a SchemaError ("Error building ... validator: KeyboardInterrupt"), CPython's import
            # machinery a TypeError ("expected a message argument"); "unexpected SchemaError" was
            # printed, exit 1 (review h101)
            code, interrupted = _say_interrupted(), True
        else:
            code = _report_error(exc, verbose)

    finally:
        if handles_ctrl_c and exiting:
            # nothing is left to stop: a Ctrl-C in the interpreter's exit (atexit joins the pools'
            # threads) printed a traceback, or killed the process by SIGINT after its one line.
            # Ignored once multiprocessing's exit handler is done (interrupts.ignore_at_exit); until
            # then a third one still quits an exit that hangs
            if interrupts.ignores_at_exit():
                interrupts.stopping()
            else:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        elif exiting:  # SIGINT not ours (ignored from the start), SIGTERM still: it no longer raises
            interrupts.stopping()
        elif handles_ctrl_c:  # called in-process (tests): leave SIGINT as it was
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if not exiting:  # in-process: SIGTERM as it was too
            interrupts.uninstall()
            interrupts.reset()
        if not exiting:  # in-process: stdout as it was (the process's own keeps the wrapper to its exit)
            sys.stdout.flush()
            sys.stdout = stdout
    from refinery.io.interruptible import calls_left_behind, drop_s3_finalizer

    # an S3 call left hung in a helper thread (h144): pyarrow's exit handler would wait it out, and
    # an interpreter teardown without that handler aborted in the AWS SDK: leave by os._exit
    left_behind = exiting and calls_left_behind()
    if (interrupted or left_behind) and (exiting or (handles_ctrl_c and "ray" in sys.modules)):
        # interrupted: leave without the interpreter's teardown. It puts back SIGINT's default
        # action, and a Ctrl-C landing then killed the process by SIGINT after its one line (exit
        # -2, once in a fresh-clone CI run of the double Ctrl-C test); and after Ctrl-C reached
        # Ray's own threads it crashed in _raylet.so (SIGSEGV, exit 139, in 4 of 7 tries). The exit
        # handlers still run (multiprocessing's joins the workers; the last one ignores SIGINT),
        # except with Ray, which is shut down already. And under `python -m`, a KeyboardInterrupt
        # raised inside exec'd code (a dataclass being made) leaves the interpreter marked as ended
        # by Ctrl-C, caught or not: sys.exit then became death by SIGINT (exit -2, review h101)
        sys.stdout.flush()
        sys.stderr.flush()
        if exiting and "ray" not in sys.modules:
            from refinery.allocator import is_refinery_itself

            if not is_refinery_itself():
                # a program of the user's calling refinery.__main__.main(): os._exit skipped the
                # finally blocks and with statements around its call (its clean-up: review h106)
                sys.exit(code)
            import atexit

            if left_behind:
                drop_s3_finalizer()
            atexit._run_exitfuncs()
        os._exit(code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main(exiting=True)
