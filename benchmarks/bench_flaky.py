"""Phones on flaky networks: half-open drops and quick reconnects, plain Flet vs
`@buffer_reconnects()`.

Run from the repository root (about 1.5 minutes per phase with the defaults):

    python benchmarks/bench_flaky.py                           # 200 clients, 60 s
    python benchmarks/bench_flaky.py --clients 10 --duration 10  # quick smoke run

Two phases, `plain` and `buffered`, each with its own server (a child process,
`--serve MODE`, uvicorn with its default WebSocket pings: 20 s interval, 20 s
timeout) and the same random schedule. Every simulated user
(`flet_resilient.testing.FletClient`, Flet's real protocol) connects through
its own link of a loopback fault proxy in this process and loops:

1. connected for 2-8 s, clicking "+" every 0.5-1.5 s (each click confirmed);
2. its link goes half-open for 1-10 s: bytes are swallowed both ways, nothing
   closes, so the server keeps sending into the void. Early in the drop the
   server bumps a "pushes" Text and calls `await field.focus()` (an
   `invoke_method`) on that user's session;
3. it reconnects through a new link with its old session id and times "link
   restored" -> consistent mirror: counter and pushes equal what the server
   holds for the session it got, and (session kept) the focus call received.

Reported per phase: sessions lost (the reconnect got a new session id, main()
ran again), one-shot messages lost (focus calls that never completed, timed
out or failed), time to consistent p50/p99. Goal: with `buffer_reconnects`,
0 sessions lost, 0 messages lost, p99 < 250 ms. The markdown table goes to
stdout and to `benchmarks/results/flaky.md` (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import flet as ft
from children import ChildServer
from harness import RESULTS_DIR, bench_main, choices, each_phase, ms, report_header

from flet_resilient.loadtest.meter import CpuMeter
from flet_resilient.measure import percentile, reply, serve_child
from flet_resilient.testing import FaultProxy, FletClient

MODES = ("plain", "buffered")
GOAL_P99_MS = 250.0
NOISY_CORES = 0.2  # other processes' CPU use that makes a phase's numbers suspect
CONNECTED_S = (2.0, 8.0)  # how long a link stays up
DROP_S = (1.0, 10.0)  # how long a link stays half-open
CLICK_GAP_S = (0.5, 1.5)  # pause between two clicks
INVOKE_BOUND_S = 45.0  # server side: a focus call still waiting then is lost
STEP_TIMEOUT_S = 30.0  # client side: longest wait for one click / reconnect
GRACE_S = 10.0  # after the last user: how long late focus answers may arrive


# --- the server (child process) ---------------------------------------------------


@dataclass
class UserSession:
    """Server-side controls of one session."""

    page: ft.Page
    count: ft.Text
    pushes: ft.Text
    field: ft.TextField


class BenchApp:
    """A counter page; sessions are findable by id for the control channel."""

    def __init__(self, buffered: bool, window: float) -> None:
        self.sessions: dict[str, UserSession] = {}
        self.main_runs = 0
        if buffered:
            from flet_resilient import buffer_reconnects

            self.main: Callable[[ft.Page], None] = buffer_reconnects(window=window)(
                self._main
            )
        else:
            self.main = self._main

    def _main(self, page: ft.Page) -> None:
        self.main_runs += 1
        count = ft.Text("0", key="count")
        pushes = ft.Text("0", key="pushes")
        field = ft.TextField(key="field")

        def increment(e: ft.Event) -> None:
            count.value = str(int(count.value) + 1)

        page.add(count, pushes, field, ft.Button("+", key="inc", on_click=increment))
        self.sessions[page.session.id] = UserSession(page, count, pushes, field)


class ControlChannel:
    """The child's command loop: one line per request on stdin, replies on stdout.

    `push T SID` -> `issued T <pushes>` then `done T ok|timeout|error|unknown`;
    `state T SID` -> `state T <count> <pushes>`; `stats T` -> `stats T k=v ...`.
    """

    def __init__(self, app: BenchApp) -> None:
        self.app = app
        self.tasks: set[asyncio.Task[None]] = set()

    def handle(self, words: list[str]) -> None:
        command, token, *rest = words
        if command == "push":
            task = asyncio.ensure_future(self.push(token, rest[0]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif command == "state":
            user = self.app.sessions.get(rest[0])
            if user is None:
                reply("state", token, "-", "-")
            else:
                reply("state", token, user.count.value, user.pushes.value)
        elif command == "stats":
            from flet_resilient import stats

            counters = stats()["counters"]
            names = ("takeovers", "replayed", "expired", "dropped", "overflows")
            values = {n: counters.get(f"reconnect.{n}", 0) for n in names}
            values["main_runs"] = self.app.main_runs
            loop = stats()["loop"]
            values["loop_lag_p99_ms"] = round(loop["lag"]["p99_ms"])
            values["loop_lag_max_ms"] = round(loop["lag"]["max_ms"])
            reply("stats", token, *(f"{k}={v}" for k, v in values.items()))

    async def push(self, token: str, session_id: str) -> None:
        """Bump the pushes Text and focus the field, as a server-side task would."""
        user = self.app.sessions.get(session_id)
        if user is None:
            reply("issued", token, "-")
            reply("done", token, "unknown")
            return
        user.pushes.value = str(int(user.pushes.value) + 1)
        user.pushes.update()  # into the half-open socket
        focus = asyncio.ensure_future(user.field.focus())
        await asyncio.sleep(0)  # the invoke_method request is sent now
        reply("issued", token, user.pushes.value)
        try:
            await asyncio.wait_for(focus, INVOKE_BOUND_S)
            outcome = "ok"
        except TimeoutError:
            outcome = "timeout"
        except Exception:
            outcome = "error"
        reply("done", token, outcome)


async def serve(mode: str, window: float) -> None:
    """The child side of `ServerProcess`: serve and obey stdin until it closes.

    uvicorn keeps its default pings (20 s + 20 s) as in production: that is
    how long plain Flet needs to notice a half-open socket.
    """
    import flet_web.fastapi as flet_fastapi

    app = BenchApp(mode == "buffered", window)
    await serve_child(flet_fastapi.app(app.main), ControlChannel(app).handle)


class ServerProcess(ChildServer):
    """The app served by `bench_flaky.py --serve MODE`, with its control channel."""

    def __init__(self, mode: str, window: float) -> None:
        super().__init__(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                *("--serve", mode),
                *("--window", str(window)),
            ]
        )

    def push(self, session_id: str) -> tuple[asyncio.Future[list[str]], ...]:
        """Ask for a pushes bump + focus call: (issued, done) reply futures."""
        return self.send("push", session_id, replies=("issued", "done"))


# --- simulated users ------------------------------------------------------------------


@dataclass
class Phase:
    """What one phase measured."""

    mode: str
    drops: int = 0
    sessions_lost: int = 0
    clicks_lost: int = 0  # counter values held by sessions that were lost
    consistent_ms: list[float] = field(default_factory=list)
    connect_ms: list[float] = field(default_factory=list)  # until the page arrived
    reconnect_failures: int = 0
    click_failures: int = 0
    invokes: list[asyncio.Future[list[str]]] = field(default_factory=list)
    invoke_outcomes: dict[str, int] = field(default_factory=dict)
    mismatches: int = 0
    server: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    complete: bool = True
    own_cores: float = 0.0
    other_cores: float = 0.0

    @property
    def invokes_lost(self) -> int:
        return sum(n for k, n in self.invoke_outcomes.items() if k != "ok")


@dataclass
class User:
    """One simulated phone and what its session should show."""

    client: FletClient
    rng: random.Random
    count: int = 0
    pushes: int = 0

    def consistent(self, invoked: bool) -> bool:
        """The mirror shows the expected state (and the focus call arrived)."""
        return (
            self.client.value("count") == str(self.count)
            and self.client.value("pushes") == str(self.pushes)
            and (not invoked or bool(self.client.invocations))
        )


async def click(user: User) -> None:
    """Click "+" and wait for the mirror to show the new count."""
    user.count += 1
    await user.client.click("inc")
    await user.client.wait_for(
        lambda: user.client.value("count") == str(user.count), STEP_TIMEOUT_S
    )


async def drop_and_reconnect(
    user: User, server: ServerProcess, proxy: FaultProxy, phase: Phase
) -> None:
    """Half-open the user's link for a while, then reconnect and time it."""
    old = user.client
    drop = user.rng.uniform(*DROP_S)
    push_at = user.rng.uniform(0, drop / 2)
    proxy.blackhole(old)
    phase.drops += 1
    dropped_at = time.perf_counter()
    await asyncio.sleep(push_at)
    issued, done = server.push(old.session_id or "")
    phase.invokes.append(done)
    reply = await asyncio.wait_for(issued, STEP_TIMEOUT_S)
    if reply[0] != "-":
        user.pushes = int(reply[0])
    await asyncio.sleep(max(0.0, dropped_at + drop - time.perf_counter()))
    old.abort()  # the phone has moved on; the server side stays half-open

    started = time.perf_counter()  # link restored
    new = FletClient(proxy.ws_url, session_id=old.session_id)
    try:
        await asyncio.wait_for(new.connect(), STEP_TIMEOUT_S)
        phase.connect_ms.append((time.perf_counter() - started) * 1000)
        kept = new.session_id == old.session_id
        if not kept:
            phase.sessions_lost += 1
            phase.clicks_lost += user.count
            user.count = user.pushes = 0
        user.client = new
        await new.wait_for(lambda: user.consistent(invoked=kept), STEP_TIMEOUT_S)
    except (TimeoutError, ConnectionError, OSError):
        phase.reconnect_failures += 1  # counted at the timeout: a lower bound
        user.client = new
    phase.consistent_ms.append((time.perf_counter() - started) * 1000)


