"""Token shards are Megatron-Core indexed datasets: read back with megatron-core's own reader.

The reader is ``megatron.core.datasets.indexed_dataset.IndexedDataset`` from the megatron-core wheel
(CPU only; the test extra installs it). Ground truth for every document is the tokenizer's own
encoding of the sample's text plus EOS, not our reader.
"""

from __future__ import annotations

import json
import os
import functools
import shutil
import types
import warnings

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from refinery.io import fs
from refinery.loader import TokenDataset
from refinery.tokens import TokenShardError, load_tokenizer
from refinery.tokens.format import PRELUDE_SIZE
from refinery.tokens.writer import TokenizeError, load_manifest, tokenize_run

from tests._tokens_fixtures import LLAMA_JSON, needs_llama, write_kept_run

EOS = "<|endoftext|>"

pytest_plugins = ["tests._s3_fixtures", "tests._tokens_fixtures"]



@functools.cache
def _megatron() -> types.SimpleNamespace:
    """megatron-core's reader, builder and object-storage config, imported on first use: the import
    (torch included) takes ~5 s, and every xdist worker collects this module, whichever runs it."""
    with warnings.catch_warnings():  # megatron.core warns that Transformer Engine / Apex are absent (CPU)
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder
        from megatron.core.datasets.object_storage_utils import ObjectStorageConfig
    return types.SimpleNamespace(IndexedDataset=IndexedDataset, IndexedDatasetBuilder=IndexedDatasetBuilder,
                                 ObjectStorageConfig=ObjectStorageConfig)


def _expected(tok, texts: list[str]) -> list[np.ndarray]:
    """What each document must hold: its text encoded by the tokenizer itself, then EOS."""
    encs = tok.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    return [np.array(e.ids + [tok.eos_id], np.int64) for e in encs]


def _ids(out: str, name: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(fs.read_bytes(fs.join(out, name + ".ids.parquet")))).column("id").to_pylist()


def test_megatron_reads_every_document_of_the_sample(gpt2_tokens, cc_docs):
    tok = load_tokenizer("gpt2")
    manifest = load_manifest(gpt2_tokens)
    texts = {d["id"]: d["text"] for d in cc_docs}
    ours = TokenDataset(gpt2_tokens)
    stream, seen = [], []
    for entry, shard in zip(manifest["shards"], ours.shards):
        ds = _megatron().IndexedDataset(os.path.join(gpt2_tokens, entry["name"]))  # mmap: how Megatron-LM / NeMo open a --data-path prefix
        ids = _ids(gpt2_tokens, entry["name"])  # the sidecar: which document is where
        assert len(ds) == len(ids) == entry["n_docs"]
        assert ds.index.dtype == np.uint16
        assert np.array_equal(ds.document_indices, np.arange(len(ds) + 1))  # one sequence per document
        # copies: Megatron's arrays view an mmap that it closes when the dataset is collected
        docs = [ds[i].copy() for i in range(len(ds))]
        for i, doc in enumerate(docs):
            assert doc.dtype == np.uint16 and np.array_equal(doc, shard.document(i)), (entry["name"], i)  # = ours
        # and they are the right documents: each decodes to its text + EOS (no re-encoding: decode is cheap)
        decoded = tok.tokenizer.decode_batch([d.tolist() for d in docs], skip_special_tokens=False)
        assert decoded == [texts[i] + EOS for i in ids]
        assert all(d[-1] == tok.eos_id and (d[:-1] != tok.eos_id).all() for d in docs)
        assert np.array_equal(ds.sequence_lengths, [len(d) for d in docs])
        stream.extend(docs)
        seen.extend(ids)
    assert seen == [d["id"] for d in cc_docs if d["text"]]  # every non-empty document, once, in order
    assert len(seen) == manifest["totals"]["n_docs"]
    # the loader's token stream is Megatron's documents, in manifest order
    assert np.array_equal(ours.read(0, ours.n_tokens), np.concatenate(stream))
    plain = _megatron().IndexedDataset(os.path.join(gpt2_tokens, "shard-03"), mmap=False)  # Megatron's pread reader
    assert np.array_equal(plain.get(5, offset=2, length=7), ours.shards[3].document(5)[2:9])
    ours.close()


def test_bytes_are_what_megatrons_own_builder_writes(gpt2_tokens, tmp_path):
    for name in ("shard-01", "shard-03"):
        shard = TokenDataset(gpt2_tokens).shards[int(name[-2:])]
        prefix = str(tmp_path / name)
        builder = _megatron().IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
        for i in range(shard.header.n_docs):
            doc = shard.document(i)
            builder.add_document(doc.astype(np.int64), [len(doc)])  # it casts to its dtype, as from a tensor
        builder.finalize(prefix + ".idx")
        for ext in (".bin", ".idx"):
            with open(prefix + ext, "rb") as a, open(os.path.join(gpt2_tokens, name + ext), "rb") as b:
                assert a.read() == b.read(), name + ext


