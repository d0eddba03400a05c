"""After a deploy leaves one worker with every user, the fleet evens out."""

import asyncio
import contextlib
import re
import shutil
from pathlib import Path

import pytest

from flet_resilient import rebalance
from flet_resilient.cluster import Cluster
from flet_resilient.rebalance import moves_for
from flet_resilient.testing import FletClient, wait_until

APPS = Path(__file__).parent / "apps"
USERS = 40

needs_cluster = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("haproxy") is None,
    reason="needs redis-server and haproxy (run .ci/install-redis, install-haproxy)",
)


def test_only_an_excess_beyond_the_slack_moves_and_a_few_at_a_time():
    assert moves_for(40, [40]) == 0  # alone: nowhere to go
    assert moves_for(40, [40, 0]) == 20
    assert moves_for(29, [29, 11]) == 0  # 9 over the even share: within slack
    assert moves_for(30, [30, 10]) == 10
    assert moves_for(20, [20, 20]) == 0
    assert moves_for(0, [0, 40]) == 0  # the other one's excess, not ours
    assert moves_for(1000, [1000, 0]) == rebalance.MOVES_PER_REPORT
    assert moves_for(549, [549, 451]) == 0  # 49 over 500: within 10 %


class User:
    """A browser that reconnects through the balancer when its socket closes."""

    def __init__(self, client: FletClient, balancer_url: str, clicks: int) -> None:
        self.client, self.url, self.clicks = client, balancer_url, clicks
        self.following = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        while True:
            await self.client.closed.wait()
            self.client = await self.client.reconnect(self.url, **self.options)
            await self.client.wait_for(lambda: self.client.find("count"))

    @property
    def options(self) -> dict:
        return {"headers": self.client.headers} if self.client.headers else {}

    def pid(self) -> str | None:
        return None if self.client.closed.is_set() else self.client.value("pid")

    def shows_its_count(self) -> bool:
        return self.pid() is not None and self.client.value("count") == str(self.clicks)


async def users_on(ws_url: str, balancer_url: str, **options) -> list[User]:
    """USERS users of one worker, each with a few clicks saved."""
    users = []
    for n in range(USERS):
        client = await FletClient(ws_url, **options).connect()
        clicks = n % 3 + 1
        for i in range(1, clicks + 1):
            await client.click("inc")
            await client.wait_for(lambda c=client, i=i: c.value("count") == str(i))
        users.append(User(client, balancer_url, clicks))
    return users


def log_of(worker) -> str:
    return worker.log_path.read_text(errors="replace")


async def stop_following(users: list[User]) -> None:
    for user in users:
        user.following.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await user.following
        with contextlib.suppress(Exception):
            await user.client.close()


@needs_cluster
async def test_users_of_an_overloaded_worker_move_to_the_other_with_their_state():
    async with Cluster("deploy_app:create_app", cwd=APPS, workers=2) as cluster:
        crowded, empty = cluster.workers
        users = await users_on(crowded.ws_url, cluster.ws_url)  # as after a deploy
        try:
            moved = lambda: sum(u.pid() == str(empty.pid) for u in users)  # noqa: E731
            try:
                await wait_until(lambda: moved() >= 10, timeout=30)
            except TimeoutError:
                tail = log_of(crowded)[-3000:]
                message = f"{moved()} moved; crowded's log:\n{tail}"
                raise AssertionError(message) from None
            await wait_until(lambda: all(u.shows_its_count() for u in users), 30)
            on_crowded = sum(u.pid() == str(crowded.pid) for u in users)
            log = log_of(crowded)
        finally:
            await stop_following(users)
    assert on_crowded <= USERS - 10
    assert "rebalancing: 40 of the fleet's 40 users are here" in log


@needs_cluster
async def test_the_survivor_of_a_crash_keeps_the_users_it_took_over():
    """The killed worker's last report is still fresh when its users arrive at
    the other: they must not be sent back toward it (they would bounce)."""
    async with Cluster("deploy_app:create_app", cwd=APPS, workers=2) as cluster:
        doomed, survivor = cluster.workers
        users = await users_on(cluster.ws_url, cluster.ws_url)  # half on each
        try:
            await asyncio.sleep(2 * rebalance.REPORT_EVERY_S)  # both reported
            await asyncio.to_thread(doomed.kill)
            back = lambda: all(u.pid() == str(survivor.pid) for u in users)  # noqa: E731
            await wait_until(back, timeout=30)
            clients = [u.client for u in users]
            await asyncio.sleep(3 * rebalance.REPORT_EVERY_S)  # reports to come
            assert [u.client for u in users] == clients  # nobody moved again
            assert all(u.shows_its_count() for u in users)
            assert "rebalancing" not in log_of(survivor)
        finally:
            await stop_following(users)


