"""Frames, bytes and server CPU of a 200 Hz dashboard: plain Flet vs `coalesce_updates`.

Run from the repository root (about a minute with the defaults):

    python benchmarks/bench_coalesce.py                     # 100 sessions, 200/s, 10 s
    python benchmarks/bench_coalesce.py --sessions 10 --duration 2   # smoke run

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

The users run in a child process (`--clients`), so decoding 20,000 frames a
second does not take the server's GIL; `--in-process` runs them on this
process's main thread instead (they then slow the server down). The markdown
table goes to stdout and to `benchmarks/results/coalesce.md` (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import PIPE
from typing import Any

import flet as ft
import psutil

from flet_resilient import coalesce_updates, stats
from flet_resilient.measure import (
    command_line,
    connect_many,
    machine,
    percentile,
    save_report,
)
from flet_resilient.metrics import Histogram
from flet_resilient.testing import Action, FletClient, FletServer, wait_until

MODES = ("plain", "coalesced")
RESULTS = Path(__file__).resolve().parent / "results" / "coalesce.md"
GOAL_BYTES = 10.0  # coalesced sends at least 10x fewer bytes
GOAL_CPU = 5.0  # ... and uses at least 5x less server CPU
NOISY_CORES = 0.2  # other processes' CPU use that makes a phase's numbers suspect
PROBE_INTERVAL = 0.01


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


def make_app(feed: Feed, max_hz: float | None) -> Callable[[ft.Page], Any]:
    """A card with a Text and a ProgressBar, fed by a per-session producer."""

    async def main(page: ft.Page) -> None:
        value = ft.Text("0", key="value")
        bar = ft.ProgressBar(value=0, key="bar")
        card = ft.Column([ft.Text("metric"), value, bar], key="card")
        page.add(card)

        async def produce() -> None:
            feed.producing += 1
            try:
                await feed.start.wait()
                started = feed.started_at
                for tick in range(1, feed.ticks + 1):
                    if page.session.connection is None:
                        return
                    value.value = str(tick)
                    bar.value = (tick % 100) / 100
                    card.update()
                    feed.updates += 1
                    # Absolute schedule; a late producer runs its next tick at once.
                    await asyncio.sleep(
                        max(0.0, started + tick / feed.rate - time.monotonic())
                    )
                value.value = f"done {feed.ticks}"
                bar.value = 1
                card.update()
                feed.finals[page.session.id] = value.value
            finally:
                feed.producing -= 1

        page.run_task(produce)

    return main if max_hz is None else coalesce_updates(max_hz=max_hz)(main)


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


class OthersMeter:
    """CPU used by every other process on the machine, in cores."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.started = time.perf_counter()
        self.own = self._own()
        self.busy = self._busy()

    def _own(self) -> float:
        times = self.me.cpu_times()
        return times.user + times.system

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def cores(self, children_cpu: float = 0.0) -> float:
        """Others' CPU since the start, in cores; `children_cpu`: CPU seconds our
        child processes used meanwhile (they are ours, not others')."""
        wall = time.perf_counter() - self.started
        own = self._own() - self.own + children_cpu
        return max(0.0, self._busy() - self.busy - own) / wall


# --- simulated users -------------------------------------------------------------


async def drive_users(
    url: str,
    args: argparse.Namespace,
    go: Callable[[], Awaitable[None]],
    cpu_clock: Callable[[], float],
) -> dict[str, Any]:
    """Connect the users, `await go()` (starts the producers), then count patch
    frames and bytes until every mirror shows "done ..." (or the timeout);
    `cpu_clock` measures the users' CPU meanwhile."""
    clients = await connect_many(url, args.sessions)
    counts = [[0, 0] for _ in clients]  # frames, bytes per user

    def drain() -> None:
        # Count and drop the frames received so far (keeps memory flat).
        for client, tally in zip(clients, counts, strict=True):
            frames, client.frames = client.frames, []
            for frame in frames:
                if frame.action == Action.PATCH_CONTROL:
                    tally[0] += 1
                    tally[1] += frame.size

    async def drain_often() -> None:
        while True:
            await asyncio.sleep(0.5)
            drain()

    try:
        await go()
        started = time.monotonic()
        cpu_started = cpu_clock()
        for client in clients:
            client.frames.clear()
        drainer = asyncio.create_task(drain_often())
        await asyncio.sleep(args.duration)

        async def settle(client: FletClient) -> None:
            with contextlib.suppress(TimeoutError, ConnectionError):
                await client.wait_for(
                    lambda: str(client.value("value")).startswith("done"),
                    timeout=args.settle_timeout,
                )

        await asyncio.gather(*(settle(c) for c in clients))
        elapsed = time.monotonic() - started
        drainer.cancel()
        drain()
        return {
            "elapsed": elapsed,
            "cpu": cpu_clock() - cpu_started,
            "users": [
                {
                    "session": c.session_id,
                    "frames": tally[0],
                    "bytes": tally[1],
                    "value": c.value("value"),
                }
                for c, tally in zip(clients, counts, strict=True)
            ],
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
        ]

    async def run(self, go: Callable[[], Awaitable[None]]) -> dict[str, Any]:
        process = await asyncio.create_subprocess_exec(
            *self.command, stdin=PIPE, stdout=PIPE
        )
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
            with contextlib.suppress(ProcessLookupError):
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()


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


