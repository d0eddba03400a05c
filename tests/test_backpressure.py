"""A client that stops reading: bounded server backlog, then convergence."""

import asyncio
import base64
import os

import flet as ft
import pytest

from flet_resilient import coalesce_updates, stats
from flet_resilient.testing import FletClient, FletServer

PAYLOAD = 256 * 1024  # bytes per update: fills the kernel's socket buffers fast
LIMIT = 1 << 20
RATES = {"100Hz": (200, 0.01), "10Hz": (45, 0.1)}  # (updates, seconds between)


def big_producer(page: ft.Page, updates: int, interval: float) -> None:
    value = ft.Text("", key="value")
    page.add(value)

    async def produce() -> None:
        for _ in range(updates):
            # Random text: permessage-deflate cannot shrink it on the wire.
            value.value = base64.b64encode(os.urandom(PAYLOAD * 3 // 4)).decode()
            value.update()
            await asyncio.sleep(interval)
        value.value = "final"
        value.update()

    page.add(ft.Button("go", key="go", on_click=lambda e: page.run_task(produce)))


def backlog_bytes() -> int:
    return stats()["transport"]["backlog_bytes"]


@pytest.mark.parametrize("rate", RATES)  # faster and slower than max_hz
@pytest.mark.parametrize("coalesced", [True, False], ids=["coalesced", "plain"])
async def test_slow_client_backlog_stays_bounded_then_converges(coalesced, rate):
    def app(page: ft.Page) -> None:
        big_producer(page, *RATES[rate])

    main = (
        coalesce_updates(max_hz=20, max_backlog_bytes=LIMIT)(app) if coalesced else app
    )
    async with (
        FletServer(main) as server,
        FletClient(server.ws_url, recv_buffer=64 * 1024) as user,
    ):
        await user.wait_for(lambda: user.find("go"))
        waits_before = stats()["counters"].get("coalesce.backpressure_waits", 0)
        await user.click("go")
        await user.wait_for(lambda: user.value("value"))
        user.stop_reading()  # the phone stops reading
        peak = 0
        for _ in range(300):  # sample the server's backlog for ~3 s
            peak = max(peak, backlog_bytes())
            await asyncio.sleep(0.01)
        waits = stats()["counters"].get("coalesce.backpressure_waits", 0)
        waits -= waits_before
        user.resume_reading()
        await user.wait_for(lambda: user.value("value") == "final", timeout=60)
    # Coalesced: at most the limit plus one batch in flight; plain Flet queues
    # every frame while the client is not reading.
    assert (peak <= LIMIT + 2 * PAYLOAD) is coalesced, peak
    assert (waits > 0) is coalesced  # the rate adapted down while backlogged
