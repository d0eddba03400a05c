"""Frames, bytes and server CPU of a 200 Hz dashboard: plain Flet vs `coalesce_updates`.

Run from the repository root (about a minute with the defaults, each):

    python benchmarks/bench_coalesce.py                     # 100 sessions, 200/s, 10 s
    python benchmarks/bench_coalesce.py --scenario clicks   # 50 sessions, 50 Hz, 20 s
    python benchmarks/bench_coalesce.py --scenario components  # 100, 200/s, 10 s
    python benchmarks/bench_coalesce.py --smoke             # a quick check (~10 s)
    python benchmarks/bench_coalesce.py --scenario clicks --smoke
    python benchmarks/bench_coalesce.py --scenario components --smoke

Two phases, each with its own server (`flet_resilient.testing.FletServer`, a
thread of this process) and freshly connected simulated users
(`FletClient`, Flet's real WebSocket protocol):

* plain: every session's producer task sets a Text and a ProgressBar and calls
  `update()` on their card `--rate` times a second for `--duration` seconds,
  then shows a final value ("done <ticks>");
* coalesced: the same app under `@coalesce_updates(max_hz=--max-hz)`.

All producers start together once every user is connected. A phase ends when
every user's mirror shows its final value (or `--settle-timeout` after the
producers stop). Measured per phase, from the start to that end:

* patch frames and bytes the users received (sum of WebSocket frame sizes);
* CPU seconds of the server's thread (its event loop: uvicorn, Flet, the app),
  read from /proc through psutil, so the users' CPU is not counted;
* event-loop lag p99, from a probe task on the server loop (a 10 ms sleep,
  how late it wakes) and from `flet_resilient.stats()["loop"]["lag"]` (the
  difference of its cumulative buckets, so a bucket's upper bound);
* the share of sessions whose mirrored final value equals the server's.

`--scenario clicks` (issue "Coalescing delays clicks"): the same two phases
with another app. Each session has a ticker, a Text its producer updates
`--rate` (50) times a second, and a "+1" button whose handler sets a count
Text and calls its `update()`; each user clicks "+1" every 0.5-1.5 s
(seeded by `--seed`) while the ticker runs. Measured besides: click->patch
latency (from sending the CONTROL_EVENT to the arrival of the patch that
shows the new count, as the frame's receive time) p50/p99/max, and the
ticker's patch frames per second per session (mean and max). Goals: with the
coalescer, click->patch p50 within 2 ms of plain Flet's, the ticker at most
`--max-hz` frames a second, every click answered.

`--scenario components`: the dashboard's measurement and goals, with the card
written as a Flet 1.0 declarative component (`@ft.component`, rendered by
`page.render`). Its producer, started in `on_mounted`, keeps the same
absolute schedule and sets the card's `use_state` (text, fraction done)
instead of calling `update()`; each set re-renders the component, which plain
Flet sends as one patch per state change.

The users run in a child process (`--clients`), so decoding 20,000 frames a
second does not take the server's GIL; `--in-process` runs them on this
process's main thread instead (they then slow the server down). The markdown
table goes to stdout and to `--output` (default `benchmarks/results/`
`coalesce.md`, `coalesce_clicks.md` for the clicks, `coalesce_components.md`;
gitignored). `--smoke`: 10 sessions for 2 s (clicks: 5 sessions for 4 s;
components: 5 sessions for 3 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import math
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flet as ft
import psutil
from children import start_child, stop_child
from clients import connect_many
from harness import RESULTS_DIR, bench_main, choices, each_phase, ms

from flet_resilient import coalesce_updates, stats
from flet_resilient.loadtest.meter import CpuMeter
from flet_resilient.measure import machine, percentile
from flet_resilient.metrics import Histogram
from flet_resilient.testing import Action, FletClient, FletServer, wait_until

MODES = ("plain", "coalesced")
SCENARIOS = ("dashboard", "clicks", "components")
DEFAULTS: dict[str, dict[str, float]] = {
    "dashboard": {"sessions": 100, "rate": 200.0, "duration": 10.0},
    "clicks": {"sessions": 50, "rate": 50.0, "duration": 20.0},
    "components": {"sessions": 100, "rate": 200.0, "duration": 10.0},
}
SMOKE: dict[str, dict[str, float]] = {
    "dashboard": {"sessions": 10, "duration": 2.0},
    "clicks": {"sessions": 5, "duration": 4.0},
    "components": {"sessions": 5, "duration": 3.0},
}
REPORTS = {
    "dashboard": "coalesce.md",
    "clicks": "coalesce_clicks.md",
    "components": "coalesce_components.md",
}
GOAL_BYTES = 10.0  # coalesced sends at least 10x fewer bytes
GOAL_CPU = 5.0  # ... and uses at least 5x less server CPU
NOISY_CORES = 0.2  # other processes' CPU use that makes a phase's numbers suspect
PROBE_INTERVAL = 0.01
GOAL_CLICK_MS = 2.0  # clicks: coalesced click->patch p50 within 2 ms of plain
CLICK_GAP_S = (0.5, 1.5)  # a user clicks "+1" about once a second
CLICK_TIMEOUT_S = 10.0  # a click not answered by then counts as unanswered
SAME_BATCH_S = 0.001  # frames received closer than this left in one flush


# --- the app under test ---------------------------------------------------------


@dataclass
class Feed:
    """Shared by every session of one phase: the start signal and the results."""

    rate: float
    ticks: int  # updates each producer makes: rate x duration
    start: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0
    finals: dict[str, str] = field(default_factory=dict)  # session id -> value
    updates: int = 0  # update() calls made by all producers
    producing: int = 0  # producers still running


Show = Callable[[str, float], None]
"""Puts a producer's tick on the page: (text, fraction done) -> update()."""


