"""Deploys without lost work: a rolling restart and a SIGKILL under load, plain
Flet vs flet-resilient.

Run from the repository root (needs redis-server and haproxy: `.ci/install-redis`,
`.ci/install-haproxy`; `pip install -e .[test]` for redis-py and psutil):

    python benchmarks/bench_deploy.py           # 200 users, about 2 minutes
    python benchmarks/bench_deploy.py --smoke   # 6 users, about 40 s

Two phases, `plain` (`FLET_RESILIENT_DISABLE=1`) and `resilient`, each on a
fresh `flet_resilient.cluster.Cluster`: a real redis-server, 2 uvicorn workers
of `tests/apps/deploy_app.py` (a counter and a note, no save calls) and HAProxy
in front, all on 127.0.0.1. In each:

0. `--users` simulated users (`FletClient`, Flet's real protocol) connect
   through HAProxy, type a note and click "+1" 1-5 times (each click waits for
   its count to show);
1. rolling restart: each worker in turn is SIGTERMed (flet-resilient drains
   it) and started again, back in rotation before the next one goes down;
   the worker restarted first now serves everyone, the last none;
2. rebalance: the users are followed until no socket has closed for
   `BALANCE_QUIET_S` (flet-resilient moves users off the crowded worker;
   plain Flet leaves them);
3. SIGKILL: each user clicks once more; `--save-delay` plus a margin later,
   the worker serving the most users is SIGKILLed.

Whenever a user's socket closes it comes back like the Flutter client: the same
session id and storage (its signed key), a new socket through HAProxy after
500 ms, the wait doubling after each failed try (30 s in all). The page is
consistent when it shows the count and note the user last saw (step 2: every
change, all older than `save_delay`). A page showing anything else loses that
user, unless the server closes it within 5 s and the next page is right:
flet-resilient does that to a session begun while the store did not answer in
time (its fresh provisional state is replaced by the stored one); such users
are kept but counted apart. Users never disconnected are kept if their page is
still right.

Reported per phase: users kept per step; reconnect -> consistent p50/p99 (from
the start of the try that got the page; and from the socket closing, which
includes the client's 500 ms wait); drain time (the workers' "drained N
sessions" log line) and SIGTERM -> exit; store writes per second from Redis's
own counters (`evalsha` calls: writes tried, `hset` calls: writes done); worker
CPU. Goal (flet-resilient): 100 % kept in every step, reconnect -> consistent
p99 < 500 ms. The markdown table goes to stdout and to `--output` (default
`benchmarks/results/deploy.md`, gitignored); `--keep-logs DIR` keeps the
workers', Redis's and HAProxy's logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from clients import FIRST_RETRY_S, connect_many, connect_retrying, same_browser
from harness import RESULTS_DIR, bench_main, choices, each_phase, ms, report_header

from flet_resilient.cluster import Cluster, Worker
from flet_resilient.loadtest.meter import CpuMeter
from flet_resilient.measure import close_all, percentile
from flet_resilient.testing import FletClient

MODES = ("plain", "resilient")
STEPS = ("rolling restart", "rebalance", "SIGKILL")
TITLES = {"plain": "plain Flet", "resilient": "flet-resilient"}
ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "apps"
APP = "deploy_app:create_app"
GOAL_P99_MS = 500.0
SMOKE_USERS = 6
CLICKS = (1, 5)  # clicks per user before the rolling restart
RETRY_BOUND_S = 30.0  # a user with no page back this long after closing failed
RELOAD_GRACE_S = 5.0  # how long a wrong page is watched for a reload
QUIET_S = 1.0  # after a disruption, socket closings still followed
SAVE_MARGIN_S = 0.5  # on top of save_delay before the SIGKILL
STEP_TIMEOUT_S = 60.0  # longest wait for one click, or for all reconnects
BALANCE_QUIET_S = 3.0  # rebalance: done once no socket closed for this long
BALANCE_TIMEOUT_S = 30.0
SHOWN_LOSSES = 3  # lost users described per step in the report
SAMPLE_S = 0.25  # how often worker CPU and Redis counters are sampled
NOISY_CORES = 0.2  # other processes' CPU use that makes a phase's numbers suspect
DRAINED = re.compile(r"drained (\d+) sessions in ([\d.]+) s")
OUTAGE = re.compile(r"state store \S+ unavailable")


# --- users ----------------------------------------------------------------------------


@dataclass
class User:
    """One simulated browser and what its page should show."""

    index: int
    client: FletClient
    count: int = 0
    note: str = ""

    def shows(self) -> bool:
        """The page shows this user's count and note."""
        return (
            self.client.value("count") == str(self.count)
            and (self.client.value("note") or "") == self.note
        )

    def adopt(self) -> None:
        """After a loss: what the page shows is the user's state from now on."""
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self.count = int(self.client.value("count"))
            self.note = self.client.value("note") or ""


