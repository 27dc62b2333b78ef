"""Tokenized training shards: tokenizers loaded offline, shard format (Megatron-Core indexed datasets
plus sidecars), writer, BPE training.

See docs/tokens.md for the shard format and manifest; ``refinery.loader`` streams the shards.
"""

from refinery.tokens.format import ShardFile, TokenizerMismatchError, TokensChangedError, TokenShardError
from refinery.tokens.tokenizer import (
    LoadedTokenizer,
    TokenizerError,
    load_tokenizer,
    token_dtype,
)

__all__ = [
    "LoadedTokenizer",
    "ShardFile",
    "TokenShardError",
    "TokenizerError",
    "TokenizerMismatchError",
    "TokensChangedError",
    "load_tokenizer",
    "token_dtype",
]
