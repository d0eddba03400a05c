"""The live dashboard of `live_dashboard.py`, written as declarative components.

Run: python examples/live_dashboard_components.py   (then open the printed URL)

`LiveDashboard` keeps the latest tick in `use_state`; an `on_mounted` task sets
it `DASHBOARD_HZ` times a second (default 150), and every set re-renders the
dashboard and its nested `MetricCard` and `Chart` components. With
`@coalesce_updates(max_hz=20)` each browser gets at most 20 re-renders a
second, and the last state always arrives; without it, Flet sends one patch
per state change.

The simulated metrics, the feed (paused while the user is away, stopped when
Flet closes the session) and the environment variables (`DASHBOARD_HZ`,
`DASHBOARD_TICKS`, `DASHBOARD_SEED`; `PORT`, default 8552 here) are those of
`live_dashboard.py`, and so are the control keys: `<metric>` (Text),
`<metric>-gauge`, `bar-<i>`, `ticks`, `status`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import flet as ft
import uvicorn
from live_dashboard import (
    BARS,
    CHART_HEIGHT,
    METRICS,
    Metric,
    feed,
    settings,
    start_values,
)

import flet_resilient as fr

REQUESTS = next(m for m in METRICS if m.name == "requests")


@dataclass(frozen=True)
class Snapshot:
    """What the dashboard shows: one tick's values and the chart's history."""

    values: dict[str, float]
    tick: int
    history: tuple[float, ...]


@ft.component
def MetricCard(metric: Metric, value: float) -> ft.Control:
    """One metric: its label, its value and a gauge."""
    fraction = metric.fraction(value)
    gauge = (
        ft.ProgressRing(key=f"{metric.name}-gauge", value=fraction, width=56, height=56)
        if metric.ring
        else ft.ProgressBar(key=f"{metric.name}-gauge", value=fraction, width=220)
    )
    return ft.Container(
        ft.Column(
            [
                ft.Text(metric.label),
                ft.Text(metric.text(value), key=metric.name, size=22),
                gauge,
            ]
        ),
        padding=12,
        border_radius=8,
        bgcolor=ft.Colors.SURFACE_CONTAINER_HIGHEST,
        width=250,
    )


@ft.component
def Chart(history: tuple[float, ...]) -> ft.Control:
    """Requests/s of the latest ticks, one bar each."""
    bars = [
        ft.Container(
            key=f"bar-{i}",
            width=10,
            height=max(1, round(level * CHART_HEIGHT)),
            bgcolor=ft.Colors.BLUE,
            border_radius=2,
        )
        for i, level in enumerate(history)
    ]
    return ft.Container(
        ft.Row(
            bars,
            spacing=2,
            height=CHART_HEIGHT,
            vertical_alignment=ft.CrossAxisAlignment.END,
        ),
        padding=12,
    )


@ft.component
def LiveDashboard(hz: float, ticks: int | None, seed: int) -> ft.Control:
    """The whole dashboard, re-rendered on every tick of its feed."""
    shown, set_shown = ft.use_state(Snapshot(start_values(), 0, (0.0,) * BARS))
    status, set_status = ft.use_state("live")

    async def produce() -> None:
        history = deque(shown.history, maxlen=BARS)

        def show(values: dict[str, float], tick: int) -> None:
            history.append(REQUESTS.fraction(values["requests"]))
            set_shown(Snapshot(values, tick, tuple(history)))

        if await feed(ft.context.page, show, hz, ticks, seed):
            set_status("done")

    ft.on_mounted(produce)
    return ft.Column(
        [
            ft.Row(
                [
                    ft.Text("Live dashboard", size=26),
                    ft.Text(status, key="status"),
                    ft.Text(str(shown.tick), key="ticks"),
                ]
            ),
            ft.Row(
                [MetricCard(m, shown.values[m.name]) for m in METRICS],
                wrap=True,
                vertical_alignment=ft.CrossAxisAlignment.START,
            ),
            ft.Text("Requests/s, last ticks"),
            Chart(shown.history),
        ]
    )


def make_main(
    hz: float | None = None, ticks: int | None = None, seed: int | None = None
) -> Callable[[ft.Page], None]:
    """The app's coalesced main; unset arguments come from the environment."""
    hz, ticks, seed = settings(hz, ticks, seed)

    @fr.coalesce_updates(max_hz=20)
    def main(page: ft.Page) -> None:
        page.title = "flet-resilient: live dashboard (components)"
        page.render(LiveDashboard, hz, ticks, seed)

    return main


main = make_main()


def create_app() -> object:
    """The ASGI app (from examples/: `uvicorn live_dashboard_components:create_app
    --factory`)."""
    import flet_web.fastapi as flet_fastapi

    return flet_fastapi.app(main, no_cdn=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8552"))
    print(f"flet-resilient live dashboard (components): http://127.0.0.1:{port}")
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning")
