"""Coalesce `update()` calls into at most `max_hz` patch batches per second.

Every `update()` in a coalesced session only marks its control dirty. An
isolated change is sent at once (leading edge); changes inside the window are
merged and sent when it ends (trailing edge), so the final state always
arrives. The response to a client event is never held for the window: the
first patch its handler causes goes out as soon as the handler yields, and
what it left pending when it ends goes out then; the cap applies to
server-pushed updates. A dirty control whose ancestor is also dirty is
covered by the ancestor's diff. One-shot messages (`invoke_method`, errors)
first flush what was deferred before them, so order is kept. While the client's outbound
backlog is above `max_backlog_bytes`, flushes wait (state keeps merging) and
the rate halves until the client drains it; while the event loop is
overloaded (`flet_resilient.overload`), the rate drops with it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flet.controls.base_control import BaseControl
from flet.controls.page import Page
from flet.messaging.session import Session

from flet_resilient import _flet, overload
from flet_resilient.checks import check_positive
from flet_resilient.mainwrap import Main, wrap_main
from flet_resilient.metrics import count, register_section
from flet_resilient.session_data import SessionField
from flet_resilient.switch import disabled

__all__ = ["CoalesceOptions", "Coalescer", "coalesce_page", "coalesce_updates"]

logger = logging.getLogger("flet_resilient.coalesce")

MAX_SLOWDOWN = 16
"""A backlogged session's rate drops to at most max_hz / MAX_SLOWDOWN."""

_coalescers: SessionField[Coalescer] = SessionField("coalescer")


class Coalescer:
    """The patch sink of one session: dirty set, flush timer, adaptive rate."""

    def __init__(self, session: Session, options: CoalesceOptions) -> None:
        self._session = weakref.ref(session)
        self.min_interval = 1 / options.max_hz
        self.interval = self.min_interval
        self.max_backlog_bytes = options.max_backlog_bytes
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._dirty: dict[int, BaseControl] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._answering: asyncio.Handle | None = None  # an event's first flush
        self._last_flush = -float("inf")
        self.batches = 0
        self.coalesced = 0
        self.bypassed_calls = 0
        self._merged_counted = 0  # of `coalesced`, already in the counters

    def defer(self, control: BaseControl) -> None:
        if threading.get_ident() != self._loop_thread:
            # A worker thread's update(): diff it on the loop, promptly.
            self.loop.call_soon_threadsafe(self.defer, control)
            return
        session = self._session()
        if session is None or session.connection is None:
            count("coalesce.skipped_disconnected")
            return  # the full page is sent on reconnect anyway
        if self.merge(control):
            return
        self._dirty[id(control)] = control
        _flet.hold(control, self)
        if self._answer():
            return
        if self._timer is None:
            delay = self._last_flush + self.window() - time.monotonic()
            if delay <= 0 and self.backlog_bytes() <= self.max_backlog_bytes:
                self.flush()  # leading edge: an isolated change goes out now
            else:
                self._timer = self.loop.call_later(max(delay, 0), self._on_timer)

    def merge(self, control: BaseControl) -> bool:
        """True (and counted) if `control` is already pending: nothing to do
        but answer a client event it is changed in.

        Only on the loop thread, where flushes run, so a pending control cannot
        be flushed between this check and the caller's return.
        """
        if (
            self._dirty.get(id(control)) is not control
            or threading.get_ident() != self._loop_thread
        ):
            return False
        self.coalesced += 1
        self._answer()  # pending from a task, now changed by a client event too
        return True

    def _answer(self) -> bool:
        """In a client event's handler, send its first change once it yields."""
        run = _flet.current_handler()
        if run is None or run.answered:
            return False
        run.answered = True  # the event's response is not held for the window
        if self._answering is None:
            self._answering = self.loop.call_soon(self.flush)
        return True

    def _on_timer(self) -> None:
        self._timer = None
        if self.backlog_bytes() > self.max_backlog_bytes:
            # The client is not keeping up: keep merging, slow down.
            self.interval = min(self.interval * 2, self.min_interval * MAX_SLOWDOWN)
            count("coalesce.backpressure_waits")
            self._timer = self.loop.call_later(self.interval, self._on_timer)
            return
        self.interval = max(self.interval / 2, self.min_interval)
        self.flush()

    def window(self) -> float:
        """Seconds between two server-pushed flushes now: the interval (longer
        while backlogged), times the loop's overload factor."""
        return self.interval * overload.factor(self.loop)

    def backlog_bytes(self) -> int:
        session = self._session()
        queue = _flet.send_queue(session) if session is not None else None
        return queue.backlog_bytes if queue is not None else 0

    def flush(self) -> None:
        """Diff and send every dirty control now (ancestors cover descendants).

        Off the loop thread (a worker's one-shot message) it is scheduled on
        the loop instead: diffs only ever run on the loop.
        """
        if threading.get_ident() != self._loop_thread:
            self.loop.call_soon_threadsafe(self.flush)
            return
        if self._answering is not None:
            # This flush answers the event: a later one would send what a
            # task changes meanwhile outside the rate window.
            self._answering.cancel()
            self._answering = None
        if not self._dirty:
            return  # nothing to send: the rate window is not restarted
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        dirty, self._dirty = self._dirty, {}
        for control in dirty.values():
            _flet.release(control)
        session = self._session()
        if session is None:
            return  # the session is gone: drop its pending patches
        self._last_flush = time.monotonic()
        self.batches += 1
        count("coalesce.batches")
        count("coalesce.merged", self.coalesced - self._merged_counted)
        self._merged_counted = self.coalesced
        for control in dirty.values():
            if _has_dirty_ancestor(control, dirty):
                continue
            if _flet.control_page(control) is not session.page:
                continue  # removed from the page since it was marked
            _flet.patch_now(session, control)

    def bypassed(self, shape: str) -> None:
        """A patch it could not defer went out at once: say so, once per shape."""
        self.bypassed_calls += 1
        _bypassed(f"{shape} is sent at once, not rate-limited")

    def snapshot(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "coalesced": self.coalesced,
            "bypassed": self.bypassed_calls,
            "pending": len(self._dirty),
            "rate_hz": round(1 / self.window(), 2),
            "backlog_bytes": self.backlog_bytes(),
        }


