"""The live dashboard examples in a real browser: the final state is on screen.

`examples/live_dashboard.py` calls `update()` about 1,000 times a second;
`examples/live_dashboard_components.py` (declarative components) sets its
state 150 times a second, each set a re-render. With
`coalesce_updates(max_hz=20)` the browser gets at most 20 patch batches a
second, and the trailing edge must still deliver the final tick's values.
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

EXAMPLES = {
    "live_dashboard_final.png": live_dashboard,
    "live_dashboard_components_final.png": live_dashboard_components,
}


@pytest.mark.parametrize("screenshot", list(EXAMPLES), ids=["imperative", "components"])
async def test_dashboard_shows_the_final_values(browser, screenshots, screenshot):
    final = live_dashboard.simulate(TICKS)
    main = EXAMPLES[screenshot].make_main(hz=150, ticks=TICKS)
    async with FletServer(main, no_cdn=True) as server:
        context = await browser.new_context(viewport={**VIEWPORT, "height": 480})
        page = await open_app(context, server.url, "Live dashboard", role=None)
        await expect(page.get_by_text("done", exact=True)).to_be_visible(timeout=30_000)
        await expect(page.get_by_text(str(TICKS), exact=True)).to_be_visible()
        for metric in live_dashboard.METRICS:
            text = metric.text(final[metric.name])
            await expect(page.get_by_text(text, exact=True)).to_be_visible()
        await settled_screenshot(page, screenshots / screenshot)
        await context.close()
    # The ticks' changes were merged into far fewer batches (about 20 a second).
    counters = stats()["counters"]
    assert counters["coalesce.batches"] < TICKS / 2, counters
    assert counters.get("coalesce.merged", 0) > TICKS / 2, counters
