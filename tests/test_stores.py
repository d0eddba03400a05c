"""The state stores: round trip, expiry, deletion, and the memory fallback."""

import asyncio

import pytest

from flet_resilient import DiskStore, MemoryStore
from flet_resilient.stores import ResilientStore, default_store


@pytest.fixture(params=["memory", "disk"])
def store(request, tmp_path):
    return MemoryStore() if request.param == "memory" else DiskStore(tmp_path / "s")


async def test_round_trip_expiry_and_delete(store):
    await store.put("a", b"\x00state", ttl=60)
    await store.put("b", b"short", ttl=0.2)
    assert await store.get("a") == b"\x00state"
    assert await store.get("missing") is None
    await asyncio.sleep(0.3)
    assert await store.get("b") is None  # expired
    await store.delete("a")
    assert await store.get("a") is None


async def test_disk_store_survives_a_new_store_object(tmp_path):
    await DiskStore(tmp_path).put("k", b"v", ttl=60)
    assert await DiskStore(tmp_path).get("k") == b"v"  # e.g. after a restart
    assert not list(tmp_path.glob("*.tmp"))  # writes are atomic renames


def test_memory_store_is_bounded():
    async def fill():
        small = MemoryStore(maxsize=3)
        for n in range(10):
            await small.put(str(n), b"x", ttl=60)
        return [await small.get(str(n)) for n in range(10)]

    assert asyncio.run(fill()).count(b"x") == 3


async def test_resilient_store_falls_back_and_finds_what_it_saved_there(tmp_path):
    broken = tmp_path / "not-a-directory"
    broken.write_text("a file where the store wants a directory")
    store = ResilientStore(DiskStore(broken))
    await store.put("k", b"v", ttl=60)  # the disk store fails: kept in memory
    assert await store.get("k") == b"v"


def test_default_store_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FLET_RESILIENT_STATE_DIR", str(tmp_path))
    store = default_store()
    assert isinstance(store, DiskStore) and store.path == tmp_path


async def test_disk_store_purges_expired_files(tmp_path):
    store = DiskStore(tmp_path, purge_interval=0)
    for n in range(5):
        await store.put(f"old {n}", b"x", ttl=0.05)
    await asyncio.sleep(0.1)
    await store.put("fresh", b"y", ttl=60)  # a write triggers the purge
    assert len(list(tmp_path.iterdir())) == 1
    assert await store.get("fresh") == b"y"
