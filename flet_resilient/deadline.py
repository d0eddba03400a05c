"""Timeouts that a busy event loop does not trip, for calls to outside services.

A wall-clock timeout on a busy loop fails calls that were answered: the reply
sits in the socket while the loop builds a herd of reconnected sessions, and
the timer fires first. `responsive_timeout` fails a call only once `timeout`
has passed *and* the loop has been free for a few short slices since (so a
reply, had one come, would have been read): a hung service still fails about
`timeout` late on an idle loop; a busy loop waits longer, up to `BUSY_STRETCH`
times `timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["BUSY_STRETCH", "QUIET_SLICES", "SLICE_S", "responsive_timeout"]

T = TypeVar("T")

SLICE_S = 0.01
"""Length of one check that the loop is free, after the timeout (seconds)."""

QUIET_SLICES = 3
"""Slices in a row the loop must wake on time for before the call fails."""

BUSY_STRETCH = 20.0
"""A busy loop waits at most this many times `timeout` of wall time."""


async def responsive_timeout(awaitable: Awaitable[T], timeout: float) -> T:
    """Await `awaitable`; TimeoutError once `timeout` has passed and the loop
    then woke on time for `QUIET_SLICES` slices without the answer."""
    task = asyncio.ensure_future(awaitable)
    loop = asyncio.get_running_loop()
    hard_end = loop.time() + timeout * BUSY_STRETCH
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
        quiet = 0
        while not done and quiet < QUIET_SLICES and loop.time() < hard_end:
            before = loop.time()
            done, _ = await asyncio.wait({task}, timeout=SLICE_S)
            on_time = loop.time() - before < 2 * SLICE_S
            quiet = quiet + 1 if on_time else 0
        if done:
            return task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    raise TimeoutError(f"no answer within {timeout:g} s (the loop was free)")
