"""Limits on what clients send: frame size, event rate, new sessions per address.

Flet trusts its client: any frame size, any number of events, any number of
sessions. These limits are on by default (see docs/security.md) and enforced
by the seam on every socket, however the app is served; `serve()` also
hands the frame limit to uvicorn, which then refuses a big frame before
reading it. Refused input is counted in `stats()` (`transport.*` counters)
and logged at WARNING at most once per client address and kind every
`LOG_INTERVAL` seconds, without a traceback (that is at DEBUG).
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cachetools import TTLCache
from flet.messaging.session import Session

from flet_resilient import _flet
from flet_resilient.checks import check_finite, check_positive_int
from flet_resilient.metrics import count, register_section
from flet_resilient.switch import disabled

__all__ = ["Limits", "configure_limits", "current_limits"]

logger = logging.getLogger("flet_resilient.limits")

DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
DEFAULT_EVENT_BURST = 100
DEFAULT_EVENT_RATE = 50.0
DEFAULT_FRAME_RATE = 200.0
SEARCH_BURST, SEARCH_RATE = 1, 1.0
"""Events for unknown controls (each a walk of the whole tree) per session."""
FRAME_BURST = 100
"""Frames a socket may send at once before its reads are paced."""
LOG_INTERVAL = 10.0
"""Seconds between two WARNING lines for one client address and kind."""
_ADDRESSES = 65536
"""Most client addresses remembered (for the session cap and the log limit)."""

FloodPolicy = Literal["drop", "close"]
FLOOD_POLICIES: tuple[FloodPolicy, ...] = ("drop", "close")


@dataclass(frozen=True)
class Limits:
    """The inbound limits in force (see `configure_limits`)."""

    max_frame_bytes: int | None = DEFAULT_MAX_FRAME_BYTES
    event_burst: int = DEFAULT_EVENT_BURST
    event_rate: float | None = DEFAULT_EVENT_RATE
    on_flood: FloodPolicy = "drop"
    max_new_sessions_per_ip: tuple[int, float] | None = None
    max_frame_rate: float | None = DEFAULT_FRAME_RATE


class _Bucket:
    """A token bucket: `burst` events at once, refilled at `rate` a second."""

    __slots__ = ("at", "tokens")

    def __init__(self, burst: int) -> None:
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self, burst: int, rate: float) -> bool:
        """Refill for the time since the last call, then take a token if one is left."""
        now = time.monotonic()
        self.tokens = min(float(burst), self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def wait(self, burst: int, rate: float) -> float:
        """Take a token, owing it if none is left: the seconds until it is due."""
        now = time.monotonic()
        self.tokens = min(float(burst), self.tokens + (now - self.at) * rate) - 1
        self.at = now
        return 0.0 if self.tokens >= 0 else -self.tokens / rate


class _Guard:
    """The seam's `InboundGuard`: applies the current `Limits`."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._buckets: weakref.WeakKeyDictionary[Session, _Bucket] = (
            weakref.WeakKeyDictionary()
        )
        self._reads: weakref.WeakKeyDictionary[object, _Bucket] = (
            weakref.WeakKeyDictionary()
        )
        self._searches: weakref.WeakKeyDictionary[Session, _Bucket] = (
            weakref.WeakKeyDictionary()
        )
        window = limits.max_new_sessions_per_ip
        self._new_sessions: TTLCache = TTLCache(
            _ADDRESSES, window[1] if window else 1.0, timer=time.monotonic
        )
        self._logged: TTLCache = TTLCache(
            _ADDRESSES, LOG_INTERVAL, timer=time.monotonic
        )

    def max_frame_bytes(self) -> int | None:
        return self.limits.max_frame_bytes

    def admit_event(self, session: Session) -> _flet.Admission:
        """One token of the session's bucket, else the flood policy."""
        rate = self.limits.event_rate
        if rate is None:
            return "run"
        bucket = self._buckets.get(session)
        if bucket is None:
            bucket = self._buckets[session] = _Bucket(self.limits.event_burst)
        if bucket.take(self.limits.event_burst, rate):
            return "run"
        return self.limits.on_flood

    def read_pause(self, socket: object) -> float:
        """Seconds to wait before reading the socket's next frame: a client
        sending faster than `max_frame_rate` is read that fast, no faster, so
        one flooding socket cannot keep the loop from everyone else."""
        rate = self.limits.max_frame_rate
        if rate is None:
            return 0.0
        bucket = self._reads.get(socket)
        if bucket is None:
            bucket = self._reads[socket] = _Bucket(FRAME_BURST)
        pause = bucket.wait(FRAME_BURST, rate)
        if pause:
            count("transport.reads_paced")
        return pause

    def admit_search(self, session: Session) -> bool:
        """A few tree walks for unknown controls per session (1, then 1/s)."""
        bucket = self._searches.get(session)
        if bucket is None:
            bucket = self._searches[session] = _Bucket(SEARCH_BURST)
        return bucket.take(SEARCH_BURST, SEARCH_RATE)

    def admit_session(self, client_ip: str) -> bool:
        """A fixed window per address, starting at its first new session."""
        cap = self.limits.max_new_sessions_per_ip
        if cap is None:
            return True
        started = self._new_sessions.get(client_ip)
        if started is None:
            started = self._new_sessions[client_ip] = [0]
        if started[0] >= cap[0]:
            return False
        started[0] += 1
        return True

    def refused(
        self,
        client_ip: str,
        session: Session | None,
        kind: str,
        what: str,
        exc: BaseException | None,
    ) -> None:
        """One WARNING line per address and kind per interval; all at DEBUG."""
        who = client_ip or "an unknown address"
        if session is not None:
            who += f" (session {_flet.session_tag(session)})"
        logger.debug("refused %s from %s", what, who, exc_info=exc)
        if (client_ip, kind) in self._logged:
            return
        self._logged[client_ip, kind] = True
        logger.warning(
            "refused %s from %s; more from this address are counted in stats() "
            "as transport.%s, not logged, for %g s",
            what,
            who,
            kind,
            LOG_INTERVAL,
        )