async def click(user: User) -> None:
    """Click "+1" and wait for the page to show the new count."""
    user.count += 1
    await user.client.click("inc")
    await user.client.wait_for(user.shows, STEP_TIMEOUT_S)


async def type_note(user: User) -> None:
    """Type a note into the field, as the browser reports it."""
    user.note = f"note of user {user.index}"
    await user.client.set_props("note", value=user.note)
    await user.client.event("note", "change", user.note)


async def first_changes(user: User, clicks: int) -> None:
    """A note, then `clicks` clicks."""
    await type_note(user)
    for _ in range(clicks):
        await click(user)


# --- one step: a disruption, followed by every user's reconnects ----------------------


@dataclass
class Step:
    """What one disruption did to the users."""

    name: str
    users: int
    disconnected: set[int] = field(default_factory=set)
    lost: set[int] = field(default_factory=set)  # came back to a wrong page
    wrong: set[int] = field(default_factory=set)  # shown a wrong page at first
    failed: set[int] = field(default_factory=set)  # no page back in time
    reconnect_ms: list[float] = field(default_factory=list)  # try -> consistent
    outage_ms: list[float] = field(default_factory=list)  # closed -> consistent
    page_ms: list[float] = field(default_factory=list)  # closed -> any page
    closings: int = 0
    tries: int = 0
    drains: list[str] = field(default_factory=list)
    exits_s: list[float] = field(default_factory=list)
    writes: Writes | None = None
    seconds: float = 0.0
    note: str = ""
    served: Counter[str] = field(default_factory=Counter)  # pid -> pages back
    losses: list[str] = field(default_factory=list)  # what lost users saw

    @property
    def kept(self) -> int:
        return self.users - len(self.lost | self.failed)


async def come_back(user: User, closed_at: float, step: Step) -> None:
    """Reconnect until the page shows the user's state; else lost (or failed).

    A wrong page may still be put right: a session begun while the store did
    not answer in time gets a provisional fresh state, and flet-resilient
    closes it (the client reconnects) once the store answers and holds the
    user's own. So a wrong page is watched for `RELOAD_GRACE_S`.
    """
    first = True
    while (began := await reconnect(user, closed_at, step)) is not None:
        if first:
            step.page_ms.append((time.perf_counter() - closed_at) * 1000)
            first = False
        if user.shows():
            if user.index not in step.lost:
                now = time.perf_counter()
                step.reconnect_ms.append((now - began) * 1000)
                step.outage_ms.append((now - closed_at) * 1000)
            return
        step.wrong.add(user.index)
        late = time.perf_counter() > closed_at + RETRY_BOUND_S
        if late or not await closes_soon(user.client):
            lose(user, step)
            return
        step.closings += 1
    step.failed.add(user.index)


def lose(user: User, step: Step) -> None:
    """The user came back to a wrong page: note what it showed, adopt that."""
    step.lost.add(user.index)
    page = user.client
    step.losses.append(
        f"user {user.index} expected {user.count} / {user.note!r}, "
        f"shown {page.value('count')} / {page.value('note')!r} by pid "
        f"{page.value('pid')}"
    )
    user.adopt()


