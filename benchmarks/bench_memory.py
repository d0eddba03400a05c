"""Server memory with many idle sessions: plain Flet vs `@evict_idle`, and recycling.

Run from the repository root (`pip install -e .[bench,plot]`; about 13 minutes
with the defaults on 2 cores, about a minute for the smoke run):

    python benchmarks/bench_memory.py                 # 500 sessions x 1000 controls
    python benchmarks/bench_memory.py --smoke         # evict and recycle, tiny
    python benchmarks/bench_memory.py --replot benchmarks/results/memory.json

Four phases, `plain` (plain Flet), `evict` (the same app under
`@evict_idle(idle_ttl=--idle-ttl, disconnected_ttl=--disconnected-ttl,
state=...)` with the default disk store), `evict-malloc` (the same, its
server started with PYTHONMALLOC=malloc) and `recycle` (below). The first
three have their own server in a child process (`--serve MODE`, uvicorn on
127.0.0.1), so that its RSS, sampled every 0.5 s with psutil, is the
server's alone. The simulated users (`flet_resilient.testing.FletClient`,
Flet's real WebSocket protocol) run in this process:

1. baseline: the server's RSS after it started, before any user (cold: code
   that the first visit imports lazily is not in it);
2. connect: `--sessions` users, `--batch` at a time; each gets a page of
   `--controls` Text controls, types its name and clicks "save", which stores
   state (name, save count, a few notes) and shows it in a "state" Text;
3. idle: `--active` users keep clicking "save" every idle_ttl / 3 seconds,
   `--closed-share` of the others close their socket (the tab is gone: plain
   Flet keeps such a session for FLET_SESSION_TIMEOUT, 3600 s), the rest leave
   the tab open and idle (plain Flet keeps those forever). The phase waits
   max(idle_ttl, disconnected_ttl) + `--settle` (5) s, then reads the RSS and
   what the server sees (Flet's sessions; with evict, `stats()["evict"]`);
4. reclaim: the server runs `gc.collect()` and glibc's `malloc_trim(0)` (the
   library does neither), to show how much of the RSS left is garbage not yet
   collected or freed memory the allocator kept; it reports live objects and
   pymalloc's live / held bytes before and after;
5. return: `--returning` of the idle or closed users come back one after the
   other, as a reloaded tab of the same browser (a new client with the old
   one's session id and client storage; plain: the old socket closes first).
   Each times connect -> its saved state visible in the mirror. Then `--fresh`
   first-time visitors, the cost of building a page, for comparison.

`recycle` (issue "Worker recycling"): the evict app, also given
`recycle_idle_rss` (`--recycle-idle-rss` MiB, the default limit: 64, smoke
1: leave once that much memory is reclaimable after the idle evictions),
and/or `recycle_rss` (`--recycle-rss` MiB) or `recycle_after`
(`--recycle-after`), served by gunicorn with `--workers` (1) uvicorn workers
(`flet_resilient.cluster.Worker`). A worker over its limit drains (saves
every session's state, closes the sockets with 1012) and exits; gunicorn
starts a fresh one. The same steps without 4 (no control channel into
gunicorn's workers); the idle step waits longer, for the evictions to pause
and a check (`EVICTIONS_QUIET_S` + `RSS_CHECK_S`) and for each worker's turn
(`RECYCLE_SPACING_S`). The RSS is the sum of the
worker processes' (the master's is reported apart), the baseline that of the
fresh workers, so the goal reads: fleet RSS after idle within 10 % of fresh
workers + the active sessions. A client whose socket a drain closes while
it is active, or while it connects and saves, comes back like the Flutter
client (same session id and storage, first try after 500 ms, the wait
doubling, 30 s at most) and is counted as restored if its page shows its
state; every connect retries the same way (a worker may be booting).
Reported besides: worker exits and in which step, the workers' drain,
recycling and deferral log lines, clients back after a drain and their
close -> state on screen times.

The server socket is bound with proto IPPROTO_TCP, as `uvicorn.run(host=,
port=)` does, so that asyncio sets TCP_NODELAY (see
`flet_resilient.testing.loopback_socket`; gunicorn sets it on its own).

Goal: with evict (and recycle), RSS after idle within 10 % of baseline + the
active sessions' share, rehydrate p99 < 100 ms, 100 % of states restored
(recycle: also after the drains). The report goes to stdout and
`benchmarks/results/memory.md`, the samples to `memory.json` and the plot
(matplotlib, optional) to `memory_rss.png`, all in `benchmarks/results/`
(gitignored); `--out FILE` puts the report there and the other two beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import logging
import math
import os
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from children import ChildServer
from clients import RETRYABLE, connect_retrying, same_browser
from harness import command_line, save_report

from flet_resilient.measure import reply, serve_child
from flet_resilient.memory import malloc_trim

# The plain phase's server (this file, `--serve plain`) must be plain Flet: it
# runs with FLET_RESILIENT_DISABLE=1, so importing flet_resilient patches nothing.
if TYPE_CHECKING:
    import flet as ft

    from flet_resilient.testing import FletClient

MODES = ("plain", "evict", "evict-malloc", "recycle")
SERVED = MODES[:3]  # phases served by `--serve MODE` (recycle: gunicorn)
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SAMPLE_S = 0.5  # RSS sampling interval
GOAL_RSS = 0.10  # RSS after idle within 10 % of baseline + active sessions
GOAL_P99_MS = 100.0
NOISY_CORES = 0.2  # other processes' CPU use that makes a phase's numbers suspect
NOTES = 5  # notes per user's state
DRAIN_CLOSE_CODE = 1012  # a drained worker's close: the client reconnects
DRAIN_RETRIES = 3  # saves redone after drains before a user gives up
MiB = 1024 * 1024
SMOKE: dict[str, float] = {  # --smoke: a quick check (about a minute)
    "sessions": 12,
    "controls": 100,
    "idle_ttl": 2.0,
    "disconnected_ttl": 1.0,
    "active": 2,
    "returning": 4,
    "fresh": 2,
    "batch": 3,
    "settle": 1.0,
}
SMOKE_MODES = ("evict", "recycle")
IDLE_RSS_MIB = 64.0  # recycle: recycle_idle_rss unless a limit is given
SMOKE_IDLE_RSS_MIB = 1.0  # --smoke: its sessions hold a few MiB in all


# --- the server (child process) ---------------------------------------------------


@dataclass
class BenchState:
    """What each user stores: survives eviction under `@evict_idle`."""

    user: str = ""
    saves: int = 0
    notes: list[str] = field(default_factory=list)


def shown(user: str, saves: int) -> str:
    """The "state" Text's value for a user's state."""
    return f"{user}:{saves}:{NOTES if saves else 0}"


def make_main(
    mode: str,
    controls: int,
    idle_ttl: float,
    disconnected_ttl: float,
    recycle_rss: int | None = None,
    recycle_after: int | None = None,
    recycle_idle_rss: int | None = None,
) -> Callable[[ft.Page], Any]:
    """The benchmark app: a state line, a name field, save, `controls` Texts."""
    import flet as ft

    async def build(page: ft.Page, state: BenchState) -> None:
        label = ft.Text(shown(state.user, state.saves), key="state")
        name = ft.TextField(value=state.user, key="name")

        def save(e: ft.Event) -> None:
            state.user = name.value or ""
            state.saves += 1
            state.notes = [f"{state.user} note {k}" for k in range(NOTES)]
            label.value = shown(state.user, state.saves)

        lines = ft.Column([ft.Text(f"line {k}") for k in range(controls)])
        page.add(label, name, ft.Button("save", key="save", on_click=save), lines)

    if mode == "plain":

        async def plain_main(page: ft.Page) -> None:
            await build(page, BenchState())  # the session keeps the state

        return plain_main

    from flet_resilient import app_state, evict_idle

    @evict_idle(
        idle_ttl=idle_ttl,
        disconnected_ttl=disconnected_ttl,
        state=BenchState,
        recycle_rss=recycle_rss,
        recycle_after=recycle_after,
        recycle_idle_rss=recycle_idle_rss,
    )
    async def evict_main(page: ft.Page) -> None:
        await build(page, await app_state(page))

    return evict_main


def pymalloc() -> dict[str, int]:
    """Python's small-object allocator: bytes in live blocks, bytes of arenas held.

    Parsed from `sys._debugmallocstats()`, which writes to the C stderr.
    """
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    values = {"live": 0, "held": 0}
    for line in text.splitlines():
        number = line.rsplit("=", 1)[-1].strip().replace(",", "")
        if line.startswith("# bytes in allocated blocks"):
            values["live"] = int(number)
        elif line.startswith("Total") and not values["held"]:
            values["held"] = int(number)  # the arenas' block comes first
    return values


class ControlChannel:
    """The child's command loop: `KIND T` on stdin, `KIND T <json>` replies.

    `stats`: RSS and sessions (cheap, sampled every 0.5 s); `heap`: live
    objects and pymalloc; `reclaim`: gc.collect() + malloc_trim(0), timed.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.me = psutil.Process()

    @staticmethod
    def encode(values: dict[str, Any]) -> str:
        return json.dumps(values, separators=(",", ":"))

    def rss(self) -> int:
        return int(self.me.memory_info().rss)

    def stats(self) -> dict[str, Any]:
        """RSS, Flet's live sessions and (evict) what the library tracks."""
        from flet_web.fastapi.flet_app_manager import app_manager

        sessions = list(app_manager._FletAppManager__sessions.values())  # type: ignore[attr-defined]
        values: dict[str, Any] = {
            "rss": self.rss(),
            "sessions": len(sessions),
            "connected": sum(s.connection is not None for s in sessions),
        }
        if self.mode != "plain":
            from flet_resilient import stats

            snapshot = stats()
            evict = snapshot["evict"]
            values["evict_sessions"] = evict["sessions"]
            values["estimated_bytes"] = evict["estimated_bytes"]
            latency = evict["store_latency"]
            values["store_ops"] = latency["count"]
            values["store_p50_ms"] = latency["p50_ms"]
            values["store_p99_ms"] = latency["p99_ms"]
            rehydrate = evict["rehydrate"]
            values["restores"] = rehydrate["count"]
            values["restore_p50_ms"] = rehydrate["p50_ms"]
            values["restore_p99_ms"] = rehydrate["p99_ms"]
            values["counters"] = {
                k.replace("evict.", ""): v
                for k, v in snapshot["counters"].items()
                if k.startswith("evict.")
            }
        return values

    def heap(self) -> dict[str, Any]:
        """Objects tracked by the gc and pymalloc's live/held bytes."""
        return {"rss": self.rss(), "objects": len(gc.get_objects()), **pymalloc()}

    def reclaim(self) -> dict[str, Any]:
        """gc.collect() (timed: it stops the event loop), then malloc_trim(0).

        The trim comes last, so it also returns the memory of the counting.
        """
        before = self.heap()
        started = time.perf_counter()
        collected = gc.collect()
        gc_ms = (time.perf_counter() - started) * 1000
        after = self.heap()
        trimmed = malloc_trim()
        return {
            "before": before,
            "collected": collected,
            "gc_ms": gc_ms,
            "after": after,
            "trimmed": trimmed,
            "after_trim": self.rss(),
        }

    def handle(self, words: list[str]) -> None:
        command, token = words[0], words[1]
        if command in ("stats", "heap", "reclaim"):
            reply(command, token, self.encode(getattr(self, command)()))


