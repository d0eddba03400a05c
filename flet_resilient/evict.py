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
import inspect
import logging
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from cachetools import TLRUCache
from flet.controls.page import Page
from flet.messaging.session import Session

from flet_resilient import _flet, gcfreeze, memory, persist, recycle
from flet_resilient import rebalance as rebalancing
from flet_resilient.background import spawn
from flet_resilient.checks import check_bool, check_positive, check_seconds
from flet_resilient.codec import decode_state, encode_state
from flet_resilient.durable import DurableStore, StoreUnavailable, store_latency
from flet_resilient.identity import Identity
from flet_resilient.mainwrap import Main, wrap_main
from flet_resilient.metrics import Histogram, count, register_section
from flet_resilient.secret import app_secret
from flet_resilient.session_data import SessionField
from flet_resilient.stores import StateStore, default_store
from flet_resilient.switch import disabled

__all__ = ["EVICTION_REASONS", "app_state", "evict_idle", "save_state"]

Reason = Literal["idle", "disconnected", "lru", "budget", "rebalance"]
EVICTION_REASONS: tuple[Reason, ...] = get_args(Reason)
"""Why a session is evicted; each is counted as `evict.<reason>`."""

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
    return SESSION_BASE_BYTES + CONTROL_BYTES * _flet.control_count(session)


class _SessionCache(TLRUCache):
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

    def evict_least_recent(self, reason: Reason) -> tuple[Session, bool]:
        session, connected = super().popitem()
        self.tracker.evict_soon(session, reason)
        return session, connected


@dataclass(frozen=True)
class EvictOptions:
    """What `evict_idle` was asked for about keeping sessions (checked when made)."""

    idle_ttl: float
    disconnected_ttl: float
    max_sessions: int | None
    memory_budget: int | None
    sweep_interval: float
    state: Callable[[], Any] | None
    on_evict: Callable[[Page], Any] | None
    release_memory: bool

    def __post_init__(self) -> None:
        for name in ("idle_ttl", "disconnected_ttl", "sweep_interval"):
            check_seconds(name, getattr(self, name))
        for name in ("max_sessions", "memory_budget"):
            _check_limit(name, getattr(self, name))
        _validate_callables(self.state, self.on_evict, self.release_memory)


