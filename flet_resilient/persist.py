"""Write app state behind to the store: after client events, on disconnect, on drain.

A session's state (from `await app_state(page)`) is saved only when its
encoding changed: at most once per `save_delay` after a client event's
handler ends (the first change at once, later ones when the delay is up),
at once when the client disconnects, and by `drain()`. Each write carries
the time of the session's newest client activity as its version and the
store keeps the newest, so a stale session on another worker never
overwrites a newer one. A state made while the store could not be read is
*provisional*: it is never written over a stored state; once the store
answers and holds one, the session is reloaded so the user gets it back.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from flet.messaging.session import Session

from flet_resilient import _flet
from flet_resilient.background import spawn
from flet_resilient.codec import encode_state
from flet_resilient.durable import DurableStore, StoreUnavailable
from flet_resilient.identity import Identity
from flet_resilient.metrics import count, register_section
from flet_resilient.session_data import SessionField
from flet_resilient.switch import disabled

__all__ = [
    "Bound",
    "SavePolicy",
    "bind",
    "bound",
    "bound_sessions",
    "save",
    "save_logged",
]

logger = logging.getLogger("flet_resilient.persist")


@dataclass(frozen=True)
class SavePolicy:
    """Where and how often one `@evict_idle` app saves its sessions' state."""

    store: DurableStore
    identity: Identity
    state_ttl: float
    save_delay: float | None  # None: saved only on eviction and drain


@dataclass(eq=False)
class Bound:
    """A session's app state, the user token it is saved under, and what the
    store holds of it."""

    token: str
    state: Any
    saved: bytes  # the encoding last written (or restored, or the fresh one)
    version: int  # newest client activity, µs since the epoch
    provisional: bool  # made while the store could not be read
    policy: SavePolicy
    timer: asyncio.TimerHandle | None = None
    last_write: float = -math.inf
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)

    @property
    def key(self) -> str:
        return self.policy.identity.store_key(self.token)


_states: SessionField[Bound] = SessionField("state")


def now_version() -> int:
    """A version for activity happening now (µs since the epoch)."""
    return time.time_ns() // 1000


def bind(session: Session, state: Bound) -> None:
    """Make `state` the session's app state, saved behind from now on (with
    FLET_RESILIENT_DISABLE=1, plain Flet: never saved behind, not even when
    the store answers again after an outage)."""
    _states[session] = state
    store = state.policy.store
    if state.provisional and not disabled() and _recheck not in store._on_recovered:
        store.on_recovered(_recheck)


def bound(session: Session) -> Bound | None:
    """The session's app state, if `app_state` made one."""
    return _states.get(session)


def bound_sessions() -> list[Session]:
    """Every session with an app state served by the running loop (a process
    may run several servers, e.g. tests, each draining only its own)."""
    loop = asyncio.get_running_loop()
    return [session for session, state in list(_states.items()) if state.loop is loop]


async def save(session: Session) -> str:
    """Save the session's state now if it changed; say what happened.

    Raises TypeError naming a field msgpack cannot encode.
    """
    state = _states.get(session)
    if state is None:
        return "none"
    _cancel_timer(state)
    async with state.lock:
        if state.provisional and not await _settle(session, state):
            return "reloading"
        data = encode_state(state.state)
        if data == state.saved:
            return "unchanged"
        policy = state.policy
        version = state.version
        if state.provisional:
            version //= 1000  # ms: below every real version (µs)
        written = await policy.store.write(state.key, data, version, policy.state_ttl)
        state.saved, state.last_write = data, time.monotonic()
    count("state.written" if written else "state.refused_older")
    return "written" if written else "refused"


PROVISIONAL_BELOW = 10**14
"""Versions below this were written by provisional states (ms, not µs): any
state saved by a session that could read the store outranks them."""


async def _settle(session: Session, state: Bound) -> bool:
    """Whether a provisional state may be saved (the user's stored state, if
    the store answers and holds one, wins: the session is then reloaded)."""
    try:
        held = await state.policy.store.read(state.key)
    except StoreUnavailable:
        return True  # still down: kept and retried, never over a real state
    if held is not None and held[0] >= PROVISIONAL_BELOW:
        count("state.reloaded_after_outage")
        logger.info("store back: reloading a session made during the outage")
        spawn(_flet.end_session(session))  # the client returns to its state
        return False
    state.provisional = False
    return True


def _recheck() -> None:
    for session, state in list(_states.items()):
        if state.provisional:
            spawn(save_logged(session))


def _touched(session: Session) -> None:
    """A client event was handled: its changes go out within `save_delay`."""
    state = _states.get(session)
    if state is None:
        return
    state.version = now_version()
    delay = state.policy.save_delay
    if delay is None or state.timer is not None:
        return
    wait = max(0.0, state.last_write + delay - time.monotonic())
    state.timer = asyncio.get_running_loop().call_later(
        wait, _due, weakref.ref(session), context=contextvars.Context()
    )


def _due(ref: weakref.ref[Session]) -> None:
    session = ref()
    state = _states.get(session) if session is not None else None
    if session is not None and state is not None:
        state.timer = None
        spawn(save_logged(session))


def _disconnected(session: Session) -> None:
    state = _states.get(session)
    if state is not None and state.policy.save_delay is not None:
        spawn(save_logged(session))


def _closed(session: Session) -> None:
    state = _states.get(session)
    if state is not None:
        _cancel_timer(state)


def _cancel_timer(state: Bound) -> None:
    if state.timer is not None:
        state.timer.cancel()
        state.timer = None


async def save_logged(session: Session) -> str:
    """`save`, with an unencodable state logged and counted instead of raised."""
    try:
        return await save(session)
    except TypeError:
        count("state.unencodable")
        logger.exception("state of session %s not saved", _flet.session_tag(session))
        return "unencodable"


_flet.on_session("handled", _touched)
_flet.on_session("disconnected", _disconnected)
_flet.on_session("closed", _closed)


def _section() -> dict[str, Any]:
    states = list(_states.values())
    return {
        "sessions": len(states),
        "provisional": sum(s.provisional for s in states),
        "save_pending": sum(s.timer is not None for s in states),
    }


register_section("state", _section)
