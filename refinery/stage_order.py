"""Stage orders refused before a run, whatever it reads: a stage reading text before one makes it,
one judging the HTML after extraction dropped it. :mod:`refinery.plan` checks them when it plans,
and :mod:`refinery.input_footers` when a Parquet file holds pages without text; a module of their
own, so neither imports the other for them (the footer check imported the plan inside a function,
an import cycle; session 50, h211)."""

from __future__ import annotations

from refinery.config import ConfigError, PipelineConfig
from refinery.stages.registry import stage_class


def check_text_before_use(config: PipelineConfig, input_uri: str, what: str = "WARC input") -> None:
    """On WARC input a document has no text until a stage makes it (``extract``): a stage that
    reads text before that would remove every document as empty, so the order is refused."""
    for index, spec in enumerate(config.stages):
        cls = stage_class(spec.type)
        if cls.makes_text:
            return
        if cls.reads_text:
            # a rewriting stage (pii) removes nothing: it would change nothing, and the text
            # extraction makes later would pass through it untouched
            harm = ("it would remove every such document" if cls.removes else
                    "it would change nothing, and the text 'extract' makes later would not pass through it")
            raise ConfigError(
                f"{spec.where(index)}: reads text, but on {what} ({input_uri}) documents have "
                f"none until an 'extract' stage makes it, and none comes before it: {harm}; "
                f"move it after 'extract'")


def check_html_before_extract(config: PipelineConfig) -> None:
    """``extract`` drops the ``html`` column: a stage that judges the HTML after it sees none and
    passes every document without a word (found by adversarial testing: a ``prescreen`` placed
    after ``extract`` removed nothing), so the order is refused, on any input."""
    extractor = None
    for index, spec in enumerate(config.stages):
        cls = stage_class(spec.type)
        if extractor is not None and cls.reads_html:
            raise ConfigError(
                f"{spec.where(index)}: reads the page's HTML, but {extractor.stage_name!r} "
                f"({extractor.type}) comes before it and drops the HTML: it would judge no page; move it before "
                f"{extractor.stage_name!r}")
        if cls.makes_text and extractor is None:
            extractor = spec