async def run_phase(mode: str, args: argparse.Namespace) -> Phase:
    """One phase: its own server, `args.sessions` users, `args.duration` seconds."""
    phase = Phase(mode, sessions=args.sessions)
    feed = Feed(args.rate, round(args.rate * args.duration))
    max_hz = args.max_hz if mode == "coalesced" else None
    probe = LoopProbe()
    before: dict[str, Any] = {}

    async with FletServer(make_app(feed, max_hz)) as server:
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
            before["others"] = OthersMeter()
            server.loop.call_soon_threadsafe(start_on_loop)

        if args.in_process:
            result = await drive_users(server.ws_url, args, go, time.thread_time)
        else:
            result = await ClientProcess(server.ws_url, args).run(go)
        probe.recording = False
        phase.server_cpu = thread_cpu(native_id) - before["cpu"]
        children_cpu = 0.0 if args.in_process else result["cpu"]
        phase.others_cores = before["others"].cores(children_cpu)
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


def report(phases: list[Phase], args: argparse.Namespace, command: str) -> str:
    """The markdown report: settings, table, ratios, goals."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = "this process's main thread" if args.in_process else "a child process"
    lines = [
        "# bench_coalesce",
        "",
        f"- date: {now}",
        f"- machine: {machine()}",
        f"- command: `{command}`",
        f"- {args.sessions} sessions, producers at {args.rate:g} updates/s each for "
        f"{args.duration:g} s, coalesced at max_hz={args.max_hz:g}; users in {where}",
        "- rates are over each phase's seconds (producers' start until every final "
        "value was mirrored); CPU is the server thread's",
        "",
        "| mode | seconds | updates/s | frames/s | frames/s/session (max) "
        "| KB/s received | bytes/update | server CPU s | CPU µs/update "
        "| client CPU s | loop lag p99 ms (max) | stats lag p99 ms | final values "
        "| other procs, cores |",
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
            f"{p.client_cpu:.2f} | {num(p.lag_p99_ms)} ({num(p.lag_max_ms)}) | "
            f"{num(p.stats_lag_p99_ms)} | "
            f"{100 * p.final_ok / p.sessions:.0f} % | {p.others_cores:.2f} |"
        )
    lines.append("")
    by_mode = {p.mode: p for p in phases}
    noisy = [p.mode for p in phases if p.others_cores > NOISY_CORES]
    if noisy:
        lines.append(
            f"- warning: other processes used more than {NOISY_CORES:g} cores during "
            f"{', '.join(noisy)}"
        )
    else:
        lines.append(
            "- the machine was otherwise idle (other processes < "
            f"{NOISY_CORES:g} cores)"
        )
    if set(MODES) <= by_mode.keys():
        plain, fast = by_mode["plain"], by_mode["coalesced"]
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
        goals = {
            f"frames <= {args.max_hz:g}/s/session (max {per_session:.1f})": (
                per_session <= args.max_hz + 1 / fast.seconds
            ),
            f"bytes >= {GOAL_BYTES:g}x fewer ({bytes_ratio:.1f}x; "
            f"{bytes_per_update:.1f}x per update)": bytes_ratio >= GOAL_BYTES,
            f"server CPU >= {GOAL_CPU:g}x less ({cpu_ratio:.1f}x; "
            f"{cpu_per_update:.1f}x per update)": cpu_ratio >= GOAL_CPU,
            f"final values 100 % ({100 * fast.final_ok / fast.sessions:.0f} %)": (
                fast.final_ok == fast.sessions
            ),
        }
        for goal, met in goals.items():
            lines.append(f"- {goal}: {'met' if met else 'NOT met'}")
        lines.append(f"- goal met: {'yes' if all(goals.values()) else 'no'}")
    return "\n".join(lines) + "\n"


# --- entry point --------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100, help="simulated users")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="updates/s per session"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds the producers run"
    )
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
    parser.add_argument("--clients", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help=f"report file (default {RESULTS})"
    )
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes must list some of {', '.join(MODES)}")
    if args.sessions < 1 or args.rate <= 0 or args.duration <= 0 or args.max_hz <= 0:
        parser.error("--sessions, --rate, --duration and --max-hz must be > 0")
    args.modes = [m for m in MODES if m in modes]
    return args


async def run(args: argparse.Namespace) -> list[Phase]:
    """Every requested phase, one after the other."""
    phases = []
    for mode in args.modes:
        print(
            f"phase {mode}: {args.sessions} sessions x {args.rate:g}/s, "
            f"{args.duration:g} s ...",
            file=sys.stderr,
            flush=True,
        )
        phases.append(await run_phase(mode, args))
    return phases


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the report and save it."""
    args = parse_args(argv)
    if args.clients:
        asyncio.run(clients_main(args.clients, args))
        return
    # Plain Flet stalls the loop on purpose; the watchdog would log every stall.
    logging.getLogger("flet_resilient.watchdog").setLevel(logging.ERROR)
    phases = asyncio.run(run(args))
    save_report(report(phases, args, command_line()), args.output)


if __name__ == "__main__":
    main()
