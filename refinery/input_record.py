"""What a run read of its input, ``OUT/input_files.json``: read once a command, one rule for "changed".

A run records each input file's byte size and version by shard name (the modification time in ns
locally, the ETag on S3; :func:`refinery.plan.write_plan`, just before ``run.json``) and the
Parquet footer check's result (:mod:`refinery.input_footers`); a SageMaker launch writes the same
record under ``_jobs/<job>/``. A rerun asks it which finished shards' files changed since
(refused, or redone by ``--force``), which files the input gained or lost (the refusal names them,
``--force`` keeps the other finished shards), which footers need no new read; `refinery status`
whether the input changed. It was read and parsed in five places, each catching its own errors,
with the "changed" rule written twice (session 50, h211): :class:`InputRecord` reads it at most
once, on first use (the plan holds one), and :meth:`InputRecord.change` is the rule.

This module sits low: it imports only :mod:`refinery.io`.
"""

from __future__ import annotations

import json
import logging
from functools import cached_property
from typing import Any

from refinery.io import fs

log = logging.getLogger("refinery.plan")

#: the key recording which files' Parquet footers the up-front check passed (refinery.input_footers)
FOOTERS_KEY = "footers_checked"


class InputRecord:
    """The ``input_files.json`` at ``uri``, read on first use and never again. ``sizes`` and
    ``versions``: by shard name; ``footers``: the footer check's ``{"by", "bad"}``, or None.

    No record (a new run; a run killed before it wrote one; a paths manifest's, whose files are
    not listed) reads as empty, ``found`` False. A damaged one (empty, cut short, not a JSON object,
    a field of the wrong type) reads the same, with one warning naming the file (``warn``): nothing
    to compare with, as every reader took it before, and the run rewrites it. One that cannot be
    read (a 403, an outage after the retries) is raised, a :class:`fs.StorageError` naming the file:
    a failed read is no answer."""

    def __init__(self, uri: str, *, warn: bool = True) -> None:
        self.uri = uri
        self._warn = warn

    @cached_property
    def _content(self) -> tuple[dict[str, int], dict[str, str], dict[str, Any] | None, bool]:
        data = fs.read_bytes_if_any(self.uri)
        if data is None:
            return {}, {}, None, False
        try:
            return (*_parse(data), True)
        except ValueError as exc:
            if self._warn:
                log.warning("%s is damaged (%s): the input is not compared with what the run read (a file "
                            "rewritten since its shard finished goes unnoticed, --force after files were added "
                            "redoes every shard); this run rewrites it", self.uri, exc)
            return {}, {}, None, False

    @property
    def sizes(self) -> dict[str, int]:
        return self._content[0]

    @property
    def versions(self) -> dict[str, str]:
        """Empty for a run recorded before versions were (compared by size alone)."""
        return self._content[1]

    @property
    def footers(self) -> dict[str, Any] | None:
        return self._content[2]

    @property
    def found(self) -> bool:
        """Whether there is a sound record to compare with."""
        return self._content[3]

    def change(self, shard: str, size: int, version: str | None) -> str | None:
        """How the file of ``shard`` differs from the record, or None (as recorded, or not
        recorded at all: a new file): another size (``"4,905 -> 9,810 bytes"``), or the same size
        and another version (``"rewritten with the same size, 4,905 bytes"``), versions compared
        where both are known."""
        recorded = self.sizes.get(shard)
        if recorded is None:
            return None
        if recorded != size:
            return f"{recorded:,} -> {size:,} bytes"
        if version is not None and shard in self.versions and self.versions[shard] != version:
            return f"rewritten with the same size, {size:,} bytes"
        return None

    def unchanged(self, shard: str, size: int, version: str | None) -> bool:
        """Whether ``shard``'s file is recorded, with this size and version."""
        return shard in self.sizes and self.change(shard, size, version) is None


def _parse(data: bytes) -> tuple[dict[str, int], dict[str, str], dict[str, Any] | None]:
    """The record's sizes, versions and footer check; ValueError saying what is wrong with it."""
    if not data.strip():
        raise ValueError("empty")
    try:
        record = json.loads(data)
    except ValueError:
        raise ValueError("not valid JSON: cut short?") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    sizes, versions, footers = record.get("files"), record.get("versions") or {}, record.get(FOOTERS_KEY)
    if not isinstance(sizes, dict) or not all(type(v) is int for v in sizes.values()):
        raise ValueError("its 'files' are not byte sizes by shard")
    if not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
        raise ValueError("its 'versions' are not versions by shard")
    if footers is not None and not (isinstance(footers, dict) and isinstance(footers.get("by"), str)
                                    and isinstance(footers.get("bad"), list)
                                    and all(isinstance(s, str) for s in footers["bad"])):
        raise ValueError(f"its '{FOOTERS_KEY}' is not a footer check")
    return sizes, versions, footers


def record_of(sizes: dict[str, int], versions: dict[str, str] | None, footers: dict[str, Any] | None) -> dict[str, Any]:
    """The record :class:`InputRecord` reads: each file's size and version, and the footer check."""
    record: dict[str, Any] = {"files": sizes, "versions": versions}
    if footers is not None:
        record[FOOTERS_KEY] = footers
    return record
