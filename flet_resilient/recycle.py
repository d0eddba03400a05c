"""Worker recycling: a worker that served enough sessions, or grew too big, leaves.

CPython's allocators keep freed arenas, so a long-lived worker's RSS stays
near its peak after a burst. A worker that drains (its users' state saved,
their clients told to reconnect elsewhere) and exits hands all of it back;
the process manager (gunicorn, `uvicorn --workers`, systemd, Kubernetes)
starts a fresh one. The exit is a SIGTERM to the process itself, so the
server's own graceful shutdown, and with it `drain()`, runs as on a deploy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import ClassVar

from flet_resilient.background import spawn
from flet_resilient.metrics import count

__all__ = ["RSS_CHECK_S", "Recycler", "resident_bytes"]

logger = logging.getLogger("flet_resilient.recycle")

RSS_CHECK_S = 2.0
"""How often the resident memory is compared with `recycle_rss`."""


def resident_bytes() -> int:
    """This process's resident set size (Linux /proc, else psutil)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return int(psutil.Process().memory_info().rss)


def _exit_gracefully() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class Recycler:
    """This process's recycling limits (the strictest asked for wins)."""

    current: ClassVar[Recycler | None] = None

    def __init__(self) -> None:
        self.after_sessions: int | None = None
        self.max_rss: int | None = None
        self.sessions = 0
        self.leaving = False
        self.exit: Callable[[], None] = _exit_gracefully
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def configure(cls, after_sessions: int | None, max_rss: int | None) -> Recycler:
        """The process's recycler, with these limits added."""
        recycler = cls.current = cls.current or cls()
        recycler.after_sessions = _strictest(recycler.after_sessions, after_sessions)
        recycler.max_rss = _strictest(recycler.max_rss, max_rss)
        return recycler

    def session_started(self) -> None:
        """Count a new session; leave once `after_sessions` were served."""
        self.sessions += 1
        if self.after_sessions is not None and self.sessions >= self.after_sessions:
            self.leave(f"served {self.sessions} sessions")
        if self.max_rss is not None and self._watcher is None:
            self._watcher = spawn(self._watch_rss())

    async def _watch_rss(self) -> None:
        while not self.leaving:
            rss = resident_bytes()
            if self.max_rss is not None and rss > self.max_rss:
                self.leave(f"resident memory {rss >> 20} MiB")
            await asyncio.sleep(RSS_CHECK_S)

    def leave(self, why: str) -> None:
        """Drain and exit this worker (once)."""
        if self.leaving:
            return
        self.leaving = True
        count("recycle.exits")
        logger.warning("recycling this worker (pid %d): %s", os.getpid(), why)
        self.exit()


def _strictest(current: int | None, new: int | None) -> int | None:
    if current is None or new is None:
        return current if new is None else new
    return min(current, new)
