"""Bound the memory of idle and disconnected sessions; spill and rehydrate state.

`@evict_idle(...)` on `main(page)` tracks each session's last client event and
evicts (a) connected sessions idle for `idle_ttl`, (b) disconnected ones after
`disconnected_ttl`, (c) the least recently active when `max_sessions` or the
estimated `memory_budget` is exceeded. Before a session goes, the app state
obtained with `await app_state(page)` is msgpack-encoded into a store under
the user's signed client key; when the user comes back (a new session), the
same call returns the restored state, so `main` can rebuild the UI from it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from cachetools import TLRUCache
from flet.controls.page import Page
from flet.messaging.session import Session

from flet_resilient import adapter, memory
from flet_resilient.background import spawn
from flet_resilient.identity import Identity
from flet_resilient.mainwrap import Main, wrap_main
from flet_resilient.metrics import Histogram, count, register_section
from flet_resilient.stores import (
    ResilientStore,
    StateStore,
    default_store,
    store_latency,
)
from flet_resilient.switch import disabled

__all__ = ["app_state", "evict_idle", "save_state"]

logger = logging.getLogger("flet_resilient.evict")

rehydrate_latency = Histogram()
"""What restoring a returning user's state took in `app_state` (ms): reading
the key from the client, the store read and decoding. Rebuilding the page
from the state is the app's `main`, as on a first visit."""

SESSION_BASE_BYTES = 16 * 1024
"""Estimated size of an empty Flet session (measured with tracemalloc)."""
CONTROL_BYTES = 1600
"""Estimated bytes per mounted control (1000 Text controls ~ 1.6 MiB)."""


def estimated_bytes(session: Session) -> int:
    """A cheap estimate of the memory a session holds."""
    return SESSION_BASE_BYTES + CONTROL_BYTES * adapter.control_count(session)


@dataclass
class _Bound:
    """A session's app state and the user token it is saved under."""

    token: str
    state: Any


class _SessionCache(TLRUCache):  # type: ignore[type-arg]
    """cachetools' time-aware LRU, reporting what it drops to its tracker."""

    def __init__(self, tracker: _Tracker, maxsize: int) -> None:
        super().__init__(maxsize, ttu=tracker.expires_at, timer=time.monotonic)
        self.tracker = tracker

    def expire(self, time: float | None = None) -> list[tuple[Session, bool]]:
        expired = super().expire(time)
        for session, was_connected in expired:
            self.tracker.evict_soon(
                session, "idle" if was_connected else "disconnected"
            )
        return expired

    def popitem(self) -> tuple[Session, bool]:
        """Called by cachetools when `max_sessions` is exceeded."""
        return self.evict_least_recent("lru")

    def evict_least_recent(self, reason: str) -> tuple[Session, bool]:
        session, connected = super().popitem()
        self.tracker.evict_soon(session, reason)
        return session, connected


