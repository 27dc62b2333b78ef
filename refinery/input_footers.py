"""Every Parquet input file's footer checked before a run starts, and what a rerun may skip.

`refinery run` read the first Parquet file's footer only: a later file without ``text``, with a
damaged footer, a column of a type no pass reads, or a reserved column beside its ``input_``
rename failed its own shard mid-run, and with the default ``executor.max_failed_fraction`` (0)
the run stopped after its first pass, the dedup and tokens passes not run (session 48 left it,
docs/reliability.md "Session 48 (h178)"). Now every footer is read up front through the path
``refinery dedup`` checks its shards with (:func:`refinery.io.parquet.footer_problems`: on S3 one
ranged GET each, 16 at a time), each checked as the reader checks it when it opens the file
(:func:`refinery.io.parquet.check_input_schema`). A bad file is one line, exit 2, nothing
written; when ``max_failed_fraction`` lets the run set failed shards aside, a warning naming them
(they fail their shards, as before).

A rerun reads no footer of a file the run checked before, unchanged since (its size and version
in ``input_files.json``, beside the code and stage order the check ran with): a resume of a
100,000-file crawl is not 100,000 GETs again. Nor does a SageMaker instance read a footer that
``refinery launch`` checked, unchanged since: the launch records its check the same way under
``_jobs/<job>/`` (every instance planned before any wrote the run's own record, and read every
footer: N instances x files GETs at the start).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import pyarrow as pa

from refinery import __version__
from refinery.config import ConfigError, PipelineConfig
from refinery.input_record import InputRecord
from refinery.io import fs, parquet
from refinery.stage_order import check_text_before_use

log = logging.getLogger("refinery.plan")


@dataclass
class FooterCheck:
    """What the up-front check read, for ``input_files.json``: the code and stage order it ran
    with (``by``) and the shards whose files it found bad (rechecked by every rerun)."""

    by: str
    bad: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"by": self.by, "bad": self.bad}


def check_key(config: PipelineConfig) -> str:
    """What decides the check's answer besides the file: the code, and the stages in order (a
    stage reading text before one makes it refuses files of html only)."""
    blob = json.dumps({"refinery": __version__, "stages": [s.type for s in config.stages]})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_parquet_inputs(config: PipelineConfig, files: list[str], names: list[str],
                         by_file: dict[str, tuple[int, str]] | None,
                         records: Sequence[InputRecord] = ()) -> FooterCheck:
    """Read the footer of every Parquet file among ``files`` (shard ``names``; ``by_file`` their
    listed sizes and versions) but those ``records`` say were checked, unchanged since (the run's
    own ``input_files.json``, from an earlier start, and a launch's); raise :class:`ConfigError` in
    one line naming the first bad file (and how many more) unless ``executor.max_failed_fraction``
    sets failed shards aside (then a warning)."""
    parquet_files = [(f, n) for f, n in zip(files, names) if f.lower().endswith(".parquet")]
    key = check_key(config)
    done: set[str] = set()
    for record in records if parquet_files else ():  # (no record read for an input of no Parquet file)
        done |= _checked_before(record, key, dict(parquet_files), by_file)
    # a 0-byte file is an empty shard (as a 0-byte WARC or JSONL file is): no footer to read
    todo = [(f, n) for f, n in parquet_files if n not in done and (by_file is None or by_file[f][0] > 0)]
    shard_of = dict(todo)

    def check(uri: str, schema: pa.Schema, _meta: Any) -> None:
        parquet.check_input_schema(uri, schema)
        if "html" in schema.names and "text" not in schema.names:
            try:
                check_text_before_use(config, uri, "Parquet pages without a text column (html only)")
            except ConfigError as exc:
                raise parquet.ShardReadError(str(exc)) from None

    bad: list[tuple[str, str]] = []
    try:
        bad = [(uri, why) for uri, why in parquet.footer_problems([f for f, _ in todo], check) if why]
    except Exception as exc:  # noqa: BLE001 - a network failure: each file is read again by its own task
        log.warning("could not check the input files' Parquet footers before the run (%s: %s): a bad file will "
                    "fail its own shard", type(exc).__name__, fs.plain_reason(exc))
        return FooterCheck(key, sorted(set(names)))  # nothing known: every file rechecked next time
    result = FooterCheck(key, sorted(shard_of[uri] for uri, _ in bad))
    if not bad:
        return result
    more = f" (and {len(bad) - 1} more bad input file(s): {', '.join(fs.basename(u) for u, _ in bad[1:4])}" \
           f"{' ...' if len(bad) > 4 else ''})" if len(bad) > 1 else ""
    if config.executor.max_failed_fraction > 0:
        log.warning("%d input file(s) cannot be read as documents and will fail their shards "
                    "(executor.max_failed_fraction %g sets them aside): %s%s", len(bad),
                    config.executor.max_failed_fraction, bad[0][1], more)
        return result
    raise ConfigError(f"{bad[0][1]}{more}; no shard was run (--max-failed-fraction runs the other files and "
                      "sets such files' shards aside)")


def _checked_before(record: InputRecord, key: str, files: dict[str, str],
                    by_file: dict[str, tuple[int, str]] | None) -> set[str]:
    """The shards (of ``files``: uri -> shard) whose files ``record`` says the check read with
    ``key`` and found good, their size and version unchanged since (none for a manifest's files,
    which are not listed, or without a sound record)."""
    checked = record.footers if by_file is not None else None
    if checked is None or checked["by"] != key:
        return set()
    bad = set(checked["bad"])
    return {name for uri, name in files.items() if name not in bad and record.unchanged(name, *by_file[uri])}
