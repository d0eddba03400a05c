"""A real browser behind a flaky link: the form survives with buffer_reconnects.

The Flutter client is served through a loopback `FaultProxy`. The browser goes
offline for 5 s while its link turns half-open (the browser's side is reset,
the server's side stays open and silent, as after a Wi-Fi -> cellular switch).
When it is back online the client reconnects with its session id: with
`@buffer_reconnects` it takes its session over (form input kept, main not
re-run); plain Flet answers with a brand-new session.
"""

from __future__ import annotations

import asyncio

import flet as ft
import pytest

pytest.importorskip("playwright.async_api", reason="playwright is not installed")

from flutter_browser import VIEWPORT, open_app, settled_screenshot
from playwright.async_api import expect

from flet_resilient import buffer_reconnects, stats
from flet_resilient.testing import FaultProxy, FletServer, wait_until

pytestmark = pytest.mark.timeout(90)


class FormApp:
    def __init__(self, buffered: bool) -> None:
        self.main_runs = 0
        self.fields: list[ft.TextField] = []
        self.main = buffer_reconnects()(self._main) if buffered else self._main

    def _main(self, page: ft.Page) -> None:
        self.main_runs += 1
        name = ft.TextField(label="Inspector name")
        self.fields.append(name)
        page.add(name, ft.Button("Save", on_click=lambda e: None))


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "plain"])
async def test_offline_for_5_s_keeps_the_session_and_the_form(
    browser, screenshots, buffered, request
):
    if not buffered:  # compared with Flet as shipped, not merely undecorated
        request.getfixturevalue("stock_flet")
    app = FormApp(buffered)
    async with (
        FletServer(app.main, no_cdn=True) as server,
        FaultProxy(server.port) as proxy,
    ):
        context = await browser.new_context(viewport=VIEWPORT)
        page = await open_app(context, f"http://127.0.0.1:{proxy.port}/", "Save")
        field = page.get_by_role("textbox")
        await field.click()
        await page.keyboard.type("Ada Lovelace")
        await wait_until(lambda: app.fields[0].value == "Ada Lovelace")
        before = takeovers()

        await context.set_offline(True)
        proxy.half_open()
        await asyncio.sleep(5)
        await context.set_offline(False)

        # The client notices its dead socket and reconnects through the proxy:
        # buffered, it takes its session over; plain, it gets a new session.
        await wait_until(lambda: app.main_runs == 2 or takeovers() > before, 30)
        if buffered:
            await expect(page.get_by_role("textbox")).to_have_value("Ada Lovelace")
            await page.keyboard.type("!")  # the same session hears the browser
            await wait_until(lambda: app.fields[0].value == "Ada Lovelace!")
            await settled_screenshot(page, screenshots / "reconnect_form_kept.png")
        await context.close()
    assert (app.main_runs == 1) is buffered
    assert bool(app.fields[-1].value) is buffered  # plain: a new, empty form


def takeovers() -> int:
    return stats()["counters"].get("reconnect.takeovers", 0)
