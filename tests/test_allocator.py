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
    assert sum(bool(reply[0]) for _, reply in texts["auto"]) >= 15  # (text, path[, marked text])
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


# -- the local executor's workers (the executor section's allocator) ------------------------------
def _probed_run(tmp_path: Path, name: str, allocator_value: str, workers: int = 2) -> tuple[list[dict], Path]:
    """A real run (bundled Common Crawl documents, Gopher's quality filter, the probe) on a pool
    of ``workers``; the probe's records of the processes it ran in, and the run directory."""
    import json

    from _custom_stages import AllocatorProbe
    from refinery.config import parse_config
    from refinery.pipeline import run_pipeline
    from refinery.stages.registry import register_stage

    register_stage("allocator_probe", AllocatorProbe)
    corpus = Path(__file__).resolve().parents[1] / "data" / "sample" / "cc_docs"
    src, records, out = tmp_path / "in", tmp_path / f"{name}-records", tmp_path / name
    src.mkdir(exist_ok=True), records.mkdir()
    for f in sorted(corpus.glob("multiple_files_cc_en_head-*.jsonl.gz")):
        (src / f.name).write_bytes(f.read_bytes())
    config = parse_config({"stages": [{"type": "gopher_quality"},
                                      {"type": "allocator_probe", "params": {"record_dir": str(records)}}],
                           "executor": {"allocator": allocator_value}})
    summary = run_pipeline(config, str(src), str(out), workers=workers, progress=False)
    assert not summary.failed
    return [json.loads(p.read_text()) for p in sorted(records.iterdir())], out


@pytest.mark.skipif(not LINUX_WHEEL, reason="the wheel is a dependency on Linux x86_64/aarch64 only")
@pytest.mark.usefixtures("registry_restored")
def test_the_pool_workers_run_on_mimalloc_and_what_they_start_does_not(tmp_path, monkeypatch) -> None:
    import os

    import pyarrow.dataset as ds

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("MIMALLOC_ALLOW_THP", raising=False)
    on, out_on = _probed_run(tmp_path, "auto", "auto")
    off, out_off = _probed_run(tmp_path, "system", "system")
    assert on and off and all(r["pid"] != os.getpid() for r in on + off)  # pool workers, not this process
    assert all(r["mimalloc"] for r in on) and not any(r["mimalloc"] for r in off)
    # the preload is put back in the worker: what it starts (a stage's subprocess, a helper with
    # helper_allocator: system) gets the parent's environment, as does everything this process starts
    assert all(r["LD_PRELOAD"] is None and r["THP"] is None and not r["child_mimalloc"] for r in on + off)
    assert "LD_PRELOAD" not in os.environ and "libmimalloc" not in Path("/proc/self/maps").read_text()
    for part in ("kept", "removed"):
        on_rows, off_rows = (ds.dataset(str(o / part)).to_table().sort_by("id") for o in (out_on, out_off))
        assert on_rows.num_rows > 0 and on_rows.equals(off_rows)


@pytest.mark.skipif(not LINUX_WHEEL, reason="the wheel is a dependency on Linux x86_64/aarch64 only")
def test_a_preload_the_user_set_reaches_the_workers_as_it_was(tmp_path, monkeypatch) -> None:
    from refinery.executors.local import LocalExecutor

    theirs = "libm.so.6"  # a real library the loader finds by name: preloading it changes nothing
    monkeypatch.setenv("LD_PRELOAD", theirs)
    monkeypatch.delenv("MIMALLOC_ALLOW_THP", raising=False)
    for value, mapped in (("auto", False), ("mimalloc", True)):
        with LocalExecutor(2, progress=False, allocator=value) as executor:
            pid, maps, preload, thp = executor.pool().submit(_probe_worker).result()
        assert ("libmimalloc" in maps) == mapped and "libm.so.6" in maps
        assert preload == theirs and thp is None  # the worker's own subprocesses see what the user set


