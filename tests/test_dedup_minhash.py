"""MinHash signatures and LSH band keys: accuracy against exact Jaccard on real documents."""

from __future__ import annotations

import random

import numpy as np
import pytest

from refinery.dedup.minhash import (
    PRESETS,
    LshParams,
    MinHasher,
    estimate_jaccard,
    optimal_bands_rows,
)
from refinery.dedup.text import reference_shingles
from tests._dedup_fixtures import _edit, load_cc_docs


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str, float]]:
    """(real document, edited copy, exact Jaccard of their word 5-gram sets), J spread over (0, 1]."""
    rng = random.Random(3)
    docs = [d["text"] for d in load_cc_docs() if 100 <= len(d["text"].split()) <= 3000]
    out = []
    for d in docs[:160]:
        variant = _edit(d, rng.choice([0.0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4]), rng)
        sa, sb = reference_shingles(d), reference_shingles(variant)
        out.append((d, variant, len(sa & sb) / len(sa | sb)))
    return out


@pytest.mark.parametrize("backend", ["rensa", "numpy"])
def test_jaccard_estimates_agree_with_exact_jaccard(pairs, backend):
    hasher = MinHasher(LshParams(num_perm=128, backend=backend))
    sig_a, _ = hasher.signatures([p[0] for p in pairs])
    sig_b, _ = hasher.signatures([p[1] for p in pairs])
    exact = np.array([p[2] for p in pairs])
    assert exact.min() < 0.3 and exact.max() == 1.0  # the pairs cover the range
    estimates = np.array([estimate_jaccard(a, b) for a, b in zip(sig_a, sig_b)])
    errors = np.abs(estimates - exact)
    assert errors.mean() <= 0.05
    assert abs((estimates - exact).mean()) <= 0.015  # no bias
    assert np.all(estimates[exact == 1.0] == 1.0)  # identical shingle sets: identical signatures

    # datasketch as the reference implementation: our error is no worse than its error
    from datasketch import MinHash

    ref = []
    for a, b, _ in pairs:
        ma, mb = MinHash(num_perm=128), MinHash(num_perm=128)
        ma.update_batch([" ".join(s).encode() for s in reference_shingles(a)])
        mb.update_batch([" ".join(s).encode() for s in reference_shingles(b)])
        ref.append(ma.jaccard(mb))
    ref_error = np.abs(np.array(ref) - exact).mean()
    assert errors.mean() <= ref_error + 0.01, (errors.mean(), ref_error)


def test_signatures_are_deterministic_per_seed_and_independent_across_seeds(pairs):
    texts = [p[0] for p in pairs[:30]]
    a1, _ = MinHasher(LshParams(seed=5)).signatures(texts)
    a2, _ = MinHasher(LshParams(seed=5)).signatures(texts)
    b, _ = MinHasher(LshParams(seed=6)).signatures(texts)
    assert np.array_equal(a1, a2)
    assert np.mean(a1 == b) < 0.01
    # batch boundaries do not matter
    c = np.concatenate([MinHasher(LshParams(seed=5)).signatures(texts[i : i + 7])[0] for i in range(0, 30, 7)])
    assert np.array_equal(a1, c)


def test_documents_without_words_have_no_signature():
    _sig, has = MinHasher(LshParams()).signatures(["", None, "...", "some words here"])
    assert has.tolist() == [False, False, False, True]


def test_band_keys():
    hasher = MinHasher(LshParams(num_perm=16, bands=4, rows=4))
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2**32, size=(3, 16), dtype=np.uint32)
    sig[1] = sig[0]
    sig[1, 5] ^= 1  # differs from row 0 in band 1 only
    sig[2] = np.tile(sig[0, :4], 4)  # the same 4 values in every band
    keys = hasher.band_keys(sig)
    assert keys.shape == (3, 4) and keys.dtype == np.uint64
    assert (keys[0] == keys[1]).tolist() == [True, False, True, True]
    assert len(set(keys[2].tolist())) == 4  # equal values in different bands never share a key
    assert np.array_equal(keys, MinHasher(LshParams(num_perm=16, bands=4, rows=4)).band_keys(sig))


def test_lsh_candidates_follow_the_s_curve(pairs):
    # the fraction of pairs sharing a band matches the expected 1 - (1 - J^r)^b
    params = LshParams(num_perm=128, bands=14, rows=8)
    hasher = MinHasher(params)
    ka = hasher.band_keys(hasher.signatures([p[0] for p in pairs])[0])
    kb = hasher.band_keys(hasher.signatures([p[1] for p in pairs])[0])
    found = (ka == kb).any(axis=1)
    exact = np.array([p[2] for p in pairs])
    expected = np.array([params.candidate_probability(j) for j in exact])
    assert abs(found.mean() - expected.mean()) <= 0.06
    assert found[exact >= 0.9].all()
    assert not found[exact <= 0.3].any()


def test_parameters():
    assert abs(LshParams(bands=14, rows=8).threshold - 0.719) < 0.001
    refinedweb = LshParams(**PRESETS["refinedweb"])
    assert refinedweb.num_perm == 9000 and refinedweb.candidate_probability(0.5) < 0.001
    assert LshParams().candidate_probability(0.85) > 0.98
    with pytest.raises(ValueError, match="exceeds num_perm"):
        LshParams(num_perm=64, bands=14, rows=8)
    b, r = optimal_bands_rows(0.8, 128)
    assert b * r <= 128 and 0.6 < (1 / b) ** (1 / r) < 0.9


def test_a_long_document_is_tokenized_in_pieces_with_the_same_signature(monkeypatch):
    """Found by adversarial testing: one 45 MB document's per-character arrays took 1.8 GB
    against a 1 GiB budget. A long document is tokenized in pieces cut at whitespace (no word
    spans one), so its words, shingles, signature and exact-dedup hash are those of one call."""
    import numpy as np

    from refinery.dedup import minhash, text as dedup_text
    from refinery.dedup.text import document_hashes, tokenize, word_hashes

    docs = [d["text"] for d in load_cc_docs()]
    long = "\n\n".join(docs)[:300_000] + " 漢字のテキスト" * 500  # CJK words are single characters
    batch = ["a short one " * 20, long, None, "another"]
    hasher = minhash.MinHasher(minhash.LshParams())
    want_sig, _ = hasher.signatures(batch)
    want_words = tokenize(batch)
    monkeypatch.setattr(dedup_text, "PIECE_CHARS", 10_000)
    monkeypatch.setattr(dedup_text, "LONG_DOC_CHARS", 40_000)
    pieces: list[int] = []
    real = dedup_text.tokenize

    def recording(texts, seed=0):
        pieces.extend(len(t or "") for t in texts)
        return real(texts, seed=seed)

    monkeypatch.setattr(dedup_text, "tokenize", recording)
    got = word_hashes(batch)
    assert np.array_equal(got.word_hash, want_words.word_hash)
    assert np.array_equal(got.doc_offsets, want_words.doc_offsets)
    assert max(pieces) < 40_000  # the long one went in pieces
    assert [x.tolist() for x in document_hashes(got)] == [x.tolist() for x in document_hashes(want_words)]
    got_sig, has = hasher.signatures(batch)
    assert np.array_equal(got_sig, want_sig) and has.tolist() == [True, True, False, True]
