"""Train a byte-level BPE tokenizer on a run's kept documents (``refinery train-tokenizer``).

Like the Falcon team's own tokenizer (and GPT-2's): byte-level, so every string is encodable and
decoding is lossless; the 256 byte symbols are always in the vocabulary, plus ``<|endoftext|>``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from refinery.io import fs
from refinery.tokens.tokenizer import GPT2_EOS, LoadedTokenizer, load_tokenizer
from refinery.tokens.writer import _read_docs, kept_shards

log = logging.getLogger("refinery.tokens")


@dataclass
class TrainResult:
    path: str
    vocab_size: int
    docs: int
    tokenizer: LoadedTokenizer


def _texts(shards: dict[str, str], max_docs: int | None, seen: list[int]) -> Iterator[str]:
    started = time.time()
    for name in sorted(shards):
        texts, _ = _read_docs(shards[name], name)
        for text in texts:
            if max_docs is not None and seen[0] >= max_docs:
                return
            if text:
                seen[0] += 1
                yield text
        log.info("train-tokenizer: read %s (%d docs so far, %.0f docs/s)", name, seen[0],
                 seen[0] / max(time.time() - started, 1e-9))


def train_tokenizer(
    run_dir: str,
    vocab_size: int,
    out: str,
    *,
    min_frequency: int = 2,
    max_docs: int | None = None,
    special_tokens: tuple[str, ...] = (GPT2_EOS,),
    allow_unfinished: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train on ``run_dir/kept/*.parquet`` and save a ``tokenizer.json`` to ``out`` (local or s3://, atomic)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(special_tokens):
        raise ValueError(f"vocab_size must be at least {len(alphabet) + len(special_tokens)} (256 bytes + special tokens)")
    fs.validate_uri(out)
    shards = kept_shards(run_dir, allow_unfinished)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=alphabet,
        show_progress=progress,
    )
    seen = [0]
    tok.train_from_iterator(_texts(shards, max_docs, seen), trainer=trainer)
    fs.write_bytes(out, tok.to_str(pretty=True).encode("utf-8"))
    loaded = load_tokenizer(out, eos_token=special_tokens[0])
    if loaded.vocab_size < vocab_size:
        log.warning("train-tokenizer: the corpus only supports %d tokens (asked for %d): too little text",
                    loaded.vocab_size, vocab_size)
    log.info("train-tokenizer: %d docs -> vocab %d, saved to %s", seen[0], loaded.vocab_size, out)
    return TrainResult(out, loaded.vocab_size, seen[0], loaded)
