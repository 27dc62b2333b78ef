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
        keep_markup: bool = typer.Option(
            False, "--keep-cleaneval-markup", help="score gold text as is (no URL:/<p> removal)"),
    ) -> None:
        """Score the config's extract stage on gold pages: token precision / recall / F1 (bag of
        words), pages emptied, and "with" recall / "without" leakage for snippet gold."""
        from refinery.config import ConfigError
        from refinery.eval_extract import GoldError, evaluate, extract_stage_from_config, load_gold, split_pages
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
        except (GoldError, ConfigError, OSError) as exc:
            fail(exc)
        if half is not None:
            pages = split_pages(pages, half)
            if not pages:
                fail(f"gold set {gold}: no pages in half {half}")
        result = evaluate(stage, pages)
        width = max(len(k) for k, _ in result.table())
        console.print(f"eval-extract {config} on {gold}" + (f" (half {half})" if half is not None else ""))
        for key, value in result.table():
            console.print(f"  {key:<{width}}  {value}")
        if json_out:
            try:
                Path(json_out).write_text(json.dumps(result.to_dict(), indent=1, default=str) + "\n")
            except OSError as exc:
                fail(f"cannot write {json_out}: {exc.strerror or exc}")
            console.print(f"scores written to {json_out}")
