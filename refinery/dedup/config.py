"""Dedup configuration (``configs/dedup.yaml``), validated with pydantic before any work starts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from refinery.dedup.minhash import PRESETS, LshParams
from refinery.yaml_safe import load_yaml

Method = Literal["minhash", "exact", "url", "substring"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_size(value: int | str) -> int:
    """``"512MiB"``, ``"2GB"``, ``1000000`` -> bytes."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    unit = (match.group(2) or "").lower() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"not a size: {value!r} (use e.g. 512MiB, 2GiB or a number of bytes)")
    return int(float(match.group(1)) * _UNITS[unit])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MinhashConfig(_Strict):
    preset: Literal["default", "refinedweb"] | None = Field(
        None, description="default: 14 bands x 8 rows of 128 perms; refinedweb: 450 x 20 of 9,000")
    num_perm: int = Field(128, gt=0, le=100_000)
    bands: int = Field(14, gt=0)
    rows: int = Field(8, gt=0)
    ngram: int = Field(5, gt=0, le=64)
    seed: int = Field(0, ge=0, lt=2**31)
    backend: Literal["rensa", "numpy"] = "rensa"

    @model_validator(mode="after")
    def _apply_preset(self) -> MinhashConfig:
        if self.preset:
            for key, value in PRESETS[self.preset].items():
                if key not in self.model_fields_set:  # explicit values win over the preset
                    object.__setattr__(self, key, value)
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self

    def lsh(self) -> LshParams:
        return LshParams(self.num_perm, self.bands, self.rows, self.ngram, self.seed, self.backend)


class SubstringConfig(_Strict):
    min_tokens: int = Field(50, ge=2, le=10_000, description="cut duplicated spans of at least this many tokens")
    min_words: int = Field(50, ge=0, description="drop documents left with fewer words after cutting")
    keep_first: bool = Field(True, description="keep the first occurrence of a span (False: cut every copy)")


class ExecutorSettings(_Strict):
    type: Literal["local", "ray"] = "local"
    workers: int | None = Field(None, gt=0)
    ray_address: str | None = None
    object_store_memory: int | None = Field(None, gt=0)
    max_retries: int = Field(2, ge=0)


class DedupConfig(_Strict):
    method: Method = "minhash"
    minhash: MinhashConfig = Field(default_factory=MinhashConfig)
    substring: SubstringConfig = Field(default_factory=SubstringConfig)
    #: per-task memory for the bucket / cluster / suffix-array passes; sets the number of partitions
    memory_budget: int = Field(1 * 2**30, gt=0)
    #: force the number of bucket partitions (default: derived from the memory budget)
    partitions: int | None = Field(None, gt=0, le=65_536)
    batch_size: int = Field(1000, gt=0, le=100_000)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)


class DedupConfigError(ValueError):
    pass


def load_dedup_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> DedupConfig:
    """Load ``path`` (YAML; optional) and apply ``overrides`` (dotted keys such as
    ``"minhash.bands"``; ``None`` values are ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DedupConfigError(f"dedup config not found: {path}")
        try:
            data = load_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DedupConfigError(f"dedup config {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise DedupConfigError(f"dedup config {path}: the top level must be a mapping")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        target = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    try:
        return DedupConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"invalid dedup config {path or '(command line)'}:"]
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  {where}: {msg}")
        raise DedupConfigError("\n".join(lines)) from None
