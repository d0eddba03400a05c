"""The capacity report: the SLO, each ramp's steps as a table, the capacities."""

from __future__ import annotations

import datetime
import math

from flet_resilient.loadtest.model import Plan
from flet_resilient.loadtest.ramp import SLO, Ramp, Step
from flet_resilient.loadtest.report import fmt_ms, fmt_num, warnings
from flet_resilient.measure import machine, percentile

STEP_COLUMNS = (
    "users",
    "click p50 ms",
    "click p99 ms",
    "heavy p99 ms",
    "loop lag p99 ms",
    "RSS MB",
    "server CPU cores",
    "load generator cores",
    "other cores",
    "SLO",
)


def step_cells(step: Step) -> list[str]:
    """One row of a ramp's table."""
    r = step.result
    clicks = [s.ms for s in r.bystander]
    heavy = [s.ms for s in r.heavy]
    seconds = r.seconds or math.nan
    return [
        f"{step.users:,}",
        fmt_ms(percentile(clicks, 50)),
        fmt_ms(percentile(clicks, 99)),
        fmt_ms(percentile(heavy, 99)) if heavy else "-",
        fmt_ms(r.lag_p99_ms),
        f"{r.tree_rss_peak / 2**20:,.0f}",
        fmt_num((r.server_cpu_s + r.workers_cpu_s) / seconds, 2),
        fmt_num(r.client_cores, 2),
        fmt_num(r.other_cores, 2),
        "met" if step.met else "missed: " + "; ".join(step.misses),
    ]


def ramp_table(ramp: Ramp) -> str:
    """Markdown table of one ramp, a row per step."""
    lines = [
        "| " + " | ".join(STEP_COLUMNS) + " |",
        "|" + "---:|" * (len(STEP_COLUMNS) - 1) + "---|",
    ]
    lines += ["| " + " | ".join(step_cells(step)) + " |" for step in ramp.steps]
    return "\n".join(lines) + "\n"


def capacity_table(ramps: list[Ramp]) -> str:
    """Markdown table: each ramp's capacity, and its ratio to plain on 1 worker."""
    plain = next((r for r in ramps if r.mode == "plain" and r.workers == 1), None)
    lines = ["| run | users at the SLO | vs plain |", "|---|---:|---:|"]
    for r in ramps:
        shown = f"{r.capacity:,}" + (" (or more)" if r.reached_top else "")
        ratio = "-"
        if plain is not None and plain.capacity and r is not plain:
            ratio = f"{r.capacity / plain.capacity:,.1f}x"
        lines.append(f"| {r.label} | {shown} | {ratio} |")
    return "\n".join(lines) + "\n"


def describe_slo(slo: SLO) -> str:
    """The objective in words."""
    text = f"click→patch p99 ≤ {slo.p99_ms:g} ms, no session lost"
    if slo.rss_budget is not None:
        text += f", RSS (servers + workers) ≤ {slo.rss_budget / 2**20:,.0f} MB"
    return text


def ramp_report(
    plan: Plan, ramps: list[Ramp], slo: SLO, command: str, plot_note: str
) -> str:
    """The markdown capacity report: settings, capacities, one table per ramp."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    who = f"users click `{plan.click_key}` every {plan.think:g} s on average"
    if plan.active_share < 1:
        who = f"{plan.active_share:.0%} of the {who}; the others watch"
    if plan.heavy_count(100):
        who += f"; {plan.heavy_share:.0%} click `{plan.heavy_key}` instead"
    lines = [
        f"# Capacity: `{plan.target}`",
        "",
        f"- date: {now}",
        f"- machine: {machine()}",
        f"- command: `{command}`",
        f"- SLO: {describe_slo(slo)}",
        f"- {who}; {plan.duration:g} s measured per step",
        "",
        capacity_table(ramps),
    ]
    for r in ramps:
        lines += [f"## {r.label}", "", ramp_table(r)]
    steps = [(r, step) for r in ramps for step in r.steps]
    notes = warnings(
        [step.result for _, step in steps],
        [f"{r.label}, {step.users:,} users" for r, step in steps],
    )
    lines += [
        "Users at the SLO: the largest step that met it before the first that did "
        'not ("or more": every step met it). RSS: peak of the servers and their '
        "worker processes. CPU: cores used by the servers and their workers, by the "
        "load generator, and by everything else on the machine (a balancer, Redis, "
        "the kernel's share of the sockets).",
        "",
    ]
    if notes:
        lines += [*(f"- {n}" for n in notes[:30]), ""]
    return "\n".join([*lines, plot_note, ""])
