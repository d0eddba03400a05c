"""examples/cpu_heavy.py in real browsers: one user's Crunch must not freeze others.

Two browser contexts (two users, two Flet sessions) load the real Flutter web
client served by `FletServer(main, no_cdn=True)`. Assertions read the page
through Flutter's semantics tree, i.e. what the client has actually rendered.
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("playwright.async_api", reason="playwright is not installed")

import cpu_heavy  # examples/ is put on sys.path by conftest
from flutter_browser import VIEWPORT, open_app, settled_screenshot
from gated_jobs import gated_crunch
from playwright.async_api import Page, expect

import flet_resilient as fr
from flet_resilient.testing import FletServer

pytestmark = pytest.mark.timeout(60)

CRUNCHING = "crunching in a worker process..."
PRIMES = f"{cpu_heavy.count_primes(2_000_000):,} primes"  # "148,933 primes"


def text(page: Page, value: str):
    """The semantics node showing exactly `value` (a rendered `ft.Text`)."""
    return page.get_by_text(value, exact=True)


def running_jobs() -> int:
    """Process-kind offload calls running right now (server-side truth)."""
    return fr.stats()["offload"].get("process", {}).get("running", 0)


async def test_example_renders_counts_and_crunches(browser, screenshots):
    """The shipped example, unmodified: it renders, +1 counts, Crunch answers."""
    async with FletServer(cpu_heavy.main, no_cdn=True) as server:
        context = await browser.new_context(viewport=VIEWPORT)
        page = await open_app(context, server.url, "Crunch")
        await expect(page.get_by_role("button", name="+1", exact=True)).to_be_visible()
        await expect(text(page, "0")).to_be_visible()
        await expect(
            text(page, "Press Crunch to count primes below 2,000,000")
        ).to_be_visible()
        await settled_screenshot(page, screenshots / "cpu_heavy_initial.png")

        for expected in ("1", "2"):
            await page.get_by_role("button", name="+1", exact=True).click()
            await expect(text(page, expected)).to_be_visible()

        await page.get_by_role("button", name="Crunch", exact=True).click()
        await expect(text(page, PRIMES)).to_be_visible(timeout=30_000)
        await expect(text(page, "2")).to_be_visible()  # the counter survived
        await context.close()


async def test_plus_one_in_b_answered_while_a_crunches(
    browser, screenshots, monkeypatch, tmp_path
):
    """B's click is rendered while A's job provably still runs in a worker.

    The example's `crunch` is swapped for the same job behind a gate file, so
    "still running" does not depend on how fast this machine counts primes. If
    the job blocked the event loop instead, B's counter would never change
    before the gate opens and the test would fail.
    """
    gate = tmp_path / "release"

    async def crunch(limit: int) -> int:
        return await gated_crunch(limit, str(gate))

    monkeypatch.setattr(cpu_heavy, "crunch", crunch)  # looked up per click

    async with FletServer(cpu_heavy.main, no_cdn=True) as server:
        context_a = await browser.new_context(viewport=VIEWPORT)
        context_b = await browser.new_context(viewport=VIEWPORT)
        a = await open_app(context_a, server.url, "Crunch")
        b = await open_app(context_b, server.url, "+1")
        await expect(text(b, "0")).to_be_visible()

        await a.get_by_role("button", name="Crunch", exact=True).click()
        await expect(text(a, CRUNCHING)).to_be_visible()
        assert running_jobs() == 1, fr.stats()["offload"]

        await b.get_by_role("button", name="+1", exact=True).click()
        await expect(text(b, "1")).to_be_visible(timeout=10_000)
        # B's update reached B's screen while A's job is still in its worker,
        # and A still shows the job as running; A's counter is untouched.
        assert running_jobs() == 1, fr.stats()["offload"]
        await expect(text(a, CRUNCHING)).to_be_visible()
        await expect(text(a, "0")).to_be_visible()
        await settled_screenshot(a, screenshots / "offload_browser_a.png")
        await settled_screenshot(b, screenshots / "offload_browser_b.png")

        gate.touch()
        await expect(text(a, PRIMES)).to_be_visible(timeout=30_000)
        assert running_jobs() == 0, fr.stats()["offload"]
        await expect(text(b, "1")).to_be_visible()
        await expect(text(b, re.compile("Press Crunch"))).to_be_visible()
        await settled_screenshot(a, screenshots / "offload_browser_a_done.png")
        await context_a.close()
        await context_b.close()
