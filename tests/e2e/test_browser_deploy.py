"""A deploy under a real browser: every worker restarts, the form comes back.

The Flutter client in chromium opens `tests/apps/deploy_app.py` through HAProxy
in front of two uvicorn workers sharing a Redis (`cluster.Cluster`). The user
types a note and clicks "+1" three times; then every worker is restarted one by
one (graceful SIGTERM, then started again). The client reconnects by itself to
whichever worker the balancer picks. With flet-resilient the note and the count
were saved (write-behind, disconnect, drain) and the new worker restores them;
plain Flet (`FLET_RESILIENT_DISABLE=1`) starts the user over with an empty form.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

pytest.importorskip("playwright.async_api", reason="playwright is not installed")

from flutter_browser import VIEWPORT, open_app, settled_screenshot
from playwright.async_api import Locator, Page, expect

from flet_resilient.cluster import Cluster, missing_program

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "apps"
NOTE = "Boiler room 3: valve leaks"
CLICKS = 3
BACK_MS = 30_000  # the client's reconnect backoff starts at 500 ms and doubles

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(missing_program() is not None, reason=str(missing_program())),
]


def texts(page: Page) -> Locator:
    """The app's Text controls in page order: the pid, then the count."""
    return page.locator("flt-semantics > span")


def one_of(pids: set[int]) -> re.Pattern[str]:
    return re.compile("^(" + "|".join(map(str, sorted(pids))) + ")$")


@pytest.mark.parametrize("resilient", [True, False], ids=["resilient", "plain"])
async def test_rolling_restart_keeps_the_form(browser, tmp_path, resilient):
    env = {
        # The workers import this checkout's flet_resilient, not another one.
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
        ),
        "FLET_RESILIENT_DISABLE": "0" if resilient else "1",
    }
    async with Cluster(
        "deploy_app:create_app", cwd=APPS, workers=2, env=env
    ) as cluster:
        context = await browser.new_context(viewport=VIEWPORT)
        page = await open_app(context, cluster.url, "+1")
        before = {worker.pid for worker in cluster.workers}
        pid, count, note = (
            texts(page).nth(0),
            texts(page).nth(1),
            page.get_by_role("textbox"),
        )
        await expect(pid).to_have_text(one_of(before))
        await note.click()
        await page.keyboard.type(NOTE)
        for clicks in range(1, CLICKS + 1):
            await page.get_by_role("button", name="+1", exact=True).click()
            await expect(count).to_have_text(str(clicks), timeout=BACK_MS)  # answered

        await asyncio.to_thread(cluster.rolling_restart)
        after = {worker.pid for worker in cluster.workers}
        assert not before & after  # every worker is a new process

        # The client reconnected by itself and a new process drew the page.
        await expect(pid).to_have_text(one_of(after), timeout=BACK_MS)
        # Plain Flet: a new session with a fresh form.
        shown = (str(CLICKS), NOTE) if resilient else ("0", "")
        await expect(count).to_have_text(shown[0])
        # Flutter's semantics DOM holds a text field's value only while it has
        # focus (the canvas shows it either way): focus it, then read.
        await note.focus()
        await expect(note).to_have_value(shown[1])
        await settled_screenshot(page, tmp_path / "after_rolling_restart.png")
        await context.close()
