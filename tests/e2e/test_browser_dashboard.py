"""examples/live_dashboard.py in a real browser: the final state is on screen.

The dashboard's producer calls `update()` about 1,000 times a second; with
`coalesce_updates(max_hz=20)` the browser gets at most 20 patch batches a
second, and the trailing edge must still deliver the final tick's values.
"""

from __future__ import annotations

import pytest

pytest.importorskip("playwright.async_api", reason="playwright is not installed")

import live_dashboard
from flutter_browser import VIEWPORT, open_app, settled_screenshot
from playwright.async_api import expect

from flet_resilient import stats
from flet_resilient.testing import FletServer

pytestmark = pytest.mark.timeout(60)

TICKS = 300


async def test_dashboard_shows_the_final_values(browser, screenshots):
    final = live_dashboard.simulate(TICKS)
    main = live_dashboard.make_main(hz=150, ticks=TICKS)
    batches_before = stats()["counters"].get("coalesce.batches", 0)
    async with FletServer(main, no_cdn=True) as server:
        context = await browser.new_context(viewport={**VIEWPORT, "height": 480})
        page = await open_app(context, server.url, "Live dashboard", role=None)
        await expect(page.get_by_text("done", exact=True)).to_be_visible(timeout=30_000)
        await expect(page.get_by_text(str(TICKS), exact=True)).to_be_visible()
        for metric in live_dashboard.METRICS:
            text = metric.text(final[metric.name])
            await expect(page.get_by_text(text, exact=True)).to_be_visible()
        await settled_screenshot(page, screenshots / "live_dashboard_final.png")
        await context.close()
    # ~1,000 update() calls a second went out as far fewer patch batches.
    batches = stats()["counters"]["coalesce.batches"] - batches_before
    assert batches < TICKS
