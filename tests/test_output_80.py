"""Issue 15 (output): tables that fit 80 columns without cutting numbers or breaking names, log
lines that never run through the progress bar, and a within-shard progress line with an ETA."""

from __future__ import annotations

import io
import logging
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from refinery.stats.compare import render_compare
from refinery.stats.funnel import render_funnel

STAGES = [("warc_reader", {"not_html": 12_345_678, "truncated_record": 3}),
          ("url_filter", {"url_blocklisted_domain": 123_456_789, "url_banned_word": 45}),
          ("language_id", {"language_not_kept": 1_234_567_890, "low_language_score": 987_654_321}),
          ("gopher_repetition", {"dup_10_gram_char_frac": 222_333_444}),
          ("gopher_quality", {"too_few_words": 111_222_333}),
          ("minhash_dedup", {"near_duplicate": 555_666_777}),
          ("line_corrections", {})]


def summary(scale: int = 1, stages=STAGES) -> dict:
    n = first = 3_456_789_012 * scale
    out = []
    for name, removed in stages:
        removed = {k: v * scale for k, v in removed.items()}
        r = sum(removed.values())
        out.append({"stage": name, "kind": name, "docs_in": n, "docs_out": n - r, "docs_removed": r, "removed": removed,
                    "removed_words": {k: v * 412 for k, v in removed.items()},
                    "removed_chars": {k: v * 2000 for k, v in removed.items()}})
        n -= r
    return {"stages": out, "docs_read": first, "docs_kept": n, "docs_removed": first - n}


def render(renderable, width: int) -> tuple[str, object]:
    console = Console(width=width, file=io.StringIO(), markup=False, highlight=False, color_system=None)
    table = renderable.table_for(console, width)
    console.print(renderable)
    return console.file.getvalue(), table


def cells(table) -> list[str]:
    return [str(c) for col in table.columns for c in col._cells if str(c).strip()]


def assert_whole(text: str, table, width: int, names: list[str]) -> None:
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    tokens = set(re.findall(r"\S+", text))
    for name in names:  # every stage and reason name unbroken
        assert name in tokens, name
    for value in cells(table):  # every number (and name) the table holds is printed whole
        assert value.strip() in text, value


@pytest.mark.parametrize("width", [80, 120])
def test_funnel_fits_without_cutting_numbers_or_names(width):
    s = summary()
    text, table = render(render_funnel(s, title="funnel: s3://bucket/runs/cc-main-2024-10"), width)
    names = [st for st, _ in STAGES] + [r for _, rs in STAGES for r in rs]
    assert_whole(text, table, width, names)
    for st in s["stages"]:  # the removed counts and the kept share always show
        assert f"{st['docs_removed']:,}" in text and f"{100 * st['docs_out'] / s['docs_read']:.1f}%" in text
        for n in st["removed"].values():
            assert f"{n:,}" in text
    if width == 80:
        assert "hidden at this width: docs in, words removed" in text  # says what it left out
        assert f"{s['stages'][2]['docs_out']:,}" in text
    else:
        assert "hidden" not in text and f"{s['stages'][0]['docs_in']:,}" in text


@pytest.mark.parametrize("width", [80, 120])
def test_compare_fits_without_cutting_numbers_or_names(width):
    a, b = summary(), summary(2)
    text, table = render(render_compare(a, b, "runs/a", "runs/b"), width)
    names = [st for st, _ in STAGES] + [r for _, rs in STAGES for r in rs]
    assert_whole(text, table, width, names)
    for sa, sb in zip(a["stages"], b["stages"]):
        assert f"{sb['docs_removed']:,}" in text
        delta = sb["docs_removed"] - sa["docs_removed"]
        assert (f"+{delta:,}" if delta else "0") in text
    if width == 80:
        assert "hidden at this width" in text  # says what it left out
    else:  # wider: both sides' counts
        assert all(f"{sa['docs_removed']:,}" in text for sa in a["stages"])


def test_an_absurdly_long_stage_name_folds_but_numbers_stay_whole():
    long = [("a_stage_name_longer_than_any_terminal_would_show_next_to_numbers_" * 2, {"x": 1_234_567_890})]
    text, _ = render(render_funnel(summary(stages=long)), 80)
    assert "…" not in text and "1,234,567,890" in text


