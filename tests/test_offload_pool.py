"""The process pool: reuse, timeouts, crashes, unpicklable work, clear errors."""

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import offload_jobs
import psutil
import pytest

from flet_resilient import (
    OffloadTimeout,
    WorkerCrashed,
    configure_offload,
    offload,
    stats,
)
from flet_resilient.testing import wait_until


async def test_awaitable_and_still_callable_synchronously():
    assert await offload_jobs.square(12) == 144
    assert offload_jobs.square.sync(5) == 25
    assert offload_jobs.square.__wrapped__(6) == 36


async def test_workers_are_reused():
    pids = {await offload_jobs.worker_pid() for _ in range(6)}
    assert len(pids) <= 2  # the pool has two workers: no process per call


async def test_timeout_raises_clear_error_and_frees_the_slot():
    before = stats()["counters"].get("offload.timeouts", 0)
    with pytest.raises(OffloadTimeout, match=r"sleepy\(\) ran longer than its timeout"):
        await offload_jobs.sleepy(30)
    assert stats()["counters"]["offload.timeouts"] == before + 1
    assert stats()["offload"]["process"]["running"] == 0
    # The timed-out worker was killed; the next call is served normally.
    assert await offload_jobs.sleepy(0) > 0


async def test_worker_crash_fails_only_that_call_then_pool_heals(tmp_path):
    started, release = tmp_path / "started", tmp_path / "release"
    running = asyncio.ensure_future(
        offload_jobs.note_then_wait(str(started), str(release))
    )
    await wait_until(started.exists, timeout=30)  # it runs on the other worker
    with pytest.raises(WorkerCrashed, match=r"crash\(\)"):
        await offload_jobs.crash()
    release.touch()  # it was running all through the crash
    assert await running == "released"  # the call on the healthy worker is unaffected
    assert await offload_jobs.square(9) == 81  # a fresh worker serves the next call


@pytest.mark.parametrize("noticed", [True, False], ids=["reaped", "just-killed"])
async def test_an_idle_worker_killed_meanwhile_fails_no_call(noticed):
    retried = stats()["counters"].get("offload.retried", 0)
    idle = set(await asyncio.gather(*(offload_jobs.worker_pid() for _ in range(2))))
    assert len(idle) == 2  # both workers ran a job and are idle now
    for pid in idle:
        os.kill(pid, signal.SIGKILL)  # e.g. the OOM killer, between two jobs
    if noticed:  # the pool reaped them: it is broken before the next call
        await wait_until(lambda: not any(psutil.pid_exists(p) for p in idle))
    pids = await asyncio.gather(*(offload_jobs.worker_pid() for _ in range(2)))
    assert not idle & set(pids)  # served by fresh workers
    assert stats()["counters"]["offload.retried"] - retried == 2
    assert await offload_jobs.square(7) == 49


async def test_a_job_killed_while_running_fails_and_is_not_retried(tmp_path):
    notes = tmp_path / "runs"
    with pytest.raises(WorkerCrashed, match=r"note_then_die\(\)"):
        await offload_jobs.note_then_die(str(notes))
    assert len(notes.read_text().splitlines()) == 1  # ran once: never re-run
    assert await offload_jobs.square(3) == 9


def test_lambda_and_closure_rejected_at_decoration_time():
    with pytest.raises(TypeError, match="lambda"):
        offload(lambda x: x)

    def make():
        def inner(x):
            return x

        return inner

    with pytest.raises(TypeError, match=r"make\.<locals>\.inner"):
        offload(make())


def test_bad_options_rejected():
    with pytest.raises(ValueError, match="kind"):
        offload(kind="gpu")
    with pytest.raises(ValueError, match="policy"):
        offload(policy="sometimes")
    with pytest.raises(ValueError, match="timeout"):
        offload(timeout=0)
    with pytest.raises(ValueError, match="per_session"):
        offload(per_session=0)
    with pytest.raises(TypeError, match="executor"):
        offload(executor="dask")

    async def coroutine():
        return 1

    with pytest.raises(TypeError, match="is async"):
        offload(coroutine)


