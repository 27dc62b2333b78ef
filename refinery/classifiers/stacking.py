"""Combine several models' probabilities into one: logistic regression on their logits.

Fitted on a validation split the component models never trained on (a few thousand rows, a
handful of features: a Newton solver in numpy is exact and needs no scikit-learn at run time).
Stored as plain numbers in the recipe's JSON report, applied by the stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p / (1.0 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class Stacker:
    """P = sigmoid(intercept + sum_i coef_i * logit(p_i)), inputs in ``features`` order."""

    features: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float

    def __call__(self, probabilities: dict[str, np.ndarray]) -> np.ndarray:
        z = np.full(len(probabilities[self.features[0]]), self.intercept, dtype=np.float64)
        for name, c in zip(self.features, self.coef):
            z += c * logit(probabilities[name])
        return sigmoid(z)

    def to_json(self) -> dict[str, Any]:
        return {"features": list(self.features), "coef": [round(c, 6) for c in self.coef],
                "intercept": round(self.intercept, 6), "formula": "sigmoid(intercept + sum coef_i * logit(p_i))"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stacker:
        return cls(tuple(data["features"]), tuple(float(c) for c in data["coef"]), float(data["intercept"]))


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-2, iterations: int = 50) -> tuple[np.ndarray, float]:
    """(coef, intercept) minimising log-loss + l2/2 |coef|^2 (intercept unpenalised), by Newton."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    A = np.hstack([X, np.ones((len(X), 1))])
    w = np.zeros(A.shape[1])
    penalty = np.full(A.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = sigmoid(A @ w)
        grad = A.T @ (p - y) + penalty * w
        hess = (A * (p * (1 - p))[:, None]).T @ A + np.diag(penalty) + 1e-9 * np.eye(A.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w[:-1], float(w[-1])


def fit_stacker(features: Sequence[str], probabilities: dict[str, np.ndarray], labels: np.ndarray) -> Stacker:
    X = np.column_stack([logit(probabilities[f]) for f in features])
    coef, intercept = fit_logistic(X, labels)
    return Stacker(tuple(features), tuple(float(c) for c in coef), intercept)


def cross_fitted(features: Sequence[str], probabilities: dict[str, np.ndarray], labels: np.ndarray,
                 fold_of: np.ndarray) -> np.ndarray:
    """Out-of-fold stacked probabilities: each row scored by a stacker fitted without its fold
    (so a threshold chosen on them is not chosen on the stacker's own training rows)."""
    out = np.zeros(len(labels), dtype=np.float64)
    for fold in np.unique(fold_of):
        held = fold_of == fold
        stacker = fit_stacker(features, {k: v[~held] for k, v in probabilities.items()}, labels[~held])
        out[held] = stacker({k: v[held] for k, v in probabilities.items()})
    return out


def choose_gate(labels: np.ndarray, scores: np.ndarray, keep_recall: float) -> float:
    """The highest score (0.01 grid) at or above which ``keep_recall`` of the positives still lie:
    the cascade's cheap first stage passes on everything at or above it."""
    positives = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(labels, dtype=bool)])
    if len(positives) == 0:
        return 0.0
    cut = positives[int(np.floor((1.0 - keep_recall) * len(positives)))]
    return float(np.floor(cut * 100) / 100)

