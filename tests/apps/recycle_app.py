"""A counter with a page of CONTROLS Texts, recycled when memory is reclaimable.

    FLET_RESILIENT_STATE_DIR=... RECYCLE_IDLE_RSS=1 CONTROLS=1500 \\
        gunicorn -k uvicorn.workers.UvicornWorker 'recycle_app:create_app()'

Connected sessions stay (idle_ttl 600 s); closed tabs are evicted after
0.5 s. RECYCLE_IDLE_RSS (bytes) is `evict_idle(recycle_idle_rss=...)`
(unset: no recycling). State goes to the default disk store.
"""

import os
from dataclasses import dataclass

import flet as ft
import flet_web.fastapi as flet_fastapi

from flet_resilient import app_state, evict_idle


@dataclass
class Counter:
    count: int = 0


def create_app() -> object:
    limit = os.environ.get("RECYCLE_IDLE_RSS")
    controls = int(os.environ.get("CONTROLS", "1500"))

    @evict_idle(
        idle_ttl=600,
        disconnected_ttl=0.5,
        sweep_interval=0.2,
        state=Counter,
        save_delay=None,  # the drain must do the saving
        recycle_idle_rss=int(limit) if limit else None,
    )
    async def main(page: ft.Page) -> None:
        counter = await app_state(page)
        count = ft.Text(str(counter.count), key="count")

        def increment(e: ft.Event) -> None:
            counter.count += 1
            count.value = str(counter.count)

        page.add(
            ft.Text(str(os.getpid()), key="pid"),
            count,
            ft.Button("+1", key="inc", on_click=increment),
            ft.Column([ft.Text(f"line {k}") for k in range(controls)]),
        )

    return flet_fastapi.app(main, no_cdn=True)
