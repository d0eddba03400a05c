"""How overloaded an event loop is, as a slowdown for server-pushed updates.

The loop watchdog reports each probe's lag. When the worst lag in a window of
`WINDOW_S` exceeds `OVERLOAD_LAG_S`, the loop's factor doubles (up to
`MAX_FACTOR`); after `CALM_S` with every lag under `CALM_LAG_S` it halves back
towards 1. `coalesce_updates` stretches its rate window by the factor, so an
overloaded server refreshes dashboards less often instead of falling behind
real time; a client event's response never waits for the window.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

from flet_resilient.metrics import count, register_section

__all__ = ["LoadFactor", "factor", "load_factor"]

WINDOW_S = 0.5
OVERLOAD_LAG_S = 0.1
CALM_LAG_S = 0.03
CALM_S = 2.0
MAX_FACTOR = 16


class LoadFactor:
    """One loop's slowdown factor (1: not overloaded), from its lag samples."""

    def __init__(self) -> None:
        self.factor = 1
        now = time.monotonic()
        self._window_started = now
        self._calm_since = now
        self._worst = 0.0

    def record(self, lag_s: float) -> None:
        """One probe's lag; at the end of each window, adapt the factor."""
        self._worst = max(self._worst, lag_s)
        now = time.monotonic()
        if now - self._window_started < WINDOW_S:
            return
        worst, self._worst, self._window_started = self._worst, 0.0, now
        if worst > OVERLOAD_LAG_S:
            self._calm_since = now
            if self.factor < MAX_FACTOR:
                self.factor *= 2
                count("overload.slowdowns")
        elif worst >= CALM_LAG_S:
            self._calm_since = now
        elif self.factor > 1 and now - self._calm_since >= CALM_S:
            self.factor //= 2
            self._calm_since = now


_factors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoadFactor] = (
    weakref.WeakKeyDictionary()
)


def load_factor(loop: asyncio.AbstractEventLoop) -> LoadFactor:
    """The factor of `loop` (made on first use)."""
    found = _factors.get(loop)
    if found is None:
        found = _factors[loop] = LoadFactor()
    return found


def factor(loop: asyncio.AbstractEventLoop) -> int:
    """How many times slower server-pushed updates on `loop` should go now."""
    found = _factors.get(loop)
    return 1 if found is None else found.factor


def _section() -> dict[str, Any]:
    factors = [f.factor for f in list(_factors.values())]
    return {"factor": max(factors, default=1)}


register_section("overload", _section)