class _Tracker:
    """The sessions of one `@evict_idle` app and how to evict them."""

    def __init__(
        self,
        idle_ttl: float,
        disconnected_ttl: float,
        max_sessions: int | None,
        memory_budget: int | None,
        sweep_interval: float,
        state: Callable[[], Any] | None,
        store: StateStore,
        identity: Identity,
        state_ttl: float,
        on_evict: Callable[[Page], Any] | None,
        release_memory: bool,
    ) -> None:
        self.idle_ttl = idle_ttl
        self.disconnected_ttl = disconnected_ttl
        self.memory_budget = memory_budget
        self.sweep_interval = sweep_interval
        self.state_factory = state
        self.store = store
        self.identity = identity
        self.state_ttl = state_ttl
        self.on_evict = on_evict
        self.release_memory = release_memory
        self.cache = _SessionCache(self, max_sessions or sys.maxsize)
        self._evicting: weakref.WeakSet[Session] = weakref.WeakSet()
        self._sweeper: asyncio.Task[None] | None = None

    def expires_at(self, session: Session, connected: bool, now: float) -> float:
        return now + (self.idle_ttl if connected else self.disconnected_ttl)

    def touch(self, session: Session) -> None:
        """Client activity, a connect or a disconnect: restart its clock."""
        self.cache[session] = session.connection is not None
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = spawn(self._sweep())

    def forget(self, session: Session) -> None:
        self.cache.pop(session, None)

    async def _sweep(self) -> None:
        while self.cache:
            await asyncio.sleep(self.sweep_interval)
            self.cache.expire()
            if self.memory_budget is not None:
                while self.cache and self.estimated_total() > self.memory_budget:
                    self.cache.evict_least_recent("budget")

    def estimated_total(self) -> int:
        return sum(estimated_bytes(s) for s in list(self.cache))

    def evict_soon(self, session: Session, reason: str) -> None:
        spawn(self._evict(session, reason))

    async def _evict(self, session: Session, reason: str) -> None:
        if session in self.cache or session in self._evicting:
            return  # active again since it was picked, or already going
        self._evicting.add(session)
        count(f"evict.{reason}")
        logger.info("evicting session %s (%s)", session.id, reason)
        try:
            await save_state(session.page)
        except TypeError:
            logger.exception("state of session %s not saved", session.id)
        if self.on_evict is not None:
            try:
                result = self.on_evict(session.page)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("on_evict hook failed for session %s", session.id)
        page = session.page
        await adapter.end_session(session)
        adapter.dismantle(page)  # freed now by refcounting, not at the next gc
        if self.release_memory:
            memory.trim_soon()


_trackers: weakref.WeakKeyDictionary[Session, _Tracker] = weakref.WeakKeyDictionary()
_states: weakref.WeakKeyDictionary[Session, _Bound] = weakref.WeakKeyDictionary()


def _touch(session: Session) -> None:
    tracker = _trackers.get(session)
    if tracker is not None:
        tracker.touch(session)


def _forget(session: Session) -> None:
    tracker = _trackers.get(session)
    if tracker is not None:
        tracker.forget(session)


for _event in ("activity", "attached", "disconnected"):
    adapter.on_session(_event, _touch)  # type: ignore[arg-type]
adapter.on_session("closed", _forget)


