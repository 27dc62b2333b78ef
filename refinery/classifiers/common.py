"""Shared pieces of the classifier recipes and stages: text preparation, model paths, training,
metrics and reports.

The same :func:`prepare_text` runs at training and at scoring time: a fastText model only
generalises if it sees text prepared the way it was trained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

log = logging.getLogger("refinery.classifiers")

#: How to (re)build each model; quoted verbatim by :class:`MissingModelError`.
TRAIN_COMMANDS = {
    "toxicity": "refinery train-classifier toxicity --out {dir}",
    "quality": "refinery train-classifier quality --out {dir}",
    # the quality stage's code_pages model: the same recipe with documentation positives, renamed
    "quality_docs": "refinery train-classifier quality --docs-positives data/quality/docs_positives.jsonl.gz "
                    "--out DIR, then move DIR/quality.ftz to {dir}/quality_docs.ftz",
}

_URL = re.compile(r"(?:https?://|www\.)\S+")
_MENTION = re.compile(r"@\w+")
# why: fastText splits on whitespace only, so "idiot!!" and "idiot" would be different words;
# isolating every non-word character (punctuation, emoji) gives them one vector each.
_PUNCT = re.compile(r"[^\w\s]")
_PUNCT_SPLIT = re.compile(r"([^\w\s])")  # why: split + join runs in C, ~3x faster than sub(r" \1 ")


def prepare_text_counted(text: str, max_chars: int) -> tuple[str, int]:
    """:func:`prepare_text` plus the number of punctuation tokens it split off (so callers can
    count words, i.e. the other tokens, without another pass)."""
    t = text[:max_chars].lower()
    if "http" in t or "www." in t:
        t = _URL.sub(" _url_ ", t)
    if "@" in t:
        t = _MENTION.sub(" _user_ ", t)
    while "__label__" in t:
        # fastText's label prefix: a web page quoting "__label__positive" (a fastText tutorial)
        # gave the trained model a third label, which the stage then refused (adversarial testing)
        t = t.replace("__label__", "_label_")
    parts = _PUNCT_SPLIT.split(t)  # [text, punct, text, punct, ..., text]
    t, n_punct = " ".join(parts), len(parts) // 2
    if "\n" in t:
        t = t.replace("\n", " ")
    return t, n_punct


def prepare_text(text: str, max_chars: int) -> str:
    """Lowercase, first ``max_chars`` characters, URLs -> ``_url_``, @handles -> ``_user_``,
    ``__label__`` (fastText's label prefix) -> ``_label_``, punctuation split off, line breaks -> spaces (fastText reads one line per example; other
    whitespace runs are left alone: fastText splits on them anyway)."""
    return prepare_text_counted(text, max_chars)[0]


#: (max_chars, {text: prepared}) of the most recent batch, see :func:`prepare_batch`
_LAST_BATCH: tuple[int, dict[str, tuple[str, int]]] = (0, {})


def prepare_batch(texts: Sequence[str], max_chars: int) -> list[tuple[str, int]]:
    """:func:`prepare_text_counted` of each text, reusing the previous call's results.

    Why: the toxicity and quality stages run back to back on the same documents and prepare
    them identically; the second finds every text of the first's batch here instead of paying
    ~50 us per 2 KB document again. Keys are the texts themselves (exact, no hash collisions);
    only one batch is remembered, so memory stays at about two copies of a batch's text.
    """
    global _LAST_BATCH
    last_max, last = _LAST_BATCH
    if last_max != max_chars:
        last = {}
    current: dict[str, tuple[str, int]] = {}
    out = []
    for text in texts:
        hit = last.get(text)
        if hit is None:
            hit = prepare_text_counted(text, max_chars)
        current[text] = hit
        out.append(hit)
    _LAST_BATCH = (max_chars, current)
    return out


def is_punct_token(token: str) -> bool:
    return len(token) == 1 and _PUNCT.match(token) is not None


def decode_texts(column: pa.Array | pa.ChunkedArray) -> list[str | None]:
    """Python strings of a ``text`` column, never raising on bad bytes.

    Arrow does not validate UTF-8 everywhere (a Parquet file written elsewhere can hold invalid
    bytes in a ``string`` column, and ``to_pylist`` would then raise), so the column is viewed
    as binary and decoded with replacement characters.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = column.type
    if pa.types.is_string(t):
        column = column.view(pa.binary())
    elif pa.types.is_large_string(t):
        column = column.view(pa.large_binary())
    elif not (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_null(t)):
        raise TypeError(f"text column has type {t}; expected string or binary")
    return [None if b is None else b.decode("utf-8", "replace") for b in column.to_pylist()]


