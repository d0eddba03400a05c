"""A decorated app started the ways Flet users start apps (ft.run, flet run --web).

    FLET_SERVER_IP=127.0.0.1 FLET_SERVER_PORT=8550 python run_app.py
    flet run --web --host 127.0.0.1 -p 8550 run_app.py
"""

from dataclasses import dataclass

import flet as ft

from flet_resilient import MemoryStore, app_state, coalesce_updates, evict_idle, stats


@dataclass
class Counter:
    count: int = 0


@evict_idle(state=Counter, store=MemoryStore(), secret_key="run-modes")
@coalesce_updates(max_hz=20)
async def main(page: ft.Page) -> None:
    counter = await app_state(page)
    shown = ft.Text(str(counter.count), key="count")

    def increment(e: ft.Event) -> None:
        counter.count += 1
        shown.value = str(counter.count)

    coalesced = stats()["coalesce"]["sessions"]
    page.add(
        ft.Text(f"coalesced sessions: {coalesced}", key="mitigations"),
        shown,
        ft.Button("+1", key="inc", on_click=increment),
    )


if __name__ == "__main__":
    ft.run(main, view=ft.AppView.WEB_BROWSER, no_cdn=True)
