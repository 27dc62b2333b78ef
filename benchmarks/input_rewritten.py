"""A file of a finished run's input rewritten in place, then ``refinery run ... --force``: what it redoes and costs.

    python benchmarks/input_rewritten.py [--input DIR] [--config YAML] [--file NAME] [--how append|regzip]
                                         [--donor NAME] [--tree SRC ...] [--rounds N]

As a user does it (CLI subprocesses, docs/plan.md "An input file rewritten in place"): the recipe
(default ``configs/refinedweb.yaml``) runs on INPUT (default the bundled ``data/sample/warc``), then
the WARC NAME (default ``warc_sample-0000.warc.gz``) is rewritten in place: ``append`` adds a
response record (the first of the file ``--donor``'s, under a new record id: a re-download that
caught one page more), ``regzip`` recompresses each of its records at another level (the same
records, other bytes). The plain rerun is refused, and the rerun with ``--force`` is timed; then a
clean run over the rewritten input, whose corpus (``kept/`` ids and texts) and funnel
(``stats.json`` counts) the forced rerun must equal. Each ``--tree`` (a refinery source tree, e.g.
main's, taken with ``git archive``) is run the same way, interleaved with this one, so the code of
before and after are compared on the same busy machine. Reported per tree: the filter shards the
forced rerun ran, its CPU time (user + system of the command and its workers) and wall time, and
whether its outputs equal the clean run's.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import uuid
import zlib
from pathlib import Path

from input_grows import ROOT, _cli, forced_rounds


def _members(data: bytes) -> list[bytes]:
    """The gzip members of a ``.warc.gz`` (one record each, as WARC files are written), decompressed."""
    out = []
    while data:
        d = zlib.decompressobj(wbits=31)
        out.append(d.decompress(data) + d.flush())
        data = d.unused_data
    return out


def rewrite(path: Path, how: str, donor: Path) -> None:
    """Rewrite the WARC ``path`` in place: ``append`` one response record of ``donor`` to it, under a
    new ``WARC-Record-ID`` (the same length: no length changes); ``regzip`` each record at level 1."""
    records = _members(path.read_bytes())
    if how == "append":
        record = next(r for r in _members(donor.read_bytes()) if b"WARC-Type: response" in r.split(b"\r\n\r\n", 1)[0])
        head, body = record.split(b"\r\n\r\n", 1)
        old = head.split(b"WARC-Record-ID: <urn:uuid:", 1)[1][:36]
        records.append(head.replace(old, str(uuid.uuid4()).encode(), 1) + b"\r\n\r\n" + body)
    path.write_bytes(b"".join(gzip.compress(r, compresslevel=1 if how == "regzip" else 9, mtime=0) for r in records))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=ROOT / "data/sample/warc")
    ap.add_argument("--config", type=Path, default=ROOT / "configs/refinedweb.yaml")
    ap.add_argument("--file", default="warc_sample-0000.warc.gz")
    ap.add_argument("--how", choices=("append", "regzip"), default="append")
    ap.add_argument("--donor", default="warc_sample-0001.warc.gz", help="the file whose record --how append adds")
    ap.add_argument("--tree", type=Path, action="append", help="a refinery source tree to compare (repeatable)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    trees = [ROOT] + [t.resolve() for t in args.tree or []]
    donor = args.input / args.donor
    work = Path(tempfile.mkdtemp(prefix="input-rewritten-"))
    try:
        src, clean = work / "in", work / "clean"
        shutil.copytree(args.input, src)
        rewrite(src / args.file, args.how, donor)
        changed = (src / args.file).read_bytes()
        _cli(ROOT, "run", str(args.config), "-i", str(src), "-o", str(clean))  # over the rewritten input
        print(f"{args.file} rewritten ({args.how}): {(args.input / args.file).stat().st_size:,} -> {len(changed):,} bytes")
        forced_rounds(trees, args.rounds, args.config, src, clean, work,
                      lambda: shutil.copy(args.input / args.file, src / args.file),  # as first read
                      lambda: (src / args.file).write_bytes(changed), "changed since its shard")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
