"""Stage registry: config ``type`` name -> stage class, imported lazily so a pipeline only pays
for the stages it uses (fastText, trafilatura and the URL blocklist are heavy)."""

from __future__ import annotations

import importlib

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


def stage_class(kind: str) -> type[Stage]:
    try:
        target = STAGES[kind]
    except KeyError:
        raise ValueError(f"unknown stage type {kind!r}; known: {', '.join(sorted(STAGES))}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
