"""CLI command ``refinery eval-extract CONFIG --gold DIR``: score a config's extraction against gold pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
import yaml

from refinery.cli_common import VERBOSE_HELP, fail, one_line, setup_logging
from refinery.cli_common import out as console


def register(app: typer.Typer) -> None:
    @app.command("eval-extract")
    def eval_extract(
        config: str = typer.Argument(..., help="a pipeline config whose 'extract' stage params are evaluated"),
        gold: str = typer.Option(
            ..., "--gold", "-g", metavar="PATH",
            help="gold set: a directory of <name>.html + <name>.txt (cleaned text; CleanEval markup is removed) "
                 "and/or trafilatura's evaldata.json (with/without snippets), or that .json file",
        ),
        json_out: Optional[str] = typer.Option(
            None, "--json", metavar="PATH", help="also write the scores (and per-page results) here"),
        param: list[str] = typer.Option(
            [], "--param", "-p", metavar="KEY=VALUE",
            help="override an extract param for this evaluation (YAML value), e.g. -p include_tables=false",
        ),
        half: Optional[int] = typer.Option(
            None, "--half", min=0, max=1,
            help="score only one half of the pages (stable hash of the name): tune on one, report the other",
        ),
        through: list[str] = typer.Option(
            [], "--through", metavar="STAGE",
            help="also score the text after these text-rewriting stages (line_corrections; 'none' for "
                 "extraction alone); default: the config's line_corrections, if it has one",
        ),
        keep_markup: bool = typer.Option(
            False, "--keep-cleaneval-markup", help="score gold text as is (no URL:/<p> removal)"),
        compare: Optional[str] = typer.Option(
            None, "--compare", metavar="SCORES.json",
            help="the --json scores of an earlier eval-extract on the same gold: print this run minus that "
                 "one, figure by figure, with a paired 95% interval (page bootstrap)"),
        verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
    ) -> None:
        """Score the config's extract stage on gold pages.

        Figures: token precision / recall / F1 (bag of words), pages emptied, and "with" recall /
        "without" leakage for snippet gold. Headline figures carry a 95% interval from a page
        bootstrap (refinery/eval_intervals.py)."""
        from refinery.config import ConfigError
        from refinery.eval_extract import (
            GoldError,
            evaluate,
            extract_stage_from_config,
            load_gold,
            split_pages,
            through_stages_from_config,
        )
        from refinery.eval_intervals import intervals
        from refinery.yaml_safe import load_yaml

        if verbose:  # refinery's debug logs (an error's traceback: main)
            setup_logging(True)
        overrides = {}
        for item in param:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                fail(f"--param {item!r}: expected KEY=VALUE")
            try:
                overrides[key.strip()] = load_yaml(value) if value.strip() else None
            except yaml.YAMLError as exc:  # was "unexpected ParserError", exit 1 (trials, h121)
                fail(f"--param {item!r}: the value is not valid YAML ({getattr(exc, 'problem', None) or one_line(exc)})")
        try:
            pages = load_gold(gold, cleaneval_markup=not keep_markup)
            stage = extract_stage_from_config(config, overrides)
            names = None if not through else [n for n in through if n != "none"]
            after_stages = through_stages_from_config(config, names)
            baseline = _load_baseline(compare) if compare else None
        except (GoldError, ConfigError, OSError) as exc:
            fail(exc)
        if half is not None:
            pages = split_pages(pages, half)
            if not pages:
                fail(f"gold set {gold}: no pages in half {half}")
        result = evaluate(stage, pages, through=after_stages, progress=True)
        ci = intervals(result.per_page)
        after_ci = intervals(result.after.per_page) if result.after is not None else {}
        width = max(len(k) for k, _ in result.table())
        console.print(f"eval-extract {config} on {gold}" + (f" (half {half})" if half is not None else ""))
        console.print("extraction alone:")
        for key, value in result.table():
            console.print(f"  {key:<{width}}  {value}{_interval(key, ci)}")
        if result.after is not None:
            # the corpus text is what the rewriting stages leave (docs/extraction.md)
            console.print(f"after {' + '.join(result.through)}:")
            for key, value in result.after.table()[:-2]:  # paths and seconds: as above
                console.print(f"  {key:<{width}}  {value}{_interval(key, after_ci)}")
            gone = result.after_removed_as_emptied
            console.print(f"  {'pages removed by them':<{width}}  {result.after_removed} "
                          f"(scored above on their extracted text; counted as emptied: "
                          f'"with" {_fmt(gone.with_recall)}, "without" {_fmt(gone.without_leakage)}'
                          + (f", token F1 {_fmt(gone.macro_f1)})" if gone.token_pages else ")"))
        console.print(f"  (95% intervals: {len(result.per_page)} pages resampled with replacement)")
        compared = _print_comparison(compare, baseline, result) if baseline is not None else None
        if json_out:
            try:
                record = result.to_dict() | {"intervals": ci, "after_intervals": after_ci or None,
                                             "compared_with": compared}
                Path(json_out).write_text(json.dumps(record, indent=1, default=str) + "\n")
            except OSError as exc:
                fail(f"cannot write {json_out}: {exc.strerror or exc}")
            console.print(f"scores written to {json_out}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _interval(row: str, ci: dict) -> str:
    from refinery.eval_intervals import FIGURES

    bounds = next((ci.get(name) for name, label in FIGURES.items() if label == row), None)
    if bounds is None:
        return ""
    if row == "pages emptied":
        return f"  (95% interval {bounds[0]:.1%} to {bounds[1]:.1%})"
    return f"  (95% interval {bounds[0]:.4f} to {bounds[1]:.4f})"


def _load_baseline(path: str) -> dict:
    """The scores an earlier ``eval-extract --json`` wrote (with their per-page results)."""
    from refinery.config import ConfigError

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--compare {path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--compare {path}: not a JSON file of eval-extract scores ({exc})") from None
    rows = data.get("per_page") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "name" in r for r in rows):
        raise ConfigError(f"--compare {path}: no per-page results in it (write it with eval-extract --json)")
    return data


def _print_comparison(path: str, baseline: dict, result) -> dict:
    """Print this run minus the baseline (extraction alone, and after the rewriting stages when both
    have them); return the differences for the JSON record."""
    from refinery.eval_intervals import CompareError, paired_differences

    names = {r.name for r in result.per_page}
    shared = sum(1 for r in baseline["per_page"] if r.get("name") in names)
    console.print(f"compared with {path} on the {shared} pages both scored (paired page bootstrap):")
    record: dict = {"path": path, "pages": shared}
    views = [("extraction alone", result.per_page, baseline["per_page"], "alone")]
    if result.after is not None and isinstance(baseline.get("after"), dict) and baseline["after"].get("per_page"):
        views.append((f"after {' + '.join(result.through)}", result.after.per_page, baseline["after"]["per_page"], "after"))
    for title, mine, theirs, key in views:
        try:
            diffs = paired_differences(mine, theirs)
        except (CompareError, KeyError, TypeError) as exc:
            fail(f"--compare {path}: {exc if isinstance(exc, CompareError) else 'per-page results lack ' + str(exc)}")
        console.print(f"  {title}:")
        for d in diffs:
            console.print(f"    {d.line()}")
        record[key] = [{"figure": d.name, "this": d.this, "baseline": d.baseline, "difference": d.delta,
                        "low": d.low, "high": d.high} for d in diffs]
    return record