async def serve(args: argparse.Namespace) -> None:
    """The child side of `ServerProcess`: serve and obey stdin until it closes."""
    import flet_web.fastapi as flet_fastapi

    main = make_main(args.serve, args.controls, args.idle_ttl, args.disconnected_ttl)
    app = flet_fastapi.app(main, no_cdn=True)
    await serve_child(app, ControlChannel(args.serve).handle)


def recycle_app() -> Any:
    """The recycle phase's ASGI app, for gunicorn (`bench_memory:recycle_app()`),
    configured by the JSON in $BENCH_MEMORY_APP (see `Fleet`)."""
    import flet_web.fastapi as flet_fastapi

    settings = json.loads(os.environ["BENCH_MEMORY_APP"])
    return flet_fastapi.app(make_main("recycle", **settings), no_cdn=True)


class Fleet:
    """The recycle phase's server: a gunicorn master with `--workers` uvicorn
    worker processes of `recycle_app` (`flet_resilient.cluster.Worker`); no
    control channel into them, so `query` answers nothing."""

    def __init__(
        self, args: argparse.Namespace, state_dir: str, limits: dict[str, int | None]
    ) -> None:
        from flet_resilient.cluster import Worker

        settings = {
            "controls": args.controls,
            "idle_ttl": args.idle_ttl,
            "disconnected_ttl": args.disconnected_ttl,
            **limits,
        }
        self.worker = Worker(
            "bench_memory:recycle_app",
            cwd=Path(__file__).resolve().parent,
            server="gunicorn",
            processes=args.workers,
            env={
                "BENCH_MEMORY_APP": json.dumps(settings),
                "FLET_RESILIENT_STATE_DIR": state_dir,
                "FLET_RESILIENT_DISABLE": "",
                "PYTHONMALLOC": "",
            },
        )
        self.ws_url = self.worker.ws_url

    def pids(self) -> set[int]:
        """The gunicorn worker processes (not the master)."""
        return self.worker.worker_pids()

    def master_rss(self) -> int:
        """The gunicorn master's RSS (not counted in the fleet's)."""
        return int(psutil.Process(self.worker.pid).memory_info().rss)

    async def query(self, kind: str, timeout: float = 60) -> dict[str, Any]:
        """Nothing: the workers have no control channel."""
        return {}

    def log_lines(self) -> list[str]:
        """The workers' recycling and drain lines from gunicorn's log."""
        text = self.worker.log_path.read_text(errors="replace")
        return [
            line.strip()
            for line in text.splitlines()
            if line.startswith(
                ("recycling this worker", "recycle deferred", "drained ")
            )
        ]

    async def __aenter__(self) -> Fleet:
        await self.worker.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.worker.__aexit__(*exc)


