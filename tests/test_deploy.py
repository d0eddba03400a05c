"""State outlives its worker: real Redis, real worker processes, real HAProxy.

Each test runs `deploy_app` (a counter and a note, no save calls) as worker
processes and checks what a user finds after a graceful restart, a SIGKILL,
a move to another worker, two workers racing, and Redis dying or hanging;
the variants without the feature (plain Flet, write-behind off) lose it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import msgpack
import pytest
import redis

from flet_resilient.cluster import Cluster, Worker
from flet_resilient.testing import FletClient, wait_until

APPS = Path(__file__).parent / "apps"
APP = "deploy_app:create_app"
SAVE_DELAY = 0.3

pytestmark = pytest.mark.timeout(180)

VARIANTS = {
    "resilient": {"SAVE_DELAY": "60"},  # a long delay: only drain can save it
    "plain": {"FLET_RESILIENT_DISABLE": "1"},
}


def cluster(env: dict[str, str], **options) -> Cluster:
    return Cluster(APP, cwd=APPS, workers=2, env=env, **options)


async def clicks(user: FletClient, n: int) -> None:
    await user.wait_for(lambda: user.find("count"))
    start = int(user.value("count"))
    for i in range(start + 1, start + n + 1):
        await user.click("inc")
        await user.wait_for(lambda i=i: user.value("count") == str(i))


async def back(user: FletClient, url: str, timeout: float = 30) -> FletClient:
    """The same browser reconnects the way the Flet client does: its session
    id and storage, retrying from 500 ms, doubling, until a page arrives."""
    delay, deadline = 0.5, time.monotonic() + timeout
    while True:
        try:
            again = await user.reconnect(url)
            await again.wait_for(lambda c=again: c.find("count"))  # main has run
            return again
        except (OSError, ConnectionError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no page from {url} in {timeout} s") from exc
            await asyncio.sleep(delay)
            delay *= 2


def serving(cluster: Cluster, user: FletClient) -> Worker:
    pid = int(user.value("pid"))
    return next(w for w in cluster.workers if w.pid == pid)


def stored(url: str) -> list[dict]:
    """The states Redis holds (one per user), read behind the app's back."""
    client = redis.Redis.from_url(url)
    try:
        records = [client.hget(k, "d") for k in client.keys("flet-resilient:*")]
    finally:
        client.close()
    return [msgpack.unpackb(r) for r in records if r is not None]


def stored_counts(url: str) -> list[int]:
    return sorted(state["count"] for state in stored(url))


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_a_graceful_restart_keeps_every_users_state(variant):
    async with cluster(VARIANTS[variant]) as deploy:
        users = [await FletClient(deploy.ws_url).connect() for _ in range(4)]
        for n, user in enumerate(users, start=1):
            await clicks(user, n)
        restarted = serving(deploy, users[0])
        moved = [u for u in users if serving(deploy, u) is restarted]
        await asyncio.to_thread(restarted.terminate)  # SIGTERM: drain
        await asyncio.gather(*(u.closed.wait() for u in moved))
        again = [await back(u, deploy.ws_url) for u in moved]
        counts = [int(u.value("count")) for u in again]
        pids = {int(u.value("pid")) for u in again}
        for user in [*users, *again]:
            await user.close()
    assert restarted.pid not in pids  # another worker took them
    expected = [users.index(u) + 1 for u in moved]
    assert (counts == expected) is (variant == "resilient"), (counts, expected)


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("pace", ["4", "0"], ids=["paced", "all-at-once"])
async def test_a_drain_sends_clients_away_in_waves_and_serves_the_rest(pace):
    """On SIGTERM the worker stops accepting, then closes its sockets a few at
    a time (4 per second here): a client not yet sent away is still answered.
    All at once (pace 0, uvicorn's own way) leaves nobody to answer."""
    async with cluster({"FLET_RESILIENT_DRAIN_PACE": pace}) as deploy:
        worker = deploy.workers[0]
        users = [await FletClient(worker.ws_url).connect() for _ in range(10)]
        for user in users:
            await user.wait_for(lambda u=user: u.find("count"))
        worker.process.send_signal(signal.SIGTERM)
        await wait_until(lambda: any(u.closed.is_set() for u in users))
        refused = not accepts(worker.port)  # the load balancer goes elsewhere
        still_open = [u for u in users if not u.closed.is_set()]
        try:
            await clicks(still_open[-1], 1)  # the last wave's user, if any
            answered = True
        except (IndexError, ConnectionError, TimeoutError):
            answered = False
        await asyncio.gather(*(u.closed.wait() for u in users))
        await asyncio.to_thread(worker.process.wait, 30)
        for user in users:
            await user.close()
    assert refused
    assert answered is (pace != "0")


