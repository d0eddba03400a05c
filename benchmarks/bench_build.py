"""Server CPU per page build, component re-render and update: stock Flet vs the
seam's speed-ups (`flet_resilient.speedups`), in one run.

Run from the repository root (`pip install -e .[bench]`; about 2 minutes with
the defaults on 2 cores):

    python benchmarks/bench_build.py            # 1000-control page, 30 visits each
    python benchmarks/bench_build.py --smoke    # 200 controls, 3 visits: it runs

Two servers run side by side, each in its own child process (`--serve`), the
same app under `@evict_idle` with a memory store: `stock` with
FLET_RESILIENT_SPEEDUPS=0 (Flet's own page build and diff), `sped-up` with the
speed-ups on (the default). The measurements alternate between the two, one
request at a time (an idle server), with `FletClient`s (Flet's real protocol)
in this process; a server's CPU is its process's `time.process_time()` around
each step:

1. first visit: a new user gets a varied page of `--controls` controls (rows
   of a container holding a row of text, text field, checkbox and a column of
   text and button; `--controls` / 8 rows), connect -> last row in the mirror;
   besides the server's CPU for the whole visit, the server times the CPU of
   the page's `page.add` alone: Flet's page build (diff, configure, encode),
   without the app's own construction of the controls;
2. rehydrate: those users close their tabs, their sessions are evicted
   (disconnected_ttl 1 s), and they come back one by one as the same browser:
   the page is built again from the restored state (connect -> visit count 2
   on screen), what `docs/evict.md` calls a rehydrate;
3. component re-render: a `@ft.component` card (Column: Text, Text,
   ProgressBar) whose `use_state` is set `--renders` times, 1 ms apart: CPU
   per patch frame received (a re-render plus its frozen diff);
4. imperative update: the same card as plain controls, two values changed and
   `card.update()`, `--renders` times, 1 ms apart: CPU per patch frame.

Goals (issue 13): Flet's page build (first visit and rehydrate) >= 2x faster
than stock (the whole visit's CPU is reported too), same frames (checked here
by size, byte for byte in tests/test_speedup.py); rehydrate p99 < 100 ms;
component re-render CPU at most 1/3 of stock. The markdown report goes to
stdout and `benchmarks/results/build-<time>.md` (gitignored; `--out FILE`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flet as ft
import flet_web.fastapi as flet_fastapi
from children import ChildServer
from clients import same_browser
from harness import bench_main, report_header

from flet_resilient import MemoryStore, app_state, evict_idle, stats
from flet_resilient.loadtest.runner import settle_collector
from flet_resilient.measure import percentile, reply, serve_child
from flet_resilient.testing import FletClient

ROOT = Path(__file__).resolve().parents[1]
MODES = {"stock": "0", "sped-up": "1"}
"""Mode -> FLET_RESILIENT_SPEEDUPS for its server."""
CONTROLS_PER_ROW = 8
BUILDS: list[float] = []
"""Child: CPU ms of each varied page's `page.add` (Flet's page build alone:
diff, configure, encode), asked for with `builds`."""


# --- the app (child side) ------------------------------------------------------------


@dataclass
class Visits:
    count: int = 0


def varied_row(i: int) -> ft.Control:
    """Eight controls: a container holding a row of text, text field, checkbox
    and a column of text and button."""
    return ft.Container(
        key=f"row{i}",
        content=ft.Row(
            [
                ft.Text(f"row {i}", size=14, weight=ft.FontWeight.BOLD),
                ft.TextField(value=f"value {i}", label="name", width=200),
                ft.Checkbox(label="done", value=i % 2 == 0),
                ft.Column([ft.Text("note", italic=True), ft.Button("open")]),
            ],
            spacing=5,
        ),
        padding=ft.Padding.all(5),
        border=ft.Border.all(1, ft.Colors.BLUE_GREY_100),
        border_radius=4,
        bgcolor=ft.Colors.BLUE_50 if i % 2 else None,
    )


def card_controls(text: str, done: float) -> list[ft.Control]:
    """The card's Text, Text and ProgressBar (as in bench_coalesce)."""
    return [ft.Text("metric"), *card_values(text, done)]


def card_values(text: str, done: float) -> tuple[ft.Text, ft.ProgressBar]:
    """The card's two changing controls."""
    return ft.Text(text, key="value"), ft.ProgressBar(value=done, key="bar")