_warned: set[str] = set()


def _bypassed(problem: str) -> None:
    """Count a case coalescing cannot act on; warn the first time it is seen."""
    count("coalesce.bypassed")
    if problem not in _warned:
        _warned.add(problem)
        logger.warning("coalesce_updates: %s", problem)


def _has_dirty_ancestor(control: BaseControl, dirty: dict[int, BaseControl]) -> bool:
    """Whether a dirty ancestor's patch also carries this control's change.

    A plain diff neither re-renders a component nor looks into its body; a
    component's re-render re-renders the components nested in it.
    """
    rendered = _flet.is_component(control)
    parent = control.parent
    while parent is not None:
        component = _flet.is_component(parent)
        if id(parent) in dirty and component == rendered:
            return True
        if component and not rendered:
            return False  # a plain control's change stops at its component
        parent = parent.parent
    return False


@dataclass(frozen=True)
class CoalesceOptions:
    """What `coalesce_updates` / `coalesce_page` was asked for (checked when made)."""

    max_hz: float = 20
    max_backlog_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        check_positive("max_hz", self.max_hz)
        backlog = self.max_backlog_bytes
        if not isinstance(backlog, int) or backlog < 0:
            raise ValueError(f"max_backlog_bytes must be an int >= 0, got {backlog!r}")


def coalesce_page(
    page: Page, max_hz: float = 20, *, max_backlog_bytes: int = 1 << 20
) -> Coalescer:
    """Coalesce every `update()` of this page's session (call from main).

    On a page the seam cannot route it warns, counts and leaves the page
    to Flet (the returned coalescer is then not installed).
    """
    return _coalesce(page, CoalesceOptions(max_hz, max_backlog_bytes))


def _coalesce(page: Page, options: CoalesceOptions) -> Coalescer:
    """Install a coalescer with `options` on the page's session, if it can act."""
    session = page.session
    coalescer = Coalescer(session, options)
    problem = _flet.cannot_route(session)
    if problem is not None:
        _bypassed(f"cannot act on this page: {problem}")
        return coalescer
    _coalescers[session] = coalescer
    _flet.set_patch_sink(session, coalescer)
    return coalescer


def coalesce_updates(
    max_hz: float = 20, *, max_backlog_bytes: int = 1 << 20
) -> Callable[[Main], Main]:
    """Decorate `main(page)`: at most `max_hz` patch batches/s per session,
    final state always delivered, bounded backlog for slow clients."""
    if callable(max_hz):
        raise TypeError("use @coalesce_updates() or @coalesce_updates(max_hz=...)")
    options = CoalesceOptions(max_hz, max_backlog_bytes)

    def decorate(main: Main) -> Main:
        if disabled():
            return main
        install = functools.partial(_coalesce, options=options)
        return wrap_main(main, install, "coalesce_updates")

    return decorate


def _section() -> dict[str, Any]:
    sessions = {
        _flet.session_tag(s): c.snapshot() for s, c in list(_coalescers.items())
    }
    return {
        "sessions": len(sessions),
        "backlog_bytes": sum(c["backlog_bytes"] for c in sessions.values()),
        "per_session": sessions,
    }


def _flush_handled(session: Session) -> None:
    """A client event's handler ended: send what it changed now."""
    coalescer = _coalescers.get(session)
    if coalescer is not None:
        coalescer.flush()


_flet.on_session("handled", _flush_handled)
register_section("coalesce", _section)
