"""The loop-lag watchdog names the handler that blocks the loop."""

import logging

import flet as ft
from offload_jobs import spin

from flet_resilient import stats
from flet_resilient.testing import FletClient, FletServer


def blocking_app(page: ft.Page) -> None:
    done = ft.Text("no", key="done")

    def block_everyone(e: ft.Event) -> None:
        spin(1.0)  # sync CPU work inline on the event loop
        done.value = "yes"

    page.add(done, ft.Button("block", key="block", on_click=block_everyone))


async def test_stall_is_counted_and_logged_with_the_blocking_handler(caplog):
    caplog.set_level(logging.WARNING, logger="flet_resilient.watchdog")
    before = stats()["loop"]["stalls"]
    async with FletServer(blocking_app) as server, FletClient(server.ws_url) as user:
        await user.click("block")
        await user.wait_for(lambda: user.value("done") == "yes")
    assert stats()["loop"]["stalls"] > before
    assert stats()["loop"]["lag"]["count"] > 0
    stall_logs = [r.getMessage() for r in caplog.records if "blocked" in r.getMessage()]
    assert any("block_everyone" in message for message in stall_logs)
