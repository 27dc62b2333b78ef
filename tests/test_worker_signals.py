"""Ctrl-C reaches every process of the terminal's group, pool workers included. A worker ignores
it (the parent stops the run and prints one line), even when it comes while the worker is still
starting up: that is the moment a one-task-per-process pool spends much of its life in."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from refinery.executors.local import LocalExecutor


def sigint_state(_: int) -> dict:
    """This process's SIGINT as the kernel sees it (bits of /proc/self/status)."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    bit = 1 << (signal.SIGINT - 1)
    return {"pid": os.getpid(), "ignored": bool(int(fields["SigIgn"], 16) & bit),
            "blocked": bool(int(fields["SigBlk"], 16) & bit)}


@pytest.mark.parametrize("fresh_process", [False, True])
def test_a_ctrl_c_while_a_worker_starts_is_held_then_ignored(fresh_process):
    with LocalExecutor(2, progress=False, fresh_process=fresh_process) as executor:
        pool = executor.pool()
        for round_ in range(3):
            futures = [pool.submit(sigint_state, i) for i in range(2)]
            # the workers were spawned by submit() just now: they are importing Python, long
            # before they can ignore anything
            for pid in list(pool._processes):
                os.kill(pid, signal.SIGINT)
            states = [f.result(timeout=60) for f in futures]  # a worker killed by it: BrokenProcessPool
            assert all(s["ignored"] and not s["blocked"] for s in states), states
            if not fresh_process:
                break  # a reused worker is past its start-up
    # the parent's own mask is as it was: a Ctrl-C still reaches it
    assert not sigint_state(0)["blocked"]


def _count(k: int) -> dict:
    return {"docs_read": k}


class _SignalsInItsDestructor:
    """Presses Ctrl-C while Python runs its ``__del__``: the KeyboardInterrupt raised there is
    printed as "Exception ignored" and dropped (what a driver freeing objects between waits meets)."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10_000):  # the handler runs at one of these bytecodes, inside __del__
            pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_dropped_by_a_destructor_still_stops_the_run(monkeypatch):
    from refinery import interrupts

    # what Python prints as "Exception ignored in: ..." with a traceback, above the one line (seen
    # in importlib's module-lock callback, timed SIGINTs at start-up): quiet for a Ctrl-C
    printed: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: printed.append(unraisable.exc_type))
    assert interrupts.install()
    try:
        outcomes: list[str] = []

        def on_outcome(outcome) -> None:
            outcomes.append(outcome.name)
            if len(outcomes) == 2:
                _SignalsInItsDestructor()  # freed at once: the Ctrl-C lands in its __del__ and is lost

        with pytest.raises(KeyboardInterrupt):
            LocalExecutor(1, progress=False).map(_count, [{"k": k} for k in range(10)], label="t",
                                                 on_outcome=on_outcome)
        assert interrupts.requested()
        # the loop stopped at its next turn (the first two tasks complete together), not after all ten
        assert sorted(outcomes) == ["0", "1"]
        assert printed == []
    finally:  # SIGTERM's handler as it was (SIGINT's: conftest's _sigint_as_in_a_terminal)
        interrupts.uninstall()
        interrupts.reset()


def test_the_command_line_leaves_an_ignored_sigint_ignored():
    """A background job of a non-interactive shell starts with SIGINT ignored, so that a Ctrl-C
    meant for the foreground job does not stop it: the command line keeps it so."""
    from refinery import interrupts

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert not interrupts.install()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        interrupts.uninstall()  # install() took SIGTERM all the same
        signal.signal(signal.SIGINT, previous)


def test_the_ctrl_c_tests_hold_in_a_pytest_started_with_sigint_ignored(tmp_path):
    """A pytest started as a background job of a non-interactive shell (``pytest &`` in a script or
    a CI step) inherits SIGINT ignored. The tests that press Ctrl-C in their own process failed
    there, or passed only after a test on the same xdist worker had reset SIGINT: a CI run failed
    test_ray_executor's Ctrl-C test, the first test file on its worker. conftest gives every test
    a terminal's SIGINT. Two of those tests (the fast ones) run in a pytest started that way."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tests = [f"tests/test_worker_signals.py::{name}" for name in (
        "test_a_ctrl_c_dropped_by_a_destructor_still_stops_the_run", "test_a_third_ctrl_c_quits_a_ray_shutdown_that_hangs")]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                           f"--basetemp={tmp_path / 'basetemp'}", *tests], capture_output=True, text=True, timeout=120,
                          cwd=root, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout[-3000:]


