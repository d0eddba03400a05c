"""One mode of a load test: start its servers, connect users, measure a window."""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import Callable
from typing import Any

from flet_resilient.loadtest.meter import Meter
from flet_resilient.loadtest.model import (
    FLOWING_S,
    ModeResult,
    Plan,
    Sample,
    Tick,
    progress,
)
from flet_resilient.loadtest.report import fmt_ms
from flet_resilient.loadtest.scenarios import (
    ClientFactory,
    User,
    clicker,
    connect_users,
    flaky_user,
    flet_client,
    guarded,
    prepare,
    viewer,
)
from flet_resilient.loadtest.server import (
    ServerProcess,
    Servers,
    WorkersBehindProxy,
)
from flet_resilient.measure import close_all as close_clients
from flet_resilient.measure import percentile
from flet_resilient.metrics import Histogram

Snapshots = list[dict[str, Any] | None]
Early = list[tuple[float, int, int, int]]  # (when, users, rss, tree) while connecting


def _lag(
    start: dict[str, Any] | None, end: dict[str, Any] | None
) -> tuple[float, float, int]:
    """(p99 ms, max ms, stalls) of the loop lag between two stats() snapshots.

    The histogram is cumulative, so the window is the bucket difference; its
    max is the window's highest bucket bound, capped by the server's max.
    """
    if not end or "loop" not in end:
        return math.nan, math.nan, 0
    before = (start or {}).get("loop", {}).get("lag", {}).get("buckets_ms", {})
    after = end["loop"]["lag"]
    window = Histogram()
    window.buckets = [
        after["buckets_ms"][key] - before.get(key, 0) for key in after["buckets_ms"]
    ]
    window.count = sum(window.buckets)
    window.max_ms = float(after["max_ms"])
    stalls = int(end["loop"].get("stalls", 0)) - int(
        (start or {}).get("loop", {}).get("stalls", 0)
    )
    return window.percentile(99), window.percentile(100), stalls


def window_lag(start: Snapshots, end: Snapshots) -> tuple[float, float, int]:
    """(p99 ms, max ms, stalls) over every worker: the worst loop, all stalls."""
    lags = [_lag(a, b) for a, b in zip(start, end, strict=True)]
    known = [lag for lag in lags if not math.isnan(lag[0])]
    if not known:
        return math.nan, math.nan, 0
    return (
        max(lag[0] for lag in known),
        max(lag[1] for lag in known),
        sum(lag[2] for lag in known),
    )


def counter_diff(start: Snapshots, end: Snapshots) -> dict[str, int]:
    """Server counters that moved between two snapshots, summed over workers."""
    total: dict[str, int] = {}
    for a, b in zip(start, end, strict=True):
        before = (a or {}).get("counters", {})
        for key, value in (b or {}).get("counters", {}).items():
            total[key] = total.get(key, 0) + int(value) - int(before.get(key, 0))
    return {k: v for k, v in sorted(total.items()) if v}


async def start_servers(plan: Plan, mode: str) -> Servers:
    """The app in `mode`: one child process, or `plan.workers` behind HAProxy."""
    if plan.workers > 1:
        logs = plan.out / f"workers-{mode}"
        return await WorkersBehindProxy(plan.target, mode, plan.workers, logs).start()
    return await ServerProcess(
        plan.target, mode, plan.out / f"server-{mode}.log"
    ).start()


async def run_mode(plan: Plan, mode: str, servers: Servers | None = None) -> ModeResult:
    """Serve the app in `mode`, run the scenario, measure; the server always
    stops (`servers`: already serving the app, left running)."""
    result = ModeResult(mode, plan.users)
    users: list[User] = []
    own = servers is None
    serving = await start_servers(plan, mode) if servers is None else servers
    try:
        meter = Meter(serving.pids())
        meter.sample()
        label = f"[{mode}]"
        early = await grow(plan, serving, meter, result, users, label)
        await measure(plan, serving, meter, result, users, label, early)
    finally:
        await close_all(users)
        if own:
            serving.stop()
    return result


async def grow(
    plan: Plan,
    servers: Servers,
    meter: Meter,
    result: ModeResult,
    users: list[User],
    label: str,
    make_client: ClientFactory = flet_client,
) -> Early:
    """Connect users until there are `result.users` and warm the new ones up;
    a progress line a second. Returns the samples taken meanwhile."""
    before = len(users)
    connecting = asyncio.create_task(
        connect_users(plan, servers.ws_url, result, users, result.users, make_client)
    )
    early: Early = []
    while not connecting.done():
        await asyncio.wait({connecting}, timeout=1.0)
        early.append((time.monotonic(), len(users), *meter.sample()))
        progress(f"{label} connecting {len(users)}/{result.users}")
    await connecting
    settle_collector()  # before the warm-up, which drains what its pass held up
    await prepare(plan, users[before:])
    return early


def settle_collector() -> None:
    """Move the simulated users' pages out of this process's garbage collector:
    with thousands of mirrored pages one full pass would stall the load
    generator for seconds, counted as server latency."""
    gc.collect()
    gc.freeze()


def _behaviour(
    plan: Plan, user: User, result: ModeResult, start: float, deadline: float
) -> Callable[[], Any]:
    """What `user` does during the window, by scenario and role."""
    if plan.scenario == "flaky":
        return lambda: flaky_user(user, plan, result, start, deadline)
    if plan.scenario == "clicks" and user.role != "viewer":
        return lambda: clicker(user, plan, result, start, deadline)
    return lambda: viewer(deadline)