async def produce(feed: Feed, page: ft.Page, show: Show) -> None:
    """`show` each tick, `feed.rate` a second from the start signal, then the
    final value ("done <ticks>"), which goes into `feed.finals`."""
    feed.producing += 1
    try:
        await feed.start.wait()
        started = feed.started_at
        for tick in range(1, feed.ticks + 1):
            if page.session.connection is None:
                return
            show(str(tick), (tick % 100) / 100)
            feed.updates += 1
            # Absolute schedule; a late producer runs its next tick at once.
            await asyncio.sleep(max(0.0, started + tick / feed.rate - time.monotonic()))
        final = f"done {feed.ticks}"
        show(final, 1.0)
        feed.finals[page.session.id] = final
    finally:
        feed.producing -= 1


def served(
    main: Callable[[ft.Page], Any], max_hz: float | None
) -> Callable[[ft.Page], Any]:
    """`main` as plain Flet (`max_hz` None) or under `coalesce_updates(max_hz)`."""
    return main if max_hz is None else coalesce_updates(max_hz=max_hz)(main)


def make_app(feed: Feed, max_hz: float | None) -> Callable[[ft.Page], Any]:
    """A card with a Text and a ProgressBar, fed by a per-session producer."""

    async def main(page: ft.Page) -> None:
        value = ft.Text("0", key="value")
        bar = ft.ProgressBar(value=0, key="bar")
        card = ft.Column([ft.Text("metric"), value, bar], key="card")
        page.add(card)

        def show(text: str, done: float) -> None:
            value.value = text
            bar.value = done
            card.update()

        page.run_task(produce, feed, page, show)

    return served(main, max_hz)


def make_clicks_app(feed: Feed, max_hz: float | None) -> Callable[[ft.Page], Any]:
    """A ticker Text fed by a per-session producer, and a "+1" button with its count."""

    async def main(page: ft.Page) -> None:
        ticker = ft.Text("0", key="value")
        count = ft.Text("0", key="count")
        clicks = 0

        def plus(e: ft.Event) -> None:
            nonlocal clicks
            clicks += 1
            count.value = str(clicks)
            count.update()

        def show(text: str, done: float) -> None:
            ticker.value = text
            ticker.update()

        page.add(ticker, count, ft.Button("+1", key="plus", on_click=plus))
        page.run_task(produce, feed, page, show)

    return served(main, max_hz)


