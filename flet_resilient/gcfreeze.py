"""Keep Python's garbage collector from pausing the loop over live pages.

A full collection examines every tracked object, and live sessions' control
trees are most of them: with a few hundred sessions one pass holds the event
loop for hundreds of milliseconds, and it runs whenever the oldest generation
has grown by a quarter. Shortly after sessions build their pages (and after
client events), one full pass collects the garbage among the objects made
since the last freeze (the others are out of its view, so it is short) and
what survived is moved out of the collector's view (`gc.freeze()`): each
object is examined about once instead of at every pass. Until that freeze,
automatic collections are held off (its pass does their work once). Frozen
objects are still freed by reference counting (evicted sessions are dismantled
for that); a frozen cycle that becomes garbage later is reclaimed only when its
worker is recycled (`evict_idle(recycle_idle_rss=...)`).
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from flet.messaging.session import Session

from flet_resilient import _flet
from flet_resilient.background import running_loop_in
from flet_resilient.metrics import Histogram, count, register_section

__all__ = ["FREEZE_DELAY_S", "enable", "enabled", "full_pauses", "unfreeze"]

FREEZE_DELAY_S = 0.25
"""A freeze follows the first build or event after the last one by this much
(and every build that ends later, so none is left unfrozen behind a burst):
a burst of new sessions costs one per quarter second, and the pass before it
covers only what that quarter second made (a full second of page builds, ten
800-control consoles, took the pass ~0.2 s in bench_capacity)."""

full_pauses = Histogram()
"""How long each full (oldest-generation) collection held the loop (ms)."""

_timers: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}
_frozen = [0]
"""Objects this module has frozen (counted at each freeze: CPython's
`gc.get_freeze_count()` walks every frozen object, 29 ms at 200 sessions)."""
_started: list[float] = []
_paused: list[bool] = []
"""Set while this module holds automatic collections off (not if the app
had switched them off itself)."""


def enable() -> None:
    """Freeze surviving objects after page builds and events, from now on."""
    _flet.on_session("created", _freeze_soon)  # holds the collector off
    _flet.on_session("built", _freeze_soon)  # a build outlasting the delay
    _flet.on_session("handled", _freeze_soon)
    if _time_collection not in gc.callbacks:
        gc.callbacks.append(_time_collection)


def enabled() -> bool:
    """Whether this process freezes (an `evict_idle` app asked for it)."""
    return _time_collection in gc.callbacks


def _freeze_soon(session: Session) -> None:
    loop = running_loop_in(_timers)
    if loop not in _timers:
        _timers[loop] = loop.call_later(FREEZE_DELAY_S, _freeze, loop)
        _pause_collector()


def _pause_collector() -> None:
    """Until the freeze, no automatic collections: the freeze's pass does
    their work once (while pages are built they would examine the new
    controls again and again, a quarter of a reconnect burst's CPU)."""
    if gc.isenabled():
        gc.disable()
        _paused.append(True)


def _resume_collector() -> None:
    if _paused:
        _paused.clear()
        gc.enable()


def _freeze(loop: asyncio.AbstractEventLoop) -> None:
    _timers.pop(loop, None)
    gc.collect()  # garbage goes first (a pass over what is not frozen yet)
    _frozen[0] += sum(len(gc.get_objects(generation)) for generation in range(3))
    gc.freeze()
    count("gc.freezes")
    running_loop_in(_timers)  # forgets closed loops' timers, which never fire
    if not _timers:
        _resume_collector()


def unfreeze() -> None:
    """Put every frozen object back in the collector's view (e.g. when a test
    server stops, so what its sessions left is collectable)."""
    gc.unfreeze()
    _frozen[0] = 0
    _resume_collector()  # a stopped loop's pending freeze will never run


def _time_collection(phase: str, info: dict[str, Any]) -> None:
    if info["generation"] != 2:
        return
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        full_pauses.record((time.perf_counter() - _started.pop()) * 1000)


def _section() -> dict[str, Any]:
    """`stats()['gc']`: objects out of the collector's view, full passes."""
    return {
        "freezing": enabled(),
        "frozen_objects": _frozen[0],
        "full_collections": full_pauses.snapshot(),
    }


register_section("gc", _section)