def _probe_worker() -> tuple[int, str, str | None, str | None]:
    import os

    return os.getpid(), Path("/proc/self/maps").read_text(), os.environ.get("LD_PRELOAD"), os.environ.get("MIMALLOC_ALLOW_THP")


def test_the_executor_allocator_is_checked_and_not_fingerprinted(tmp_path, monkeypatch) -> None:
    from refinery.config import ConfigError, load_config
    from refinery.plan import plan_run

    def plan(value: str):
        config = tmp_path / f"{value}.yaml"
        config.write_text(f"stages:\n  - type: gopher_quality\nexecutor:\n  allocator: {value}\n")
        return plan_run(load_config(config), str(tmp_path / "in"), str(tmp_path / "out"))

    src = Path(__file__).resolve().parents[1] / "data" / "sample" / "cc_docs" / "multiple_files_cc_en_head-0091.jsonl.gz"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / src.name).write_bytes(src.read_bytes())
    assert [p.fingerprint for p in plan("auto").passes] == [p.fingerprint for p in plan("system").passes]
    with pytest.raises(ConfigError, match="allocator"):
        plan("jemalloc")
    monkeypatch.setattr(allocator, "MIMALLOC_DIST", "no-such-distribution-here")
    allocator._find_library.cache_clear()
    try:
        with pytest.raises(ConfigError, match="executor allocator 'mimalloc' needs the cmeel-mimalloc package"):
            plan("mimalloc")
    finally:
        monkeypatch.undo()
        allocator._find_library.cache_clear()


def test_the_pool_preloads_only_through_the_launcher_it_mirrors() -> None:
    # _PreloadPopen copies CPython's spawn launcher: another Python's must not be replaced blindly
    import hashlib
    import inspect
    from multiprocessing import popen_spawn_posix

    from refinery.executors import local

    source = inspect.getsource(popen_spawn_posix.Popen._launch)
    assert local.preload_launcher_usable() == (hashlib.sha256(source.encode()).hexdigest() == local._LAUNCH_SHA256)
    assert local.preload_launcher_usable() or sys.version_info[:2] not in ((3, 11), (3, 12), (3, 13))
    mirrored = inspect.getsource(local._PreloadPopen._launch)
    for line in ("reduction.dump(prep_data, fp)", "spawn.get_command_line(tracker_fd=tracker_fd,",
                 "self.sentinel = parent_r", "util.Finalize(self, util.close_fds, fds_to_close)"):
        assert line in source and line in mirrored


_REEXEC_SCRIPT = """
import json, os, subprocess, sys
from refinery import allocator
allocator.preload_this_command(sys.argv[1:])
child = subprocess.run(["cat", "/proc/self/maps"], capture_output=True, text=True, check=True).stdout
print(json.dumps({"pid": os.getpid(), "mimalloc": allocator.this_process_allocator() == "mimalloc",
                  "LD_PRELOAD": os.environ.get("LD_PRELOAD"), "THP": os.environ.get("MIMALLOC_ALLOW_THP"),
                  "marks": [k for k in os.environ if k.startswith("REFINERY_ALLOCATOR")],
                  "child_mimalloc": "libmimalloc" in child}))
"""