def make_components_app(feed: Feed, max_hz: float | None) -> Callable[[ft.Page], Any]:
    """The dashboard's card as an `@ft.component`: its producer, started in
    `on_mounted`, sets a `use_state` (text, fraction done) at each tick."""

    @ft.component
    def Card() -> ft.Control:
        (text, done), set_shown = ft.use_state(("0", 0.0))
        page = ft.context.page

        def show(text: str, done: float) -> None:
            set_shown((text, done))

        async def start() -> None:
            await produce(feed, page, show)

        ft.on_mounted(start)
        value = ft.Text(text, key="value")
        bar = ft.ProgressBar(value=done, key="bar")
        return ft.Column([ft.Text("metric"), value, bar], key="card")

    def main(page: ft.Page) -> None:
        page.render(Card)

    return served(main, max_hz)


APPS = {
    "dashboard": make_app,
    "clicks": make_clicks_app,
    "components": make_components_app,
}


class LoopProbe:
    """How late a short sleep wakes up on the server loop (every lag sample)."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self.recording = False
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(PROBE_INTERVAL)
            if self.recording:
                self.lags_ms.append(
                    (time.monotonic() - started - PROBE_INTERVAL) * 1000
                )


async def native_thread_id() -> int:
    """The OS id of the thread running this coroutine's loop."""
    return threading.get_native_id()


def thread_cpu(native_id: int) -> float:
    """User + system CPU seconds of one thread of this process."""
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    raise LookupError(f"no thread {native_id} in this process")


def lag_buckets() -> list[int]:
    """The cumulative bucket counts of `stats()["loop"]["lag"]`."""
    return list(stats()["loop"]["lag"]["buckets_ms"].values())


def stats_p99(before: list[int], after: list[int], max_ms: float) -> float:
    """p99 (bucket upper bound) of the lag samples recorded between two snapshots."""
    histogram = Histogram()
    histogram.buckets = [b - a for a, b in zip(before, after, strict=True)]
    histogram.count = sum(histogram.buckets)
    histogram.max_ms = max_ms
    return histogram.percentile(99)


# --- simulated users -------------------------------------------------------------


@dataclass
class Tally:
    """What one user received: patch frames and bytes, the ticker's frames,
    and how long each "+1" click took to come back as a patch."""

    client: FletClient
    frames: int = 0
    bytes: int = 0
    ticker_frames: int = 0
    ticker_with_clicks: int = 0  # ticker frames right before a click's patch
    clicks_ms: list[float] = field(default_factory=list)
    unanswered: int = 0
    sent_at: float | None = None  # the click waiting for its patch
    ticker_at: float | None = None  # the last frame's, if it was the ticker's
    ids: dict[str, int | None] = field(init=False)  # key -> mirrored control id

    def __post_init__(self) -> None:
        keys = ("value", "count", "plus")
        self.ids = {key: control_id(self.client, key) for key in keys}

    def take(self) -> None:
        """Count and drop the frames received so far (keeps memory flat)."""
        frames, self.client.frames = self.client.frames, []
        for frame in frames:
            if frame.action != Action.PATCH_CONTROL:
                continue
            self.frames += 1
            self.bytes += frame.size
            target = frame.body.get("id")
            if target == self.ids["count"] and self.sent_at is not None:
                self.answered(frame.at)
            self.ticker_at = frame.at if target == self.ids["value"] else None
            self.ticker_frames += self.ticker_at is not None

    def answered(self, at: float) -> None:
        """The pending click's patch arrived at `at` (monotonic)."""
        assert self.sent_at is not None
        self.clicks_ms.append((at - self.sent_at) * 1000)
        self.sent_at = None
        if self.ticker_at is not None and at - self.ticker_at < SAME_BATCH_S:
            self.ticker_with_clicks += 1  # flushed with the click's answer

    def result(self) -> dict[str, Any]:
        """This user's figures for the JSON result."""
        client = self.client
        return {
            "session": client.session_id,
            "frames": self.frames,
            "bytes": self.bytes,
            "value": client.value("value"),
            "ticker_frames": self.ticker_frames,
            "ticker_with_clicks": self.ticker_with_clicks,
            "clicks_ms": self.clicks_ms,
            "unanswered": self.unanswered,
        }


