"""The load test's markdown report: settings, one column per mode, warnings."""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable

from flet_resilient.loadtest.model import (
    FLOWING_S,
    MODES,
    ModeResult,
    Plan,
    Sample,
)
from flet_resilient.loadtest.scenarios import OFFLINE_S
from flet_resilient.measure import machine, percentile

NOISY_CORES = 0.3  # CPU used by other processes that makes numbers suspect
BUSY_CLIENT = 0.9  # load generator cores above which it is the bottleneck


def fmt_ms(value: float) -> str:
    """Milliseconds for the table: one decimal below 100."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def fmt_num(value: float, digits: int = 1) -> str:
    """A number for the table (n/a for nan)."""
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


Row = tuple[str, Callable[[ModeResult], float], Callable[[float], str]]


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _mb(value: float) -> str:
    return f"{value / 2**20:,.0f}"


def _by(
    samples: Callable[[ModeResult], list[Sample]], p: float
) -> Callable[[ModeResult], float]:
    """The `p`th percentile of the samples `samples(result)` picks."""
    return lambda r: percentile((s.ms for s in samples(r)), p)


def _click_rows(plan: Plan) -> list[Row]:
    """Bystander and heavy click latencies (what the users feel)."""

    def byst(r: ModeResult) -> list[Sample]:
        return r.bystander

    def heavy(r: ModeResult) -> list[Sample]:
        return r.heavy

    table: list[Row] = []
    if plan.scenario != "dashboard" and plan.click_key:
        name = "bystander " if plan.heavy_count() else ""
        table += [
            (f"{name}click→patch p50 ms", _by(byst, 50), fmt_ms),
            (f"{name}click→patch p99 ms", _by(byst, 99), fmt_ms),
            (f"{name}click→patch max ms", _by(byst, 100), fmt_ms),
            (f"{name}clicks measured", lambda r: len(r.bystander), _count),
            (
                f"{name}clicks timed out or cut off",
                lambda r: sum(not s.done for s in r.bystander),
                _count,
            ),
        ]
    if plan.heavy_count():
        table += [
            ("heavy click→patch p50 ms", _by(heavy, 50), fmt_ms),
            ("heavy click→patch p99 ms", _by(heavy, 99), fmt_ms),
            ("heavy click→patch max ms", _by(heavy, 100), fmt_ms),
            ("heavy clicks measured", lambda r: len(r.heavy), _count),
        ]
    return table


def _reconnect_rows() -> list[Row]:
    """The flaky scenario's reconnects."""

    def at(p: float) -> Callable[[ModeResult], float]:
        return lambda r: percentile((x.ms for x in r.reconnects), p)

    return [
        ("reconnects", lambda r: len(r.reconnects), _count),
        ("sessions lost", lambda r: sum(x.lost for x in r.reconnects), _count),
        ("reconnects failed", lambda r: r.reconnect_failures, _count),
        ("reconnect p50 ms", at(50), fmt_ms),
        ("reconnect p99 ms", at(99), fmt_ms),
        ("reconnect max ms", at(100), fmt_ms),
    ]


def _traffic_rows(plan: Plan) -> list[Row]:
    """Frames and bytes received; for dashboards, whether they keep coming."""
    table: list[Row] = [
        (
            "frames/s received, total",
            lambda r: r.frames / r.seconds,
            lambda v: fmt_num(v, 0),
        ),
        (
            "frames/s per user",
            lambda r: r.frames / r.seconds / max(1, r.connected),
            fmt_num,
        ),
        ("KB/s received, total", lambda r: r.bytes / 1024 / r.seconds, fmt_num),
        (
            "KB/s per user",
            lambda r: r.bytes / 1024 / r.seconds / max(1, r.connected),
            lambda v: fmt_num(v, 2),
        ),
    ]
    if plan.scenario == "dashboard":
        table += [
            (
                f"users receiving in the last {FLOWING_S:g} s",
                lambda r: r.flowing,
                _count,
            ),
            (
                "longest gap between patches s (worst user)",
                lambda r: r.worst_gap_s,
                lambda v: fmt_num(v, 2),
            ),
        ]
    return table


SERVER_ROWS: list[Row] = [
    ("server RSS peak MB", lambda r: r.rss_peak, _mb),
    ("server RSS end MB", lambda r: r.rss_end, _mb),
    ("server + workers RSS peak MB", lambda r: r.tree_rss_peak, _mb),
    ("server CPU s", lambda r: r.server_cpu_s, fmt_num),
    ("worker processes CPU s", lambda r: r.workers_cpu_s, fmt_num),
    ("loop lag p99 ms", lambda r: r.lag_p99_ms, fmt_ms),
    ("loop lag max ms (≤)", lambda r: r.lag_max_ms, fmt_ms),
    ("loop stalls > 250 ms", lambda r: r.stalls, _count),
    ("load generator CPU cores", lambda r: r.client_cores, lambda v: fmt_num(v, 2)),
]


