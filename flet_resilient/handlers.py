"""`@throttle` and `@debounce` for chatty event handlers (sliders, text fields).

State is kept per control (hence per session: two users never share a
window), and the trailing call always runs with the latest event. Both work
with sync and async handlers; waiting happens in Flet's own per-event task,
so Flet's auto-update still follows the handler that finally runs.
"""

from __future__ import annotations

import functools
import inspect
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from flet_resilient import _flet

__all__ = ["debounce", "throttle"]

Handler = TypeVar("Handler", bound=Callable[..., Any])


@dataclass
class _Window:
    latest: int = 0
    last_run: float = -float("inf")


def _rate_limited(
    seconds: float, decorator: str, delay: Callable[[_Window, float], float]
) -> Callable[[Handler], Handler]:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{decorator} takes seconds as a number, got {seconds!r}")
    if seconds <= 0:
        raise ValueError(f"{decorator}: seconds must be > 0, got {seconds!r}")

    def decorate(handler: Handler) -> Handler:
        if not callable(handler):
            raise TypeError(f"{decorator} decorates an event handler, got {handler!r}")
        windows: weakref.WeakKeyDictionary[Any, _Window] = weakref.WeakKeyDictionary()

        @functools.wraps(handler)
        async def wrapper(*args: Any) -> None:
            owner = getattr(args[0], "control", None) if args else None
            if owner is None:
                owner = _flet.current_page()
            window = windows.setdefault(owner, _Window())
            window.latest += 1
            mine = window.latest
            wait = delay(window, time.monotonic())
            if wait > 0:
                await anyio.sleep(wait)
                if window.latest != mine:
                    return  # a newer event replaced this one
            window.last_run = time.monotonic()
            result = handler(*args)
            if inspect.isawaitable(result):
                await result

        return wrapper  # type: ignore[return-value]

    return decorate


def throttle(interval: float) -> Callable[[Handler], Handler]:
    """Run the handler at most once per `interval` seconds per control:
    the first event at once, then the latest event at the window's end."""
    return _rate_limited(
        interval, "throttle", lambda w, now: w.last_run + interval - now
    )


def debounce(wait: float) -> Callable[[Handler], Handler]:
    """Run the handler once events have paused for `wait` seconds,
    with the latest event."""
    return _rate_limited(wait, "debounce", lambda w, now: wait)
