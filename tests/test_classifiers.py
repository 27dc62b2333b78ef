"""Classifier recipes, metrics, word lists and the toxicity / quality stages, on real data and real
models trained once per session by the real recipes on a few hundred real rows
(tests/_classifiers_fixtures.py). These tests check code paths and behaviour; the full recipes'
quality targets (OLID test F1 >= 0.70 for the cascade, quality ROC AUC >= 0.95, ...) are checked
by ``python benchmarks/classifiers.py --targets`` (docs/benchmarks.md)."""

from __future__ import annotations

import gzip
import itertools
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.classifiers.common import (
    MissingModelError,
    binary_metrics,
    decode_texts,
    prepare_text,
    resolve_model_path,
    roc_auc,
    sha256_file,
)
from refinery.classifiers.profanity import RESOURCES, ProfanityLexicon, default_lexicon
from tests._classifiers_fixtures import (  # noqa: E402
    SHARED_DATA,
    TINY_DAVIDSON_TRAIN,
    TINY_DAVIDSON_VALIDATION,
    TINY_OLID_TEST,
    TINY_OLID_TRAIN,
    TINY_OLID_VALIDATION,
    TINY_QUALITY_PARAMS,
    TINY_TRANSFORMER,
    TINY_WIKI_HELD_OUT,
    TINY_WIKI_TRAIN,
    needs_data,
)

#: the session fixtures (tiny data directories, models trained on them), shared with
#: test_toxicity_parts.py: a plugin, so each is built once per session
pytest_plugins = ["tests._classifiers_fixtures"]


# -- metrics and text preparation (no data needed) ------------------------------------------------
def test_roc_auc_equals_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = np.round(rng.random(300) + 0.3 * y, 1)  # rounding creates many ties
    pos, neg = s[y], s[~y]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert roc_auc(y, s) == pytest.approx(pairwise, abs=1e-12)
    assert roc_auc([True, False], [0.9, 0.1]) == 1.0
    assert roc_auc([True, False], [0.1, 0.9]) == 0.0
    assert np.isnan(roc_auc([True, True], [0.1, 0.9]))


def test_binary_metrics_counts() -> None:
    m = binary_metrics([True, True, False, False, True], [0.9, 0.4, 0.6, 0.1, 0.7], threshold=0.5)
    # predicted positive: rows 0, 2, 4 -> tp 2, fp 1, fn 1
    assert (m["precision"], m["recall"], m["f1"]) == (pytest.approx(0.6667, abs=1e-4), pytest.approx(0.6667, abs=1e-4), pytest.approx(0.6667, abs=1e-4))
    assert m["positives"] == 3 and m["negatives"] == 2


def test_prepare_text_is_one_line_split_lowercased_and_truncated() -> None:
    t = prepare_text("Go HOME!!\nyou're @Someone_1 https://x.co/a?b=1 drunk\t😀", max_chars=1000)
    assert "\n" not in t  # fastText splits on any other whitespace run itself
    assert t.split() == "go home ! ! you ' re _user_ _url_ drunk 😀".split()
    assert prepare_text("abcdef ghij", max_chars=4) == "abcd"
    assert "\n" not in prepare_text("a\r\nb\n\nc", 100) and prepare_text("a\r\nb", 100).split() == ["a", "b"]


def test_decode_texts_never_raises_on_bad_utf8() -> None:
    raw = pa.array([b"ok \xff\xfe bytes", None, "caf\u00e9".encode()], pa.binary())
    as_string = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())  # unvalidated, like foreign Parquet
    with pytest.raises(UnicodeDecodeError):
        as_string.to_pylist()
    assert decode_texts(as_string) == ["ok \ufffd\ufffd bytes", None, "caf\u00e9"]
    assert decode_texts(pa.chunked_array([raw])) == decode_texts(raw)


def test_profanity_lexicon_words_phrases_and_punctuation() -> None:
    lex = ProfanityLexicon(["shit", "sh!t", "2 girls 1 cup", "ass", "\U0001F595"])
    # words are prepare_text tokens other than punctuation: "sh!t" is the words "sh" and "t"
    assert lex.flagged_fraction("What the SHIT, man. sh!t!") == (3 / 6, 6)
    assert lex.flagged_fraction("sh ! t") == (1.0, 2) and lex.flagged_fraction("sh t") == (0.0, 2)
    # a phrase counts every word it covers, once
    assert lex.flagged_fraction("watched 2 girls 1 cup today") == (4 / 6, 6)
    # word-level only: no substring hits (Scunthorpe problem), no partial phrase hits
    assert lex.flagged_fraction("classic assessment of 2 girls") == (0.0, 5)
    assert lex.flagged_fraction("") == (0.0, 0) and lex.flagged_fraction("?!") == (0.0, 0)
    assert lex.flagged_fraction("\U0001F595 you") == (0.0, 1)  # an emoji is not a word
    assert lex.flagged_fraction("ass " * 10 + "fine " * 10, max_chars=40) == (1.0, 10)
    shipped = default_lexicon()
    assert {"fuck", "shit", "asshole"} <= shipped.words and ("2", "girls", "1", "cup") in shipped.phrases["2"]
    assert shipped.flagged_fraction("The committee approved the annual budget for the library.")[0] == 0.0
    # better-profanity's ordinary words are not counted (a lead about God or an organ was removed);
    # LDNOOBW, C4's list, counts as published
    assert not {"god", "organ", "oral", "ovary", "nazi", "fat", "screw", "gay", "pollock"} & shipped.words
    ldnoobw = ProfanityLexicon.from_files([RESOURCES / "ldnoobw_en.txt"])
    assert ldnoobw.words <= shipped.words and "sex" in shipped.words
    lead = ("God is usually conceived as the supreme being. In monotheism God is the sole deity; the faith "
            "holds that God is the creator of the universe and the organ of grace.")
    assert shipped.flagged_fraction(lead)[0] == 0.0


