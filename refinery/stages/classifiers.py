"""fastText classifier stages: toxicity (plus a word-list profanity score) and quality.

Both score a whole record batch with one fastText call and write score columns; which documents
go is decided by thresholds in the config. Models are trained by ``refinery train-classifier``
(recipes in ``refinery/classifiers/``; see docs/classifiers.md).

Model files: ``model_path`` if given, else ``$REFINERY_MODELS/<kind>.ftz`` or ``.bin`` (when the
variable is set, only there), else ``~/.cache/refinery/models/<kind>.ftz`` or ``.bin`` (where
``refinery train-classifier`` writes), else the small models shipped in the package
(``refinery/resources/models/``, README there), so both stages work out of the box. A missing
file fails when the stage is built (so ``refinery run`` stops before touching any shard) with a
message naming the command that trains it.

Input rules, the same for both stages:

- null or empty ``text``, or text without a letter or digit (whitespace, punctuation, zero-width
  spaces): removed with reason ``empty_text`` (metric null),
  score columns null. Not scoring is honest: a score of an empty string would be the model's
  prior, not a judgement;
- scoring reads the first ``max_chars`` characters only (default 20,000, ~4,000 words: the
  models were trained on tweets and Wikipedia leads, and a 5 MB page must not cost 5 MB of
  tokenizing); ``profanity_word_frac`` is measured on the same prefix, with the same tokens;
- bytes that are not valid UTF-8 (possible in Parquet written elsewhere) become U+FFFD, never an
  exception; newlines become spaces (fastText reads one line per example).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa

from refinery.classifiers.common import (
    binary_scores,
    check_labels,
    decode_texts,
    load_fasttext,
    prepare_batch,
    resolve_model_path,
)
from refinery.stages.base import Stage, with_decision


EMPTY_TEXT = "empty_text"
DOCS_KIND = "quality_docs"  # the quality recipe trained with --docs-positives (code_pages)
CODE_PAGES_MAX_RISE = 10.0  # code_pages: the docs model lifts a score at most one order of magnitude


class _FastTextStage(Stage):
    kind: ClassVar[str] = ""
    libraries: ClassVar[tuple[str, ...]] = ("fasttext-numpy2",)
    positive: ClassVar[str] = ""  # the label whose probability is the score

    def __init__(self, model_path: str | None, max_chars: int, name: str | None) -> None:
        super().__init__(name)
        if max_chars < 1:
            raise ValueError("max_chars must be >= 1")
        self.model_path = model_path
        self.max_chars = int(max_chars)
        # fail at config time, not mid-run (missing file, or a model with the wrong labels); the
        # loaded model is not pickled: each worker resolves and loads it again (paths may differ)
        self._model()

    def _model(self) -> Any:
        return self._lazy_loaded("_lazy_model", self.kind, self.model_path)

    def _lazy_loaded(self, attr: str, kind: str, model_path: str | None) -> Any:
        """The model of ``kind`` (at ``model_path``, else the packaged one), loaded once into ``attr``
        (a ``_lazy`` name: not pickled, each worker loads its own)."""
        model = getattr(self, attr, None)
        if model is None:
            model = self._load_model(resolve_model_path(kind, model_path))
            setattr(self, attr, model)
        return model

    def _load_model(self, path: Path) -> Any:
        model = load_fasttext(path)
        check_labels(model, path, self.kind, self.positive)
        return model

    def load(self) -> None:
        self._model()

    def model_files(self) -> list[Path]:
        return [resolve_model_path(self.kind, self.model_path)]

    def _prepare(self, batch: pa.RecordBatch) -> tuple[list[str | None], np.ndarray, list[tuple[str, int]]]:
        """(decoded texts, mask of scoreable rows, their prepared texts and punctuation counts)."""
        texts = decode_texts(batch.column("text")) if "text" in batch.schema.names else [None] * batch.num_rows
        # no letter or digit ("", ".", a zero-width space): nothing to score; the quality model
        # scored "." 1.0 and a lone U+200B 0.68 (found by adversarial testing)
        mask = np.array([bool(t) and any(c.isalnum() for c in t) for t in texts], dtype=bool)
        return texts, mask, prepare_batch([self._text_to_score(t) for t, ok in zip(texts, mask) if ok], self.max_chars)

    def _text_to_score(self, text: str) -> str:
        """What the model reads of a document (the whole text; the quality stage may drop code)."""
        return text

    def _score(self, batch: pa.RecordBatch) -> tuple[list[str | None], np.ndarray, list[tuple[str, int]], np.ndarray]:
        """:meth:`_prepare` plus the scores of the scoreable rows, in row order."""
        texts, mask, prepared = self._prepare(batch)
        return texts, mask, prepared, binary_scores(self._model(), [p for p, _ in prepared], self.positive)


def _column(values: np.ndarray, mask: np.ndarray) -> pa.Array:
    full = np.zeros(len(mask), dtype=np.float64)
    full[mask] = values
    return pa.array(full, type=pa.float64(), mask=~mask)


class ToxicityFilter(_FastTextStage):
    """Score P(offensive) and the profanity word fraction; remove above the thresholds.

    The score comes from :class:`refinery.classifiers.toxicity_model.ToxicityModel`: fastText
    and a word-weight lexicon, stacked, for every document (the *fast pair*; the default, which
    the packaged model provides: no torch, no training). With ``cascade: true`` a fine-tuned
    MiniLM re-scores the documents whose fast score reaches the model's gate (OLID test F1 0.70+
    against ~0.68 for the fast pair; on English web text few documents reach the gate, so the
    cost stays small); it needs a model directory trained with its transformer, and torch.
    ``gate`` overrides the model's gate; by default it follows ``threshold``: the stricter the
    threshold, the fewer documents need the transformer (the recipe stores a gate per threshold
    that keeps 98% of what the full cascade would flag on OLID validation).

    Defaults favour precision on web text: ``threshold`` 0.8, ``max_profanity_frac`` 0.05 (one
    word in twenty on the lists). ``null`` switches a check off. See docs/classifiers.md.

    Columns: ``toxicity_score`` (what the threshold applies to), ``toxicity_fast_score``,
    ``toxicity_transformer_score`` (null where the transformer did not run),
    ``profanity_word_frac``. Reasons: ``toxic`` (metric: ``toxicity_score``), then
    ``profanity`` (metric: ``profanity_word_frac``), ``empty_text``.
    """

    kind = "toxicity"
    positive = "OFF"

    def __init__(
        self,
        model_path: str | None = None,
        threshold: float | None = 0.8,
        max_profanity_frac: float | None = 0.05,
        max_chars: int = 20_000,
        cascade: bool = False,  # opt-in: the transformer needs torch and a trained model directory
        gate: float | None = None,
        name: str | None = None,
    ) -> None:
        for pname, value in (("threshold", threshold), ("max_profanity_frac", max_profanity_frac), ("gate", gate)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{pname} must be in [0, 1] or null, got {value}")
        if gate is not None and not cascade:  # it would be accepted and never used
            raise ValueError("gate applies to the cascade only: set cascade: true, or remove gate")
        self.threshold = threshold
        self.max_profanity_frac = max_profanity_frac
        self.cascade = bool(cascade)
        self.gate = gate
        if self.cascade:  # the transformer's scores depend on torch's and transformers' versions too
            self.libraries = ("fasttext-numpy2", "torch", "transformers")
        super().__init__(model_path, max_chars, name)

    def effective_gate(self) -> float:
        """``gate`` if set, else the model's gate for ``threshold`` (see ToxicityModel.gate_for)."""
        return self.gate if self.gate is not None else self._model().gate_for(self.threshold)

    def model_files(self) -> list[Path]:
        """The fastText model, its report (how the parts combine) and lexicon, and with the
        cascade the transformer's files."""
        model = resolve_model_path(self.kind, self.model_path)
        report = model.with_suffix(".json")
        files = [model, report]
        combine = json.loads(report.read_text()).get("combine") or {} if report.is_file() else {}
        if combine.get("lexicon_file"):
            files.append(model.parent / combine["lexicon_file"])
        if self.cascade and combine.get("transformer_dir"):
            files += sorted(f for f in (model.parent / combine["transformer_dir"]).rglob("*") if f.is_file())
        return [f for f in files if f.is_file()]

    def _load_model(self, path: Path) -> Any:
        from refinery.classifiers.toxicity_model import ToxicityModel

        return ToxicityModel(path, use_transformer=self.cascade, threads=1)  # one worker per core

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        from refinery.classifiers.profanity import default_lexicon

        _, mask, prepared = self._prepare(batch)
        scored = self._model().score([p for p, _ in prepared], gate=self.effective_gate() if self.cascade else None)
        scores = scored.final
        lexicon = default_lexicon()
        fracs = np.array([lexicon.flagged_fraction_prepared(p, n)[0] for p, n in prepared], dtype=np.float64)
        reasons: list[str | None] = [None] * batch.num_rows
        metrics: list[float | None] = [None] * batch.num_rows
        j = 0
        for i, ok in enumerate(mask):
            if not ok:
                reasons[i] = EMPTY_TEXT
                continue
            score, frac = float(scores[j]), float(fracs[j])
            j += 1
            if self.threshold is not None and score >= self.threshold:
                reasons[i], metrics[i] = "toxic", score
            elif self.max_profanity_frac is not None and frac > self.max_profanity_frac:
                reasons[i], metrics[i] = "profanity", frac
        ran = ~np.isnan(scored.transformer)
        transformer_mask = mask.copy()
        transformer_mask[mask] = ran
        return with_decision(batch, reasons, metrics, extra={
            "toxicity_score": _column(scores, mask),
            "toxicity_fast_score": _column(scored.fast, mask),
            "toxicity_transformer_score": _column(scored.transformer[ran], transformer_mask),
            "profanity_word_frac": _column(fracs, mask),
        })

    def metric_columns(self) -> list[str]:
        # without the cascade the transformer never runs (its column is all null) and the fast
        # score is the score: no histogram of either (the report drew the same chart twice)
        cascade = ["toxicity_fast_score", "toxicity_transformer_score"] if self.cascade else []
        return ["toxicity_score", *cascade, "profanity_word_frac"]


