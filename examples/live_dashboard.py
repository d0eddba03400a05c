"""A live dashboard fed at 150 Hz, sent to each browser at most 20 times a second.

Run: python examples/live_dashboard.py   (then open the printed URL)

Every session gets a producer task that moves six simulated metrics
`DASHBOARD_HZ` times a second (default 150) and calls `update()` on each gauge card,
the bar chart and a tick counter every tick, 1,200 `update()` calls a second.
`@coalesce_updates(max_hz=20)` turns them into at most 20 patch batches a
second per user, and the last state always arrives.

Environment: `PORT` (default 8551), `DASHBOARD_HZ` (default 150),
`DASHBOARD_TICKS` (stop after that many ticks and show "done"; for tests:
the final values are then `simulate(ticks)`), `DASHBOARD_SEED` (default 0).
Controls carry keys: `<metric>` (Text), `<metric>-gauge`, `bar-<i>`, `ticks`,
`status`.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import flet as ft
import uvicorn

import flet_resilient as fr

BARS = 40  # bar-chart columns: the latest requests/s samples, one per tick
CHART_HEIGHT = 120


@dataclass(frozen=True)
class Metric:
    """One simulated metric: a bounded random walk."""

    name: str
    label: str
    unit: str
    low: float
    high: float
    step: float
    ring: bool = False  # a ProgressRing gauge instead of a ProgressBar

    def fraction(self, value: float) -> float:
        """Where `value` sits between low and high, for the gauge (0..1)."""
        return (value - self.low) / (self.high - self.low)

    def text(self, value: float) -> str:
        """The value as the dashboard shows it."""
        return f"{value:,.1f} {self.unit}"


METRICS = (
    Metric("cpu", "CPU", "%", 0, 100, 4, ring=True),
    Metric("memory", "Memory", "%", 0, 100, 1, ring=True),
    Metric("requests", "Requests", "req/s", 0, 5000, 150),
    Metric("latency", "Latency p99", "ms", 0, 500, 15),
    Metric("net_in", "Network in", "MB/s", 0, 1000, 30),
    Metric("net_out", "Network out", "MB/s", 0, 1000, 30),
)


def start_values() -> dict[str, float]:
    """Every metric in the middle of its range."""
    return {m.name: (m.low + m.high) / 2 for m in METRICS}


def step(values: dict[str, float], rng: random.Random) -> dict[str, float]:
    """The next tick's values (each metric moves by at most its step)."""
    return {
        m.name: min(m.high, max(m.low, values[m.name] + rng.uniform(-m.step, m.step)))
        for m in METRICS
    }


def simulate(ticks: int, seed: int = 0) -> dict[str, float]:
    """The values after `ticks` ticks: what the dashboard ends on."""
    rng = random.Random(seed)
    values = start_values()
    for _ in range(ticks):
        values = step(values, rng)
    return values


def env_float(name: str, default: float) -> float:
    """A number from the environment, or `default`."""
    raw = os.environ.get(name, "")
    return float(raw) if raw else default