# -- missing models -----------------------------------------------------------------------------
def test_missing_model_error_names_the_training_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from refinery.stages.classifiers import QualityFilter, ToxicityFilter

    monkeypatch.setenv("REFINERY_MODELS", str(tmp_path / "models"))
    with pytest.raises(MissingModelError) as exc:
        ToxicityFilter()
    msg = str(exc.value)
    assert f"refinery train-classifier toxicity --out {tmp_path / 'models'}" in msg
    assert str(tmp_path / "models" / "toxicity.bin") in msg
    with pytest.raises(MissingModelError, match=r"refinery train-classifier quality --out /nowhere"):
        QualityFilter(model_path="/nowhere/q.bin")
    # through the pipeline config: reported before any shard is touched
    from refinery.config import ConfigError, StageConfig

    with pytest.raises(ConfigError, match="refinery train-classifier quality"):
        StageConfig(type="quality", params={"mode": "pareto"}).build()


def test_default_model_path_prefers_quantized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFINERY_MODELS", str(tmp_path))
    (tmp_path / "quality.bin").write_bytes(b"x")
    assert resolve_model_path("quality", None) == tmp_path / "quality.bin"
    (tmp_path / "quality.ftz").write_bytes(b"x")
    assert resolve_model_path("quality", None) == tmp_path / "quality.ftz"


# -- trained models: reports, determinism ---------------------------------------------------------
def _source_path(recorded: str, data_dir: Path) -> Path:
    """A report's source path: under the data directory, or ``site-packages/...`` (a wheel's file)."""
    import sys

    if recorded.startswith("site-packages/"):
        rest = recorded.split("/", 1)[1]
        return next(Path(d) / rest for d in sys.path if d.endswith("site-packages") and (Path(d) / rest).is_file())
    return Path(recorded) if Path(recorded).is_absolute() else data_dir / recorded


def _check_report(out: Path, report: dict, data_dir: Path) -> None:
    assert json.loads((out / f"{report['kind']}.json").read_text()) == report
    model = out / report["model_file"]
    assert model.is_file() and sha256_file(model) == report["model_sha256"]
    assert report["hyperparameters"]["thread"] == 1 and report["hyperparameters"]["seed"] == 0
    for source in report["data"]["sources"]:
        assert sha256_file(_source_path(source["path"], data_dir)) == source["sha256"]
    assert len(report["data"]["training_file_sha256"]) == 64
    for split in report["metrics"].values():
        assert {"precision", "recall", "f1", "roc_auc"} <= split.keys()


@needs_data
@pytest.mark.slow  # the first test to use the session's tiny toxicity model: its setup trains it (~15-20 s, once)
def test_toxicity_model_report(toxicity_model, tiny_toxicity_data: Path) -> None:
    """The whole recipe ran (fastText with GloVe vectors, lexicon, transformer, stackers, gates,
    threshold) and its report says what it did. How good the full recipe's model is (OLID test F1
    >= 0.70, ...) is checked by ``python benchmarks/classifiers.py --targets``."""
    from refinery.classifiers.toxicity import load_olid

    out, report = toxicity_model
    _check_report(out, report, tiny_toxicity_data)
    # OLID's official test split, untouched: every test tweet, with its label
    _, test = load_olid(tiny_toxicity_data / "toxicity")
    assert len(test) == TINY_OLID_TEST
    olid_test = report["metrics"]["olid_test"]
    assert (olid_test["positives"], olid_test["negatives"]) == (sum(y for *_, y in test), sum(not y for *_, y in test))
    held = report["data"]["held_out_examples"]
    assert sum(held["olid_validation"].values()) == TINY_OLID_VALIDATION
    assert sum(held["davidson_validation"].values()) == TINY_DAVIDSON_VALIDATION
    assert held["wikipedia_validation"] == {"positives": 0, "negatives": TINY_WIKI_HELD_OUT}
    assert sum(report["data"]["train_examples"].values()) == TINY_OLID_TRAIN + TINY_DAVIDSON_TRAIN + TINY_WIKI_TRAIN
    assert "olid_validation" in report["threshold_rule"]
    # every split is measured for the cascade (report["metrics"]), the fast pair and fastText alone
    parts = report["components"]
    for metrics in (report["metrics"], parts["fast"]["metrics"], parts["fasttext"]["metrics"]):
        assert metrics.keys() == {"olid_test", "olid_validation", "davidson_validation", "wikipedia_validation"}
    assert all(m["threshold"] == report["threshold"] for m in report["metrics"].values())
    assert all(m["threshold"] == parts["fast"]["threshold"] for m in parts["fast"]["metrics"].values())
    assert 0 < report["pretrained_vectors"]["words"] <= report["pretrained_vectors"]["training_vocabulary"]
    assert parts["lexicon"]["package"].startswith("alt-profanity-check")
    # the transformer trained on the training rows only: OLID train + Davidson train + leads
    n_transformer = TINY_OLID_TRAIN + TINY_DAVIDSON_TRAIN + TINY_WIKI_TRAIN
    assert parts["transformer"]["train_examples"] == n_transformer
    assert parts["transformer"]["steps"] == n_transformer // TINY_TRANSFORMER.batch_size
    assert parts["transformer"]["hyperparameters"]["max_length"] == TINY_TRANSFORMER.max_length
    combine = report["combine"]
    assert combine["fast"]["features"] == ["fasttext", "lexicon"]
    assert combine["cascade"]["features"] == ["fasttext", "lexicon", "transformer"]
    assert (out / combine["lexicon_file"]).is_file() and (out / combine["transformer_dir"] / "head.safetensors").is_file()
    # F*/2: a threshold is half an F1, so at most 0.5; gates never fall as the threshold rises
    assert 0 < report["threshold"] <= 0.5 and 0 < combine["fast_threshold"] <= 0.5
    gates = [combine["gates_by_threshold"][k] for k in sorted(combine["gates_by_threshold"])]
    assert gates and all(g >= combine["gate"] for g in gates) and gates == sorted(gates)
    assert 0 <= combine["gate"] < 1