async def run_user(
    user: User,
    server: ServerProcess,
    proxy: FaultProxy,
    deadline: float,
    phase: Phase,
) -> None:
    """Connected-then-dropped cycles until `deadline`."""
    while time.perf_counter() < deadline:
        up_until = time.perf_counter() + user.rng.uniform(*CONNECTED_S)
        while True:
            gap = user.rng.uniform(*CLICK_GAP_S)
            if time.perf_counter() + gap >= min(up_until, deadline):
                break
            await asyncio.sleep(gap)
            try:
                await click(user)
            except (TimeoutError, ConnectionError, OSError):
                phase.click_failures += 1
                return  # this user's session no longer answers: it stops
        await asyncio.sleep(max(0.0, min(up_until, deadline) - time.perf_counter()))
        if time.perf_counter() >= deadline:
            return
        await drop_and_reconnect(user, server, proxy, phase)
        if user.client.ws is None or user.client.closed.is_set():
            return  # could not get back in: this user stops


async def connect_all(
    url: str, rngs: list[random.Random], batch: int = 20
) -> list[User]:
    """Connect one user per rng, `batch` at a time."""
    users: list[User] = []
    for start in range(0, len(rngs), batch):
        chunk = rngs[start : start + batch]
        clients = await asyncio.gather(*(FletClient(url).connect() for _ in chunk))
        users += [User(c, r) for c, r in zip(clients, chunk, strict=True)]
    return users