# -- model files ------------------------------------------------------------------------------
#: small models trained by our own recipes and shipped inside the package (README.md there), so
#: the stages work out of the box: the fallback when no model is configured or trained
PACKAGED_MODELS = Path(__file__).resolve().parent.parent / "resources" / "models"


def models_dir() -> Path:
    """``$REFINERY_MODELS``, else ``~/.cache/refinery/models`` (where ``train-classifier`` writes)."""
    env = os.environ.get("REFINERY_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "refinery" / "models"


def model_candidates(kind: str, directory: Path | None = None) -> list[Path]:
    """Where a trained model of ``kind`` lives, in order: quantized ``.ftz`` first, then ``.bin``.

    Without ``directory``: ``$REFINERY_MODELS`` alone when it is set (an explicit choice must not
    fall back silently), else ``~/.cache/refinery/models`` and then the packaged models.
    """
    if directory is not None or os.environ.get("REFINERY_MODELS"):
        dirs = [directory or models_dir()]
    else:
        dirs = [models_dir(), PACKAGED_MODELS]
    return [d / f"{kind}{suffix}" for d in dirs for suffix in (".ftz", ".bin")]


class TrainingDataError(ValueError):
    """A training data file is damaged or not in the expected shape (one line naming it)."""


@contextmanager
def training_file(path: Path, line: Callable[[], int | None] | None = None) -> Iterator[None]:
    """(The loaders read their files as ``utf-8-sig``: a byte order mark at the start of a file
    saved by a Windows tool was "Unexpected UTF-8 BOM", or a header ``\ufeff`` no field matched.)

    Turn what a damaged or misshapen data file raises while the block reads ``path`` (a
    missing field, a short row, bad JSON, a truncated gzip) into :class:`TrainingDataError`
    naming the file (and ``line()``, the line being read, when given): the loaders said
    ``error: 'id'`` or, for a truncated gzip, nothing but "interrupted" (found by adversarial
    testing)."""
    try:
        yield
    except TrainingDataError:
        raise
    except (KeyError, IndexError, ValueError, EOFError, AttributeError, TypeError, OSError, zlib.error) as exc:
        what = f"no field {exc}" if isinstance(exc, KeyError) else (
            "the file ends early (truncated)" if isinstance(exc, EOFError) else f"{type(exc).__name__}: {exc}")
        at = line() if line is not None else None
        raise TrainingDataError(f"training data {path}{f' line {at}' if at else ''}: {what}") from None


class MissingModelError(FileNotFoundError, ValueError):
    """A model file is missing. Also a ValueError so pipeline config validation reports it."""


def resolve_model_path(kind: str, model_path: str | None) -> Path:
    """The model file to load, or :class:`MissingModelError` naming the command that trains it.

    ``model_path`` if given, else the first of :func:`model_candidates` that exists."""
    if model_path:
        path = Path(model_path).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            inside = [p for p in model_candidates(kind, path) if p.is_file()]
            hint = f": {inside[0]}" if inside else f" ({kind}.ftz or {kind}.bin)"
            raise MissingModelError(f"{kind} model_path {path} is a directory: give the model file{hint}")
        where, out_dir = str(path), path.parent
    else:
        candidates = model_candidates(kind)
        for path in candidates:
            if path.is_file():
                return path
        where, out_dir = " or ".join(str(p) for p in candidates), candidates[0].parent
    raise MissingModelError(
        f"{kind} model not found at {where}. Train it with: "
        f"`{TRAIN_COMMANDS[kind].format(dir=out_dir)}` "
        f"(then pass model_path, or set REFINERY_MODELS to the --out directory)"
    )


def load_fasttext(path: Path) -> Any:
    import fasttext

    # why: fastText prints a deprecation warning on load_model in some builds; keep logs clean
    fasttext.FastText.eprint = lambda *args, **kwargs: None
    return fasttext.load_model(str(path))


def check_labels(model: Any, path: Path, kind: str, positive: str) -> None:
    """A two-label fastText model with ``positive`` among its labels, else ValueError (so a quality
    model given to the toxicity stage fails at config time)."""
    labels = sorted(model.get_labels())
    if len(labels) != 2 or f"__label__{positive}" not in labels:
        raise ValueError(f"{path} is not a {kind} model: labels {labels}, expected __label__{positive}")


def binary_scores(model: Any, texts: Sequence[str], positive: str) -> np.ndarray:
    """P(``positive``) for each prepared text, from one batched fastText call.

    The models here have exactly two labels, so P(positive) = p or 1 - p of the top label.
    """
    if not texts:
        return np.zeros(0, dtype=np.float64)
    labels, probs = model.predict(list(texts), k=1)
    wanted = "__label__" + positive
    top = np.array([lab[0] == wanted for lab in labels], dtype=bool)
    p = np.minimum(np.array([pr[0] for pr in probs], dtype=np.float64), 1.0)  # fastText adds 1e-5
    return np.where(top, p, 1.0 - p)


# -- training ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FastTextParams:
    """fastText supervised hyperparameters (``thread`` is always 1: reproducible models)."""

    epoch: int = 10
    lr: float = 0.1
    dim: int = 20
    wordNgrams: int = 2
    minCount: int = 1
    bucket: int = 200_000  # why: 2M (the default) x dim floats is 160 MB; 200k loses nothing here
    loss: str = "softmax"
    seed: int = 0


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def train_fasttext(
    examples: Iterable[tuple[str, str]], params: FastTextParams, workdir: Path, quantize: dict[str, Any] | None = None,
    pretrained_vectors: Path | None = None,
) -> tuple[Path, Path | None, Path]:
    """Train on ``(label, prepared_text)`` pairs (already in their final, shuffled order),
    initialising word vectors from ``pretrained_vectors`` (a ``.vec`` file of ``params.dim``
    dimensions) when given.

    Returns ``(model.bin, model.ftz or None, training file)``, all in ``workdir``.

    Why a child process with ``MALLOC_MMAP_THRESHOLD_``: ``fasttext-numpy2`` 0.10.4 stores
    matrices in ``intgemm::AlignedVector`` (not zeroed), while fastText's ``uniform`` init with
    ``thread=1`` fills only the first tenth of the input matrix (upstream relied on
    ``std::vector`` zeroing the rest). Whatever the allocator hands back -- fresh zero pages, or
    garbage from memory freed earlier in the process -- becomes the initial embeddings: a second
    training in the same process sometimes dies with "Encountered NaN." or silently differs.
    A fixed mmap threshold makes glibc serve the matrix from fresh (zeroed) pages, in a fresh
    process, so the same seed always gives byte-identical models.
    """
    train_file = workdir / "train.txt"
    with open(train_file, "w", encoding="utf-8") as f:
        for label, text in examples:
            f.write(f"__label__{label} {text}\n")
    job = {
        "input": str(train_file),
        "params": {**asdict(params), "thread": 1, "verbose": 0,
                   **({"pretrainedVectors": str(pretrained_vectors)} if pretrained_vectors else {})},
        "bin": str(workdir / "model.bin"),
        "ftz": str(workdir / "model.ftz") if quantize is not None else None,
        "quantize": quantize or {},
    }
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    # the child must import this very refinery, installed or not
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.pop("MALLOC_PERTURB_", None)  # would fill fresh allocations with non-zero bytes
    proc = subprocess.run([sys.executable, "-m", "refinery.classifiers._fasttext_train", json.dumps(job)], check=False,
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        hint = f"; try a lower lr than {params.lr}" if "NaN" in detail else ""
        raise RuntimeError(f"fastText training failed ({detail}){hint}")
    return Path(job["bin"]), Path(job["ftz"]) if job["ftz"] else None, train_file


def copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, allow_nan=False)  # strict JSON: no NaN
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# -- metrics ----------------------------------------------------------------------------------
def roc_auc(y_true: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if one class
    is absent."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]  # 1-based average rank of each score
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(y_true: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float) -> dict[str, float | int]:
    """Precision, recall, F1 and false-positive rate of the positive class at
    ``score >= threshold``, plus ROC AUC."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    pred = s >= threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auc = roc_auc(y, s)
    n_neg = int((~y).sum())
    return {
        "threshold": round(float(threshold), 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "roc_auc": None if np.isnan(auc) else round(auc, 4),  # None: one class only (JSON has no NaN)
        "false_positive_rate": round(fp / n_neg, 4) if n_neg else None,
        "accuracy": round(float((pred == y).mean()) if len(y) else 0.0, 4),
        "positives": int(y.sum()),
        "negatives": int((~y).sum()),
    }


def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The threshold (on a 0.01 grid) maximising F1 of the positive class; ties -> the lowest."""
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    f1s = [binary_metrics(y_true, scores, t)["f1"] for t in grid]
    return float(grid[int(np.argmax(f1s))])


def elapsed(t0: float) -> float:
    return round(time.perf_counter() - t0, 2)
