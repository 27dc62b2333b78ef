"""Executors run a pipeline's shard tasks: ``local`` (process pool, the default) and ``ray``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ShardStatus = Literal["done", "skipped", "failed"]


@dataclass
class ShardOutcome:
    shard: str
    status: ShardStatus
    stats: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
