"""Shared test fixtures: real sample data paths and a real S3-compatible server on 127.0.0.1.

Suite time, session 47 (h171): a ``refinery`` command that needs no process of its own (no signal,
closed pipe, environment hook or the README's own command line) runs through the ``cli`` fixture
below, the real entry point in this process: each ``python -m refinery`` subprocess paid ~1 s of
imports (several under load). Whole suite at load 6-20: 2,813 s of test time, 24:53 wall on 2
workers; xdist's file-by-file hand-out (simulated from ``--durations=0``) left the two workers
within ~7 s of each other, so the time is in the tests, not in the order. Measured old/new at
the same moment (load ~3): test_stats' 5 touched tests 35 -> 24 s, test_config 4.5 -> 2.0 s, the
closed-pipe tests 6.7 -> 4.5 s, test_pipeline's stats CLI test ~1 s -> 0.05 s, the adversarial
generator test 6.0 -> 3.4 s (its evaluation pages read once a process). In all ~20 s of worker time at
load ~3 (~8-10 s of CI wall), short of the 60 s asked. The rest sits in few big tests (seconds under
that load of 6-20): test_plan's Ctrl-C and kill tests on whole recipe runs (~285), Ray clusters
started by test_ray_executor / test_ray_bootstrap / test_faults (~300), the classifier fine-tune
(45, once a session), the 300-document adversarial run (63), test_tokenize's S3 and CLI runs (94).

Suite time, session 50 (h215; docs/reliability.md): the URL blocklist's arrays and the dedup fold
table, built once a session by whichever test needs them, 22 -> 10 s and 16 -> 3 s at load ~7 (numpy
2's np.unique replaced by a sort; unassigned codepoints skipped); inputs cut to what the assertions
need (test_tokenize's texts to 1,500 characters, test_batch_size's padding test, test_stats'
English-model note, four test_plan tests, a Ray whole-recipe test); make_run inline, not in a pool
of two; the adversarial run's verify-tokens in process; HEAVY_FILES rebuilt from this session's
durations. The touched files, `-n 0`, old then new twice at load 2-6: 376 / 408 -> 268 / 281 s.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

#: One cache (URL blocklist arrays, the dedup fold table) per test session, built by whichever test
#: needs it first, worker processes and CLI subprocesses included (they inherit the variable):
#: built once instead of once per place, and never in the developer's ~/.cache.
#: (Only named here: the code creates it on first use, so a process that merely imports this file,
#: a worker unpickling a fixture's function, leaves nothing behind.)
_SESSION_CACHE = os.path.join(tempfile.gettempdir(), f"refinery-test-cache-{os.getpid()}-{os.urandom(4).hex()}")
os.environ.setdefault("REFINERY_CACHE", _SESSION_CACHE)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SAMPLE_WARCS = SAMPLE / "warc"
SAMPLE_CC_DOCS = SAMPLE / "cc_docs"
SHARED_DATA = ROOT.parent / "shared" / "data"


#: The helper modules hold asserts too: rewritten for pytest's messages wherever they are imported
#: first (registered here, before any test module or plugin imports one).
pytest.register_assert_rewrite(*(f"tests.{p.stem}" for p in Path(__file__).parent.glob("_*.py")))

#: After every test, every run directory it left under tmp_path is checked: kept + removed = read
#: for every stage and shard, Parquet row counts match the stats, run totals reconcile.
pytest_plugins = ["tests._invariants"]


def pytest_configure(config):
    config.addinivalue_line("markers", "no_invariants: the test writes deliberately broken stats")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per usable core, at most 4: each worker may start a Ray cluster, a
    moto server and process pools of its own, and most files take seconds."""
    from refinery.executors.base import default_workers  # usable cores (affinity where the OS has it)

    return min(4, default_workers())


