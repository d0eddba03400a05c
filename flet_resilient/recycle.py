"""Worker recycling: a worker that served enough sessions, grew too big, or
holds much more memory than its live sessions need, leaves.

CPython's allocators keep freed arenas, so a long-lived worker's RSS stays
near its peak after a burst. A worker that drains (its users' state saved,
their clients told to reconnect elsewhere) and exits hands all of it back;
the process manager (gunicorn, `uvicorn --workers`, systemd, Kubernetes)
starts a fresh one. The exit is a SIGTERM to the process itself, so the
server's own graceful shutdown, and with it `drain()`, runs as on a deploy.

`recycle_idle_rss` leaves only when the memory is *reclaimable*: once
evictions paused (`EVICTIONS_QUIET_S`, the tail of a burst gone), when the
RSS exceeds the worker's baseline plus its live sessions' estimate by more
than the limit and by more than that estimate (so the drain moves few
sessions); what counts is at most what its evicted sessions held, so a fresh
worker that only took sessions over never leaves. The workers of one machine
take turns (`RECYCLE_SPACING_S`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from flet_resilient.background import spawn
from flet_resilient.metrics import count
from flet_resilient.stores import default_state_dir

__all__ = [
    "EVICTIONS_QUIET_S",
    "RECYCLE_SPACING_S",
    "RSS_CHECK_S",
    "Recycler",
    "resident_bytes",
    "session_evicted",
    "take_turn",
]

logger = logging.getLogger("flet_resilient.recycle")

RSS_CHECK_S = 2.0
"""How often the resident memory is compared with the RSS limits."""
EVICTIONS_QUIET_S = 5.0
"""`recycle_idle_rss` waits until no session was evicted for this long."""
RECYCLE_SPACING_S = 10.0
"""Least time between two `recycle_idle_rss` exits on one machine: enough for
a replacement to boot and take the moved sessions before the next one goes."""
TURN_FILE = "recycle-turn"
"""In the state directory: when this machine's last worker left (epoch s)."""


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


def take_turn(path: Path, spacing: float = RECYCLE_SPACING_S) -> float | None:
    """Claim this machine's next recycle: None if granted (the time is
    recorded), else the seconds since the last one. Atomic across processes
    (an exclusive `flock` around the read and write of `path`)."""
    import fcntl  # POSIX; checked when recycle_idle_rss is configured

    path.parent.mkdir(parents=True, exist_ok=True)  # (a tmp cleaner may remove it)
    with open(path, "a+") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX)
        turn.seek(0)
        text = turn.read().strip()
        now = time.time()
        since = now - float(text) if text else spacing
        if 0 <= since < spacing:
            return since
        turn.seek(0)
        turn.truncate()
        turn.write(f"{now:.3f}")
        return None


class Recycler:
    """This process's recycling limits (the strictest asked for wins)."""

    current: ClassVar[Recycler | None] = None

    def __init__(self) -> None:
        self.after_sessions: int | None = None
        self.max_rss: int | None = None
        self.idle_rss: int | None = None
        self.sessions = 0
        self.baseline: int | None = None  # RSS when the first session started
        self.evicted_bytes = 0  # estimated bytes of the sessions evicted
        self.last_eviction = 0.0  # time.monotonic()
        self.live_bytes: Callable[[], int] = lambda: 0
        self.turn_path = default_state_dir() / TURN_FILE
        self.deferred = False
        self.leaving = False
        self.exit: Callable[[], None] = _exit_gracefully
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def configure(
        cls, after_sessions: int | None, max_rss: int | None, idle_rss: int | None
    ) -> Recycler:
        """The process's recycler, with these limits added."""
        recycler = cls.current = cls.current or cls()
        if idle_rss is not None:
            _check_turn_file(recycler.turn_path)
        recycler.after_sessions = _strictest(recycler.after_sessions, after_sessions)
        recycler.max_rss = _strictest(recycler.max_rss, max_rss)
        recycler.idle_rss = _strictest(recycler.idle_rss, idle_rss)
        return recycler

    def session_started(self) -> None:
        """Count a new session; leave once `after_sessions` were served."""
        if self.baseline is None:
            self.baseline = resident_bytes()
        self.sessions += 1
        if self.after_sessions is not None and self.sessions >= self.after_sessions:
            self.leave(f"served {self.sessions} sessions")
        watched = self.max_rss is not None or self.idle_rss is not None
        if watched and self._watcher is None:
            self._watcher = spawn(self._watch_rss())

    async def _watch_rss(self) -> None:
        while not self.leaving:
            self.check(resident_bytes())
            await asyncio.sleep(RSS_CHECK_S)

    def check(self, rss: int) -> None:
        """Leave if `rss` is over `max_rss`, or reclaimable over `idle_rss`."""
        if self.max_rss is not None and rss > self.max_rss:
            self.leave(f"resident memory {rss >> 20} MiB")
        elif self.idle_rss is not None:
            self._check_reclaimable(rss, self.idle_rss)

    def _check_reclaimable(self, rss: int, limit: int) -> None:
        if time.monotonic() - self.last_eviction < EVICTIONS_QUIET_S:
            return
        live = self.live_bytes()
        spare = min(rss - (self.baseline or rss) - live, self.evicted_bytes)
        if spare <= limit or spare <= live:
            self.deferred = False
            return
        since = take_turn(self.turn_path)
        if since is None:
            self.leave(
                f"{spare >> 20} MiB reclaimable (resident {rss >> 20} MiB, "
                f"live sessions est. {live >> 20} MiB)"
            )
        elif not self.deferred:
            self.deferred = True
            count("recycle.deferred")
            logger.warning(
                "recycle deferred (pid %d): another worker of this machine left "
                "%.1f s ago",
                os.getpid(),
                since,
            )

    def leave(self, why: str) -> None:
        """Drain and exit this worker (once)."""
        if self.leaving:
            return
        self.leaving = True
        count("recycle.exits")
        logger.warning("recycling this worker (pid %d): %s", os.getpid(), why)
        self.exit()


def _check_turn_file(path: Path) -> None:
    """Fail at startup, not at the first recycle, if turns cannot be taken."""
    if os.name != "posix":
        raise RuntimeError("recycle_idle_rss needs a POSIX system (fcntl.flock)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as error:
        raise RuntimeError(
            f"recycle_idle_rss: cannot write the turn file {path} (set "
            f"$FLET_RESILIENT_STATE_DIR to a writable directory): {error}"
        ) from error


def session_evicted(estimated: int) -> None:
    """An evicted session's estimated bytes: memory a fresh worker hands back."""
    recycler = Recycler.current
    if recycler is not None:
        recycler.evicted_bytes += estimated
        recycler.last_eviction = time.monotonic()


def _strictest(current: int | None, new: int | None) -> int | None:
    if current is None or new is None:
        return current if new is None else new
    return min(current, new)
