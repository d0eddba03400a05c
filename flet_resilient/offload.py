"""`@offload`: run sync work off the event loop so one user's job stalls nobody.

`@offload` makes a module-level sync function awaitable in a process pool;
`@offload(kind="thread")` runs blocking I/O (or a whole sync Flet handler) in a
thread. Calls are limited per session (with a busy policy) and globally (shared
round-robin between sessions), can time out, and are cancelled when their
session closes or is evicted.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Executor
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    overload,
)

import anyio

from flet_resilient import _flet
from flet_resilient.checks import check_positive_int
from flet_resilient.errors import JobCancelled, JobDropped, OffloadTimeout
from flet_resilient.metrics import count, register_section
from flet_resilient.session_data import data_of, find
from flet_resilient.slots import POLICIES, FairSlots, Policy
from flet_resilient.switch import disabled
from flet_resilient.workers import (
    Call,
    ExecutorBackend,
    ProcessBackend,
    ThreadBackend,
    resolve,
)

if TYPE_CHECKING:
    from flet.messaging.session import Session

__all__ = ["Offloaded", "configure_offload", "offload"]

logger = logging.getLogger("flet_resilient.offload")

P = ParamSpec("P")
R = TypeVar("R")
Kind = Literal["process", "thread"]
KINDS: tuple[Kind, ...] = ("process", "thread")


class Offloaded(Protocol[P, R]):
    """What `@offload` returns: an async callable that keeps the original."""

    sync: Callable[P, R]
    __wrapped__: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]: ...


DEFAULT_PROCESSES = os.cpu_count() or 2
"""Every core works on jobs; the loop keeps its priority through `nice`."""
DEFAULT_THREADS = 32
DEFAULT_START_METHOD = "spawn"
DEFAULT_WORKER_NICE = 19
"""Workers run at the lowest CPU priority: the kernel gives the event loop a
core whenever it wants one (weight 1024 against 15), and the jobs every cycle
the loop leaves, so bystanders stay fast and jobs are not starved."""


class _Backends:
    """The process-wide backends, created lazily and replaceable by configure."""

    def __init__(self) -> None:
        self.processes = DEFAULT_PROCESSES
        self.threads = DEFAULT_THREADS
        self.start_method = DEFAULT_START_METHOD
        self.worker_nice = DEFAULT_WORKER_NICE
        self.executor: Executor | None = None
        self._process: ProcessBackend | None = None
        self._thread: ThreadBackend | None = None
        self._custom: dict[Executor, ExecutorBackend] = {}

    def for_call(
        self, kind: Kind, executor: Executor | None
    ) -> ProcessBackend | ThreadBackend | ExecutorBackend:
        if kind == "thread":
            if self._thread is None:
                self._thread = ThreadBackend(self.threads)
            return self._thread
        executor = executor or self.executor
        if executor is not None:
            if executor not in self._custom:
                self._custom[executor] = ExecutorBackend(executor)
            return self._custom[executor]
        if self._process is None:
            self._process = ProcessBackend(
                self.processes, self.start_method, self.worker_nice
            )
        return self._process

    def reset(self) -> None:
        if self._process is not None:
            self._process.shutdown()
        self._process = self._thread = None
        self._custom.clear()

    def section(self) -> dict[str, Any]:
        backends: dict[str, ProcessBackend | ThreadBackend | ExecutorBackend | None] = {
            "process": self._process,
            "thread": self._thread,
        }
        backends.update({type(e).__name__: b for e, b in self._custom.items()})
        return {
            name: {"running": b.slots.in_use, "queued": b.slots.waiting}
            for name, b in backends.items()
            if b is not None
        }


_backends = _Backends()


def configure_offload(
    *,
    processes: int = DEFAULT_PROCESSES,
    threads: int = DEFAULT_THREADS,
    executor: Executor | None = None,
    start_method: str = DEFAULT_START_METHOD,
    worker_nice: int = DEFAULT_WORKER_NICE,
) -> None:
    """Set the global limits and default executor for every `@offload`.

    `processes`/`threads` are the global worker limits (shared round-robin
    between sessions; by default one core is left to the event loop);
    `executor` sends process-kind calls to any `concurrent.futures.Executor`
    instead of the built-in pool (e.g. a Dask `Client.get_executor()`);
    `worker_nice` lowers the built-in workers' CPU priority (POSIX; 0 keeps
    it). Running pools are replaced on the next call; no arguments restores
    the defaults.
    """
    check_positive_int("processes", processes)
    check_positive_int("threads", threads)
    if not isinstance(worker_nice, int) or not 0 <= worker_nice <= 19:
        raise ValueError(
            f"worker_nice must be an int from 0 to 19, got {worker_nice!r}"
        )
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor, got {executor!r}"
        )
    _backends.reset()
    _backends.processes = processes
    _backends.threads = threads
    _backends.executor = executor
    _backends.start_method = start_method
    _backends.worker_nice = worker_nice


def _cancel_session_jobs(session: Any) -> None:
    """A closed session's running calls are cancelled (their results are moot)."""
    data = find(session)
    jobs = list(data.jobs) if data is not None else []
    if data is not None:
        data.jobs.clear()
    for scope in jobs:
        scope.cancel()


