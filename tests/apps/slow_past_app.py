"""A tiny app whose clicks get slow once more than $SLOW_PAST sessions exist.

The capacity tests ramp it: every step up to SLOW_PAST users meets a click
p99 SLO, the next one misses it by a wide margin ($SLOW_SECONDS per click),
so capacity detection is checked without asserting on timings.
"""

from __future__ import annotations

import asyncio
import itertools
import os

import flet as ft

import flet_resilient as fr

_sessions = itertools.count(1)
_started = 0  # sessions started in this process so far


@fr.coalesce_updates()
async def main(page: ft.Page) -> None:
    """A counter and a "+1" button (`plus`)."""
    global _started
    _started = next(_sessions)
    slow_past = int(os.environ.get("SLOW_PAST", "4"))
    delay = float(os.environ.get("SLOW_SECONDS", "2"))
    count = ft.Text("0", key="count")

    async def plus(e: ft.Event) -> None:
        if _started > slow_past:  # every session slows down past the wall
            await asyncio.sleep(delay)
        count.value = str(int(count.value or "0") + 1)
        count.update()

    page.add(ft.Button("+1", key="plus", on_click=plus), count)