class ServerProcess(ChildServer):
    """The app served by `bench_memory.py --serve MODE`, with its control channel."""

    def __init__(self, mode: str, args: argparse.Namespace, state_dir: str) -> None:
        super().__init__(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                *("--serve", mode),
                *("--controls", str(args.controls)),
                *("--idle-ttl", str(args.idle_ttl)),
                *("--disconnected-ttl", str(args.disconnected_ttl)),
            ],
            env={
                **os.environ,
                "FLET_RESILIENT_STATE_DIR": state_dir,
                # The plain phase's server must be stock Flet: no adapter either.
                "FLET_RESILIENT_DISABLE": "1" if mode == "plain" else "",
                # evict-malloc: glibc's malloc for every object instead of
                # Python's arenas, so freed memory can go back page by page.
                "PYTHONMALLOC": "malloc" if mode == "evict-malloc" else "",
            },
        )

    async def query(self, kind: str, timeout: float = 60) -> dict[str, Any]:
        """A `stats`, `heap` or `reclaim` request and its decoded (JSON) reply."""
        return json.loads(" ".join(await self.request(kind, timeout=timeout)))

    def pids(self) -> set[int]:
        """The one server process."""
        return {self.pid}


Server = ServerProcess | Fleet


# --- sampling -------------------------------------------------------------------------


@dataclass
class Sample:
    """One RSS reading of the server, with the last session counts it reported."""

    t: float  # seconds since the phase started
    rss: int
    sessions: int | None
    evict_sessions: int | None
    anon: int | None = None  # RssAnon: RSS less file-backed and shared pages