async def test_unpicklable_argument_names_the_function():
    with pytest.raises(TypeError, match=r"arguments of square\(\) cannot be sent"):
        await offload_jobs.square(threading.Lock())


async def test_exceptions_from_the_job_propagate():
    with pytest.raises(TypeError):
        await offload_jobs.square("x")


async def test_workers_run_at_a_lower_cpu_priority_than_the_loop():
    module = importlib.import_module("flet_resilient.offload")  # not the function
    expected = os.nice(0) + module.DEFAULT_WORKER_NICE
    assert await offload_jobs.niceness() == min(19, expected)


def _our_autogroup() -> str:
    """This process's autogroup ("/autogroup-N"), or "" where the kernel has
    none: no file, or an empty one (some sandboxes keep the file but no groups)."""
    try:
        with open("/proc/self/autogroup") as mine:
            return (mine.read().split() or [""])[0]
    except OSError:
        return ""


@pytest.mark.skipif(not _our_autogroup(), reason="no autogroups on this kernel")
async def test_workers_are_low_priority_against_other_sessions_too():
    """Linux shares the CPU between sessions (autogroups) before `nice` counts:
    the worker leads its own session at the workers' nice, or it would take as
    much CPU as the loop of another server process, HAProxy or Redis."""
    module = importlib.import_module("flet_resilient.offload")  # not the function
    ours = _our_autogroup()
    group, _, nice = (await offload_jobs.autogroup()).split()
    assert group != ours
    assert int(nice) == module.DEFAULT_WORKER_NICE


SERVER = """
import asyncio, sys
sys.path.insert(0, {tests!r})
import offload_jobs
print(asyncio.run(offload_jobs.worker_pid()), flush=True)
sys.stdin.read()  # serve until killed
"""


async def test_a_worker_exits_when_its_server_process_is_killed():
    """A worker outside its server's process group does not outlive it."""
    code = SERVER.format(tests=str(Path(__file__).parent))
    server = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        worker = psutil.Process(int(server.stdout.readline()))
    finally:
        server.kill()
        server.wait()

    def gone() -> bool:
        try:
            return worker.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    try:
        await wait_until(gone, timeout=15)
    finally:
        if not gone():
            worker.kill()


def test_configure_without_arguments_restores_the_defaults():
    module = importlib.import_module("flet_resilient.offload")  # not the function

    configure_offload(processes=5, threads=3, worker_nice=0)
    configure_offload()
    assert module._backends.processes == module.DEFAULT_PROCESSES
    assert module._backends.threads == module.DEFAULT_THREADS
    assert module._backends.worker_nice == module.DEFAULT_WORKER_NICE
    configure_offload(processes=2)  # what the rest of this suite uses
    with pytest.raises(ValueError, match="worker_nice"):
        configure_offload(worker_nice=40)


CANCELLED_WHILE_STARTING = """
import asyncio, sys
sys.path.insert(0, {tests!r})
import slow_import_jobs

async def main():
    call = asyncio.ensure_future(slow_import_jobs.noop())
    await asyncio.sleep(1)  # the worker process is starting: importing the job
    call.cancel()

asyncio.run(main())  # then the interpreter exits
"""


def test_a_call_cancelled_while_its_worker_starts_does_not_hold_the_exit():
    """A worker killed before it reported its pid still dies: the server's
    exit (after a drain, Ctrl-C, a deploy) waits for nothing."""
    code = CANCELLED_WHILE_STARTING.format(tests=str(Path(__file__).parent))
    server = subprocess.Popen([sys.executable, "-c", code])
    try:
        # Far less than the worker's import: only a killed worker lets it exit.
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            for child in psutil.Process(server.pid).children(recursive=True):
                child.kill()
            server.kill()
            server.wait()