def burst_button(renders: int, show: Callable[[int], None]) -> ft.Control:
    """A button whose click calls `show(n)` for n = 1..renders, 1 ms apart."""

    async def burst(e: ft.Event) -> None:
        for n in range(1, renders + 1):
            show(n)
            await asyncio.sleep(0.001)

    return ft.Button("burst", key="burst", on_click=burst)


def make_card(renders: int) -> Callable[..., Any]:
    """The root component: the card (its own `use_state`) and a burst button
    that sets the card's state from outside it, so only the card re-renders."""
    setters: dict[int, Callable[[tuple[str, float]], None]] = {}

    @ft.component
    def Card() -> ft.Control:
        shown, set_shown = ft.use_state(("0", 0.0))
        setters[id(ft.context.page)] = set_shown
        return ft.Column(card_controls(*shown), key="card")

    def show(n: int) -> None:
        setters[id(ft.context.page)]((str(n), n / renders))

    @ft.component
    def Root() -> ft.Control:
        return ft.Column([Card(), burst_button(renders, show)])

    return Root


def make_main(controls: int, renders: int) -> Callable[[ft.Page], Awaitable[None]]:
    """Routes: / the varied page (visit count from app state), /card the
    component card, /update the imperative card."""
    root = make_card(renders)

    @evict_idle(
        disconnected_ttl=1,
        sweep_interval=0.2,
        state=Visits,
        store=MemoryStore(),
        secret_key="bench-build",
        release_memory=False,
    )
    async def main(page: ft.Page) -> None:
        if page.route == "/card":
            page.render(root)
            return
        if page.route == "/update":
            text, bar = card_values("0", 0.0)
            card = ft.Column([ft.Text("metric"), text, bar], key="card")

            def show(n: int) -> None:
                text.value = str(n)
                bar.value = n / renders
                card.update()

            page.add(card, burst_button(renders, show))
            return
        visits = await app_state(page)
        visits.count += 1
        rows = [varied_row(i) for i in range(max(1, controls // CONTROLS_PER_ROW))]
        rows[-1].key = "last"
        started = time.process_time()
        page.add(ft.Text(str(visits.count), key="visits"), ft.Column(rows))
        BUILDS.append((time.process_time() - started) * 1000)

    return main


async def serve(args: argparse.Namespace) -> None:
    """Child: serve the app; answer `cpu` with the CPU seconds it used,
    `builds` with the page builds' CPU ms since the last ask, and `sessions`
    with how many sessions evict tracks."""

    def handle(words: list[str]) -> None:
        kind, token = words[0], words[1]
        if kind == "cpu":
            reply(kind, token, repr(time.process_time()))
        elif kind == "builds":
            reply(kind, token, json.dumps(BUILDS, separators=(",", ":")))
            BUILDS.clear()
        else:
            reply(kind, token, json.dumps(stats()["evict"]["sessions"]))

    app = flet_fastapi.app(make_main(args.controls, args.renders))
    await serve_child(app, handle, ws_ping_interval=None)


# --- measuring (parent side) ---------------------------------------------------------


@dataclass
class Mode:
    """What one server measured (ms, µs, bytes)."""

    name: str
    server: ChildServer
    visit_ms: list[float] = field(default_factory=list)
    visit_cpu_ms: list[float] = field(default_factory=list)
    visit_build_ms: list[float] = field(default_factory=list)
    page_bytes: list[int] = field(default_factory=list)
    rehydrate_ms: list[float] = field(default_factory=list)
    rehydrate_cpu_ms: list[float] = field(default_factory=list)
    rehydrate_build_ms: list[float] = field(default_factory=list)
    restored: int = 0
    render_cpu_us: list[float] = field(default_factory=list)
    update_cpu_us: list[float] = field(default_factory=list)


async def cpu_seconds(server: ChildServer) -> float:
    """CPU seconds the server process has used (its `time.process_time()`:
    finer than the 10 ms ticks psutil sees)."""
    return float((await server.request("cpu"))[0])


async def timed(mode: Mode, step: Awaitable[Any]) -> tuple[Any, float, float]:
    """Run `step`; its result, wall ms and the server's CPU ms. This process's
    collector is settled first: a full pass over the 60 mirrored pages it holds
    would otherwise land inside some visits' wall time."""
    settle_collector()
    cpu = await cpu_seconds(mode.server)
    started = time.perf_counter()
    result = await step
    wall = (time.perf_counter() - started) * 1000
    return result, wall, (await cpu_seconds(mode.server) - cpu) * 1000


async def load(client: FletClient, ready: Callable[[FletClient], object]) -> FletClient:
    """Connect `client` and wait until its page satisfies `ready`."""
    await client.connect()
    await client.wait_for(lambda: ready(client), timeout=60)
    return client


async def first_visit(mode: Mode) -> FletClient:
    """A new user's page: connect -> its last row mirrored."""
    client, wall, cpu = await timed(
        mode, load(FletClient(mode.server.ws_url), lambda c: c.find("last"))
    )
    mode.visit_ms.append(wall)
    mode.visit_cpu_ms.append(cpu)
    mode.page_bytes.append(max(f.size for f in client.frames))
    return client


async def rehydrate(mode: Mode, gone: FletClient) -> FletClient:
    """The same browser back after its session was evicted: -> visit count 2."""
    client, wall, cpu = await timed(
        mode, load(same_browser(gone), lambda c: c.value("visits") is not None)
    )
    mode.rehydrate_ms.append(wall)
    mode.rehydrate_cpu_ms.append(cpu)
    mode.restored += client.value("visits") == "2"
    return client


async def burst(mode: Mode, route: str, renders: int) -> float:
    """Click the card's burst button; server CPU µs per patch frame it caused."""
    client = FletClient(mode.server.ws_url, route=route)
    await load(client, lambda c: c.find("burst"))
    before = len(client.patch_frames())
    _, _, cpu = await timed(mode, clicked(client, "burst", str(renders)))
    frames = len(client.patch_frames()) - before
    await client.close()
    return cpu * 1000 / max(frames, 1)


async def clicked(client: FletClient, button: str, value: str) -> None:
    """Click `button`, wait until the card's value shows `value`."""
    await client.click(button)
    await client.wait_for(lambda: client.value("value") == value, timeout=120)


async def builds(mode: Mode) -> list[float]:
    """The server's page builds (CPU ms) since the last ask."""
    return list(json.loads((await mode.server.request("builds"))[0]))


async def evicted(modes: list[Mode]) -> None:
    """Wait until neither server keeps a session (all tabs closed and evicted)."""
    for mode in modes:

        async def empty(mode: Mode = mode) -> bool:
            return json.loads((await mode.server.request("sessions"))[0]) == 0

        deadline = time.monotonic() + 60
        while not await empty():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{mode.name}: sessions not evicted in 60 s")
            await asyncio.sleep(0.2)


async def measure(modes: list[Mode], args: argparse.Namespace) -> None:
    """Visits, rehydrates and bursts, alternating between the servers."""
    users: dict[str, list[FletClient]] = {m.name: [] for m in modes}
    warm = await asyncio.gather(*(first_visit(m) for m in modes))  # not kept
    await asyncio.gather(*(c.close() for c in warm))
    for mode in modes:
        mode.visit_ms, mode.visit_cpu_ms, mode.page_bytes = [], [], []
        await builds(mode)
    for _ in range(args.visits):
        for mode in modes:
            users[mode.name].append(await first_visit(mode))
    for mode in modes:
        mode.visit_build_ms = await builds(mode)
    for clients in users.values():
        await asyncio.gather(*(c.close() for c in clients))
    await evicted(modes)
    returned = []
    for index in range(args.visits):
        for mode in modes:
            returned.append(await rehydrate(mode, users[mode.name][index]))
    for mode in modes:
        mode.rehydrate_build_ms = await builds(mode)
    await asyncio.gather(*(c.close() for c in returned))
    for _ in range(args.bursts):
        for mode in modes:
            mode.render_cpu_us.append(await burst(mode, "/card", args.renders))
            mode.update_cpu_us.append(await burst(mode, "/update", args.renders))


async def run(args: argparse.Namespace) -> list[Mode]:
    """Start both servers, measure, stop them."""
    command = [sys.executable, os.path.abspath(__file__), "--serve"]
    command += ["--controls", str(args.controls), "--renders", str(args.renders)]
    servers = [
        ChildServer(command, env={**os.environ, "FLET_RESILIENT_SPEEDUPS": value})
        for value in MODES.values()
    ]
    for server in servers:
        await server.__aenter__()
    try:
        modes = [Mode(name, s) for name, s in zip(MODES, servers, strict=True)]
        await measure(modes, args)
        return modes
    finally:
        for server in servers:
            await server.__aexit__()


# --- the report ------------------------------------------------------------------


def p50_p99(values: list[float]) -> str:
    return f"{percentile(values, 50):.1f} / {percentile(values, 99):.1f}"


def ratio(stock: list[float], fast: list[float]) -> float:
    """How many times less the sped-up server needed (medians)."""
    return percentile(stock, 50) / max(percentile(fast, 50), 1e-9)


def rows(stock: Mode, fast: Mode) -> list[tuple[str, str, str, str]]:
    """(measure, stock, sped-up, stock / sped-up) per table row."""
    pairs = [
        ("first visit: server CPU ms, p50 / p99", "visit_cpu_ms"),
        ("first visit: Flet's page build CPU ms, p50 / p99", "visit_build_ms"),
        ("first visit: connect -> page shown ms, p50 / p99", "visit_ms"),
        ("rehydrate: server CPU ms, p50 / p99", "rehydrate_cpu_ms"),
        ("rehydrate: Flet's page build CPU ms, p50 / p99", "rehydrate_build_ms"),
        ("rehydrate: connect -> state on screen ms, p50 / p99", "rehydrate_ms"),
        ("component re-render: server CPU µs per frame, p50 / p99", "render_cpu_us"),
        ("imperative update: server CPU µs per frame, p50 / p99", "update_cpu_us"),
    ]
    table = []
    for label, name in pairs:
        a, b = getattr(stock, name), getattr(fast, name)
        table.append((label, p50_p99(a), p50_p99(b), f"{ratio(a, b):.2f}x"))
    table.append(
        (
            "page frame bytes (largest frame of a visit)",
            f"{max(stock.page_bytes):,}",
            f"{max(fast.page_bytes):,}",
            "same" if stock.page_bytes == fast.page_bytes else "DIFFERENT",
        )
    )
    visits = len(stock.rehydrate_ms)
    restored = (f"{stock.restored}/{visits}", f"{fast.restored}/{visits}")
    table.append(("states restored", *restored, ""))
    return table


def goals(stock: Mode, fast: Mode) -> list[str]:
    """The issue's goals, met or missed."""
    verdict = {True: "met", False: "MISSED"}
    build = min(
        ratio(stock.visit_build_ms, fast.visit_build_ms),
        ratio(stock.rehydrate_build_ms, fast.rehydrate_build_ms),
    )
    whole = min(
        ratio(stock.visit_cpu_ms, fast.visit_cpu_ms),
        ratio(stock.rehydrate_cpu_ms, fast.rehydrate_cpu_ms),
    )
    p99 = percentile(fast.rehydrate_ms, 99)
    render = ratio(stock.render_cpu_us, fast.render_cpu_us)
    return [
        f"- Flet's page build >= 2x faster (CPU, first visit and rehydrate): "
        f"{build:.2f}x, {verdict[build >= 2]}",
        f"- whole first visit / rehydrate (server CPU, the app's own control "
        f"construction included) >= 2x faster: {whole:.2f}x, {verdict[whole >= 2]}",
        f"- rehydrate p99 < 100 ms (sped-up): {p99:.0f} ms, {verdict[p99 < 100]}",
        f"- component re-render <= 1/3 of stock: {render:.2f}x less, "
        f"{verdict[render >= 3]}",
    ]


def report(modes: list[Mode], args: argparse.Namespace, command: str) -> str:
    stock, fast = modes
    title = "Page build, re-render and update: stock vs sped-up"
    lines = report_header(title, command, ROOT)
    lines += [
        "",
        f"{args.controls}-control varied page, {args.visits} first visits and "
        f"{args.visits} rehydrates per server, {args.bursts} bursts of "
        f"{args.renders} re-renders / updates; one request at a time.",
        "",
        "| measure | stock Flet | sped-up | stock / sped-up |",
        "|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows(stock, fast)),
        "",
        *goals(stock, fast),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--controls", type=int, default=1000, help="per page")
    parser.add_argument("--visits", type=int, default=30, help="per server")
    parser.add_argument("--renders", type=int, default=1000, help="per burst")
    parser.add_argument("--bursts", type=int, default=3, help="per server and kind")
    parser.add_argument("--out", type=Path, default=None, help="report file")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny and quick: check that it runs"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.controls, args.visits, args.renders, args.bursts = 200, 3, 50, 1
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or its server, in a child process)."""
    args = parse_args(argv)
    bench_main(args, run, report, args.out, "build", serve=serve)


if __name__ == "__main__":
    main()
