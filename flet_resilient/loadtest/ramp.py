"""Capacity mode: add users step by step until a service-level objective breaks.

Each step connects more users to the same server (or workers), measures a
window of `plan.duration` seconds like a plain run, and checks the SLO: the
bystanders' click→patch p99 at most `p99_ms`, no session lost, the servers'
RSS (with their `@offload` workers) within the budget. The capacity is the
largest step that met it before the first one that did not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from flet_resilient.loadtest.meter import Meter
from flet_resilient.loadtest.model import ModeResult, Plan, progress
from flet_resilient.loadtest.report import fmt_ms
from flet_resilient.loadtest.runner import close_all, grow, measure, start_servers
from flet_resilient.loadtest.scenarios import ClientFactory, User, flet_client
from flet_resilient.loadtest.server import Servers
from flet_resilient.measure import percentile

__all__ = ["SLO", "Ramp", "Step", "parse_ramp", "ramp", "ramp_mode"]


@dataclass(frozen=True)
class SLO:
    """What a step must meet: click→patch p99, every session kept, RSS budget."""

    p99_ms: float = 200.0
    rss_budget: int | None = None  # bytes, servers plus their worker processes

    def misses(self, result: ModeResult) -> list[str]:
        """Why `result` misses the objective, one reason each (empty: met)."""
        reasons = []
        p99 = percentile((s.ms for s in result.bystander), 99)
        if not result.bystander:
            reasons.append("no click measured")
        elif p99 > self.p99_ms:
            reasons.append(f"click p99 {fmt_ms(p99)} ms > {self.p99_ms:g} ms")
        lost = result.users - result.connected
        if lost > 0:
            reasons.append(f"{lost} sessions lost or not connected")
        if self.rss_budget is not None and result.tree_rss_peak > self.rss_budget:
            reasons.append(
                f"RSS {result.tree_rss_peak / 2**20:,.0f} MB > "
                f"{self.rss_budget / 2**20:,.0f} MB"
            )
        return reasons


@dataclass
class Step:
    """One step of a ramp: its users, what was measured, why it missed the SLO."""

    users: int
    result: ModeResult
    misses: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return not self.misses


@dataclass
class Ramp:
    """A ramp of one mode on `workers` server processes."""

    mode: str
    workers: int
    steps: list[Step] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The mode, with its worker count when there are several."""
        if self.workers == 1:
            return self.mode
        return f"{self.mode}, {self.workers} workers"

    @property
    def capacity(self) -> int:
        """The most users a step carried within the SLO, before the first miss
        (0: the first step missed)."""
        carried = 0
        for step in self.steps:
            if not step.met:
                break
            carried = step.users
        return carried

    @property
    def reached_top(self) -> bool:
        """Whether every step met the SLO (the capacity is then a lower bound)."""
        return bool(self.steps) and all(step.met for step in self.steps)


def parse_ramp(text: str) -> list[int]:
    """`START:STOP:STEP` → the user counts START, START+STEP, ... up to STOP."""
    try:
        start, stop, step = (int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"--ramp wants START:STOP:STEP, got {text!r}") from None
    if start < 1 or step < 1 or stop < start:
        raise ValueError(f"--ramp needs 1 <= START <= STOP and STEP >= 1: {text!r}")
    return list(range(start, stop + 1, step))


async def ramp_mode(
    plan: Plan,
    mode: str,
    counts: list[int],
    slo: SLO,
    start: Callable[[Plan, str], Awaitable[Servers]] = start_servers,
    make_client: ClientFactory = flet_client,
    then: Callable[[Servers], Awaitable[object]] | None = None,
) -> Ramp:
    """Ramp `mode` through `counts` users on one server (or `plan.workers`)
    until a step misses `slo`; the servers always stop.

    `start` and `make_client` serve and drive another framework's twin app
    (the capacity benchmark's NiceGUI run); `then` runs on the same servers
    once the ramp's users have left (e.g. a reconnect phase)."""
    result = Ramp(mode, plan.workers)
    users: list[User] = []
    servers = await start(plan, mode)
    try:
        meter = Meter(servers.pids())
        meter.sample()
        for count in counts:
            label = f"[{result.label} {count} users]"
            measured = ModeResult(mode, count)
            await grow(plan, servers, meter, measured, users, label, make_client)
            await measure(plan, servers, meter, measured, users, label)
            step = Step(count, measured, slo.misses(measured))
            result.steps.append(step)
            progress(f"{label} {_verdict(step)}")
            if not step.met:
                break
        await close_all(users)
        if then is not None:
            await then(servers)
    finally:
        await close_all(users)
        servers.stop()
    return result


def _verdict(step: Step) -> str:
    """A step's progress line: its p99, lag, RSS and whether it met the SLO."""
    r = step.result
    p99 = percentile((s.ms for s in r.bystander), 99)
    state = "SLO met" if step.met else "SLO missed: " + "; ".join(step.misses)
    return (
        f"click p99 {fmt_ms(p99)} ms, loop lag p99 {fmt_ms(r.lag_p99_ms)} ms, "
        f"RSS {r.tree_rss_peak / 2**20:,.0f} MB: {state}"
    )


async def ramp(
    plan: Plan, modes: list[str], workers: list[int], counts: list[int], slo: SLO
) -> list[Ramp]:
    """Every mode on every worker count, one ramp after the other."""
    ramps = []
    for count in workers:
        for mode in modes:
            progress(
                f"[{mode}] ramp {counts[0]}..{counts[-1]} users on {count} "
                f"worker(s), {plan.duration:g} s a step: {plan.target}"
            )
            plan.workers = count
            ramps.append(await ramp_mode(plan, mode, counts, slo))
    return ramps
