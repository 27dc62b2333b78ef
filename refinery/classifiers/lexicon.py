"""A linear word-weight score learnt from 200k labelled comments, as a plain numpy lexicon.

The ``alt-profanity-check`` wheel ships a TF-IDF (unigrams, 15k words) + linear SVM model
trained on ~200k human-labelled texts (Davidson et al.'s tweets and the Jigsaw / Kaggle Wikipedia
toxic-comment set), calibrated with Platt scaling over 5 folds. That is more labelled offensive
language than our own recipe can see (the Jigsaw comments are not in ``../shared/data``), and on
OLID it carries signal the fastText model lacks (ROC AUC 0.84 alone; stacked with fastText the
OLID test F1 rises by ~0.04, docs/classifiers.md).

Why export it instead of calling the package: the package pins one scikit-learn and loads
joblib pickles, and its vectorizer re-tokenizes every text in Python. Exported once by the
toxicity recipe (:func:`export_profanity_check`, needs the wheel) into a small ``.npz``, the
score is a dictionary lookup per token of the text the fastText model already prepared, with
no scikit-learn at run time:

    tf-idf over the vocabulary, L2-normalised -> decision f_k = w_k . x + b_k per fold ->
    P = mean_k sigmoid(-(A_k f_k + B_k))

which is exactly the package's ``predict_prob`` when given the package's own tokens (tested).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: tokens the package's vectorizer keeps: ``(?u)\\b\\w\\w+\\b``, i.e. word-character runs of >= 2
MIN_TOKEN_CHARS = 2


@dataclass
class LinearLexicon:
    vocab: dict[str, int]
    idf: np.ndarray  # (V,)
    coef: np.ndarray  # (folds, V) SVM weights
    intercept: np.ndarray  # (folds,)
    calib_a: np.ndarray  # (folds,) Platt scaling: P = sigmoid(-(a f + b))
    calib_b: np.ndarray  # (folds,)

    def __post_init__(self) -> None:
        # fold the idf into the weights once: f = (coef * idf) . tf / ||idf * tf||
        self._weighted = self.coef * self.idf[None, :]

    def score_token_lists(self, docs: list[list[str]]) -> np.ndarray:
        """P(offensive) per document, from its tokens (words of >= 2 characters count; unknown
        words add nothing; a document with no known word gets the models' prior)."""
        vocab = self.vocab
        out = np.empty(len(docs), dtype=np.float64)
        for i, tokens in enumerate(docs):
            counts: dict[int, int] = {}
            for tok in tokens:
                j = vocab.get(tok)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            if counts:
                idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
                tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
                norm = float(np.sqrt(np.sum((tf * self.idf[idx]) ** 2)))
                f = self._weighted[:, idx] @ tf / norm + self.intercept
            else:
                f = self.intercept.copy()
            out[i] = float(np.mean(1.0 / (1.0 + np.exp(self.calib_a * f + self.calib_b))))
        return out

    def score_prepared(self, prepared: list[str]) -> np.ndarray:
        """Scores of texts prepared by :func:`refinery.classifiers.common.prepare_text`
        (lowercased, punctuation split off): their whitespace tokens are the words."""
        return self.score_token_lists([[t for t in p.split() if len(t) >= MIN_TOKEN_CHARS] for p in prepared])

    def save(self, path: Path) -> None:
        words = np.array(sorted(self.vocab, key=self.vocab.__getitem__), dtype=object)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        try:
            np.savez_compressed(tmp, words=words.astype(str), idf=self.idf, coef=self.coef, intercept=self.intercept,
                                calib_a=self.calib_a, calib_b=self.calib_b)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path: Path) -> LinearLexicon:
        with np.load(path, allow_pickle=False) as z:
            words = [str(w) for w in z["words"]]
            return cls({w: i for i, w in enumerate(words)}, z["idf"], z["coef"], z["intercept"], z["calib_a"], z["calib_b"])


def export_profanity_check() -> tuple[LinearLexicon, dict[str, str]]:
    """The lexicon inside the installed ``alt-profanity-check`` wheel, plus its provenance
    (package version and the SHA-256 of its two model files)."""
    try:
        import joblib
        import profanity_check
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the toxicity recipe needs alt-profanity-check (pip install 'refinery[classifiers]')") from exc
    from importlib.metadata import version

    from refinery.classifiers.common import sha256_file

    data = Path(profanity_check.__file__).parent / "data"
    vectorizer = joblib.load(data / "vectorizer.joblib")
    model = joblib.load(data / "model.joblib")
    folds = model.calibrated_classifiers_
    if not all(c.method == "sigmoid" and len(c.calibrators) == 1 for c in folds):
        raise ValueError("alt-profanity-check's model is not a sigmoid-calibrated binary classifier any more")
    lexicon = LinearLexicon(
        vocab={w: int(i) for w, i in vectorizer.vocabulary_.items()},
        idf=np.asarray(vectorizer.idf_, dtype=np.float64),
        coef=np.stack([np.asarray(c.estimator.coef_[0], dtype=np.float64) for c in folds]),
        intercept=np.array([float(c.estimator.intercept_[0]) for c in folds]),
        calib_a=np.array([float(c.calibrators[0].a_) for c in folds]),
        calib_b=np.array([float(c.calibrators[0].b_) for c in folds]),
    )
    provenance = {
        "package": f"alt-profanity-check {version('alt-profanity-check')}",
        "model_sha256": sha256_file(data / "model.joblib"),
        "vectorizer_sha256": sha256_file(data / "vectorizer.joblib"),
        "trained_on": "~200k labelled texts: Davidson et al. tweets + Jigsaw/Kaggle Wikipedia toxic comments (package README)",
        "licence": "MIT (package)",
    }
    return lexicon, provenance