#: The files whose tests take longest, run first: xdist hands out whole files (``--dist loadfile``)
#: in collection order (``--no-loadscope-reorder``; its default order, most tests first, leaves
#: these few-test heavy files for last, and the suite waited on one of them with the other worker
#: idle). The ones that start Ray clusters (R; R1: in one test) alternate with the others: two
#: clusters at once on 2 cores made each of their tests ~1.4x slower. The rest follow in file-name
#: order, so the suite's last files are small: test_worker_logging and test_worker_signals (~30 and
#: ~20 s) were the last two (a simulated hand-out of session 50's durations: the workers ended 8-20 s
#: apart, with this list 4 s). Seconds: session 50's whole suite on 2 workers at load ~5.
HEAVY_FILES = ["test_plan.py",  # ~235
               "test_ray_executor.py",  # ~190, R
               "test_loader.py",  # ~85
               "test_runlock.py",  # ~140, R1 (S3 claims, fence, SIGTERM)
               "test_classifiers.py",  # ~80 (trains the session's tiny toxicity model)
               "test_launch_recipe.py",  # ~35, R
               "test_stats.py",  # ~75
               "test_ray_bootstrap.py",  # ~55, R (two "hosts")
               "test_tokenize.py",  # ~75
               "test_faults.py",  # ~70, R1
               "test_extract.py",  # ~65
               "test_dedup_distributed.py",  # ~35, R
               "test_cli_errors.py",  # ~55
               "test_worker_logging.py",  # ~30, R1
               "test_dedup_pipeline.py",  # ~50
               "test_adversarial_corpus.py",  # ~30
               "test_line_dedup.py",  # ~30
               "test_worker_signals.py"]  # ~20


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(HEAVY_FILES)))  # stable: order within a file kept


def pytest_unconfigure(config):
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server():
    """A real moto S3 server on 127.0.0.1 (random port), with fake credentials in the environment.

    Both pyarrow (``endpoint_override``) and boto3 (``AWS_ENDPOINT_URL``) talk to it over HTTP,
    through the same code paths that talk to AWS.
    """
    from tests._s3_fixtures import moto_s3

    with moto_s3(bucket=None, access_key="AKIAREFINERYTESTKEY01",
                 secret_key="refinery-test-secret-do-not-log-0123456789") as (endpoint, _):
        yield endpoint


@pytest.fixture()
def s3_bucket(s3_server, request):
    """A fresh bucket per test; returns ``s3://<bucket>``."""
    import re
    import uuid

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture()
def registry_restored():
    """The stage registry as it was before the test (a test that registers its own stage types)."""
    from refinery.stages import registry

    stages, registered = dict(registry.STAGES), dict(registry.REGISTERED)
    yield
    registry.STAGES.clear(), registry.STAGES.update(stages)
    registry.REGISTERED.clear(), registry.REGISTERED.update(registered)


@pytest.fixture(autouse=True)
def _sigint_as_in_a_terminal():
    """Every test runs with SIGINT as a terminal's foreground job has it (Python's handler, which
    raises KeyboardInterrupt; not blocked), put back as it was after the test.

    Why: a pytest started as a background job of a non-interactive shell (``pytest &`` in a script
    or a CI step, ``bash -c '... &'``) inherits SIGINT ignored, and Python keeps it ignored. The
    kernel then dropped the Ctrl-C that a test sends to its own process, or that a subprocess it
    starts sends to itself. Such tests failed (test_ray_executor's Ctrl-C test: "DID NOT RAISE
    KeyboardInterrupt" after its 30 s wait, in a CI run where that file came first on its xdist
    worker), or passed only because a test that ran earlier on the same worker had reset SIGINT
    in its clean-up. So which tests failed depended on how xdist handed out the files (session 51, h220)."""
    import signal

    sigterm = signal.getsignal(signal.SIGTERM)
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    yield
    # SIGTERM's too: a test of the command line's handlers left it on refinery.interrupts' for the
    # rest of its worker (a None handler was set outside Python: Python's own is put instead)
    signal.signal(signal.SIGINT, signal.default_int_handler if sigint is None else sigint)
    signal.signal(signal.SIGTERM, signal.SIG_DFL if sigterm is None else sigterm)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


@pytest.fixture()
def keep_root_logging():
    """Restore the root logger's handlers and level after a test whose code configures logging
    (a CLI command, the container entrypoint) onto handlers that are gone afterwards."""
    import logging

    root = logging.getLogger()
    saved = list(root.handlers), root.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.fixture()
def offline_aws(monkeypatch):
    """Fake credentials, no endpoint override: clients aim at AWS, which mock_aws/Stubber intercept."""
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREFINERYTESTKEY03")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "refinery-test-secret-offline")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture()
def cli(capsys, keep_root_logging):
    """Run ``refinery ARGS`` in this process through the real entry point: (exit code, stdout, stderr)."""
    from refinery.cli import main

    def leave(code: int) -> None:
        raise SystemExit(code)

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        # an interrupted command leaves by os._exit once Ray is imported (refinery.cli: Ray's
        # threads crashed the teardown), which ended the pytest worker that had run a Ray test
        # before (a fresh-clone CI run: "node down", then the suite hung)
        with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exit_info:
            patch.setattr(os, "_exit", leave)
            main([str(a) for a in args])
        captured = capsys.readouterr()
        code = exit_info.value.code
        return (0 if code is None else code), captured.out, captured.err

    return run