def rss_anon(pid: int) -> int | None:
    """A process's anonymous RSS (Linux /proc; None elsewhere).

    Unlike RSS it does not move when the kernel drops cold file-backed pages
    (code of python and its libraries), e.g. under DAMON's proactive pageout.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Sampler:
    """Reads the server's RSS every `SAMPLE_S` and polls its session counts.

    The RSS is the sum over the server's processes (gunicorn: its workers);
    a process that goes away is marked as a "worker exit" event.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.processes: dict[int, psutil.Process] = {}
        self.exits = 0
        self.started = time.monotonic()
        self.samples: list[Sample] = []
        self.events: list[tuple[float, str]] = []
        self.last: dict[str, Any] = {}
        self._poll: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._follow()

    def now(self) -> float:
        return time.monotonic() - self.started

    def _follow(self) -> None:
        """Pick up the server's current processes; mark those that exited."""
        pids = self.server.pids()
        for pid in self.processes.keys() - pids:
            del self.processes[pid]
            self.exits += 1
            self.mark("worker exit")
        for pid in pids - self.processes.keys():
            with contextlib.suppress(psutil.Error):
                self.processes[pid] = psutil.Process(pid)

    def rss(self) -> int:
        total = 0
        for process in list(self.processes.values()):
            with contextlib.suppress(psutil.Error):
                total += int(process.memory_info().rss)
        return total

    def anon(self) -> int:
        return sum(rss_anon(pid) or 0 for pid in list(self.processes))

    def mark(self, label: str) -> float:
        """Record a phase event at the current time."""
        at = self.now()
        self.events.append((at, label))
        return at

    async def _poll_stats(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            self.last = await self.server.query("stats", timeout=10)

    async def _run(self) -> None:
        while True:
            self._follow()
            self.samples.append(
                Sample(
                    self.now(),
                    self.rss(),
                    self.last.get("sessions"),
                    self.last.get("evict_sessions"),
                    self.anon() if self.processes else None,
                )
            )
            if self._poll is None or self._poll.done():
                self._poll = asyncio.create_task(self._poll_stats())
            await asyncio.sleep(SAMPLE_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        for task in (self._task, self._poll):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def peak(self) -> int:
        return max((s.rss for s in self.samples), default=0)


# --- simulated users ------------------------------------------------------------------


@dataclass
class User:
    """One simulated browser tab and the state it saved."""

    index: int
    role: str  # "active", "idle" or "closed"
    client: FletClient
    saves: int = 0
    saving: bool = False  # a save was clicked, its answer not seen yet

    @property
    def name(self) -> str:
        return f"user-{self.index}"

    @property
    def expected(self) -> str:
        return shown(self.name if self.saves else "", self.saves)

    def restored(self) -> bool:
        """Whether the page shows this user's state (adopting a save that was
        in flight when the socket closed, if the server applied it)."""
        state = self.client.value("state")
        if self.saving and state == shown(self.name, self.saves + 1):
            self.saves += 1
        self.saving = False
        return bool(state == self.expected)


def has_state(client: FletClient) -> bool:
    """The page is built: its state line is mirrored."""
    return client.value("state") is not None


async def save(user: User, timeout: float = 60) -> None:
    """Type the user's name, click save, wait for the state line to show it."""
    client = user.client
    await client.wait_for(lambda: has_state(client), timeout)
    await client.set_props("name", value=user.name)
    user.saving = True
    await client.click("save")
    after = shown(user.name, user.saves + 1)
    await client.wait_for(lambda: client.value("state") == after, timeout)
    user.saves += 1
    user.saving = False


async def drained(client: FletClient) -> bool:
    """Whether the server closed this socket to send the client elsewhere
    (close code 1012, a drain), not for good (e.g. an eviction)."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(client.closed.wait(), 5)
    return client.ws is not None and client.ws.close_code == DRAIN_CLOSE_CODE


async def rejoin(user: User, phase: Phase) -> None:
    """After a drain: back like the Flutter client (same session id and
    storage, retries from 500 ms doubling); count whether the state came too."""
    began = time.perf_counter()
    old = user.client
    user.client = await connect_retrying(lambda: same_browser(old), has_state)
    phase.rejoin_ms.append((time.perf_counter() - began) * 1000)
    phase.rejoined_ok += user.restored()


async def save_through_drains(user: User, phase: Phase) -> None:
    """`save(user)`; when a drain closes the socket meanwhile, rejoin and save
    again (a bounded number of times)."""
    for _ in range(DRAIN_RETRIES):
        try:
            await save(user)
            return
        except RETRYABLE:
            if not await drained(user.client):
                raise
        await rejoin(user, phase)
    await save(user)


async def keep_active(user: User, period: float, phase: Phase) -> None:
    """An active user: save every `period` seconds and, after a drain, come
    back at once (counted as lost if evicted or not back in time)."""
    try:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(user.client.closed.wait(), period)
            if user.client.closed.is_set():
                if not await drained(user.client):
                    raise ConnectionError("the session ended")
                await rejoin(user, phase)
            await save_through_drains(user, phase)
    except RETRYABLE:
        phase.active_lost += 1


async def connect_user(
    url: str, index: int, role: str, period: float, phase: Phase
) -> User:
    """A new tab: connect, get the page, save state; `closed` tabs then close.

    Active users start saving every `period` seconds at once.
    """
    from flet_resilient.testing import FletClient

    client = await connect_retrying(lambda: FletClient(url), has_state, first_wait=0)
    user = User(index, role, client)
    await save_through_drains(user, phase)
    if role == "closed":
        await user.client.close()
    elif role == "active":
        phase.tasks.append(asyncio.create_task(keep_active(user, period, phase)))
    return user


async def close_quietly(client: FletClient) -> None:
    """Close a client's socket, aborting it if the close handshake hangs."""
    if client.ws is None or client.closed.is_set():
        return
    try:
        await asyncio.wait_for(client.close(), 5)
    except (asyncio.TimeoutError, OSError, RuntimeError):
        with contextlib.suppress(Exception):
            client.abort()


async def visit(url: str, user: User | None) -> tuple[float, bool, FletClient]:
    """A page load: ms from connect to the state line in the mirror, right state?

    With `user`, the same browser reloads (its session id and client storage;
    a tab still open closes first); without, a first-time visitor. A failed
    load is retried like the Flutter client (a worker may be recycling).
    """
    from flet_resilient.testing import FletClient

    previous = None if user is None else user.client
    if previous is not None:
        await close_quietly(previous)

    def tab() -> FletClient:
        return FletClient(url) if previous is None else same_browser(previous)

    started = time.perf_counter()
    client = await connect_retrying(tab, has_state, first_wait=0)
    elapsed = (time.perf_counter() - started) * 1000
    expected = user.expected if user is not None else shown("", 0)
    return elapsed, client.value("state") == expected, client


# --- a phase --------------------------------------------------------------------------


@dataclass
class Phase:
    """What one phase measured (bytes, seconds since the phase start, ms)."""

    mode: str
    active: int
    sessions: int
    baseline: int = 0
    baseline_anon: int = 0
    baseline_heap: dict[str, Any] = field(default_factory=dict)
    connected_rss: int = 0
    peak: int = 0
    idle_rss: int = 0
    idle_anon: int = 0
    reclaim: dict[str, Any] = field(default_factory=dict)
    reclaimed_rss: int = 0
    reclaimed_anon: int = 0
    final_rss: int = 0
    connect_s: float = 0.0
    idle_stats: dict[str, Any] = field(default_factory=dict)
    final_stats: dict[str, Any] = field(default_factory=dict)
    all_evicted_at: float | None = None  # evict: sessions down to the active ones
    server_closed: int = 0  # idle tabs whose socket the server closed
    active_lost: int = 0  # active users whose session went (should be 0)
    rehydrate_ms: list[float] = field(default_factory=list)
    restored: int = 0
    fresh_ms: list[float] = field(default_factory=list)
    per_session: float = 0.0  # RSS per session, from the plain phase if run
    own_cores: float = 0.0
    other_cores: float = 0.0
    workers: int = 1  # server processes (recycle: gunicorn's workers)
    recycle_rss: int | None = None  # recycle: the limits the app ran with
    recycle_after: int | None = None
    recycle_idle_rss: int | None = None
    worker_exits: int = 0
    worker_log: list[str] = field(default_factory=list)  # recycling, drains
    master_rss: int = 0  # recycle: gunicorn's master, not in the RSS columns
    rejoin_ms: list[float] = field(default_factory=list)  # drain -> state shown
    rejoined_ok: int = 0  # clients back after a drain that found their state
    samples: list[Sample] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list, repr=False)

    @property
    def target(self) -> float:
        """Baseline + the active sessions' share."""
        return self.baseline + self.active * self.per_session


def roles(args: argparse.Namespace) -> list[str]:
    """Each user's role: the first `--active`, then closed/idle at random."""
    rng = random.Random(args.seed)
    result = []
    for index in range(args.sessions):
        if index < args.active:
            result.append("active")
        else:
            result.append("closed" if rng.random() < args.closed_share else "idle")
    return result


def serve_phase(
    mode: str, args: argparse.Namespace, state_dir: str, phase: Phase
) -> Server:
    """The phase's server: `--serve MODE`, or for recycle a gunicorn fleet."""
    if mode != "recycle":
        return ServerProcess(mode, args, state_dir)
    phase.workers = args.workers
    phase.recycle_after = args.recycle_after
    phase.recycle_rss, phase.recycle_idle_rss = (
        None if limit is None else int(limit * MiB)
        for limit in (args.recycle_rss, args.recycle_idle_rss)
    )
    limits = {
        "recycle_rss": phase.recycle_rss,
        "recycle_after": phase.recycle_after,
        "recycle_idle_rss": phase.recycle_idle_rss,
    }
    return Fleet(args, state_dir, limits)


async def run_phase(mode: str, args: argparse.Namespace) -> Phase:
    """One phase: its own server, fresh users, the five steps."""
    phase = Phase(mode, args.active, args.sessions)
    log = Progress(mode)
    users: list[User] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as state_dir:
        async with serve_phase(mode, args, state_dir, phase) as server:
            sampler = Sampler(server)
            sampler.start()
            from flet_resilient.loadtest.meter import CpuMeter

            meter = CpuMeter()
            try:
                await steps(args, server, sampler, phase, users, log)
            finally:
                phase.own_cores, phase.other_cores = meter.cores()
                for task in phase.tasks:
                    task.cancel()
                await asyncio.gather(*phase.tasks, return_exceptions=True)
                phase.tasks.clear()
                await sampler.stop()
                phase.peak = sampler.peak()
                phase.samples, phase.events = sampler.samples, sampler.events
                phase.worker_exits = sampler.exits
                if isinstance(server, Fleet):
                    phase.worker_log = server.log_lines()
                for first in range(0, len(users), 50):
                    await asyncio.gather(
                        *(close_quietly(u.client) for u in users[first : first + 50])
                    )
    log("done")
    return phase


async def steps(
    args: argparse.Namespace,
    server: Server,
    sampler: Sampler,
    phase: Phase,
    users: list[User],
    log: Callable[[str], None],
) -> None:
    """Baseline, connect, idle, reclaim, return (see the module docstring)."""
    await asyncio.sleep(2.0)
    phase.baseline, phase.baseline_anon = sampler.rss(), sampler.anon()
    phase.baseline_heap = await server.query("heap")
    sampler.mark("connect")
    log(f"baseline {phase.baseline / MiB:.0f} MiB; connecting")
    started = time.monotonic()
    kinds = roles(args)
    period = args.idle_ttl / 3
    for first in range(0, args.sessions, args.batch):
        batch = range(first, min(first + args.batch, args.sessions))
        users += await asyncio.gather(
            *(connect_user(server.ws_url, i, kinds[i], period, phase) for i in batch)
        )
    phase.connect_s = time.monotonic() - started
    await asyncio.sleep(1.0)
    phase.connected_rss = sampler.rss()
    idle_from = sampler.mark("idle")
    log(
        f"{len(users)} connected in {phase.connect_s:.0f} s, "
        f"{phase.connected_rss / MiB:.0f} MiB; idle"
    )
    await idle(args, sampler, phase, idle_from)
    phase.idle_rss, phase.idle_anon = sampler.rss(), sampler.anon()
    phase.idle_stats = await server.query("stats")
    phase.server_closed = sum(
        u.client.closed.is_set() for u in users if u.role == "idle"
    )
    log(f"after idle {phase.idle_rss / MiB:.0f} MiB")
    if isinstance(server, Fleet):
        phase.master_rss = server.master_rss()
    else:
        await reclaim(server, sampler, phase, log)
    sampler.mark("return")
    log("users return")
    for user in [u for u in users if u.role != "active"][: args.returning]:
        elapsed, ok, client = await visit(server.ws_url, user)
        phase.rehydrate_ms.append(elapsed)
        phase.restored += ok
        users.append(User(user.index, "returned", client, user.saves))
    for index in range(args.fresh):
        elapsed, _, client = await visit(server.ws_url, None)
        phase.fresh_ms.append(elapsed)
        users.append(User(args.sessions + index, "fresh", client))
    await asyncio.sleep(2.0)
    phase.final_rss = sampler.rss()
    phase.final_stats = await server.query("stats")
    sampler.mark("end")


async def reclaim(
    server: ServerProcess, sampler: Sampler, phase: Phase, log: Callable[[str], None]
) -> None:
    """Step 4: gc.collect() + malloc_trim(0) in the server, the RSS after."""
    sampler.mark("gc + malloc_trim")
    log("gc.collect + malloc_trim")
    phase.reclaim = await server.query("reclaim")
    await asyncio.sleep(3.0)
    phase.reclaimed_rss, phase.reclaimed_anon = sampler.rss(), sampler.anon()
    log(f"after reclaim {phase.reclaimed_rss / MiB:.0f} MiB")


async def idle(
    args: argparse.Namespace, sampler: Sampler, phase: Phase, idle_from: float
) -> None:
    """Wait out the TTLs (same length in every phase; recycle: also the
    workers' turns); note when all went."""
    until = idle_from + max(args.idle_ttl, args.disconnected_ttl) + args.settle
    if phase.mode == "recycle":
        from flet_resilient import recycle

        until += recycle.EVICTIONS_QUIET_S + recycle.RSS_CHECK_S
        until += recycle.RECYCLE_SPACING_S * phase.workers
    while sampler.now() < until:
        await asyncio.sleep(SAMPLE_S)
        sessions = sampler.last.get("sessions")
        if (
            phase.mode != "plain"
            and phase.all_evicted_at is None
            and sessions is not None
            and sessions <= args.active
        ):
            phase.all_evicted_at = sampler.now() - idle_from


class Progress:
    """Timestamped progress lines on stderr."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{self.mode} {elapsed:5.0f} s] {message}", file=sys.stderr, flush=True)


# --- report ---------------------------------------------------------------------------


def mib(value: float) -> str:
    """Bytes as whole MiB for the tables (n/a for nan: not measured)."""
    return "n/a" if math.isnan(value) else f"{value / MiB:.0f}"


def within(rss: float, phase: Phase) -> str:
    """RSS relative to the target: "+12 %"."""
    if not phase.target or math.isnan(rss):
        return "n/a"
    return f"{(rss / phase.target - 1) * 100:+.0f} %"


def meets_rss(rss: float, phase: Phase) -> bool:
    """RSS within GOAL_RSS of the phase's target."""
    return rss <= phase.target * (1 + GOAL_RSS)


def p50_p99(values: list[float]) -> str:
    """p50 and p99 in ms, as "p50 / p99"."""
    from harness import ms

    from flet_resilient.measure import percentile

    return f"{ms(percentile(values, 50))} / {ms(percentile(values, 99))}"


def about() -> dict[str, str]:
    """When, where and what code a run measured."""
    from harness import code_version

    from flet_resilient.measure import machine

    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "code": f"flet-resilient {code_version(Path(__file__).resolve().parent)}",
    }


