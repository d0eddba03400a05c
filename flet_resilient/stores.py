"""Where app state waits for its user between sessions: memory, disk or Redis.

Every store is async and keeps opaque bytes under a key with a time to live.
Writes are versioned: `write(key, value, version, ttl)` stores only if the
key holds nothing or an older version, atomically (a lock on disk, a Lua
script on Redis), so a save from an older session never overwrites a newer
one, whatever the order in which several workers' writes arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import anyio
import msgpack
from cachetools import TLRUCache

from flet_resilient.deadline import BUSY_STRETCH, responsive_timeout

__all__ = [
    "DiskStore",
    "MemoryStore",
    "Record",
    "RedisStore",
    "StateStore",
    "default_state_dir",
    "default_store",
]

Record = tuple[int, bytes]
"""(version, value) as kept by a store."""


class StateStore(Protocol):
    """Async versioned bytes store with per-key time to live.

    `shared` is True for a store that several machines' processes reach
    (users' keys then need one secret everywhere).
    """

    shared: bool

    async def read(self, key: str) -> Record | None: ...

    async def write(self, key: str, value: bytes, version: int, ttl: float) -> bool:
        """Store `value` if the key holds no newer or equal version; say if so."""
        ...

    async def delete(self, key: str) -> None: ...


def _newer(version: int, held: Record | None) -> bool:
    return held is None or version > held[0]


class MemoryStore:
    """In-process store, bounded by entry count (least recently used go first)."""

    shared = False

    def __init__(self, maxsize: int = 10_000) -> None:
        self._cache: TLRUCache[str, tuple[Record, float]] = TLRUCache(
            maxsize, ttu=lambda key, value, now: now + value[1]
        )

    async def read(self, key: str) -> Record | None:
        entry = self._cache.get(key)
        return entry[0] if entry is not None else None

    async def write(self, key: str, value: bytes, version: int, ttl: float) -> bool:
        if not _newer(version, await self.read(key)):
            return False
        self._cache[key] = ((version, value), ttl)
        return True

    async def delete(self, key: str) -> None:
        self._cache.pop(key, None)


_RECORD_NAME = re.compile(r"[0-9a-f]{64}")
STALE_TMP_S = 60.0
"""A `.tmp` file older than this is a write that never finished (e.g. ENOSPC)."""


class DiskStore:
    """One file per key under `path`, for one machine's processes.

    Writes hold an advisory lock on the directory (so workers on one machine
    compare versions atomically) and land by atomic rename; I/O runs in
    threads. Writes that arrive while one is on disk go together, in one
    thread and under one lock (a thread and a lock each had cost 0.4 ms of CPU
    a write when many sessions saved at once). Expired records and abandoned
    `.tmp` files are removed by a scan at most every `purge_interval` seconds
    (run along with a write).
    """

    shared = False

    def __init__(
        self, path: str | os.PathLike[str], purge_interval: float = 600
    ) -> None:
        self.path = Path(path)
        self.purge_interval = purge_interval
        self._purged_at = time.monotonic()
        self._waiting: dict[asyncio.AbstractEventLoop, list[_Write]] = {}
        self._writers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    def _file(self, key: str) -> Path:
        return self.path / hashlib.sha256(key.encode()).hexdigest()

    async def read(self, key: str) -> Record | None:
        return await anyio.to_thread.run_sync(self._read, self._file(key))

    async def write(self, key: str, value: bytes, version: int, ttl: float) -> bool:
        record = msgpack.packb([time.time() + ttl, version, value])
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._waiting.setdefault(loop, []).append(
            _Write(self._file(key), version, record, done)
        )
        if loop not in self._writers:
            self._writers[loop] = loop.create_task(self._write_waiting(loop))
        written = await done
        if time.monotonic() - self._purged_at > self.purge_interval:
            self._purged_at = time.monotonic()
            await anyio.to_thread.run_sync(self.purge)
        return written

    async def delete(self, key: str) -> None:
        await anyio.to_thread.run_sync(self._remove, self._file(key))

    async def _write_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write what waits on `loop`, batch after batch, until nothing does."""
        batch: list[_Write] = []
        try:
            while batch := self._waiting.pop(loop, []):
                try:
                    results = await anyio.to_thread.run_sync(self._write_batch, batch)
                except Exception as exc:  # e.g. the lock cannot be taken
                    results = [exc] * len(batch)
                for write, result in zip(batch, results, strict=True):
                    write.settle(result)
        finally:
            del self._writers[loop]
            for write in batch + self._waiting.pop(loop, []):
                write.done.cancel()  # this task was cancelled (its loop ends)

    def _write_batch(self, batch: list[_Write]) -> list[bool | Exception]:
        """Each write if newer (or the error that stopped it), under one lock."""
        results: list[bool | Exception] = []
        with self._locked():
            for write in batch:
                try:
                    results.append(self._write_if_newer(write))
                except OSError as exc:
                    results.append(exc)
        return results

    def purge(self) -> int:
        """Remove expired or unreadable records and stale `.tmp` files."""
        removed = 0
        for file in self.path.glob("*"):
            if file.suffix == ".tmp":
                stale = _age(file) > STALE_TMP_S
            elif _RECORD_NAME.fullmatch(file.name):
                stale = self._read(file) is None
            else:
                continue  # not ours (the lock, a secret)
            if stale:
                self._remove(file)
                removed += 1
        return removed

    @staticmethod
    def _read(file: Path) -> Record | None:
        try:
            expires, version, value = msgpack.unpackb(file.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, msgpack.UnpackException):
            expires = 0  # unreadable (e.g. an older format): gone
        if expires < time.time():
            DiskStore._remove(file)
            return None
        return int(version), bytes(value)

    def _write_if_newer(self, write: _Write) -> bool:
        """Under the lock: land `write` by rename if it is newer than the file."""
        if not _newer(write.version, self._read(write.file)):
            return False
        temporary = write.file.with_name(f"{write.file.name}.{os.getpid()}.tmp")
        try:
            temporary.write_bytes(write.record)
            os.replace(temporary, write.file)
        except OSError:
            self._remove(temporary)
            raise
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @staticmethod
    def _remove(file: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            file.unlink()


@dataclass
class _Write:
    """One write waiting for its batch, and its caller's answer."""

    file: Path
    version: int
    record: bytes
    done: asyncio.Future[bool]

    def settle(self, result: bool | Exception) -> None:
        """Answer the caller (unless it stopped waiting, e.g. timed out)."""
        if self.done.done():
            return
        if isinstance(result, Exception):
            self.done.set_exception(result)
        else:
            self.done.set_result(result)


def _age(file: Path) -> float:
    try:
        return time.time() - file.stat().st_mtime
    except FileNotFoundError:
        return 0.0


_WRITE_IF_NEWER = """
local held = redis.call('HGET', KEYS[1], 'v')
if held and tonumber(held) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_REPORT_LOAD = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ms)
local fresh = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local load, at = string.match(all[i + 1], '(%d+):(%d+)')
  if ms - tonumber(at) > tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    table.insert(fresh, all[i])
    table.insert(fresh, load)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3] * 10)
return fresh
"""
"""Record one worker's load, drop those not reported within ARGV[3] ms (by
Redis's clock, so workers' clocks need not agree), return the others."""


MAX_CONNECTIONS = 16
"""Redis connections one RedisStore opens at most. Redis runs commands one at
a time, so more buy a worker nothing; a burst (users reconnecting at once)
queues on these instead of opening a connection per call (redis-py's cap is
100), which cost the worker more CPU than the calls."""


def _driver_info() -> dict[str, Any]:
    """One `driver_info` for all of a pool's connections, naming flet-resilient
    in Redis's CLIENT LIST. Without it, redis-py releases that have `DriverInfo`
    read their own package metadata for each new connection (8 % of a worker's
    CPU while 200 users reconnect at once); older ones read it once and take no
    `driver_info`."""
    try:
        from redis import DriverInfo
    except ImportError:
        return {}
    ours = DriverInfo().add_upstream_driver("flet-resilient", version("flet-resilient"))
    return {"driver_info": ours}


class RedisStore:
    """Redis-backed store, shared by every worker (extra `redis`).

    A record is a hash {v: version, d: value}; a Lua script compares and
    sets it atomically. `timeout` bounds each call in the loop's responsive
    time (`flet_resilient.deadline`), so a hung Redis costs a call that long,
    not the client library's default, and a busy loop does not fail calls
    Redis answered; the sockets' own timeouts are only a backstop.
    """

    shared = True

    def __init__(
        self, url: str, prefix: str = "flet-resilient:", timeout: float = 0.5
    ) -> None:
        try:
            import redis.asyncio as redis
        except ImportError as exc:
            raise ImportError(
                "RedisStore needs the 'redis' extra: "
                "pip install 'flet-resilient[redis]'"
            ) from exc
        # A blocking pool: a call beyond MAX_CONNECTIONS concurrent ones waits
        # for a free connection (DurableStore bounds the whole call) instead
        # of failing at once with MaxConnectionsError like the default pool.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=None,
            socket_timeout=timeout * BUSY_STRETCH,
            socket_connect_timeout=timeout * BUSY_STRETCH,
            **_driver_info(),
        )
        self.timeout = timeout
        self._client: Any = redis.Redis(connection_pool=pool)
        self._write_script = self._client.register_script(_WRITE_IF_NEWER)
        self._load_script = self._client.register_script(_REPORT_LOAD)
        self.prefix = prefix
        self._fleet_key = prefix + "fleet"  # the workers' loads (a hash)

    async def read(self, key: str) -> Record | None:
        reply = self._client.hmget(self.prefix + key, "v", "d")
        version, value = await responsive_timeout(reply, self.timeout)
        return None if value is None else (int(version), bytes(value))

    async def write(self, key: str, value: bytes, version: int, ttl: float) -> bool:
        ttl_ms = max(1, int(ttl * 1000))
        args: list[int | bytes] = [version, value, ttl_ms]
        reply = self._write_script(keys=[self.prefix + key], args=args)
        return bool(await responsive_timeout(reply, self.timeout))

    async def delete(self, key: str) -> None:
        await responsive_timeout(self._client.delete(self.prefix + key), self.timeout)

    async def report_load(
        self, worker: str, sessions: int, stale_after: float
    ) -> dict[str, int]:
        """Record `worker`'s connected sessions; every worker's that reported
        within `stale_after` s (for `flet_resilient.rebalance`)."""
        args: list[str | int] = [worker, sessions, max(1, int(stale_after * 1000))]
        reply = self._load_script(keys=[self._fleet_key], args=args)
        flat = await responsive_timeout(reply, self.timeout)
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return {bytes(name).decode(): int(load) for name, load in pairs}

    async def leave_fleet(self, worker: str) -> None:
        """`worker` is going (draining): no longer a place to send users."""
        reply = self._client.hdel(self._fleet_key, worker)
        await responsive_timeout(reply, self.timeout)


def default_state_dir() -> Path:
    """$FLET_RESILIENT_STATE_DIR, else `flet-resilient-state` in the temp dir."""
    return Path(
        os.environ.get("FLET_RESILIENT_STATE_DIR")
        or os.path.join(tempfile.gettempdir(), "flet-resilient-state")
    )


def default_store() -> StateStore:
    """A disk store in `default_state_dir()`."""
    return DiskStore(default_state_dir())
