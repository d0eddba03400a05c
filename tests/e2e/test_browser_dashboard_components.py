"""examples/live_dashboard_components.py in a real browser: the final state shows.

The declarative dashboard re-renders on each of its 150 state changes a
second; with `coalesce_updates(max_hz=20)` the browser gets at most 20
re-renders a second, and the trailing edge must still deliver the last tick.
"""

from __future__ import annotations

import pytest

pytest.importorskip("playwright.async_api", reason="playwright is not installed")

import live_dashboard
import live_dashboard_components
from flutter_browser import VIEWPORT, open_app, settled_screenshot
from playwright.async_api import expect

from flet_resilient import stats
from flet_resilient.testing import FletServer

pytestmark = pytest.mark.timeout(60)

TICKS = 300


async def test_components_dashboard_shows_the_final_values(browser, tmp_path):
    final = live_dashboard.simulate(TICKS)
    main = live_dashboard_components.make_main(hz=150, ticks=TICKS)
    before = dict(stats()["counters"])
    async with FletServer(main, no_cdn=True) as server:
        context = await browser.new_context(viewport={**VIEWPORT, "height": 480})
        page = await open_app(context, server.url, "Live dashboard", role=None)
        await expect(page.get_by_text("done", exact=True)).to_be_visible(timeout=30_000)
        await expect(page.get_by_text(str(TICKS), exact=True)).to_be_visible()
        for metric in live_dashboard.METRICS:
            text = metric.text(final[metric.name])
            await expect(page.get_by_text(text, exact=True)).to_be_visible()
        await settled_screenshot(page, tmp_path / "live_dashboard_components.png")
        await context.close()
    # The 300 re-renders were merged into far fewer batches (about 20 a second).
    counters = stats()["counters"]
    batches = counters["coalesce.batches"] - before.get("coalesce.batches", 0)
    merged = counters.get("coalesce.merged", 0) - before.get("coalesce.merged", 0)
    assert batches < TICKS / 2, batches
    assert merged > TICKS / 2, merged
