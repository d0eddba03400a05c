"""Give the memory of evicted sessions back to the operating system.

Freed Python objects go back to the allocator, not to the OS. glibc's
`malloc_trim(0)` returns free pages, even in the middle of the heap; it runs in
a worker thread (ctypes releases the GIL), debounced so that a burst of
evictions costs one trim.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import time

import anyio

from flet_resilient.background import running_loop_in, spawn
from flet_resilient.metrics import count

__all__ = ["malloc_trim", "trim_soon"]

logger = logging.getLogger("flet_resilient.memory")

QUIET_S = 1.0
"""A trim waits until evictions have paused this long..."""
MAX_WAIT_S = 10.0
"""...but never longer than this after the first eviction it covers."""


@functools.cache
def _libc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None  # not glibc


def malloc_trim() -> bool:
    """glibc's `malloc_trim(0)`; True if memory was returned (False elsewhere)."""
    trim = _libc_trim()
    return bool(trim(0)) if trim is not None else False


class _Debounce:
    """The pending trim of one event loop."""

    def __init__(self) -> None:
        self.timer: asyncio.TimerHandle | None = None
        self.first = 0.0


_pending: dict[asyncio.AbstractEventLoop, _Debounce] = {}


def trim_soon() -> None:
    """Trim once evictions pause (call on the loop after freeing a session)."""
    if _libc_trim() is None:
        return
    loop = running_loop_in(_pending)
    pending = _pending.setdefault(loop, _Debounce())
    now = time.monotonic()
    if pending.timer is None:
        pending.first = now
    else:
        pending.timer.cancel()
    delay = min(QUIET_S, max(0.0, pending.first + MAX_WAIT_S - now))
    pending.timer = loop.call_later(delay, _start, loop)


def _start(loop: asyncio.AbstractEventLoop) -> None:
    _pending.pop(loop, None)
    spawn(_trim())


async def _trim() -> None:
    started = time.perf_counter()
    released = await anyio.to_thread.run_sync(malloc_trim)
    count("evict.memory_trims")
    logger.debug(
        "malloc_trim: %s in %.0f ms",
        "released memory" if released else "nothing to release",
        (time.perf_counter() - started) * 1000,
    )
