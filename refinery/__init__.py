"""refinery: turn raw web crawls into a clean, deduplicated, tokenized pretraining corpus."""

__version__ = "0.8.13"
