"""A counter and a note whose state lives in Redis (run as several workers).

    REDIS_URL=redis://127.0.0.1:6379/0 FLET_SECRET_KEY=... \\
        python -m uvicorn deploy_app:create_app --factory --port 8000

No save calls: write-behind, drain and restore do it. Knobs, for tests that
show what happens without them: SAVE_DELAY (seconds, or "none" to switch
write-behind off), RECYCLE_AFTER (sessions per worker), and
FLET_RESILIENT_DISABLE=1 for plain Flet.
"""

import os
from dataclasses import dataclass

import flet as ft
import flet_web.fastapi as flet_fastapi

from flet_resilient import RedisStore, app_state, evict_idle


@dataclass
class Form:
    count: int = 0
    note: str = ""


def _save_delay() -> float | None:
    value = os.environ.get("SAVE_DELAY", "0.3")
    return None if value == "none" else float(value)


def _recycle_after() -> int | None:
    value = os.environ.get("RECYCLE_AFTER")
    return int(value) if value else None


def create_app() -> object:
    @evict_idle(
        idle_ttl=600,
        state=Form,
        store=RedisStore(os.environ["REDIS_URL"], timeout=0.3),
        save_delay=_save_delay(),
        recycle_after=_recycle_after(),
    )
    async def main(page: ft.Page) -> None:
        form = await app_state(page)
        count = ft.Text(str(form.count), key="count")
        note = ft.TextField(value=form.note, key="note", label="Note")

        def increment(e: ft.Event) -> None:
            form.count += 1
            count.value = str(form.count)

        def typed(e: ft.Event) -> None:
            form.note = note.value or ""

        note.on_change = typed
        page.add(
            ft.Text(str(os.getpid()), key="pid"),
            count,
            note,
            ft.Button("+1", key="inc", on_click=increment),
        )

    return flet_fastapi.app(main, no_cdn=True)
