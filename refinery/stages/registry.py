"""Stage registry: config ``type`` name -> stage class, imported lazily so a pipeline only pays
for the stages it uses (fastText, trafilatura and the URL blocklist are heavy).

Your own stage: a :class:`~refinery.stages.base.Stage` subclass (the contract is in ``base.py``)
registered under a ``type`` name with :func:`register_stage`, then used in a config like any other::

    # mystages.py, a module the workers can import (on sys.path)
    class Shouting(Stage):
        kind = "shouting"
        def __init__(self, name: str | None = None, max_upper: float = 0.2) -> None: ...
        def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
            return with_decision(batch, reasons, metrics, extra={"upper_frac": fracs})
        def metric_columns(self) -> list[str]:
            return ["upper_frac"]       # histogrammed in the stats and the report

    register_stage("shouting", "mystages:Shouting")   # or register_stage("shouting", Shouting)
    config = parse_config({"stages": [{"type": "shouting", "params": {"max_upper": 0.1}}]})

A run ships the registrations to its worker processes (spawned: they do not inherit this
process's registry) and Ray workers, which import the class by name: a class defined in a
notebook (``__main__`` without a file) can only run with ``workers=1``.
"""

from __future__ import annotations

import importlib
import sys

from refinery.stages.base import Stage

STAGES: dict[str, str] = {
    "url_filter": "refinery.stages.url_filter:UrlFilter",
    "prescreen": "refinery.stages.prescreen:LanguagePrescreen",
    "extract": "refinery.stages.extract:TrafilaturaExtractor",
    "language_id": "refinery.stages.language_id:LanguageId",
    "gopher_repetition": "refinery.stages.gopher:GopherRepetition",
    "gopher_quality": "refinery.stages.gopher:GopherQuality",
    "line_corrections": "refinery.stages.line_corrections:LineCorrections",
    "pii": "refinery.stages.pii:PiiRedactor",
    "minhash_dedup": "refinery.stages.dedup:MinhashDuplicateFilter",
    "exact_dedup": "refinery.stages.dedup:ExactDuplicateFilter",
    "url_dedup": "refinery.stages.dedup:UrlDuplicateFilter",
    "substring_dedup": "refinery.stages.dedup:ExactSubstringCut",
    "lines_dedup": "refinery.stages.line_dedup:RepeatedLineCut",
    "decontaminate": "refinery.stages.decontaminate:BenchmarkDecontamination",
    "toxicity": "refinery.stages.classifiers:ToxicityFilter",
    "quality": "refinery.stages.classifiers:QualityFilter",
    "fault_injection": "refinery.stages.faults:FaultInjection",  # tests / chaos drills only
}


#: the stages registered with :func:`register_stage` (type -> "module:Class"): what a run ships to its workers
REGISTERED: dict[str, str] = {}
#: bumped by every registration: a process's built pipelines (``refinery.runner.runner_for``) are
#: rebuilt after one, so a notebook that redefines and re-registers its stage runs the new one
generation = 0
_BUILT_IN = frozenset(STAGES)


def register_stage(kind: str, stage: type[Stage] | str) -> None:
    """Make ``kind`` a config stage ``type``: ``stage`` is a :class:`Stage` subclass or its
    ``"module:Class"`` name. Registering a name again replaces it (a notebook cell run twice); the
    built-in types cannot be replaced. Raises ``ValueError`` naming what is wrong."""
    if not isinstance(kind, str) or not kind.isidentifier():
        raise ValueError(f"stage type {kind!r}: use a name such as 'my_filter' (letters, digits, underscores)")
    if kind in _BUILT_IN:
        raise ValueError(f"stage type {kind!r} is a built-in stage: register yours under another name")
    if isinstance(stage, str):
        module_name, _, class_name = stage.partition(":")
        if not module_name or not class_name:
            raise ValueError(f"stage {stage!r} for type {kind!r}: give 'module:Class' or the class itself")
        target = stage
    else:
        if not (isinstance(stage, type) and issubclass(stage, Stage)):
            raise ValueError(f"stage for type {kind!r} must be a subclass of refinery.stages.base.Stage, got {stage!r}")
        if "<locals>" in stage.__qualname__:  # workers import it by name: a class made inside a function has none
            raise ValueError(f"stage class {stage.__qualname__} for type {kind!r} is defined inside a function: "
                             f"define it at a module's top level")
        target = f"{stage.__module__}:{stage.__qualname__}"
    global generation
    STAGES[kind] = REGISTERED[kind] = target
    generation += 1


def register_stages(registered: dict[str, str]) -> None:
    """Apply registrations shipped from the driver (:data:`REGISTERED`) in a worker process."""
    for kind, target in registered.items():
        if STAGES.get(kind) != target:
            register_stage(kind, target)


def unimportable_in_workers() -> list[str]:
    """The registered types whose class lives in an interactive ``__main__`` (a notebook, ``python -c``):
    a spawned worker process has no such module to import it from."""
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__file__", None):
        return []  # a script: spawned workers run its top level again (as __mp_main__)
    return sorted(kind for kind, target in REGISTERED.items() if target.partition(":")[0] == "__main__")


#: types that work but are not offered in "known: ..." lists (fault injection is for tests and drills)
_UNLISTED = frozenset({"fault_injection"})


def unknown_type_message(kind: str) -> str:
    """One line for a stage ``type`` that is not registered: the closest name, then the types a
    recipe can use (not the test-only ones)."""
    import difflib

    listed = sorted(k for k in STAGES if k not in _UNLISTED)
    close = difflib.get_close_matches(str(kind), listed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown stage type {kind!r}{hint}; known: {', '.join(listed)}"


def stage_class(kind: str) -> type[Stage]:
    try:
        target = STAGES[kind]
    except KeyError:
        raise ValueError(unknown_type_message(kind)) from None
    module_name, _, class_name = target.partition(":")
    try:
        cls = importlib.import_module(module_name)
        for part in class_name.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"stage type {kind!r} is registered as {target!r}, which this process cannot import "
                         f"({type(exc).__name__}: {exc}): define the class in a module on sys.path") from None
    return cls