@pytest.mark.parametrize("save_delay", [str(SAVE_DELAY), "none"])
async def test_sigkill_keeps_every_change_older_than_save_delay(save_delay):
    async with cluster({"SAVE_DELAY": save_delay}) as deploy:
        worker = deploy.workers[0]
        user = await FletClient(worker.ws_url).connect()
        await clicks(user, 3)
        await asyncio.sleep(3 * SAVE_DELAY)  # the changes are now that old
        await asyncio.to_thread(worker.kill)
        await user.closed.wait()
        again = await back(user, deploy.workers[1].ws_url)
        count = again.value("count")
        await again.close()
    assert (count == "3") is (save_delay != "none"), count


@pytest.mark.parametrize("save_delay", [str(SAVE_DELAY), "none"])
async def test_another_worker_restores_a_live_users_state(save_delay):
    async with cluster({"SAVE_DELAY": save_delay}) as deploy:
        first, second = deploy.workers
        user = await FletClient(first.ws_url).connect()
        await clicks(user, 3)
        await user.set_props("note", value="draft")
        await user.event("note", "change", "draft")
        if save_delay != "none":
            draft = {"count": 3, "note": "draft"}
            await wait_until(lambda: stored(deploy.redis.url) == [draft])
        else:
            await asyncio.sleep(3 * SAVE_DELAY)
        elsewhere = await back(user, second.ws_url)  # its session is on first
        found = (elsewhere.value("count"), elsewhere.value("note"))
        await elsewhere.close()
        await user.close()
    assert (found == ("3", "draft")) is (save_delay != "none"), found


async def test_two_workers_racing_the_newest_activity_wins():
    async with cluster({"SAVE_DELAY": "none"}) as deploy:  # only drains save
        first, second = deploy.workers
        older = await FletClient(first.ws_url).connect()
        await older.wait_for(lambda: older.find("count"))  # its key is stored
        newer = FletClient(second.ws_url)
        newer.storage = dict(older.storage)  # one browser, two tabs, two workers
        await newer.connect()
        await newer.wait_for(lambda: newer.find("count"))
        await clicks(older, 2)
        await clicks(newer, 5)  # the newest activity
        await asyncio.to_thread(second.terminate)  # saves 5 ...
        await asyncio.to_thread(first.terminate)  # ... then the older 2 arrives
        assert stored_counts(deploy.redis.url) == [5]
        await asyncio.to_thread(first.start)
        again = FletClient(first.ws_url)
        again.storage = dict(older.storage)
        await again.connect()
        await again.wait_for(lambda: again.find("count"))
        count = again.value("count")
        await again.close()
    assert count == "5"


@pytest.mark.parametrize("fault", ["killed", "hung"])
async def test_a_redis_outage_loses_and_regresses_nobody(fault):
    async with cluster({"SAVE_DELAY": str(SAVE_DELAY)}, durable_redis=True) as deploy:
        first, second = deploy.workers
        alice = await FletClient(first.ws_url).connect()
        bob = await FletClient(first.ws_url).connect()
        await clicks(alice, 2)  # (clicks wait for the page: keys are stored)
        await clicks(bob, 4)
        await wait_until(lambda: stored_counts(deploy.redis.url) == [2, 4])

        outage_starts(deploy, fault)
        await clicks(alice, 1)  # 3: the save fails, is kept and retried
        bob_elsewhere = FletClient(second.ws_url)  # bob opens a tab elsewhere
        bob_elsewhere.storage = dict(bob.storage)
        await bob_elsewhere.connect()  # the store cannot be read: a fresh page
        await bob_elsewhere.wait_for(lambda: bob_elsewhere.value("count") == "0")
        await clicks(bob_elsewhere, 1)  # ... which must not overwrite his 4
        outage_ends(deploy, fault)

        await wait_until(lambda: stored_counts(deploy.redis.url) == [3, 4], 20)
        await asyncio.wait_for(bob_elsewhere.closed.wait(), 20)  # reloaded
        bob_back = await back(bob_elsewhere, second.ws_url)
        alice_back = await back(alice, second.ws_url)
        found = (alice_back.value("count"), bob_back.value("count"))
        for user in (alice, bob, alice_back, bob_back):
            await user.close()
    assert found == ("3", "4")


def outage_starts(deploy: Cluster, fault: str) -> None:
    deploy.redis.kill() if fault == "killed" else deploy.redis.pause()


def outage_ends(deploy: Cluster, fault: str) -> None:
    deploy.redis.start() if fault == "killed" else deploy.redis.resume()
