"""The trained toxicity model as one object: fastText + lexicon, stacked, and an optional
fine-tuned transformer that re-scores only what the fast pair finds suspicious.

    fast   = sigmoid(a + b logit(P_fastText) + c logit(P_lexicon))            every document
    final  = sigmoid(a' + b' logit(P_fastText) + c' logit(P_lexicon)
                     + d' logit(P_transformer))                              fast >= gate
           = fast                                                            otherwise

Files, all written by ``refinery train-classifier toxicity --out DIR``: ``toxicity.ftz`` (or
``.bin``), ``toxicity.json`` (the report; its ``combine`` section holds the stackers, the gate
and the file names), ``toxicity_lexicon.npz`` and ``toxicity_transformer/``. The recipe scores
its held-out splits through this class, so the stage reproduces the report's metrics exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refinery.classifiers.common import TRAIN_COMMANDS, MissingModelError, binary_scores, check_labels, load_fasttext
from refinery.classifiers.lexicon import LinearLexicon
from refinery.classifiers.stacking import Stacker

POSITIVE = "OFF"
LEXICON_FILE = "toxicity_lexicon.npz"
TRANSFORMER_DIR = "toxicity_transformer"


@dataclass
class ToxicityScores:
    final: np.ndarray  # what the stage thresholds: the cascade's score, or ``fast`` without it
    fast: np.ndarray
    transformer: np.ndarray  # NaN where the transformer did not run


class ToxicityModel:
    def __init__(self, model_file: Path, use_transformer: bool = True, threads: int = 1) -> None:
        self.fasttext = load_fasttext(model_file)
        check_labels(self.fasttext, model_file, "toxicity", POSITIVE)
        manifest = model_file.with_suffix(".json")
        if not manifest.is_file():
            _missing(manifest, "the toxicity model's report (it says how the parts combine)")
        self.report: dict[str, Any] = json.loads(manifest.read_text())
        combine = self.report.get("combine")
        if not combine:
            raise ValueError(f"{manifest} has no 'combine' section (a model from an older refinery); re-train it")
        lexicon_file = model_file.parent / combine["lexicon_file"]
        if not lexicon_file.is_file():
            _missing(lexicon_file, "the toxicity model's lexicon")
        self.lexicon = LinearLexicon.load(lexicon_file)
        self.fast_stacker = Stacker.from_json(combine["fast"])
        self.gate = float(combine.get("gate", 1.0))
        self.cascade_stacker = Stacker.from_json(combine["cascade"]) if combine.get("cascade") else None
        self.transformer = None
        if use_transformer:
            if self.cascade_stacker is None:
                # a MissingModelError (a ValueError too): the part is absent, and the command names the fix
                raise MissingModelError(
                    f"{model_file.parent} has no transformer (trained with --no-transformer, like the packaged "
                    "model): set cascade: false on the toxicity stage, or train the cascade with "
                    f"`{TRAIN_COMMANDS['toxicity'].format(dir='DIR')}` and set REFINERY_MODELS=DIR (or model_path "
                    "to its toxicity model file); the cascade needs torch and transformers: "
                    "pip install 'refinery[classifiers]'")
            from refinery.classifiers.transformer import HEAD_FILE, TransformerScorer

            transformer_dir = model_file.parent / combine["transformer_dir"]
            if not (transformer_dir / HEAD_FILE).is_file():
                _missing(transformer_dir, "the toxicity cascade's transformer")
            self.transformer = TransformerScorer(transformer_dir,
                                                 max_length=int(combine["transformer_max_length"]), threads=threads)

    @property
    def fast_threshold(self) -> float:
        return float(self.report["combine"]["fast_threshold"])

    @property
    def threshold(self) -> float:
        """The F1-maximising threshold on OLID validation of what :meth:`score` returns as ``final``."""
        return float(self.report["threshold"]) if self.transformer is not None else self.fast_threshold

    def gate_for(self, threshold: float | None) -> float:
        """The gate to use when removing at ``threshold``: the model's own gate (chosen for its
        F1 threshold, or below) or, for a stricter threshold, the recipe's gate for the largest
        grid threshold not above it (a lower grid point gives a lower, safer gate)."""
        if threshold is None or self.transformer is None or threshold <= float(self.report["threshold"]):
            return self.gate
        table = {float(k): float(v) for k, v in self.report["combine"].get("gates_by_threshold", {}).items()}
        usable = [t for t in table if t <= threshold]
        return max(self.gate, table[max(usable)]) if usable else self.gate

    def component_scores(self, prepared: list[str]) -> dict[str, np.ndarray]:
        return {"fasttext": binary_scores(self.fasttext, prepared, POSITIVE), "lexicon": self.lexicon.score_prepared(prepared)}

    def score(self, prepared: list[str], gate: float | None = None) -> ToxicityScores:
        """Scores of prepared texts; the transformer runs where the fast score >= ``gate``
        (default: the model's gate)."""
        transformer = self.transformer
        return cascade_scores(
            self.component_scores(prepared), self.fast_stacker, self.cascade_stacker, self.gate if gate is None else gate,
            None if transformer is None else lambda idx: transformer.score([prepared[i] for i in idx]),
        )


def cascade_scores(parts: dict[str, np.ndarray], fast_stacker: Stacker, cascade_stacker: Stacker | None, gate: float,
                   transformer_scores: Callable[[np.ndarray], np.ndarray] | None) -> ToxicityScores:
    """The cascade on component scores: ``transformer_scores(rows)`` is asked only for the rows
    whose fast score reaches ``gate`` (the recipe passes scores it already has, the model runs
    the transformer)."""
    fast = fast_stacker(parts)
    final = fast.copy()
    transformer = np.full(len(fast), np.nan)
    if transformer_scores is not None and cascade_stacker is not None:
        idx = np.flatnonzero(fast >= gate)
        if len(idx):
            transformer[idx] = transformer_scores(idx)
            final[idx] = cascade_stacker({**{k: v[idx] for k, v in parts.items()}, "transformer": transformer[idx]})
    return ToxicityScores(final, fast, transformer)

def _missing(path: Path, what: str) -> None:
    raise MissingModelError(f"{what} is missing at {path}. Train it with: "
                            f"`{TRAIN_COMMANDS['toxicity'].format(dir=path.parent)}`")
