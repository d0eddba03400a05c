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
from flet_resilient.testing import FletClient, wait_until

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


def deploy_cluster(env: dict[str, str]) -> Cluster:
    """Two workers of the deploy app; they import this checkout's
    flet_resilient, not another one."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return Cluster(
        "deploy_app:create_app", cwd=APPS, workers=2, env={"PYTHONPATH": path, **env}
    )


def one_of(pids: set[int]) -> re.Pattern[str]:
    return re.compile("^(" + "|".join(map(str, sorted(pids))) + ")$")


@pytest.mark.parametrize("resilient", [True, False], ids=["resilient", "plain"])
async def test_rolling_restart_keeps_the_form(browser, tmp_path, resilient):
    env = {"FLET_RESILIENT_DISABLE": "0" if resilient else "1"}
    async with deploy_cluster(env) as cluster:
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


async def test_a_user_moved_by_rebalancing_reconnects_with_the_form(browser, tmp_path):
    """The browser's worker gets 20 more users at once (as after a restart) and
    sends the least recently active, this browser first, to reconnect: the
    Flutter client does so by itself and the form is back."""
    async with deploy_cluster({}) as cluster:
        context = await browser.new_context(viewport=VIEWPORT)
        page = await open_app(context, cluster.url, "+1")
        frames: list[object] = []  # received on a socket opened after the first
        page.on(
            "websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(f))
        )
        pid, count, note = (
            texts(page).nth(0),
            texts(page).nth(1),
            page.get_by_role("textbox"),
        )
        await expect(pid).to_have_text(one_of({w.pid for w in cluster.workers}))
        await note.click()
        await page.keyboard.type(NOTE)
        await page.get_by_role("button", name="+1", exact=True).click()
        await expect(count).to_have_text("1", timeout=BACK_MS)
        serving = await pid.inner_text()
        crowded = next(w for w in cluster.workers if str(w.pid) == serving)
        others = [await FletClient(crowded.ws_url).connect() for _ in range(20)]
        for other in others:  # each more recently active than the browser
            await other.click("inc")
            await other.wait_for(lambda o=other: o.value("count") == "1")
        await wait_until(lambda: frames, timeout=BACK_MS / 1000)  # moved: a new page
        await expect(count).to_have_text("1", timeout=BACK_MS)
        await settled_screenshot(page, tmp_path / "after_move.png")  # redrawn
        await note.focus()
        await expect(note).to_have_value(NOTE)
        for other in others:
            await other.close()
        await context.close()