# -- log lines and the bar ------------------------------------------------------------------------
def test_log_records_go_through_tqdm_write_while_a_bar_is_shown(monkeypatch):
    from tqdm import tqdm

    from refinery.cli_common import RedactCredentials
    from refinery.executors import progress

    stream = io.StringIO()
    logger = logging.getLogger("test-bar-logging")
    logger.propagate = False
    plain = logging.StreamHandler(stream)
    plain.setFormatter(logging.Formatter("LOG %(message)s"))
    plain.addFilter(RedactCredentials())
    logger.addHandler(plain)
    logger.setLevel(logging.INFO)
    written = []
    monkeypatch.setattr(tqdm, "write", classmethod(lambda cls, s, file=None, **kw: written.append((s, file))))
    try:
        with progress.bar_logging(stream, logger) as swap:
            assert [type(h) for h in logger.handlers] == [progress.TqdmLogHandler]
            logger.info("shard x done, key AKIAABCDEFGHIJKLMNOP")
            assert swap.swapped
        assert written == [("LOG shard x done, key AKIA***", stream)]  # formatted, redacted, via tqdm.write
        assert logger.handlers == [plain] and stream.getvalue() == ""
        logger.info("after")
        assert stream.getvalue() == "LOG after\n"
    finally:
        logger.removeHandler(plain)


def test_tqdm_log_handler_clears_and_redraws_the_bar():
    from tqdm import tqdm

    from refinery.executors.progress import TqdmLogHandler

    stream = io.StringIO()
    bar = tqdm(total=10, file=stream, desc="pass-x", ascii=True)
    bar.update(3)
    handler = TqdmLogHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, "a log line", None, None))
    bar.close()
    out = stream.getvalue()
    # the line stands alone: the bar is cleared before it and redrawn after it
    line_at = out.index("a log line")
    assert out.count("a log line\n") == 1 and out[line_at - 1] in "\r\n"
    assert "pass-x" in out[line_at:]  # redrawn after the log line
    assert not re.search(r"\| *a log line", out)  # never glued to the bar


def test_task_progress_swaps_handlers_only_on_a_terminal(monkeypatch):
    from refinery.executors import progress

    fake = io.StringIO()
    fake.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr(progress.sys, "stderr", fake)
    root = logging.getLogger()
    plain = logging.StreamHandler(fake)
    root.addHandler(plain)
    try:
        p = progress.TaskProgress(2, "pass-a", log_every_s=1e9)
        assert plain not in root.handlers and any(isinstance(h, progress.TqdmLogHandler) for h in root.handlers)
        p.close()
        assert plain in root.handlers and not any(isinstance(h, progress.TqdmLogHandler) for h in root.handlers)
        fake.isatty = lambda: False  # type: ignore[method-assign]
        p = progress.TaskProgress(2, "pass-a")
        assert plain in root.handlers  # no bar, nothing swapped
        p.close()
    finally:
        root.removeHandler(plain)
    # h170: a pseudo-terminal reporting 0 x 0 (`script` without a terminal, some `docker exec -t`):
    # tqdm drew no bar (0 rows: "no room"); now one of DEFAULT_TERMINAL's size
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios

    master, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
    with open(child, "w") as terminal:
        monkeypatch.setattr(progress.sys, "stderr", terminal)
        p = progress.TaskProgress(2, "pass-0x0", log_every_s=1e9)
        p.bar.refresh()
        drawn = os.read(master, 4096).decode() if select.select([master], [], [], 1)[0] else ""
        p.close()
    os.close(master)
    frames = [f for f in drawn.split("\r") if f.strip()]
    assert frames and all(f.startswith("pass-0x0:   0%|") and "| 0/2 [" in f for f in frames), drawn
    assert all(len(f) == progress.DEFAULT_TERMINAL[0] - 1 for f in frames), drawn