@needs_data
def test_quality_model_report(quality_model, tiny_quality_data: Path) -> None:
    from refinery.classifiers import quality

    out, report = quality_model
    _check_report(out, report, tiny_quality_data)
    test = report["metrics"]["test"]
    wiki = [k for k, _ in quality.load_wikipedia(tiny_quality_data) if quality._held_out(f"wiki:{k}")]
    web, counts = quality.load_web(tiny_quality_data)
    assert (test["positives"], test["negatives"]) == (len(wiki), sum(quality._held_out(f"web:{k}") for k, _ in web))
    assert test["negatives"] >= 10 and report["data"]["warc_english"] > 0 and report["data"]["cc_docs_english"] > 0
    assert {k: report["data"][k] for k in counts} == counts
    # the score is P(wiki), not P(web): Wikipedia leads rank above web text (the recipe's target,
    # ROC AUC >= 0.95 on the full data, is a benchmark)
    assert test["roc_auc"] > 0.5


@needs_data
def test_same_seed_same_model_and_metrics_via_cli(toxicity_model, tiny_toxicity_data: Path, tmp_path: Path) -> None:
    """Re-training through the CLI (without the transformer, whose reproducibility has its own
    test) gives the byte-identical fastText model and identical fast-pair metrics."""
    import typer
    from typer.testing import CliRunner

    from refinery.cli_classifiers import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["train-classifier", "toxicity", "--out", str(tmp_path), "--data-dir",
                                      str(tiny_toxicity_data), "--seed", "0", "--no-quantize", "--no-transformer"])
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "toxicity.json").read_text())
    first = toxicity_model[1]
    assert again["components"]["fasttext"] == first["components"]["fasttext"]
    assert again["components"]["fast"] == first["components"]["fast"]
    assert again["combine"]["fast"] == first["combine"]["fast"]
    assert again["model_sha256"] == first["model_sha256"]
    assert again["data"]["training_file_sha256"] == first["data"]["training_file_sha256"]
    assert "cascade" not in again["combine"] and not (tmp_path / "toxicity_transformer").exists()
    assert again["metrics"] == again["components"]["fast"]["metrics"]  # without a transformer, the fast pair is the model
    assert json.loads(result.output)["metrics"] == again["metrics"]

    # that model directory has no transformer: the stage says so at config time unless told not to cascade
    from refinery.stages.classifiers import ToxicityFilter

    with pytest.raises(MissingModelError, match="no transformer"):
        ToxicityFilter(model_path=str(tmp_path / "toxicity.bin"), cascade=True)
    fast_only = ToxicityFilter(model_path=str(tmp_path / "toxicity.bin"), cascade=False)
    result = fast_only(_batch(["You are a complete idiot and a liar", "The museum opens at nine."]))
    assert result.column("toxicity_transformer_score").null_count == 2
    assert result.column("toxicity_score").to_pylist() == result.column("toxicity_fast_score").to_pylist()
    # the same values: one histogram in the stats and the report, not two alike
    assert fast_only.metric_columns() == ["toxicity_score", "profanity_word_frac"]


@needs_data
def test_other_seed_changes_the_model(tmp_path: Path, quality_model, tiny_quality_data: Path) -> None:
    from dataclasses import replace

    from refinery.classifiers import quality

    other = quality.train(tiny_quality_data, tmp_path, replace(TINY_QUALITY_PARAMS, seed=1), quantize=False)
    first = quality_model[1]
    assert other["hyperparameters"]["seed"] == 1
    assert other["model_sha256"] != first["model_sha256"]
    assert other["data"]["training_file_sha256"] != first["data"]["training_file_sha256"]  # the shuffle is seeded too
    assert other["data"]["train_examples"] == first["data"]["train_examples"]


@needs_data
def test_quantized_model_written_when_metrics_hold(tmp_path: Path, quality_model, tiny_quality_data: Path) -> None:
    from refinery.classifiers import quality

    (tmp_path / "quality.bin").write_bytes(b"stale")  # must not survive next to a new .ftz
    report = quality.train(tiny_quality_data, tmp_path, TINY_QUALITY_PARAMS, quantize=True)
    decision = report["quantization_decided_on"]
    assert decision["split"] == "validation" and decision["metric"] == "roc_auc"
    assert decision["full"] == report["metrics_before_quantization"]["validation"]["roc_auc"]
    assert decision["quantized"] >= decision["full"] - 0.01  # on this data the rule keeps the .ftz
    assert report["quantized"] and report["model_file"] == "quality.ftz"
    assert decision["quantized"] == report["metrics"]["validation"]["roc_auc"]  # metrics are the shipped model's
    assert not (tmp_path / "quality.bin").exists() and (tmp_path / "quality.ftz").is_file()
    assert report["model_bytes"] < quality_model[1]["model_bytes"] / 5
    # the stage loads it and scores like the report says
    from refinery.stages.classifiers import QualityFilter

    assert QualityFilter(model_path=str(tmp_path / "quality.ftz"))(_batch(["The museum opens at nine."])).num_rows == 1


# -- the stages on real text ---------------------------------------------------------------------
def _batch(texts: list, ids: list[str] | None = None) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "id": ids or [f"doc-{i}" for i in range(len(texts))],
        "text": pa.array(texts, pa.string()),
    })


def _olid_test(data_dir: Path) -> tuple[list[str], list[str], np.ndarray]:
    from refinery.classifiers.toxicity import load_olid

    _, test = load_olid(data_dir / "toxicity")
    return [i for i, _, _ in test], [t for _, t, _ in test], np.array([y for _, _, y in test])