class Dashboard:
    """The controls of one session and how a tick changes them."""

    def __init__(self) -> None:
        self.texts = {m.name: ft.Text(key=m.name, size=22) for m in METRICS}
        self.gauges: dict[str, ft.ProgressBar | ft.ProgressRing] = {
            m.name: (
                ft.ProgressRing(key=f"{m.name}-gauge", width=56, height=56)
                if m.ring
                else ft.ProgressBar(key=f"{m.name}-gauge", width=220)
            )
            for m in METRICS
        }
        self.cards = {
            m.name: ft.Container(
                ft.Column([ft.Text(m.label), self.texts[m.name], self.gauges[m.name]]),
                padding=12,
                border_radius=8,
                bgcolor=ft.Colors.SURFACE_CONTAINER_HIGHEST,
                width=250,
            )
            for m in METRICS
        }
        self.bars = [
            ft.Container(
                key=f"bar-{i}",
                width=10,
                height=1,
                bgcolor=ft.Colors.BLUE,
                border_radius=2,
            )
            for i in range(BARS)
        ]
        self.chart = ft.Container(
            ft.Row(
                self.bars,
                spacing=2,
                height=CHART_HEIGHT,
                vertical_alignment=ft.CrossAxisAlignment.END,
            ),
            padding=12,
        )
        self.history: deque[float] = deque([0.0] * BARS, maxlen=BARS)
        self.ticks = ft.Text("0", key="ticks")
        self.status = ft.Text("live", key="status")

    def controls(self) -> list[ft.Control]:
        """What main adds to the page."""
        return [
            ft.Row([ft.Text("Live dashboard", size=26), self.status, self.ticks]),
            ft.Row(
                list(self.cards.values()),
                wrap=True,
                vertical_alignment=ft.CrossAxisAlignment.START,
            ),
            ft.Text("Requests/s, last ticks"),
            self.chart,
        ]

    def show(self, values: dict[str, float], tick: int) -> None:
        """Set every control from `values` and `update()` each card and the chart."""
        for metric in METRICS:
            value = values[metric.name]
            self.texts[metric.name].value = metric.text(value)
            self.gauges[metric.name].value = metric.fraction(value)
            self.cards[metric.name].update()
        requests = next(m for m in METRICS if m.name == "requests")
        self.history.append(requests.fraction(values["requests"]))
        for bar, level in zip(self.bars, self.history, strict=True):
            bar.height = max(1, round(level * CHART_HEIGHT))
        self.chart.update()
        self.ticks.value = str(tick)
        self.ticks.update()


async def feed(
    page: ft.Page,
    show: Callable[[dict[str, float], int], None],
    hz: float,
    ticks: int | None,
    seed: int,
) -> bool:
    """Call `show(values, tick)` `hz` times a second; True once `ticks` are shown.

    Paused while the user is away (Flet keeps the session for a reconnect);
    returns False when Flet closes the session.
    """
    connected = asyncio.Event()
    connected.set()
    closed = False

    async def on_connect(e: ft.Event) -> None:
        connected.set()

    async def on_disconnect(e: ft.Event) -> None:
        connected.clear()

    async def on_close(e: ft.Event) -> None:
        nonlocal closed
        closed = True
        connected.set()

    page.on_connect, page.on_disconnect = on_connect, on_disconnect
    page.on_close = on_close
    rng = random.Random(seed)
    values = start_values()
    started = time.monotonic()
    tick = 0
    while ticks is None or tick < ticks:
        if page.session.connection is None:
            await connected.wait()
            if closed:
                return False
            started = time.monotonic() - tick / hz  # resume, no catch-up
        tick += 1
        values = step(values, rng)
        show(values, tick)
        delay = started + tick / hz - time.monotonic()
        if delay < 0:
            started -= delay  # late: shift the schedule, no catch-up burst
        await asyncio.sleep(max(0.0, delay))
    return True


def settings(
    hz: float | None, ticks: int | None, seed: int | None
) -> tuple[float, int | None, int]:
    """The feed's rate, tick count and seed; unset ones come from the environment."""
    hz = hz or env_float("DASHBOARD_HZ", 150)
    if ticks is None and os.environ.get("DASHBOARD_TICKS"):
        ticks = int(os.environ["DASHBOARD_TICKS"])
    seed = seed if seed is not None else int(env_float("DASHBOARD_SEED", 0))
    return hz, ticks, seed


def make_main(
    hz: float | None = None, ticks: int | None = None, seed: int | None = None
) -> Callable[[ft.Page], Awaitable[None]]:
    """The app's coalesced main; unset arguments come from the environment."""
    hz, ticks, seed = settings(hz, ticks, seed)

    @fr.coalesce_updates(max_hz=20)
    async def main(page: ft.Page) -> None:
        page.title = "flet-resilient: live dashboard"
        board = Dashboard()
        page.add(*board.controls())

        async def produce() -> None:
            if await feed(page, board.show, hz, ticks, seed):
                board.status.value = "done"
                board.status.update()

        board.show(start_values(), 0)
        page.run_task(produce)

    return main


main = make_main()


def create_app() -> object:
    """The ASGI app (`uvicorn examples.live_dashboard:create_app --factory`)."""
    import flet_web.fastapi as flet_fastapi

    return flet_fastapi.app(main, no_cdn=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8551"))
    print(f"flet-resilient live dashboard: http://127.0.0.1:{port}", flush=True)
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning")