def test_wide_vocabulary_is_int32_and_megatron_reads_ids_over_65535(tmp_path, cc_docs):
    big = load_tokenizer("gpt2").tokenizer
    big.add_tokens([f"<extra_{i}>" for i in range(20_000)])
    path = tmp_path / "big.json"
    path.write_text(big.to_str())
    tok = load_tokenizer(str(path))
    text = next(d["text"] for d in cc_docs if d["text"])[:300]
    docs = [{"id": "a", "text": text + " <extra_19999> " + text}, {"id": "b", "text": text}]
    write_kept_run(str(tmp_path / "run"), docs, [2])
    manifest = tokenize_run(str(tmp_path / "run"), str(tmp_path / "tok"), tok, progress=False).manifest
    assert manifest["dtype"] == "int32"
    ds = _megatron().IndexedDataset(str(tmp_path / "tok" / "shard-00"))
    assert ds.index.dtype == np.int32
    want = _expected(tok, [d["text"] for d in docs])
    assert want[0].max() == 50257 + 19999  # an id a uint16 could not hold
    assert all(np.array_equal(ds[i], w) for i, w in enumerate(want))


@needs_llama
def test_megatron_reads_documents_that_begin_with_a_bos(tmp_path, cc_docs):
    """Session 44 (h140): with ``bos`` each Megatron document is ``<s>`` + the text's ids + EOS (the
    BOS inside its document, as Megatron's own preprocessing with a BOS-adding tokenizer has it)."""
    tok = load_tokenizer(str(LLAMA_JSON), bos="on")
    texts = [d["text"] for d in cc_docs if d["text"]][:30]
    write_kept_run(str(tmp_path / "run"), [{"id": str(i), "text": t} for i, t in enumerate(texts)], [30])
    tokenize_run(str(tmp_path / "run"), str(tmp_path / "tok"), tok, progress=False)
    ds = _megatron().IndexedDataset(str(tmp_path / "tok" / "shard-00"))
    want = [np.concatenate([[tok.bos_id], w]) for w in _expected(tok, texts)]
    assert len(ds) == len(want) and np.array_equal(ds.sequence_lengths, [len(w) for w in want])
    assert all(np.array_equal(ds[i], w) for i, w in enumerate(want))


def test_megatron_reads_our_s3_output(kept_run, s3_root, tmp_path):
    shards = {"shard-01": os.path.join(kept_run, "kept", "shard-01.parquet")}
    tokenize_run(kept_run, f"{s3_root}/tok", "gpt2", shards=shards, progress=False)
    ours = TokenDataset(f"{s3_root}/tok")
    # Megatron's S3 mode: boto3 (AWS_ENDPOINT_URL -> the moto server) fetches the .idx, then ranged GETs of the .bin
    config = _megatron().ObjectStorageConfig(path_to_idx_cache=str(tmp_path / "idx-cache"), bin_chunk_nbytes=4096)
    os.makedirs(config.path_to_idx_cache)
    ds = _megatron().IndexedDataset(f"{s3_root}/tok/shard-01", mmap=False, object_storage_config=config)
    assert len(ds) == ours.shards[0].header.n_docs == 7
    assert all(np.array_equal(ds[i], ours.shards[0].document(i)) for i in range(len(ds)))
    ours.close()


