"""Two server processes share evicted state through a real redis-server."""

import asyncio
import shutil
from pathlib import Path

import pytest

from flet_resilient.cluster import RedisServer, Worker
from flet_resilient.testing import FletClient

APPS = Path(__file__).parent / "apps"

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (run .ci/install-redis)",
)


async def test_two_server_processes_share_state_through_redis():
    app = "shared_state_app:create_app"
    async with RedisServer() as redis:
        env = {"REDIS_URL": redis.url, "FLET_SECRET_KEY": "shared-by-both-workers"}
        async with (
            Worker(app, cwd=APPS, env=env, name="w0") as one,
            Worker(app, cwd=APPS, env=env, name="w1") as other,
        ):
            first = await FletClient(one.ws_url).connect()
            for n in (1, 2, 3):
                await first.click("inc")
                await first.wait_for(lambda n=n: first.value("count") == str(n))
            await asyncio.wait_for(first.closed.wait(), timeout=10)  # evicted

            second = FletClient(other.ws_url)
            second.storage = dict(first.storage)  # the same browser, elsewhere
            await second.connect()
            await second.wait_for(lambda: second.value("count") == "3")
            await second.close()


async def test_a_burst_queues_on_a_few_connections_instead_of_failing(monkeypatch):
    """More concurrent calls than pooled connections (users reconnecting at
    once) queue for one of 16 connections: a busy worker is not a store
    outage, and Redis is not handed hundreds of new connections, each of
    which redis-py would have introduced by reading its own package metadata."""
    import redis.asyncio as aioredis
    from redis import utils as redis_utils

    from flet_resilient import RedisStore

    def metadata_read() -> str:
        raise AssertionError("redis-py read its package metadata for a connection")

    async with RedisServer() as redis:
        store = RedisStore(redis.url, timeout=5)
        observer = aioredis.Redis.from_url(redis.url)
        await observer.ping()
        monkeypatch.setattr(redis_utils, "get_lib_version", metadata_read)
        writes = [store.write(f"user {n}", b"state", 1, 60) for n in range(300)]
        assert all(await asyncio.gather(*writes))
        reads = await asyncio.gather(*(store.read(f"user {n}") for n in range(300)))
        assert reads == [(1, b"state")] * 300
        opened = len(await observer.client_list()) - 1  # not the observer's own
        await observer.aclose()
        assert 1 <= opened <= 16
