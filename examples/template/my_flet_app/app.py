"""The app: three pages behind a navigation row, all four mitigations on."""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass, field

import flet as ft
from flet_resilient import (
    JobDropped,
    app_state,
    buffer_reconnects,
    coalesce_updates,
    connected,
    evict_idle,
    mount_status,
)

from my_flet_app.reports import build_report


@dataclass
class AppState:
    """What survives eviction: restored when the same browser comes back."""

    notes: list[str] = field(default_factory=list)


def dashboard(page: ft.Page) -> ft.Control:
    value = ft.Text("0", key="live", size=40)

    async def produce() -> None:
        for tick in itertools.count(1):
            await connected(page)  # pause while nobody is listening
            value.value = str(tick)
            value.update()  # coalesced to at most 20 patches/s
            await asyncio.sleep(0.01)

    page.run_task(produce)
    return ft.Column([ft.Text("Live value"), value])


def report(page: ft.Page) -> ft.Control:
    result = ft.Text("No report yet", key="report_result")

    async def generate(e: ft.Event) -> None:
        result.value = "building in a worker process..."
        result.update()
        try:
            result.value = await build_report(200_000)
        except JobDropped:
            return  # a newer click replaced this one
        result.update()

    return ft.Column([ft.Button("Generate", key="generate", on_click=generate), result])


def notes(page: ft.Page, state: AppState) -> ft.Control:
    entry = ft.TextField(label="Note", key="note")
    listing = ft.Column([ft.Text(n) for n in state.notes], key="notes")

    def save(e: ft.Event) -> None:
        if entry.value:
            state.notes.append(entry.value)
            listing.controls.append(ft.Text(entry.value))
            entry.value = ""

    return ft.Column([entry, ft.Button("Save", key="save", on_click=save), listing])


@buffer_reconnects(window=30)
@evict_idle(idle_ttl=15 * 60, disconnected_ttl=120, state=AppState)
@coalesce_updates(max_hz=20)
async def main(page: ft.Page) -> None:
    state: AppState = await app_state(page)
    pages = {
        "Dashboard": dashboard(page),
        "Report": report(page),
        "Notes": notes(page, state),
    }
    body = ft.Container(content=pages["Dashboard"], key="body")

    def show(name: str):
        def on_click(e: ft.Event) -> None:
            body.content = pages[name]

        return on_click

    page.add(
        ft.Row([ft.Button(n, key=f"nav_{n.lower()}", on_click=show(n)) for n in pages]),
        body,
    )


def run() -> None:
    """Serve on 127.0.0.1 (PORT, default 8560) with the local Flutter client,
    and the live status page at /status if $FLET_RESILIENT_STATUS_TOKEN is set."""
    import flet_web.fastapi as flet_fastapi
    import uvicorn

    port = int(os.environ.get("PORT", "8560"))
    app = flet_fastapi.app(main, no_cdn=True)
    if os.environ.get("FLET_RESILIENT_STATUS_TOKEN"):
        mount_status(app, "/status")  # log in with any user name and the token
        print(f"status page: http://127.0.0.1:{port}/status", flush=True)
    print(f"my-flet-app: http://127.0.0.1:{port}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port)


if __name__ == "__main__":
    run()
