"""Even out a fleet's users after a deploy or a crash.

A rolling restart leaves the worker restarted last empty and the others with
everyone (a drained worker's clients can only go to those still up): the
fleet serves on fewer cores than it has, and a crash of the busiest worker
sends all its users to another at once. With a shared store each worker
reports its connected sessions every `REPORT_EVERY_S` and reads the others'.
One holding more than the even share by `MIN_EXCESS` sessions (and by
`SLACK` of the share) in two reports in a row, with no users arriving,
sends its least recently active users away, at most `MOVES_PER_REPORT` a
time: each is evicted (state saved, socket closed) and its client reconnects
through the load balancer to a worker that restores it. If the users sent
away keep coming back (a balancer that pins them, e.g. with sticky cookies),
moving pauses for `PAUSE_S`. A draining worker leaves the fleet first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from cachetools import TTLCache
from flet.messaging.session import Session

from flet_resilient import _flet, persist
from flet_resilient.background import running_loop_in, spawn
from flet_resilient.metrics import count, register_section

__all__ = ["arrived", "enable", "leave", "moves_for"]

logger = logging.getLogger("flet_resilient.rebalance")

REPORT_EVERY_S = 1.0
STALE_AFTER_S = 1.5
"""A worker that has not reported for this long is out of the fleet (a busy
one that reports late only makes the others move fewer users)."""
MIN_EXCESS = 10
SLACK = 0.1
MOVES_PER_REPORT = 50
"""Users sent away per report: the workers that take them rebuild their pages
spread over the reports, not as one herd."""
RETURN_WINDOW_S = 30.0
"""A user sent away is counted as back if it returns here within this."""
PAUSE_AFTER = 10
PAUSE_SHARE = 0.8
"""Moving pauses once PAUSE_SHARE of at least PAUSE_AFTER users sent away
came back (round robin over N workers brings back about 1/N, least
connections none)."""
PAUSE_S = 600.0
ARRIVING = 5
"""More users than this came since the last report: they are still arriving
(a ramp, a herd), and the other workers' older reports undercount theirs."""


@runtime_checkable
class LoadReporting(Protocol):
    """A shared store that keeps the fleet's loads (`RedisStore`)."""

    async def report_load(
        self, worker: str, sessions: int, stale_after: float
    ) -> dict[str, int]: ...

    async def leave_fleet(self, worker: str) -> None: ...


def moves_for(here: int, loads: Sequence[int]) -> int:
    """How many of `here` sessions to send away, given every worker's load
    (this one's included): the excess over the even share, if large enough."""
    if len(loads) < 2:
        return 0
    share = math.ceil(sum(loads) / len(loads))
    excess = here - share
    if excess < max(MIN_EXCESS, SLACK * share):
        return 0
    return min(excess, MOVES_PER_REPORT)


@dataclass
class _Fleet:
    """This process's movers (one per app) and what moving has done."""

    movers: dict[persist.SavePolicy, Callable[[Session], None]] = field(
        default_factory=dict
    )  # each app's save policy -> how to send one of its sessions away
    reporter: LoadReporting | None = None
    loads: dict[str, int] = field(default_factory=dict)
    moved: TTLCache[str, bool] = field(  # token -> came back, for RETURN_WINDOW_S
        default_factory=lambda: TTLCache(100_000, RETURN_WINDOW_S, time.monotonic)
    )
    sent: int = 0
    returned: int = 0
    paused_until: float = -math.inf
    leaving: bool = False
    wanted: bool = False  # the last report found an excess too
    last_here: int = 0


_fleet = _Fleet()
_reporters: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}


def enable(policy: persist.SavePolicy, send_away: Callable[[Session], None]) -> None:
    """Let the sessions saved under `policy` (a shared store's) be moved;
    `send_away(session)` evicts one. A store without `report_load` cannot
    (logged)."""
    store = policy.store.store
    if not isinstance(store, LoadReporting):
        logger.warning(
            "no rebalancing: %s does not keep the fleet's loads (report_load)",
            type(store).__name__,
        )
        return
    _fleet.reporter = _fleet.reporter or store
    _fleet.movers[policy] = send_away


