"""Dedup configuration (``configs/dedup.yaml``), validated with pydantic before any work starts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from refinery.dedup.minhash import PRESETS, LshParams
from refinery.validation import problems, yaml_problem
from refinery.yaml_safe import load_yaml

Method = Literal["minhash", "exact", "url", "substring", "decontaminate", "lines"]

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



def _allocator_installed(value: str) -> str:
    from refinery.allocator import check_allocator

    check_allocator(value, "executor allocator")
    return value


#: the ``executor: allocator`` setting of a run and of ``refinery dedup``: the local pool's workers'
#: malloc (refinery/allocator.py): ``auto`` preloads mimalloc where the cmeel-mimalloc wheel is
#: installed, ``system`` keeps glibc's. How a run runs, not what it outputs: not in any
#: fingerprint. Ray's processes are left alone
ExecutorAllocator = Annotated[Literal["auto", "mimalloc", "system"], AfterValidator(_allocator_installed)]

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
    #: candidate verification (docs/dedup.md "Candidate verification"): a bucket pair is united only
    #: if its estimated Jaccard (equal slots of the stored signatures) reaches ``threshold``, and a
    #: document is removed only if its estimate against its cluster's kept copy reaches it too.
    #: 0.7 sits at the 14 x 8 curve's midpoint (0.72): >= 4 standard errors (128 slots) from both
    #: J = 0.85 (recall) and J = 0.5 (never remove), so both guarantees hold with margin.
    verify: bool = True
    threshold: float = Field(0.7, gt=0.0, le=1.0)
    #: signature slots stored for verification (the first ones; 512 bytes per document at 128)
    verify_slots: int = Field(128, ge=16, le=4096)

    #: the keys a preset sets: a section may leave them out (to the preset, or their defaults)
    FILLED_BY_PRESET: ClassVar[frozenset[str]] = frozenset(PRESETS["default"])

    @model_validator(mode="after")
    def _apply_preset(self) -> MinhashConfig:
        if self.preset:
            preset = PRESETS[self.preset]
            # a preset beside values that contradict it is refused: the values won, silently (the
            # template's `# preset: refinedweb` uncommented above its num_perm/bands/rows gave 14 x 8
            # of 128; h172). Values that agree with it load: a dump (run.json) writes both
            given = {k: getattr(self, k) for k in preset if k in self.model_fields_set}
            if preset_clash(self.preset, given):
                raise ValueError(preset_clash_message(self.preset, given))
            for key, value in preset.items():
                object.__setattr__(self, key, value)
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self

    def lsh(self) -> LshParams:
        return LshParams(self.num_perm, self.bands, self.rows, self.ngram, self.seed, self.backend)

    def stored_slots(self) -> int:
        """Signature slots kept for verification (0: verification off)."""
        return min(self.verify_slots, self.num_perm) if self.verify else 0


def _spelled(values: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items())


def preset_clash(preset: str, given: dict[str, Any]) -> dict[str, Any]:
    """The values of ``given`` (num_perm, bands, rows) that say otherwise than ``preset``."""
    return {k: v for k, v in given.items() if k in PRESETS[preset] and v != PRESETS[preset][k]}


def _as_options(values: dict[str, Any]) -> str:
    return " ".join(f"--{key.replace('_', '-')} {value}" for key, value in values.items())


def _too_few_perms(values: dict[str, Any], num_perm: str) -> str:
    """The note when ``values`` (num_perm, bands, rows) would be refused for bands x rows."""
    need = values["bands"] * values["rows"]
    return f" ({num_perm} at least {need}: bands x rows is {need})" if need > values["num_perm"] else ""


def preset_clash_message(preset: str, given: dict[str, Any], cli: set[str] = frozenset(), file: str = "") -> str:
    """The one line refusing ``preset`` beside ``given`` values that contradict it, saying exactly
    what to write instead: the preset alone, or the three values with the given ones in the
    preset's place (it said "give the preset or num_perm, bands and rows, not both", and a user of
    ``--preset refinedweb --bands 400`` had to find 9,000 and 20 and the options' spelling; h178).
    ``cli``: the keys (``preset`` among them) given on the command line, spelled as options;
    ``file``: the config file the others came from."""
    values, clash = PRESETS[preset] | given, preset_clash(preset, given)
    order = ("num_perm", "bands", "rows")
    values = {k: values[k] for k in order}
    verb = "is" if len(clash) == 1 else "are"
    if not cli:  # a config file, a recipe's entry
        clashing = ", ".join(f"{k} {v}" for k, v in clash.items())
        three = ", ".join(f"{k}: {v}" for k, v in values.items())
        return (f"preset {preset} is {_spelled(PRESETS[preset])}, but {clashing} {verb} also given: write the "
                f"preset alone, or {three} without it{_too_few_perms(values, 'num_perm')}")
    clashing = ", ".join(f"--{k.replace('_', '-')} {v}" if k in cli else f"{k}: {v} ({file})" for k, v in clash.items())
    three, note = _as_options(values), _too_few_perms(values, "--num-perm")
    if "preset" in cli:  # (--preset drops a file's three values: every clashing one is an option)
        return (f"--preset {preset} is {_as_options(PRESETS[preset])}, but {clashing} {verb} also given: give "
                f"--preset {preset} alone, or {three} without it{note}")
    # the file's own values may clash too: then dropping the options alone would not do (h184)
    drop = ("" if set(clash) - cli else
            f"drop {' '.join('--' + k.replace('_', '-') for k in clash if k in cli)}, or ")
    return (f"{file}'s preset {preset} is {_spelled(PRESETS[preset])}, but {clashing} {verb} also given: {drop}"
            f"take the preset out of {file} and give {three}{note}")


class LinesConfig(_Strict):
    """Corpus-level repeated-line removal (``method: lines``, docs/dedup.md): a normalized line is
    boilerplate when it occurs in at least ``min_docs`` documents of at least ``min_domains``
    registered domains; only short lines are candidates, so prose quoted across sites is kept."""

    min_docs: int = Field(3, ge=2, description="documents a line must occur in")
    # >= 2: a line repeated by one site only (its own template) is never cut by this pass
    min_domains: int = Field(2, ge=2, description="distinct registered domains (from `url`) a line must occur in")
    # a site's own template (its licence footer, "Not the answer you're looking for?") repeats on
    # its pages only: the cross-site rule above never sees it
    min_site_docs: int | None = Field(None, ge=2, description="also boilerplate: a line in at least this many "
                                      "documents of one registered domain; null: a line of one site is never cut")
    min_chars: int = Field(10, ge=1, description="shortest candidate line (normalized characters)")
    min_words: int = Field(2, ge=1, description="fewest words of a candidate line (one-word lines: line_corrections)")
    max_words: int = Field(30, ge=1, description="longest candidate line in words: longer lines are prose")
    fold_digits: bool = Field(True, description="digits compare equal ('Page 2 of 9' = 'Page 3 of 7')")
    # off by default: the lines pass's fingerprint holds the lines section (every dedup pass's did
    # before session 37), so a default of true made runs from before it refuse to resume
    exact_dates: bool = Field(False, description="with fold_digits: a dateline ('Posted on April 11, 2023') keeps its "
                              "digits, so only the same date on many pages is cut (false: every date is one line)")
    max_removed_word_frac: float = Field(0.05, ge=0.0, le=1.0,
                                         description="RefinedWeb's rule: a document losing more words is removed")
    keep_first: bool = Field(True, description="keep each boilerplate line in the first document holding it, "
                                               "so text published on several sites survives once (False: cut every copy)")
    # a site's template around a real article is more than 20% of a short page: the rule above
    # removed the article with it (probe h89: 24 of 30 template pages of 6 sites, docs/dedup.md)
    min_words_left: int | None = Field(None, ge=1, description="a document over max_removed_word_frac is kept, "
                                       "its lines cut, when at least this many words remain; null: removed")

    # cuts can take a kept document under the recipe's gopher_quality min_words (53 -> 49 words:
    # probe h89); a recipe sets it to that min_words unless given (refinery.config)
    # 0 removes nothing, as null does (and as line_corrections' 0 and substring.min_words 0 do): the
    # value a researcher tries for "off" (stats --what-if ...=0 was refused by a rerun; session 48)
    min_words_after_cuts: int | None = Field(None, ge=0, description="a document the cuts leave with fewer words "
                                             "(as gopher_quality counts them) is removed, too_short_after_cuts; "
                                             "0 or null: never")

    @model_validator(mode="after")
    def _words(self) -> LinesConfig:
        if self.max_words < self.min_words:
            raise ValueError(f"max_words ({self.max_words}) is below min_words ({self.min_words})")
        return self


#: settings added after runs were made, each with the value that does what runs did before it:
#: left out of a pass's fingerprint and of run comparisons while at that value, so a run made
#: before a setting existed resumes, and compares equal, instead of differing by "<unset> -> None"
ADDED_SETTINGS = {"lines": {"min_site_docs": None, "exact_dates": False, "min_words_left": None,
                            "min_words_after_cuts": None}}


def without_added_defaults(section: dict[str, Any]) -> dict[str, Any]:
    """A dumped dedup pass config without the :data:`ADDED_SETTINGS` still at their old behaviour."""
    out = dict(section)
    for group, added in ADDED_SETTINGS.items():
        if isinstance(out.get(group), dict):
            out[group] = {k: v for k, v in out[group].items() if not (k in added and v == added[k])}
    return out


class SubstringConfig(_Strict):
    min_tokens: int = Field(50, ge=2, le=10_000, description="cut duplicated spans of at least this many tokens")
    min_words: int = Field(50, ge=0, description="drop documents left with fewer words after cutting")
    keep_first: bool = Field(True, description="keep the first occurrence of a span (False: cut every copy)")


class BenchmarkSpec(_Strict):
    """One benchmark file of the decontamination pass (JSONL, JSONL.gz or Parquet; local or s3://)."""

    name: str = Field(min_length=1, description="recorded in contamination_benchmark")
    path: str = Field(min_length=1)
    fields: list[str] = Field(min_length=1, description="text fields whose n-grams are matched, e.g. [prompt, canonical_solution]")
    id_field: str | None = Field(None, description="recorded in contamination_item (default: the row number)")


class DecontaminateConfig(_Strict):
    """Benchmark decontamination (docs/decontamination.md): documents sharing ``ngram``-word
    n-grams (normalized words, like every dedup method) with a benchmark item."""

    benchmarks: list[BenchmarkSpec] = Field(default_factory=list)
    ngram: int = Field(13, ge=3, le=64, description="13 words, as GPT-3 did")
    mode: Literal["remove", "flag"] = "remove"
    min_matches: int = Field(1, ge=1, description="distinct shared n-grams with one item that make a document contaminated")
    max_ngram_docs: int | None = Field(
        10, ge=1, description="ignore a benchmark n-gram found in more documents of the corpus than this (GPT-3's "
        "rule: common phrases, licence and site boilerplate); null: never ignore one")

    @model_validator(mode="after")
    def _unique_names(self) -> DecontaminateConfig:
        names = [b.name for b in self.benchmarks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"benchmark names must be unique; repeated: {dupes}")
        return self


class ExecutorSettings(_Strict):
    type: Literal["local", "ray"] = "local"
    workers: int | None = Field(None, gt=0)
    ray_address: str | None = None
    object_store_memory: int | None = Field(None, gt=0)
    max_retries: int = Field(2, ge=0)
    #: the local pool's workers' malloc (:data:`ExecutorAllocator`)
    allocator: ExecutorAllocator = "auto"


def pass_name(method: object, name: object = None) -> str:
    """A dedup pass's name in a run: its own, else ``<method>_dedup`` (``decontaminate`` as is).
    Also the label of its removals (``removed_stage``) and of its funnel row."""
    if name:
        return str(name)
    return "decontaminate" if method == "decontaminate" else f"{method}_dedup"


_PASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
#: the run directory's own entries (refinery.rundir), which no pass may be named
RUN_DIR_NAMES = frozenset({"kept", "removed", "stats", "samples", "failed", "passes", "index", "tokens", "filter",
                           "report"})


#: (method, section): the keys of another method's section that method reads
_READ_BY_OTHERS = {("exact", "minhash"): ("seed",), ("url", "minhash"): ("seed",)}


class DedupConfig(_Strict):
    #: how a refusal names the method in force (a recipe's entry says "this entry's method")
    _METHOD_HERE: ClassVar[str] = "the method"

    method: Method = "minhash"
    #: the pass's name (default ``<method>_dedup``): the label of its removals (``removed_stage``, the
    #: funnel's row) and of its marker (``passes/<name>.json``); in a recipe also its directory under
    #: OUT. ``refinery dedup -c`` takes a recipe's dedup entry as it is, name included (it was
    #: refused as "name: unknown key", though the command's help points at such an entry)
    name: str | None = None
    minhash: MinhashConfig = Field(default_factory=MinhashConfig)
    substring: SubstringConfig = Field(default_factory=SubstringConfig)
    lines: LinesConfig = Field(default_factory=LinesConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)
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

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str | None) -> str | None:
        """A pass's name is a directory (in a recipe) and a file name (its marker): a plain folder
        name that is not one of the run directory's own (".." wrote into OUT's parent, and --force
        then deleted it; "kept" put a pass's files inside the corpus; found by adversarial testing)."""
        if value is None:
            return value
        if not _PASS_NAME.fullmatch(value) or value in RUN_DIR_NAMES:
            raise ValueError(f"pass name {value!r} must be letters, digits, '_' or '-' (not starting with '.' "
                             f"or '_'), and not one of {sorted(RUN_DIR_NAMES)}")
        return value

    @field_validator("minhash", "substring", "lines", "decontaminate")
    @classmethod
    def _read_by_its_method(cls, section: BaseModel, info: Any) -> BaseModel:
        """A method's section under another method does nothing: ``lines: {min_docs: 5}`` beside
        ``method: minhash`` was accepted and silently ignored (probe, session 46), in a recipe's
        entry and in ``refinery dedup -c`` (whose ``--method`` overrides the file's). Runs only for
        the sections written (pydantic validates a default only when asked). A section written
        whole (every key not null by default) at its defaults is what a config dumped whole
        (run.json) and the template (configs/dedup.yaml) carry: it loads; one with a key set
        otherwise, or with some keys only
        (``minhash: {bands: 14}`` under ``method: lines``: written to matter), is refused (h170;
        only the keys set otherwise were, h164). ``exact`` and ``url`` read ``minhash.seed``."""
        method, key = info.data.get("method"), info.field_name
        if method is None or method == key:  # an unknown method is refused on its own
            return section
        read = set(_READ_BY_OTHERS.get((method, key), ()))
        written = section.model_fields_set - read
        default = type(section)()
        changed = {k for k in written if getattr(section, k) != getattr(default, k)}
        # every key with a value by default (one off by default, null, may be left out: the
        # template comments out minhash's preset), but for those a preset sets (the template
        # comments out minhash's num_perm, bands and rows, so that uncommenting its preset works)
        optional = getattr(type(section), "FILLED_BY_PRESET", frozenset())
        whole = {k for k, v in default if v is not None} - optional <= section.model_fields_set
        if not changed and (whole or (read and not written)):
            return section
        also = " (and its seed by method: exact or url)" if key == "minhash" else ""
        got = (", ".join(sorted(changed)) if changed
               else f"{', '.join(sorted(written))} at {'its default' if len(written) == 1 else 'their defaults'}"
               if written else "an empty section")
        raise ValueError(f"only read by method: {key}{also}; {cls._METHOD_HERE} is {method}, got {got}"
                         + ("" if changed else f": leave the {key} section out"))

    @property
    def pass_name(self) -> str:
        return pass_name(self.method, self.name)

    @model_validator(mode="after")
    def _decontaminate_needs_benchmarks(self) -> DedupConfig:
        # a decontamination pass without benchmarks would rewrite every shard for nothing
        if self.method == "decontaminate" and not self.decontaminate.benchmarks:
            raise ValueError("method 'decontaminate' needs decontaminate.benchmarks (a list of {name, path, fields})")
        return self


