"""A run's record of what it read of its input, ``input_files.json`` (refinery.input_record).

Session 49's review found it read and parsed in five places, each catching its own errors, with
the "changed" rule written twice: a rerun read it up to three times, and a record of the wrong
shape (a hand edit, a bad sync) ended `refinery run` and `refinery status` with a traceback. Now
it is read once a command (the plan holds it), and a damaged record is one warning naming it: as
every reader took it before, nothing to compare with, and the run rewrites it; a grown input's
``--force`` then redoes every shard (it cannot tell that the finished ones' files are unchanged).
"""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _fault_fixtures import FaultPolicy, through_proxy  # noqa: F401 - fixture

from refinery.config import parse_config
from refinery.io import fs
from refinery.pipeline import run_pipeline
from refinery.plan import RerunError
from refinery.status import run_status

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"name": "record", "stages": [{"type": "gopher_quality", "params": {"min_words": 5}}]}
TEXT = "The committee met on Tuesday to review the annual budget and the plans for the new library. "


def _table(n: int) -> pa.Table:
    return pa.table({"id": [f"d{n}-{k}" for k in range(3)], "text": [TEXT * (k + 1) for k in range(3)]})


def _write(uri: str, n: int) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(_table(n), sink)
    fs.write_bytes(uri, sink.getvalue().to_pybytes())


def _run(src: str, out: str, spec: dict | None = None, **kw):
    return run_pipeline(parse_config(spec or SPEC), src, out, workers=1, progress=False, **kw)


def _outcomes(summary) -> dict[str, str]:
    return {o.name: o.status for o in summary.outcomes}


def test_a_rerun_reads_the_record_once_and_keeping_shards_rewrites_no_marker(s3_bucket, through_proxy):
    """Counted on moto: a grown input's ``--force`` read input_files.json three times (the footer
    check, the finished inputs' check, the refusal's file names) and rewrote every kept shard's
    marker under the new fingerprint (a GET and a PUT each, then the pass's own GET); a plain
    resume read the record twice."""
    src, out = f"{s3_bucket}/record/in", f"{s3_bucket}/record/run"
    for n in range(3):
        _write(f"{src}/part-{n}.parquet", n)
    _run(src, out)
    _write(f"{src}/part-3.parquet", 3)
    requests: list[tuple[str, str]] = []
    through_proxy(FaultPolicy(when=lambda method, path: requests.append((method, unquote(path)))
                              or False))

    def on(suffix: str) -> list[str]:
        return [m for m, p in requests if urlsplit(p).path.endswith(suffix)]

    summary = _run(src, out, force=True)
    assert _outcomes(summary) == {"part-0": "skipped", "part-1": "skipped", "part-2": "skipped", "part-3": "done"}
    assert on("/run/input_files.json") == ["GET", "PUT"]  # read once, then written as the new plan's
    for n in range(3):  # a kept shard's marker: the pass's finished check alone reads it, nobody writes it
        assert on(f"/run/stats/part-{n}.json") == ["GET"], (n, on(f"/run/stats/part-{n}.json"))
    assert on("/run/stats/part-3.json") == ["PUT"]
    # before the plan is written: the pass's stats/ listed once, by the finished inputs' check, and
    # kept/, removed/, samples/ once, by the damage check of the shards kept (h202 listed stats/ again)
    planned = next(i for i, (m, p) in enumerate(requests) if m == "PUT" and urlsplit(p).path.endswith("/run/run.json"))
    listed = [parse_qs(urlsplit(p).query)["prefix"][0] for _, p in requests[:planned] if "list-type=" in p]
    assert [d.removeprefix("record/run/") for d in listed if d.startswith("record/run/")] == [
        ".claim.share-", "stats/", "kept/", "removed/", "samples/"]
    requests.clear()
    assert _run(src, out).passes == {"filter": "skipped"}  # a plain resume
    assert on("/run/input_files.json") == ["GET", "PUT"]

    # files of finished shards removed: status without the markers read, and the refusal, list the
    # pass's stats/ once and read each removed shard's marker (its file's name) once (they listed
    # it twice: status's listing was not handed on, nor the refusal's; a review, h226)
    for n in (0, 1):
        fs.delete(f"{src}/part-{n}.parquet")
    requests.clear()
    changes = run_status(out, counts=False, check_input=True).input_changes
    assert changes and changes["removed"] == ["part-0.parquet", "part-1.parquet"]
    listed = [parse_qs(urlsplit(p).query)["prefix"][0] for _, p in requests if "list-type=" in p]
    assert listed.count("record/run/stats/") == 1, listed
    assert on("/run/stats/part-0.json") == on("/run/stats/part-1.json") == ["GET"]
    requests.clear()
    with pytest.raises(RerunError, match="removed part-0.parquet, part-1.parquet"):
        _run(src, out)
    listed = [parse_qs(urlsplit(p).query)["prefix"][0] for _, p in requests if "list-type=" in p]
    assert listed.count("record/run/stats/") == 1, listed
    assert on("/run/stats/part-0.json") == on("/run/stats/part-1.json") == ["GET"]


