"""Pipeline configuration: a YAML file validated with pydantic before any work starts.

Errors name the offending key and value (unknown keys, bad values, unknown stage types, stage
parameters that the stage's constructor rejects, unreachable input/output paths).
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from refinery.dedup.config import DedupConfig
from refinery.stages.base import Stage
from refinery.stages.registry import STAGES, stage_class


class ConfigError(ValueError):
    """The configuration is invalid; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageConfig(_Strict):
    type: str
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in STAGES:
            raise ValueError(f"unknown stage type {v!r}; known: {', '.join(sorted(STAGES))}")
        return v

    @property
    def stage_name(self) -> str:
        return self.name or self.type

    def build(self) -> Stage:
        """Construct the stage, validating ``params`` against its constructor's typed signature."""
        cls = stage_class(self.type)
        where = f"stage {self.stage_name!r} ({self.type})"
        model = _params_model(cls)
        unknown = sorted(set(self.params) - set(model.model_fields))
        if unknown:
            raise ConfigError(f"{where}: unknown parameter(s) {unknown}; accepted: {sorted(model.model_fields)}")
        try:
            validated = model.model_validate(self.params)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
            )
            raise ConfigError(f"{where}: {problems}") from None
        given = {k: getattr(validated, k) for k in self.params}
        try:
            return cls(name=self.stage_name, **given)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc


_PARAM_MODELS: dict[type, type[BaseModel]] = {}


def _params_model(cls: type[Stage]) -> type[BaseModel]:
    """A pydantic model mirroring the stage constructor's keyword parameters and type hints, so
    YAML values are type-checked (``timeout_s: soon`` is an error, ``"5"`` becomes 5.0)."""
    model = _PARAM_MODELS.get(cls)
    if model is None:
        signature = inspect.signature(cls.__init__)
        hints = typing.get_type_hints(cls.__init__)
        fields: dict[str, Any] = {}
        for pname, param in signature.parameters.items():
            if pname in ("self", "name") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[pname] = (hints.get(pname, Any), default)
        model = create_model(
            f"{cls.__name__}Params",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
            **fields,
        )
        _PARAM_MODELS[cls] = model
    return model


class ReaderConfig(_Strict):
    batch_size: int = Field(500, gt=0, le=100_000)
    max_body_bytes: int = Field(50 * 2**20, gt=0)


class StatsConfig(_Strict):
    """What each shard records besides counters (see docs/stats.md)."""

    samples_per_reason: int = Field(20, ge=0, description="removed documents sampled per (stage, reason) per shard")
    snippet_chars: int = Field(500, ge=0)
    top_domains: int = Field(100, ge=0)
    language_column: str = "language"
    histograms: bool = True


class ExecutorConfig(_Strict):
    type: Literal["local", "ray"] = "local"
    workers: int | None = Field(None, gt=0, description="processes (local) or concurrent tasks (ray); default: cores")
    ray_address: str | None = None
    object_store_memory: int | None = Field(None, gt=0)
    max_retries: int = Field(2, ge=0)


class DedupPassConfig(DedupConfig):
    """One dedup pass of a recipe: ``configs/dedup.yaml``'s keys, plus an optional pass ``name``;
    the executor is the recipe's (set once, at the top level)."""

    name: str | None = None

    @model_validator(mode="after")
    def _no_executor(self) -> "DedupPassConfig":
        if "executor" in self.model_fields_set and self.executor != type(self.executor)():
            raise ValueError("a recipe sets 'executor' once, at the top level, not per dedup pass")
        return self

    @property
    def pass_name(self) -> str:
        return self.name or f"{self.method}_dedup"


class TokenizeConfig(_Strict):
    """The tokenize pass (see docs/tokens.md)."""

    tokenizer: str = Field("gpt2", description="'gpt2' (bundled BPE) or a tokenizer.json path")
    eos_token: str | None = None
    shuffle: bool = False
    seed: int = 0
    num_shards: int | None = Field(None, gt=0)
    batch_size: int = Field(1000, gt=0)


class PipelineConfig(_Strict):
    """A recipe: the document stages (one pass over every shard), then dedup passes in order,
    then tokenization. Only ``stages`` is required."""

    name: str = "pipeline"
    description: str = ""
    input: str | None = None
    output: str | None = None
    reader: ReaderConfig = Field(default_factory=ReaderConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)
    stages: list[StageConfig] = Field(min_length=1)
    dedup: list[DedupPassConfig] = Field(default_factory=list)
    tokenize: TokenizeConfig | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> "PipelineConfig":
        names = [s.stage_name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique; repeated: {dupes} (give each a distinct 'name')")
        passes = ["filter", *(d.pass_name for d in self.dedup), "tokens"]
        dupes = sorted({n for n in passes if passes.count(n) > 1})
        if dupes:
            raise ValueError(f"pass names must be unique; repeated: {dupes} (give each dedup pass a distinct 'name')")
        return self

    def build_stages(self) -> list[Stage]:
        return [s.build() for s in self.stages]


def _format_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"invalid config {source}:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        given = err.get("input")
        shown = f" (got {given!r})" if given is not None and not isinstance(given, (dict, list)) else ""
        lines.append(f"  {where}: {msg}{shown}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None
    config.build_stages()  # constructor-level validation of every stage's params
    return config


def load_config(path: str | Path) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    return parse_config(data, source=str(path))