def control_id(client: FletClient, key: str) -> int | None:
    """The mirrored id (`_i`) of the control with `key`, None if absent."""
    try:
        return int(client.find(key)["_i"])
    except KeyError:
        return None


def shows(client: FletClient, key: str, value: str | None = None) -> Callable[[], bool]:
    """A `wait_for` predicate: the control with `key` is mirrored (and its
    `value` is `value`); KeyError while it is not, which counts as false."""

    def predicate() -> bool:
        control = client.find(key)
        return value is None or control.get("value") == value

    return predicate


async def click_along(tally: Tally, duration: float, rng: random.Random) -> None:
    """Click "+1" about once a second (0.5-1.5 s apart) for `duration` s; time
    each click from sending its CONTROL_EVENT to the patch with the new count."""
    client = tally.client
    deadline = time.monotonic() + duration
    clicks = 0
    while (wait := rng.uniform(*CLICK_GAP_S)) < deadline - time.monotonic():
        await asyncio.sleep(wait)
        clicks += 1
        tally.take()
        tally.sent_at = time.monotonic()
        body = {"target": tally.ids["plus"], "name": "click", "data": None}
        await client.send(Action.CONTROL_EVENT, body)
        try:
            await client.wait_for(shows(client, "count", str(clicks)), CLICK_TIMEOUT_S)
        except TimeoutError:
            tally.unanswered += 1
            tally.sent_at = None
            continue
        except ConnectionError:
            return
        tally.take()
        if tally.sent_at is not None:  # the count came inside a larger patch
            tally.answered(time.monotonic())


async def users_act(tallies: list[Tally], args: argparse.Namespace) -> None:
    """What the users do while the producers run: watch, or also click."""
    if args.scenario != "clicks":
        await asyncio.sleep(args.duration)
        return
    await asyncio.gather(
        *(
            click_along(t, args.duration, random.Random(f"{args.seed}-{i}"))
            for i, t in enumerate(tallies)
        )
    )


async def drive_users(
    url: str,
    args: argparse.Namespace,
    go: Callable[[], Awaitable[None]],
    cpu_clock: Callable[[], float],
) -> dict[str, Any]:
    """Connect the users, `await go()` (starts the producers), let them act,
    then count patch frames and bytes until every mirror shows "done ..." (or
    the timeout); `cpu_clock` measures the users' CPU meanwhile."""
    clients = await connect_many(url, args.sessions)
    for client in clients:  # main's controls come in a patch after the page
        await client.wait_for(shows(client, "value"), timeout=60)
    tallies = [Tally(client) for client in clients]

    async def drain_often() -> None:
        while True:
            await asyncio.sleep(0.5)
            for tally in tallies:
                tally.take()

    try:
        await go()
        started = time.monotonic()
        cpu_started = cpu_clock()
        for client in clients:
            client.frames.clear()
        drainer = asyncio.create_task(drain_often())
        await users_act(tallies, args)

        async def settle(client: FletClient) -> None:
            with contextlib.suppress(TimeoutError, ConnectionError):
                await client.wait_for(
                    lambda: str(client.value("value")).startswith("done"),
                    timeout=args.settle_timeout,
                )

        await asyncio.gather(*(settle(c) for c in clients))
        elapsed = time.monotonic() - started
        drainer.cancel()
        for tally in tallies:
            tally.take()
        return {
            "elapsed": elapsed,
            "cpu": cpu_clock() - cpu_started,
            "users": [tally.result() for tally in tallies],
        }
    finally:
        try:
            await asyncio.wait_for(asyncio.gather(*(c.close() for c in clients)), 10)
        except asyncio.TimeoutError:
            for client in clients:
                with contextlib.suppress(Exception):
                    client.abort()


