"""Issue 18's "done when", small: the adversarial corpus of benchmarks/adversarial.py (every input
attack mixed with real pages and documents, ~300 documents) through the whole recipe
(configs/refinedweb.yaml, every pass), with the benchmark's own checks: every generated record /
line read once and accounted for in every pass (shard, id by id), the funnel reconciles, no
extraction over its time bound, verify-tokens accepts the token shards. The full run (>= 5,000
documents) is `python benchmarks/adversarial.py`; figures in docs/reliability.md."""

from __future__ import annotations

import gzip
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "benchmarks"))  # last: benchmarks/classifiers.py must not shadow the package

import adversarial  # noqa: E402

pytestmark = pytest.mark.skipif(not adversarial.EVAL_TARBALL.exists(), reason="needs ../shared/data (real pages)")


@pytest.mark.slow
def test_small_adversarial_corpus_through_the_whole_recipe(tmp_path):
    # one worker: the tasks run in this process (the pool's own path is tested elsewhere), and the
    # suite's other test process keeps the second core (with two, this test took ~67 s in CI)
    # the URL blocklist's arrays are built once per test session (~6 s), by whichever test needs
    # them first: not inside this run's stage timings, which bound the stages without a deadline
    from refinery.stages.url_filter import UrlFilter

    UrlFilter()._resources()
    # a 2 s extraction deadline, not the recipe's 5 s: the pages that run into it (the tag and
    # attribute bombs, on a loaded machine) each waited the whole 5 s out, ~10 s of this test;
    # the checks bound every extraction by the deadline the run had
    ok, report = adversarial.run(300, 1, tmp_path, seed=0, quiet=True, extract_timeout_s=2.0)
    assert {g["extract"]["timeout_s"] for g in report["runs"].values()} == {2.0}
    failed = [(name, detail) for name, good, detail in report["checks"] if not good]
    assert ok and not failed, failed
    assert report["docs_generated"] >= 300 and set(report["runs"]) == set(adversarial.GROUPS)
    # every document pass of the run is accounted id by id, the repeated-line pass included (it was
    # left out of the checked chain once, and removals there broke the url_dedup check at 5,000 docs)
    assert all(set(adversarial.DOC_PASSES) <= set(g["passes"]) for g in report["runs"].values())
    reasons = {reason for g in report["runs"].values() for (_, reason) in g["reasons"]}
    # the attacks are removed with their own reasons, not lost
    # (the hidden attribute bomb ends as extraction_timeout on a slow machine and is parsed in
    # time on a fast one: its deadline is tested deterministically in tests/test_extract.py)
    assert {"corrupt_stream", "truncated_record", "body_too_large", "html_too_large", "empty_body",
            "html_too_many_attributes", "html_too_many_tags", "bad_json",
            "invalid_unicode", "invalid_utf8", "bad_id", "bad_text"} <= reasons, reasons


def test_generator_is_deterministic(tmp_path):
    a = adversarial.generate(tmp_path / "a", 120, seed=3)
    b = adversarial.generate(tmp_path / "b", 120, seed=3)
    def content(p):  # not gzip header times (the damaged members are recompressed)
        try:
            return gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        except (OSError, EOFError, zlib.error):  # damaged on purpose: compared as bytes
            return p.read_bytes()

    def files(c):
        return {p.relative_to(c.root): content(p) for p in sorted(c.root.rglob("*")) if p.is_file() and not p.is_symlink()}

    assert files(a) == files(b) and a.entries == b.entries and a.documents >= 120
