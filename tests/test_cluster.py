"""The multi-process test rig: real redis-server, worker processes and HAProxy."""

import asyncio
import http.client
import os
import shutil
import signal
from pathlib import Path

import pytest
import redis
import websockets

from flet_resilient.cluster import Cluster, RedisServer, Worker, missing_program
from flet_resilient.testing import FletClient, wait_until

APPS = Path(__file__).parent / "apps"
APP = "cluster_app:create_app"

pytestmark = pytest.mark.skipif(
    missing_program() is not None, reason=str(missing_program())
)


async def served_by(ws_url: str, **options) -> int:
    """Connect a Flet client, return the pid of the process that served it."""
    client = await FletClient(ws_url, **options).connect()
    try:
        await client.wait_for(lambda: client.value("pid"))
        return int(client.value("pid"))
    finally:
        await client.close()


def balancer_cookie(url: str) -> str:
    """GET / through the balancer; the `SRV=...` cookie it set."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        set_cookie = response.getheader("Set-Cookie")
    finally:
        connection.close()
    assert set_cookie is not None, "the balancer set no cookie"
    return set_cookie.split(";")[0]


async def test_round_robin_reaches_every_worker():
    async with Cluster(APP, cwd=APPS, workers=2) as cluster:
        pids = [await served_by(cluster.ws_url) for _ in range(4)]
        assert set(pids) == {worker.pid for worker in cluster.workers}


async def test_terminated_worker_leaves_rotation_and_comes_back():
    async with Cluster(APP, cwd=APPS, workers=2) as cluster:
        first, second = cluster.workers
        connected = await FletClient(first.ws_url).connect()  # a session on it
        old_pid = first.pid

        await asyncio.to_thread(first.terminate)
        assert not first.alive
        # uvicorn shut down gracefully: it closed the session with "going
        # away for a restart", then re-raised SIGTERM as its exit status.
        await asyncio.wait_for(connected.closed.wait(), timeout=5)
        assert connected.ws is not None and connected.ws.close_code == 1012
        assert first.process is not None
        assert first.process.returncode == -signal.SIGTERM
        # At once, before or after a health check noticed: none fails.
        pids = [await served_by(cluster.ws_url) for _ in range(6)]
        assert pids == [second.pid] * 6

        await asyncio.to_thread(first.start)
        assert first.pid != old_pid
        await asyncio.to_thread(cluster.balancer.wait_for_status, "w0", "UP")
        pids = [await served_by(cluster.ws_url) for _ in range(4)]
        assert set(pids) == {first.pid, second.pid}


async def test_a_busy_worker_stays_in_rotation():
    """A worker whose loop is busy longer than a check's timeout (as while it
    rebuilds a herd of reconnected sessions) is alive: it stays in rotation and
    serves the connection that waited. An HTTP check took it out, so every
    reconnect meanwhile got a 503 and backed off for seconds."""
    async with Cluster(APP, cwd=APPS, workers=1) as cluster:
        client = await FletClient(cluster.ws_url).connect()
        await client.wait_for(lambda: client.value("pid"))
        await client.click("block")  # the loop sleeps 2 s
        seen: set[str] = set()
        waiting = asyncio.ensure_future(served_by(cluster.ws_url))
        while not waiting.done():  # until the block is over and it was served
            seen |= set((await asyncio.to_thread(cluster.balancer.status)).values())
            await asyncio.wait({waiting}, timeout=0.05)
        assert await waiting == cluster.workers[0].pid
        assert seen == {"UP"}
        await client.close()


async def test_refused_connection_is_retried_on_another_worker():
    """Without health checks only `retries` + `redispatch` avoid a dead worker."""
    async with Cluster(APP, cwd=APPS, workers=2, checks=False) as cluster:
        first, second = cluster.workers
        await asyncio.to_thread(first.terminate)
        pids = [await served_by(cluster.ws_url) for _ in range(6)]
        assert pids == [second.pid] * 6
        assert cluster.balancer.status() == {"w0": "no check", "w1": "no check"}


async def test_graceful_shutdown_after_a_socket_that_never_registered():
    """flet-web alone waits forever on SIGTERM for such a socket's send loop
    (uvicorn: "Waiting for background tasks"); the adapter ends it."""
    async with Worker("cluster_app:create_resilient_app", cwd=APPS) as worker:
        socket = await websockets.connect(worker.ws_url)
        await socket.close()  # gone before sending REGISTER_CLIENT
        await asyncio.to_thread(worker.terminate, 10)  # TimeoutError if it hangs
        assert worker.process is not None
        assert worker.process.returncode == -signal.SIGTERM


async def test_sticky_cookie_pins_a_browser_to_its_worker():
    async with Cluster(APP, cwd=APPS, workers=2, sticky=True) as cluster:
        by_name = dict(zip(cluster.balancer.servers, cluster.workers, strict=True))
        # Round robin hands out both cookies, one after the other.
        cookies = [await asyncio.to_thread(balancer_cookie, cluster.url) for _ in "ab"]
        assert sorted(cookies) == ["SRV=w0", "SRV=w1"]
        for cookie in cookies:
            worker = by_name[cookie.removeprefix("SRV=")]
            headers = {"Cookie": cookie}
            pids = [await served_by(cluster.ws_url, headers=headers) for _ in range(4)]
            assert pids == [worker.pid] * 4


async def test_gunicorn_replaces_a_killed_worker_process():
    async with Cluster(
        APP, cwd=APPS, workers=1, server="gunicorn", processes=2
    ) as cluster:
        (master,) = cluster.workers
        before = master.worker_pids()
        assert len(before) == 2 and master.pid not in before
        assert await served_by(cluster.ws_url) in before

        victim, survivor = sorted(before)
        os.kill(victim, signal.SIGKILL)
        seen: set[int] = set()

        def replaced() -> bool:  # one look at the process table per check
            seen.clear()
            seen.update(master.worker_pids())
            return len(seen) == 2 and victim not in seen

        await wait_until(replaced)
        (replacement,) = seen - before
        assert master.alive

        # Only the replacement can accept while the survivor is paused.
        os.kill(survivor, signal.SIGSTOP)
        try:
            assert await served_by(master.ws_url) == replacement
        finally:
            os.kill(survivor, signal.SIGCONT)

        await asyncio.to_thread(cluster.balancer.wait_for_status, "w0", "UP")
        assert await served_by(cluster.ws_url) in {replacement, survivor}


async def test_rolling_restart_replaces_every_worker():
    async with Cluster(APP, cwd=APPS, workers=2) as cluster:
        before = {worker.pid for worker in cluster.workers}
        await asyncio.to_thread(cluster.rolling_restart)
        after = {worker.pid for worker in cluster.workers}
        assert not before & after and len(after) == 2
        assert cluster.balancer.status() == {"w0": "UP", "w1": "UP"}
        pids = [await served_by(cluster.ws_url) for _ in range(4)]
        assert set(pids) == after


def test_redis_restarts_on_the_same_port_after_a_kill():
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, socket_timeout=1)
        client.set("key", "value")
        first_pid, port = server.pid, server.port

        server.kill()
        assert server.process is not None
        assert server.process.returncode == -signal.SIGKILL
        with pytest.raises(redis.ConnectionError):
            client.ping()

        server.start()
        assert (server.port, server.url) == (port, f"redis://127.0.0.1:{port}/0")
        assert server.pid != first_pid
        assert client.ping()  # the same client reconnects
        assert client.get("key") is None  # a fresh server: nothing was saved
        client.close()


def test_paused_redis_hangs_until_resumed():
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, socket_timeout=0.3)
        assert client.ping()
        server.pause()
        try:
            with pytest.raises(redis.TimeoutError):
                client.ping()
        finally:
            server.resume()
        assert client.ping()
        client.close()


def test_worker_that_cannot_start_reports_its_log():
    worker = Worker("no_such_module:create_app", cwd=APPS)
    with pytest.raises(RuntimeError, match="Could not import module"), worker:
        pass
    assert worker.process is not None and not worker.alive
    assert worker.log_dir.exists()  # kept for a look after a failure
    shutil.rmtree(worker.log_dir)