async def clients_main(url: str, args: argparse.Namespace) -> None:
    """The child side of `--clients`: "ready", wait for "go", print the JSON result."""
    loop = asyncio.get_running_loop()

    async def go() -> None:
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)

    result = await drive_users(url, args, go, time.process_time)
    print(json.dumps(result), flush=True)


class ClientProcess:
    """`bench_coalesce.py --clients URL` in a child process."""

    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.command = [
            sys.executable,
            str(Path(__file__).resolve()),
            *("--clients", url),
            *("--sessions", str(args.sessions)),
            *("--duration", str(args.duration)),
            *("--settle-timeout", str(args.settle_timeout)),
            *("--scenario", args.scenario),
            *("--seed", str(args.seed)),
        ]

    async def run(self, go: Callable[[], Awaitable[None]]) -> dict[str, Any]:
        process = await start_child(self.command)
        assert process.stdin is not None and process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), 120)
            if line.strip() != b"ready":
                raise RuntimeError(f"the client process failed: {line!r}")
            await go()
            process.stdin.write(b"go\n")
            await process.stdin.drain()
            line = await process.stdout.readline()
            if not line:
                raise RuntimeError("the client process died")
            return json.loads(line)
        finally:
            await stop_child(process)


# --- one phase ----------------------------------------------------------------------


@dataclass
class Phase:
    """What one phase measured."""

    mode: str
    sessions: int = 0
    seconds: float = 0.0  # producers' start to every final value mirrored
    updates: int = 0
    frames: int = 0
    bytes: int = 0
    max_session_frames: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    lag_p99_ms: float = math.nan
    lag_max_ms: float = math.nan
    stats_lag_p99_ms: float = math.nan
    final_ok: int = 0
    others_cores: float = 0.0
    clicks_ms: list[float] = field(default_factory=list)  # clicks scenario
    unanswered: int = 0
    ticker_frames: int = 0
    max_ticker_frames: int = 0
    ticker_with_clicks: int = 0


async def run_phase(mode: str, args: argparse.Namespace) -> Phase:
    """One phase: its own server, `args.sessions` users, `args.duration` seconds."""
    phase = Phase(mode, sessions=args.sessions)
    feed = Feed(args.rate, round(args.rate * args.duration))
    max_hz = args.max_hz if mode == "coalesced" else None
    probe = LoopProbe()
    before: dict[str, Any] = {}

    async with FletServer(APPS[args.scenario](feed, max_hz)) as server:
        native_id = await server.call(native_thread_id())

        def start_on_loop() -> None:
            probe.task = asyncio.create_task(probe.run())
            feed.started_at = time.monotonic()
            feed.start.set()
            probe.recording = True

        async def go() -> None:
            # Every session's main has run and its producer waits for the start.
            await wait_until(lambda: feed.producing >= args.sessions, timeout=60)
            await asyncio.sleep(0.5)  # let the connect burst settle
            before["cpu"] = thread_cpu(native_id)
            before["lag"] = lag_buckets()
            before["others"] = CpuMeter()
            server.loop.call_soon_threadsafe(start_on_loop)

        if args.in_process:
            result = await drive_users(server.ws_url, args, go, time.thread_time)
        else:
            result = await ClientProcess(server.ws_url, args).run(go)
        probe.recording = False
        phase.server_cpu = thread_cpu(native_id) - before["cpu"]
        children_cpu = 0.0 if args.in_process else result["cpu"]
        phase.others_cores = before["others"].cores(unseen=children_cpu)[1]
        lag = stats()["loop"]["lag"]
        phase.stats_lag_p99_ms = stats_p99(before["lag"], lag_buckets(), lag["max_ms"])
        if probe.task is not None:
            server.loop.call_soon_threadsafe(probe.task.cancel)

    phase.seconds = result["elapsed"]
    phase.client_cpu = result["cpu"]
    phase.updates = feed.updates
    users = result["users"]
    phase.frames = sum(u["frames"] for u in users)
    phase.bytes = sum(u["bytes"] for u in users)
    phase.max_session_frames = max(u["frames"] for u in users)
    phase.final_ok = sum(
        1
        for u in users
        if u["session"] in feed.finals and feed.finals[u["session"]] == u["value"]
    )
    phase.clicks_ms = [t for u in users for t in u["clicks_ms"]]
    phase.unanswered = sum(u["unanswered"] for u in users)
    phase.ticker_frames = sum(u["ticker_frames"] for u in users)
    phase.max_ticker_frames = max(u["ticker_frames"] for u in users)
    phase.ticker_with_clicks = sum(u["ticker_with_clicks"] for u in users)
    if probe.lags_ms:
        phase.lag_p99_ms = percentile(probe.lags_ms, 99)
        phase.lag_max_ms = max(probe.lags_ms)
    return phase