@pytest.mark.skipif(not LINUX_WHEEL, reason="the wheel is a dependency on Linux x86_64/aarch64 only")
def test_a_heavy_command_reexecutes_itself_on_mimalloc_and_its_children_inherit_nothing(tmp_path) -> None:
    import json
    import os
    import subprocess

    script = tmp_path / "command.py"
    script.write_text(_REEXEC_SCRIPT)
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MIMALLOC_ALLOW_THP", "REFINERY_ALLOCATOR")}

    def probe(*args: str, **env: str) -> dict:
        done = subprocess.run([sys.executable, str(script), *args], env={**base, **env}, capture_output=True,
                              text=True, check=True, timeout=120)
        assert "ld.so" not in done.stderr
        return json.loads(done.stdout)

    ran = probe("run", "x.yaml")
    # the same process (exec keeps the pid), now on mimalloc; the variables put back for what it starts
    assert ran["mimalloc"] and ran["LD_PRELOAD"] is None and ran["THP"] is None and not ran["marks"]
    assert not ran["child_mimalloc"]
    assert not probe("status", "x")["mimalloc"]  # light commands start as they are
    assert not probe("run", "x.yaml", REFINERY_ALLOCATOR="system")["mimalloc"]
    theirs = probe("dedup", "x", LD_PRELOAD="libm.so.6")  # a user's preload stands under auto
    assert not theirs["mimalloc"] and theirs["LD_PRELOAD"] == "libm.so.6"
    both = probe("tokenize", "x", LD_PRELOAD="libm.so.6", REFINERY_ALLOCATOR="mimalloc")
    assert both["mimalloc"] and both["LD_PRELOAD"] == "libm.so.6" and not both["child_mimalloc"]