class _Tracker:
    """The sessions of one `@evict_idle` app and how to evict them."""

    def __init__(self, options: EvictOptions, policy: persist.SavePolicy) -> None:
        self.idle_ttl = options.idle_ttl
        self.disconnected_ttl = options.disconnected_ttl
        self.memory_budget = options.memory_budget
        self.sweep_interval = options.sweep_interval
        self.state_factory = options.state
        self.policy = policy
        self.on_evict = options.on_evict
        self.release_memory = options.release_memory
        self.cache = _SessionCache(self, options.max_sessions or sys.maxsize)
        self._evicting: weakref.WeakSet[Session] = weakref.WeakSet()
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def expires_at(self, session: Session, connected: bool, now: float) -> float:
        return now + (self.idle_ttl if connected else self.disconnected_ttl)

    def touch(self, session: Session) -> None:
        """Client activity, a connect or a disconnect: restart its clock."""
        self.cache[session] = session.connection is not None
        if self._sweeper is None or self._sweeper.done():
            self._loop = asyncio.get_running_loop()
            self._sweeper = spawn(self._sweep())

    def forget(self, session: Session) -> None:
        self.cache.pop(session, None)

    def send_away(self, session: Session) -> None:
        """Evict a connected session so its user reconnects to another worker."""
        self.forget(session)
        spawn(self._evict(session, "rebalance"))

    async def _sweep(self) -> None:
        while self.cache:
            await asyncio.sleep(self.sweep_interval)
            self.cache.expire()
            if self.memory_budget is not None:
                while self.cache and self.estimated_total() > self.memory_budget:
                    self.cache.evict_least_recent("budget")

    def estimated_total(self) -> int:
        return sum(estimated_bytes(s) for s in list(self.cache))

    def evict_soon(self, session: Session, reason: Reason) -> None:
        """Evict on the loop; from a thread too (e.g. `stats()` from a metrics
        endpoint, whose look at the cache expires what is due)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self.evict_soon, session, reason)
            return  # (a closed loop: its server, and so the session, is gone)
        spawn(self._evict(session, reason))

    async def _evict(self, session: Session, reason: Reason) -> None:
        if session in self.cache or session in self._evicting:
            return  # active again since it was picked, or already going
        self._evicting.add(session)
        count(f"evict.{reason}")
        tag = _flet.session_tag(session)
        logger.info("evicting session %s (%s)", tag, reason)
        try:
            await persist.save(session)
        except TypeError:
            logger.exception("state of session %s not saved", tag)
        if self.on_evict is not None:
            try:
                result = self.on_evict(session.page)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("on_evict hook failed for session %s", tag)
        page = session.page
        recycle.session_evicted(estimated_bytes(session))
        # A user moved to another worker is sent away as by a drain.
        await _flet.end_session(session, 1012 if reason == "rebalance" else 1000)
        _flet.dismantle(page)  # freed now by refcounting, not at the next gc
        if self.release_memory:
            memory.trim_soon()


_trackers: SessionField[_Tracker] = SessionField("tracker")
_TRACKER_ATTRIBUTE = "__flet_resilient_evict__"
"""Where a decorated main carries its tracker (for sessions it never ran on)."""


def _touch(session: Session) -> None:
    tracker = _trackers.get(session)
    if tracker is not None:
        tracker.touch(session)


def _forget(session: Session) -> None:
    tracker = _trackers.get(session)
    if tracker is not None:
        tracker.forget(session)


for _event in ("activity", "attached", "disconnected"):
    _flet.on_session(_event, _touch)
_flet.on_session("closed", _forget)


def _track_created(session: Session) -> None:
    """A session Flet just made: tracked from now, even if main never runs."""
    tracker = getattr(_flet.session_main(session), _TRACKER_ATTRIBUTE, None)
    if isinstance(tracker, _Tracker) and session not in _trackers:
        _trackers[session] = tracker
        tracker.touch(session)


_flet.on_session("created", _track_created)


async def app_state(page: Page) -> Any:
    """This user's app state: their newest saved one if any, else fresh.

    Needs `@evict_idle(state=...)` on main. The first call per session reads
    the user's signed key from the client (so `main` must be async). Changes
    are saved behind (see `persist`); no save call is needed.
    """
    session = page.session
    held = persist.bound(session)
    if held is not None:
        return held.state
    tracker = _trackers.get(session)
    if tracker is None or tracker.state_factory is None:
        raise RuntimeError("app_state(page) needs @evict_idle(state=...) on main")
    started = time.perf_counter()
    policy = tracker.policy
    token = await policy.identity.of(page)
    state, version, provisional = tracker.state_factory(), 0, False
    try:
        record = await policy.store.read(policy.identity.store_key(token))
    except StoreUnavailable as outage:  # this process's unsent save, if any
        record = outage.kept
        provisional = record is None or record[0] < persist.PROVISIONAL_BELOW
        count("state.provisional")
    if record is not None:
        try:
            state, version = decode_state(tracker.state_factory, record[1]), record[0]
            _count_restore(session)
            rebalancing.arrived(token)
            rehydrate_latency.record((time.perf_counter() - started) * 1000)
        except Exception:
            logger.exception("stored state of a returning user could not be read")
    saved = encode_state(state)
    persist.bind(
        session, persist.Bound(token, state, saved, version, provisional, policy)
    )
    return state


def _count_restore(session: Session) -> None:
    count("evict.rehydrated")
    if _flet.came_from_elsewhere(session):
        count("state.restored_elsewhere")  # its old session is on another worker


async def save_state(page: Page) -> None:
    """Store this session's app state now, as its newest version.

    Write-behind does this after client events; call it after a change made
    outside one (e.g. a background task). Raises TypeError naming the field
    msgpack cannot encode.
    """
    held = persist.bound(page.session)
    if held is not None:
        held.version = persist.now_version()
        await persist.save(page.session)


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
    save_delay: float | None = 1.0,
    store_timeout: float = 0.5,
    recycle_after: int | None = None,
    recycle_rss: int | None = None,
    recycle_idle_rss: int | None = None,
    name: str | None = None,
    freeze_gc: bool = True,
    rebalance: bool = True,
) -> Callable[[Main], Main]:
    """Decorate `main(page)` so idle and disconnected sessions free their memory
    and app state outlives its session and its worker.

    Args:
        idle_ttl: seconds without client events before a connected session goes.
        disconnected_ttl: seconds a disconnected session is kept (Flet: 3600).
        max_sessions: most sessions kept; the least recently active go first.
        memory_budget: bytes of estimated session memory kept (see
            `estimated_bytes`); the least recently active go first.
        state: a dataclass (or dict factory) for `await app_state(page)`.
        store: where app state is kept (default: a disk store for this
            machine; `RedisStore` to share it between machines' workers).
        secret_key: signs users' client keys (default: $FLET_SECRET_KEY, else
            a machine secret kept in the state directory; a shared store
            requires one of the first two).
        on_evict: called with the page just before its session is evicted.
        sweep_interval: seconds between expiry checks.
        state_ttl: seconds stored state is kept for a user who does not return.
        release_memory: after evictions, return freed memory to the OS (glibc
            `malloc_trim(0)` in a worker thread, once evictions pause; see
            docs/evict.md for `PYTHONMALLOC=malloc`, which lets it return more).
        save_delay: changed state is written behind at most once per this many
            seconds after client events, and at once on disconnect (None: only
            on eviction, drain and `save_state`).
        store_timeout: seconds any store call may take before it counts as
            failed (its write is then kept and retried).
        recycle_after: drain and exit this worker after serving this many
            sessions (its process manager starts a fresh one).
        recycle_rss: likewise once the process's resident memory exceeds this
            many bytes.
        recycle_idle_rss: likewise once evictions have paused and the
            resident memory exceeds the worker's RSS at its first session +
            its live sessions' estimate by more than this many bytes and more
            than that estimate (counting at most what its evicted sessions
            held), one worker per machine at a time: the burst's freed memory
            goes back, only the live sessions move (see `flet_resilient.recycle`).
        name: this app's identity: its own browser key and store namespace,
            so apps on one origin never read each other's state (default: the
            module and name of `main`; set it to keep keys across a rename).
        freeze_gc: after page builds and events, move what survived out of the
            garbage collector's view, so its full passes stop pausing the loop
            for every live page (process-wide; see `flet_resilient.gcfreeze`).
        rebalance: with a shared store, a worker holding more than its share
            of the fleet's users (after a deploy: the worker restarted last
            starts empty) sends its least recently active ones to reconnect
            elsewhere, a few at a time (see `flet_resilient.rebalance`).
    """
    if callable(idle_ttl):
        raise TypeError("use @evict_idle() or @evict_idle(idle_ttl=...)")
    options = EvictOptions(
        idle_ttl,
        disconnected_ttl,
        max_sessions,
        memory_budget,
        sweep_interval,
        state,
        on_evict,
        release_memory,
    )
    _validate(
        state_ttl=state_ttl,
        store_timeout=store_timeout,
        save_delay=save_delay,
        recycle_after=recycle_after,
        recycle_rss=recycle_rss,
        recycle_idle_rss=recycle_idle_rss,
    )
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty string or None, got {name!r}")
    durable = DurableStore(store or default_store(), store_timeout)
    secret = app_secret(secret_key, durable.shared)
    recycler = recycle.Recycler.configure(recycle_after, recycle_rss, recycle_idle_rss)
    recycler.live_bytes = _live_bytes
    check_bool("freeze_gc", freeze_gc)
    check_bool("rebalance", rebalance)
    if freeze_gc and not disabled():
        gcfreeze.enable()

    def decorate(main: Main) -> Main:
        identity = Identity(secret, app=name or _app_name(main))
        policy = persist.SavePolicy(durable, identity, state_ttl, save_delay)
        return _tracked(main, _Tracker(options, policy), recycler, rebalance)

    return decorate


def _tracked(
    main: Main, tracker: _Tracker, recycler: recycle.Recycler, rebalance: bool
) -> Main:
    """`main` whose sessions `tracker` evicts (and `recycler` counts, and, with
    `rebalance` and a shared store, the fleet may move)."""
    if rebalance and tracker.policy.store.shared and not disabled():
        rebalancing.enable(tracker.policy, tracker.send_away)

    def install(page: Page) -> None:
        _trackers[page.session] = tracker  # app_state works even when disabled
        if not disabled():
            tracker.touch(page.session)
            recycler.session_started()

    wrapped = wrap_main(main, install, "evict_idle")
    setattr(wrapped, _TRACKER_ATTRIBUTE, tracker)
    return wrapped


def _app_name(main: Callable[..., Any]) -> str:
    """An app's default identity: where its main is defined."""
    module = getattr(main, "__module__", None) or "app"
    return f"{module}:{getattr(main, '__qualname__', type(main).__name__)}"