# --- report -------------------------------------------------------------------------


def num(value: float) -> str:
    """A number for the table: thousands separators, about 3 significant digits."""
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def settings(args: argparse.Namespace) -> str:
    """The report's line on what the run did."""
    where = "this process's main thread" if args.in_process else "a child process"
    if args.scenario == "clicks":
        load = (
            f"each a ticker Text updated {args.rate:g}/s for {args.duration:g} s and "
            f'a user clicking "+1" every {CLICK_GAP_S[0]:g}-{CLICK_GAP_S[1]:g} s '
            "(click->patch: CONTROL_EVENT sent to the patch with the new count)"
        )
    else:
        load = f"producers at {args.rate:g} updates/s each for {args.duration:g} s"
    if args.scenario == "components":
        load += " (an @ft.component's use_state set at each update)"
    return (
        f"- {args.sessions} sessions, {load}; coalesced at max_hz={args.max_hz:g}; "
        f"users in {where}"
    )


TAIL_HEADER = (
    "| client CPU s | loop lag p99 ms (max) | stats lag p99 ms | final values "
    "| other procs, cores |"
)


def tail_cells(p: Phase) -> str:
    """The cells under `TAIL_HEADER`, which both tables end with."""
    return (
        f"{p.client_cpu:.2f} | {num(p.lag_p99_ms)} ({num(p.lag_max_ms)}) | "
        f"{num(p.stats_lag_p99_ms)} | {100 * p.final_ok / p.sessions:.0f} % | "
        f"{p.others_cores:.2f} |"
    )


def dashboard_rows(phases: list[Phase]) -> list[str]:
    """The dashboard table."""
    lines = [
        "| mode | seconds | updates/s | frames/s | frames/s/session (max) "
        "| KB/s received | bytes/update | server CPU s | CPU µs/update " + TAIL_HEADER,
        "|---|" + "---:|" * 13,
    ]
    for p in phases:
        seconds = p.seconds or math.nan
        updates = p.updates or math.nan
        lines.append(
            f"| {p.mode} | {p.seconds:.1f} | {num(p.updates / seconds)} | "
            f"{num(p.frames / seconds)} | {num(p.frames / p.sessions / seconds)} "
            f"({num(p.max_session_frames / seconds)}) | "
            f"{num(p.bytes / 1000 / seconds)} | {num(p.bytes / updates)} | "
            f"{p.server_cpu:.2f} | {num(p.server_cpu * 1e6 / updates)} | "
            + tail_cells(p)
        )
    return lines