@needs_data
def test_toxicity_stage_reproduces_the_recipes_metrics(toxicity_model, tiny_toxicity_data: Path) -> None:
    """The stage's path (decode, prepare, fast pair, gate, transformer, stack) gives the recipe's
    scores: the same metrics on OLID test as the report, and removal exactly at the threshold."""
    from refinery.stages.base import METRIC, REASON
    from refinery.stages.classifiers import ToxicityFilter

    out, report = toxicity_model
    ids, texts, labels = _olid_test(tiny_toxicity_data)
    stage = ToxicityFilter(model_path=str(out / report["model_file"]), threshold=report["threshold"], max_profanity_frac=None,
                           cascade=True)
    assert stage.effective_gate() == report["combine"]["gate"]  # at the model's own threshold: its own gate
    result = stage(_batch(texts, ids))
    scores = np.array(result.column("toxicity_score").to_pylist())
    got = binary_metrics(labels, scores, report["threshold"])
    want = report["metrics"]["olid_test"]
    # the recipe scores the whole split in one transformer pass, the stage only the gated rows: padding
    # differs, so floats may differ in the last bits (which could only move a tweet sitting on the threshold)
    assert got["f1"] == pytest.approx(want["f1"], abs=1e-3) and got["roc_auc"] == pytest.approx(want["roc_auc"], abs=1e-3)
    assert binary_metrics(labels, result.column("toxicity_fast_score").to_pylist(), report["combine"]["fast_threshold"]) \
        == report["components"]["fast"]["metrics"]["olid_test"]  # the fast pair: no transformer, exactly the same
    reasons = result.column(REASON).to_pylist()
    assert reasons == ["toxic" if s >= report["threshold"] else None for s in scores]
    assert [m for m, r in zip(result.column(METRIC).to_pylist(), reasons) if r] == [s for s, r in zip(scores, reasons) if r]
    assert "toxic" in reasons and None in reasons


