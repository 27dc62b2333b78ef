"""A forced rerun over an input file rewritten in place, stopped before each of its writes in turn.

    PYTHONPATH=. python benchmarks/kill_each_write.py [--s3] [--added] [--only K ...]

A run of one cheap stage and an exact dedup pass over four Parquet files (``tests/test_input_grows.py``'s
real documents; on ``--s3``, a moto server on 127.0.0.1, three JSONL files, one rewritten with the same
size so only its ETag tells) finishes; then one file is rewritten in place (``--added``: and a file
added) and a clean run is made over the input so. The forced rerun's storage calls that change the
run directory (``fs.delete``, ``fs.delete_tree``, ``fs.atomic_output``, ``fs.write_bytes_if``) are
listed, and for each K a copy of the finished run is forced again and stopped (``KeyboardInterrupt``,
as Ctrl-C) right before its K-th call: nothing after it is written, as after SIGKILL or an S3 error
there. Checked for each K: the corpus (``kept/``) holds no mix of the old run's files and the new
ones, ``stats.json`` is gone or describes the corpus there, and the same command (or ``--force``
after a refusal, which must say the input changed) ends with every table and the funnel of the
clean run, and a further rerun skips every pass. Prints one line per K and the problems found.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from refinery.config import parse_config  # noqa: E402
from refinery.io import fs  # noqa: E402
from refinery.pipeline import run_pipeline  # noqa: E402
from refinery.plan import RerunError  # noqa: E402
from test_input_grows import _timeless, _write_input  # noqa: E402  (a record without its timings; the input)

SPEC = {"name": "kill", "stages": [{"type": "gopher_quality", "params": {"min_words": 20}}],
        "dedup": [{"method": "exact"}]}
CHANGING = ("delete", "delete_tree", "atomic_output", "write_bytes_if")


class Stopped(KeyboardInterrupt):
    """The stop injected before the K-th call."""


class Calls:
    """Count the run directory's changing storage calls; stop before the ``stop_at``-th (one made
    in a helper thread, the S3 claim's release, stops that thread alone, as an S3 error there)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.threaded: set[int] = set()
        self.stop_at: int | None = None
        for name in CHANGING:
            setattr(fs, name, self._wrap(name, getattr(fs, name)))

    def _wrap(self, name, real):  # noqa: ANN001, ANN202
        def call(uri, *args, **kw):  # noqa: ANN001, ANN202
            self.seen.append((name, str(uri)))
            if threading.current_thread() is not threading.main_thread():
                self.threaded.add(len(self.seen))
            if self.stop_at is not None and len(self.seen) == self.stop_at:
                raise Stopped(f"{name} {uri}")
            return real(uri, *args, **kw)
        return call


def _run(src: str, out: str, **kw):  # noqa: ANN202
    return run_pipeline(parse_config(SPEC), src, out, workers=1, progress=False, **kw)


def tables(out: str) -> dict[str, object]:
    """Every Parquet table of the run but its dedup index (without the ``source`` column), and its funnel."""
    found: dict[str, object] = {}
    for uri in fs.list_files_if_any(out, (".parquet",)):
        name = uri[len(out) + 1:]
        if "/index/" not in f"/{name}":
            table = pq.read_table(io.BytesIO(fs.read_bytes(uri)))
            found[name] = table.drop_columns([c for c in ("source",) if c in table.column_names]).to_pylist()
    stats = fs.read_json_if_any(fs.join(out, "stats.json"))
    if stats is not None:
        found["stats.json"] = _timeless(stats)
    return found


def _local_input(work: Path, added: bool) -> tuple[str, Callable[[], None]]:
    paths = _write_input(work / "in")

    def rewrite() -> None:  # its first 20 documents of 30 (another size)
        pq.write_table(pq.read_table(paths[1]).slice(0, 20), paths[1])
        if added:
            pq.write_table(pq.read_table(paths[2]).slice(0, 10), work / "in" / "part-9.parquet")
    return str(work / "in"), rewrite