_DRIVER = """
import sys, time
sys.path.insert(0, {root!r})
from refinery.executors.local import LocalExecutor
from tests.test_worker_signals import sleep_and_report
executor = LocalExecutor(2, progress=False)
pool = executor.pool()
futures = [pool.submit(sleep_and_report, {pids!r}, i) for i in range(2)]
time.sleep(120)
"""


def sleep_and_report(pid_dir: str, i: int) -> None:
    with open(os.path.join(pid_dir, f"{i}.pid"), "w") as f:
        f.write(str(os.getpid()))
    import time

    time.sleep(60)  # a long shard


def test_workers_of_a_killed_driver_exit_instead_of_finishing_their_shard(tmp_path):
    """Found by adversarial testing: SIGKILL of the driver alone left its pool workers running;
    they finished their shards and wrote them over the next run's output."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    pids = tmp_path / "pids"
    pids.mkdir()
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER.format(root=root, pids=str(pids))], cwd=root)
    deadline = time.time() + 60
    # both pid files there and written (a file is created before its pid is in it)
    while time.time() < deadline and not (len(list(pids.iterdir())) >= 2
                                          and all(p.read_text().strip() for p in pids.iterdir())):
        time.sleep(0.1)
    workers = [int(p.read_text()) for p in pids.iterdir()]
    assert len(workers) == 2
    driver.kill()
    driver.wait()
    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # a zombie (exited, not yet reaped by its new parent) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    for _ in range(50):
        if not any(alive(p) for p in workers):
            break
        time.sleep(0.1)
    else:
        for p in workers:
            if alive(p):
                os.kill(p, signal.SIGKILL)
        raise AssertionError("the pool workers outlived their driver by 5 s")


def test_a_worker_whose_driver_died_before_it_started_exits_at_once():
    """A worker read its parent's pid only once it had imported everything (~0.6 s): a driver
    killed in that second had already re-parented it, so it watched pid 1, took the queued
    shards and wrote them over the next run's output (found by adversarial testing). It is given
    the driver's pid and exits at once if that process is gone."""
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    code = ("from refinery.executors.local import _exit_with_parent\n"
            f"_exit_with_parent({dead_pid})\nprint('still alive')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "still alive" not in proc.stdout


def test_a_third_ctrl_c_or_a_late_one_forces_a_stopping_run_to_quit(monkeypatch):
    """While a run stops (its KeyboardInterrupt raised), later Ctrl-Cs are ignored, but not for good:
    a stop that hangs ignored every one and only kill -9 ended it."""
    from refinery import interrupts

    forced: list[int] = []
    monkeypatch.setattr(interrupts, "force_quit", lambda code=130: forced.append(code))
    interrupts.reset()
    try:
        with pytest.raises(KeyboardInterrupt):
            interrupts._on_sigint(signal.SIGINT, None)
        interrupts._on_sigint(signal.SIGINT, None)  # the second of a double press: ignored
        assert forced == []
        interrupts._on_sigint(signal.SIGINT, None)  # the third: quits
        assert forced == [130]
        interrupts.reset()
        with pytest.raises(KeyboardInterrupt):
            interrupts._on_sigint(signal.SIGINT, None)
        monkeypatch.setattr(interrupts, "_first_at", interrupts._first_at - interrupts.FORCE_AFTER_S)
        interrupts._on_sigint(signal.SIGINT, None)  # a second one, long after the first
        assert forced == [130, 130]
        interrupts.reset()
        interrupts.stopping()  # the command is over: the exit is what may hang
        for _ in range(2):
            interrupts._on_sigint(signal.SIGINT, None)
        assert forced == [130, 130]
        interrupts._on_sigint(signal.SIGINT, None)
        assert forced == [130, 130, 130]
    finally:
        interrupts.reset()


def _run_with_a_stuck_worker(tmp_path, presses: int, gap_s: float, grace_s: float | None = None):
    """``refinery run`` with 2 workers, one of them stuck for good in a shard (SIGTERM ignored),
    as a terminal's foreground job; ``presses`` Ctrl-Cs to its process group ``gap_s`` apart once
    the worker is stuck; ``grace_s``: REFINERY_TERMINATE_GRACE_S (None: the default 5 s).
    (returncode, stderr, seconds from the first Ctrl-C to the exit)."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    markers = tmp_path / "markers"
    config = tmp_path / "stuck.yaml"
    config.write_text(yaml.safe_dump({"name": "stuck", "reader": {"batch_size": 20}, "stages": [
        {"type": "fault_injection", "params": {"marker_dir": str(markers), "match": "00140", "mode": "hang"}},
        {"type": "gopher_repetition"}]}))

    def as_a_foreground_job() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])

    cmd = [sys.executable, "-m", "refinery", "run", str(config), "-i", str(root / "data/sample/cc_docs"),
           "-o", str(tmp_path / "run"), "--workers", "2"]
    env = dict(os.environ)
    env.pop("REFINERY_TERMINATE_GRACE_S", None)
    if grace_s is not None:
        env["REFINERY_TERMINATE_GRACE_S"] = f"{grace_s:g}"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=as_a_foreground_job, cwd=root)
    try:
        deadline = time.time() + 60
        while not markers.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert markers.exists() and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.5)
        started = time.time()
        for _ in range(presses):
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(gap_s)
        try:
            stderr = proc.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 30 s after {presses} Ctrl-C(s)")
        return proc.returncode, stderr, time.time() - started
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group (nothing, if all went well)
        except ProcessLookupError:
            pass
        proc.wait()


def test_a_ctrl_c_stops_a_run_whose_worker_ignores_sigterm(tmp_path):
    """One Ctrl-C: the worker that ignores SIGTERM is killed after the grace period and the run
    ends with its one line (before: the pool's shutdown waited for it for good). The grace is
    REFINERY_TERMINATE_GRACE_S's 1 s, not the default 5 s the suite used to wait out."""
    code, stderr, took = _run_with_a_stuck_worker(tmp_path, presses=1, gap_s=0, grace_s=1)
    assert code == 130, stderr[-2000:]
    assert stderr.rstrip().splitlines()[-1] == "error: interrupted; run the same command again to resume"
    assert "Traceback" not in stderr and "still running 1 s after SIGTERM: killed" in stderr
    assert 1 <= took < 11


def test_the_terminate_grace_is_the_default_unless_the_variable_is_a_number(monkeypatch):
    from refinery.executors.local import LocalExecutor, terminate_grace_s

    assert LocalExecutor.TERMINATE_GRACE_S == 5.0
    for text, seconds in (("", 5.0), (" 0.5 ", 0.5), ("0", 0.0), ("soon", 5.0), ("-1", 5.0), ("nan", 5.0)):
        monkeypatch.setenv("REFINERY_TERMINATE_GRACE_S", text)
        assert terminate_grace_s(5.0) == seconds, text


def test_three_quick_ctrl_cs_quit_a_stopping_run_at_once(tmp_path):
    from refinery.interrupts import FORCED_LINE

    code, stderr, took = _run_with_a_stuck_worker(tmp_path, presses=3, gap_s=0.2)
    assert code == 130, stderr[-2000:]
    assert stderr.splitlines()[-1] == FORCED_LINE.strip() and "Traceback" not in stderr
    assert took < 4  # not the 5 s grace the stuck worker gets


def test_a_third_ctrl_c_quits_a_ray_shutdown_that_hangs(monkeypatch):
    """RayExecutor.close() held every Ctrl-C in ray.shutdown() with a handler of its own: a shutdown
    that hangs could not be quit. Under the command line's handler, the third one quits."""
    import sys
    import types

    from refinery import interrupts
    from refinery.executors.ray import RayExecutor

    class Forced(Exception):
        pass

    def force_quit(code: int = 130) -> None:
        raise Forced

    def shutdown() -> None:  # a hanging shutdown, which the user presses Ctrl-C at three times
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(shutdown=shutdown))
    monkeypatch.setattr(interrupts, "force_quit", force_quit)
    interrupts.reset()
    assert interrupts.install()
    try:
        executor = RayExecutor(1, progress=False)
        executor._owns_ray = True
        with pytest.raises(Forced):
            executor.close()
        assert not executor._owns_ray
    finally:  # SIGTERM's handler as it was (SIGINT's: conftest's _sigint_as_in_a_terminal)
        interrupts.uninstall()
        interrupts.reset()



_MANAGER_THREAD_RACE = """
import threading
from concurrent.futures import InvalidStateError, ProcessPoolExecutor
import refinery.executors.local  # installs the hook

def noop():
    return 0

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1)
    pool.submit(noop).result()
    manager = pool._executor_manager_thread  # the real thread class the hook must recognise
    for exc in (InvalidStateError("CANCELLED: <Future state=cancelled>"), RuntimeError("a real manager-thread failure")):
        threading.excepthook(threading.ExceptHookArgs((type(exc), exc, None, manager)))
    pool.shutdown()
"""


def test_the_pools_cancelled_future_race_after_ctrl_c_prints_no_traceback(tmp_path):
    """CI caught a double Ctrl-C test printing "Exception in thread ... InvalidStateError: CANCELLED"
    after "interrupted": the pool's manager thread saw its terminated workers die after the run
    had cancelled their futures. That exception of that thread is quieted; any other still prints.
    (In a fresh interpreter: pytest replaces ``threading.excepthook`` during a test.)"""
    import subprocess
    import sys

    script = tmp_path / "race.py"
    script.write_text(_MANAGER_THREAD_RACE)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    assert "InvalidStateError" not in done.stderr
    assert "a real manager-thread failure" in done.stderr


def test_repeated_sigterms_quit_naming_sigterm_not_ctrl_c():
    """A scheduler's repeated SIGTERMs force the quit as repeated Ctrl-Cs do; the forced line names
    the signal that came (it said "a repeated Ctrl-C")."""
    import subprocess
    import sys

    script = ("import os, signal, time\n"
              "from refinery import interrupts\n"
              "interrupts.install()\n"
              "with interrupts.deferred():\n"
              "    for _ in range(3):\n"
              "        os.kill(os.getpid(), signal.SIGTERM)\n"
              "        time.sleep(0.05)\n"
              "    time.sleep(5)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, done.stderr
    assert done.stderr.splitlines()[-1] == ("error: forced to quit by a repeated SIGTERM, without waiting for the run "
                                           "to stop; run the same command again to resume (its partial shards are "
                                           "discarded)")


_TERM_ON_IMPORT = """
import os, signal, sys

class TermOnImport:  # SIGTERM comes while the command line imports refinery.pipeline (~1 s)
    def find_spec(self, name, path=None, target=None):
        if name == "refinery.pipeline":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGTERM)
        return None

from refinery import interrupts
interrupts.ignore_at_exit()
from refinery.cli import main
assert "refinery.pipeline" not in sys.modules
sys.meta_path.insert(0, TermOnImport())
main(["status", "nowhere"], exiting=True)
"""


def test_sigterm_while_the_command_line_starts_is_one_line():
    """The console script imports refinery.pipeline before the command's try: a SIGTERM (or a
    Ctrl-C) in that second printed a KeyboardInterrupt traceback and exited 130 (found sending
    SIGTERM 0.3 s after `refinery run` started). Now one line, exit code 143."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _TERM_ON_IMPORT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, done.stderr
    assert done.stderr.splitlines() == ["error: stopped by SIGTERM; run the same command again to resume"], done.stderr