@needs_data
def test_cascade_calls_the_transformer_only_at_or_above_the_gate(toxicity_model, tiny_toxicity_data: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from refinery.stages.classifiers import ToxicityFilter

    out, report = toxicity_model
    ids, texts, _ = _olid_test(tiny_toxicity_data)
    path = str(out / report["model_file"])
    fast = np.array(ToxicityFilter(model_path=path, cascade=False)(_batch(texts, ids)).column("toxicity_fast_score").to_pylist())
    gate = float(np.median(fast))  # half the tweets reach the transformer
    stage = ToxicityFilter(model_path=path, threshold=None, max_profanity_frac=None, cascade=True, gate=gate)
    model = stage._model()
    asked: list[list[str]] = []
    real_score = model.transformer.score
    monkeypatch.setattr(model.transformer, "score", lambda batch: asked.append(list(batch)) or real_score(batch))
    result = stage(_batch(texts, ids))
    reached = fast >= gate
    assert 0 < reached.sum() < len(texts)
    prepared = [prepare_text(t, stage.max_chars) for t in texts]
    assert len(asked) == 1 and sorted(asked[0]) == sorted(p for p, r in zip(prepared, reached) if r)
    transformer = result.column("toxicity_transformer_score").to_pylist()
    assert [t is not None for t in transformer] == list(reached)
    final = np.array(result.column("toxicity_score").to_pylist())
    assert np.array_equal(np.array(result.column("toxicity_fast_score").to_pylist()), fast)
    assert np.array_equal(final[~reached], fast[~reached])  # below the gate the fast score stands
    assert not np.allclose(final[reached], fast[reached])  # above it the cascade's stacker decides
    # nothing at or above the gate: the transformer is not called at all
    asked.clear()
    none = ToxicityFilter(model_path=path, threshold=None, max_profanity_frac=None, cascade=True, gate=float(fast.max()) + 0.01)
    monkeypatch.setattr(none._model().transformer, "score", lambda batch: asked.append(list(batch)) or real_score(batch))
    assert none(_batch(texts, ids)).column("toxicity_transformer_score").null_count == len(texts) and asked == []


@needs_data
def test_gate_follows_the_threshold_as_written_in_the_report(toxicity_model) -> None:
    """The gates the recipe wrote are the ones the stage reads back: the model's own gate up to
    its threshold, above it the gate stored for the largest grid threshold not above it."""
    from refinery.stages.classifiers import ToxicityFilter

    out, report = toxicity_model
    path = str(out / report["model_file"])
    combine = report["combine"]
    table = {float(k): v for k, v in combine["gates_by_threshold"].items()}

    def gate(threshold: float | None) -> float:
        return ToxicityFilter(model_path=path, threshold=threshold, cascade=True).effective_gate()

    assert gate(None) == gate(report["threshold"]) == combine["gate"]
    stricter = [t for t in sorted(table) if t > report["threshold"]]
    assert stricter, table
    for t in stricter:
        assert gate(t) == table[t]
        assert gate(round(t + 0.01, 2)) == table[t]  # between grid points: the grid point below
    assert gate(0.99) == table[max(table)]
    assert ToxicityFilter(model_path=path, threshold=0.99, cascade=True, gate=0.5).effective_gate() == 0.5
    model = ToxicityFilter(model_path=path, cascade=True)._model()
    assert (model.threshold, model.fast_threshold, model.gate) == (report["threshold"], combine["fast_threshold"], combine["gate"])
    assert ToxicityFilter(model_path=path, cascade=False)._model().threshold == combine["fast_threshold"]


@needs_data
def test_stacked_scores_are_the_logistic_combination_of_the_parts(toxicity_model, tiny_toxicity_data: Path) -> None:
    """fast = sigmoid(a + b logit(P_fastText) + c logit(P_lexicon)); final = the same over the three
    parts with the cascade's coefficients: recomputed here from the parts and the report's numbers."""
    from refinery.classifiers.common import load_fasttext
    from refinery.classifiers.lexicon import LinearLexicon
    from refinery.classifiers.transformer import TransformerScorer
    from refinery.stages.classifiers import ToxicityFilter

    out, report = toxicity_model
    combine = report["combine"]
    _, tweets, _ = _olid_test(tiny_toxicity_data)
    leads = [e["extract"] for e in json.loads((tiny_toxicity_data / "quality" / "summaries_en-us.json").read_text()).values()]
    texts = tweets[:40] + leads[:8]
    stage = ToxicityFilter(model_path=str(out / report["model_file"]), threshold=None, max_profanity_frac=None, cascade=True,
                           gate=0.0)  # the transformer scores every row
    result = stage(_batch(texts))
    prepared = [prepare_text(t, stage.max_chars) for t in texts]
    labels, probs = load_fasttext(out / report["model_file"]).predict(prepared, k=2)
    p_fasttext = np.array([dict(zip(lab, pr))["__label__OFF"] for lab, pr in zip(labels, probs)])
    p_lexicon = LinearLexicon.load(out / combine["lexicon_file"]).score_prepared(prepared)
    p_transformer = TransformerScorer(out / combine["transformer_dir"], max_length=combine["transformer_max_length"]).score(prepared)
    assert np.allclose(result.column("toxicity_transformer_score").to_pylist(), p_transformer, atol=1e-5)

    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    def stacked(section: dict, parts: dict[str, np.ndarray]) -> np.ndarray:
        z = section["intercept"] + sum(c * logit(parts[f]) for f, c in zip(section["features"], section["coef"]))
        return 1 / (1 + np.exp(-z))

    parts = {"fasttext": p_fasttext, "lexicon": p_lexicon, "transformer": p_transformer}
    # fastText reports probabilities with a 1e-5 floor: tolerances allow for that, nothing more
    assert np.allclose(result.column("toxicity_fast_score").to_pylist(), stacked(combine["fast"], parts), atol=1e-4)
    assert np.allclose(result.column("toxicity_score").to_pylist(), stacked(combine["cascade"], parts), atol=1e-4)
    assert np.ptp(result.column("toxicity_score").to_pylist()) > 0.1  # not a constant: the parts matter


@needs_data
def test_toxicity_model_parts_missing_name_the_training_command(toxicity_model, tmp_path: Path) -> None:
    from refinery.stages.classifiers import ToxicityFilter

    out, report = toxicity_model
    partial = tmp_path / "models"
    partial.mkdir()
    for name in (report["model_file"], "toxicity.json", report["combine"]["lexicon_file"]):
        shutil.copy(out / name, partial / name)
    model = str(partial / report["model_file"])
    with pytest.raises(MissingModelError, match=r"transformer is missing .*refinery train-classifier toxicity --out"):
        ToxicityFilter(model_path=model, cascade=True)
    assert ToxicityFilter(model_path=model, cascade=False)(_batch(["hello there"])).num_rows == 1
    (partial / report["combine"]["lexicon_file"]).unlink()
    with pytest.raises(MissingModelError, match="lexicon is missing"):
        ToxicityFilter(model_path=model, cascade=False)
    (partial / "toxicity.json").unlink()
    with pytest.raises(MissingModelError, match="report"):
        ToxicityFilter(model_path=model, cascade=False)


@needs_data
def test_toxicity_stage_decisions_on_real_text(toxicity_model) -> None:
    """Reasons and metrics as documented: ``toxic`` at or above the threshold (metric: the score),
    else ``profanity`` above the word fraction (metric: the fraction), else kept."""
    import csv

    from refinery.classifiers.toxicity import load_wikipedia_negatives
    from refinery.stages.base import METRIC, REASON
    from refinery.stages.classifiers import ToxicityFilter

    out, report = toxicity_model
    clean = load_wikipedia_negatives(SHARED_DATA)[1][:40]  # held-out Wikipedia leads: never trained on
    # real Davidson tweets labelled offensive by all three annotators
    with open(SHARED_DATA / "toxicity" / "davidson_labeled_data.csv", encoding="utf-8") as f:
        offensive = [r["tweet"] for r in csv.DictReader(f) if r["offensive_language"] == r["count"] == "3"][:20]
    n = len(clean)
    for threshold in (0.5, None):
        stage = ToxicityFilter(model_path=str(out / report["model_file"]), threshold=threshold, max_profanity_frac=0.1,
                               cascade=True)
        result = stage(_batch(clean + offensive))
        scores = result.column("toxicity_score").to_pylist()
        fracs = result.column("profanity_word_frac").to_pylist()
        for score, frac, reason, metric in zip(scores, fracs, result.column(REASON).to_pylist(),
                                               result.column(METRIC).to_pylist()):
            if threshold is not None and score >= threshold:
                assert (reason, metric) == ("toxic", score)
            elif frac > 0.1:  # profanity only counts when the model did not already flag the row
                assert (reason, metric) == ("profanity", frac)
            else:
                assert (reason, metric) == (None, None)
        reasons = result.column(REASON).to_pylist()
        assert None in reasons and ("toxic" if threshold is not None else "profanity") in reasons
    assert np.mean(np.array(fracs[:n]) == 0.0) >= 0.9  # the word lists: clean prose has (almost) no listed word
    # the score is P(offensive), not P(not offensive)
    assert np.mean(scores[n:]) > np.mean(scores[:n]) + 0.2


@pytest.fixture(scope="module")
def held_out_quality_docs(tiny_quality_data: Path):
    """Raw held-out documents of the tiny quality model: (wikipedia leads, English web texts)."""
    from refinery.classifiers import quality

    wiki = [t for k, t in quality.load_wikipedia(tiny_quality_data) if quality._held_out(f"wiki:{k}")]
    web, _ = quality.load_web(tiny_quality_data)
    return wiki, [(k, t) for k, t in web if quality._held_out(f"web:{k}")]


@needs_data
def test_quality_stage_threshold_decisions(quality_model, held_out_quality_docs) -> None:
    from refinery.stages.base import METRIC, REASON
    from refinery.stages.classifiers import QualityFilter

    out, report = quality_model
    wiki, web = held_out_quality_docs
    texts = wiki + [t for _, t in web]
    stage = QualityFilter(model_path=str(out / report["model_file"]), mode="threshold", threshold=0.5)
    result = stage(_batch(texts))
    scores = np.array(result.column("quality_score").to_pylist())
    labels = np.array([True] * len(wiki) + [False] * len(web))
    assert binary_metrics(labels, scores, 0.5) == report["metrics"]["test"]  # same path as the recipe
    reasons = result.column(REASON).to_pylist()
    assert reasons == ["low_quality" if s < 0.5 else None for s in scores]
    assert result.column(METRIC).to_pylist() == [s if s < 0.5 else None for s in scores]
    assert "low_quality" in reasons and None in reasons


def test_pareto_draws_match_the_keep_probability() -> None:
    from refinery.stages.classifiers import keep_probability, pareto_draws

    ids = [f"doc-{i}" for i in range(40_000)]
    for alpha, score in itertools.product((9.0, 2.0), (0.0, 0.5, 0.9)):
        kept = np.mean(pareto_draws(ids, seed=0, alpha=alpha) > 1 - score)
        expected = float(keep_probability(score, alpha))
        assert kept == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / len(ids)) + 1e-3)
    a, b = pareto_draws(ids[:100], 0, 9.0), pareto_draws(ids[:100], 0, 9.0)
    assert np.array_equal(a, b) and not np.array_equal(a, pareto_draws(ids[:100], 1, 9.0))
    assert np.all(a >= 0)