def _clears(plan: Plan, user: User) -> bool:
    """Whether counting may drop the frames seen (nobody waits on them)."""
    return plan.scenario == "dashboard" or user.role == "viewer"


async def measure(
    plan: Plan,
    servers: Servers,
    meter: Meter,
    result: ModeResult,
    users: list[User],
    label: str,
    early: Early | None = None,
) -> None:
    """Run the scenario with `users` for `plan.duration` and record it in `result`."""
    stats_start = await asyncio.to_thread(servers.snapshots)
    meter.sample()
    meter.reset_peaks()
    cpu_start = meter.cpu_seconds()
    my_start, busy_start = meter.my_cpu(), meter.machine_busy()
    start = time.monotonic()
    result.ticks = [
        Tick(at - start, n, 0, 0, rss, tree) for at, n, rss, tree in early or ()
    ]
    window = (start, start + plan.duration)
    for user in users:
        user.account(result, window, clear=True)  # skip what came before
    tasks = [
        asyncio.create_task(
            guarded(user, result, _behaviour(plan, user, result, *window))
        )
        for user in users
    ]
    sampler = asyncio.create_task(_sample(plan, result, users, meter, window, label))
    try:
        await _finish(plan, result, users, tasks, start)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    wall = time.monotonic() - start
    result.seconds = plan.duration  # frames are counted inside the window only
    for user in users:
        user.account(result, window, clear=_clears(plan, user))
    result.rss_end, result.tree_rss_end = meter.sample()
    cpu_end = meter.cpu_seconds()
    result.server_cpu_s = cpu_end[0] - cpu_start[0]
    result.workers_cpu_s = cpu_end[1] - cpu_start[1]
    mine = meter.my_cpu() - my_start
    result.client_cores = mine / wall
    busy = meter.machine_busy() - busy_start
    result.other_cores = max(0.0, busy - mine - sum(cpu_end) + sum(cpu_start)) / wall
    result.rss_peak, result.tree_rss_peak = meter.rss_peak, meter.tree_rss_peak
    stats_end = await asyncio.to_thread(servers.snapshots, 30.0)
    result.lag_p99_ms, result.lag_max_ms, result.stalls = window_lag(
        stats_start, stats_end
    )
    result.counters = counter_diff(stats_start, stats_end)
    _tally_users(result, users, window[1])


async def _finish(
    plan: Plan,
    result: ModeResult,
    users: list[User],
    tasks: list[asyncio.Task[None]],
    start: float,
) -> None:
    """Wait for the users' tasks; clicks still waiting count at their age so far."""
    grace = plan.click_timeout + 5
    _, pending = await asyncio.wait(tasks, timeout=plan.duration + grace)
    now = time.monotonic()
    for user in users:
        if user.pending_since is not None:
            samples = result.heavy if user.role == "heavy" else result.bystander
            samples.append(
                Sample(
                    user.pending_since - start,
                    (now - user.pending_since) * 1000,
                    False,
                )
            )
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def _tally_users(result: ModeResult, users: list[User], deadline: float) -> None:
    """Who is still connected and receiving at the end of the window."""
    recent = deadline - FLOWING_S
    result.flowing = sum(
        1
        for u in users
        if not u.gone and u.last_patch is not None and u.last_patch >= recent
    )
    result.worst_gap_s = max((u.max_gap for u in users), default=0.0)
    result.connected = sum(
        1 for u in users if not u.gone and not u.client.closed.is_set()
    )


async def _sample(
    plan: Plan,
    result: ModeResult,
    users: list[User],
    meter: Meter,
    window: tuple[float, float],
    label: str,
) -> None:
    """Once a second: count frames, sample memory, print a progress line."""
    start = window[0]
    seen_clicks = 0
    while True:
        await asyncio.sleep(1.0)
        frames = size = 0
        for user in users:
            counted, nbytes = user.account(result, window, clear=_clears(plan, user))
            frames += counted
            size += nbytes
        rss, tree = meter.sample()
        now = time.monotonic() - start
        connected = sum(1 for u in users if not u.gone and not u.client.closed.is_set())
        result.ticks.append(Tick(now, connected, frames, size, rss, tree))
        recent = [s.ms for s in result.bystander[seen_clicks:]]
        seen_clicks = len(result.bystander)
        pending = sum(1 for u in users if u.pending_since is not None)
        line = f"{label} {now:5.1f}s users {connected}/{result.users}"
        if plan.scenario == "dashboard":
            line += f" frames/s {frames} KB/s {size / 1024:.0f}"
        else:
            p99 = percentile(recent, 99)
            clicks = len(result.bystander)
            line += f" clicks {clicks} p99 {fmt_ms(p99)} ms pending {pending}"
        if plan.scenario == "flaky":
            lost = sum(r.lost for r in result.reconnects)
            line += f" reconnects {len(result.reconnects)} lost {lost}"
        progress(f"{line} rss {tree / 2**20:.0f} MB")


async def close_all(users: list[User]) -> None:
    """Close every user's client; abort those that do not close within 5 s."""
    await close_clients([u.client for u in users], timeout=5)


async def run(plan: Plan, modes: list[str]) -> list[ModeResult]:
    """Every mode, one after the other, each with its own server."""
    results = []
    for mode in modes:
        progress(
            f"[{mode}] {plan.users} users, {plan.scenario}, {plan.duration:g} s: "
            f"{plan.target}"
            + (" (FLET_RESILIENT_DISABLE=1)" if mode == "plain" else "")
        )
        results.append(await run_mode(plan, mode))
    return results