def encode_state(state: Any) -> bytes:
    """msgpack bytes of a dataclass or dict state; TypeError names a bad field."""
    fields = dataclasses.asdict(state) if dataclasses.is_dataclass(state) else state
    if not isinstance(fields, dict):
        raise TypeError(
            f"app state must be a dataclass or a dict, got {type(state).__name__}"
        )
    for name, value in fields.items():
        try:
            msgpack.packb(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(
                f"app state field {name!r} ({type(value).__name__}) cannot be "
                "stored: msgpack encodes None, bool, int, float, str, bytes and "
                "lists/dicts of these"
            ) from exc
    return msgpack.packb(fields)


def _decode_state(factory: Callable[[], Any], data: bytes) -> Any:
    fields = msgpack.unpackb(data)
    if dataclasses.is_dataclass(factory):
        known = {f.name for f in dataclasses.fields(factory)}
        return factory(**{k: v for k, v in fields.items() if k in known})
    state = factory()
    state.update(fields)
    return state


async def app_state(page: Page) -> Any:
    """This user's app state: restored if they were evicted, else fresh.

    Needs `@evict_idle(state=...)` on main. The first call per session reads
    the user's signed key from the client (so `main` must be async).
    """
    bound = _states.get(page.session)
    if bound is not None:
        return bound.state
    tracker = _trackers.get(page.session)
    if tracker is None or tracker.state_factory is None:
        raise RuntimeError("app_state(page) needs @evict_idle(state=...) on main")
    started = time.perf_counter()
    token = await tracker.identity.of(page)
    data = await tracker.store.get(tracker.identity.store_key(token))
    state = tracker.state_factory()
    if data is not None:
        try:
            state = _decode_state(tracker.state_factory, data)
            count("evict.rehydrated")
            rehydrate_latency.record((time.perf_counter() - started) * 1000)
        except Exception:
            logger.exception("stored state of a returning user could not be read")
    _states[page.session] = _Bound(token, state)
    return state


async def save_state(page: Page) -> None:
    """Store this session's app state now (eviction does it too).

    Raises TypeError naming the field msgpack cannot encode.
    """
    bound = _states.get(page.session)
    tracker = _trackers.get(page.session)
    if bound is None or tracker is None:
        return
    data = encode_state(bound.state)
    await tracker.store.put(
        tracker.identity.store_key(bound.token), data, tracker.state_ttl
    )
    count("evict.saved")


def evict_idle(
    idle_ttl: float = 900,
    *,
    disconnected_ttl: float = 60,
    max_sessions: int | None = None,
    memory_budget: int | None = None,
    state: Callable[[], Any] | None = None,
    store: StateStore | None = None,
    secret_key: str | bytes | None = None,
    on_evict: Callable[[Page], Any | Awaitable[Any]] | None = None,
    sweep_interval: float = 1.0,
    state_ttl: float = 7 * 24 * 3600,
    release_memory: bool = True,
) -> Callable[[Main], Main]:
    """Decorate `main(page)` so idle and disconnected sessions free their memory.

    Args:
        idle_ttl: seconds without client events before a connected session goes.
        disconnected_ttl: seconds a disconnected session is kept (Flet: 3600).
        max_sessions: most sessions kept; the least recently active go first.
        memory_budget: bytes of estimated session memory kept (see
            `estimated_bytes`); the least recently active go first.
        state: a dataclass (or dict factory) for `await app_state(page)`.
        store: where evicted state waits (default: a disk store; `RedisStore`
            to share it between workers). Failures fall back to memory.
        secret_key: signs users' client keys (default: $FLET_SECRET_KEY, else
            random per process; set one when several processes share a store).
        on_evict: called with the page just before its session is evicted.
        sweep_interval: seconds between expiry checks.
        state_ttl: seconds stored state is kept for a user who does not return.
        release_memory: after evictions, return freed memory to the OS (glibc
            `malloc_trim(0)` in a worker thread, once evictions pause; see
            docs/evict.md for `PYTHONMALLOC=malloc`, which lets it return more).
    """
    if callable(idle_ttl):
        raise TypeError("use @evict_idle() or @evict_idle(idle_ttl=...)")
    for name, value in (
        ("idle_ttl", idle_ttl),
        ("disconnected_ttl", disconnected_ttl),
        ("sweep_interval", sweep_interval),
        ("state_ttl", state_ttl),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    for name, limit in (
        ("max_sessions", max_sessions),
        ("memory_budget", memory_budget),
    ):
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{name} must be a positive int or None, got {limit!r}")
    if state is not None and not callable(state):
        raise TypeError(f"state must be a dataclass or a factory, got {state!r}")
    if not isinstance(release_memory, bool):
        raise TypeError(f"release_memory must be True or False, got {release_memory!r}")
    if on_evict is not None and not callable(on_evict):
        raise TypeError(f"on_evict must be callable, got {on_evict!r}")
    tracker = _Tracker(
        idle_ttl,
        disconnected_ttl,
        max_sessions,
        memory_budget,
        sweep_interval,
        state,
        ResilientStore(store or default_store()),
        Identity(secret_key),
        state_ttl,
        on_evict,
        release_memory,
    )

    def install(page: Page) -> None:
        _trackers[page.session] = tracker  # app_state works even when disabled
        if not disabled():
            tracker.touch(page.session)

    def decorate(main: Main) -> Main:
        return wrap_main(main, install, "evict_idle")

    return decorate


def _section() -> dict[str, Any]:
    trackers = {id(t): t for t in list(_trackers.values())}.values()
    sessions = [s for t in trackers for s in list(t.cache)]
    total = sum(estimated_bytes(s) for s in sessions)
    return {
        "sessions": len(sessions),
        "estimated_bytes": total,
        "estimated_bytes_per_session": total // len(sessions) if sessions else 0,
        "store_latency": store_latency.snapshot(),
        "rehydrate": rehydrate_latency.snapshot(),
    }


register_section("evict", _section)
