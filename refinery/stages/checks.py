"""Parameter checks for stage constructors: ranges and relations, with messages that name the
parameter, its value and what is allowed (``refinery.config`` puts the stage and file in front)."""

from __future__ import annotations

import math
from typing import Any


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN")
    return float(value)


def fraction(name: str, value: Any) -> None:
    """A share of something: within [0, 1]."""
    if not 0.0 <= _number(name, value) <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value}")


def at_least(name: str, value: Any, low: float) -> None:
    if _number(name, value) < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def not_above(low_name: str, low: Any, high_name: str, high: Any) -> None:
    """``low <= high``: a range that keeps something (``min_words > max_words`` removes everything)."""
    if _number(low_name, low) > _number(high_name, high):
        raise ValueError(f"{low_name} ({low}) must not exceed {high_name} ({high}): "
                         "no document could pass; lower one or raise the other")


def one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
