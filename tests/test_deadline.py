"""responsive_timeout: a busy loop does not fail answered calls; a hung one fails."""

import asyncio
import time

import pytest

from flet_resilient.deadline import responsive_timeout
from flet_resilient.durable import DurableStore
from flet_resilient.metrics import counters
from flet_resilient.stores import MemoryStore


async def reply_after_loop_frees(answer: asyncio.Future[str]) -> str:
    """Like a client library's reply: a few loop iterations after the bytes."""
    value = await answer
    for _ in range(3):
        await asyncio.sleep(0)
    return value


def busy_while_answered(answer: asyncio.Future[str], busy_s: float) -> None:
    """The reply arrives while a handler holds the loop for `busy_s`."""
    loop = asyncio.get_running_loop()
    loop.call_soon(time.sleep, busy_s)
    loop.call_later(busy_s / 4, answer.set_result, "answer")


async def test_a_reply_that_came_while_the_loop_was_busy_is_not_a_timeout():
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    busy_while_answered(answer, 0.4)  # the loop is busy past the 0.1 s timeout
    assert await responsive_timeout(reply_after_loop_frees(answer), 0.1) == "answer"


async def test_a_call_with_no_answer_fails_and_is_cancelled():
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await responsive_timeout(never, 0.05)
    assert never.cancelled()


class SlowReads(MemoryStore):
    """Reads answer like a network store while the loop is busy."""

    async def read(self, key: str):
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        busy_while_answered(answer, 0.4)
        await reply_after_loop_frees(answer)
        return await super().read(key)


async def test_a_busy_loop_is_not_a_store_outage():
    store = DurableStore(SlowReads(), timeout=0.1)
    await store.write("k", b"v", 1, ttl=60)
    assert await store.read("k") == (1, b"v")
    assert store.healthy
    assert counters["store.outages"] == 0
