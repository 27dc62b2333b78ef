"""Classifier recipes, metrics, word lists and the toxicity / quality stages, on real data and real
fastText models trained once per session (tests/_classifiers_fixtures.py)."""

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
from refinery.classifiers.profanity import ProfanityLexicon, default_lexicon
from tests._classifiers_fixtures import SHARED_DATA, needs_data, quality_model, toxicity_model  # noqa: F401 (fixtures)

#: issue 4's targets
TOXICITY_F1_TARGET = 0.70
QUALITY_AUC_TARGET = 0.95
#: the fast pair (fastText with GloVe vectors + the exported lexicon, no transformer) on OLID's
#: official test set: ~0.67-0.69 (docs/classifiers.md); asserted so a regression shows
TOXICITY_FAST_F1_FLOOR = 0.64


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


# -- trained models: targets, reports, determinism ------------------------------------------------
def _source_path(recorded: str) -> Path:
    """A report's source path: under the data directory, or ``site-packages/...`` (a wheel's file)."""
    import sys

    if recorded.startswith("site-packages/"):
        rest = recorded.split("/", 1)[1]
        return next(Path(d) / rest for d in sys.path if d.endswith("site-packages") and (Path(d) / rest).is_file())
    return Path(recorded) if Path(recorded).is_absolute() else SHARED_DATA / recorded


def _check_report(out: Path, report: dict) -> None:
    assert json.loads((out / f"{report['kind']}.json").read_text()) == report
    model = out / report["model_file"]
    assert model.is_file() and sha256_file(model) == report["model_sha256"]
    assert report["hyperparameters"]["thread"] == 1 and report["hyperparameters"]["seed"] == 0
    for source in report["data"]["sources"]:
        assert sha256_file(_source_path(source["path"])) == source["sha256"]
    assert len(report["data"]["training_file_sha256"]) == 64
    for split in report["metrics"].values():
        assert {"precision", "recall", "f1", "roc_auc"} <= split.keys()


@needs_data
@pytest.mark.slow  # the session's toxicity model fine-tunes a transformer (~13 min, once)
def test_toxicity_model_report_and_f1(toxicity_model) -> None:
    out, report = toxicity_model
    _check_report(out, report)
    test = report["metrics"]["olid_test"]
    assert (test["positives"], test["negatives"]) == (240, 620)  # OLID's official test split, untouched
    assert "olid_validation" in report["threshold_rule"]
    assert test["roc_auc"] >= 0.85, test
    assert report["metrics"]["davidson_validation"]["f1"] >= 0.90
    assert report["metrics"]["wikipedia_validation"]["false_positive_rate"] <= 0.01  # clean prose stays clean
    parts = report["components"]
    assert parts["fast"]["metrics"]["olid_test"]["f1"] >= TOXICITY_FAST_F1_FLOOR
    # each part earns its place: GloVe-initialised fastText < fast pair < cascade (olid_test F1)
    assert parts["fasttext"]["metrics"]["olid_test"]["roc_auc"] < parts["fast"]["metrics"]["olid_test"]["roc_auc"]
    assert parts["fast"]["metrics"]["olid_test"]["roc_auc"] < test["roc_auc"]
    assert report["pretrained_vectors"]["words"] > 30_000
    combine = report["combine"]
    assert 0.0 < combine["gate"] < report["threshold"]
    assert (out / combine["lexicon_file"]).is_file() and (out / combine["transformer_dir"] / "head.safetensors").is_file()
    assert parts["transformer"]["steps"] > 300


@needs_data
@pytest.mark.slow  # the session's toxicity model fine-tunes a transformer (~13 min, once)
def test_toxicity_f1_reaches_issue_target(toxicity_model) -> None:
    assert toxicity_model[1]["metrics"]["olid_test"]["f1"] >= TOXICITY_F1_TARGET


@needs_data
def test_quality_model_report_and_auc(quality_model) -> None:
    out, report = quality_model
    _check_report(out, report)
    test = report["metrics"]["test"]
    assert test["roc_auc"] >= QUALITY_AUC_TARGET, test
    assert test["negatives"] >= 30 and test["positives"] >= 1000
    assert report["data"]["warc_english"] > 0 and report["data"]["cc_docs_english"] > 0


