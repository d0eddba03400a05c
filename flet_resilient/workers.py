"""Where offloaded calls run: a self-healing process pool, threads, or any Executor.

Process workers receive functions *by reference* (module + qualified name) and
arguments pre-pickled on the caller's side, so errors about what cannot be
sent are raised early and clearly, and the same call runs unchanged on a
cluster executor (Dask `Client.get_executor()`, Ray, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import importlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import anyio

from flet_resilient.errors import WorkerCrashed
from flet_resilient.metrics import count
from flet_resilient.slots import FairSlots

__all__ = [
    "Call",
    "ExecutorBackend",
    "ProcessBackend",
    "ThreadBackend",
    "call_by_reference",
    "resolve",
]

AUTOGROUP = "/proc/self/autogroup"  # Linux: this session's CPU share and nice


def resolve(module: str, qualname: str) -> Callable[..., Any]:
    """Import `module.qualname`; an `@offload` wrapper resolves to its function."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return getattr(target, "__flet_resilient_offload__", target)


def call_by_reference(module: str, qualname: str, payload: bytes) -> Any:
    """Worker-side entry point: resolve the function, unpickle arguments, call."""
    args, kwargs = pickle.loads(payload)
    return resolve(module, qualname)(*args, **kwargs)


_started: ctypes.c_bool | None = None
"""Worker side: the flag shared with the parent that a job raises as it starts."""


def share_started_flag(flag: ctypes.c_bool) -> None:
    """Worker-side initializer: keep the flag `call_started` raises."""
    global _started
    _started = flag


def call_started(module: str, qualname: str, payload: bytes) -> Any:
    """Worker-side entry point: tell the parent the job started, then call it."""
    if _started is not None:
        _started.value = True
    return call_by_reference(module, qualname, payload)


def warm_up(module: str, nice: int) -> None:
    """Worker-side: lower the CPU priority, exit with the server, import the
    job's module ahead of the job."""
    if nice:
        lower_priority(nice)
    exit_with_parent()
    importlib.import_module(module)


def lower_priority(nice: int) -> None:
    """Lower this process's CPU priority by `nice` against every process on
    the machine, not only its own session's.

    Linux's autogroups share the CPU between sessions first and apply `nice`
    only within one: a nice-19 worker in its server's session competes at
    full weight with other sessions (another server process started in its
    own session, the load balancer, Redis). So the worker leads a session of
    its own and gives that session the same nice."""
    if os.path.exists(AUTOGROUP):
        with contextlib.suppress(OSError):  # e.g. a read-only /proc
            os.setsid()
            with open(AUTOGROUP, "w") as group:
                group.write(str(nice))
    if hasattr(os, "nice"):
        os.nice(nice)


