"""Measure the models shipped inside the package (``refinery/resources/models/``) through the
stages, on held-out real data.

    python -m classifiers.packaged [--data-dir ../shared/data]

Prints JSON: toxicity precision / recall / F1 / ROC AUC on OLID's official test split (never
trained on) at the model's threshold and at the stage's default, false-positive rate on held-out
Wikipedia leads; quality ROC AUC on the quality recipe's test split (held-out Wikipedia leads vs
held-out English web documents); what the default thresholds do to the English Common Crawl
sample. docs/classifiers.md and refinery/resources/models/README.md quote its output.

The packaged models are rebuilt with the ordinary recipes (deterministic: same bytes every run):

    refinery train-classifier toxicity --no-transformer --out refinery/resources/models
    refinery train-classifier quality --out refinery/resources/models
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from refinery.classifiers.common import PACKAGED_MODELS, binary_metrics

#: thresholds reported for toxicity besides the model's own F1 threshold (0.8 = the stage default)
TOXICITY_THRESHOLDS = (0.5, 0.8, 0.9)


def _batch(texts: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"id": [f"d{i}" for i in range(len(texts))], "text": pa.array(texts, pa.string())})


def _scores(stage: Any, texts: list[str], column: str) -> np.ndarray:
    return np.array(stage(_batch(texts)).column(column).to_pylist(), dtype=np.float64)


def _pick(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("threshold", "precision", "recall", "f1", "roc_auc", "false_positive_rate", "positives", "negatives")
    return {k: m[k] for k in keys}


def measure_toxicity(data_dir: Path, model_dir: Path = PACKAGED_MODELS) -> dict[str, Any]:
    from refinery.classifiers.toxicity import load_olid, load_wikipedia_negatives
    from refinery.stages.classifiers import ToxicityFilter

    stage = ToxicityFilter(model_path=str(model_dir / "toxicity.ftz"), threshold=None, max_profanity_frac=None)
    _, test = load_olid(data_dir / "toxicity")
    labels = np.array([y for _, _, y in test])
    scores = _scores(stage, [t for _, t, _ in test], "toxicity_score")
    wiki = load_wikipedia_negatives(data_dir)[1]
    wiki_scores = _scores(stage, wiki, "toxicity_score")
    model_threshold = stage._model().threshold
    out: dict[str, Any] = {"model_threshold": model_threshold, "olid_test": {}, "wikipedia_held_out_fpr": {}}
    for t in (model_threshold, *TOXICITY_THRESHOLDS):
        out["olid_test"][f"{t:.2f}"] = _pick(binary_metrics(labels, scores, t))
        out["wikipedia_held_out_fpr"][f"{t:.2f}"] = round(float(np.mean(wiki_scores >= t)), 4)
    out["wikipedia_held_out_leads"] = len(wiki)
    # domain shift: what the stage's default threshold does to real English web text
    from refinery.classifiers import quality

    cc = [t for _, t in quality._cc_docs(data_dir)]
    cc = [t for t, en in zip(cc, quality.english_mask(cc)) if en]
    cc_scores = _scores(stage, cc, "toxicity_score")
    out["english_cc_docs"] = {"documents": len(cc), "median_score": round(float(np.median(cc_scores)), 4),
                              "p99_score": round(float(np.quantile(cc_scores, 0.99)), 4),
                              "removed_at_0.80": int(np.sum(cc_scores >= 0.8))}
    return out


def measure_quality(data_dir: Path, model_dir: Path = PACKAGED_MODELS) -> dict[str, Any]:
    from refinery.classifiers import quality
    from refinery.stages.classifiers import QualityFilter

    stage = QualityFilter(model_path=str(model_dir / "quality.ftz"))
    wiki = [t for k, t in quality.load_wikipedia(data_dir) if quality._held_out(f"wiki:{k}")]
    web, _ = quality.load_web(data_dir)
    web_test = [t for k, t in web if quality._held_out(f"web:{k}")]
    labels = np.array([True] * len(wiki) + [False] * len(web_test))
    scores = _scores(stage, wiki + web_test, "quality_score")
    test = binary_metrics(labels, scores, 0.5)
    cc_english = [t for k, t in web if k.split(":")[0].endswith(".jsonl.gz")]  # cc_docs/, all splits
    cc_scores = _scores(stage, cc_english, "quality_score")
    return {
        "test": {**_pick(test), "web_scored_at_least_0.5": int(np.sum(scores[~labels] >= 0.5))},
        "default_threshold": stage.threshold,
        "test_removed_at_default": {"wikipedia": round(float(np.mean(scores[labels] < stage.threshold)), 4),
                                    "web": round(float(np.mean(scores[~labels] < stage.threshold)), 4)},
        "english_cc_docs": {"documents": len(cc_english), "median_score": round(float(np.median(cc_scores)), 4),
                            "removed_at_default": round(float(np.mean(cc_scores < stage.threshold)), 4)},
    }


def main(argv: list[str] | None = None) -> None:
    from refinery.cli_classifiers import default_data_dir

    parser = argparse.ArgumentParser(prog="python -m classifiers.packaged", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: ../shared/data")
    parser.add_argument("--models", type=Path, default=PACKAGED_MODELS, help="model directory to measure")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    sizes = {p.name: p.stat().st_size for p in sorted(args.models.iterdir()) if p.suffix in (".ftz", ".bin", ".npz")}
    print(json.dumps({"bytes": sizes, "total_bytes": sum(sizes.values()),
                      "toxicity": measure_toxicity(data_dir, args.models),
                      "quality": measure_quality(data_dir, args.models)}, indent=2))


if __name__ == "__main__":
    main()
