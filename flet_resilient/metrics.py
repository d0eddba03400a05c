"""Counters and histograms shared by the mitigations, read with `stats()`."""

from __future__ import annotations

import bisect
import math
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

from opentelemetry import metrics as otel

__all__ = ["Histogram", "count", "counters", "register_section", "reset", "stats"]

counters: Counter[str] = Counter()
"""Monotonic event counts, e.g. `counters["offload.completed"]`."""

_meter = otel.get_meter("flet_resilient")
_otel_counters: dict[str, otel.Counter] = {}


def count(name: str, n: int = 1) -> None:
    """Add `n` to counter `name` in `stats()` and as an OpenTelemetry counter
    `flet_resilient.<name>` (a no-op unless the app configures an SDK)."""
    counters[name] += n
    instrument = _otel_counters.get(name)
    if instrument is None:
        instrument = _otel_counters[name] = _meter.create_counter(
            f"flet_resilient.{name}"
        )
    instrument.add(n)


_sections: dict[str, Callable[[], dict[str, Any]]] = {}
_histograms: weakref.WeakSet[Histogram] = weakref.WeakSet()


class Histogram:
    """Fixed-bucket histogram (milliseconds): cheap to record, no sample list."""

    BOUNDS_MS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

    def __init__(self) -> None:
        self.clear()
        _histograms.add(self)

    def clear(self) -> None:
        """Forget every sample."""
        self.buckets = [0] * (len(self.BOUNDS_MS) + 1)
        self.count = 0
        self.max_ms = 0.0

    def record(self, value_ms: float) -> None:
        self.buckets[bisect.bisect_left(self.BOUNDS_MS, value_ms)] += 1
        self.count += 1
        self.max_ms = max(self.max_ms, value_ms)

    def merge(self, other: Histogram) -> None:
        """Add another histogram's samples into this one."""
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.count += other.count
        self.max_ms = max(self.max_ms, other.max_ms)

    def percentile(self, p: float) -> float:
        """Upper bound (ms) of the bucket holding the p-th percentile."""
        if not self.count:
            return 0.0
        rank = p / 100 * self.count
        seen = 0
        for bound, n in zip((*self.BOUNDS_MS, math.inf), self.buckets, strict=True):
            seen += n
            if seen >= rank:
                return min(bound, self.max_ms)
        return self.max_ms

    @classmethod
    def between(
        cls, earlier: dict[str, Any] | None, later: dict[str, Any]
    ) -> Histogram:
        """The samples recorded between two `snapshot()`s of one histogram (all
        of `later`'s without `earlier` or if it was cleared in between); its max
        is `later`'s, an upper bound."""
        new = list(later["buckets_ms"].values())
        old = list(earlier["buckets_ms"].values()) if earlier else [0] * len(new)
        if any(b < a for a, b in zip(old, new, strict=True)):
            old = [0] * len(new)
        recent = cls()
        recent.buckets = [b - a for a, b in zip(old, new, strict=True)]
        recent.count = sum(recent.buckets)
        recent.max_ms = later["max_ms"]
        return recent

    def snapshot(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "p50_ms": self.percentile(50),
            "p99_ms": self.percentile(99),
            "max_ms": round(self.max_ms, 3),
            "buckets_ms": dict(
                zip([*map(str, self.BOUNDS_MS), "inf"], self.buckets, strict=True)
            ),
        }


def register_section(name: str, provider: Callable[[], dict[str, Any]]) -> None:
    """Add a section to `stats()`, computed on demand by `provider()`."""
    _sections[name] = provider


def stats() -> dict[str, Any]:
    """A snapshot of every mitigation's metrics (plain dicts, JSON-friendly)."""
    snapshot = {name: provider() for name, provider in _sections.items()}
    snapshot["counters"] = dict(counters)
    return snapshot


def reset() -> None:
    """Zero every counter and histogram (e.g. between tests, or after a
    warm-up); OpenTelemetry counters are monotonic and keep counting."""
    counters.clear()
    for histogram in list(_histograms):
        histogram.clear()