async def reconnect(user: User, closed_at: float, step: Step) -> float | None:
    """Come back like the Flutter client (the same browser, 500 ms, doubling)
    until a page arrives; the start of the try that got it (None: no page
    within `RETRY_BOUND_S` of the closing)."""
    tries: list[float] = []

    def make() -> FletClient:
        tries.append(time.perf_counter())
        step.tries += 1
        return same_browser(user.client)

    within = closed_at + RETRY_BOUND_S - time.perf_counter()
    try:
        fresh = await connect_retrying(make, lambda c: c.find("count"), within=within)
    except TimeoutError:
        return None
    user.client = fresh
    step.served[str(fresh.value("pid"))] += 1
    return tries[-1]


async def closes_soon(client: FletClient) -> bool:
    """Whether the server closes this page within `RELOAD_GRACE_S`."""
    try:
        await asyncio.wait_for(client.closed.wait(), RELOAD_GRACE_S)
    except TimeoutError:
        return False
    return True


async def follow(user: User, step: Step, stop: asyncio.Event) -> None:
    """Bring the user back each time its socket closes, until `stop` is set."""
    while True:
        closed = asyncio.ensure_future(user.client.closed.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        stopped.cancel()
        if not user.client.closed.is_set():
            return
        closed_at = time.perf_counter()
        step.closings += 1
        step.disconnected.add(user.index)
        await come_back(user, closed_at, step)
        if user.index in step.failed:
            return


async def disrupt(
    step: Step, users: list[User], action: Callable[[], Awaitable[object]]
) -> Step:
    """Await `action()` while every user is followed; then check them all."""
    stop = asyncio.Event()
    followers = [asyncio.ensure_future(follow(u, step, stop)) for u in users]
    try:
        await action()
        await asyncio.sleep(QUIET_S)
        stop.set()
        await asyncio.wait(followers, timeout=STEP_TIMEOUT_S)
    finally:
        for follower in followers:
            follower.cancel()
    for user in users:
        if user.client.closed.is_set():
            step.failed.add(user.index)
        elif not user.shows():
            lose(user, step)
    return step


def restart_all(cluster: Cluster, step: Step) -> None:
    """Rolling restart: each worker SIGTERMed and started, back UP before the
    next goes; the drain lines and exit times go into `step`."""
    for worker, server in zip(cluster.workers, cluster.balancer.servers, strict=True):
        offset = worker.log_path.stat().st_size if worker.log_path.exists() else 0
        try:
            step.exits_s.append(worker.terminate())
        except TimeoutError:  # hung in its shutdown: terminate() SIGKILLed it
            step.exits_s.append(math.inf)
        step.drains += drain_lines(worker, offset)
        worker.start()
        cluster.balancer.wait_for_status(server, "UP")


def drain_lines(worker: Worker, offset: int) -> list[str]:
    """The drain log lines the worker wrote past `offset` of its log."""
    with open(worker.log_path, "rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return [line for line in text.splitlines() if DRAINED.search(line)]


def busiest(cluster: Cluster, users: list[User]) -> tuple[int, int]:
    """(index of the worker serving the most users, how many it serves)."""
    pids = [u.client.value("pid") for u in users if not u.client.closed.is_set()]
    served = [pids.count(str(w.pid)) for w in cluster.workers]
    index = max(range(len(served)), key=served.__getitem__)
    return index, served[index]


def kill_worker(cluster: Cluster, index: int) -> None:
    """SIGKILL one worker and wait until the balancer has seen it go."""
    cluster.workers[index].kill()
    cluster.balancer.wait_for_status(cluster.balancer.servers[index], "DOWN")


# --- the server side, measured from outside -------------------------------------------


@dataclass(frozen=True)
class Writes:
    """Redis's own command counters: writes tried and done, reads."""

    tried: int = 0  # evalsha: the compare-and-set script ran
    done: int = 0  # hset inside it: the version was newer, the state written
    reads: int = 0  # hmget: a session read a user's state

    @classmethod
    async def read(cls, store: aioredis.Redis) -> Writes:
        """The counters now."""
        stats = await store.info("commandstats")

        def calls(name: str) -> int:  # that ran to the end (not NOSCRIPT)
            counters = stats.get(f"cmdstat_{name}", {})
            return int(counters.get("calls", 0)) - int(counters.get("failed_calls", 0))

        return cls(calls("evalsha") + calls("eval"), calls("hset"), calls("hmget"))

    def __sub__(self, other: Writes) -> Writes:
        return Writes(
            self.tried - other.tried, self.done - other.done, self.reads - other.reads
        )


class Sampler:
    """Samples CPU times (workers come and go) and Redis's write counter."""

    def __init__(self, cluster: Cluster, store: aioredis.Redis) -> None:
        self.cluster = cluster
        self.store = store
        self.meter = CpuMeter()
        self.worker_pids: dict[int, str] = {}  # pid -> worker name
        self.writes: list[tuple[float, int]] = []  # (time, writes tried)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Sampler:
        self.task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.sample_cpu()

    async def _run(self) -> None:
        while True:
            self.sample_cpu()
            with contextlib.suppress(Exception):
                tried = (await Writes.read(self.store)).tried
                self.writes.append((time.perf_counter(), tried))
            await asyncio.sleep(SAMPLE_S)

    def sample_cpu(self) -> None:
        """Note every process's CPU time, and which of them are workers."""
        self.meter.sample()
        for worker in self.cluster.workers:
            process = worker.process
            if process is not None and process.poll() is None:
                self.worker_pids[process.pid] = worker.name

    @property
    def worker_cpu_s(self) -> float:
        return sum(self.meter.used(pid) for pid in self.worker_pids)

    def peak_writes_per_s(self) -> float:
        """The most writes tried within one second (sliding over the samples)."""
        best, first = 0, 0
        for at, tried in self.writes:
            while at - self.writes[first][0] > 1.0:
                first += 1
            best = max(best, tried - self.writes[first][1])
        return float(best)


@contextlib.asynccontextmanager
async def measured(step: Step, store: aioredis.Redis) -> AsyncIterator[None]:
    """Time the block and count the store writes it caused into `step`."""
    before = await Writes.read(store)
    started = time.perf_counter()
    yield
    step.seconds = time.perf_counter() - started
    step.writes = (await Writes.read(store)) - before


# --- one phase ------------------------------------------------------------------------


@dataclass
class Phase:
    """What one phase measured."""

    mode: str
    users: int
    steps: list[Step] = field(default_factory=list)
    setup: Step = field(default_factory=lambda: Step("clicks", 0))
    peak_writes_per_s: float = 0.0
    worker_cpu_s: float = 0.0
    users_cpu_s: float = 0.0  # this process: the simulated users
    worker_pids: dict[int, str] = field(default_factory=dict)  # pid -> name
    store_outages: int = 0  # "state store ... unavailable" lines the workers logged
    seconds: float = 0.0
    own_cores: float = 0.0
    other_cores: float = 0.0


def phase_env(mode: str, save_delay: float) -> dict[str, str]:
    """The workers' environment: this checkout's flet_resilient, the knobs."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path, "SAVE_DELAY": f"{save_delay:g}"}
    if mode == "plain":
        env["FLET_RESILIENT_DISABLE"] = "1"
    return env


async def setup(
    phase: Phase, cluster: Cluster, store: aioredis.Redis, rng: random.Random
) -> list[User]:
    """Connect the users through the balancer; each types a note and clicks."""
    clients = await connect_many(cluster.ws_url, phase.users)
    users = [User(i, c) for i, c in enumerate(clients)]
    async with measured(phase.setup, store):
        await asyncio.gather(*(first_changes(u, rng.randint(*CLICKS)) for u in users))
    return users


async def rolling_step(
    cluster: Cluster, users: list[User], store: aioredis.Redis
) -> Step:
    """Step 1: restart both workers in turn while the users follow."""
    step = Step(STEPS[0], len(users))
    async with measured(step, store):
        await disrupt(
            step, users, lambda: asyncio.to_thread(restart_all, cluster, step)
        )
    return step


async def rebalance_step(
    cluster: Cluster, users: list[User], store: aioredis.Redis
) -> Step:
    """Step 2: follow the users until the fleet is quiet (or the timeout)."""
    step = Step(STEPS[1], len(users))
    async with measured(step, store):
        await disrupt(step, users, lambda: quiet(step))
        _, served = busiest(cluster, users)
        step.note = f"then the busiest worker serves {served} of {len(users)} users"
    return step


async def quiet(step: Step) -> None:
    """Return once no socket has closed for `BALANCE_QUIET_S` (at most
    `BALANCE_TIMEOUT_S`)."""
    began = last_change = time.perf_counter()
    closings = step.closings
    while time.perf_counter() - began < BALANCE_TIMEOUT_S:
        await asyncio.sleep(0.1)
        if step.closings != closings:
            closings, last_change = step.closings, time.perf_counter()
        elif time.perf_counter() - last_change >= BALANCE_QUIET_S:
            return


async def kill_step(
    cluster: Cluster, users: list[User], store: aioredis.Redis, save_delay: float
) -> Step:
    """Step 3: one more click each, wait past save_delay, SIGKILL the busiest."""
    step = Step(STEPS[2], len(users))
    async with measured(step, store):
        await asyncio.gather(*(click(u) for u in users))
        await asyncio.sleep(save_delay + SAVE_MARGIN_S)
        index, served = busiest(cluster, users)
        step.note = f"worker {index} killed, serving {served} of {len(users)} users"
        await disrupt(
            step, users, lambda: asyncio.to_thread(kill_worker, cluster, index)
        )
    return step


async def run_phase(mode: str, args: argparse.Namespace) -> Phase:
    """One phase on a fresh cluster: setup, rolling restart, rebalance, SIGKILL."""
    phase = Phase(mode, args.users)
    rng = random.Random(f"{args.seed}-deploy")
    env = phase_env(mode, args.save_delay)
    log_dir = args.keep_logs / mode if args.keep_logs else None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    async with Cluster(APP, cwd=APPS, workers=2, env=env, log_dir=log_dir) as cluster:
        store = aioredis.Redis.from_url(cluster.redis.url)
        started = time.perf_counter()
        users: list[User] = []
        try:
            async with Sampler(cluster, store) as sampler:
                users = await setup(phase, cluster, store, rng)
                phase.steps.append(await rolling_step(cluster, users, store))
                phase.steps.append(await rebalance_step(cluster, users, store))
                phase.steps.append(
                    await kill_step(cluster, users, store, args.save_delay)
                )
            phase.seconds = time.perf_counter() - started
            phase.own_cores, phase.other_cores = sampler.meter.cores()
            phase.peak_writes_per_s = sampler.peak_writes_per_s()
            phase.worker_cpu_s = sampler.worker_cpu_s
            phase.users_cpu_s = sampler.meter.used(os.getpid())
            phase.worker_pids = sampler.worker_pids
            phase.store_outages = sum(
                len(OUTAGE.findall(w.log_path.read_text(errors="replace")))
                for w in cluster.workers
            )
        finally:
            await close_all([u.client for u in users])
            await store.aclose()
    return phase


# --- report ---------------------------------------------------------------------------


def kept(step: Step) -> str:
    """`kept / users (percent)`."""
    share = 100 * step.kept / step.users if step.users else math.nan
    return f"{step.kept} / {step.users} ({share:.0f} %)"


def p50_p99(values: list[float]) -> str:
    """`p50 / p99` in ms."""
    return f"{ms(percentile(values, 50))} / {ms(percentile(values, 99))}"


def per_s(count: int, seconds: float) -> str:
    """A rate with one decimal (n/a for no time)."""
    return f"{count / seconds:.1f}" if seconds > 0 else "n/a"


def drain_seconds(step: Step) -> str:
    """The seconds of each drain log line, or n/a."""
    found = [
        f"{m.group(1)} in {m.group(2)}"
        for line in step.drains
        if (m := DRAINED.search(line))
    ]
    return ", ".join(found) if found else "n/a (no drain)"


def rows(phases: list[Phase]) -> list[tuple[str, list[str]]]:
    """(label, one cell per phase) for every row of the table."""
    table: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Callable[[Phase], str]) -> None:
        table.append((label, [cell(p) for p in phases]))

    def per_step(label: str, cell: Callable[[Step], str], clicks: bool = False) -> None:
        names = ("clicks", *STEPS) if clicks else STEPS
        for index, name in enumerate(names):
            row(f"{label}: {name}", nth_step(index, cell, clicks))

    per_step("users kept", kept)
    per_step(
        "disconnected users / socket closings",
        lambda s: f"{len(s.disconnected)} / {s.closings}",
    )
    per_step("reconnect -> consistent p50 / p99 ms", lambda s: p50_p99(s.reconnect_ms))
    row(
        "socket closed -> consistent p50 / p99 ms (every step)",
        lambda p: p50_p99([v for s in p.steps for v in s.outage_ms]),
    )
    row(
        "socket closed -> page back, any state, p50 / p99 ms",
        lambda p: p50_p99([v for s in p.steps for v in s.page_ms]),
    )
    per_step(
        "users first shown a wrong page, then their own",
        lambda s: str(len(s.wrong - s.lost)),
    )
    row(
        "reconnect tries / users with no page in 30 s",
        lambda p: (
            f"{sum(s.tries for s in p.steps)} / {sum(len(s.failed) for s in p.steps)}"
        ),
    )
    row(
        "drain per worker: sessions in s (log line)",
        lambda p: drain_seconds(p.steps[0]),
    )
    row(
        "SIGTERM -> exit per worker, s",
        lambda p: ", ".join(
            f"{s:.2f}" if math.isfinite(s) else "hung (SIGKILLed after 15 s)"
            for s in p.steps[0].exits_s
        ),
    )
    per_step(
        "store writes tried / done, per s",
        lambda s: writes_cell(s.writes, s.seconds),
        clicks=True,
    )
    row(
        "store outages logged by the workers (a call over store_timeout)",
        lambda p: str(p.store_outages),
    )
    row("store writes/s, peak (1 s window)", lambda p: f"{p.peak_writes_per_s:.0f}")
    row(
        "store reads (hmget: restores, outage probes)",
        lambda p: str(sum(s.writes.reads for s in p.steps if s.writes)),
    )
    row(
        "CPU s: workers / simulated users / other processes, in phase s",
        lambda p: (
            f"{p.worker_cpu_s:.1f} / {p.users_cpu_s:.1f} / "
            f"{p.other_cores * p.seconds:.1f}, {p.seconds:.1f}"
        ),
    )
    return table


def nth_step(
    index: int, cell: Callable[[Step], str], clicks: bool
) -> Callable[[Phase], str]:
    """A phase's cell: `cell` of its step `index` (the clicks first, if `clicks`)."""

    def pick(phase: Phase) -> str:
        steps = [phase.setup, *phase.steps] if clicks else phase.steps
        return cell(steps[index])

    return pick


def writes_cell(writes: Writes | None, seconds: float) -> str:
    """`tried / done, tried per second`."""
    if writes is None:
        return "n/a"
    return f"{writes.tried} / {writes.done}, {per_s(writes.tried, seconds)}/s"


def phase_notes(phase: Phase) -> list[str]:
    """Where the users came back, and a warning if a page came from elsewhere."""
    names = {str(pid): f"{name} (pid {pid})" for pid, name in phase.worker_pids.items()}
    lines = []
    for step in phase.steps:
        served = ", ".join(
            f"{names.get(pid, f'pid {pid} (NOT a worker of this cluster)')} {n}"
            for pid, n in sorted(step.served.items())
        )
        extra = f"; {step.note}" if step.note else ""
        lines.append(
            f"- {TITLES[phase.mode]}, {step.name}: pages back from {served}{extra}"
        )
        if step.losses:
            more = len(step.losses) - SHOWN_LOSSES
            lines.append(
                f"  - lost: {'; '.join(step.losses[:SHOWN_LOSSES])}"
                + (f"; {more} more" if more > 0 else "")
            )
    foreign = {pid for s in phase.steps for pid in s.served} - set(names)
    if foreign:
        lines.append(
            f"- WARNING: {TITLES[phase.mode]} pages came from processes that are "
            f"not this cluster's workers ({', '.join(sorted(foreign))}): a port "
            "was taken by another program; this phase's numbers are not valid"
        )
    return lines


def goal_lines(phases: list[Phase]) -> list[str]:
    """Whether flet-resilient met the goal, and whether plain Flet lost users."""
    lines = []
    for phase in phases:
        steps = ", ".join(f"{s.name} {kept(s)}" for s in phase.steps)
        p99 = percentile([v for s in phase.steps for v in s.reconnect_ms], 99)
        if phase.mode == "resilient":
            met = all(s.kept == s.users for s in phase.steps) and p99 < GOAL_P99_MS
            lines.append(
                f"- goal (flet-resilient: 100 % kept in every step, reconnect -> "
                f"consistent p99 < {GOAL_P99_MS:g} ms): {'met' if met else 'NOT met'}"
                f" ({steps}; p99 {ms(p99)} ms)"
            )
        else:
            lines.append(f"- plain Flet: {steps}")
    return lines


def report(phases: list[Phase], args: argparse.Namespace, command: str) -> str:
    """The markdown report: settings, table, goal."""
    header = " | ".join(TITLES[p.mode] for p in phases)
    lines = [
        *report_header("bench_deploy", command, ROOT),
        f"- load before the run (1/5/15 min): {args.load_before}",
        f"- {args.users} users, 2 uvicorn workers behind HAProxy, one Redis; "
        f"save_delay {args.save_delay:g} s; each user: a note and "
        f"{CLICKS[0]}-{CLICKS[1]} clicks, then a rolling restart, a rebalance "
        f"(until no socket closed for {BALANCE_QUIET_S:g} s), one more "
        f"click, {args.save_delay + SAVE_MARGIN_S:g} s, a SIGKILL; reconnects "
        f"after {FIRST_RETRY_S * 1000:.0f} ms, doubling",
        "",
        f"| | {header} |",
        "|---|" + "---:|" * len(phases),
    ]
    lines += [f"| {label} | {' | '.join(cells)} |" for label, cells in rows(phases)]
    lines.append("")
    for phase in phases:
        lines += phase_notes(phase)
    busy = [TITLES[p.mode] for p in phases if p.other_cores > NOISY_CORES]
    if busy:
        lines.append(
            f"- warning: other processes used more than {NOISY_CORES:g} cores during "
            f"{', '.join(busy)}; those times include CPU contention from them"
        )
    lines += goal_lines(phases)
    return "\n".join(lines) + "\n"


# --- entry point ----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200, help="simulated users")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"a quick check: {SMOKE_USERS} users (overrides --users)",
    )
    parser.add_argument(
        "--save-delay",
        type=float,
        default=1.0,
        help="the app's write-behind save_delay, s (default: the library's 1)",
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated phases to run, of plain,resilient",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--keep-logs",
        type=Path,
        help="keep the workers', Redis's and HAProxy's logs in DIR/<mode>/",
    )
    parser.add_argument(
        "--output",
        "--out",
        type=Path,
        default=RESULTS_DIR / "deploy.md",
        help="report file (default: benchmarks/results/deploy.md, gitignored)",
    )
    args = parser.parse_args(argv)
    args.modes = choices(parser, "--modes", args.modes, MODES)
    if args.smoke:
        args.users = SMOKE_USERS
    if not 2 <= args.users <= 1000 or not 0 < args.save_delay <= 30:
        parser.error("need 2 <= --users <= 1000 and 0 < --save-delay <= 30")
    return args


async def run(args: argparse.Namespace) -> list[Phase]:
    """Every requested phase, one after the other."""
    return await each_phase(args.modes, run_phase, args, f"{args.users} users")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the report and save it."""
    args = parse_args(argv)
    args.load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    bench_main(args, run, report, args.output)


if __name__ == "__main__":
    main()