_guard = _Guard(Limits())


def current_limits() -> Limits:
    """The inbound limits in force."""
    return _guard.limits


def configure_limits(
    *,
    max_frame_bytes: int | None = DEFAULT_MAX_FRAME_BYTES,
    event_burst: int = DEFAULT_EVENT_BURST,
    event_rate: float | None = DEFAULT_EVENT_RATE,
    on_flood: FloodPolicy = "drop",
    max_new_sessions_per_ip: tuple[int, float] | None = None,
    max_frame_rate: float | None = DEFAULT_FRAME_RATE,
) -> None:
    """Set the limits on what clients send (no arguments: the defaults).

    Args:
        max_frame_bytes: largest WebSocket frame a client may send; a larger
            one closes its socket with 1009 "message too big" (None: no limit).
        event_burst, event_rate: each session's client events (clicks,
            changes...) run at most `event_burst` at once and `event_rate` a
            second on average (a token bucket; `event_rate=None`: no limit).
        on_flood: what an event over that rate does: "drop" (it is counted
            and not run) or "close" (its socket is closed with 1008).
        max_new_sessions_per_ip: `(n, seconds)`: each client address starts
            at most `n` new sessions per `seconds` (a returning session does
            not count); more are refused by closing the socket with 1013.
        max_frame_rate: frames a socket is read per second on average (after
            a burst of 100); a faster sender is read at that pace and TCP
            pushes back on it (None: no pacing).
    """
    check_positive_int("max_frame_bytes", max_frame_bytes, optional=True)
    check_positive_int("event_burst", event_burst)
    check_finite("event_rate", event_rate, optional=True)
    if on_flood not in FLOOD_POLICIES:
        raise ValueError(f"on_flood must be one of {FLOOD_POLICIES}, got {on_flood!r}")
    _check_session_cap(max_new_sessions_per_ip)
    check_finite("max_frame_rate", max_frame_rate, optional=True)
    global _guard
    _guard = _Guard(
        Limits(
            max_frame_bytes,
            event_burst,
            event_rate,
            on_flood,
            max_new_sessions_per_ip,
            max_frame_rate,
        )
    )
    _install()


def _check_session_cap(cap: Any) -> None:
    """Refuse a session cap that is not None or (positive int, seconds > 0)."""
    if cap is None:
        return
    if not (isinstance(cap, tuple) and len(cap) == 2):
        raise ValueError(f"max_new_sessions_per_ip must be (n, seconds), got {cap!r}")
    check_positive_int("max_new_sessions_per_ip n", cap[0])
    check_finite("max_new_sessions_per_ip seconds", cap[1])


def _install() -> None:
    """Hand the guard to the seam (not when flet-resilient is switched off)."""
    if not disabled():
        _flet.set_inbound_guard(_guard)


def _section() -> dict[str, Any]:
    """`stats()['limits']`: the limits in force."""
    return asdict(_guard.limits)


_install()
register_section("limits", _section)
