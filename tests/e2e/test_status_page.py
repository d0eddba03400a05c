"""The live status page in a real browser: it logs in, polls, and shows the app
changing while a real-protocol user clicks."""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest

pytest.importorskip("playwright.async_api", reason="playwright is not installed")

from operator_endpoints import counter_app
from playwright.async_api import expect

from flet_resilient.status import mount_status
from flet_resilient.testing import FletClient, FletServer

pytestmark = pytest.mark.timeout(60)

TOKEN = "browser-status-token"


async def keep_clicking(user: FletClient) -> None:
    """Click, wait for the patch, again: traffic the page must see."""
    clicks = 0
    while True:
        clicks += 1
        await user.click("inc")
        await user.wait_for(lambda n=clicks: user.value("count") == str(n))


async def test_status_page_follows_the_app(browser, screenshots):
    errors: list[str] = []
    async with FletServer(counter_app) as server:
        mount_status(server.app, "/ops/status", token=TOKEN)
        url = f"{server.url}/ops/status"
        anonymous = await browser.new_context()  # no login: a 401, no numbers
        refused = await anonymous.request.get(f"{url}/data")
        assert refused.status == 401 and await refused.text() == "unauthorized"
        await anonymous.close()

        context = await browser.new_context(
            viewport={"width": 1000, "height": 640},
            http_credentials={"username": "ops", "password": TOKEN},
        )
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "console",
            lambda m: errors.append(m.text) if m.type == "error" else None,
        )
        await page.goto(url)
        live = page.locator("#sessions-live")
        await expect(live).to_have_text("0", timeout=10_000)  # polled, rendered
        total = int(await page.locator("#patches-total").inner_text())

        async with FletClient(server.ws_url) as user:
            clicking = asyncio.create_task(keep_clicking(user))
            try:
                await expect(live).to_have_text("1", timeout=10_000)
                await expect(page.locator("#patches-rate")).to_have_text(
                    re.compile(r"^[1-9][\d,]*(\.\d)?$"), timeout=10_000
                )
                await expect(page.locator("#patches-total")).not_to_have_text(
                    str(total)
                )
                await expect(page.locator("#lag-p99")).to_have_text(
                    re.compile(r"^\d[\d,]*(\.\d)?$")
                )
                await expect(page.locator("#card-loop")).to_have_class(
                    re.compile(r"^(ok|warn|bad)$")
                )
                await page.screenshot(path=str(screenshots / "status_page.png"))
                text = await page.locator("body").inner_text()
            finally:
                clicking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await clicking
        await context.close()
    assert "worker pid" in text and "no numbers" not in text
    assert user.session_id not in text
    assert errors == []  # the script ran under its own CSP, without errors
