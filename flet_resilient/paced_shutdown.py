"""On SIGTERM, drain before uvicorn's own shutdown, sending clients away in waves.

uvicorn's shutdown closes every socket at once (1012) before the ASGI lifespan
shutdown runs `drain()`, so all of a worker's clients reconnect in the same
instant and the workers left rebuild them as one herd (200 sessions at ~8 ms
each: the last waits 1.6 s). Wrapping uvicorn's SIGTERM handler (uvicorn's
`Server.handle_exit`, also under gunicorn's UvicornWorker, `ft.run` and
`flet run --web`), the worker first stops accepting (a load balancer sends the
refused reconnects elsewhere: HAProxy's `retry-on conn-failure`), saves, and
closes sockets `$FLET_RESILIENT_DRAIN_PACE` per second; then uvicorn's
shutdown runs as before. A second SIGTERM goes straight to uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import threading
from dataclasses import dataclass
from types import FrameType

from uvicorn.server import Server

from flet_resilient import _flet
from flet_resilient.background import spawn
from flet_resilient.drain import drain

__all__ = ["DEFAULT_PACE", "PACE_ENV", "drain_pace"]

logger = logging.getLogger("flet_resilient.drain")

PACE_ENV = "FLET_RESILIENT_DRAIN_PACE"
DEFAULT_PACE = 50.0
"""Sockets closed per second on SIGTERM: a share of what one worker rebuilds
(~125 sessions/s on a 2-core machine), so the reconnects do not queue."""


def drain_pace() -> float | None:
    """`$FLET_RESILIENT_DRAIN_PACE` (sockets per second; 0: all at once)."""
    raw = os.environ.get(PACE_ENV, "").strip()
    if not raw:
        return DEFAULT_PACE
    try:
        pace = float(raw)
    except ValueError:
        pace = math.nan
    if not 0 <= pace < math.inf:
        raise ValueError(
            f"{PACE_ENV} must be sockets closed per second on SIGTERM, a number"
            f" >= 0 (0: all at once), got {raw!r}"
        )
    return pace or None


_PACE = drain_pace()  # a bad value fails at import, not at the first deploy


@dataclass
class _Sigterm:
    """The SIGTERM handler this module last saw or installed, and whether a
    paced drain has begun."""

    seen: object = None
    draining: bool = False


_sigterm = _Sigterm()


def _wrap_sigterm() -> None:
    """Put the paced drain in front of uvicorn's SIGTERM handler, once (on the
    first socket: by then uvicorn has installed it, and this is its loop)."""
    handler = signal.getsignal(signal.SIGTERM)
    if _sigterm.seen is handler or _PACE is None:
        return
    if threading.current_thread() is not threading.main_thread():
        return  # the server runs in a thread: it does not get the signal
    server = getattr(handler, "__self__", None)
    if not isinstance(server, Server) or not hasattr(server, "servers"):
        if _sigterm.seen is None:
            logger.warning(
                "SIGTERM is not uvicorn's Server.handle_exit of a server with "
                "listeners (Server.servers): sockets close all at once on drain"
            )
            _sigterm.seen = handler
        return
    loop = asyncio.get_running_loop()

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        if _sigterm.draining:
            server.handle_exit(sig, frame)  # a second SIGTERM: uvicorn at once
            return
        _sigterm.draining = True
        loop.call_soon_threadsafe(lambda: spawn(_paced(server, sig, frame)))

    _sigterm.seen = on_sigterm
    signal.signal(signal.SIGTERM, on_sigterm)


async def _paced(server: Server, sig: int, frame: FrameType | None) -> None:
    """Stop accepting, drain at the pace, then uvicorn's own shutdown."""
    try:
        for listener in server.servers:
            listener.close()
        await drain(pace=_PACE)
    finally:
        server.handle_exit(sig, frame)


_flet.on_socket(_wrap_sigterm)