def live_check(phases: list[Phase]) -> str | None:
    """What gc + trim cannot hide: pymalloc's live bytes vs the same target.

    Per-session live bytes come from the plain phase (all sessions alive).
    """
    plain = next((p for p in phases if p.mode == "plain" and p.reclaim), None)
    evict = next((p for p in phases if p.mode == "evict" and p.reclaim), None)
    if plain is None or evict is None:
        return None
    base = plain.baseline_heap.get("live", 0)
    per_session = (plain.reclaim["before"]["live"] - base) / plain.sessions
    target = evict.baseline_heap.get("live", 0) + evict.active * per_session
    live = evict.reclaim["after"]["live"]
    return (
        f"- live Python memory (pymalloc live blocks; objects over 512 bytes not "
        f"counted): {per_session / MiB:.2f} MiB per session (plain); evict after "
        f"idle + gc.collect: {live / MiB:.0f} MiB vs baseline + active sessions "
        f"{target / MiB:.0f} MiB ({(live / target - 1) * 100:+.0f} %)"
    )


def report(
    phases: list[Phase],
    args: argparse.Namespace,
    command: str,
    run: dict[str, str],
) -> str:
    """The markdown report: settings, tables, notes, goals."""
    lines = [
        *settings_lines(phases, args, command, run),
        "",
        *rss_rows(phases),
        "",
        "What the server process saw (after idle, before and after gc.collect() + "
        "malloc_trim(0); pymalloc: bytes in live small-object blocks / bytes of "
        "arenas held; not for recycle, whose gunicorn workers have no control "
        "channel):",
        "",
        *heap_rows([p for p in phases if p.reclaim]),
        "",
    ]
    lines += [f"- {p.mode}: " + "; ".join(phase_notes(p)) for p in phases]
    live = live_check(phases)
    if live:
        lines.append(live)
    busy = [p.mode for p in phases if p.other_cores > NOISY_CORES]
    if busy:
        lines.append(
            f"- warning: other processes used more than {NOISY_CORES:g} cores during "
            f"{', '.join(busy)}"
        )
    late = [p.mode for p in phases if p.connect_s > args.idle_ttl]
    if late:
        lines.append(
            f"- note: connecting took longer than idle_ttl in {', '.join(late)}; "
            "with evict, the first idle sessions went before the last connected"
        )
    lines += [goal_line(p) for p in phases if p.mode != "plain"]
    return "\n".join(lines) + "\n"