def _validate(**options: Any) -> None:
    """Seconds must be > 0 (`save_delay` may be None); limits positive ints."""
    for name in ("state_ttl", "store_timeout", "save_delay"):
        check_seconds(name, options[name], optional=name == "save_delay")
    for name in ("recycle_after", "recycle_rss", "recycle_idle_rss"):
        _check_limit(name, options[name])


def _check_limit(name: str, limit: Any) -> None:
    """A limit is a positive int, or None for no limit."""
    check_positive(
        name, limit, expected="a positive int or None", optional=True, integral=True
    )


def _validate_callables(state: Any, on_evict: Any, release_memory: Any) -> None:
    """`state` and `on_evict` are callables (or None), `release_memory` a bool."""
    if state is not None and not callable(state):
        raise TypeError(f"state must be a dataclass or a factory, got {state!r}")
    check_bool("release_memory", release_memory)
    if on_evict is not None and not callable(on_evict):
        raise TypeError(f"on_evict must be callable, got {on_evict!r}")


def _live_sessions() -> list[Session]:
    """The sessions every `@evict_idle` app of this process keeps."""
    trackers = {id(t): t for t in list(_trackers.values())}.values()
    return [s for t in trackers for s in list(t.cache)]


def _live_bytes() -> int:
    """Their estimated memory, for `recycle_idle_rss`."""
    return sum(estimated_bytes(s) for s in _live_sessions())


def _section() -> dict[str, Any]:
    sessions = _live_sessions()
    total = sum(estimated_bytes(s) for s in sessions)
    return {
        "sessions": len(sessions),
        "estimated_bytes": total,
        "estimated_bytes_per_session": total // len(sessions) if sessions else 0,
        "store_latency": store_latency.snapshot(),
        "rehydrate": rehydrate_latency.snapshot(),
    }


register_section("evict", _section)
