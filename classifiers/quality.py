"""Recipe entry point: train the quality fastText model.

    python -m classifiers.quality --out DIR [--data-dir ../shared/data] [--seed 0] [--no-quantize]

Same as `refinery train-classifier quality ...`; the recipe itself (data, splits, hyperparameters)
is `refinery/classifiers/quality.py`, which is what gets installed with the package.
"""

from __future__ import annotations

import sys

from refinery.classifiers.quality import DEFAULT_PARAMS, build_data, train

__all__ = ["DEFAULT_PARAMS", "build_data", "train", "main"]


def main(argv: list[str] | None = None) -> None:
    import typer

    from refinery.cli_classifiers import register

    app = typer.Typer(add_completion=False)
    register(app)
    app.command("noop", hidden=True)(lambda: None)  # why: a one-command typer app drops the command name
    app(["train-classifier", "quality", *(sys.argv[1:] if argv is None else argv)], prog_name="classifiers.quality")


if __name__ == "__main__":
    main()
