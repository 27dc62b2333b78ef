"""``refinery train-classifier toxicity|quality``: run a classifier recipe (refinery/classifiers/)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from refinery.cli_common import VERBOSE_HELP


class ClassifierKind(str, Enum):
    toxicity = "toxicity"
    quality = "quality"


def default_data_dir() -> Path:
    """``$REFINERY_DATA_DIR``, else ``../shared/data`` from the working directory, else the one
    beside the repository checkout."""
    env = os.environ.get("REFINERY_DATA_DIR")
    if env:
        return Path(env)
    for candidate in (Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[2] / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return Path("../shared/data")


def train_classifier(
    kind: ClassifierKind = typer.Argument(..., help="which model to train"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output directory (default: $REFINERY_MODELS or ~/.cache/refinery/models, where the stages look)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="training data root (default: $REFINERY_DATA_DIR, else ../shared/data)"),
    seed: int = typer.Option(0, help="fastText seed and shuffle seed: same seed, same model and metrics"),
    epoch: Optional[int] = typer.Option(None, help="override the recipe's epochs"),
    lr: Optional[float] = typer.Option(None, help="override the recipe's learning rate"),
    dim: Optional[int] = typer.Option(None, help="override the recipe's vector size (toxicity: 50, its GloVe vectors')"),
    quantize: bool = typer.Option(True, help="write a quantized .ftz (2-4 MB) when held-out metrics stay within 0.01"),
    transformer: bool = typer.Option(True, help="toxicity: also fine-tune the cascade's transformer (~11-15 min on 2 cores)"),
    docs_positives: Optional[Path] = typer.Option(
        None, "--docs-positives",
        help="quality: extra positives in the documentation register (the bundled data/quality/docs_positives.jsonl.gz)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Train a fastText classifier and write the model with a JSON report.

    It trains on real data; the report holds the hyperparameters, the data's SHA-256s and held-out precision, recall, F1
    and ROC AUC."""
    from dataclasses import replace

    from refinery.classifiers import quality, toxicity
    from refinery.classifiers.common import models_dir

    from refinery.cli_common import fail, setup_logging

    setup_logging(verbose)
    recipe = {"toxicity": toxicity, "quality": quality}[kind.value]
    data = data_dir or default_data_dir()
    if not data.is_dir():
        fail(f"data directory {data} not found (pass --data-dir, or set REFINERY_DATA_DIR)")
    overrides = {k: v for k, v in (("epoch", epoch), ("lr", lr), ("dim", dim)) if v is not None}
    for name, value in overrides.items():
        if not value > 0:  # fastText trains "successfully" on 0 epochs or dimensions: a useless model
            fail(f"--{name} must be > 0, not {value}")
    params = replace(recipe.DEFAULT_PARAMS, seed=seed, **overrides)
    out_dir = out or models_dir()
    _check_out_dir(out_dir, kind.value)
    if docs_positives is not None and (kind is not ClassifierKind.quality or not docs_positives.is_file()):
        fail(f"--docs-positives is a quality option and needs a file: {docs_positives}")
    if kind is ClassifierKind.toxicity and transformer:
        import importlib.util

        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:  # found out before the fastText training, not after it
            fail(f"the toxicity cascade's transformer needs {' and '.join(missing)}: pip install 'refinery[classifiers]', "
                 f"or train without it: --no-transformer")
    created = _missing_directories(out_dir)  # removed again unless a model is published into them
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{kind.value}-", dir=out_dir))
    except OSError as exc:
        _remove_empty(created)
        fail(f"output directory {out_dir} is not writable: {exc.strerror or exc}")
    # the models already in --out stay until the new one is complete: a failed or interrupted
    # training used to leave a model without its report, or a report without its combine section
    published = False
    try:
        try:
            if kind is ClassifierKind.toxicity:
                tr = replace(toxicity.TRANSFORMER_PARAMS, seed=seed) if transformer else None
                report = toxicity.train(data, staging, params, quantize=quantize, transformer=tr)
            else:
                report = quality.train(data, staging, params, quantize=quantize, docs_positives=docs_positives)
        except (FileNotFoundError, ValueError) as exc:
            fail(exc)
        except RuntimeError as exc:
            fail(exc, 1)
        publish_model(staging, out_dir, kind.value)
        published = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not published:
            _remove_empty(created)
    summary = {
        "model": str(out_dir / report["model_file"]),
        "report": str(out_dir / f"{kind.value}.json"),
        "threshold": report["threshold"],
        "metrics": report["metrics"],
    }
    typer.echo(json.dumps(summary, indent=2))


def _missing_directories(path: Path) -> list[Path]:
    """The directories ``path.mkdir(parents=True)`` would create, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_empty(directories: list[Path]) -> None:
    """Remove ``directories`` (deepest first) while they are empty: a training refused for its data
    left the ``--out`` it had just created, empty, behind (trials, h121). Only what this command
    created goes, and nothing anyone put there since (rmdir refuses a directory that is not empty)."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def _check_out_dir(out_dir: Path, kind: str) -> None:
    """Refuse, before the training, an ``--out`` the model cannot be published into: a file
    (was "not writable: File exists"), or one holding a directory where a model file goes (the
    training ran, then publishing failed half-way: a new model beside no report)."""
    from refinery.classifiers.toxicity_model import LEXICON_FILE
    from refinery.cli_common import fail

    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out {out_dir} is a file: give the directory the model goes into")
    names = [f"{kind}.ftz", f"{kind}.bin", f"{kind}.json"] + ([LEXICON_FILE] if kind == "toxicity" else [])
    taken = next((out_dir / n for n in names if (out_dir / n).is_dir()), None)
    if taken is not None:
        fail(f"--out {out_dir}: {taken} is a directory, where the model's file goes: move it or choose another --out")


def publish_model(staging: Path, out_dir: Path, kind: str) -> None:
    """Move a trained model's files from ``staging`` into ``out_dir``, the model file before its
    report; a model of ``kind`` with the other suffix goes (a stale ``.ftz`` would shadow a new
    ``.bin``)."""
    for stale in (out_dir / f"{kind}.ftz", out_dir / f"{kind}.bin"):
        if stale.exists() and not (staging / stale.name).exists():
            stale.unlink()
    for src in sorted(staging.iterdir(), key=lambda p: p.suffix == ".json"):
        dst = out_dir / src.name
        if src.is_dir() and dst.exists():
            shutil.rmtree(dst)
        os.replace(src, dst)


def register(app: typer.Typer) -> None:
    app.command("train-classifier")(train_classifier)