_flet.on_session("closed", _cancel_session_jobs)
register_section("offload", _backends.section)


class _Job:
    """The settings of one decorated function and its per-session gates."""

    def __init__(
        self,
        fn: Callable[..., Any],
        kind: Kind,
        timeout: float | None,
        per_session: int | None,
        policy: Policy,
        executor: Executor | None,
    ) -> None:
        self.fn = fn
        self.name = getattr(fn, "__qualname__", repr(fn))
        self.kind = kind
        self.timeout = timeout
        self.per_session = per_session
        self.policy = policy
        self.executor = executor
        self._gates: dict[Hashable, FairSlots] = {}
        self._reference_checked = False

    def _check_reference(self) -> None:
        """A process worker must be able to import the function by name."""
        if self._reference_checked or self.kind == "thread":
            return
        try:
            found = resolve(self.fn.__module__, self.fn.__qualname__)
        except (ImportError, AttributeError) as exc:
            raise TypeError(
                f"offload: {self.name}() cannot be found as "
                f"{self.fn.__module__}.{self.fn.__qualname__}, so a worker process "
                "cannot import it; define it at module level under its own name."
            ) from exc
        if found is not self.fn:
            raise TypeError(
                f"offload: {self.fn.__module__}.{self.fn.__qualname__} is not the "
                f"decorated function {self.name}(); give it its own module-level name."
            )
        self._reference_checked = True

    async def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        handler_mode = bool(args) and _flet.is_flet_event(args[0])
        try:
            return await self._run(Call(self.fn, self.name, args, kwargs))
        except (JobDropped, JobCancelled) as exc:
            if not handler_mode:
                raise
            logger.debug("handler %s not run: %s", self.name, exc)
            return None

    async def _run(self, call: Call) -> Any:
        self._check_reference()
        page = _flet.current_page()
        session = page.session if page is not None else None
        session_id = session.id if session is not None else None
        backend = _backends.for_call(self.kind, self.executor)
        gate = self._gate(session_id)
        count("offload.calls")
        with anyio.CancelScope() as scope:
            if session is not None:
                data_of(session).jobs.add(scope)
            try:
                async with gate.slot(), backend.slots.slot(session_id):
                    result = await backend.run(call, self.timeout)
            except TimeoutError as exc:
                count("offload.timeouts")
                raise OffloadTimeout(
                    f"{self.name}() ran longer than its timeout of {self.timeout} s "
                    "and was stopped"
                ) from exc
            except JobDropped:
                count("offload.dropped")
                raise
            except Exception:
                count("offload.failed")
                raise
            finally:
                self._forget(session, scope, gate)
        if scope.cancelled_caught:
            count("offload.cancelled")
            raise JobCancelled(f"{self.name}() was cancelled: its session closed")
        count("offload.completed")
        return result

    def _gate(self, session_id: str | None) -> FairSlots:
        gate = self._gates.get(session_id)
        if gate is None:
            gate = self._gates[session_id] = FairSlots(self.per_session, self.policy)
        return gate

    def _forget(
        self, session: Session | None, scope: anyio.CancelScope, gate: FairSlots
    ) -> None:
        data = find(session) if session is not None else None
        if data is not None:
            data.jobs.discard(scope)
        if gate.idle:
            self._gates.pop(session.id if session is not None else None, None)