@needs_data
@pytest.mark.slow  # the session's toxicity model fine-tunes a transformer (~13 min, once)
def test_same_seed_same_model_and_metrics_via_cli(toxicity_model, tmp_path: Path) -> None:
    """Re-training through the CLI (without the transformer, whose reproducibility has its own
    test) gives the byte-identical fastText model and identical fast-pair metrics."""
    import typer
    from typer.testing import CliRunner

    from refinery.cli_classifiers import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["train-classifier", "toxicity", "--out", str(tmp_path), "--data-dir",
                                      str(SHARED_DATA), "--seed", "0", "--no-quantize", "--no-transformer"])
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


@needs_data
def test_other_seed_changes_the_model(tmp_path: Path, quality_model) -> None:
    from dataclasses import replace

    from refinery.classifiers import quality

    other = quality.train(SHARED_DATA, tmp_path, replace(quality.DEFAULT_PARAMS, seed=1), quantize=False)
    first = quality_model[1]
    assert other["model_sha256"] != first["model_sha256"]
    assert other["metrics"]["test"]["roc_auc"] >= QUALITY_AUC_TARGET


@needs_data
@pytest.mark.slow
def test_quantized_model_written_when_metrics_hold(tmp_path: Path, quality_model) -> None:
    from refinery.classifiers import quality

    (tmp_path / "quality.bin").write_bytes(b"stale")  # must not survive next to a new .ftz
    report = quality.train(SHARED_DATA, tmp_path, quantize=True)
    assert report["quantized"] and report["model_file"] == "quality.ftz"
    assert not (tmp_path / "quality.bin").exists()
    assert report["model_bytes"] < quality_model[1]["model_bytes"] / 5
    assert report["metrics"]["test"]["roc_auc"] >= report["metrics_before_quantization"]["test"]["roc_auc"] - 0.01


# -- the stages on real text ---------------------------------------------------------------------
def _batch(texts: list, ids: list[str] | None = None) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "id": ids or [f"doc-{i}" for i in range(len(texts))],
        "text": pa.array(texts, pa.string()),
    })


@needs_data
@pytest.mark.slow  # the session's toxicity model fine-tunes a transformer (~13 min, once)
def test_toxicity_stage_reproduces_held_out_metrics(toxicity_model) -> None:
    """The stage's path (decode, prepare, fast pair, gate, transformer, stack) gives the recipe's
    scores; the cascade runs the transformer on exactly the rows at or above the gate."""
    from refinery.classifiers.toxicity import load_olid
    from refinery.stages.base import METRIC, REASON
    from refinery.stages.classifiers import ToxicityFilter

    out, report = toxicity_model
    _, test = load_olid(SHARED_DATA / "toxicity")
    stage = ToxicityFilter(model_path=str(out / report["model_file"]), threshold=report["threshold"], max_profanity_frac=None,
                           cascade=True)
    result = stage(_batch([t for _, t, _ in test], [i for i, _, _ in test]))
    scores = np.array(result.column("toxicity_score").to_pylist())
    labels = np.array([y for _, _, y in test])
    got = binary_metrics(labels, scores, report["threshold"])
    want = report["metrics"]["olid_test"]
    # the transformer runs with one thread here and two in the recipe: floats may differ in the
    # last bits, which can move a tweet sitting exactly on the threshold, nothing more
    assert got["f1"] == pytest.approx(want["f1"], abs=0.005) and got["roc_auc"] == pytest.approx(want["roc_auc"], abs=0.001)
    reasons = result.column(REASON).to_pylist()
    assert reasons == ["toxic" if s >= report["threshold"] else None for s in scores]
    removed = [m for m, r in zip(result.column(METRIC).to_pylist(), reasons) if r]
    assert removed and min(removed) >= report["threshold"]
    fast = np.array(result.column("toxicity_fast_score").to_pylist())
    transformer = result.column("toxicity_transformer_score").to_pylist()
    gate = report["combine"]["gate"]
    assert [t is not None for t in transformer] == list(fast >= gate)
    assert np.array_equal(scores[fast < gate], fast[fast < gate])  # below the gate the fast score stands
    assert 0.3 < np.mean(fast >= gate) < 0.95  # tweets: most pass the gate (web text: few, see docs)