def clicks_rows(phases: list[Phase]) -> list[str]:
    """The clicks-beside-a-ticker table."""
    lines = [
        "| mode | seconds | clicks | click->patch p50 ms | p99 ms | max ms "
        "| unanswered | ticker frames/s/session (max) | frames/s | KB/s received "
        "| server CPU s " + TAIL_HEADER,
        "|---|" + "---:|" * 15,
    ]
    for p in phases:
        seconds = p.seconds or math.nan
        clicks = p.clicks_ms
        lines.append(
            f"| {p.mode} | {p.seconds:.1f} | {len(clicks)} | "
            f"{ms(percentile(clicks, 50))} | {ms(percentile(clicks, 99))} | "
            f"{ms(max(clicks, default=math.nan))} | {p.unanswered} | "
            f"{num(p.ticker_frames / p.sessions / seconds)} "
            f"({num(p.max_ticker_frames / seconds)}) | {num(p.frames / seconds)} | "
            f"{num(p.bytes / 1000 / seconds)} | {p.server_cpu:.2f} | " + tail_cells(p)
        )
    return lines


def noise_line(phases: list[Phase]) -> str:
    """Whether other processes used the machine during the phases."""
    noisy = [p.mode for p in phases if p.others_cores > NOISY_CORES]
    if noisy:
        return (
            f"- warning: other processes used more than {NOISY_CORES:g} cores during "
            f"{', '.join(noisy)}"
        )
    return f"- the machine was otherwise idle (other processes < {NOISY_CORES:g} cores)"


def capped(frames: int, seconds: float, args: argparse.Namespace) -> bool:
    """At most max_hz frames a second (one more over the phase for the edges)."""
    return frames / seconds <= args.max_hz + 1 / seconds


def final_goal(fast: Phase) -> dict[str, bool]:
    """Every coalesced session shows the producer's final value."""
    share = 100 * fast.final_ok / fast.sessions
    return {f"final values 100 % ({share:.0f} %)": fast.final_ok == fast.sessions}


def dashboard_goals(
    plain: Phase, fast: Phase, args: argparse.Namespace
) -> dict[str, bool]:
    """The dashboard's goals: frame cap, fewer bytes, less CPU, final values."""
    per_session = fast.max_session_frames / fast.seconds
    bytes_ratio = plain.bytes / max(fast.bytes, 1)
    cpu_ratio = plain.server_cpu / max(fast.server_cpu, 1e-9)

    def per_update(value: float, phase: Phase) -> float:
        return value / max(phase.updates, 1)

    bytes_per_update = per_update(plain.bytes, plain) / max(
        per_update(fast.bytes, fast), 1e-9
    )
    cpu_per_update = per_update(plain.server_cpu, plain) / max(
        per_update(fast.server_cpu, fast), 1e-12
    )
    return {
        f"frames <= {args.max_hz:g}/s/session (max {per_session:.1f})": capped(
            fast.max_session_frames, fast.seconds, args
        ),
        f"bytes >= {GOAL_BYTES:g}x fewer ({bytes_ratio:.1f}x; "
        f"{bytes_per_update:.1f}x per update)": bytes_ratio >= GOAL_BYTES,
        f"server CPU >= {GOAL_CPU:g}x less ({cpu_ratio:.1f}x; "
        f"{cpu_per_update:.1f}x per update)": cpu_ratio >= GOAL_CPU,
        **final_goal(fast),
    }


def clicks_goals(
    plain: Phase, fast: Phase, args: argparse.Namespace
) -> dict[str, bool]:
    """The clicks' goals: click p50 as plain, ticker capped, every click answered."""
    plain_p50 = percentile(plain.clicks_ms, 50)
    fast_p50 = percentile(fast.clicks_ms, 50)
    ticker = fast.max_ticker_frames / fast.seconds
    along = fast.ticker_with_clicks / fast.sessions / fast.seconds
    return {
        f"click->patch p50 within {GOAL_CLICK_MS:g} ms of plain ({ms(fast_p50)} vs "
        f"{ms(plain_p50)} ms)": fast_p50 - plain_p50 <= GOAL_CLICK_MS,
        f"ticker frames <= {args.max_hz:g}/s/session (max {ticker:.1f}; "
        f"{along:.2f}/s/session went out with a click's patch)": capped(
            fast.max_ticker_frames, fast.seconds, args
        ),
        f"every click answered ({fast.unanswered} not)": fast.unanswered == 0,
        **final_goal(fast),
    }