async def close_all(users: list[User]) -> None:
    """Abort every user's socket (a clean close into a dead link would wait)."""
    for user in users:
        with contextlib.suppress(Exception):
            if user.client.ws is not None:
                user.client.abort()


async def verify(users: list[User], server: ServerProcess, phase: Phase) -> None:
    """Compare every live mirror with the server's state of its session."""
    for user in users:
        client = user.client
        if client.ws is None or client.closed.is_set():
            continue
        count, pushes = await server.request("state", client.session_id or "")
        if (client.value("count"), client.value("pushes")) != (count, pushes):
            phase.mismatches += 1


async def run_phase(mode: str, args: argparse.Namespace) -> Phase:
    """One phase: its own server and proxy, `args.clients` users."""
    phase = Phase(mode)
    rngs = [random.Random(f"{args.seed}-{i}") for i in range(args.clients)]
    async with (
        ServerProcess(mode, args.window) as server,
        FaultProxy(server.port) as proxy,
    ):
        users = await connect_all(proxy.ws_url, rngs)
        try:
            await asyncio.gather(*(click(u) for u in users))  # warm-up
            meter = CpuMeter()
            started = time.perf_counter()
            deadline = started + args.duration
            bound = args.duration + DROP_S[1] + 3 * STEP_TIMEOUT_S
            try:
                await asyncio.wait_for(
                    asyncio.gather(
                        *(run_user(u, server, proxy, deadline, phase) for u in users)
                    ),
                    bound,
                )
            except asyncio.TimeoutError:
                phase.complete = False
            phase.seconds = time.perf_counter() - started
            phase.own_cores, phase.other_cores = meter.cores()
            # Late focus answers: give them GRACE_S, then count the rest lost.
            if phase.invokes:
                await asyncio.wait(phase.invokes, timeout=GRACE_S)
            for done in phase.invokes:
                outcome = done.result()[0] if done.done() else "never"
                phase.invoke_outcomes[outcome] = (
                    phase.invoke_outcomes.get(outcome, 0) + 1
                )
            await verify(users, server, phase)
            stats = await server.request("stats")
            phase.server = {k: int(v) for k, v in (w.split("=") for w in stats)}
        finally:
            await close_all(users)
    return phase


