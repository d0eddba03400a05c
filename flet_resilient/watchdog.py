"""Event-loop lag watchdog: measures lag continuously and names what stalled it.

A task on the loop records how late each short sleep wakes up (the lag every
user feels). A daemon thread watches the task's heartbeat; when the loop has not
ticked for `threshold` seconds it logs the loop thread's current stack, i.e.
the handler or coroutine that is blocking everyone.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
import weakref
from typing import Any

from flet_resilient import _flet
from flet_resilient.metrics import Histogram, count, counters, register_section
from flet_resilient.overload import load_factor

__all__ = ["LoopWatchdog", "watch_loop"]

logger = logging.getLogger("flet_resilient.watchdog")

LOG_EVERY = 10.0
"""Seconds between two logged stall stacks (every stall is still counted)."""


class LoopWatchdog:
    """Measures one event loop's lag and reports stalls longer than `threshold`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float = 0.05,
        threshold: float = 0.25,
    ) -> None:
        self.loop = loop
        self.interval = interval
        self.threshold = threshold
        self.lag = Histogram()
        self.load = load_factor(loop)
        self.stalls: list[str] = []
        self._heartbeat = time.monotonic()
        self._logged_at = -LOG_EVERY
        self._unlogged = 0
        self._loop_thread = threading.get_ident()
        self._task = loop.create_task(self._tick())
        threading.Thread(
            target=self._watch, name="flet-resilient-watchdog", daemon=True
        ).start()

    async def _tick(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(self.interval)
            self._heartbeat = time.monotonic()
            lag = self._heartbeat - started - self.interval
            self.lag.record(lag * 1000)
            self.load.record(lag)

    def _watch(self) -> None:
        reported = 0.0
        while not self.loop.is_closed() and not self._task.done():
            time.sleep(self.interval)
            beat = self._heartbeat
            if time.monotonic() - beat > self.threshold and beat != reported:
                reported = beat
                self._report()

    def _report(self) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None or self._task.done():
            return  # the loop is shutting down, not stalled
        stack = "".join(traceback.format_stack(frame, limit=8))
        count("loop.stalls")
        self.stalls = [*self.stalls[-9:], stack]
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY:
            return  # at most one stack per LOG_EVERY seconds; the rest are counted
        self._logged_at = now
        logger.warning(
            "event loop blocked for more than %.0f ms (%d stall(s) since the last "
            "report); it is running:\n%s",
            self.threshold * 1000,
            self._unlogged,
            stack,
        )
        self._unlogged = 0

    def stop(self) -> None:
        self._task.cancel()


_watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWatchdog] = (
    weakref.WeakKeyDictionary()
)


def watch_loop(threshold: float | None = None) -> LoopWatchdog:
    """Start (once per loop) the watchdog for the running loop and return it."""
    loop = asyncio.get_running_loop()
    dog = _watchdogs.get(loop)
    if dog is None:
        dog = _watchdogs[loop] = LoopWatchdog(loop)
    if threshold is not None:
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0 seconds, got {threshold!r}")
        dog.threshold = threshold
    return dog


def _section() -> dict[str, Any]:
    merged = Histogram()
    for dog in list(_watchdogs.values()):
        merged.merge(dog.lag)
    return {"lag": merged.snapshot(), "stalls": counters["loop.stalls"]}


register_section("loop", _section)
_flet.on_socket(watch_loop)  # every served socket's loop is watched
