"""The toxicity model's parts on their own: the exported lexicon, the stackers, the cascade's
transformer (a real fine-tune of the packaged MiniLM on 96 real tweets and leads: the session's
tiny toxicity model, tests/_classifiers_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from refinery.classifiers.stacking import Stacker, choose_gate, cross_fitted, fit_logistic, fit_stacker, logit
from tests._classifiers_fixtures import TINY_TRANSFORMER, needs_data  # noqa: E402

#: the session fixtures (the tiny toxicity model is shared with test_classifiers.py: a plugin, so
#: it is trained once per session)
pytest_plugins = ["tests._classifiers_fixtures"]


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
@pytest.mark.slow  # a second 6-step fine-tune (~6 s), plus the session's tiny toxicity model when this file runs alone (~15 s)
def test_transformer_fine_tune_is_reproducible_and_learns(toxicity_model, tiny_toxicity_data: Path, tmp_path: Path) -> None:
    """The session's tiny cascade fine-tuned MiniLM on the tiny training rows (6 steps); the same
    data, seed and thread count give the same weights, byte for byte."""
    from refinery.classifiers.common import roc_auc
    from refinery.classifiers.toxicity import transformer_examples
    from refinery.classifiers.transformer import HEAD_FILE, TransformerScorer, fine_tune

    out, report = toxicity_model
    first = out / report["combine"]["transformer_dir"]
    rows = transformer_examples(tiny_toxicity_data)
    info = fine_tune(rows, tmp_path / "again", TINY_TRANSFORMER)
    assert info["train_examples"] == len(rows) and info["steps"] == len(rows) // TINY_TRANSFORMER.batch_size == 6
    for name in (HEAD_FILE, "model.safetensors"):
        assert (tmp_path / "again" / name).read_bytes() == (first / name).read_bytes(), name
    texts = [t for t, _ in rows]
    scorer = TransformerScorer(first, max_length=TINY_TRANSFORMER.max_length)
    scores = scorer.score(texts)
    labels = np.array([y for _, y in rows])
    assert roc_auc(labels, scores) > 0.85, roc_auc(labels, scores)  # it fitted its training rows (a random head: ~0.5)
    # batching does not change a document's score beyond float noise
    one_by_one = TransformerScorer(first, max_length=TINY_TRANSFORMER.max_length, batch_size=1)
    assert np.allclose([one_by_one.score([t])[0] for t in texts[:5]], scores[:5], atol=1e-5)
