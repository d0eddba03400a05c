"""A live status page for operators, served by the app and behind a token.

`mount_status(app, "/status")` serves one self-contained HTML page (no CDN,
no framework) that polls `<path>/data` every second: recent event-loop lag,
sessions, patches and bytes sent per second, backlog, evictions, store health
and the offload queues of this worker. The numbers come from `stats()` through
an allow-list, so nothing secret (no session id, no per-session detail) is
ever in the page. Each worker serves its own numbers.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from flet_resilient.evict import EVICTION_REASONS
from flet_resilient.metrics import Histogram, stats
from flet_resilient.protect import endpoint_secret, guarded_route, mount_routes
from flet_resilient.watchdog import watch_loop

__all__ = ["TOKEN_ENV", "StatusSampler", "mount_status"]

TOKEN_ENV = "FLET_RESILIENT_STATUS_TOKEN"
WINDOW_S = 10.0
"""Seconds the rates and the recent loop lag are computed over."""
SHARED_S = 1.0
"""Reads this close to the last one get its numbers: however many pages poll,
`stats()` (which costs the loop ~5-25 us per session) runs at most once a second..."""
STATS_SHARE = 0.02
"""...and takes at most this share of the loop: a `stats()` that took 60 ms (a
worker of 3,000 sessions) is reused for 3 s, so an open status page does not
slow the users it reports on."""

Level = Literal["ok", "warn", "bad"]

LAG_P99_MS = (50.0, 200.0)
"""Recent loop-lag p99 from which the page warns / says the wall is here: every
click waits for the loop, and 200 ms is the load test's click p99 SLO."""
BACKLOG_PER_SOCKET = (64 * 1024, 1024 * 1024)
"""Bytes queued per live socket (warn, bad): clients read slower than the app
sends; 1 MiB is where `coalesce_updates` makes flushes wait."""
STORE_P99_MS = 100.0
"""Store latency p99 that warns (calls time out at 0.5 s by default)."""
PRESSURE = ("lru", "budget")
"""Evictions of sessions still in use: `max_sessions` or the memory budget is hit."""


@dataclass(frozen=True)
class _Sample:
    """What a read keeps of one snapshot to compute the next reads' rates."""

    at: float
    counters: dict[str, int]
    lag: dict[str, Any]


