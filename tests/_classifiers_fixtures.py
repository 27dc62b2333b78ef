"""Session fixtures for the classifier tests: real models, trained once per test session by the
real recipes (``toxicity.train`` with its transformer, ``quality.train``), on *tiny* real data: a
few hundred rows of OLID, Davidson, Wikipedia leads and web text copied from /work/shared/data
into a temporary directory laid out like it. Seconds, not minutes: these models exist to check
the recipes' code paths and what the stages do with a model's outputs. How good the full recipes'
models are (OLID test F1 >= 0.70, quality ROC AUC >= 0.95, ...) is a benchmark:
``python benchmarks/classifiers.py --targets`` (docs/benchmarks.md)."""

from __future__ import annotations

import csv
import fcntl
import gzip
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from refinery.classifiers.quality import DEFAULT_PARAMS as QUALITY_PARAMS
from refinery.classifiers.transformer import TransformerParams

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

needs_data = pytest.mark.skipif(not (SHARED_DATA / "toxicity").is_dir(), reason=f"{SHARED_DATA} is absent")

#: rows of each source in the tiny toxicity data directory (the first rows of the real files that
#: fall on each side of the recipe's own hash split). The transformer trains on the training rows:
#: 48 + 32 + 16 = 96 examples, 6 steps of 16.
TINY_OLID_TRAIN, TINY_OLID_VALIDATION, TINY_OLID_TEST = 48, 100, 80
TINY_DAVIDSON_TRAIN, TINY_DAVIDSON_VALIDATION = 32, 24
TINY_WIKI_TRAIN, TINY_WIKI_HELD_OUT = 16, 16
#: one epoch over the tiny set, short sequences, one thread (the stage scores with one thread too,
#: so the recipe's and the stage's transformer scores are computed alike)
TINY_TRANSFORMER = TransformerParams(epochs=1, lr=2e-4, batch_size=16, max_length=32, threads=1)

#: the tiny quality data directory: the first Wikipedia leads, the first documents of the Common
#: Crawl sample and two small real WARCs (run through the extractor by the recipe)
TINY_QUALITY_WIKI, TINY_QUALITY_CC_DOCS = 600, 300
TINY_QUALITY_WARCS = ("cc_whirlwind_whirlwind.warc.gz", "warc_sample-0000.warc.gz")
#: the recipe's hyperparameters with 20k hash buckets instead of 200k: a 4 MB model that
#: quantizes in a second (200k buckets take ~10 s to quantize, whatever the data size)
TINY_QUALITY_PARAMS = replace(QUALITY_PARAMS, bucket=20_000)


def _first(rows, is_held_out, n_train: int, n_held: int) -> tuple[list, list]:
    train, held = [], []
    for row in rows:
        side = held if is_held_out(row) else train
        if len(side) < (n_held if side is held else n_train):
            side.append(row)
        if len(train) == n_train and len(held) == n_held:
            break
    return train, held