@pytest.mark.parametrize("damage", [b"", b'{"files": {"part-0": 1', b"[]", b'{"files": {"part-0": "1,234"}}',
                                    "versions"])
def test_a_damaged_record_is_one_warning_and_the_run_rewrites_it(tmp_path, damage, caplog, cli):
    src, out = tmp_path / "in", tmp_path / "run"
    for n in range(2):
        _write(str(src / f"part-{n}.parquet"), n)
    _run(str(src), str(out))
    record = out / "input_files.json"
    good = json.loads(record.read_text())
    record.write_bytes(json.dumps(good | {"versions": 5}).encode() if damage == "versions" else damage)
    code, stdout, _ = cli("status", out)  # an input changed cannot be told: nothing said, no traceback
    assert code == 0 and "input changed" not in stdout
    assert run_status(str(out), check_input=True).input_changes is None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="refinery.plan"):
        assert _run(str(src), str(out)).passes == {"filter": "skipped"}
    warned = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"{record} is damaged (") and "this run rewrites it" in warned[0]
    assert json.loads(record.read_text()) == good  # rewritten: the next rerun compares again


def test_a_grown_input_with_no_sound_record_redoes_every_shard(tmp_path, caplog):
    """Keeping the finished shards needs the record to show their files unchanged."""
    src, out = tmp_path / "in", tmp_path / "run"
    for n in range(2):
        _write(str(src / f"part-{n}.parquet"), n)
    _run(str(src), str(out))
    _write(str(src / "part-2.parquet"), 2)
    (out / "input_files.json").write_text('{"files": ')
    with pytest.raises(RerunError, match=r"input files changed since the run was made; rerun with --force to redo "
                                         r"'filter' and the passes after it"):
        _run(str(src), str(out))  # (not "run 'filter' on the new files only")
    summary = _run(str(src), str(out), force=True)
    assert set(_outcomes(summary).values()) == {"done"}
    # with a sound record: the finished shards are kept
    _write(str(src / "part-3.parquet"), 3)
    summary = _run(str(src), str(out), force=True)
    assert _outcomes(summary) == {"part-0": "skipped", "part-1": "skipped", "part-2": "skipped", "part-3": "done"}


def test_a_record_that_cannot_be_read_is_one_line_naming_it(tmp_path, cli):
    src, out = tmp_path / "in", tmp_path / "run"
    _write(str(src / "part-0.parquet"), 0)
    _run(str(src), str(out))
    (out / "input_files.json").unlink()
    (out / "input_files.json").mkdir()  # a failed read is no answer: not "no record"
    code, _, stderr = cli("run", _config_file(tmp_path), "-i", src, "-o", out)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and str(out / "input_files.json") in lines[0], stderr


def _config_file(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "record.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def test_the_footer_check_imports_no_plan(tmp_path):
    """refinery.input_footers imported refinery.plan inside a function for its stage-order check
    of a Parquet file of pages without text (an import cycle); both take it from refinery.stage_order."""
    pq.write_table(pa.table({"id": ["h"], "html": [b"<p>page</p>"]}), tmp_path / "e.parquet")
    from refinery.input_footers import check_parquet_inputs

    old_signature = "output_uri" in inspect.signature(check_parquet_inputs).parameters  # (to see it fail before)
    code = (f"import sys\nfrom refinery.config import ConfigError, parse_config\n"
            f"from refinery.input_footers import check_parquet_inputs\n"
            f"try:\n    check_parquet_inputs(parse_config({SPEC!r}), [{str(tmp_path / 'e.parquet')!r}], ['e'], None"
            f"{', ' + repr(str(tmp_path / 'out')) if old_signature else ''})\n"
            f"except ConfigError as exc:\n    print(str(exc).split(':')[0])\n"
            f"print(sorted(m for m in sys.modules if m in ('refinery.plan', 'refinery.pipeline')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.splitlines() == ["stages[0] gopher_quality", "[]"], done.stdout + done.stderr