def settings_lines(
    phases: list[Phase], args: argparse.Namespace, command: str, run: dict[str, str]
) -> list[str]:
    """The report's header: when, where, what ran."""
    closed = sum(r == "closed" for r in roles(args))
    lines = [
        "# bench_memory",
        "",
        f"- date: {run['date']}",
        f"- machine: {run['machine']}",
        f"- code: {run['code']}",
        f"- command: `{command}`",
        f"- {args.sessions} sessions x {args.controls} Text controls: {args.active} "
        f"active (a save every {args.idle_ttl / 3:g} s), {closed} closed their tab, "
        f"{args.sessions - args.active - closed} idle with the tab open; evict: "
        f"idle_ttl {args.idle_ttl:g} s, disconnected_ttl {args.disconnected_ttl:g} s, "
        f"default disk store; then {len(phases[0].rehydrate_ms)} users return and "
        f"{len(phases[0].fresh_ms)} new ones visit, one after the other",
        f"- target = baseline + {args.active} active sessions x "
        f"{phases[0].per_session / 1024:.0f} KiB (RSS per session"
        f"{' in the plain phase' if any(p.mode == 'plain' for p in phases) else ''})",
    ]
    for p in phases:
        if p.mode == "recycle":
            lines.append(
                f"- recycle: the evict app under gunicorn, {p.workers} uvicorn "
                f"worker(s), with {limits_text(p)}; its RSS columns are the sum of "
                "the worker processes' RSS (the gunicorn master not included), its "
                "baseline that of the fresh workers before any user"
            )
    return lines