@needs_data
@pytest.mark.slow  # the session's toxicity model fine-tunes a transformer (~13 min, once)
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
@pytest.mark.slow  # the session's toxicity model fine-tunes a transformer (~13 min, once)
def test_toxicity_stage_decisions_on_real_text(toxicity_model) -> None:
    from refinery.classifiers.toxicity import load_wikipedia_negatives
    from refinery.stages.base import METRIC, REASON
    from refinery.stages.classifiers import ToxicityFilter

    out, report = toxicity_model
    clean = load_wikipedia_negatives(SHARED_DATA)[1][:100]  # held-out Wikipedia leads: never trained on
    # real Davidson tweets labelled offensive by all three annotators
    import csv

    with open(SHARED_DATA / "toxicity" / "davidson_labeled_data.csv", encoding="utf-8") as f:
        offensive = [r["tweet"] for r in csv.DictReader(f) if r["offensive_language"] == r["count"] == "3"][:20]
    stage = ToxicityFilter(model_path=str(out / report["model_file"]), threshold=0.5, max_profanity_frac=0.1, cascade=True)
    result = stage(_batch(clean + offensive))
    scores = result.column("toxicity_score").to_pylist()
    fracs = result.column("profanity_word_frac").to_pylist()
    reasons = result.column(REASON).to_pylist()
    n = len(clean)
    assert np.mean(np.array(scores[:n]) < 0.2) >= 0.97 and reasons[:n].count(None) >= 0.98 * n
    assert np.mean(np.array(fracs[:n]) == 0.0) >= 0.9
    assert np.mean(scores[n:]) > 0.8
    assert sum(r is not None for r in reasons[n:]) >= 0.9 * len(offensive)
    # profanity only counts when the model did not already flag the row
    stage2 = ToxicityFilter(model_path=str(out / report["model_file"]), threshold=None, max_profanity_frac=0.1, cascade=True)
    res2 = stage2(_batch(offensive))
    for frac, reason, metric in zip(res2.column("profanity_word_frac").to_pylist(), res2.column(REASON).to_pylist(),
                                    res2.column(METRIC).to_pylist()):
        assert reason == ("profanity" if frac > 0.1 else None)
        assert metric == (frac if reason else None)
    assert "profanity" in res2.column(REASON).to_pylist()


@pytest.fixture(scope="module")
def held_out_quality_docs():
    """Raw held-out documents of the quality recipe: (wikipedia leads, English web texts)."""
    from refinery.classifiers import quality

    if not (SHARED_DATA / "quality").is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    wiki = [t for k, t in quality.load_wikipedia(SHARED_DATA) if quality._held_out(f"wiki:{k}")]
    web, _ = quality.load_web(SHARED_DATA)
    return wiki, [(k, t) for k, t in web if quality._held_out(f"web:{k}")]


@needs_data
def test_quality_stage_threshold_decisions(quality_model, held_out_quality_docs) -> None:
    from refinery.stages.base import REASON
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
    kept_wiki = np.mean([r is None for r in reasons[: len(wiki)]])
    removed_web = np.mean([r == "low_quality" for r in reasons[len(wiki):]])
    assert kept_wiki >= 0.97 and removed_web >= 0.8, (kept_wiki, removed_web)


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
    from refinery.stages.classifiers import QualityFilter

    out, report = quality_model
    wiki, web = held_out_quality_docs
    texts = wiki[:300] + [t for _, t in web]
    ids = [f"wiki/{i}" for i in range(300)] + [k for k, _ in web]
    stage = QualityFilter(model_path=str(out / report["model_file"]), mode="pareto", alpha=1.0, seed=7)
    full = stage(_batch(texts, ids))
    reasons = full.column(REASON).to_pylist()
    assert set(reasons) <= {None, "pareto_sampled_out"}
    # same decision whatever the batch boundaries and order
    order = list(range(len(texts)))[::-1]
    rev = stage(_batch([texts[i] for i in order], [ids[i] for i in order]))
    assert [rev.column(REASON).to_pylist()[order.index(i)] for i in range(len(texts))] == reasons
    parts = [stage(_batch(texts[i:i + 7], ids[i:i + 7])).column(REASON).to_pylist() for i in range(0, len(texts), 7)]
    assert list(itertools.chain.from_iterable(parts)) == reasons
    # alpha = 1 keeps with probability 1 / (2 - score): high-scoring Wikipedia leads mostly stay,
    # web text (scores near 0) about half the time
    wiki_kept = np.mean([r is None for r in reasons[:300]])
    web_kept = np.mean([r is None for r in reasons[300:]])
    assert wiki_kept > 0.85 and 0.2 < web_kept < 0.8, (wiki_kept, web_kept)
    metrics = full.column(METRIC).to_pylist()
    scores = full.column("quality_score").to_pylist()
    assert all(m == s for m, s, r in zip(metrics, scores, reasons) if r)
    other_seed = QualityFilter(model_path=str(out / report["model_file"]), mode="pareto", alpha=1.0, seed=8)
    assert other_seed(_batch(texts, ids)).column(REASON).to_pylist() != reasons


