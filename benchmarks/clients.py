"""The benchmarks' simulated users: connecting many, reconnecting as Flet's
Flutter client does, and clicking as a person would."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol

import websockets

from flet_resilient.testing import FletClient

FIRST_RETRY_S = 0.5
"""Flet's Flutter client waits this long before it reconnects, doubling the
wait after each failed try."""

RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset; ConnectionError: closed before the page came
    TimeoutError,
    asyncio.TimeoutError,
    websockets.exceptions.WebSocketException,  # handshake refused, closed
)
"""What a failed connect or page load raises."""


async def connect_many(
    url: str, count: int, batch: int = 20, **options: Any
) -> list[FletClient]:
    """Connect `count` simulated users, `batch` at a time (a gentle ramp-up)."""
    clients: list[FletClient] = []
    for start in range(0, count, batch):
        size = min(batch, count - start)
        clients += await asyncio.gather(
            *(FletClient(url, **options).connect() for _ in range(size))
        )
    return clients


def same_browser(client: FletClient) -> FletClient:
    """A new, unconnected client for the browser behind `client`: its URL,
    session id, User-Agent and route, and a copy of its storage."""
    again = FletClient(
        client.ws_url, session_id=client.session_id, user_agent=client.user_agent
    )
    again.route = client.route
    again.storage = dict(client.storage)
    return again


async def connect_retrying(
    make: Callable[[], FletClient],
    ready: Callable[[FletClient], object],
    *,
    first_wait: float = FIRST_RETRY_S,
    within: float = 30.0,
) -> FletClient:
    """Connect a client from `make()` until its page satisfies `ready`, as
    Flet's Flutter client does: the first try after `first_wait` s, then waits
    from `FIRST_RETRY_S` doubling; TimeoutError once `within` s are spent."""
    deadline = time.monotonic() + within
    wait = FIRST_RETRY_S
    await asyncio.sleep(first_wait)
    while True:
        client = make()
        try:
            remaining = max(deadline - time.monotonic(), 0.1)
            await asyncio.wait_for(_load(client, ready, remaining), remaining)
            return client
        except RETRYABLE:
            if client.ws is not None:
                with contextlib.suppress(Exception):
                    client.abort()
            if time.monotonic() + wait > deadline:
                raise TimeoutError(f"no page within {within:g} s") from None
        await asyncio.sleep(wait)
        wait *= 2


async def _load(
    client: FletClient, ready: Callable[[FletClient], object], timeout: float
) -> None:
    await client.connect()
    await client.wait_for(lambda: ready(client), timeout)


async def click_and_wait(
    client: FletClient, button: str, text: str, target: int, timeout: float
) -> float:
    """Click `button`, wait until Text `text` shows >= `target`; seconds taken."""
    started = time.perf_counter()
    await client.click(button)
    await client.wait_for(lambda: int(client.value(text)) >= target, timeout=timeout)
    return time.perf_counter() - started


class ClickLog(Protocol):
    """Where `click_at_random` records: latencies (ms), how many timed out."""

    latencies_ms: list[float]
    timeouts: int


async def click_at_random(
    client: FletClient,
    button: str,
    rng: random.Random,
    deadline: float,
    timeout: float,
    log: ClickLog,
) -> None:
    """Click `button` every 0.5-1.5 s until `deadline` (`time.perf_counter`),
    logging how long each click took to show in Text "count" (a timeout, or a
    closed socket, counts at its length: a lower bound)."""
    clicks = int(client.value("count"))
    while True:
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        if time.perf_counter() >= deadline:
            return
        clicks += 1
        started = time.perf_counter()
        try:
            await click_and_wait(client, button, "count", clicks, timeout)
        except (TimeoutError, ConnectionError):
            log.timeouts += 1
        log.latencies_ms.append((time.perf_counter() - started) * 1000)


def clicking_at_random(
    clients: Iterable[FletClient],
    button: str,
    rng: random.Random,
    deadline: float,
    timeout: float,
    log: ClickLog,
) -> list[Coroutine[Any, Any, None]]:
    """`click_at_random` for each of `clients` (the bystanders of a phase), each
    with its own random generator drawn from `rng`, all into one `log`."""
    return [
        click_at_random(c, button, random.Random(rng.random()), deadline, timeout, log)
        for c in clients
    ]
