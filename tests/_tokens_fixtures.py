"""Real text for the token tests: kept/ shards built from the sample Common Crawl documents."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.io import fs

ROOT = Path(__file__).resolve().parents[1]
CC_DOCS = ROOT / "data" / "sample" / "cc_docs"
SHARED_TOKENIZERS = ROOT / "data" / "sample" / "tokenizers"  # copied from shared/data (data/README.md)
GPT_NEO_JSON = SHARED_TOKENIZERS / "tokenizer_gpt-neo-test-tokenizer.json"
#: a real Llama-style tokenizer.json (dolma's tests: 32,003 tokens, its post-processor prepends <s>,
#: EOS </s>), in the team's shared/data (data/README.md: larger data stays there)
LLAMA_JSON = ROOT.parent / "shared" / "data" / "tokenizers" / "tokenizer_llama-test-tokenizer.json"
needs_llama = pytest.mark.skipif(not LLAMA_JSON.is_file(), reason=f"{LLAMA_JSON} is absent")


def cc_documents(max_chars: int | None = None) -> list[dict]:
    """The 717 real CC documents (id, text), in file order; 27 of them have empty text. With
    ``max_chars``, each text cut to its first ``max_chars`` characters."""
    docs = []
    for path in sorted(CC_DOCS.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs.extend({"id": d["id"], "text": d["text"][:max_chars]} for d in map(json.loads, f))
    return docs


def write_kept_run(run_dir: str, docs: list[dict], sizes: list[int]) -> dict[str, list[dict]]:
    """Write ``docs`` as kept shards of the given sizes (uneven on purpose); return {shard: docs}."""
    shards, start = {}, 0
    for i, size in enumerate(sizes):
        part = docs[start : start + size]
        start += size
        name = f"shard-{i:02d}"
        table = pa.table({"id": pa.array([d["id"] for d in part], pa.string()),
                          "text": pa.array([d["text"] for d in part], pa.string())})
        with fs.atomic_output(fs.join(run_dir, "kept", name + ".parquet")) as out:
            pq.write_table(table, out, compression="zstd")
        shards[name] = part
    return shards


#: 717 documents in 4 shards of very different sizes (one holds only 7 documents).
SHARD_SIZES = [400, 7, 280, 30]


def make_kept_run(tmp_path_factory, docs: list[dict]) -> str:
    run = str(tmp_path_factory.mktemp("run"))
    write_kept_run(run, docs, SHARD_SIZES)
    return run


def make_tokens(tmp_path_factory, kept_run: str, tokenizer: str, name: str) -> str:
    """``kept_run`` tokenized with ``tokenizer``, unshuffled, in a new directory."""
    from refinery.tokens.writer import tokenize_run

    out = str(tmp_path_factory.mktemp(name))
    tokenize_run(kept_run, out, tokenizer, progress=False)
    return out


@pytest.fixture(scope="session")
def cc_docs() -> list[dict]:
    docs = cc_documents()
    assert len(docs) == sum(SHARD_SIZES)
    return docs


@pytest.fixture(scope="session")
def kept_run(tmp_path_factory, cc_docs) -> str:
    return make_kept_run(tmp_path_factory, cc_docs)


@pytest.fixture(scope="session")
def gpt2_tokens(tmp_path_factory, kept_run) -> str:
    """``kept_run`` tokenized with GPT-2, unshuffled (4 token shards, uneven)."""
    return make_tokens(tmp_path_factory, kept_run, "gpt2", "tokens-gpt2")


@pytest.fixture(scope="session")
def neo_tokens(tmp_path_factory, kept_run) -> str:
    """``kept_run`` tokenized with the gpt-neo tokenizer.json, unshuffled: made once (a test that
    needs such an output to start from copies it; ~1.5 s a tokenization saved each)."""
    return make_tokens(tmp_path_factory, kept_run, str(GPT_NEO_JSON), "tokens-neo")


def copy_tokens(tokens: str, out: str) -> str:
    """A copy of a session fixture's token output at ``out``, for a test that changes it."""
    import shutil

    shutil.copytree(tokens, out)
    return out