@needs_data
@pytest.mark.slow  # the session's toxicity model fine-tunes a transformer (~13 min, once)
def test_stages_handle_empty_long_and_non_utf8_text(toxicity_model, quality_model) -> None:
    from refinery.stages.base import REASON
    from refinery.stages.classifiers import QualityFilter, ToxicityFilter

    wiki = json.loads((SHARED_DATA / "quality" / "summaries_en-us.json").read_text())
    lead = wiki["Academy Awards"]["extract"]
    long_text = lead + "\n" + "x " * 2_000_000  # 4 MB: only the first max_chars are scored
    raw = [lead.encode(), None, b"", b"  \n\t ", long_text.encode(), b"Caf\xe9 au lait \xff is " + lead.encode()]
    binary = pa.array(raw, pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())  # invalid UTF-8, unvalidated
    batch = pa.RecordBatch.from_arrays([pa.array([f"d{i}" for i in range(len(raw))]), text], names=["id", "text"])
    stages = [
        ToxicityFilter(model_path=str(toxicity_model[0] / toxicity_model[1]["model_file"]), max_chars=len(lead) + 1, cascade=True),
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
    tox = stages[0](batch)
    assert tox.column("profanity_word_frac").to_pylist()[1:4] == [None] * 3


@needs_data
@pytest.mark.slow  # the session's toxicity model fine-tunes a transformer (~13 min, once)
def test_stages_pickle_without_the_model_and_reload(toxicity_model) -> None:
    from refinery.stages.classifiers import ToxicityFilter

    stage = ToxicityFilter(model_path=str(toxicity_model[0] / toxicity_model[1]["model_file"]), cascade=True)
    batch = _batch(["You are a complete idiot and a liar", "The museum opens at nine."])
    before = stage(batch).column("toxicity_score").to_pylist()
    blob = pickle.dumps(stage)
    assert len(blob) < 10_000  # the 20 MB model is not shipped to workers
    assert pickle.loads(blob)(batch).column("toxicity_score").to_pylist() == before


@needs_data
@pytest.mark.slow  # the session's toxicity model fine-tunes a transformer (~13 min, once)
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
        QualityFilter(model_path=str(quality_model[0] / quality_model[1]["model_file"]), threshold=0.01),
    ]
    result = ShardRunner(stages).run(ShardTask(str(shard), str(tmp_path / "out"), "s0"))
    kept = pq.read_table(tmp_path / "out" / "kept" / "s0.parquet")
    removed_path = tmp_path / "out" / "removed" / "s0.parquet"
    removed = pq.read_table(removed_path) if removed_path.exists() else None
    n_removed = removed.num_rows if removed is not None else 0
    assert kept.num_rows + n_removed == n_docs
    assert {"toxicity_score", "profanity_word_frac", "quality_score"} <= set(kept.column_names)
    assert all(s >= 0.01 for s in kept.column("quality_score").to_pylist())
    if removed is not None:
        assert set(removed.column("removed_stage").to_pylist()) <= {"toxicity", "quality"}
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