def keep_probability(score: np.ndarray | float, alpha: float) -> np.ndarray:
    """P(pareto(alpha) > 1 - score) = (2 - score) ** -alpha: the share Pareto sampling keeps."""
    return np.power(2.0 - np.asarray(score, dtype=np.float64), -alpha)


def pareto_draws(ids: list[str], seed: int, alpha: float) -> np.ndarray:
    """One Pareto(alpha) (Lomax, as ``np.random.pareto``) draw per document, a pure function of
    (seed, id): U^(-1/alpha) - 1 with U uniform in (0, 1) from the xxh3 hash of ``seed:id``. The
    same document gets the same decision on every run, machine and shard split."""
    import xxhash

    h = np.fromiter((xxhash.xxh3_64_intdigest(f"{seed}:{i}".encode("utf-8", "surrogatepass")) for i in ids),
                    dtype=np.uint64, count=len(ids))
    u = ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    return np.power(u, -1.0 / alpha) - 1.0


class QualityFilter(_FastTextStage):
    """Score P(Wikipedia-like) and keep by threshold or by GPT-3-style Pareto sampling.

    - ``mode: threshold``: remove when ``quality_score < threshold`` (reason ``low_quality``);
    - ``mode: pareto``: keep when ``pareto(alpha) > 1 - quality_score`` (GPT-3 used alpha = 9),
      i.e. with probability ``(2 - score) ** -alpha``: every document can survive, high scores
      nearly always do (reason ``pareto_sampled_out``). Draws are seeded per document id.

    ``exclude_code: true`` scores only the prose of a document: lines that look like code, shell
    commands or configuration (:func:`refinery.classifiers.prose.is_code_line`) are left out of
    the first ``max_chars`` characters, unless fewer than ``min_prose_words`` words would be left
    (then the whole prefix is scored). The model never saw code on either side of its training,
    and its tokens pushed programming tutorials into the removed tail (docs/classifiers.md).

    ``code_pages: true`` scores a document that explains code (:func:`refinery.classifiers.prose.
    explains_code`: >= 3 code lines making >= 10% of its lines, and >= ``min_prose_words`` words
    of prose sentences) with the larger of this model's score and a documentation-aware model's
    (``docs_model_path``, default the packaged ``quality_docs.ftz``: the same recipe trained with
    ``--docs-positives``), which reads the whole prefix, code included, capped at ten times this
    model's score (``CODE_PAGES_MAX_RISE``: near misses are lifted, the deep junk tail is not). Every other document is
    scored exactly as without it, and a score can only rise: the wiki model's bias against the
    how-to register is undone where it costs programming pages, without the docs model's wider
    drift (it newly removes good prose and newly keeps junk when it scores everything).

    Metric: ``quality_score``. Empty text: ``empty_text``. The model is a confident
    Wikipedia-vs-web separator: on the English Common Crawl sample the default threshold 0.01
    removes ~40% of documents, 0.05 ~72%; Pareto sampling with alpha 9 keeps ~1%, alpha 1 ~52%
    (docs/classifiers.md has the table).
    """

    kind = "quality"
    positive = "wiki"
    #: runs made before these params resume: exclude_code and min_prose_words (session 32; a run
    #: made in sessions 28-31 was refused for them), code_pages and docs_model_path (session 34)
    added_params = {"exclude_code": False, "min_prose_words": 50, "code_pages": False, "docs_model_path": None}

    def __init__(
        self,
        model_path: str | None = None,
        mode: Literal["threshold", "pareto"] = "threshold",
        threshold: float = 0.01,
        alpha: float = 9.0,
        seed: int = 0,
        max_chars: int = 20_000,
        exclude_code: bool = False,
        min_prose_words: int = 50,
        code_pages: bool = False,
        docs_model_path: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(model_path, max_chars, name)
        if min_prose_words < 0:
            raise ValueError(f"min_prose_words must be >= 0, got {min_prose_words}")
        if docs_model_path is not None and not code_pages:  # it would be accepted and never used
            raise ValueError("docs_model_path applies to code_pages only: set code_pages: true, or remove it")
        self.exclude_code = bool(exclude_code)
        self.min_prose_words = int(min_prose_words)
        self.code_pages = bool(code_pages)
        self.docs_model_path = docs_model_path
        if self.code_pages:
            self._docs_model()  # fail at config time, like the main model
        if mode not in ("threshold", "pareto"):
            raise ValueError(f"mode must be 'threshold' or 'pareto', got {mode!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if not (math.isfinite(alpha) and alpha > 0):  # .inf passed here and failed every shard
            raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
        self.mode = mode
        self.threshold = threshold
        self.alpha = alpha
        self.seed = seed

    def _docs_model(self) -> Any:
        return self._lazy_loaded("_lazy_docs_model", DOCS_KIND, self.docs_model_path)

    def load(self) -> None:
        super().load()
        if self.code_pages:  # a worker's warm-up loads both models, not the docs one at its first batch
            self._docs_model()

    def model_files(self) -> list[Path]:
        docs = [resolve_model_path(DOCS_KIND, self.docs_model_path)] if self.code_pages else []
        return super().model_files() + docs

    def _code_page_scores(self, texts: list[str | None], mask: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``scores`` with each document that explains code raised to the docs model's score."""
        from refinery.classifiers.common import prepare_text
        from refinery.classifiers.prose import explains_code

        scored = [t for t, ok in zip(texts, mask) if ok]
        rows = [j for j, t in enumerate(scored) if explains_code(t[: self.max_chars], self.min_prose_words)]
        if not rows:
            return scores
        # the docs model learned documentation with its code: it reads the prefix whole
        docs = binary_scores(self._docs_model(), [prepare_text(scored[j], self.max_chars) for j in rows], self.positive)
        out = scores.copy()
        # the docs model scores nearly anything with code and sentences well (an affiliate page with
        # an HTML snippet: 0.006): it may lift a page at most CODE_PAGES_MAX_RISE-fold, which rescues
        # how-tos near the threshold, not pages the packaged model puts far down the junk tail
        out[rows] = np.maximum(scores[rows], np.minimum(docs, CODE_PAGES_MAX_RISE * scores[rows]))
        return out

    def _text_to_score(self, text: str) -> str:
        if not self.exclude_code:
            return text
        from refinery.classifiers.prose import prose_text

        # cut first: a 5 MB page costs 20,000 characters of line tests, like the scoring itself
        return prose_text(text[: self.max_chars], self.min_prose_words)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        texts, mask, _, scores = self._score(batch)
        if self.code_pages:
            scores = self._code_page_scores(texts, mask, scores)
        full = np.zeros(batch.num_rows, dtype=np.float64)
        full[mask] = scores
        if self.mode == "threshold":
            drop, reason = full < self.threshold, "low_quality"
        else:
            if "id" in batch.schema.names:
                ids = [str(i) for i in batch.column("id").to_pylist()]
            else:  # no id column: the text itself identifies the document
                ids = [t or "" for t in texts]
            drop, reason = ~(pareto_draws(ids, self.seed, self.alpha) > 1.0 - full), "pareto_sampled_out"
        reasons: list[str | None] = [None] * batch.num_rows
        metrics: list[float | None] = [None] * batch.num_rows
        for i in range(batch.num_rows):
            if not mask[i]:
                reasons[i] = EMPTY_TEXT
            elif drop[i]:
                reasons[i], metrics[i] = reason, float(full[i])
        return with_decision(batch, reasons, metrics, extra={"quality_score": _column(scores, mask)})

    def metric_columns(self) -> list[str]:
        return ["quality_score"]
