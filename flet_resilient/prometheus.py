"""`stats()` for Prometheus: a scrape endpoint on the app, behind a token.

Counters become `flet_resilient_<name>_total`, the millisecond histograms
Prometheus histograms in seconds, and every other number in `stats()` a gauge
named by its path (`flet_resilient_transport_backlog_bytes`). Per-session
details are left out: one label per user would grow without bound. The
process's RSS and CPU come along (`process_resident_memory_bytes`). Each worker
serves its own numbers (scrape every worker). Needs the `prometheus` extra.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from flet_resilient.evict import EVICTION_REASONS
from flet_resilient.metrics import Histogram, stats
from flet_resilient.protect import endpoint_secret, guarded_route, mount_routes

__all__ = ["FROM_ZERO", "TOKEN_ENV", "metrics_text", "mount_metrics"]

TOKEN_ENV = "FLET_RESILIENT_METRICS_TOKEN"
_SKIPPED = {"per_session", "stores"}

FROM_ZERO = (
    "transport.frames_sent",
    "transport.bytes_sent",
    "loop.stalls",
    *(f"evict.{reason}" for reason in EVICTION_REASONS),
    "evict.rehydrated",
    "store.outages",
    "store.errors",
    "offload.completed",
    "offload.failed",
    "offload.timeouts",
    "reconnect.reconnects",
)
"""Counters exported from 0 before their first event (the Grafana dashboard's):
a series that first appears at 1 shows no increase, so `rate()`/`increase()`
and alerts on them would miss the first outage or eviction."""


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(
            "the metrics endpoint needs the 'prometheus' extra: "
            "pip install 'flet-resilient[prometheus]'"
        ) from exc
    return prometheus_client


def _name(*parts: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", "_".join(("flet_resilient", *parts)))


class _StatsCollector:
    """Turns one `stats()` snapshot into metric families at each scrape."""

    def collect(self) -> Iterator[Any]:
        _client()  # a clear error without the extra
        from prometheus_client import core

        snapshot = stats()
        counted = {**dict.fromkeys(FROM_ZERO, 0), **snapshot.pop("counters")}
        for name, value in sorted(counted.items()):
            yield core.CounterMetricFamily(_name(name), f"{name} events", value=value)
        yield from self._walk(core, snapshot, ())

    def _walk(
        self, core: Any, node: dict[str, Any], path: tuple[str, ...]
    ) -> Iterator[Any]:
        for key, value in node.items():
            if key in _SKIPPED:
                continue
            here = (*path, key)
            if isinstance(value, dict) and "buckets_ms" in value:
                yield _histogram(core, _name(*here, "seconds"), value)
            elif isinstance(value, dict):
                yield from self._walk(core, value, here)
            elif isinstance(value, (int, float)):  # bool is an int: 1 or 0
                yield core.GaugeMetricFamily(_name(*here), ".".join(here), value=value)


def _histogram(core: Any, name: str, snapshot: dict[str, Any]) -> Any:
    cumulative, buckets = 0, []
    for bound, count in zip(
        (*Histogram.BOUNDS_MS, None), snapshot["buckets_ms"].values(), strict=True
    ):
        cumulative += count
        buckets.append(("+Inf" if bound is None else str(bound / 1000), cumulative))
    # stats() keeps no sum of samples; Prometheus needs one: 0 says "unknown".
    return core.HistogramMetricFamily(name, name, buckets=buckets, sum_value=0)


_registry: Any = None


def metrics_text() -> bytes:
    """The Prometheus exposition of this process's `stats()`."""
    global _registry
    client = _client()
    if _registry is None:
        _registry = client.CollectorRegistry(auto_describe=False)
        _registry.register(_StatsCollector())
        client.ProcessCollector(registry=_registry)  # RSS, CPU, fds (Linux)
    return bytes(client.generate_latest(_registry))


def mount_metrics(
    app: Any, path: str = "/metrics", *, token: str | None = None
) -> None:
    """Serve `metrics_text()` at `path` of a Flet FastAPI app, to requests
    carrying `Authorization: Bearer <token>` or Basic auth with the token as
    password (default: $FLET_RESILIENT_METRICS_TOKEN; without one this refuses,
    so the numbers are never public by accident)."""
    from starlette.requests import Request
    from starlette.responses import Response

    secret = endpoint_secret(token, TOKEN_ENV, "mount_metrics")
    content_type = _client().CONTENT_TYPE_LATEST

    async def endpoint(request: Request) -> Response:
        return Response(metrics_text(), media_type=content_type)

    mount_routes(app, guarded_route(path, endpoint, secret, "flet-resilient metrics"))