@needs_data
def test_quality_stage_pareto_is_deterministic_per_document(quality_model, held_out_quality_docs) -> None:
    from refinery.stages.base import METRIC, REASON
    from refinery.stages.classifiers import QualityFilter, pareto_draws

    out, report = quality_model
    wiki, web = held_out_quality_docs
    texts = wiki + [t for _, t in web]
    ids = [f"wiki/{i}" for i in range(len(wiki))] + [k for k, _ in web]
    stage = QualityFilter(model_path=str(out / report["model_file"]), mode="pareto", alpha=1.0, seed=7)
    full = stage(_batch(texts, ids))
    reasons = full.column(REASON).to_pylist()
    scores = np.array(full.column("quality_score").to_pylist())
    # keep exactly when the document's own Pareto draw exceeds 1 - score
    assert reasons == [None if d > 1 - s else "pareto_sampled_out" for d, s in zip(pareto_draws(ids, 7, 1.0), scores)]
    assert "pareto_sampled_out" in reasons and None in reasons
    # same decision whatever the batch boundaries and order
    order = list(range(len(texts)))[::-1]
    rev = stage(_batch([texts[i] for i in order], [ids[i] for i in order]))
    assert [rev.column(REASON).to_pylist()[order.index(i)] for i in range(len(texts))] == reasons
    parts = [stage(_batch(texts[i:i + 7], ids[i:i + 7])).column(REASON).to_pylist() for i in range(0, len(texts), 7)]
    assert list(itertools.chain.from_iterable(parts)) == reasons
    metrics = full.column(METRIC).to_pylist()
    assert all(m == s for m, s, r in zip(metrics, scores, reasons) if r)
    other_seed = QualityFilter(model_path=str(out / report["model_file"]), mode="pareto", alpha=1.0, seed=8)
    assert other_seed(_batch(texts, ids)).column(REASON).to_pylist() != reasons


@needs_data
def test_stages_handle_empty_long_and_non_utf8_text(toxicity_model, quality_model) -> None:
    from refinery.stages.base import REASON
    from refinery.stages.classifiers import QualityFilter, ToxicityFilter

    wiki = json.loads((SHARED_DATA / "quality" / "summaries_en-us.json").read_text())
    lead = wiki["Academy Awards"]["extract"]
    long_text = lead + "\n" + "x " * 2_000_000  # 4 MB: only the first max_chars are scored
    raw = [lead.encode(), None, b"", b"  \n\t ", long_text.encode(), b"Caf\xe9 au lait \xff is " + lead.encode(),
           ".".encode(), "\u200b".encode()]  # nothing to score: the quality model gave "." 1.0
    binary = pa.array(raw, pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())  # invalid UTF-8, unvalidated
    batch = pa.RecordBatch.from_arrays([pa.array([f"d{i}" for i in range(len(raw))]), text], names=["id", "text"])
    stages = [
        ToxicityFilter(model_path=str(toxicity_model[0] / toxicity_model[1]["model_file"]), max_chars=len(lead) + 1, cascade=True,
                       gate=0.0),  # every scored row through the transformer too
        QualityFilter(model_path=str(quality_model[0] / quality_model[1]["model_file"]), max_chars=len(lead) + 1),
    ]
    for stage, column in zip(stages, ("toxicity_score", "quality_score")):
        result = stage(batch)
        assert result.num_rows == batch.num_rows
        reasons = result.column(REASON).to_pylist()
        scores = result.column(column).to_pylist()
        assert reasons[1:4] == ["empty_text"] * 3 and scores[1:4] == [None] * 3
        assert scores[4] == pytest.approx(scores[0], abs=1e-6)  # truncated to the same prefix
        assert scores[5] is not None and 0.0 <= scores[5] <= 1.0
        assert reasons[6:] == ["empty_text"] * 2 and scores[6:] == [None] * 2
    tox = stages[0](batch)
    assert tox.column("profanity_word_frac").to_pylist()[1:4] == [None] * 3
    transformer = tox.column("toxicity_transformer_score").to_pylist()
    assert [t is None for t in transformer] == [False, True, True, True, False, False, True, True]


@needs_data
def test_stages_pickle_without_the_model_and_reload(toxicity_model) -> None:
    from refinery.stages.classifiers import ToxicityFilter

    stage = ToxicityFilter(model_path=str(toxicity_model[0] / toxicity_model[1]["model_file"]), cascade=True, gate=0.0)
    batch = _batch(["You are a complete idiot and a liar", "The museum opens at nine."])
    before = stage(batch).column("toxicity_score").to_pylist()
    blob = pickle.dumps(stage)
    assert len(blob) < 10_000  # the 40 MB model and the transformer are not shipped to workers
    assert pickle.loads(blob)(batch).column("toxicity_score").to_pylist() == before


