"""The load test's PNG: latency (or frames) over time per mode, and RSS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flet_resilient.loadtest.model import ModeResult, Plan
from flet_resilient.loadtest.ramp import SLO, Ramp
from flet_resilient.measure import percentile

COLORS = {"plain": "tab:red", "resilient": "tab:blue", "nicegui": "tab:green"}


def pyplot() -> Any:
    """matplotlib.pyplot drawing to files, or None when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot(plan: Plan, results: list[ModeResult], path: Path) -> bool:
    """PNG: the scenario's main measure over time per mode, and RSS over time.

    Returns False (and draws nothing) when matplotlib is not installed.
    """
    plt = pyplot()
    if plt is None:
        return False
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    for r in results:
        color = COLORS.get(r.mode, "tab:gray")
        if plan.scenario == "dashboard":
            users = max(1, r.connected)
            top.plot(
                [t.t for t in r.ticks if t.t >= 0],
                [t.frames / users for t in r.ticks if t.t >= 0],
                color=color,
                label=f"{r.mode}: frames/s per user",
            )
        else:
            _latency_panel(top, r, color)
        if plan.scenario == "flaky" and r.reconnects:
            top.scatter(
                [x.t for x in r.reconnects],
                [max(x.ms, 0.1) for x in r.reconnects],
                s=14,
                marker="^",
                color=color,
                alpha=0.5,
                label=f"{r.mode}: reconnect ms",
            )
        _memory_panel(bottom, r, color)
    if plan.scenario == "dashboard":
        top.set_ylabel("frames/s per user")
    else:
        top.set_yscale("log")
        what = "click → patch" if plan.scenario == "clicks" else "reconnect, click"
        top.set_ylabel(f"{what} (ms, log)")
    fig.suptitle(
        f"{plan.target}: {plan.scenario}, {plan.users} users", x=0.01, ha="left"
    )
    top.grid(True, which="both", alpha=0.3)
    # Above the axes: the points fill every corner of the plot.
    top.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2)
    bottom.set_ylabel("RSS (MB)")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("seconds since the measured window started (< 0: connecting)")
    bottom.grid(True, alpha=0.3)
    bottom.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _memory_panel(axes: Any, r: ModeResult, color: str) -> None:
    """RSS over time: the server, and with its worker processes if it has any."""
    axes.plot(
        [t.t for t in r.ticks],
        [t.rss / 2**20 for t in r.ticks],
        color=color,
        label=f"{r.mode}: server",
    )
    if any(t.tree_rss != t.rss for t in r.ticks):
        axes.plot(
            [t.t for t in r.ticks],
            [t.tree_rss / 2**20 for t in r.ticks],
            color=color,
            linestyle="--",
            label=f"{r.mode}: server + workers",
        )


def _latency_panel(axes: Any, r: ModeResult, color: str) -> None:
    """Bystander clicks as dots with a per-second p99 line, heavy clicks as x."""
    if r.bystander:
        axes.scatter(
            [s.t for s in r.bystander],
            [max(s.ms, 0.1) for s in r.bystander],
            s=6,
            color=color,
            alpha=0.3,
            linewidths=0,
        )
        seconds = sorted({int(s.t) for s in r.bystander})
        p99 = [
            percentile((s.ms for s in r.bystander if int(s.t) == sec), 99)
            for sec in seconds
        ]
        axes.plot(
            [sec + 0.5 for sec in seconds],
            p99,
            color=color,
            linewidth=2,
            label=f"{r.mode}: bystander p99 per second",
        )
    if r.heavy:
        axes.scatter(
            [s.t for s in r.heavy],
            [max(s.ms, 0.1) for s in r.heavy],
            s=16,
            marker="x",
            color=color,
            alpha=0.6,
            label=f"{r.mode}: heavy clicks",
        )


def plot_ramp(ramps: list[Ramp], slo: SLO, path: Path) -> bool:
    """PNG: click p99, RSS and server CPU against users, a line per ramp.

    Returns False (and draws nothing) when matplotlib is not installed.
    """
    plt = pyplot()
    if plt is None:
        return False
    fig, (latency, memory, cpu) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    styles = ["-", "--", ":", "-."]
    for r in ramps:
        users = [step.users for step in r.steps]
        style = {
            "color": COLORS.get(r.mode, "tab:gray"),
            "linestyle": styles[(r.workers - 1) % len(styles)],
            "marker": "o",
        }
        label = f"{r.label}: {r.capacity:,} users at the SLO"
        p99 = [
            max(percentile((s.ms for s in step.result.bystander), 99), 0.1)
            for step in r.steps
        ]
        latency.plot(users, p99, label=label, **style)
        rss = [step.result.tree_rss_peak / 2**20 for step in r.steps]
        memory.plot(users, rss, **style)
        cores = [
            (step.result.server_cpu_s + step.result.workers_cpu_s)
            / (step.result.seconds or 1)
            for step in r.steps
        ]
        cpu.plot(users, cores, **style)
    latency.axhline(slo.p99_ms, color="black", linewidth=1, label="SLO")
    latency.set_yscale("log")
    latency.set_ylabel("click → patch p99 (ms, log)")
    latency.legend(fontsize=8)
    if slo.rss_budget is not None:
        memory.axhline(slo.rss_budget / 2**20, color="black", linewidth=1)
    memory.set_ylabel("RSS peak (MB)")
    memory.set_ylim(bottom=0)
    cpu.set_ylabel("server CPU (cores)")
    cpu.set_ylim(bottom=0)
    cpu.set_xlabel("concurrent users")
    for axes in (latency, memory, cpu):
        axes.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