def test_token_paths_are_the_shards_megatron_can_read(tmp_path, cc_docs):
    """Session 45 (h149): a shard of no documents (a kept shard with nothing left) has a 0-byte .bin,
    which Megatron cannot mmap, and as a dataset of no document fails GPTDataset (or hangs it when
    weighted); `refinery token-paths` prints the data-path prefixes of the others, one per line
    (`--weights`: each after its token count), and Megatron reads each; tokenize says so."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refinery.cli_tokens import register

    app = typer.Typer()
    register(app)
    run, out = tmp_path / "run", tmp_path / "tok"
    write_kept_run(str(run), [d for d in _texts(cc_docs, 12)], [8, 4])
    pq.write_table(pa.table({}), str(run / "kept" / "all-removed.parquet"))  # the runner's shard of nothing kept
    res = CliRunner().invoke(app, ["tokenize", str(run), "-o", str(out)])
    assert res.exit_code == 0 and f"1 of the shards hold no document: give Megatron `refinery token-paths {out}`" \
        in " ".join(res.output.split()), res.output
    assert os.path.getsize(out / "all-removed.bin") == 0  # what Megatron's mmap refuses
    res = CliRunner().invoke(app, ["token-paths", str(out)])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [str(out / "shard-00"), str(out / "shard-01")]
    assert "1 shard(s) of no documents left out (Megatron cannot read them): all-removed" in res.stderr
    sizes = [len(_megatron().IndexedDataset(prefix)) for prefix in res.stdout.splitlines()]
    assert sizes == [8, 4]
    n_tokens = {e["name"]: e["n_tokens"] for e in load_manifest(str(out))["shards"]}
    assert CliRunner().invoke(app, ["token-paths", str(out), "--weights"]).stdout.split() == \
        [str(n_tokens["shard-00"]), str(out / "shard-00"), str(n_tokens["shard-01"]), str(out / "shard-01")]
    with open(out / "shard-01.bin", "r+b") as f:  # cut short: a prefix Megatron would read short
        f.truncate(10)
    res = CliRunner().invoke(app, ["token-paths", str(out)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "shard-01.bin has 10 bytes" in res.output


def _texts(docs: list[dict], n: int) -> list[dict]:
    return [d for d in docs if d["text"]][:n]


def _copy(src: str, dst) -> str:
    shutil.copytree(src, dst)
    return str(dst)


def _verify(*args):
    from refinery.cli_tokens import register

    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, ["verify-tokens", *map(str, args)])


def test_verify_tokens_checks_the_megatron_index(gpt2_tokens, tmp_path):
    res = _verify(gpt2_tokens, "--no-hashes")
    assert res.exit_code == 0 and "ok: 4 shards" in res.output, res.output
    not_a_tokenizer = tmp_path / "nottok.json"  # a bad: line and exit 1 before, as if the shards were damaged (h121)
    not_a_tokenizer.write_text("garbage")
    res = _verify(gpt2_tokens, "--no-hashes", "--tokenizer", not_a_tokenizer)
    assert res.exit_code == 2 and res.output.startswith(f"error: --tokenizer {not_a_tokenizer}: cannot be loaded"), res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    bad = _copy(gpt2_tokens, tmp_path / "bad")
    idx = os.path.join(bad, "shard-02.idx")
    n = load_manifest(bad)["shards"][2]["n_docs"]
    with open(idx, "r+b") as f:  # sequence pointer 100 points elsewhere; sizes and ends still agree
        f.seek(PRELUDE_SIZE + 4 * n + 8 * 100)
        f.write(np.array([12], "<i8").tobytes())
    TokenDataset(bad).close()  # opening reads only the index's ends: not caught there
    res = _verify(bad, "--no-hashes")
    assert res.exit_code == 1 and "shard-02.idx: sequence pointer 100 is not the sum" in res.output, res.output
    assert "Traceback" not in res.output
    os.unlink(os.path.join(bad, "shard-01.json"))  # a shard without its sidecar has no known tokenizer
    res = _verify(bad)
    assert res.exit_code == 1 and "token shard shard-01 has no sidecar" in res.output, res.output


def test_old_refinery_format_is_refused_in_one_line(gpt2_tokens, tmp_path):
    old = _copy(gpt2_tokens, tmp_path / "old")
    manifest = json.loads(fs.read_bytes(os.path.join(old, "manifest.json")))
    manifest["version"] = 1
    fs.write_bytes(os.path.join(old, "manifest.json"), json.dumps(manifest).encode())
    with pytest.raises(TokenShardError, match=r"old RFTOKIDX format, no longer read: re-tokenize"):
        TokenDataset(old)
    res = _verify(old)
    assert res.exit_code == 1 and "re-tokenize" in res.output and "Traceback" not in res.output, res.output
    stale = _copy(gpt2_tokens, tmp_path / "stale")  # an old index under a new manifest
    with open(os.path.join(stale, "shard-00.idx"), "r+b") as f:
        f.write(b"RFTOKIDX\x01\x00\x00\x00")
    with pytest.raises(TokenShardError, match=r"shard-00\.idx is in refinery's old RFTOKIDX token format"):
        TokenDataset(stale)


def test_resume_refuses_shards_of_the_old_format(kept_run, gpt2_tokens, tmp_path):
    out = _copy(gpt2_tokens, tmp_path / "resume")
    marker = json.loads(fs.read_bytes(os.path.join(out, "shard-00.json")))
    del marker["shard_format"]  # what an RFTOKIDX shard's marker looked like
    fs.write_bytes(os.path.join(out, "shard-00.json"), json.dumps(marker).encode())
    with pytest.raises(TokenizeError, match=r"holds shard shard-00 in refinery's old token format; use a fresh --output or --force"):
        tokenize_run(kept_run, out, "gpt2", progress=False)  # not skipped as "finished", not mixed in