@needs_data
def test_pipeline_shard_with_classifier_stages(toxicity_model, quality_model, tmp_path: Path) -> None:
    """Both stages in the real shard runner over a real Common Crawl JSONL shard: scores land in
    the kept Parquet, removed rows carry the stage and reason, and every document is accounted for."""
    from refinery.runner import ShardRunner, ShardTask
    from refinery.stages.classifiers import QualityFilter, ToxicityFilter

    src = SHARED_DATA / "cc_docs" / "multiple_files_cc_en_head-0091.jsonl.gz"
    shard = tmp_path / "in" / src.name
    shard.parent.mkdir()
    shutil.copy(src, shard)
    with gzip.open(shard, "rt") as f:
        n_docs = sum(1 for _ in f)
    stages = [
        ToxicityFilter(model_path=str(toxicity_model[0] / toxicity_model[1]["model_file"]), cascade=True),
        QualityFilter(model_path=str(quality_model[0] / quality_model[1]["model_file"]), threshold=0.5),  # web text: most go
    ]
    result = ShardRunner(stages).run(ShardTask(str(shard), str(tmp_path / "out"), "s0"))
    kept = pq.read_table(tmp_path / "out" / "kept" / "s0.parquet")
    removed_path = tmp_path / "out" / "removed" / "s0.parquet"
    removed = pq.read_table(removed_path)
    assert kept.num_rows + removed.num_rows == n_docs and removed.num_rows > 0
    assert {"toxicity_score", "toxicity_fast_score", "toxicity_transformer_score", "profanity_word_frac",
            "quality_score"} <= set(kept.column_names)
    assert all(s >= 0.5 for s in kept.column("quality_score").to_pylist())
    assert set(removed.column("removed_stage").to_pylist()) <= {"toxicity", "quality"}
    by_quality = [m for s, m in zip(removed.column("removed_stage").to_pylist(), removed.column("removed_metric").to_pylist())
                  if s == "quality"]
    assert by_quality and all(m < 0.5 for m in by_quality)  # the metric is the quality score that fell short
    assert result.stats


@needs_data
def test_registry_and_config_validation(quality_model) -> None:
    from refinery.config import ConfigError, StageConfig
    from refinery.stages.classifiers import QualityFilter, ToxicityFilter
    from refinery.stages.registry import stage_class

    assert stage_class("toxicity") is ToxicityFilter and stage_class("quality") is QualityFilter
    path = str(quality_model[0] / quality_model[1]["model_file"])
    stage = StageConfig(type="quality", params={"model_path": path, "mode": "pareto", "alpha": "3"}).build()
    assert isinstance(stage, QualityFilter) and stage.mode == "pareto" and stage.alpha == 3.0
    with pytest.raises(ConfigError, match="mode"):
        StageConfig(type="quality", params={"model_path": path, "mode": "sometimes"}).build()
    with pytest.raises(ConfigError, match="threshold"):
        StageConfig(type="quality", params={"model_path": path, "threshold": 1.5}).build()
    with pytest.raises(ConfigError, match="is not a toxicity model"):  # at config time, not mid-run
        StageConfig(type="toxicity", params={"model_path": path}).build()


@needs_data
def test_a_failed_or_useless_training_leaves_the_models_in_out_as_they_were(tiny_quality_data: Path,
                                                                             tmp_path: Path) -> None:
    """Found by adversarial testing: a training that failed after its fastText step left a new
    model without its report (or a report without its combine section) over the working one in
    --out; --epoch 0 exited 0 with a useless model. Training happens in a staging directory,
    published only when complete."""
    import typer
    from typer.testing import CliRunner

    from refinery.cli_classifiers import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    before = {"quality.ftz": b"the working model", "quality.json": b'{"kind": "quality"}', "toxicity.ftz": b"other"}
    for name, data in before.items():
        (tmp_path / name).write_bytes(data)
    base = ["train-classifier", "quality", "--out", str(tmp_path), "--data-dir", str(tiny_quality_data), "--no-quantize"]
    nan = CliRunner().invoke(app, base + ["--lr", "1e30"])
    assert nan.exit_code == 1 and "fastText training failed" in nan.output, nan.output
    zero = CliRunner().invoke(app, base + ["--epoch", "0"])
    assert zero.exit_code == 2 and "--epoch must be > 0" in zero.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # untouched, no staging left
    ok = CliRunner().invoke(app, base + ["--epoch", "1"])
    assert ok.exit_code == 0, ok.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quality.bin", "quality.json", "toxicity.ftz"]  # .ftz went
    assert json.loads((tmp_path / "quality.json").read_text())["model_sha256"] == sha256_file(tmp_path / "quality.bin")


def test_a_held_out_split_of_one_class_is_a_one_line_error(tiny_toxicity_data: Path, tmp_path: Path) -> None:
    """Found by adversarial testing: OLID's validation tweets all NOT (or none) fitted the stackers
    and the threshold on one class and published a constant-score model with exit 0. The split
    the threshold is fitted on must hold both classes, as the training set must."""
    import shutil

    import typer
    from typer.testing import CliRunner

    from refinery.classifiers import toxicity
    from refinery.cli_classifiers import register

    data = tmp_path / "data"
    shutil.copytree(tiny_toxicity_data, data)
    olid = data / "toxicity" / "olid" / "olid-training-v1.0.tsv"
    header, *lines = olid.read_text(encoding="utf-8").strip("\n").split("\n")
    kept = [line for line in lines if not (toxicity._held_out("olid:" + line.split("\t")[0], 10)
                                           and line.split("\t")[2] == "OFF")]
    olid.write_text("\n".join([header, *kept]) + "\n", encoding="utf-8")
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["train-classifier", "toxicity", "--out", str(tmp_path / "out"), "--data-dir",
                                      str(data), "--no-transformer", "--no-quantize"])
    assert result.exit_code == 2, result.output
    assert "the held-out split 'olid_validation'" in result.output and "none labelled 'OFF'" in result.output
    assert not (tmp_path / "out").exists()  # not even empty (it was, until h123)


