"""Real-browser tests: the Flutter web client (flet-web) in Debian's chromium.

Install the browser with `.ci/install-browser`; without /usr/bin/chromium or
the `playwright` package these tests are skipped (with the reason).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
sys.path.insert(0, str(ROOT / "examples"))  # the examples (also in workers)

CHROMIUM = Path("/usr/bin/chromium")


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (run .ci/install-browser)"
    return None


@pytest.fixture
async def browser():
    """A headless chromium (one per test: tests stay independent)."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from flutter_browser import launch
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await launch(playwright)
        yield browser
        await browser.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where a test saves its screenshots: `tmp_path`, never a tracked file.

    `FLET_RESILIENT_DOCS_SCREENSHOTS=1 python -m pytest tests/e2e` regenerates
    the docs' images in docs/screenshots on purpose.
    """
    if os.environ.get("FLET_RESILIENT_DOCS_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path