def rows(plan: Plan) -> list[Row]:
    """The report's metrics for this scenario: (label, value, format)."""
    table: list[Row] = [("users connected at the end", lambda r: r.connected, _count)]
    table += _click_rows(plan)
    if plan.scenario == "flaky":
        table += _reconnect_rows()
    return table + _traffic_rows(plan) + SERVER_ROWS


def table(plan: Plan, results: list[ModeResult]) -> str:
    """Markdown table, one column per mode, plus plain ÷ resilient with two."""
    by_mode = {r.mode: r for r in results}
    compare = set(MODES) <= by_mode.keys()
    header = ["metric", *(r.mode for r in results)]
    if compare:
        header.append("plain ÷ resilient")
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for label, value, fmt in rows(plan):
        cells = [label]
        values = {}
        for r in results:
            try:
                values[r.mode] = float(value(r))
            except (ZeroDivisionError, ValueError):
                values[r.mode] = math.nan
            cells.append(fmt(values[r.mode]))
        if compare:
            cells.append(_ratio(values["plain"], values["resilient"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _ratio(plain: float, resilient: float) -> str:
    """plain ÷ resilient, or - when it means nothing."""
    if math.isnan(plain) or math.isnan(resilient) or resilient == 0:
        return "-"
    ratio = plain / resilient
    return f"{ratio:,.1f}x" if ratio < 100 else f"{ratio:,.0f}x"


def report(plan: Plan, results: list[ModeResult], command: str, plot_note: str) -> str:
    """The markdown report: settings, table, warnings, plot."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    heavy = plan.heavy_count()
    who = f"{plan.users} users"
    if heavy:
        who += f" ({heavy} clicking `{plan.heavy_key}`, {plan.users - heavy} bystanders"
        who += f" clicking `{plan.click_key}`)"
    elif plan.click_key and plan.scenario != "dashboard":
        who += f" clicking `{plan.click_key}`"
    lines = [
        f"# Load test: `{plan.target}`, scenario `{plan.scenario}`",
        "",
        f"- date: {now}",
        f"- machine: {machine()}",
        f"- command: `{command}`",
        f"- {who}, {plan.duration:g} s measured per mode, {_pace(plan)}",
        "- modes: "
        + ", ".join(
            "plain (`FLET_RESILIENT_DISABLE=1`)"
            if r.mode == "plain"
            else "resilient (mitigations on)"
            for r in results
        ),
        "",
        table(plan, results),
    ]
    notes = warnings(results)
    lines += [
        "Click→patch: from sending a click until the user's next patch frame "
        "(timed-out clicks count at their timeout, clicks still waiting at the end "
        "at their age: lower bounds). Loop lag: the server's `stats()` histogram "
        "over the measured window (bucket bounds). Ratios are plain ÷ resilient.",
        "",
    ]
    if notes:
        lines += [*(f"- {n}" for n in notes), ""]
    lines += [plot_note, ""]
    return "\n".join(lines)


def warnings(results: list[ModeResult], names: list[str] | None = None) -> list[str]:
    """What makes a result suspect or incomplete, one line each, prefixed by
    the result's name (default: its mode)."""
    notes: list[str] = []
    for index, r in enumerate(results):
        name = r.mode if names is None else names[index]
        if r.client_cores > BUSY_CLIENT:
            notes.append(
                f"{name}: the load generator used {r.client_cores:.2f} cores; it may "
                "be the bottleneck (received rates are then a lower bound)"
            )
        if r.other_cores > NOISY_CORES:
            notes.append(
                f"{name}: other processes used {r.other_cores:.2f} cores; the "
                "numbers include CPU contention from them"
            )
        if r.connect_failures:
            notes.append(f"{name}: {r.connect_failures} users failed to connect")
        if r.counters:
            shown = ", ".join(f"{k} {v}" for k, v in r.counters.items())
            notes.append(f"{name}: server counters during the run: {shown}")
        notes += [f"{name}: {e}" for e in r.errors[:5]]
    return notes


def _pace(plan: Plan) -> str:
    """How often users act, in words."""
    if plan.scenario == "dashboard":
        return "users only receive"
    pace = f"a click every {plan.think:g} s per user on average"
    if plan.scenario == "flaky":
        drops = (
            f"connections reset every {plan.drop_every:g} s on average, "
            f"{OFFLINE_S[0]:g}-{OFFLINE_S[1]:g} s offline, then a reconnect with "
            "the session id"
        )
        return f"{drops}; {pace}" if plan.click_key else drops
    return pace
