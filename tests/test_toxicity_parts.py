"""The toxicity model's parts on their own: the exported lexicon, the stackers, the cascade's
transformer (a real fine-tune of the packaged MiniLM on a few real tweets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from refinery.classifiers.stacking import Stacker, choose_gate, cross_fitted, fit_logistic, fit_stacker, logit
from tests._classifiers_fixtures import SHARED_DATA, needs_data


# -- lexicon ------------------------------------------------------------------------------------
def test_exported_lexicon_equals_the_package_model(tmp_path: Path) -> None:
    from profanity_check import predict_prob
    from profanity_check.profanity_check import vectorizer

    from refinery.classifiers.lexicon import LinearLexicon, export_profanity_check

    lexicon, provenance = export_profanity_check()
    assert provenance["package"].startswith("alt-profanity-check") and len(provenance["model_sha256"]) == 64
    texts = ["you are an idiot and a moron", "the cat sat on the mat", "", "what the hell is this shit",
             "hello hello world world stupid stupid", "Ordinary sentence about the weather in Paris."]
    analyzer = vectorizer.build_analyzer()
    expected = predict_prob(texts)
    assert np.allclose(lexicon.score_token_lists([analyzer(t) for t in texts]), expected, atol=1e-12)
    lexicon.save(tmp_path / "lex.npz")
    again = LinearLexicon.load(tmp_path / "lex.npz")
    assert np.allclose(again.score_token_lists([analyzer(t) for t in texts]), expected, atol=1e-12)
    # on prepared text (what the stage feeds it), single characters and punctuation are not words
    from refinery.classifiers.common import prepare_text

    prepared = [prepare_text(t, 1000) for t in texts]
    assert np.allclose(again.score_prepared(prepared), expected, atol=1e-9)
    assert expected[0] > 0.9 > 0.2 > expected[1]


# -- stacking -----------------------------------------------------------------------------------
def test_fit_logistic_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 2))
    y = rng.random(20_000) < 1 / (1 + np.exp(-(0.5 + 2.0 * X[:, 0] - 1.0 * X[:, 1])))
    coef, intercept = fit_logistic(X, y, l2=0.0)
    assert coef == pytest.approx([2.0, -1.0], abs=0.08) and intercept == pytest.approx(0.5, abs=0.08)


def test_stacker_round_trips_and_cross_fitting_differs_from_in_sample() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(600) < 0.4
    p = {"a": np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 600), 0.01, 0.99), "b": rng.random(600)}
    stacker = fit_stacker(("a", "b"), p, y)
    assert stacker.coef[0] > 1.0 and abs(stacker.coef[1]) < 0.5  # the informative input dominates
    again = Stacker.from_json(stacker.to_json())
    assert np.allclose(again(p), stacker(p), atol=1e-5)
    z = stacker.intercept + stacker.coef[0] * logit(p["a"]) + stacker.coef[1] * logit(p["b"])
    assert np.allclose(stacker(p), 1 / (1 + np.exp(-z)))
    oof = cross_fitted(("a", "b"), p, y, np.arange(600) % 5)
    assert oof.shape == (600,) and not np.allclose(oof, stacker(p))


def test_choose_gate_keeps_the_asked_recall() -> None:
    labels = np.array([True] * 100 + [False] * 100)
    scores = np.concatenate([np.linspace(0.05, 0.95, 100), np.linspace(0.0, 0.5, 100)])
    gate = choose_gate(labels, scores, 0.98)
    assert np.mean(scores[:100] >= gate) >= 0.98
    assert gate == pytest.approx(0.06, abs=0.011)
    assert choose_gate(np.zeros(3, bool), np.ones(3), 0.9) == 0.0


# -- transformer --------------------------------------------------------------------------------
@needs_data
@pytest.mark.slow
def test_transformer_fine_tune_is_reproducible_and_learns(tmp_path: Path) -> None:
    from refinery.classifiers.toxicity import olid_transformer_examples
    from refinery.classifiers.transformer import TransformerParams, TransformerScorer, fine_tune

    rows = olid_transformer_examples(SHARED_DATA)
    sample = [r for r in rows if r[1]][:48] + [r for r in rows if not r[1]][:48]
    params = TransformerParams(epochs=3, batch_size=16, lr=2e-4, max_length=48)
    info = fine_tune(sample, tmp_path / "a", params)
    fine_tune(sample, tmp_path / "b", params)
    assert info["steps"] == 18 and info["train_examples"] == 96
    texts = [t for t, _ in sample]
    a = TransformerScorer(tmp_path / "a", max_length=48).score(texts)
    b = TransformerScorer(tmp_path / "b", max_length=48).score(texts)
    assert np.array_equal(a, b)  # same seed, same data, same threads: the same model
    labels = np.array([y for _, y in sample])
    from refinery.classifiers.common import roc_auc

    assert roc_auc(labels, a) > 0.9, roc_auc(labels, a)  # it fitted its training tweets
    # batching does not change a document's score beyond float noise
    one_by_one = np.array([TransformerScorer(tmp_path / "a", max_length=48, batch_size=1).score([t])[0] for t in texts[:5]])
    assert np.allclose(one_by_one, a[:5], atol=1e-5)