@needs_cluster
async def test_users_still_arriving_evenly_are_not_moved():
    """While users keep arriving (a ramp, the load test's steps) each worker's
    report is older than the other's count: no excess is real, none moves."""
    async with Cluster("deploy_app:create_app", cwd=APPS, workers=2) as cluster:
        clients: list[FletClient] = []
        for _ in range(30):  # 300 users through round robin, ~50 a second
            batch = (FletClient(cluster.ws_url).connect() for _ in range(10))
            clients += await asyncio.gather(*batch)
            await asyncio.sleep(0.2)
        await asyncio.sleep(3 * rebalance.REPORT_EVERY_S)  # the reports to come
        closed = sum(c.closed.is_set() for c in clients)
        log = log_of(cluster.workers[0]) + log_of(cluster.workers[1])
        await asyncio.gather(*(c.close() for c in clients))
    assert closed == 0
    assert "rebalancing" not in log


@needs_cluster
async def test_a_balancer_that_pins_users_pauses_the_moving():
    async with Cluster(
        "deploy_app:create_app", cwd=APPS, workers=2, sticky=True
    ) as cluster:
        crowded = cluster.workers[0]
        pinned = {"Cookie": "SRV=w0"}  # every browser's cookie names worker 0
        users = await users_on(crowded.ws_url, cluster.ws_url, headers=pinned)
        try:
            await wait_until(lambda: "rebalancing paused" in log_of(crowded), 30)
            await wait_until(lambda: all(u.shows_its_count() for u in users), 30)
            assert {u.pid() for u in users} == {str(crowded.pid)}
        finally:
            await stop_following(users)


@needs_cluster
async def test_the_fleet_is_the_workers_that_reported_lately_and_did_not_leave():
    from flet_resilient import RedisStore
    from flet_resilient.cluster import RedisServer

    async with RedisServer() as redis:
        store = RedisStore(redis.url)
        assert await store.report_load("a", 5, stale_after=0.3) == {"a": 5}
        assert await store.report_load("b", 7, stale_after=0.3) == {"a": 5, "b": 7}
        await store.leave_fleet("a")  # draining
        assert await store.report_load("b", 8, stale_after=0.3) == {"b": 8}
        await store.report_load("c", 1, stale_after=0.3)
        await asyncio.sleep(0.4)  # b and c stop reporting: stale by Redis's clock
        assert await store.report_load("d", 2, stale_after=0.3) == {"d": 2}


@needs_cluster
async def test_users_moved_away_land_on_the_least_loaded_worker():
    """Through the balancer (least connections) every user a crowded worker
    sends away reconnects to the other worker, so the fleet evens out in one
    move each: round robin sent half of them straight back."""
    async with Cluster("deploy_app:create_app", cwd=APPS, workers=2) as cluster:
        crowded, restarted = cluster.workers
        await asyncio.to_thread(restarted.terminate)  # as in a rolling restart
        await asyncio.to_thread(cluster.balancer.wait_for_status, "w1", "DOWN")
        users = await users_on(cluster.ws_url, cluster.ws_url)  # all on worker 0
        try:
            await asyncio.to_thread(restarted.start)
            await asyncio.to_thread(cluster.balancer.wait_for_status, "w1", "UP")
            on = lambda w: sum(u.pid() == str(w.pid) for u in users)  # noqa: E731
            await wait_until(lambda: on(restarted) >= 10, timeout=30)
            await wait_until(lambda: all(u.shows_its_count() for u in users), 30)
            await asyncio.sleep(3 * rebalance.REPORT_EVERY_S)  # any further move
            await wait_until(lambda: all(u.shows_its_count() for u in users), 30)
            sent = sum(int(n) for n in re.findall(r"sending (\d+) to", log_of(crowded)))
            moved, log = on(restarted), log_of(crowded)
        finally:
            await stop_following(users)
    assert moved == sent >= 10, f"{moved} moved, {sent} sent; log:\n{log[-3000:]}"
