"""Graceful drain: save every session's state, then send every client elsewhere.

Runs on the server's shutdown (the ASGI lifespan shutdown that uvicorn and
gunicorn run on SIGTERM, by then uvicorn has closed the sockets with 1012 and
the disconnect saves are under way) and as `await drain()` for process
managers and tests. Saves run concurrently, within `timeout`, and so does a
retry of the writes kept from failed store calls; then every
still-open socket is closed with 1012, and the Flet client reconnects to
whichever worker the load balancer picks, which restores the saved state.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

import anyio
from flet.messaging.session import Session

from flet_resilient import _flet, durable, persist, rebalance
from flet_resilient.checks import check_positive, check_seconds
from flet_resilient.metrics import Histogram, count

__all__ = ["DRAIN_TIMEOUT_S", "DrainReport", "drain", "drain_latency"]

logger = logging.getLogger("flet_resilient.drain")

DRAIN_TIMEOUT_S = 10.0
"""Default budget: well inside gunicorn's 30 s graceful timeout."""
CONCURRENT_SAVES = 64

drain_latency = Histogram()
"""How long each drain took (ms)."""


@dataclass(frozen=True)
class DrainReport:
    """What a drain did: sessions seen, and how many saves ended how."""

    sessions: int
    written: int
    unchanged: int
    unsaved: int  # unencodable, or not reached within the timeout
    unsent: int  # saved, but only in memory: the store is down (lost on exit)
    sockets_closed: int
    seconds: float


async def drain(
    timeout: float = DRAIN_TIMEOUT_S, *, pace: float | None = None
) -> DrainReport:
    """Save every session's changed state (within `timeout` s), then close
    every client socket with 1012 so clients reconnect to another worker:
    all at once, or `pace` sockets per second (raised to end within `timeout`)
    so the workers left rebuild them spread out instead of as one herd."""
    check_seconds("timeout", timeout)
    check_positive("pace", pace, expected="sockets per second > 0", optional=True)
    started = time.perf_counter()
    await rebalance.leave()
    sessions = persist.bound_sessions()
    outcomes: Counter[str] = Counter()
    with anyio.move_on_after(timeout):
        limiter = anyio.CapacityLimiter(CONCURRENT_SAVES)
        async with anyio.create_task_group() as group:
            for session in sessions:
                group.start_soon(_save, session, limiter, outcomes)
        # Writes kept after a failed call (a slow moment counts as one) would
        # die with the process: send them now, not after the retry's backoff.
        await durable.flush_kept()
    left = timeout - (time.perf_counter() - started)
    closed = await _flet.close_sockets(per_second=pace, within=left)
    seconds = time.perf_counter() - started
    drain_latency.record(seconds * 1000)
    report = DrainReport(
        sessions=len(sessions),
        written=outcomes["written"] + outcomes["refused"],
        unchanged=outcomes["unchanged"],
        unsaved=len(sessions) - sum(outcomes.values()) + outcomes["unencodable"],
        unsent=durable.kept_writes(),
        sockets_closed=closed,
        seconds=round(seconds, 3),
    )
    _log(report)
    return report


async def _save(
    session: Session, limiter: anyio.CapacityLimiter, into: Counter[str]
) -> None:
    async with limiter:
        into[await persist.save_logged(session)] += 1


def _log(report: DrainReport) -> None:
    count("drain.runs")
    count("drain.unsaved", report.unsaved + report.unsent)
    level = logging.ERROR if report.unsaved or report.unsent else logging.WARNING
    logger.log(
        level,
        "drained %d sessions in %.3f s: %d written, %d unchanged, %d NOT saved, "
        "%d only in memory (store down); %d clients sent to reconnect",
        report.sessions,
        report.seconds,
        report.written,
        report.unchanged,
        report.unsaved,
        report.unsent,
        report.sockets_closed,
    )


async def _on_shutdown() -> None:
    await drain()


_flet.on_shutdown(_on_shutdown)
