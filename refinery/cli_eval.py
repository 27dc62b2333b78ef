"""CLI command ``refinery eval-extract CONFIG --gold DIR``: score a config's extraction against gold pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from refinery.cli_common import fail
from refinery.cli_common import out as console


def register(app: typer.Typer) -> None:
    @app.command("eval-extract")
    def eval_extract(
        config: str = typer.Argument(..., help="a pipeline config whose 'extract' stage params are evaluated"),
        gold: str = typer.Option(
            ..., "--gold", "-g",
            help="gold set: a directory of <name>.html + <name>.txt (cleaned text; CleanEval markup is removed) "
                 "and/or trafilatura's evaldata.json (with/without snippets), or that .json file",
        ),
        json_out: Optional[str] = typer.Option(
            None, "--json", help="also write the scores (and per-page results) here"),
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
    ) -> None:
        """Score the config's extract stage on gold pages: token precision / recall / F1 (bag of
        words), pages emptied, and "with" recall / "without" leakage for snippet gold."""
        from refinery.config import ConfigError
        from refinery.eval_extract import (
            GoldError,
            evaluate,
            extract_stage_from_config,
            load_gold,
            split_pages,
            through_stages_from_config,
        )
        from refinery.yaml_safe import load_yaml

        overrides = {}
        for item in param:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                fail(f"--param {item!r}: expected KEY=VALUE")
            overrides[key.strip()] = load_yaml(value) if value.strip() else None
        try:
            pages = load_gold(gold, cleaneval_markup=not keep_markup)
            stage = extract_stage_from_config(config, overrides)
            names = None if not through else [n for n in through if n != "none"]
            after_stages = through_stages_from_config(config, names)
        except (GoldError, ConfigError, OSError) as exc:
            fail(exc)
        if half is not None:
            pages = split_pages(pages, half)
            if not pages:
                fail(f"gold set {gold}: no pages in half {half}")
        result = evaluate(stage, pages, through=after_stages)
        width = max(len(k) for k, _ in result.table())
        console.print(f"eval-extract {config} on {gold}" + (f" (half {half})" if half is not None else ""))
        console.print("extraction alone:")
        for key, value in result.table():
            console.print(f"  {key:<{width}}  {value}")
        if result.after is not None:
            # the corpus text is what the rewriting stages leave (docs/extraction.md)
            console.print(f"after {' + '.join(result.through)}:")
            for key, value in result.after.table()[:-2]:  # paths and seconds: as above
                console.print(f"  {key:<{width}}  {value}")
            gone = result.after_removed_as_emptied
            console.print(f"  {'pages removed by them':<{width}}  {result.after_removed} "
                          f"(scored above on their extracted text; counted as emptied: "
                          f'"with" {_fmt(gone.with_recall)}, "without" {_fmt(gone.without_leakage)}'
                          + (f", token F1 {_fmt(gone.macro_f1)})" if gone.token_pages else ")"))
        if json_out:
            try:
                Path(json_out).write_text(json.dumps(result.to_dict(), indent=1, default=str) + "\n")
            except OSError as exc:
                fail(f"cannot write {json_out}: {exc.strerror or exc}")
            console.print(f"scores written to {json_out}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