# -- within-shard progress ------------------------------------------------------------------------
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.mark.parametrize("kind", ["warc", "cc_docs"])
def test_within_shard_progress_names_pass_and_shard_with_an_eta(tmp_path, caplog, monkeypatch, kind):
    from refinery.runner import PassDir, ReaderOptions, ShardRunner, ShardTask

    src = sorted(p for p in (SAMPLE / kind).iterdir() if p.is_file())[0]
    shutil.copy(src, tmp_path / src.name)
    task = ShardTask(str(tmp_path / src.name), PassDir(str(tmp_path / "out" / "pass-one")), "shard-7")
    monkeypatch.setenv("REFINERY_SHARD_LOG_EVERY_S", "soon")
    with pytest.raises(ValueError, match=r"^REFINERY_SHARD_LOG_EVERY_S='soon': give a number of seconds"):
        ShardRunner([])
    monkeypatch.setenv("REFINERY_SHARD_LOG_EVERY_S", "0")  # the interval a worker reads: a line after every batch
    runner = ShardRunner([], ReaderOptions(batch_size=20))
    with caplog.at_level(logging.INFO, logger="refinery.runner"):
        runner.run(task)
    lines = [r.getMessage() for r in caplog.records if "docs read" in r.getMessage()]
    assert lines, caplog.text
    assert all(ln.startswith("[pass-one] shard shard-7: ") and "docs/s" in ln for ln in lines)
    with_eta = [ln for ln in lines if "ETA" in ln]
    assert with_eta, lines
    shares = [int(re.search(r"(\d+)% of the input", ln).group(1)) for ln in with_eta]
    assert shares == sorted(shares) and shares[-1] <= 100


# -- plan: a target that cannot be met -------------------------------------------------------------
def test_plan_says_when_the_target_cannot_be_met_and_what_would_meet_it(tmp_path):
    import json

    import yaml
    from typer.testing import CliRunner

    from refinery.cli import app
    from refinery.launch import plan

    ok = plan.estimate(100, 500, 32_000)
    assert ok.meets_target and plan.target_verdict(ok) is None
    capped = plan.estimate(100, 5, 32_000, instances=100)  # 100 TB at 5 docs/s per core: 40 h on 100 instances
    assert capped.instances == 100 and capped.wall_h > 24 and not capped.meets_target
    # left to choose, the planner proposes parallel jobs of at most 100 instances that meet the target
    auto = plan.estimate(100, 5, 32_000)
    assert auto.meets_target and auto.jobs == 2 and auto.instances_per_job <= 100 and auto.instances == capped.instances_needed
    line = plan.target_verdict(capped)
    assert line.startswith(f"target not met: {capped.wall_h:,.1f} h wall time on 100 instance(s) misses the 24 h target")
    assert f"{capped.instances_needed} instances would" in line and "split the input into 2 jobs" in line
    assert plan.estimate(100, 5, 32_000, instances=capped.instances_needed).wall_h <= 24
    assert plan.estimate(100, 5, 32_000, instances=capped.instances_needed - 1).wall_h > 24
    assert plan.estimate(100, capped.docs_per_core_s_needed, 32_000, instances=100).wall_h == pytest.approx(24)
    assert "\n" not in line and f"accept {capped.wall_h:,.1f} h" in line
    few = plan.target_verdict(plan.estimate(100, 500, 32_000, instances=1))
    assert "2 instances would (--instances 2)" in few
    assert "no instance count can" in plan.target_verdict(plan.estimate(1, 500, 32_000, target_hours=0.1))

    config = tmp_path / "plan.yaml"
    config.write_text(yaml.safe_dump({"name": "plan-test", "stages": [{"type": "gopher_quality"}]}))
    args = ["plan", str(config), "--input-tb", "100", "--docs-per-core-s", "5", "--bytes-per-doc", "32000",
            "--instances", "100"]
    res = CliRunner().invoke(app, args, terminal_width=80)
    assert res.exit_code == 0 and line in " ".join(res.output.split())
    res = CliRunner().invoke(app, args + ["--json"])
    assert json.loads(res.stdout)["target_verdict"] == line
    res = CliRunner().invoke(app, args[:-6] + ["--docs-per-core-s", "500", "--bytes-per-doc", "32000"])
    assert res.exit_code == 0 and "target not met" not in res.output
