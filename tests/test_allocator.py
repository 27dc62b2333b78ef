"""The extraction helper's allocator (refinery/allocator.py): mimalloc preloaded into the helper
process where the wheel is installed, the same text as with the system's malloc."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from refinery import allocator
from refinery.stages.extract import TrafilaturaExtractor, _Helper

from test_extract import load_warc_records

LINUX_WHEEL = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64")


def _mapped(pid: int) -> bool:
    return "libmimalloc" in Path(f"/proc/{pid}/maps").read_text()


def _helper(stage: TrafilaturaExtractor) -> _Helper:
    import json

    helper = _Helper(json.loads(stage._helper_key()))
    helper.wait_ready()
    return helper


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and /proc: Linux")
def test_the_helper_runs_on_mimalloc_with_the_same_text_as_on_the_system_malloc(monkeypatch) -> None:
    # a dependency on Linux x86_64/aarch64 (pyproject.toml): missing there, the install is broken
    assert allocator.mimalloc_library() is not None or not LINUX_WHEEL
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    batch = load_warc_records()
    htmls = [h.decode("utf-8", "replace") for h in batch.column("html").to_pylist()[:25]]
    urls = batch.column("url").to_pylist()[:25]
    texts = {}
    for name in ("auto", "system"):
        helper = _helper(TrafilaturaExtractor(helper_allocator=name))
        try:
            assert _mapped(helper.proc.pid) == (name == "auto" and allocator.mimalloc_library() is not None)
            texts[name] = [helper.extract(html, url, 60.0) for html, url in zip(htmls, urls)]
        finally:
            helper.close()
    assert all(status == "ok" for status, _ in texts["auto"])
    assert sum(bool(text) for _, (text, _path) in texts["auto"]) >= 15
    assert texts["auto"] == texts["system"]


@pytest.mark.skipif(not LINUX_WHEEL, reason="the wheel is a dependency on Linux x86_64/aarch64 only")
def test_a_preload_the_user_set_stands_unless_mimalloc_is_asked_for(monkeypatch) -> None:
    library = allocator.mimalloc_library()
    monkeypatch.setenv("LD_PRELOAD", "/opt/theirs/libjemalloc.so.2")
    assert allocator.helper_environment("auto") is None  # theirs, untouched
    env = allocator.helper_environment("mimalloc")
    assert env is not None and env["LD_PRELOAD"] == f"{library} /opt/theirs/libjemalloc.so.2"
    assert allocator.helper_environment("system") is None
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.setenv("MIMALLOC_ALLOW_THP", "1")
    env = allocator.helper_environment("auto")
    assert env is not None and env["LD_PRELOAD"] == library and env["MIMALLOC_ALLOW_THP"] == "1"  # theirs stands
    monkeypatch.delenv("MIMALLOC_ALLOW_THP")
    assert allocator.helper_environment("auto")["MIMALLOC_ALLOW_THP"] == "0"


def test_an_allocator_that_is_not_there_is_one_clear_error(monkeypatch) -> None:
    with pytest.raises(ValueError, match="helper_allocator must be one of auto, mimalloc, system, not 'jemalloc'"):
        TrafilaturaExtractor(helper_allocator="jemalloc")  # type: ignore[arg-type]
    monkeypatch.setattr(allocator, "MIMALLOC_DIST", "no-such-distribution-here")
    allocator._find_library.cache_clear()
    try:
        with pytest.raises(ValueError, match="needs the cmeel-mimalloc package"):
            TrafilaturaExtractor(helper_allocator="mimalloc")
        assert allocator.helper_environment("auto") is None  # auto: the system's, quietly
        TrafilaturaExtractor(helper_allocator="auto")
    finally:
        monkeypatch.undo()
        allocator._find_library.cache_clear()


def test_the_allocator_is_not_part_of_a_runs_fingerprint() -> None:
    # it changes the helper's speed, not its text: a run resumed with another allocator is the same run
    from refinery.config import parse_config

    def params(value: str) -> dict:
        config = parse_config({"name": "t", "stages": [{"type": "extract", "params": {"helper_allocator": value}}]})
        return config.stages[0].fingerprint_params()

    assert "helper_allocator" not in params("system")
    assert params("system") == params("auto")
    assert "fallback_judge_ratio" in params("auto")  # the others are


def _install_wheel(site: Path, library: bytes) -> None:
    """A cmeel-mimalloc distribution in ``site`` (its dist-info and its library file ``library``)."""
    info = site / "cmeel_mimalloc-3.4.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cmeel-mimalloc\nVersion: 3.4.3\n")
    (info / "RECORD").write_text("cmeel.prefix/lib/libmimalloc.so.3,,\ncmeel_mimalloc-3.4.3.dist-info/METADATA,,\n")
    (site / "cmeel.prefix" / "lib").mkdir(parents=True)
    (site / "cmeel.prefix" / "lib" / "libmimalloc.so.3").write_bytes(library)


@pytest.mark.skipif(not LINUX_WHEEL, reason="the wheel is a dependency on Linux x86_64/aarch64 only")
@pytest.mark.parametrize("where, damaged, why", [("my env", False, "LD_PRELOAD splits paths at spaces"),
                                                 ("env", True, "is not a shared library")])
def test_a_library_the_loader_cannot_preload_is_not_given_to_it(tmp_path, monkeypatch, capfd, where, damaged, why) -> None:
    # a virtualenv under a path with a space: LD_PRELOAD split it, and every helper start printed two
    # "ERROR: ld.so: ... cannot be preloaded" lines, on the system's malloc even for 'mimalloc'
    library = b"" if damaged else Path(allocator.mimalloc_library()).read_bytes()
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    _install_wheel(tmp_path / where / "site", library)
    monkeypatch.syspath_prepend(str(tmp_path / where / "site"))
    allocator._find_library.cache_clear()
    try:
        with pytest.raises(ValueError, match=f"helper_allocator 'mimalloc': .*{why}"):
            TrafilaturaExtractor(helper_allocator="mimalloc")
        helper = _helper(TrafilaturaExtractor(helper_allocator="auto"))  # auto: the system's, quietly
        try:
            assert not _mapped(helper.proc.pid)
            assert helper.extract("<html><body><p>" + "Some words of text. " * 20 + "</p></body></html>", None, 60)[0] == "ok"
        finally:
            helper.close()
        assert "ld.so" not in capfd.readouterr().err
    finally:
        monkeypatch.undo()
        allocator._find_library.cache_clear()


def test_runs_differing_only_in_the_allocator_are_not_reported_as_differing_settings() -> None:
    # `stats --compare` / `report --compare` explain why two runs' outputs differ: the allocator does not
    from refinery.stats.report import config_diff

    def manifest(allocator_value: str, judge: float = 8.0) -> dict:
        return {"config": {"stages": [{"type": "extract", "params": {"helper_allocator": allocator_value,
                                                                     "fallback_judge_ratio": judge}}]}}

    rows = config_diff(manifest("auto"), manifest("system"))
    row = next(r for r in rows if r["param"] == "helper_allocator")
    assert (row["a"], row["b"], row["differs"]) == ("auto", "system", False)  # shown, not a difference
    assert not [r for r in rows if r["differs"]]
    changed = [r["param"] for r in config_diff(manifest("auto"), manifest("system", judge=4.0)) if r["differs"]]
    assert changed == ["fallback_judge_ratio"]
