"""The state stores: versioned round trip, expiry, deletion, and outages."""

import asyncio
import os
import time

import pytest

from flet_resilient import DiskStore, MemoryStore
from flet_resilient.durable import DurableStore, StoreUnavailable
from flet_resilient.stores import STALE_TMP_S, default_store


@pytest.fixture(params=["memory", "disk"])
def store(request, tmp_path):
    return MemoryStore() if request.param == "memory" else DiskStore(tmp_path / "s")


async def test_round_trip_expiry_and_delete(store):
    assert await store.write("a", b"\x00state", version=1, ttl=60)
    await store.write("b", b"short", version=1, ttl=0.2)
    assert await store.read("a") == (1, b"\x00state")
    assert await store.read("missing") is None
    await asyncio.sleep(0.3)
    assert await store.read("b") is None  # expired
    await store.delete("a")
    assert await store.read("a") is None


async def test_an_older_or_equal_version_never_overwrites(store):
    assert await store.write("k", b"newer", version=20, ttl=60)
    assert not await store.write("k", b"older", version=10, ttl=60)
    assert not await store.write("k", b"same", version=20, ttl=60)
    assert await store.read("k") == (20, b"newer")
    assert await store.write("k", b"newest", version=30, ttl=60)
    assert await store.read("k") == (30, b"newest")


async def test_disk_store_survives_a_new_store_object(tmp_path):
    await DiskStore(tmp_path).write("k", b"v", version=1, ttl=60)
    assert await DiskStore(tmp_path).read("k") == (1, b"v")  # after a restart
    assert not list(tmp_path.glob("*.tmp"))  # writes are atomic renames


def test_memory_store_is_bounded():
    async def fill():
        small = MemoryStore(maxsize=3)
        for n in range(10):
            await small.write(str(n), b"x", version=1, ttl=60)
        return [await small.read(str(n)) for n in range(10)]

    assert [r for r in asyncio.run(fill()) if r is not None] == [(1, b"x")] * 3


class Broken:
    """A store that fails (down) or hangs (SIGSTOPped) until fixed."""

    shared = False

    def __init__(self, hang: bool = False) -> None:
        self.inner = MemoryStore()
        self.down = True
        self.hang = hang

    async def _check(self) -> None:
        if self.down and self.hang:
            await asyncio.sleep(3600)
        if self.down:
            raise ConnectionError("store down")

    async def read(self, key):
        await self._check()
        return await self.inner.read(key)

    async def write(self, key, value, version, ttl):
        await self._check()
        return await self.inner.write(key, value, version, ttl)

    async def delete(self, key):
        await self._check()
        await self.inner.delete(key)


@pytest.mark.parametrize("hang", [False, True], ids=["down", "hung"])
async def test_failed_writes_are_kept_read_back_and_retried_newest_first(hang):
    broken = Broken(hang)
    await broken.inner.write("k", b"in the store", version=5, ttl=60)
    durable = DurableStore(broken, timeout=0.2)
    started = time.monotonic()
    assert await durable.write("k", b"v1", version=10, ttl=60)  # kept
    assert await durable.write("k", b"v2", version=20, ttl=60)
    assert time.monotonic() - started < 30  # bounded by the timeout, not hung
    assert not durable.healthy
    with pytest.raises(StoreUnavailable) as outage:
        await durable.read("k")
    assert outage.value.kept == (20, b"v2")  # the newest kept write
    with pytest.raises(StoreUnavailable) as outage:
        await durable.read("never written")
    assert outage.value.kept is None
    broken.down = False
    await _wait(lambda: not durable.kept)
    assert durable.healthy
    assert await broken.inner.read("k") == (20, b"v2")


async def test_a_kept_write_never_regresses_a_newer_stored_state():
    broken = Broken()
    durable = DurableStore(broken, timeout=0.2)
    await durable.write("k", b"old, kept during the outage", version=10, ttl=60)
    await broken.inner.write("k", b"newer, from another worker", version=30, ttl=60)
    broken.down = False
    await _wait(lambda: not durable.kept)
    assert await durable.read("k") == (30, b"newer, from another worker")