def _s3_input(root: str, added: bool) -> tuple[str, Callable[[], None]]:
    src = f"{root}/in"
    lines = [json.dumps({"id": f"d{k}-{n}", "text": f"Document {n} of file {k} reads: " + "the library opens at "
                         f"nine on weekdays and at ten on weekends, for everyone in the town. " * (n + 4)}) + "\n"
             for k in range(3) for n in range(4)]
    lines[11] = lines[1].replace('"d0-1"', '"d2-3"')  # an exact copy across files: dedup reads every shard
    for k in range(3):
        fs.write_bytes(f"{src}/part-{k}.jsonl", "".join(lines[4 * k:4 * k + 4]).encode())

    def rewrite() -> None:  # the same size: only the ETag tells
        data = fs.read_bytes(f"{src}/part-1.jsonl")
        fs.write_bytes(f"{src}/part-1.jsonl", data.replace(b"nine on weekdays", b"NINE on weekdays", 1))
        if added:
            fs.write_bytes(f"{src}/part-9.jsonl", lines[5].replace('"d1-1"', '"d9-0"').encode())
    return src, rewrite


def _copy(a: str, b: str) -> None:
    if not fs.is_s3(a):
        shutil.copytree(a, b)
        return
    bucket, _, prefix = a[len("s3://"):].partition("/")
    client = fs.s3_client()
    for uri in fs.list_files(a):
        key = uri[len(f"s3://{bucket}/"):]
        client.copy_object(Bucket=bucket, Key=f"{b[len(f's3://{bucket}/'):]}{key[len(prefix):]}",
                           CopySource={"Bucket": bucket, "Key": key})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--s3", action="store_true", help="the run and its input on a moto S3 server")
    ap.add_argument("--added", action="store_true", help="a file added to the input too")
    ap.add_argument("--only", type=int, nargs="*", help="these K only")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kill-each-write-")))
        if args.s3:
            from _s3_fixtures import moto_s3

            _, root = stack.enter_context(moto_s3(bucket="kill-each-write"))
            src, rewrite = _s3_input(root, args.added)
        else:
            root = str(work)
            src, rewrite = _local_input(work, args.added)
        base = f"{root}/base"
        _run(src, base)
        old = tables(base)
        rewrite()
        _run(src, f"{root}/clean")
        want = tables(f"{root}/clean")
        calls = Calls()
        _copy(base, f"{root}/probe")
        calls.seen.clear()
        calls.threaded.clear()
        _run(src, f"{root}/probe", force=True)
        sequence = list(calls.seen)
        assert tables(f"{root}/probe") == want, "the forced rerun differs from the clean run"
        print(f"{len(sequence)} changing calls in the forced rerun ({'S3' if args.s3 else 'local'}"
              f"{', a file added' if args.added else ''})")
        problems = []
        for k in args.only or range(1, len(sequence) + 1):
            out = f"{root}/k{k}"
            _copy(base, out)
            calls.seen.clear()
            calls.threaded.clear()
            calls.stop_at = k
            try:
                _run(src, out, force=True)
                if k not in calls.threaded:
                    problems.append((k, "not stopped"))
            except Stopped:
                pass
            finally:
                calls.stop_at = None
            now = tables(out)
            kept = {n: v for n, v in now.items() if n.startswith("kept/")}
            if not ({n for n in kept if old.get(n) == kept[n]} == set(kept)
                    or {n for n in kept if want.get(n) == kept[n]} == set(kept)):
                problems.append((k, "kept/ mixes the old run's files and the new ones"))
            if "stats.json" in now and not any(now["stats.json"] == t.get("stats.json")
                                                and kept == {n: v for n, v in t.items() if n.startswith("kept/")}
                                                for t in (old, want)):
                problems.append((k, "stats.json is not the funnel of the corpus there"))
            how = "same command"
            try:
                _run(src, out)
            except RerunError as exc:
                how = "refused, --force"
                if "changed" not in str(exc):  # (the file, while its shard is finished; an added one too)
                    problems.append((k, f"refused for another reason: {exc}"))
                _run(src, out, force=True)
            ended = tables(out) == want
            again = set(_run(src, out).passes.values())
            op, uri = sequence[k - 1]
            where = " (in a helper thread)" if k in calls.threaded else ""
            print(f"{k:3d} before {op} {uri.replace(f'{root}/probe', 'OUT')}{where}: {how}, "
                  f"{'a clean run' if ended else 'DIFFERS'}, next rerun {'/'.join(sorted(again))}", flush=True)
            if not ended:
                problems.append((k, "the outputs differ from the clean run's"))
            if again != {"skipped"}:
                problems.append((k, f"the next rerun did not skip every pass: {again}"))
        print(f"problems: {len(problems)}")
        for p in problems:
            print("  ", p)


if __name__ == "__main__":
    main()