def arrived(token: str) -> None:
    """A user's state was restored here: one sent away may have come back."""
    if _fleet.moved.get(token) is not False:
        return  # not sent away lately, or already counted
    _fleet.moved[token] = True
    _fleet.returned += 1
    count("rebalance.returned")
    if _fleet.sent >= PAUSE_AFTER and _fleet.returned >= PAUSE_SHARE * _fleet.sent:
        logger.warning(
            "%d of %d users sent to other workers came back here: the load "
            "balancer pins them (sticky sessions?); rebalancing paused for %g s",
            _fleet.returned,
            _fleet.sent,
            PAUSE_S,
        )
        _fleet.paused_until = time.monotonic() + PAUSE_S
        _fleet.sent = _fleet.returned = 0


def _start() -> None:
    """When a server starts: report from its loop (once per loop), even
    before its first user (an empty worker's report is what moves users)."""
    if _fleet.reporter is not None:
        loop = running_loop_in(_reporters)
        if loop not in _reporters:
            _reporters[loop] = spawn(_report_forever())


async def leave() -> None:
    """This worker drains: out of the fleet, so nobody sends users to it."""
    if _fleet.reporter is not None and not _fleet.leaving:
        _fleet.leaving = True
        try:
            await _fleet.reporter.leave_fleet(_worker())
        except Exception as error:  # it drops out of the fleet once stale
            logger.debug("could not leave the fleet: %r", error)


async def _report_forever() -> None:
    while not _fleet.leaving:
        await asyncio.sleep(REPORT_EVERY_S)
        try:
            await _report()
        except Exception as error:  # the store's outage is logged by its users
            logger.debug("could not report this worker's load: %r", error)


async def _report() -> None:
    """Report the load, read the fleet's; send away this worker's excess."""
    if _fleet.leaving:
        return
    here = sum(map(_flet.is_connected, _flet.sessions().values()))
    assert _fleet.reporter is not None
    _fleet.loads = await _fleet.reporter.report_load(_worker(), here, STALE_AFTER_S)
    moves = moves_for(here, list(_fleet.loads.values()))
    # Two reports in a row (a crashed worker is still in the first one after
    # its users arrived here: they must not be sent back to it), and nobody
    # arriving since the last one.
    steady = here <= _fleet.last_here + ARRIVING
    confirmed = _fleet.wanted and steady
    _fleet.wanted, _fleet.last_here = moves > 0, here
    if moves and confirmed and time.monotonic() >= _fleet.paused_until:
        _send_away(_movable()[:moves], here)


def _movable() -> list[tuple[persist.Bound, Session]]:
    """Connected sessions whose state another worker can restore, least
    recently active first."""
    found = []
    for session in persist.bound_sessions():
        state = persist.bound(session)
        if state is None or state.policy not in _fleet.movers or state.provisional:
            continue
        if state.token in _fleet.moved:
            continue  # moved lately: not again
        if _flet.is_connected(session):
            found.append((state, session))
    found.sort(key=lambda pair: pair[0].version)
    return found


def _send_away(movable: list[tuple[persist.Bound, Session]], here: int) -> None:
    for state, session in movable:
        _fleet.moved[state.token] = False
        _fleet.movers[state.policy](session)
    _fleet.sent += len(movable)
    count("rebalance.sent", len(movable))
    logger.warning(
        "rebalancing: %d of the fleet's %d users are here (%d workers); "
        "sending %d to reconnect elsewhere",
        here,
        sum(_fleet.loads.values()),
        len(_fleet.loads),
        len(movable),
    )


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _section() -> dict[str, Any]:
    """`stats()['rebalance']`: whether it is on, the fleet's loads as last
    read, whether moving is paused (the moves are counted as rebalance.sent)."""
    return {
        "enabled": bool(_fleet.movers),
        "fleet": dict(_fleet.loads),
        "paused": time.monotonic() < _fleet.paused_until,
    }


register_section("rebalance", _section)
_flet.on_startup(_start)
