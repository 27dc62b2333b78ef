"""The part every recipe shares: train, evaluate on held-out data, maybe quantize, write the
model and its JSON report (hyperparameters, data hashes, metrics) atomically."""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refinery.classifiers.common import (
    FastTextParams,
    TrainingDataError,
    binary_metrics,
    binary_scores,
    copy_atomic,
    elapsed,
    load_fasttext,
    sha256_file,
    train_fasttext,
    write_json_atomic,
)

log = logging.getLogger("refinery.classifiers")

#: product quantization of every row, 4-dim sub-vectors: ~2 MB instead of ~20 MB, ~7 s extra
QUANTIZE = {"qnorm": True, "retrain": False, "cutoff": 0, "dsub": 4}


@dataclass
class Split:
    """Prepared texts with boolean labels (True = the positive label)."""

    texts: list[str]
    labels: np.ndarray

    @classmethod
    def of(cls, pairs: list[tuple[str, bool]]) -> Split:
        return cls([t for t, _ in pairs], np.array([y for _, y in pairs], dtype=bool))

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class RecipeData:
    train: list[tuple[str, str]]  # (label, prepared text), not yet shuffled
    evals: dict[str, Split]  # held-out sets by name; metrics are reported for each
    sources: list[Path]  # raw input files, hashed into the report
    notes: dict[str, Any] = field(default_factory=dict)


