"""Ctrl-C reaches every process of the terminal's group, pool workers included. A worker ignores
it (the parent stops the run and prints one line), even when it comes while the worker is still
starting up: that is the moment a one-task-per-process pool spends much of its life in."""

from __future__ import annotations

import os
import signal

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
def test_a_ctrl_c_dropped_by_a_destructor_still_stops_the_run():
    from refinery import interrupts

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
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
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
        signal.signal(signal.SIGINT, previous)


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