def test_training_labels_spelled_otherwise_are_one_line_errors(tiny_toxicity_data: Path, tiny_quality_data: Path,
                                                              tmp_path: Path) -> None:
    """Found by adversarial testing: a Davidson ``class`` written as words made every tweet
    offensive, OLID labels spelled ``OFFENSIVE`` (or `` OFF`` after a comma) made every test tweet
    NOT, and a cc_docs file whose text field had another name was skipped: all trained with exit 0.
    Blank lines, which hold no example, are skipped instead of stopping the run."""
    import csv
    import gzip
    import shutil

    from refinery.classifiers import quality, toxicity
    from refinery.classifiers.common import TrainingDataError

    data = tmp_path / "tox"
    shutil.copytree(tiny_toxicity_data, data)
    train, test = toxicity.load_olid(data / "toxicity")
    labels = data / "toxicity" / "olid" / "labels-levela.csv"
    original = labels.read_text(encoding="utf-8")
    labels.write_text(original.replace(",", ", ") + "\n\n", encoding="utf-8")  # spaces and blank lines: the same
    assert toxicity.load_olid(data / "toxicity")[1] == test and sum(t[2] for t in test) > 0
    labels.write_text(original.replace(",OFF", ",OFFENSIVE"), encoding="utf-8")
    with pytest.raises(TrainingDataError, match=r"labels-levela.csv line \d+: label 'OFFENSIVE', expected OFF or NOT"):
        toxicity.load_olid(data / "toxicity")
    labels.write_text(original, encoding="utf-8")
    olid = data / "toxicity" / "olid" / "olid-training-v1.0.tsv"
    olid.write_text(olid.read_text(encoding="utf-8") + "\n", encoding="utf-8")  # a trailing blank line
    assert toxicity.load_olid(data / "toxicity")[0] == train
    olid.write_text(olid.read_text(encoding="utf-8").replace("\tOFF\t", "\toff\t", 1), encoding="utf-8")
    with pytest.raises(TrainingDataError, match=r"olid-training-v1.0.tsv id \S+: label 'off', expected OFF or NOT"):
        toxicity.load_olid(data / "toxicity")

    davidson = data / "toxicity" / "davidson_labeled_data.csv"
    with open(davidson, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    words = {"0": "hate", "1": "offensive", "2": "neither"}
    with open(davidson, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "class": words[r["class"]]} for r in rows)
    with pytest.raises(TrainingDataError, match=r"davidson_labeled_data.csv line 2: class '\w+', expected 0"):
        toxicity.load_davidson(data / "toxicity")

    qdata = tmp_path / "quality"
    shutil.copytree(tiny_quality_data, qdata)
    path = sorted((qdata / "cc_docs").glob("*.jsonl.gz"))[0]
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().rstrip("\n").split("\n")
    before = list(quality._cc_docs(qdata))
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n\n".join(lines) + "\n\n")
    assert list(quality._cc_docs(qdata)) == before
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(line.replace('"text":', '"content":') for line in lines) + "\n")
    with pytest.raises(TrainingDataError, match=rf"{path.name} line 1: no 'text' field"):
        list(quality._cc_docs(qdata))


def test_stage_params_that_could_never_work_are_refused_at_config_time(tmp_path: Path) -> None:
    from refinery.classifiers.common import MissingModelError, resolve_model_path
    from refinery.config import ConfigError, parse_config

    def stages(*specs):
        return {"stages": [{"type": t, "params": p} for t, p in specs]}

    for alpha in (float("inf"), float("nan"), 0):  # .inf passed, then failed every shard
        with pytest.raises(ConfigError, match="alpha: must be a finite number > 0"):
            parse_config(stages(("quality", {"mode": "pareto", "alpha": alpha})))
    with pytest.raises(ConfigError, match="gate applies to the cascade only"):
        parse_config(stages(("toxicity", {"gate": 0.3})))
    (tmp_path / "models").mkdir()
    with pytest.raises(MissingModelError, match="is a directory: give the model file"):
        resolve_model_path("quality", str(tmp_path / "models"))


@needs_data
def test_a_training_text_quoting_a_fasttext_label_trains_a_two_label_model(tiny_quality_data: Path,
                                                                          tmp_path: Path) -> None:
    """Found by adversarial testing: fastText reads any word starting with ``__label__`` as a
    label, so three web pages quoting a fastText tutorial ("__label__positive I loved this
    movie") gave the quality model a third label; train-classifier published it with exit 0 and
    the stage refused it ("is not a quality model: labels [...]")."""
    from refinery.classifiers import quality
    from refinery.stages.classifiers import QualityFilter

    assert not any(w.startswith("__label__") for w in prepare_text("See __label__positive, ____label__x!", 100).split())
    data = tmp_path / "data"
    shutil.copytree(tiny_quality_data, data)
    quote = "To train it, write one example per line: __label__positive I loved this movie.\n"
    for path in sorted((data / "cc_docs").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs = [json.loads(line) for line in f if line.strip()]
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps({**d, "text": quote + d["text"]}) + "\n" for d in docs)
    out = tmp_path / "out"
    report = quality.train(data, out, TINY_QUALITY_PARAMS, quantize=False)
    stage = QualityFilter(model_path=str(out / report["model_file"]))
    scored = stage(pa.RecordBatch.from_pydict({"id": ["a"], "text": [quote + "An encyclopedia article."]}))
    assert 0.0 <= scored.column("quality_score")[0].as_py() <= 1.0


@needs_data
def test_training_files_with_a_byte_order_mark_read_as_without(tiny_quality_data: Path, tiny_toxicity_data: Path,
                                                              tmp_path: Path) -> None:
    """Found by adversarial testing: a data file saved with a UTF-8 byte order mark (Windows
    tools write one) failed training: "Unexpected UTF-8 BOM" for the Wikipedia JSON and a
    Common Crawl JSONL, "no field ''" for Davidson's CSV (its first header became '\\ufeff')."""
    from refinery.classifiers import quality, toxicity

    def loaded(root: Path) -> tuple:
        return (quality.load_wikipedia(root), list(quality._cc_docs(root)), toxicity.load_olid(root / "toxicity"),
                toxicity.load_davidson(root / "toxicity"))

    bom = tmp_path / "bom"
    shutil.copytree(tiny_quality_data, bom)
    shutil.copytree(tiny_toxicity_data / "toxicity", bom / "toxicity")
    files = [bom / "quality" / "summaries_en-us.json", bom / "toxicity" / "davidson_labeled_data.csv",
             *sorted((bom / "toxicity" / "olid").glob("*.*"))]
    for path in files:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    for path in sorted((bom / "cc_docs").glob("*.jsonl.gz")):
        path.write_bytes(gzip.compress(b"\xef\xbb\xbf" + gzip.decompress(path.read_bytes())))
    plain = tmp_path / "plain"
    shutil.copytree(tiny_quality_data, plain)
    shutil.copytree(tiny_toxicity_data / "toxicity", plain / "toxicity")
    assert loaded(bom) == loaded(plain)
