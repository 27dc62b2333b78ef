"""benchmarks/corpus.py: the scale-curve corpus generator (real text recombined, duplicates injected
at known rates). Deterministic, schema-valid, and the injected rates and similarities are what the
spec says -- measured on the generated text, not taken from the generator's bookkeeping."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "benchmarks"))  # last: benchmarks/classifiers.py must not shadow the package

from corpus import CorpusSpec, Generator, generate, jaccard, load_pools, perturb  # noqa: E402

from refinery.schema import DOCUMENT_SCHEMA  # noqa: E402

# higher rates than the default so that 1,500 documents measure them tightly
SPEC = CorpusSpec(docs=1_500, seed=7, docs_per_shard=600, near_rate=0.20, exact_rate=0.05, url_dup_rate=0.03,
                  short_rate=0.05, repetitive_rate=0.02, reservoir=300)


@pytest.fixture(scope="module")
def pools():
    return load_pools()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, pools):
    out = tmp_path_factory.mktemp("corpus")
    summary = generate(out, SPEC, pools)
    docs = pq.read_table(out / "docs").to_pylist()
    truth = pq.read_table(out / "truth").to_pylist()
    return out, summary, docs, truth


def _within_binomial(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1


def test_shards_have_the_document_schema_and_unique_ids(corpus):
    out, summary, docs, truth = corpus
    shards = sorted((out / "docs").glob("*.parquet"))
    assert len(shards) == 3  # 600 + 600 + 300
    for f in shards:
        assert pq.read_schema(f).remove_metadata() == DOCUMENT_SCHEMA
    assert len(docs) == summary["docs"] == SPEC.docs
    assert len({d["id"] for d in docs}) == len(docs)
    assert [d["id"] for d in docs] == [t["id"] for t in truth]
    assert all(d["text"] and d["html"] is None and d["url"].startswith("https://") for d in docs)


def test_deterministic_for_a_seed(pools, corpus):
    _, _, docs, _ = corpus
    gen, other_gen = Generator(SPEC, pools), Generator(CorpusSpec(seed=8), pools)
    again = [gen.document(i)[0] for i in range(300)]
    assert again == docs[:300]
    other = [other_gen.document(i)[0]["text"] for i in range(50)]
    assert other != [d["text"] for d in docs[:50]]


def test_injected_rates_and_similarities_are_as_configured(corpus):
    _, _, docs, truth = corpus
    by_id = {d["id"]: d for d in docs}
    kinds = Counter(t["kind"] for t in truth)
    n = len(docs)
    for kind, rate in (("near", SPEC.near_rate), ("exact", SPEC.exact_rate), ("url_dup", SPEC.url_dup_rate),
                       ("short", SPEC.short_rate), ("repetitive", SPEC.repetitive_rate)):
        assert _within_binomial(kinds[kind], n, rate), (kind, kinds[kind], n * rate)
    # measured on the text: exact copies are identical, with their own URL
    for t in truth:
        if t["kind"] == "exact":
            assert by_id[t["id"]]["text"] == by_id[t["source_id"]]["text"]
            assert by_id[t["id"]]["url"] != by_id[t["source_id"]]["url"]
        elif t["kind"] == "url_dup":
            assert by_id[t["id"]]["url"] == by_id[t["source_id"]]["url"]
            assert jaccard(by_id[t["id"]]["text"], by_id[t["source_id"]]["text"]) < 0.2
        elif t["kind"] == "short":
            assert len(by_id[t["id"]]["text"].split()) < 50
    # near copies: the true word-5-gram Jaccard (what MinHash estimates) is ~0.9
    near = [jaccard(by_id[t["id"]]["text"], by_id[t["source_id"]]["text"]) for t in truth if t["kind"] == "near"]
    assert 0.87 <= sum(near) / len(near) <= 0.95
    assert min(near) >= 0.8 and max(near) < 1.0
    # unrelated base documents share (almost) nothing: duplicates are only what was injected
    base = [by_id[t["id"]]["text"] for t in truth if t["kind"] == "base" and t["style"] == "wiki"][:200]
    assert max(jaccard(a, b) for a, b in zip(base, base[1:])) < 0.05


def test_perturbation_breaks_long_repeated_runs(pools):
    """Two placements of one sentence share no run of more than ~2 periods of words: the repeated-
    substring dedup sees the same corpus at every size, not more repeats as the pool recurs."""
    import random

    rng = random.Random(0)
    long_sentences = [s for s in pools.wiki if len(s) >= 60][:50]
    assert long_sentences
    for words in long_sentences:
        a, b = perturb(words, rng, 12).split(), perturb(words, rng, 12).split()
        run = best = 0
        for x, y in zip(a, b):
            run = run + 1 if x == y else 0
            best = max(best, run)
        assert best < 2 * 12 + 1