def rss_rows(phases: list[Phase]) -> list[str]:
    """The main table: RSS against the target, returns, states restored."""
    lines = [
        "| mode | baseline MiB | peak MiB | after idle MiB | after gc + trim MiB "
        "| target MiB | after idle vs target | after gc + trim vs target "
        "| sessions after idle | rehydrate p50 / p99 ms | first visit p50 / p99 ms "
        "| state restored |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        returning = len(p.rehydrate_ms)
        share = 100 * p.restored / returning if returning else math.nan
        reclaimed = p.reclaimed_rss if p.reclaim else math.nan
        lines.append(
            f"| {p.mode} | {mib(p.baseline)} | {mib(p.peak)} | {mib(p.idle_rss)} | "
            f"{mib(reclaimed)} | {mib(p.target)} | {within(p.idle_rss, p)} | "
            f"{within(reclaimed, p)} | {p.idle_stats.get('sessions', 'n/a')} | "
            f"{p50_p99(p.rehydrate_ms)} | {p50_p99(p.fresh_ms)} | "
            f"{p.restored}/{returning} ({share:.0f} %) |"
        )
    return lines


def heap_rows(phases: list[Phase]) -> list[str]:
    """The second table: sessions, gc objects, pymalloc, RSS in the server."""
    lines = [
        "| mode | connect s | Flet sessions (connected) | evict_idle tracks "
        "| gc objects: baseline / after idle / after gc | gc.collect freed | "
        "gc.collect ms | pymalloc MiB live / held: after idle -> after gc "
        "| RSS MiB: after gc -> after trim | anonymous RSS MiB: baseline / after "
        "idle / after gc + trim | RSS MiB after the returns |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        r, s = p.reclaim, p.idle_stats
        before, after = r.get("before", {}), r.get("after", {})
        tracked = "-"
        if p.mode != "plain":
            tracked = (
                f"{s.get('evict_sessions')} (est. {mib(s.get('estimated_bytes', 0))} "
                "MiB)"
            )
        lines.append(
            f"| {p.mode} | {p.connect_s:.0f} | {s.get('sessions')} "
            f"({s.get('connected')}) | {tracked} | "
            f"{p.baseline_heap.get('objects')} / {before.get('objects')} / "
            f"{after.get('objects')} | {r.get('collected')} | "
            f"{r.get('gc_ms', math.nan):.0f} | "
            f"{mib(before.get('live', 0))} / {mib(before.get('held', 0))} -> "
            f"{mib(after.get('live', 0))} / {mib(after.get('held', 0))} | "
            f"{mib(after.get('rss', 0))} -> {mib(r.get('after_trim', 0))} | "
            f"{mib(p.baseline_anon)} / {mib(p.idle_anon)} / "
            f"{mib(p.reclaimed_anon)} | {mib(p.final_rss)} |"
        )
    return lines


def phase_notes(p: Phase) -> list[str]:
    """One phase's notes: closed tabs, the library's counters, recycling, CPU."""
    notes = [f"{p.server_closed} open idle tabs closed by the server"]
    stats = p.final_stats
    if "counters" in stats:  # what evict_idle reported (not plain, not recycle)
        notes.append(f"counters {stats.get('counters')}")
        notes.append(
            f"state store ops {stats.get('store_ops')} (gets and puts, timed "
            "on the event loop, so waiting for it included), p50 / p99 <= "
            f"{stats.get('store_p50_ms', 0):.0f} / "
            f"{stats.get('store_p99_ms', 0):.0f} ms (bucket bounds)"
        )
        notes.append(
            f"`app_state` restores {stats.get('restores')} (key from the "
            "client, store read, decode; the page build is not included), "
            f"p50 / p99 <= {stats.get('restore_p50_ms', 0):.0f} / "
            f"{stats.get('restore_p99_ms', 0):.0f} ms (bucket bounds)"
        )
    if p.all_evicted_at is not None:
        notes.append(
            f"idle and closed sessions all gone {p.all_evicted_at:.1f} s "
            "into the idle step"
        )
    if p.mode == "recycle":
        notes += recycle_notes(p)
    if p.active_lost:
        notes.append(f"{p.active_lost} ACTIVE users lost their session")
    notes.append(
        f"CPU cores: bench {p.own_cores:.2f}, other processes {p.other_cores:.2f}"
    )
    return notes


def limits_text(p: Phase) -> str:
    """The recycle phase's limits, as evict_idle arguments."""
    limits = []
    if p.recycle_rss is not None:
        limits.append(f"recycle_rss={mib(p.recycle_rss)} MiB")
    if p.recycle_after is not None:
        limits.append(f"recycle_after={p.recycle_after}")
    if p.recycle_idle_rss is not None:
        limits.append(f"recycle_idle_rss={mib(p.recycle_idle_rss)} MiB")
    return ", ".join(limits) or "no limit"


def recycle_notes(p: Phase) -> list[str]:
    """What recycling did: worker exits by step, drains, clients back."""
    steps: dict[str, int] = {}
    step = "start"
    for _, label in p.events:
        if label == "worker exit":
            steps[step] = steps.get(step, 0) + 1
        else:
            step = label
    when = ", ".join(f"{n} in {label}" for label, n in steps.items()) or "none"
    drains = [drain_figures(line) for line in p.worker_log if line.startswith("dr")]
    reasons = [
        line.split(": ", 1)[-1]
        for line in p.worker_log
        if line.startswith("recycling this worker")
    ]
    deferred = sum(line.startswith("recycle deferred") for line in p.worker_log)
    return [
        f"worker exits {p.worker_exits} ({when}); why: {'; '.join(reasons) or '-'}; "
        f"deferred for another worker's turn {deferred} times",
        f"drains {len(drains)}: {sum(d[0] for d in drains)} sessions, "
        f"{sum(d[1] for d in drains)} NOT saved, the longest "
        f"{max((d[2] for d in drains), default=0):.2f} s",
        f"master RSS after idle {mib(p.master_rss)} MiB (not counted)",
        f"{len(p.rejoin_ms)} clients came back after a drain, "
        f"{p.rejoined_ok} found their state; close to state on screen p50 / p99 "
        f"{p50_p99(p.rejoin_ms)} ms",
    ]


def drain_figures(line: str) -> tuple[int, int, float]:
    """(sessions, not saved, seconds) of a worker's "drained ..." log line."""
    words = line.replace(",", "").replace(":", "").split()
    sessions, seconds = int(words[1]), float(words[4])
    unsaved = int(words[words.index("NOT") - 1])
    return sessions, unsaved, seconds


def goal_line(p: Phase) -> str:
    """One phase's verdicts on the issue's goals."""
    from flet_resilient.measure import percentile

    verdict = {True: "met", False: "NOT met"}
    returning = len(p.rehydrate_ms)
    restore_p99 = p.final_stats.get("restore_p99_ms", math.inf)
    restore = verdict[restore_p99 < GOAL_P99_MS] if p.final_stats else "n/a"
    trimmed = verdict[meets_rss(p.reclaimed_rss, p)] if p.reclaim else "n/a"
    line = (
        f"- goals ({p.mode}): RSS after idle within {GOAL_RSS * 100:g} % of the "
        f"target: {verdict[meets_rss(p.idle_rss, p)]} (after gc + trim: "
        f"{trimmed}); rehydrate p99 < {GOAL_P99_MS:g} ms: connect to state on "
        f"screen {verdict[percentile(p.rehydrate_ms, 99) < GOAL_P99_MS]}, state "
        f"restore in app_state {restore}; 100 % "
        f"state restored: {verdict[returning > 0 and p.restored == returning]}"
    )
    if p.mode == "recycle":
        back = len(p.rejoin_ms)
        line += (
            f"; every client back after a drain found its state: "
            f"{verdict[back > 0 and p.rejoined_ok == back]} ({p.rejoined_ok}/{back})"
            f"; fleet RSS after idle {mib(p.idle_rss)} MiB vs fresh workers + "
            f"{p.active} active sessions {mib(p.target)} MiB ({within(p.idle_rss, p)}"
            f"): {verdict[meets_rss(p.idle_rss, p)]}"
        )
    return line


def load_phases(saved: dict[str, Any]) -> list[Phase]:
    """The phases of a saved memory.json (enough of them to plot)."""
    phases = []
    for values in saved["phases"]:
        values = {k: v for k, v in values.items() if k not in ("target", "tasks")}
        phase = Phase(**values)
        phase.samples = [Sample(**s) for s in values["samples"]]
        phase.events = [(at, label) for at, label in values["events"]]
        phases.append(phase)
    return phases


def plot(phases: list[Phase], path: Path, title: str) -> bool:
    """RSS and live sessions over time for every phase; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    colors = {
        "plain": "tab:red",
        "evict": "tab:blue",
        "evict-malloc": "tab:green",
        "recycle": "tab:purple",
    }
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 7), sharex=True, height_ratios=(3, 1.3)
    )
    for p in phases:
        color = colors.get(p.mode, "tab:gray")
        times = [s.t for s in p.samples]
        top.plot(
            times, [s.rss / MiB for s in p.samples], color=color, label=f"{p.mode} RSS"
        )
        anon = [s for s in p.samples if s.anon is not None]
        if anon:
            top.plot(
                [s.t for s in anon],
                [(s.anon or 0) / MiB for s in anon],
                color=color,
                linewidth=0.8,
                linestyle="--",
                alpha=0.7,
                label=f"{p.mode} anonymous RSS",
            )
        counted = [s for s in p.samples if s.sessions is not None]
        bottom.plot(
            [s.t for s in counted],
            [s.sessions for s in counted],
            color=color,
            label=f"{p.mode}: Flet sessions",
        )
        for at, label in p.events:
            top.axvline(at, color=color, alpha=0.25, linestyle=":")
            top.annotate(
                label,
                (at, 0.98 if p.mode == "plain" else 0.02),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=7,
                color=color,
                va="top" if p.mode == "plain" else "bottom",
                ha="right",
            )
        if p.mode != "plain":
            top.axhline(
                p.target / MiB,
                color=color,
                linestyle="--",
                alpha=0.6,
                label="target: baseline + active sessions",
            )
            top.axhline(
                p.target * (1 + GOAL_RSS) / MiB,
                color=color,
                linestyle=":",
                alpha=0.6,
                label=f"target + {GOAL_RSS * 100:g} %",
            )
    top.set_ylabel("server RSS (MiB)")
    top.set_ylim(0, max((p.peak for p in phases), default=MiB) / MiB * 1.25)
    top.set_title(title, fontsize=10)
    top.legend(loc="center left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.set_ylabel("sessions")
    bottom.set_xlabel("seconds since the phase's server started")
    bottom.legend(loc="upper left", fontsize=8)
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


# --- entry point ----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=500, help="simulated users")
    parser.add_argument(
        "--controls", type=int, default=1000, help="Text controls per page"
    )
    parser.add_argument(
        "--idle-ttl", type=float, default=60.0, help="evict_idle idle_ttl, s"
    )
    parser.add_argument(
        "--disconnected-ttl",
        type=float,
        default=None,
        help="evict_idle disconnected_ttl, s (default: idle_ttl / 2)",
    )
    parser.add_argument(
        "--active", type=int, default=None, help="users that stay active (default 5 %%)"
    )
    parser.add_argument(
        "--closed-share",
        type=float,
        default=0.2,
        help="share of the other users that close their tab",
    )
    parser.add_argument(
        "--returning",
        type=int,
        default=100,
        help="idle/closed users that come back at the end",
    )
    parser.add_argument(
        "--batch", type=int, default=20, help="users connecting at once"
    )
    parser.add_argument(
        "--fresh", type=int, default=20, help="first-time visitors at the end"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="idle time after the TTLs before the RSS is read, s",
    )
    parser.add_argument(
        "--modes",
        help=f"comma-separated phases to run, of {','.join(MODES)} (default: all; "
        "--smoke: evict,recycle)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="recycle: gunicorn worker processes"
    )
    parser.add_argument(
        "--recycle-rss",
        type=float,
        metavar="MIB",
        help="recycle: evict_idle(recycle_rss=...) in MiB",
    )
    parser.add_argument(
        "--recycle-after",
        type=int,
        metavar="N",
        help="recycle: evict_idle(recycle_after=...)",
    )
    parser.add_argument(
        "--recycle-idle-rss",
        type=float,
        metavar="MIB",
        help=f"recycle: evict_idle(recycle_idle_rss=...) in MiB (default "
        f"{IDLE_RSS_MIB:g}, --smoke {SMOKE_IDLE_RSS_MIB:g}, unless another limit "
        "is given)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a quick check with tiny sizes (overrides the size options)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=RESULTS_DIR,
        help="where memory.md, memory.json and memory_rss.png go",
    )
    parser.add_argument(
        "--output",
        "--out",
        type=Path,
        help="the report file instead (its .json and _rss.png go beside it)",
    )
    parser.add_argument(
        "--replot",
        type=Path,
        help="only redo the report and plot of a saved memory.json (next to it)",
    )
    parser.add_argument("--serve", choices=SERVED, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    if args.disconnected_ttl is None:
        args.disconnected_ttl = args.idle_ttl / 2
    if args.active is None:
        args.active = max(1, args.sessions // 20)
    default = SMOKE_MODES if args.smoke else MODES
    modes = [m.strip() for m in (args.modes or ",".join(default)).split(",")]
    if not any(modes) or any(m not in MODES for m in modes if m):
        parser.error(f"--modes must list some of {', '.join(MODES)}")
    args.modes = [m for m in MODES if m in modes]
    args.report = args.output or args.output_dir / "memory.md"
    limits = (args.recycle_rss, args.recycle_after, args.recycle_idle_rss)
    if all(limit is None for limit in limits):
        args.recycle_idle_rss = SMOKE_IDLE_RSS_MIB if args.smoke else IDLE_RSS_MIB
    if any(limit is not None and limit <= 0 for limit in limits):
        parser.error("need recycle limits > 0")
    if args.workers < 1 or args.settle < 0:
        parser.error("need --workers >= 1 and --settle >= 0")
    if not 1 <= args.sessions <= 5000 or args.controls < 0 or args.batch < 1:
        parser.error("need 1 <= --sessions <= 5000, --controls >= 0, --batch >= 1")
    if not 0 <= args.active < args.sessions or not 0 <= args.closed_share <= 1:
        parser.error("need 0 <= --active < --sessions and 0 <= --closed-share <= 1")
    if args.idle_ttl <= 0 or args.disconnected_ttl <= 0:
        parser.error("need positive TTLs")
    if args.returning < 0 or args.fresh < 0:
        parser.error("need --returning >= 0 and --fresh >= 0")
    return args


async def run(args: argparse.Namespace) -> list[Phase]:
    """Every requested phase, one after the other."""
    phases: list[Phase] = []
    for mode in args.modes:
        phases.append(await run_phase(mode, args))
        share_per_session(phases, args)
    return phases


def share_per_session(phases: list[Phase], args: argparse.Namespace) -> None:
    """Give every phase the RSS per session of the plain phase if it ran, else
    of the first one (under evict, the first idle sessions may go before the
    last connect; under recycle, a worker may go)."""
    reference = next((p for p in phases if p.mode == "plain"), phases[0])
    per_session = (reference.connected_rss - reference.baseline) / args.sessions
    for phase in phases:
        phase.per_session = per_session


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the report and save it, the samples and the plot."""
    args = parse_args(argv)
    if args.serve:
        logging.getLogger("flet_resilient").setLevel(logging.ERROR)
        asyncio.run(serve(args))
        return
    if args.replot:
        saved = json.loads(args.replot.read_text())
        phases = load_phases(saved)
        saved_args = parse_args(shlex.split(saved["command"])[2:])
        report_path = args.replot.with_suffix(".md")
        write_results(phases, saved_args, saved["command"], saved, report_path)
        return
    logging.getLogger("flet_resilient").setLevel(logging.ERROR)
    phases = asyncio.run(run(args))
    command = command_line()
    title = (
        f"{args.sessions} sessions x {args.controls} controls, idle_ttl "
        f"{args.idle_ttl:g} s, disconnected_ttl {args.disconnected_ttl:g} s "
        f"({datetime.date.today().isoformat()}, {os.cpu_count()} cores)"
    )
    write_results(phases, args, command, {**about(), "title": title}, args.report)


def write_results(
    phases: list[Phase],
    args: argparse.Namespace,
    command: str,
    run: dict[str, str],
    report_path: Path,
) -> None:
    """Write the report (e.g. memory.md), its samples (memory.json) and plot
    (memory_rss.png) side by side; print the report."""
    report_path.parent.mkdir(parents=True, exist_ok=True)
    text = report(phases, args, command, run)
    report_path.with_suffix(".json").write_text(
        json.dumps(
            {
                "command": command,
                **{k: run[k] for k in ("date", "machine", "code", "title")},
                "phases": [{**asdict(p), "target": p.target} for p in phases],
            }
        )
    )
    image = report_path.with_name(f"{report_path.stem}_rss.png")
    if plot(phases, image, run["title"]):
        text += f"\n![server RSS over time]({image.name})\n"
    else:
        print(
            "matplotlib is not installed (pip install -e '.[plot]'): no plot",
            file=sys.stderr,
        )
    save_report(text, report_path)


if __name__ == "__main__":
    main()
