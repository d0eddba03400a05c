"""A counter app whose evicted state lives in Redis (run as its own process).

    REDIS_URL=redis://127.0.0.1:6379/0 FLET_SECRET_KEY=... \
        python -m uvicorn shared_state_app:create_app --factory --port 8000
"""

import os
from dataclasses import dataclass

import flet as ft
import flet_web.fastapi as flet_fastapi

from flet_resilient import RedisStore, app_state, evict_idle


@dataclass
class Counter:
    count: int = 0


def create_app() -> object:
    @evict_idle(
        idle_ttl=0.5,
        sweep_interval=0.1,
        state=Counter,
        store=RedisStore(os.environ["REDIS_URL"]),
    )
    async def main(page: ft.Page) -> None:
        counter = await app_state(page)
        count = ft.Text(str(counter.count), key="count")

        def increment(e: ft.Event) -> None:
            counter.count += 1
            count.value = str(counter.count)

        page.add(count, ft.Button("+", key="inc", on_click=increment))

    return flet_fastapi.app(main)