class DedupConfigError(ValueError):
    pass


def _one_pass_section(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A file holding one pass's settings under a ``dedup:`` mapping (``dedup: {method: url}``, as a
    recipe groups its dedup settings) gives those settings: it was refused as "dedup: unknown key",
    a key it does have (review h101). Beside other top-level keys it is refused, naming it: which of
    the two sets of settings was meant cannot be told."""
    if "dedup" not in data:
        return data
    section = data["dedup"]
    if not isinstance(section, dict):  # `dedup:` left empty, or `dedup: url`: "unknown key" it is not
        raise DedupConfigError(f"dedup config {path}: dedup: must be a mapping of one pass's settings "
                               f"(dedup: {{method: url}}), not {_yaml_kind(section)}")
    others = sorted(str(k) for k in data if k != "dedup")
    if others:
        raise DedupConfigError(f"dedup config {path}: a dedup: section beside top-level settings ({', '.join(others)}): "
                               "give one pass's settings either under dedup: or at the top level, not both")
    return dict(section)


def _yaml_kind(value: Any) -> str:
    return "empty" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _refuse_a_preset_clash_from_the_command_line(data: dict[str, Any], overrides: dict[str, Any],
                                                path: Path | None) -> None:
    """A preset beside values that contradict it, either given on the command line: refused in the
    options' spelling (the model's check spells a file's keys)."""
    section = data.get("minhash")
    preset = section.get("preset") if isinstance(section, dict) else None
    if not isinstance(preset, str) or preset not in PRESETS:  # `preset: [x]` was a TypeError (unhashable)
        return
    given = {k: section[k] for k in ("num_perm", "bands", "rows") if k in section}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in given.values()):
        # `bands: abc` or `bands: null` beside the preset: the model names the value (a TypeError in
        # the message's bands x rows here; session 48, h184)
        return
    cli = {dotted.split(".", 1)[1] for dotted, value in overrides.items()
           if value is not None and dotted.startswith("minhash.")}
    clash = preset_clash(section["preset"], given)
    if clash and cli & (set(clash) | {"preset"}):
        raise DedupConfigError(f"invalid dedup config {'(command line)' if path is None else f'{path} and the command line'}: "
                               f"{preset_clash_message(section['preset'], given, cli, str(path or ''))}")


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
            raise DedupConfigError(f"invalid dedup config {path}: not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(data, dict):
            raise DedupConfigError(f"dedup config {path}: the top level must be a mapping")
        if "stages" in data or isinstance(data.get("dedup"), list):
            # a whole recipe was read key by key: 8 "unknown key" lines for configs/refinedweb.yaml
            raise DedupConfigError(f"{path} is a pipeline config (it has {'stages' if 'stages' in data else 'a dedup list'}): "
                                   f"`refinery run {path} -i IN -o OUT` runs it, dedup passes included; `refinery dedup "
                                   f"-c` takes one pass's settings (method, minhash, ...: configs/dedup.yaml, or one "
                                   f"entry of the recipe's dedup: list)")
        data = _one_pass_section(data, path)
    if (overrides or {}).get("minhash.preset") is not None and isinstance(data.get("minhash"), dict):
        # `--preset` overrides the file's num_perm, bands and rows as well as its preset (the
        # command line wins): they are what a preset sets
        data["minhash"] = {k: v for k, v in data["minhash"].items() if k not in MinhashConfig.FILLED_BY_PRESET}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        target = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    _refuse_a_preset_clash_from_the_command_line(data, overrides or {}, path)
    try:
        return DedupConfig.model_validate(data)
    except ValidationError as exc:
        # the problems as `refinery run` names them: the value given, a list's hint, no "Value error, "
        lines = [f"invalid dedup config {path or '(command line)'}:", *(f"  {p}" for p in problems(exc, DedupConfig))]
        raise DedupConfigError("\n".join(lines)) from None