def run_recipe(
    kind: str,
    data: RecipeData,
    out_dir: Path,
    params: FastTextParams,
    positive: str,
    negative: str,
    primary: tuple[str, str],
    decide_on: tuple[str, str],
    choose_threshold: Callable[[Split, np.ndarray], float],
    threshold_split: str,
    threshold_rule: str,
    max_chars: int,
    quantize: bool = True,
    data_root: Path | None = None,
    pretrained_vectors: tuple[Path, dict[str, Any]] | None = None,
    quantize_judge: tuple[Callable[[Any], float], str] | None = None,
) -> dict[str, Any]:
    """Train ``kind`` and write ``<out_dir>/<kind>.{ftz|bin}`` plus ``<out_dir>/<kind>.json``.

    ``primary`` = the (eval split, metric) reported as the headline; ``decide_on`` = the
    (validation split, metric) that decides whether the quantized model is kept: it must stay
    within 0.01 of the full model's. ``choose_threshold`` picks the decision threshold from
    ``threshold_split`` (a validation split; or a rule that ignores the scores), as described by
    ``threshold_rule`` in the report. ``pretrained_vectors`` = (``.vec`` file, its description
    for the report) initialises the word vectors. ``quantize_judge`` = (function of a loaded
    fastText model giving ``decide_on``'s figure, its description): measures what is actually
    shipped when the fastText model is only one part of it (the toxicity fast pair).
    """
    t_start = time.perf_counter()
    examples = list(data.train)
    random.Random(params.seed).shuffle(examples)  # why: fastText does not shuffle; order matters
    counts = {lab: sum(1 for l, _ in examples if l == lab) for lab in (positive, negative)}
    empty = [lab for lab, n in counts.items() if n == 0]
    if empty:  # one class only: fastText "trains", the model can only say that class (ROC AUC undefined)
        files = [str(p) for p in data.sources]
        raise TrainingDataError(f"{kind}: no training examples labelled {empty[0]!r} in {', '.join(files[:2]) or 'the data'}"
                                f"{f' (or {len(files) - 2} more files)' if len(files) > 2 else ''}: check those files")
    for name in (decide_on[0],):
        # the model choice (and the toxicity threshold and stackers: the same split) is fitted on
        # it: one class (or none) published a constant-score model with exit 0, or failed on a
        # None ROC AUC (adversarial testing). Not threshold_split: quality's rule ignores its scores
        split = data.evals.get(name)
        if split is None:
            continue
        lacking = [lab for lab, y in ((positive, True), (negative, False)) if not (split.labels == y).any()]
        if lacking:
            files = [str(p) for p in data.sources]
            raise TrainingDataError(
                f"{kind}: the held-out split {name!r} ({len(split)} examples) has none labelled {lacking[0]!r}, and the "
                f"threshold and model choice are fitted on it: give more data in {', '.join(files[:2]) or 'the data'}"
                f"{f' (or {len(files) - 2} more files)' if len(files) > 2 else ''}")
    log.info("%s: training on %d examples %s, held-out %s", kind, len(examples), counts,
             {k: len(v) for k, v in data.evals.items()})

    with tempfile.TemporaryDirectory(prefix=f"refinery-{kind}-") as tmp:
        t0 = time.perf_counter()
        bin_path, ftz_path, train_file = train_fasttext(examples, params, Path(tmp), QUANTIZE if quantize else None,
                                                          pretrained_vectors[0] if pretrained_vectors else None)
        train_seconds = elapsed(t0)
        train_sha = sha256_file(train_file)

        def evaluate(m: Any) -> tuple[float, dict[str, dict[str, Any]]]:
            scores = {name: binary_scores(m, split.texts, positive) for name, split in data.evals.items()}
            thr = choose_threshold(data.evals[threshold_split], scores[threshold_split])
            return thr, {name: binary_metrics(data.evals[name].labels, s, thr) for name, s in scores.items()}

        split, metric = decide_on
        judge_fn = quantize_judge[0] if quantize_judge else None

        def judge(m: Any, m_metrics: dict[str, dict[str, Any]]) -> float:
            return round(judge_fn(m), 4) if judge_fn else m_metrics[split][metric]

        full_model = load_fasttext(bin_path)
        threshold, metrics = evaluate(full_model)
        final_path, quantized, metrics_full = bin_path, False, None
        decision: dict[str, Any] | None = None
        if ftz_path is not None:
            q_model = load_fasttext(ftz_path)
            q_threshold, q_metrics = evaluate(q_model)
            full_value, q_value = judge(full_model, metrics), judge(q_model, q_metrics)
            decision = {"split": split, "metric": metric, "tolerance": 0.01, "full": full_value, "quantized": q_value,
                        "of": quantize_judge[1] if quantize_judge else "the fastText model"}
            if q_value >= full_value - 0.01:
                final_path, quantized, metrics_full = ftz_path, True, metrics
                threshold, metrics = q_threshold, q_metrics
            else:
                log.info("%s: quantized %s %s %.4f < full %.4f - 0.01; keeping the .bin", kind, split, metric,
                         q_value, full_value)

        out_dir.mkdir(parents=True, exist_ok=True)
        model_out = out_dir / (f"{kind}.ftz" if quantized else f"{kind}.bin")
        copy_atomic(final_path, model_out)
        # a stale model with the other suffix would shadow (.ftz) or confuse (.bin) the new one
        other = out_dir / (f"{kind}.bin" if quantized else f"{kind}.ftz")
        if other.exists():
            other.unlink()

    def rel(p: Path) -> str:
        if data_root and p.is_relative_to(data_root):
            return str(p.relative_to(data_root))
        # a file from an installed wheel: no machine-specific prefix in a report that may be shipped
        parts = p.parts
        if "site-packages" in parts:
            return str(Path("site-packages", *parts[parts.index("site-packages") + 1:]))
        return str(p)

    report: dict[str, Any] = {
        "kind": kind,
        "model_file": model_out.name,
        "model_sha256": sha256_file(model_out),
        "model_bytes": model_out.stat().st_size,
        "quantized": quantized,
        "quantization": QUANTIZE if quantize else None,
        "labels": {"positive": positive, "negative": negative},
        "score": f"P({positive}) from the fastText softmax",
        "threshold": threshold,
        "threshold_rule": threshold_rule,
        "max_chars": max_chars,
        "primary_metric": {"split": primary[0], "metric": primary[1], "value": metrics[primary[0]][primary[1]]},
        "quantization_decided_on": decision,
        "hyperparameters": {**asdict(params), "thread": 1},
        "pretrained_vectors": pretrained_vectors[1] if pretrained_vectors else None,
        "data": {
            "sources": [{"path": rel(p), "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in data.sources],
            "training_file_sha256": train_sha,
            "train_examples": counts,
            "held_out_examples": {k: {"positives": int(v.labels.sum()), "negatives": int((~v.labels).sum())}
                                  for k, v in data.evals.items()},
            **data.notes,
        },
        "metrics": metrics,
        "metrics_before_quantization": metrics_full,
        "fasttext_version": _fasttext_version(),
        "train_seconds": train_seconds,
        "total_seconds": elapsed(t_start),
    }
    write_json_atomic(report, out_dir / f"{kind}.json")  # allow_nan=False there: strict JSON
    log.info("%s: wrote %s (%s bytes); %s %s = %s", kind, model_out, report["model_bytes"], primary[0], primary[1],
             report["primary_metric"]["value"])  # %s: null when a held-out split has one class only
    return report


def _fasttext_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "fasttext-numpy2 " + version("fasttext-numpy2")
    except PackageNotFoundError:
        return "unknown"