# --- report -------------------------------------------------------------------------


def goal_met(phase: Phase) -> bool:
    """0 sessions lost, 0 one-shot messages lost, p99 under the goal."""
    return (
        phase.sessions_lost == 0
        and phase.invokes_lost == 0
        and phase.reconnect_failures == 0
        and phase.click_failures == 0
        and percentile(phase.consistent_ms, 99) < GOAL_P99_MS
    )


def report(phases: list[Phase], args: argparse.Namespace, command: str) -> str:
    """The markdown report: settings, table, goal."""
    lines = [
        *report_header("bench_flaky", command, Path(__file__).resolve().parent),
        f"- {args.clients} clients, {args.duration:g} s per phase, each: connected "
        f"{CONNECTED_S[0]:g}-{CONNECTED_S[1]:g} s (a click every "
        f"{CLICK_GAP_S[0]:g}-{CLICK_GAP_S[1]:g} s), then half-open "
        f"{DROP_S[0]:g}-{DROP_S[1]:g} s with one server push + focus() call, then "
        f"reconnect with its session id; buffered window {args.window:g} s",
        "",
        "| mode | drops | sessions lost | main() runs | clicks lost with them "
        "| one-shot sent | one-shot lost | consistent p50 ms | p99 ms | max ms "
        "| reconnect failures | mirror mismatches | CPU cores: bench / others |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in phases:
        values = phase.consistent_ms
        note = "" if phase.complete else " (cut off)"
        lines.append(
            f"| {phase.mode}{note} | {phase.drops} | {phase.sessions_lost} | "
            f"{phase.server.get('main_runs', '?')} | {phase.clicks_lost} | "
            f"{len(phase.invokes)} | {phase.invokes_lost} | "
            f"{ms(percentile(values, 50))} | {ms(percentile(values, 99))} | "
            f"{ms(max(values, default=math.nan))} | {phase.reconnect_failures} | "
            f"{phase.mismatches} | {phase.own_cores:.2f} / {phase.other_cores:.2f} |"
        )
    lines.append("")
    for phase in phases:
        outcomes = ", ".join(
            f"{k} {v}" for k, v in sorted(phase.invoke_outcomes.items())
        )
        server = ", ".join(f"{k} {v}" for k, v in phase.server.items())
        lines.append(
            f"- {phase.mode}: focus calls: {outcomes or 'none'}; clicks that timed "
            f"out: {phase.click_failures}; page received after p50 "
            f"{ms(percentile(phase.connect_ms, 50))} / p99 "
            f"{ms(percentile(phase.connect_ms, 99))} ms; server: {server}"
        )
    busy = [p.mode for p in phases if p.other_cores > NOISY_CORES]
    if busy:
        lines.append(
            f"- warning: other processes used more than {NOISY_CORES:g} cores during "
            f"{', '.join(busy)}; those times include CPU contention from them"
        )
    for phase in phases:
        if phase.mode == "buffered" and not phase.drops:
            lines.append("- goal: not measured (no drops; raise --duration)")
        elif phase.mode == "buffered":
            lines.append(
                f"- goal (buffered: 0 sessions lost, 0 one-shot lost, p99 < "
                f"{GOAL_P99_MS:g} ms): {'met' if goal_met(phase) else 'NOT met'}"
            )
    return "\n".join(lines) + "\n"


# --- entry point --------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="simulated users")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of drop cycles per phase"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--window", type=float, default=30.0, help="buffer_reconnects window, s"
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated phases to run, of plain,buffered",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR / "flaky.md",
        help="report file (default: benchmarks/results/flaky.md)",
    )
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.modes = choices(parser, "--modes", args.modes, MODES)
    if not 1 <= args.clients <= 1000 or not 0 < args.duration <= 600:
        parser.error("need 1 <= --clients <= 1000 and 0 < --duration <= 600")
    return args


async def run(args: argparse.Namespace) -> list[Phase]:
    """Every requested phase, one after the other."""
    return await each_phase(
        args.modes, run_phase, args, f"{args.clients} clients, {args.duration:g} s"
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the report and save it."""
    args = parse_args(argv)
    if args.serve:
        logging.getLogger("flet_resilient").setLevel(logging.ERROR)
    bench_main(args, run, report, args.output, serve=lambda a: serve(a.serve, a.window))


if __name__ == "__main__":
    main()
