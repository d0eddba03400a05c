"""Two server processes share evicted state through a real redis-server."""

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flet_resilient.testing import FletClient

REDIS = shutil.which("redis-server")
APPS = Path(__file__).parent / "apps"

pytestmark = pytest.mark.skipif(
    REDIS is None, reason="redis-server is not installed (run .ci/install-redis)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        process = subprocess.Popen(args, env=env, cwd=APPS)
        started.append(process)
        return process

    yield start
    for process in started:
        process.terminate()
    for process in started:
        process.wait(timeout=10)


async def test_two_server_processes_share_state_through_redis(processes):
    redis_port = free_port()
    redis = processes(
        REDIS, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""
    )
    wait_for_port(redis_port, redis)
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "FLET_SECRET_KEY": "shared-by-both-workers",
    }
    ports = [free_port(), free_port()]
    workers = [
        processes(
            sys.executable,
            "-m",
            "uvicorn",
            "shared_state_app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            env=env,
        )
        for port in ports
    ]
    for port, worker in zip(ports, workers, strict=True):
        await asyncio.to_thread(wait_for_port, port, worker)

    first = await FletClient(f"ws://127.0.0.1:{ports[0]}/ws").connect()
    for n in (1, 2, 3):
        await first.click("inc")
        await first.wait_for(lambda n=n: first.value("count") == str(n))
    await asyncio.wait_for(first.closed.wait(), timeout=10)  # evicted to Redis

    second = FletClient(f"ws://127.0.0.1:{ports[1]}/ws")
    second.storage = dict(first.storage)  # the same browser, another worker
    await second.connect()
    await second.wait_for(lambda: second.value("count") == "3")
    await second.close()
