"""Drive the real Flet (Flutter web) client in Debian's chromium via Playwright.

The client paints on a canvas, so there is no DOM to query until Flutter's
semantics tree is switched on: the engine puts a 1x1 `flt-semantics-placeholder`
("Enable accessibility") at the top-left of the page, and a click on it builds
a parallel DOM of `flt-semantics` nodes with ARIA roles and texts (buttons get
`role="button"` and their label, a `Text` becomes a span with its value). That
is what the tests locate and assert on, with ordinary Playwright locators.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Page, Playwright

CHROMIUM = Path("/usr/bin/chromium")

# Without the background-networking flags chromium keeps trying to reach Google
# services and logs refused connections; --disable-gpu: no GPU in CI.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

VIEWPORT = {"width": 640, "height": 240}


async def launch(playwright: Playwright) -> Browser:
    return await playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )


async def open_app(
    context: BrowserContext,
    url: str,
    ready_text: str,
    timeout: float = 30,
    role: str | None = "button",
) -> Page:
    """Open the Flet app at `url` with semantics on; wait until `ready_text` shows.

    `ready_text` is the accessible name of a button the app renders (or, with
    `role=None`, a text): proof that the client connected, registered and drew
    the page.
    """
    page = await context.new_page()
    page.on("pageerror", lambda exc: print(f"browser page error: {exc}"))
    await page.goto(url)
    button = (
        page.get_by_role(role, name=ready_text, exact=True)  # type: ignore[arg-type]
        if role
        else page.get_by_text(ready_text, exact=True)
    )
    deadline = time.monotonic() + timeout
    while await button.count() == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the Flet client at {url} showed no {ready_text!r} within "
                f"{timeout} s (splash screen stuck? semantics not enabled?)"
            )
        # The placeholder exists from engine start until semantics is on; the
        # click is a DOM click (the element is 1x1 at -1,-1, off the viewport).
        await page.evaluate(
            "document.querySelector('flt-semantics-placeholder')?.click()"
        )
        await asyncio.sleep(0.2)
    return page


async def settled_screenshot(page: Page, path: Path, timeout: float = 10) -> bytes:
    """Save a screenshot once the canvas shows the same, not blank, pixels twice
    in a row (a blank one after `timeout` fails the test).

    Flutter (skwasm renderer, rasterising in a web worker) updates its
    semantics DOM before the pixels: a screenshot taken right after a text
    showed up in the semantics tree can still be blank or one frame old.
    """
    previous = await page.screenshot()
    deadline = time.monotonic() + timeout
    while True:
        await asyncio.sleep(0.3)
        current = await page.screenshot()
        settled = current == previous and not _one_colour(current)
        if settled or time.monotonic() > deadline:
            break
        previous = current
    if _one_colour(current):
        raise AssertionError(f"the page is blank (one colour): {path.name}")
    path.write_bytes(current)
    return current


def _one_colour(png: bytes) -> bool:
    """Whether a screenshot shows nothing but one colour (a blank canvas)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return image.getcolors(maxcolors=1) is not None