def write_tiny_toxicity_data(dest: Path) -> Path:
    """``dest`` laid out like the data directory, with the tiny toxicity sets (and the Wikipedia
    leads the recipe reads as NOT examples). Every split holds both classes."""
    from refinery.classifiers import quality, toxicity

    src = SHARED_DATA
    olid_dir = dest / "toxicity" / "olid"
    olid_dir.mkdir(parents=True)
    header, *lines = (src / "toxicity" / "olid" / "olid-training-v1.0.tsv").read_text(encoding="utf-8").split("\n")
    train, val = _first([line for line in lines if line], lambda line: toxicity._held_out("olid:" + line.split("\t")[0], 10),
                        TINY_OLID_TRAIN, TINY_OLID_VALIDATION)
    (olid_dir / "olid-training-v1.0.tsv").write_text("\n".join([header, *train, *val]) + "\n", encoding="utf-8")
    test_header, *test = (src / "toxicity" / "olid" / "testset-levela.tsv").read_text(encoding="utf-8").split("\n")
    test = [line for line in test if line][:TINY_OLID_TEST]
    (olid_dir / "testset-levela.tsv").write_text("\n".join([test_header, *test]) + "\n", encoding="utf-8")
    test_ids = {line.split("\t")[0] for line in test}
    labels = (src / "toxicity" / "olid" / "labels-levela.csv").read_text(encoding="utf-8").split("\n")
    (olid_dir / "labels-levela.csv").write_text("".join(f"{x}\n" for x in labels if x.split(",")[0] in test_ids), encoding="utf-8")

    with open(src / "toxicity" / "davidson_labeled_data.csv", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        dav_train, dav_val = _first(reader, lambda r: toxicity._held_out(f"davidson:{r['']}", 10),
                                    TINY_DAVIDSON_TRAIN, TINY_DAVIDSON_VALIDATION)
    with open(dest / "toxicity" / "davidson_labeled_data.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(dav_train + dav_val)

    wiki = json.loads((src / "quality" / "summaries_en-us.json").read_text(encoding="utf-8"))
    keys = [k for k in sorted(wiki) if wiki[k].get("extract", "").strip()]
    wiki_train, wiki_held = _first(keys, lambda k: quality._held_out(f"wiki:{k}"), TINY_WIKI_TRAIN, TINY_WIKI_HELD_OUT)
    (dest / "quality").mkdir()
    (dest / "quality" / "summaries_en-us.json").write_text(json.dumps({k: wiki[k] for k in wiki_train + wiki_held}),
                                                           encoding="utf-8")

    # what the tests rely on: both classes wherever a metric needs them
    assert {line.split("\t")[2] == "OFF" for line in val} == {True, False}
    assert {r["class"] != "2" for r in dav_val} == {True, False}
    return dest


def write_tiny_quality_data(dest: Path) -> Path:
    """``dest`` laid out like the data directory with the tiny quality sets."""
    src = SHARED_DATA
    (dest / "quality").mkdir(parents=True)
    wiki = json.loads((src / "quality" / "summaries_en-us.json").read_text(encoding="utf-8"))
    keys = [k for k in sorted(wiki) if wiki[k].get("extract", "").strip()][:TINY_QUALITY_WIKI]
    (dest / "quality" / "summaries_en-us.json").write_text(json.dumps({k: wiki[k] for k in keys}), encoding="utf-8")
    (dest / "cc_docs").mkdir()
    for path in sorted((src / "cc_docs").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs = [line for _, line in zip(range(TINY_QUALITY_CC_DOCS), f)]
        with gzip.open(dest / "cc_docs" / path.name, "wt", encoding="utf-8") as f:
            f.writelines(docs)
    (dest / "warc").mkdir()
    for name in TINY_QUALITY_WARCS:
        shutil.copy(src / "warc" / name, dest / "warc" / name)
    return dest


def _once_per_session(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """A directory ``build`` fills once per test session, however many xdist workers ask for it:
    the first builds it under a lock in the session's shared temporary directory, the others wait
    and reuse it (the tiny toxicity model is ~15 s of training; two workers trained it twice)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:  # one process: a fixture is built once anyway
        path = tmp_path_factory.mktemp(name)
        build(path)
        return path
    root = tmp_path_factory.getbasetemp().parent  # the session's, shared by its workers
    path, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():  # not built, or a worker failed building it: (re)build
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            build(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def tiny_toxicity_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SHARED_DATA / "toxicity").is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return _once_per_session(tmp_path_factory, "data-toxicity", write_tiny_toxicity_data)


@pytest.fixture(scope="session")
def tiny_quality_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SHARED_DATA / "quality").is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return _once_per_session(tmp_path_factory, "data-quality", write_tiny_quality_data)


#: where a session model directory keeps the report its recipe returned
_REPORT = "fixture-report.json"


def _trained(tmp_path_factory: pytest.TempPathFactory, name: str, train: Callable[[Path], dict]) -> tuple[Path, dict]:
    def build(out: Path) -> None:
        (out / _REPORT).write_text(json.dumps(train(out)))

    out = _once_per_session(tmp_path_factory, name, build)
    return out, json.loads((out / _REPORT).read_text())


@pytest.fixture(scope="session")
def toxicity_model(tmp_path_factory: pytest.TempPathFactory, tiny_toxicity_data: Path) -> tuple[Path, dict]:
    """(model directory, report) of the whole toxicity recipe -- GloVe-initialised fastText, the
    exported lexicon, the MiniLM fine-tune, stackers, gates, threshold -- on the tiny data, with
    the recipe's fastText hyperparameters and :data:`TINY_TRANSFORMER` (~10-20 s)."""
    from refinery.classifiers import toxicity

    return _trained(tmp_path_factory, "models-toxicity",
                    lambda out: toxicity.train(tiny_toxicity_data, out, quantize=False, transformer=TINY_TRANSFORMER))


@pytest.fixture(scope="session")
def quality_model(tmp_path_factory: pytest.TempPathFactory, tiny_quality_data: Path) -> tuple[Path, dict]:
    """(model directory, report) of the quality recipe with :data:`TINY_QUALITY_PARAMS`, on the
    tiny data (a few seconds)."""
    from refinery.classifiers import quality

    return _trained(tmp_path_factory, "models-quality",
                    lambda out: quality.train(tiny_quality_data, out, TINY_QUALITY_PARAMS, quantize=False))
