"""An S3 store that stops answering in the middle of a run (after the endpoint probe): a SIGTERM
or Ctrl-C still stops the run at once, and a hung small read fails in bounded time (h144).

The store is the session's moto server behind tests/_s3_fixtures.py's proxy, which reads chosen
requests and never answers them (``s3_front(hang=...)``)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests._s3_fixtures import s3_front

TEXT = ("It is the time of year when the people of the town go to the market and buy what they need for the "
        "week ahead, and then they walk back home with their bags. ") * 4


def _small_run_input(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "in"
    src.mkdir()
    for shard in range(2):
        lines = [json.dumps({"id": f"{shard}-{i}", "text": TEXT}) for i in range(3)]
        (src / f"s{shard}.jsonl").write_text("\n".join(lines) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text("name: t\nstages:\n  - type: gopher_quality\n")
    return config, src


def _hung(seen: threading.Event, method: str, suffix: str):
    """Hang requests of ``method`` ("HEAD|GET": any of them) for a path ending in ``suffix``."""
    def hang(command: str, path: str) -> bool:
        if command in method.split("|") and path.split("?")[0].endswith(suffix):
            seen.set()
            return True
        return False
    return hang


def test_sigterm_while_the_driver_waits_on_a_hung_s3_call_stops_the_run_at_once(cli, s3_bucket, s3_server, tmp_path,
                                                                                monkeypatch):
    """The driver's pyarrow S3 calls (a marker's existence check here) held the main thread until
    they returned, and Python runs a signal handler only then: a SIGTERM (a SageMaker stop) or a
    Ctrl-C waited 60 s x 8 attempts against a store that stopped answering, the claim unreleased.
    Now the call waits in a helper thread: exit 143 at once, the claim released. And a claim's
    release against a store that answers nothing is given up after RELEASE_WAIT_S, not minutes."""
    from refinery.io import fs, runlock

    config, src = _small_run_input(tmp_path)
    out = f"{s3_bucket}/run"
    monkeypatch.setenv("REFINERY_S3_MAX_ATTEMPTS", "1")  # the abandoned call ends when the proxy lets it go
    seen = threading.Event()
    signalled: list[float] = []

    def stop_when_hung() -> None:
        if seen.wait(30):
            time.sleep(0.2)  # well inside the call
            signalled.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)

    with s3_front(s3_server, hang=_hung(seen, "HEAD|GET", "/run/passes/filter.json")) as front:
        monkeypatch.setenv("AWS_ENDPOINT_URL", front)
        threading.Thread(target=stop_when_hung, daemon=True).start()
        code, _, err = cli("run", config, "-i", src, "-o", out, "--workers", "1")
        stopped_s = time.monotonic() - signalled[0]
    assert code == 143, err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        "error: stopped by SIGTERM; run the same command again to resume"], err
    assert stopped_s < 2, stopped_s  # before: when the hung call gave up (60 s per attempt)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    assert json.loads(fs.read_bytes(f"{out}/.claim")).get("released")  # let go, not left to lapse
    # a store that answers nothing at all: the release is given up, the command not held for minutes
    claim = runlock.claim_output(f"{s3_bucket}/other", "dedup", {})
    monkeypatch.setattr(runlock, "RELEASE_WAIT_S", 0.3)
    with s3_front(s3_server, hang=lambda *_: True) as front:
        monkeypatch.setenv("AWS_ENDPOINT_URL", front)
        started = time.monotonic()
        runlock.release_claim(claim)
        assert time.monotonic() - started < 1.5


def test_a_hung_small_read_fails_in_bounded_time_naming_the_endpoint_and_the_object(cli, s3_bucket, s3_server,
                                                                                   monkeypatch):
    """A GET of run.json (a marker, a stats record, a claim) to a store that stopped answering
    waited 60 s per attempt (8 attempts: 8-9 minutes) before botocore's "Read timeout on endpoint
    URL". GETs and HEADs now wait REFINERY_S3_GET_TIMEOUT_S (15 s by default) per attempt, and the
    error says which endpoint stopped answering, for which object, and what to set. pyarrow's own
    requests (the driver's existence checks, a dedup pass's Parquet reads) waited 60 s an attempt:
    they now wait that timeout in curl's whole seconds (its low-speed limit: a moving transfer is
    never cut), and their error says the store sent nothing (h148)."""
    import pyarrow as pa

    from refinery.dedup.passes import _read_columns
    from refinery.io import fs, parquet

    fs.write_bytes(f"{s3_bucket}/run/run.json", b"{}")  # there to be read
    shard = f"{s3_bucket}/run/dedup/signatures/part-00000.parquet"
    parquet.write_table(pa.table({"x": list(range(10))}), shard)
    monkeypatch.setenv("REFINERY_S3_GET_TIMEOUT_S", "0.4")  # pyarrow's: 1 s (curl counts whole seconds)
    monkeypatch.setenv("REFINERY_S3_MAX_ATTEMPTS", "2")
    seen, marker_seen, shard_seen = threading.Event(), threading.Event(), threading.Event()
    hung = (_hung(seen, "GET", "/run/run.json"), _hung(marker_seen, "HEAD", "/run/passes/filter.json"),
            _hung(shard_seen, "GET", "/part-00000.parquet"))
    with s3_front(s3_server, hang=lambda *request: any(h(*request) for h in hung)) as front:
        monkeypatch.setenv("AWS_ENDPOINT_URL", front)
        started = time.monotonic()
        code, out, err = cli("status", f"{s3_bucket}/run")
        took = time.monotonic() - started
        monkeypatch.setenv("REFINERY_S3_MAX_ATTEMPTS", "1")
        started = time.monotonic()
        with pytest.raises(OSError) as lookup:
            fs.exists(f"{s3_bucket}/run/passes/filter.json")
        looked_s = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(fs.StorageError) as read:  # refinery's ranged GETs since h153 (no HEAD)
            _read_columns(shard, ["x"])
        read_s = time.monotonic() - started
    assert seen.is_set() and took < 3, (took, err)  # 2 x 0.4 s and the backoff between; before: 2 x 60 s
    assert marker_seen.is_set() and looked_s < 2, looked_s  # before: 60 s
    assert shard_seen.is_set() and read_s < 2, read_s
    assert str(read.value).startswith(f"cannot open {shard}: the S3 endpoint {front} sent nothing"), read.value
    said = fs.explain_s3_failure(str(lookup.value))
    assert said and said.startswith(f"the S3 endpoint {front} (AWS_ENDPOINT_URL) sent nothing for "
                                    f"{s3_bucket}/run/passes/filter.json (HeadObject)"), said
    assert "read timeout (1 s, REFINERY_S3_GET_TIMEOUT_S), 1 attempt(s)" in said, said
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for text in (f"{s3_bucket}/run/run.json", f"the S3 endpoint {front} sent nothing", "0.4 s for a GET or HEAD",
                 "REFINERY_S3_GET_TIMEOUT_S", "2 attempt(s)"):
        assert text in lines[0], (text, lines[0])

