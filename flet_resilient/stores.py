"""Where evicted sessions' app state waits for its user: memory, disk or Redis.

Every store is async and stores opaque bytes under a key with a time to live.
`ResilientStore` wraps a primary store and degrades to memory, with a logged
warning, when the primary fails: a broken store never crashes the app.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import anyio
import msgpack
from cachetools import TLRUCache

from flet_resilient.metrics import Histogram, count

__all__ = [
    "DiskStore",
    "MemoryStore",
    "RedisStore",
    "ResilientStore",
    "StateStore",
    "default_store",
]

logger = logging.getLogger("flet_resilient.stores")

store_latency = Histogram()
"""Latency (ms) of every state-store operation, reported in `stats()`."""


class StateStore(Protocol):
    """Async bytes store with per-key time to live."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...


class MemoryStore:
    """In-process store, bounded by entry count (least recently used go first)."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._cache: TLRUCache[str, tuple[bytes, float]] = TLRUCache(
            maxsize, ttu=lambda key, value, now: now + value[1]
        )

    async def get(self, key: str) -> bytes | None:
        entry = self._cache.get(key)
        return entry[0] if entry is not None else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self._cache[key] = (value, ttl)

    async def delete(self, key: str) -> None:
        self._cache.pop(key, None)


class DiskStore:
    """One file per key under `path`; writes are atomic, I/O runs in threads.

    Expired files are removed when read, and by a scan of the directory at
    most every `purge_interval` seconds (run along with a write).
    """

    def __init__(
        self, path: str | os.PathLike[str], purge_interval: float = 600
    ) -> None:
        self.path = Path(path)
        self.purge_interval = purge_interval
        self._purged_at = time.monotonic()

    def _file(self, key: str) -> Path:
        return self.path / hashlib.sha256(key.encode()).hexdigest()

    async def get(self, key: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self._read, self._file(key))

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        record = msgpack.packb([time.time() + ttl, value])
        await anyio.to_thread.run_sync(self._write, self._file(key), record)
        if time.monotonic() - self._purged_at > self.purge_interval:
            self._purged_at = time.monotonic()
            await anyio.to_thread.run_sync(self.purge)

    async def delete(self, key: str) -> None:
        await anyio.to_thread.run_sync(self._remove, self._file(key))

    def purge(self) -> int:
        """Remove every expired (or unreadable) file; return how many."""
        removed = 0
        for file in self.path.glob("*"):
            if file.suffix == ".tmp":
                continue
            try:
                expires, _ = msgpack.unpackb(file.read_bytes())
            except (OSError, ValueError, msgpack.UnpackException):
                expires = 0
            if expires < time.time():
                self._remove(file)
                removed += 1
        return removed

    @staticmethod
    def _read(file: Path) -> bytes | None:
        try:
            expires, value = msgpack.unpackb(file.read_bytes())
        except FileNotFoundError:
            return None
        if expires < time.time():
            DiskStore._remove(file)
            return None
        return bytes(value)

    def _write(self, file: Path, record: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = file.with_suffix(".tmp")
        temporary.write_bytes(record)
        os.replace(temporary, file)

    @staticmethod
    def _remove(file: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            file.unlink()


class RedisStore:
    """Redis-backed store, shared by several uvicorn workers (extra `redis`)."""

    def __init__(self, url: str, prefix: str = "flet-resilient:") -> None:
        try:
            import redis.asyncio as redis
        except ImportError as exc:
            raise ImportError(
                "RedisStore needs the 'redis' extra: "
                "pip install 'flet-resilient[redis]'"
            ) from exc
        self._client: Any = redis.from_url(url)
        self.prefix = prefix

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(self.prefix + key)
        return bytes(value) if value is not None else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._client.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))

    async def delete(self, key: str) -> None:
        await self._client.delete(self.prefix + key)


class ResilientStore:
    """A primary store that falls back to memory (logged) when it fails."""

    def __init__(self, primary: StateStore, fallback: StateStore | None = None) -> None:
        self.primary = primary
        self.fallback = fallback or MemoryStore()

    async def get(self, key: str) -> bytes | None:
        value = await self._call("get", key)
        if value is None and self.primary is not self.fallback:
            value = await self.fallback.get(key)  # saved there during an outage
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._call("put", key, value, ttl)

    async def delete(self, key: str) -> None:
        await self._call("delete", key)
        await self.fallback.delete(key)

    async def _call(self, operation: str, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return await getattr(self.primary, operation)(*args)
        except Exception as exc:
            count("evict.store_errors")
            logger.warning(
                "state store %s.%s failed (%r); using memory instead",
                type(self.primary).__name__,
                operation,
                exc,
            )
            return await getattr(self.fallback, operation)(*args)
        finally:
            store_latency.record((time.perf_counter() - started) * 1000)


def default_store() -> StateStore:
    """A disk store under $FLET_RESILIENT_STATE_DIR (default: the temp dir)."""
    path = os.environ.get("FLET_RESILIENT_STATE_DIR") or os.path.join(
        tempfile.gettempdir(), "flet-resilient-state"
    )
    return DiskStore(path)