@overload
def offload(fn: Callable[P, R], /) -> Offloaded[P, R]: ...


@overload
def offload(
    *,
    kind: Kind = "process",
    timeout: float | None = None,
    per_session: int | None = None,
    policy: Policy = "queue",
    executor: Executor | None = None,
) -> Callable[[Callable[P, R]], Offloaded[P, R]]: ...


def offload(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    kind: Kind = "process",
    timeout: float | None = None,
    per_session: int | None = None,
    policy: Policy = "queue",
    executor: Executor | None = None,
) -> Any:
    """Make a sync function awaitable, running it off the event loop.

    Args:
        kind: "process" (CPU work, module-level functions, picklable args) or
            "thread" (blocking I/O, or a sync Flet handler that touches controls).
        timeout: seconds a call may run; then `OffloadTimeout` is raised and
            its worker freed (a process is killed, a thread abandoned).
        per_session: concurrent calls allowed per user session (None: no limit).
        policy: when a session is at `per_session`: "queue" waits, "drop"
            raises `JobDropped`, "latest" waits and replaces an older waiter.
        executor: a `concurrent.futures.Executor` for process-kind calls
            (e.g. Dask's `Client.get_executor()`); default: the built-in pool.

    Called as a Flet handler (first argument a Flet event), a dropped or
    cancelled call is skipped silently instead of raising.
    """
    if kind not in KINDS:
        raise ValueError(f"offload: kind must be one of {KINDS}, got {kind!r}")
    if policy not in POLICIES:
        raise ValueError(f"offload: policy must be one of {POLICIES}, got {policy!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"offload: timeout must be > 0 seconds, got {timeout!r}")
    if per_session is not None and (
        not isinstance(per_session, int) or per_session < 1
    ):
        raise ValueError(
            f"offload: per_session must be a positive int, got {per_session!r}"
        )
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(
            f"offload: executor must be a concurrent.futures.Executor, got {executor!r}"
        )
    if executor is not None and kind == "thread":
        raise ValueError("offload: executor= applies to kind='process' calls only")

    def decorate(target: Callable[..., Any]) -> Any:
        _check_target(target, kind)
        job = _Job(target, kind, timeout, per_session, policy, executor)

        @functools.wraps(target)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if disabled():
                return target(*args, **kwargs)  # plain Flet: inline on the loop
            return await job(args, kwargs)

        wrapper.sync = target  # type: ignore[attr-defined]
        wrapper.__flet_resilient_offload__ = target  # type: ignore[attr-defined]
        return wrapper

    return decorate(fn) if fn is not None else decorate


def _check_target(target: Any, kind: Kind) -> None:
    """Reject at decoration time what can never work."""
    if not callable(target):
        raise TypeError(f"offload: expected a function, got {target!r}")
    name = getattr(target, "__qualname__", repr(target))
    if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        raise TypeError(
            f"offload: {name} is async; offload runs sync functions "
            "(an async function should await instead of blocking)"
        )
    if kind == "thread":
        return
    if not inspect.isfunction(target) or "<lambda>" in name or "<locals>" in name:
        raise TypeError(
            f"offload: {name} cannot run in a worker process: workers import "
            "functions by module and name, so lambdas, closures and nested "
            "functions cannot be sent. Define it at module level, or use "
            "kind='thread'."
        )
