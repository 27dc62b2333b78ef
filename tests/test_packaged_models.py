"""The models shipped inside the package (refinery/resources/models/): the stages find them with no
configuration, they score real held-out data as measured (docs/classifiers.md), and the default
path never imports torch. No model is trained here except a tiny one for the quantization rule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from refinery.classifiers.common import PACKAGED_MODELS, MissingModelError, binary_metrics, resolve_model_path, sha256_file
from tests._classifiers_fixtures import ROOT, SHARED_DATA, needs_data

#: measured with `python -m classifiers.packaged` (docs/classifiers.md): OLID test F1 0.688 at the
#: model's threshold, ROC AUC 0.862; quality test ROC AUC 0.999. Floors a few points under, so a
#: broken or swapped model fails while a re-train within noise passes.
TOXICITY_F1_FLOOR = 0.65
TOXICITY_AUC_FLOOR = 0.84
QUALITY_AUC_FLOOR = 0.98


@pytest.fixture
def no_configured_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $REFINERY_MODELS and an empty home (so ~/.cache/refinery/models has nothing): the
    stages can only find the packaged models. Returns the fake home."""
    monkeypatch.delenv("REFINERY_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _batch(texts: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"id": [f"d{i}" for i in range(len(texts))], "text": pa.array(texts, pa.string())})


def _report(kind: str) -> dict:
    return json.loads((PACKAGED_MODELS / f"{kind}.json").read_text())


def test_packaged_models_are_small_documented_and_match_their_reports() -> None:
    sizes = {}
    for kind in ("toxicity", "quality", "quality_docs"):  # quality_docs: the quality stage's code_pages
        report = _report(kind)
        model = PACKAGED_MODELS / report["model_file"]
        assert model.suffix == ".ftz" and report["quantized"]
        assert sha256_file(model) == report["model_sha256"]  # the report describes these very bytes
        sizes[model.name] = model.stat().st_size
    lexicon = PACKAGED_MODELS / _report("toxicity")["combine"]["lexicon_file"]
    sizes[lexicon.name] = lexicon.stat().st_size
    assert "cascade" not in _report("toxicity")["combine"]  # fast pair only: no transformer shipped
    assert max(sizes.values()) < 5_000_000 and sum(sizes.values()) < 10_000_000, sizes
    readme = (PACKAGED_MODELS / "README.md").read_text()
    for needed in ("refinery train-classifier toxicity --no-transformer", "refinery train-classifier quality",
                   "OLID", "Davidson", "CC-BY-SA", "GloVe", "alt-profanity-check", "docs_positives"):
        assert needed in readme, needed


def test_model_lookup_order(no_configured_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """model_path, then $REFINERY_MODELS (alone, when set), then ~/.cache/refinery/models, then
    the packaged model."""
    assert resolve_model_path("toxicity", None) == PACKAGED_MODELS / "toxicity.ftz"
    assert resolve_model_path("quality", None) == PACKAGED_MODELS / "quality.ftz"
    cache = no_configured_models / ".cache" / "refinery" / "models"
    cache.mkdir(parents=True)
    (cache / "quality.bin").write_bytes(b"x")
    assert resolve_model_path("quality", None) == cache / "quality.bin"  # a model you trained wins
    explicit = tmp_path / "mine"
    explicit.mkdir()
    monkeypatch.setenv("REFINERY_MODELS", str(explicit))
    with pytest.raises(MissingModelError, match="refinery train-classifier quality"):
        resolve_model_path("quality", None)  # an explicit directory does not fall back silently
    (explicit / "quality.ftz").write_bytes(b"x")
    assert resolve_model_path("quality", None) == explicit / "quality.ftz"
    assert resolve_model_path("quality", str(cache / "quality.bin")) == cache / "quality.bin"


@needs_data
def test_default_toxicity_stage_scores_olid_test_as_measured(no_configured_models: Path) -> None:
    from refinery.classifiers.toxicity import load_olid, load_wikipedia_negatives
    from refinery.stages.base import REASON
    from refinery.stages.classifiers import ToxicityFilter

    _, test = load_olid(SHARED_DATA / "toxicity")
    labels = np.array([y for _, _, y in test])
    stage = ToxicityFilter()  # every parameter at its default: packaged model, no cascade
    assert not stage.cascade and stage._model().transformer is None
    result = stage(_batch([t for _, t, _ in test]))
    scores = np.array(result.column("toxicity_score").to_pylist())
    assert result.column("toxicity_transformer_score").null_count == len(test)
    report = _report("toxicity")
    at_model_threshold = binary_metrics(labels, scores, report["threshold"])
    assert at_model_threshold["f1"] >= TOXICITY_F1_FLOOR and at_model_threshold["roc_auc"] >= TOXICITY_AUC_FLOOR
    assert at_model_threshold == report["metrics"]["olid_test"]  # the stage reproduces the shipped report
    # the stage's default threshold (0.8) favours precision: what it removes is nearly all offensive
    reasons = result.column(REASON).to_pylist()
    removed = np.array([r == "toxic" for r in reasons])
    assert removed.sum() >= 40 and labels[removed].mean() >= 0.85, (removed.sum(), labels[removed].mean())
    # clean prose (held-out Wikipedia leads, never trained on) is not scored toxic (the word lists
    # do flag a few leads on anatomy or sexuality as `profanity`: a separate, documented check)
    wiki = load_wikipedia_negatives(SHARED_DATA)[1][:500]
    assert "toxic" not in stage(_batch(wiki)).column(REASON).to_pylist()


@pytest.fixture(scope="module")
def held_out_quality_docs() -> tuple[list[str], list[str]]:
    """The quality recipe's test split: held-out Wikipedia leads, held-out English web documents
    (Common Crawl text and WARC pages through refinery's extractor)."""
    from refinery.classifiers import quality

    if not (SHARED_DATA / "quality").is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    wiki = [t for k, t in quality.load_wikipedia(SHARED_DATA) if quality._held_out(f"wiki:{k}")]
    web, _ = quality.load_web(SHARED_DATA)
    return wiki, [t for k, t in web if quality._held_out(f"web:{k}")]


@needs_data
def test_default_quality_stage_separates_wikipedia_from_web(no_configured_models: Path, held_out_quality_docs) -> None:
    from refinery.stages.base import REASON
    from refinery.stages.classifiers import QualityFilter

    wiki, web = held_out_quality_docs
    stage = QualityFilter()
    result = stage(_batch(wiki + web))
    scores = np.array(result.column("quality_score").to_pylist())
    labels = np.array([True] * len(wiki) + [False] * len(web))
    metrics = binary_metrics(labels, scores, 0.5)
    assert metrics["roc_auc"] >= QUALITY_AUC_FLOOR, metrics
    assert metrics == _report("quality")["metrics"]["test"]  # the stage reproduces the shipped report
    removed = np.array([r == "low_quality" for r in result.column(REASON).to_pylist()])
    assert removed[labels].mean() <= 0.01 and removed[~labels].mean() >= 0.15  # default threshold 0.01


def test_cascade_is_opt_in_and_needs_its_transformer(no_configured_models: Path) -> None:
    from refinery.config import ConfigError, StageConfig
    from refinery.stages.classifiers import ToxicityFilter

    with pytest.raises(MissingModelError, match=r"no transformer.*cascade: false.*refinery train-classifier toxicity"):
        ToxicityFilter(cascade=True)
    with pytest.raises(ConfigError, match="no transformer"):  # at config time, before any shard
        StageConfig(type="toxicity", params={"cascade": True}).build()


def test_default_stages_never_import_torch(no_configured_models: Path) -> None:
    """Registry, config, building and running both stages from defaults: no torch, no
    transformers, no scikit-learn (a fresh interpreter: this one may have imported them)."""
    code = """
import sys
import pyarrow as pa
from refinery.stages.registry import stage_class
assert stage_class("toxicity") and stage_class("quality")
from refinery.config import StageConfig
batch = pa.RecordBatch.from_pydict({"id": ["a", "b"], "text": ["you are a stupid idiot", "The museum opens at nine."]})
for kind in ("toxicity", "quality"):
    out = StageConfig(type=kind, params={}).build()(batch)
    assert out.num_rows == 2, kind
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "sklearn", "profanity_check"))
print(",".join(heavy))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "REFINERY_MODELS"}
    env["HOME"] = str(no_configured_models)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", proc.stdout


def test_quantization_judged_by_what_is_shipped(tmp_path: Path) -> None:
    """run_recipe keeps the quantized model only if the judge's figure stays within 0.01 of the
    full model's, and records both (a tiny real fastText model, seconds)."""
    from refinery.classifiers.common import FastTextParams
    from refinery.classifiers.recipe import RecipeData, Split, run_recipe

    words = ["alpha beta gamma", "delta epsilon zeta", "eta theta iota", "kappa lambda mu"]
    train = [("a" if i % 2 else "b", f"{words[i % 4]} {i % 7}") for i in range(400)]
    held = Split.of([(f"{words[i % 4]} {i % 5}", i % 2 == 1) for i in range(40)])
    data = RecipeData(train=train, evals={"val": held}, sources=[])
    params = FastTextParams(epoch=2, dim=8, bucket=2000)

    def run(out: Path, judge) -> dict:
        return run_recipe("quality", data, out, params, positive="a", negative="b", primary=("val", "roc_auc"),
                          decide_on=("val", "roc_auc"), choose_threshold=lambda s, p: 0.5, threshold_split="val",
                          threshold_rule="fixed", max_chars=100, quantize=True, quantize_judge=judge)

    kept = run(tmp_path / "kept", (lambda m: 0.5, "constant"))
    assert kept["quantized"] and kept["model_file"] == "quality.ftz"
    assert kept["quantization_decided_on"] == {"split": "val", "metric": "roc_auc", "tolerance": 0.01, "full": 0.5,
                                               "quantized": 0.5, "of": "constant"}
    refused = run(tmp_path / "refused", (lambda m: 0.5 if m.is_quantized() else 0.6, "punishes quantization"))
    assert not refused["quantized"] and (tmp_path / "refused" / "quality.bin").is_file()
    assert not (tmp_path / "refused" / "quality.ftz").exists()


def test_packaged_models_survive_a_copy_elsewhere(tmp_path: Path) -> None:
    """The toxicity model finds its report and lexicon beside it, wherever the directory goes."""
    from refinery.stages.classifiers import ToxicityFilter

    copy = tmp_path / "models"
    shutil.copytree(PACKAGED_MODELS, copy)
    a = ToxicityFilter(model_path=str(copy / "toxicity.ftz"), threshold=None)(_batch(["you are a moron"]))
    b = ToxicityFilter(model_path=str(PACKAGED_MODELS / "toxicity.ftz"), threshold=None)(_batch(["you are a moron"]))
    assert a.column("toxicity_score").to_pylist() == b.column("toxicity_score").to_pylist()