@pytest.mark.parametrize("hang", [False, True], ids=["down", "hung"])
async def test_an_outage_with_nothing_kept_is_probed_until_the_store_answers(hang):
    """A failed read leaves no write to retry, yet the recovery must be seen
    (it reloads the sessions begun meanwhile) with no other call coming."""
    broken = Broken(hang)
    store = DurableStore(broken, timeout=0.2)
    recovered: list[bool] = []
    store.on_recovered(lambda: recovered.append(True))
    with pytest.raises(StoreUnavailable):
        await store.read("k")
    await asyncio.sleep(0.5)  # probes fail while it is down
    assert not recovered and not store.healthy
    broken.down = False
    await _wait(lambda: recovered, timeout=5)
    assert store.healthy and recovered == [True]


async def test_drain_sends_kept_writes_without_waiting_for_the_retry(monkeypatch):
    """A write kept after a failed call dies with the process unless drain
    sends it: the retry loop may be in a long backoff sleep."""
    from flet_resilient import durable
    from flet_resilient.drain import drain

    monkeypatch.setattr(durable, "RETRY_FIRST_S", 3600.0)
    broken = Broken()
    store = DurableStore(broken, timeout=0.2)
    assert await store.write("k", b"kept", version=10, ttl=60)
    assert store.kept
    broken.down = False  # the store answers again; the retry sleeps on
    await drain(timeout=5)  # (its report counts every store's kept writes)
    assert await broken.inner.read("k") == (10, b"kept")
    assert store.healthy and not store.kept


async def _wait(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_disk_writes_arriving_together_share_one_lock_and_keep_versions(
    tmp_path, monkeypatch
):
    """Many sessions saving at once: one thread and one lock for the lot (each
    write taking its own had cost 0.4 ms of CPU), every caller still told
    whether its write landed, versions compared write by write."""
    import fcntl

    import flet_resilient.stores as stores

    locks, flock = [], fcntl.flock
    monkeypatch.setattr(
        stores.fcntl, "flock", lambda fd, op: locks.append(op) or flock(fd, op)
    )
    store = DiskStore(tmp_path)
    writes = [store.write(f"user {n}", b"state %d" % n, 1, 60) for n in range(100)]
    writes += [store.write("k", b"newer", 2, 60), store.write("k", b"older", 1, 60)]
    results = await asyncio.gather(*writes)
    assert results == [True] * 101 + [False]
    assert len(locks) <= 3  # the first write's batch, then the rest together
    assert await store.read("k") == (2, b"newer")
    assert await store.read("user 99") == (1, b"state 99")


async def test_a_failed_disk_write_fails_only_its_caller(tmp_path):
    store = DiskStore(tmp_path)
    store._file("blocked").mkdir(parents=True)  # a rename onto a directory fails
    results = await asyncio.gather(
        store.write("blocked", b"x", 1, 60),
        store.write("fine", b"y", 1, 60),
        return_exceptions=True,
    )
    assert isinstance(results[0], OSError) and results[1] is True
    assert await store.read("fine") == (1, b"y")
    assert not list(tmp_path.glob("*.tmp"))  # the failed write left nothing


def test_default_store_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FLET_RESILIENT_STATE_DIR", str(tmp_path))
    store = default_store()
    assert isinstance(store, DiskStore) and store.path == tmp_path


async def test_disk_store_purges_expired_records_and_abandoned_temp_files(tmp_path):
    store = DiskStore(tmp_path, purge_interval=0)
    for n in range(5):
        await store.write(f"old {n}", b"x", version=1, ttl=0.05)
    abandoned = tmp_path / "0123.77.tmp"  # e.g. a write that hit ENOSPC
    abandoned.write_bytes(b"")
    old = time.time() - STALE_TMP_S - 1
    os.utime(abandoned, (old, old))
    (tmp_path / ".secret").write_bytes(b"not a record")
    await asyncio.sleep(0.1)
    await store.write("fresh", b"y", version=1, ttl=60)  # a write triggers the purge
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {".lock", ".secret", store._file("fresh").name}
    assert await store.read("fresh") == (1, b"y")


async def test_a_flapping_store_logs_one_outage_and_counts_each(caplog):
    from flet_resilient.metrics import counters

    broken = Broken()
    durable = DurableStore(broken, timeout=0.2)
    for _ in range(5):  # down, back, down, back...
        broken.down = True
        with pytest.raises(StoreUnavailable):
            await durable.read("k")
        broken.down = False
        await durable.read("k")
        assert durable.healthy
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("stores")]
    assert len([line for line in lines if "unavailable" in line]) == 1
    assert len([line for line in lines if "is back after" in line]) == 1
    assert counters["store.outages"] == 5