class StatusSampler:
    """Turns successive `stats()` snapshots into the page's numbers: rates and
    recent loop lag between now and the oldest sample within `window` seconds."""

    def __init__(
        self, window: float = WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self.clock = clock
        self._samples: deque[_Sample] = deque(maxlen=1024)
        self._last: tuple[float, dict[str, Any]] | None = None
        self._shared = SHARED_S  # how long a read's numbers are reused

    def read(self, snapshot: dict[str, Any] | None = None) -> dict[str, Any]:
        """The status payload for `snapshot` (default: `stats()` now, or the
        last payload if it is under `SHARED_S` old, longer if `stats()` is slow:
        `STATS_SHARE`)."""
        at = self.clock()
        if snapshot is None and self._last and at - self._last[0] < self._shared:
            return self._last[1]
        if snapshot is None:
            snapshot = stats()
            self._shared = max(SHARED_S, (self.clock() - at) / STATS_SHARE)
        now = _Sample(at, snapshot["counters"], snapshot["loop"]["lag"])
        while len(self._samples) > 1 and self._samples[1].at <= now.at - self.window:
            self._samples.popleft()
        base = self._samples[0] if self._samples else None
        self._samples.append(now)
        payload = _payload(snapshot, now, base)
        payload["levels"] = _levels(payload)
        self._last = (at, payload)
        return payload


def _payload(
    snapshot: dict[str, Any], now: _Sample, base: _Sample | None
) -> dict[str, Any]:
    """The page's numbers, picked from `stats()` by name: nothing else gets out."""
    span = now.at - base.at if base is not None and now.at > base.at else None
    counters = now.counters

    def rate(name: str) -> float | None:
        if span is None or base is None:
            return None
        return max(0, counters.get(name, 0) - base.counters.get(name, 0)) / span

    transport = snapshot["transport"]
    evictions = {r: counters.get(f"evict.{r}", 0) for r in EVICTION_REASONS}
    pressure = None if span is None else sum(rate(f"evict.{r}") or 0 for r in PRESSURE)
    return {
        "worker": {"pid": os.getpid()},
        "window_s": span,
        "loop": _loop(now, base, counters),
        "sessions": dict(snapshot["sessions"]),
        "traffic": {
            "patches_per_s": rate("transport.frames_sent"),
            "bytes_per_s": rate("transport.bytes_sent"),
            "patches": counters.get("transport.frames_sent", 0),
            "bytes": counters.get("transport.bytes_sent", 0),
        },
        "backlog": {
            "sockets": transport["sockets"],
            "frames": transport["backlog_frames"],
            "bytes": transport["backlog_bytes"],
            "coalesce_bytes": snapshot["coalesce"]["backlog_bytes"],
        },
        "evictions": {
            "by_reason": evictions,
            "total": sum(evictions.values()),
            "pressure_per_min": None if pressure is None else 60 * pressure,
        },
        "store": _store(snapshot["store"], counters),
        "offload": {
            name: {"running": b["running"], "queued": b["queued"]}
            for name, b in snapshot["offload"].items()
        },
    }


def _loop(
    now: _Sample, base: _Sample | None, counters: dict[str, int]
) -> dict[str, Any]:
    """Loop lag since `base` (all of it on the first read) and the stalls."""
    recent = Histogram.between(base.lag if base else None, now.lag)
    return {
        "samples": recent.count,
        "p50_ms": recent.percentile(50),
        "p99_ms": recent.percentile(99),
        "stalls": counters.get("loop.stalls", 0),
    }


def _store(section: dict[str, Any], counters: dict[str, int]) -> dict[str, Any]:
    """Every store's health (its class name, not its address) and the totals."""
    stores = [
        {k: s[k] for k in ("store", "healthy", "down_for_s", "kept_writes")}
        for s in section["stores"]
    ]
    return {
        "present": bool(stores),
        "healthy": section["healthy"],
        "kept_writes": section["kept_writes"],
        "latency_p99_ms": section["latency"]["p99_ms"],
        "outages": counters.get("store.outages", 0),
        "errors": counters.get("store.errors", 0),
        "stores": stores,
    }


def _levels(payload: dict[str, Any]) -> dict[str, Level]:
    """ok / warn / bad per card: how near this worker is to its wall."""
    backlog = payload["backlog"]
    per_socket = backlog["bytes"] / max(1, backlog["sockets"])
    store = payload["store"]
    slow_store = store["kept_writes"] or store["latency_p99_ms"] > STORE_P99_MS
    queued = sum(b["queued"] for b in payload["offload"].values())
    return {
        "loop": _grade(payload["loop"]["p99_ms"], LAG_P99_MS),
        "backlog": _grade(per_socket, BACKLOG_PER_SOCKET),
        "evictions": "warn" if payload["evictions"]["pressure_per_min"] else "ok",
        "store": "bad" if not store["healthy"] else "warn" if slow_store else "ok",
        "offload": "warn" if queued else "ok",
    }


def _grade(value: float, bounds: tuple[float, float]) -> Level:
    warn, bad = bounds
    return "bad" if value >= bad else "warn" if value >= warn else "ok"


def _page() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy: only its own inline script and
    style run, it may fetch only from this origin, and no site may frame it."""
    html = resources.files("flet_resilient").joinpath("status.html").read_text("utf-8")

    def digest(tag: str) -> str:
        body = re.search(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        assert body is not None, f"status.html has no <{tag}>"
        sha = hashlib.sha256(body.group(1).encode()).digest()
        return f"'sha256-{base64.b64encode(sha).decode()}'"

    policy = (
        f"default-src 'none'; script-src {digest('script')}; style-src "
        f"{digest('style')}; connect-src 'self'; img-src data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return html.encode(), policy


def mount_status(
    app: Any,
    path: str = "/status",
    *,
    token: str | None = None,
    window: float = WINDOW_S,
) -> None:
    """Serve the live status page at `path` of a Flet FastAPI app and its data
    at `<path>/data`, to the holder of `token` (default: $FLET_RESILIENT_STATUS_TOKEN;
    without one this refuses). Browsers log in with HTTP Basic auth, any user
    name and the token as password; scripts send `Authorization: Bearer <token>`."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    secret = endpoint_secret(token, TOKEN_ENV, "mount_status")
    sampler = StatusSampler(window)
    html, policy = _page()
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    async def page(request: Request) -> Response:
        return Response(html, media_type="text/html; charset=utf-8", headers=headers)

    async def data(request: Request) -> Response:
        watch_loop()  # lag is measured from the first poll, before any user comes
        return JSONResponse(
            sampler.read(), headers={"X-Content-Type-Options": "nosniff"}
        )

    realm = "flet-resilient status"
    mount_routes(
        app,
        guarded_route(path, page, secret, realm),
        guarded_route(f"{path.rstrip('/')}/data", data, secret, realm),
    )
