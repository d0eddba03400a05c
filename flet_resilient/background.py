"""Fire-and-forget tasks that do not keep any session alive.

A task copies the context it is created in, and Flet keeps the current page
in a context variable; a long-lived task (or a timer it starts) would keep
that page reachable. These tasks start from an empty context instead, and are
referenced until done so they are never garbage-collected mid-flight.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["running_loop_in", "spawn"]

logger = logging.getLogger("flet_resilient")

_running: set[asyncio.Task[Any]] = set()
_Entry = TypeVar("_Entry")


def spawn(coro: Coroutine[Any, Any, Any], *, quiet: bool = False) -> asyncio.Task[Any]:
    """Run `coro` as a task on the running loop, in an empty context.

    With `quiet`, an exception it raises is only logged at debug level.
    """
    loop = asyncio.get_running_loop()
    task = contextvars.Context().run(loop.create_task, coro)
    _running.add(task)
    task.add_done_callback(_finished if not quiet else _running.discard)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task failed", exc_info=task.exception())


def running_loop_in(
    table: dict[asyncio.AbstractEventLoop, _Entry],
) -> asyncio.AbstractEventLoop:
    """The running loop, once `table` (per-loop timers) forgets closed loops:
    a test's server, or one restarted in the same process, leaves its own."""
    for closed in [loop for loop in table if loop.is_closed()]:
        del table[closed]
    return asyncio.get_running_loop()