TABLES = {
    "dashboard": dashboard_rows,
    "clicks": clicks_rows,
    "components": dashboard_rows,
}
GOALS = {
    "dashboard": dashboard_goals,
    "clicks": clicks_goals,
    "components": dashboard_goals,
}


def report(phases: list[Phase], args: argparse.Namespace, command: str) -> str:
    """The markdown report: settings, table, ratios, goals."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# bench_coalesce: {args.scenario}",
        "",
        f"- date: {now}",
        f"- machine: {machine()}",
        f"- command: `{command}`",
        settings(args),
        "- rates are over each phase's seconds (producers' start until every final "
        "value was mirrored); CPU is the server thread's",
        "",
        *TABLES[args.scenario](phases),
        "",
        noise_line(phases),
    ]
    by_mode = {p.mode: p for p in phases}
    if set(MODES) <= by_mode.keys():
        goals = GOALS[args.scenario](by_mode["plain"], by_mode["coalesced"], args)
        for goal, met in goals.items():
            lines.append(f"- {goal}: {'met' if met else 'NOT met'}")
        lines.append(f"- goal met: {'yes' if all(goals.values()) else 'no'}")
    return "\n".join(lines) + "\n"


# --- entry point --------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (sizes default by scenario, or to `SMOKE`'s)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="dashboard",
        help="dashboard: a 200 Hz card; clicks: clicks beside a 50 Hz ticker; "
        "components: the 200 Hz card as a component (use_state)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a quick check with tiny sizes (overrides --sessions and --duration)",
    )
    parser.add_argument("--sessions", type=int, help="simulated users")
    parser.add_argument("--rate", type=float, help="updates/s per session")
    parser.add_argument("--duration", type=float, help="seconds the producers run")
    parser.add_argument(
        "--max-hz", type=float, default=20.0, help="coalesce_updates(max_hz=...)"
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated: plain,coalesced"
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=600.0,
        help="longest wait for the final values after the producers stop",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the users on this process's main thread (shares the GIL)",
    )
    parser.add_argument("--seed", type=int, default=1, help="the clicks' schedule")
    parser.add_argument("--clients", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument(
        "--output",
        "--out",
        type=Path,
        help="report file (default benchmarks/results/coalesce.md, or "
        "coalesce_clicks.md, coalesce_components.md; gitignored)",
    )
    args = parser.parse_args(argv)
    args.modes = choices(parser, "--modes", args.modes, MODES)
    if args.smoke:
        vars(args).update(SMOKE[args.scenario])
    for name, value in DEFAULTS[args.scenario].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.sessions < 1 or args.rate <= 0 or args.duration <= 0 or args.max_hz <= 0:
        parser.error("--sessions, --rate, --duration and --max-hz must be > 0")
    args.output = args.output or RESULTS_DIR / REPORTS[args.scenario]
    return args


async def run(args: argparse.Namespace) -> list[Phase]:
    """Every requested phase, one after the other."""
    return await each_phase(
        args.modes,
        run_phase,
        args,
        f"{args.sessions} sessions x {args.rate:g}/s, {args.duration:g} s",
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the report and save it."""
    args = parse_args(argv)
    if args.clients:
        asyncio.run(clients_main(args.clients, args))
        return
    # Plain Flet stalls the loop on purpose; the watchdog would log every stall.
    logging.getLogger("flet_resilient.watchdog").setLevel(logging.ERROR)
    logging.getLogger("flet_resilient.drain").setLevel(logging.ERROR)
    bench_main(args, run, report, args.output)


if __name__ == "__main__":
    main()
