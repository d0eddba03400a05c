"""A state store that may fail: every call bounded, failed writes kept and retried.

`DurableStore` wraps the app's store. Each call gets `timeout` seconds of the
loop's responsive time (a hung Redis costs that, not minutes; a loop busy
elsewhere does not fail calls that were answered). A write that fails is kept in memory,
newest per key, and retried with backoff until the store answers; reads see
those kept writes, so a user who returns during an outage gets their newest
state. An outage is logged once when it starts and once when it ends (a
flapping store: once per `OUTAGE_LOG_EVERY_S`), counted, and shown in
`stats()["store"]`; nothing raises into the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flet_resilient.background import spawn
from flet_resilient.deadline import responsive_timeout
from flet_resilient.metrics import Histogram, count, register_section
from flet_resilient.stores import Record, StateStore

__all__ = [
    "DurableStore",
    "StoreUnavailable",
    "flush_kept",
    "kept_writes",
    "store_latency",
]

logger = logging.getLogger("flet_resilient.stores")

store_latency = Histogram()
"""Latency (ms) of every state-store operation, reported in `stats()`."""

RETRY_FIRST_S = 0.25
RETRY_MAX_S = 5.0
OUTAGE_LOG_EVERY_S = 30.0
"""A store that flaps logs one outage (and its end) per this many seconds;
every outage is still counted."""
PROBE_KEY = "flet-resilient:probe"
"""Read (never written) to learn that a store with nothing to retry is back."""


class StoreUnavailable(Exception):
    """The store did not answer in time or failed (the outage is logged).

    `kept` is this process's newest unsent write for the key, if any.
    """

    def __init__(self, message: str, kept: Record | None = None) -> None:
        super().__init__(message)
        self.kept = kept


@dataclass
class _Kept:
    value: bytes
    version: int
    ttl: float


class DurableStore:
    """`store` behind timeouts, with failed writes kept and retried."""

    def __init__(self, store: StateStore, timeout: float = 0.5) -> None:
        self.store = store
        self.timeout = timeout
        self.kept: dict[str, _Kept] = {}
        self.down_since: float | None = None
        self._logged_at = -OUTAGE_LOG_EVERY_S
        self._unlogged = 0  # outages since the last logged one
        self._logging_outage = False
        self._retrier: asyncio.Task[None] | None = None
        self._on_recovered: list[Callable[[], None]] = []
        _all.add(self)

    @property
    def shared(self) -> bool:
        return bool(getattr(self.store, "shared", False))

    @property
    def healthy(self) -> bool:
        return self.down_since is None

    def on_recovered(self, hook: Callable[[], None]) -> None:
        """Call `hook()` (on the loop) each time the store answers again."""
        self._on_recovered.append(hook)

    async def read(self, key: str) -> Record | None:
        """The newest record: the store's, or a kept write if newer.

        Raises StoreUnavailable (with any kept write) when the store fails.
        """
        kept = self.kept.get(key)
        try:
            held = await self._call(self.store.read, key)
        except StoreUnavailable as exc:
            exc.kept = None if kept is None else (kept.version, kept.value)
            raise
        if kept is not None and (held is None or kept.version > held[0]):
            return kept.version, kept.value
        return held

    async def write(self, key: str, value: bytes, version: int, ttl: float) -> bool:
        """Write if newer. False: the store holds a newer version (refused).

        If the store fails, the write is kept and retried (True: it will land
        unless something newer does first).
        """
        try:
            written = await self._call(self.store.write, key, value, version, ttl)
        except StoreUnavailable:
            self._keep(key, _Kept(value, version, ttl))
            return True
        kept = self.kept.get(key)
        if kept is not None and kept.version <= version:
            del self.kept[key]
        return bool(written)

    async def delete(self, key: str) -> None:
        self.kept.pop(key, None)
        await self._call(self.store.delete, key)

    def _keep(self, key: str, write: _Kept) -> None:
        held = self.kept.get(key)
        if held is None or write.version > held.version:
            self.kept[key] = write
        count("store.writes_kept")
        self._retry_soon()

    def _retry_soon(self) -> None:
        if self._retrier is None or self._retrier.done():
            self._retrier = spawn(self._retry())

    async def _retry(self) -> None:
        """While writes are kept or the store is down, retry with backoff: the
        kept writes, or a probe read, so that the recovery hooks run (and
        provisional sessions get their state) even when no one calls."""
        delay = RETRY_FIRST_S
        while self.kept or self.down_since is not None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            if self.kept:
                await self.flush()
                continue
            with contextlib.suppress(StoreUnavailable):
                await self._call(self.store.read, PROBE_KEY)

    async def flush(self) -> int:
        """Retry the kept writes now, until one fails; how many are still kept."""
        for key, write in list(self.kept.items()):
            try:
                await self._call(
                    self.store.write, key, write.value, write.version, write.ttl
                )
            except StoreUnavailable:
                break
            if self.kept.get(key) is write:
                del self.kept[key]
            count("store.writes_retried")
        return len(self.kept)

    async def _call(self, operation: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        try:
            result = await responsive_timeout(operation(*args), self.timeout)
        except Exception as exc:
            self._failed(operation, exc)
            raise StoreUnavailable(f"state store failed: {exc!r}") from exc
        finally:
            store_latency.record((time.perf_counter() - started) * 1000)
        self._answered()
        return result

    def _failed(self, operation: Callable[..., Any], exc: Exception) -> None:
        count("store.errors")
        if self.down_since is not None:
            return
        self.down_since = time.monotonic()
        count("store.outages")
        self._retry_soon()
        if self.down_since - self._logged_at < OUTAGE_LOG_EVERY_S:
            self._unlogged += 1
            return
        self._logged_at, self._logging_outage = self.down_since, True
        logger.error(
            "state store %s unavailable (%s: %r); saves are kept in memory and "
            "retried, reads fall back to them; logged again when it is back "
            "(%d short outages since the last line)",
            type(self.store).__name__,
            getattr(operation, "__name__", operation),
            exc,
            self._unlogged,
        )
        self._unlogged = 0

    def _answered(self) -> None:
        if self.down_since is None:
            return
        outage = time.monotonic() - self.down_since
        self.down_since = None
        if self._logging_outage:
            self._logging_outage = False
            logger.warning(
                "state store %s is back after %.1f s; %d kept writes to retry",
                type(self.store).__name__,
                outage,
                len(self.kept),
            )
        for hook in list(self._on_recovered):
            hook()

    def snapshot(self) -> dict[str, Any]:
        return {
            "store": type(self.store).__name__,
            "healthy": self.healthy,
            "down_for_s": (
                0.0
                if self.down_since is None
                else round(time.monotonic() - self.down_since, 1)
            ),
            "kept_writes": len(self.kept),
        }


_all: weakref.WeakSet[DurableStore] = weakref.WeakSet()


def kept_writes() -> int:
    """Writes this process holds in memory because their store is down."""
    return sum(len(store.kept) for store in list(_all))


async def flush_kept() -> int:
    """Retry every store's kept writes now (drain, before the process exits:
    the retry loop may be in a backoff sleep); how many are still kept."""
    for store in list(_all):
        if store.kept:
            await store.flush()
    return kept_writes()


def _section() -> dict[str, Any]:
    stores = [store.snapshot() for store in list(_all)]
    return {
        "healthy": all(s["healthy"] for s in stores),
        "kept_writes": sum(s["kept_writes"] for s in stores),
        "latency": store_latency.snapshot(),
        "stores": stores,
    }


register_section("store", _section)