def exit_with_parent() -> None:
    """Exit when the server process that started this worker does: a worker
    in a session of its own is not killed with its server's process group."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


@dataclass(frozen=True)
class Call:
    """One invocation of a sync function, as each backend needs it."""

    fn: Callable[..., Any]
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def by_reference(self) -> tuple[str, str, bytes]:
        """(module, qualname, pickled arguments) or a clear TypeError."""
        try:
            payload = pickle.dumps((self.args, self.kwargs), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(
                f"offload: the arguments of {self.name}() cannot be sent to a worker "
                f"process ({exc}). Pass plain picklable values (not controls, events "
                "or pages), or use kind='thread'."
            ) from exc
        return self.fn.__module__, self.fn.__qualname__, payload


class ThreadBackend:
    """Runs calls in threads (blocking I/O); a timed-out thread is abandoned."""

    def __init__(self, limit: int) -> None:
        self.slots = FairSlots(limit)
        self._limiter = anyio.CapacityLimiter(limit)

    async def run(self, call: Call, timeout: float | None) -> Any:
        # anyio copies context variables, so Flet's current page follows the call.
        with anyio.fail_after(timeout):
            return await anyio.to_thread.run_sync(
                functools.partial(call.fn, *call.args, **call.kwargs),
                abandon_on_cancel=True,
                limiter=self._limiter,
            )


class ExecutorBackend:
    """Runs calls on any `concurrent.futures.Executor` (e.g. a Dask cluster's)."""

    def __init__(self, executor: Executor, limit: int | None = None) -> None:
        self.executor = executor
        self.slots = FairSlots(limit)

    async def run(self, call: Call, timeout: float | None) -> Any:
        future = self.executor.submit(call_by_reference, *call.by_reference())
        try:
            with anyio.fail_after(timeout):
                return await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:
            raise WorkerCrashed(
                f"the executor's worker died while running {call.name}()"
            ) from exc


class _NeverStarted(BrokenProcessPool):
    """The worker process died before the job started: safe to run it again."""


def _crash_message(call: Call, exc: BrokenProcessPool) -> str:
    """Why a call failed with `WorkerCrashed`: died in the job, or twice before it."""
    if isinstance(exc, _NeverStarted):
        return (
            f"two fresh worker processes died before starting {call.name}() "
            "(out of memory or killed?); the next call gets a fresh worker"
        )
    return (
        f"the worker process died while running {call.name}() "
        "(crash, os._exit, out of memory or killed); the next call gets a "
        "fresh worker"
    )


class _Worker:
    """One reusable worker process (a one-process pool), killed on demand."""

    def __init__(self, context: Any, nice: int) -> None:
        self._context = context
        self._nice = nice
        self._pool: ProcessPoolExecutor | None = None
        self._started: ctypes.c_bool | None = None  # raised by the running job
        self._warm = False  # the process started and imported the job's module

    async def run(self, call: Call, timeout: float | None) -> Any:
        """Run `call`; `timeout` counts from when the job starts, not the spawn.

        A worker that died before the job started (e.g. killed by the OOM
        killer while idle) is replaced and the job handed to the fresh one,
        once: only a job that was running fails with `WorkerCrashed`.
        """
        reference = call.by_reference()
        try:
            try:
                return await self._attempt(reference, timeout)
            except _NeverStarted:
                count("offload.retried")  # its worker died before starting it
                return await self._attempt(reference, timeout)
        except BrokenProcessPool as exc:
            raise WorkerCrashed(_crash_message(call, exc)) from exc

    async def _attempt(
        self, reference: tuple[str, str, bytes], timeout: float | None
    ) -> Any:
        """Hand the job to this worker (started first if needed), await its result."""
        pool, started = self._pool, self._started
        if pool is None or started is None:
            started = self._started = self._context.RawValue(ctypes.c_bool, False)
            pool = self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=self._context,
                initializer=share_started_flag,
                initargs=(started,),
            )
        future = None
        try:
            if not self._warm:
                # The first submit starts the process: keep that off the loop.
                warming = await anyio.to_thread.run_sync(
                    pool.submit, warm_up, reference[0], self._nice
                )
                await asyncio.wrap_future(warming)
                self._warm = True
            started.value = False
            future = pool.submit(call_started, *reference)
            with anyio.fail_after(timeout):
                return await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:
            self._discard()
            if future is None or not started.value:
                raise _NeverStarted(*exc.args) from exc
            raise
        except BaseException:
            if future is None or not future.done():  # cancelled or timed out
                self.kill()
            raise

    def kill(self) -> None:
        """Stop the worker now, even one still starting (else the server's
        exit would wait for its import and job); the next call starts afresh."""
        if self._pool is not None:
            # None once the pool shut down (its processes then are gone).
            for process in list((self._pool._processes or {}).values()):
                process.kill()  # SIGKILL; a no-op for one that already exited
        self._discard()

    def _discard(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None
        self._started = None
        self._warm = False


class ProcessBackend:
    """`size` reusable worker processes; a dead or cancelled one is replaced.

    Each worker is its own one-process pool, so a crash fails only the call it
    was running (a shared `ProcessPoolExecutor` would fail every call in flight).
    """

    def __init__(self, size: int, start_method: str, nice: int) -> None:
        context = multiprocessing.get_context(start_method)
        self.slots = FairSlots(size)
        self._workers = [_Worker(context, nice) for _ in range(size)]
        self._idle = list(self._workers)

    async def run(self, call: Call, timeout: float | None) -> Any:
        worker = self._idle.pop()  # a FairSlots slot guarantees one is idle
        try:
            return await worker.run(call, timeout)
        finally:
            self._idle.append(worker)

    def shutdown(self) -> None:
        """Stop every worker process."""
        for worker in self._workers:
            worker.kill()