@pytest.mark.skipif(not LINUX_WHEEL, reason="the wheel is a dependency on Linux x86_64/aarch64 only")
def test_refinery_run_says_which_allocator_its_process_runs_on(tmp_path) -> None:
    import os
    import subprocess

    corpus = Path(__file__).resolve().parents[1] / "data" / "sample" / "cc_docs"
    src = tmp_path / "in"
    src.mkdir()
    first = sorted(corpus.glob("multiple_files_cc_en_head-*.jsonl.gz"))[0]
    (src / first.name).write_bytes(first.read_bytes())
    config = tmp_path / "c.yaml"
    config.write_text("stages:\n  - type: gopher_quality\n")
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MIMALLOC_ALLOW_THP", "REFINERY_ALLOCATOR")}
    for setting, said in (("auto", "runs on mimalloc"), ("system", "runs on the system's malloc")):
        done = subprocess.run([sys.executable, "-m", "refinery", "run", str(config), "-i", str(src), "-o",
                               str(tmp_path / setting), "--workers", "1", "-v"], env={**base, "REFINERY_ALLOCATOR": setting},
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"this command's process {said}" in done.stderr


def _clean_env(**extra: str) -> dict[str, str]:
    import os

    drop = ("LD_PRELOAD", "MIMALLOC_ALLOW_THP", "REFINERY_ALLOCATOR")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


@pytest.mark.skipif(not LINUX_WHEEL, reason="the wheel is a dependency on Linux x86_64/aarch64 only")
def test_a_program_read_from_stdin_is_not_reexecuted_into_an_empty_one(tmp_path) -> None:
    # `python - run ...`: the re-executed interpreter read the program from an exhausted stdin, ran
    # nothing and exited 0 (review h101); -c's program is on the command line, and is re-executed
    import json
    import subprocess

    piped = subprocess.run([sys.executable, "-", "run", "x.yaml"], input=_REEXEC_SCRIPT, env=_clean_env(),
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert piped.returncode == 0 and piped.stdout, piped.stderr[-2000:]
    assert not json.loads(piped.stdout)["mimalloc"]
    inline = subprocess.run([sys.executable, "-c", _REEXEC_SCRIPT, "run", "x.yaml"], env=_clean_env(),
                            capture_output=True, text=True, timeout=120, cwd=tmp_path, check=True)
    assert json.loads(inline.stdout)["mimalloc"]


_CTRL_C_AT = """
import os, signal, sys
# a Ctrl-C at a set point of the command's start: in the re-executed interpreter's own start (its
# site), or in the first one's import of refinery.allocator
if os.environ.get("CTRL_C_AT") == "restart" and "REFINERY_ALLOCATOR_PUT_BACK" in os.environ:
    os.kill(os.getpid(), signal.SIGINT)
elif os.environ.get("CTRL_C_AT") == "import" and "REFINERY_ALLOCATOR_PUT_BACK" not in os.environ:
    def _hook(event, args):
        if event == "import" and args[0] == "refinery.allocator":
            os.kill(os.getpid(), signal.SIGINT)
    sys.addaudithook(_hook)
"""


@pytest.mark.skipif(not LINUX_WHEEL, reason="the wheel is a dependency on Linux x86_64/aarch64 only")
@pytest.mark.parametrize("point", ["restart", "import"])
def test_a_ctrl_c_while_the_command_reexecutes_is_one_line(tmp_path, point) -> None:
    # the re-execution starts the interpreter twice: a Ctrl-C in the second start, or in the first
    # one's allocator import, ended in a traceback (review h101: SIGINT 18-75 ms after start)
    import os
    import subprocess

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_CTRL_C_AT)
    path = os.pathsep.join([str(hooks), *filter(None, [os.environ.get("PYTHONPATH")]),
                            str(Path(__file__).resolve().parents[1])])
    done = subprocess.run([sys.executable, "-m", "refinery", "run", "c.yaml"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=_clean_env(PYTHONPATH=path, CTRL_C_AT=point))
    assert (done.returncode, done.stderr) == (130, "error: interrupted\n")


def test_a_driver_allocator_setting_that_cannot_be_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    import os
    import subprocess

    script = tmp_path / "command.py"
    script.write_text(_REEXEC_SCRIPT)
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MIMALLOC_ALLOW_THP", "REFINERY_ALLOCATOR")}
    done = subprocess.run([sys.executable, str(script), "run", "x.yaml"], env={**base, "REFINERY_ALLOCATOR": "mimaloc"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr == "error: REFINERY_ALLOCATOR must be one of auto, mimalloc, system, not 'mimaloc'\n"
    light = subprocess.run([sys.executable, str(script), "status", "x"], env={**base, "REFINERY_ALLOCATOR": "mimaloc"},
                           capture_output=True, text=True, timeout=120)
    assert light.returncode == 0, light.stderr  # only the commands it applies to read it
    # mimalloc asked for where the wheel is not: named, not a silent fall-back (a dist name nothing installs)
    monkeypatch.setattr(allocator, "MIMALLOC_DIST", "no-such-distribution-here")
    monkeypatch.setenv("REFINERY_ALLOCATOR", "mimalloc")
    allocator._find_library.cache_clear()
    try:
        with pytest.raises(SystemExit) as exit_:
            allocator.preload_this_command(["tokenize", "x"])
        assert exit_.value.code == 2
        assert capsys.readouterr().err == ("error: REFINERY_ALLOCATOR 'mimalloc' needs the cmeel-mimalloc package "
                                           "(Linux): pip install cmeel-mimalloc\n")
    finally:
        monkeypatch.undo()
        allocator._find_library.cache_clear()


_WRAPPER = """
import sys
with open(sys.argv.pop(1), "a") as log:  # what the user's program does before it calls refinery
    log.write("the wrapper ran\\n")
from refinery.__main__ import main
main()
"""


@pytest.mark.skipif(not LINUX_WHEEL, reason="the wheel is a dependency on Linux x86_64/aarch64 only")
def test_a_wrapper_script_calling_main_is_not_run_twice(tmp_path) -> None:
    # the re-execution replays sys.orig_argv: a program of the user's calling refinery's main()
    # for a heavy command ran whole twice, whatever it did before the call done twice (review h101)
    import subprocess

    script, log = tmp_path / "wrapper.py", tmp_path / "log.txt"
    script.write_text(_WRAPPER)
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, str(script), str(log), "run", "missing.yaml", "-v"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env=_clean_env(PYTHONPATH=root))
    assert done.returncode == 2 and "config file not found: missing.yaml" in done.stderr, done.stderr[-2000:]
    assert log.read_text() == "the wrapper ran\n"
    assert f"not re-executed with mimalloc preloaded: started by {script}, not as refinery itself" in done.stderr


def test_console_scripts_are_told_from_programs_that_call_main(tmp_path) -> None:
    # pip's (distlib's) and uv's console scripts are refinery itself; a program doing more is not
    pip = ("#!/venv/bin/python\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom refinery.__main__ import main\n"
           "if __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
           "    sys.exit(main())\n")
    uv = ("#!/venv/bin/python\n# -*- coding: utf-8 -*-\nimport sys\nfrom refinery.__main__ import main\n"
          "if __name__ == \"__main__\":\n    if sys.argv[0].endswith(\"-script.pyw\"):\n"
          "        sys.argv[0] = sys.argv[0][:-11]\n    elif sys.argv[0].endswith(\".exe\"):\n"
          "        sys.argv[0] = sys.argv[0][:-4]\n    sys.exit(main())\n")
    scripts = {"pip": pip, "uv": uv, "wrapper": _WRAPPER,
               "setup first": pip.replace("if __name__", "import mylib\nmylib.setup()\nif __name__"),
               "more in the guard": pip.replace("    sys.exit(main())", "    print('hi')\n    sys.exit(main())"),
               "not python": "\x00\x01binary"}
    found = {}
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
        found[name] = allocator.is_console_script(str(tmp_path / name))
    assert found == {"pip": True, "uv": True, "wrapper": False, "setup first": False, "more in the guard": False,
                     "not python": False}
    assert allocator.is_console_script(str(Path(sys.executable).parent / "refinery")) or not (
        Path(sys.executable).parent / "refinery").is_file()  # the one installed here


def test_a_console_script_whose_expressions_run_code_is_a_program(tmp_path) -> None:
    # the shape was checked, not what its expressions do: a script that wrote a file while it
    # computed sys.argv[0] (or called a lambda for main) was re-executed and did it twice (review h106)
    head = "import re\nimport sys\nfrom refinery.__main__ import main\nif __name__ == '__main__':\n"
    tidy = "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
    scripts = {
        "poetry's": "import sys\nfrom refinery.__main__ import main\n\nif __name__ == '__main__':\n    sys.exit(main())\n",
        "a dotted main": head.replace("from refinery.__main__ import main", "import refinery.__main__")
        + tidy + "    sys.exit(refinery.__main__.main())\n",
        "a write in the tidying": head + "    sys.argv[0] = open('log', 'a').write('x') and sys.argv[0]\n    sys.exit(main())\n",
        "a call in a test": head + "    if print('starting') or sys.argv[0].endswith('.exe'):\n"
        "        sys.argv[0] = sys.argv[0][:-4]\n    sys.exit(main())\n",
        "a lambda for main": head + tidy + "    sys.exit((lambda: print('starting') or main())())\n",
        "an expression for main": head + tidy + "    sys.exit(__import__('mylib').setup()())\n",
        "a walrus": head + "    sys.argv[0] = (n := sys.argv[0])\n    sys.exit(main())\n",
    }
    found = {}
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
        found[name] = allocator.is_console_script(str(tmp_path / name))
    assert found == {"poetry's": True, "a dotted main": True, "a write in the tidying": False, "a call in a test": False,
                     "a lambda for main": False, "an expression for main": False, "a walrus": False}


@pytest.mark.skipif(not LINUX_WHEEL, reason="the wheel is a dependency on Linux x86_64/aarch64 only")
def test_refinery_s_own_main_run_as_a_file_is_refinery_itself(tmp_path) -> None:
    # `python path/to/refinery/__main__.py run ...` is refinery's entry point: it was told apart as
    # "not refinery itself" and ran on the system's malloc (review h106)
    import subprocess

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "refinery" / "__main__.py"), "run", "missing.yaml", "-v"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=_clean_env(PYTHONPATH=str(root)))
    assert done.returncode == 2 and "config file not found: missing.yaml" in done.stderr, done.stderr[-2000:]
    assert "this command's process runs on mimalloc" in done.stderr and "not re-executed" not in done.stderr
