"""The `flet-resilient-loadtest` command line: one run per mode, or a ramp."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flet_resilient.loadtest.app import serve
from flet_resilient.loadtest.model import MODES, SCENARIOS, Plan, progress
from flet_resilient.loadtest.plot import plot, plot_ramp
from flet_resilient.loadtest.ramp import SLO, Ramp, parse_ramp, ramp
from flet_resilient.loadtest.ramp_report import capacity_table, ramp_report
from flet_resilient.loadtest.report import report, table
from flet_resilient.loadtest.runner import run
from flet_resilient.loadtest.server import stop_all_servers

NO_PLOT = (
    "No plot: matplotlib is not installed (`pip install matplotlib`, or the "
    "`plot` extra)."
)


def _parser() -> argparse.ArgumentParser:
    """The options of a single run."""
    parser = argparse.ArgumentParser(
        prog="python -m flet_resilient.loadtest",
        description="Load-test a Flet web app over its real protocol, with and "
        "without flet-resilient.",
    )
    parser.add_argument(
        "app", help="MODULE:main or path/to/app.py:main (attribute defaults to main)"
    )
    parser.add_argument("--users", type=int, default=50, help="simulated users")
    parser.add_argument(
        "--duration",
        type=float,
        default=20.0,
        help="measured seconds per mode (per step with --ramp)",
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default="clicks")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run plain (FLET_RESILIENT_DISABLE=1), then resilient, side by side",
    )
    parser.add_argument(
        "--mode", choices=MODES, default="resilient", help="the mode without --compare"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("loadtest-results"), help="results directory"
    )
    parser.add_argument(
        "--click-key", help="key of the button users click (default: the first found)"
    )
    parser.add_argument("--heavy-key", help="key of a heavy button some users click")
    parser.add_argument(
        "--heavy-share", type=float, default=0.1, help="share of users clicking it"
    )
    parser.add_argument(
        "--think", type=float, default=1.0, help="mean seconds between a user's clicks"
    )
    parser.add_argument(
        "--drop-every",
        type=float,
        default=4.0,
        help="flaky: mean seconds a connection lives before it drops",
    )
    parser.add_argument(
        "--click-timeout", type=float, default=30.0, help="longest wait for a patch"
    )
    parser.add_argument(
        "--batch", type=int, default=20, help="users connecting at once"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return parser


def _add_capacity_options(parser: argparse.ArgumentParser) -> None:
    """The options of capacity mode (`--ramp`) and of several workers."""
    group = parser.add_argument_group("capacity (--ramp)")
    group.add_argument(
        "--ramp",
        metavar="START:STOP:STEP",
        help="add users step by step until the SLO breaks; report the capacity",
    )
    group.add_argument(
        "--slo-ms", type=float, default=200.0, help="SLO: click→patch p99 (ms)"
    )
    group.add_argument(
        "--rss-budget",
        type=float,
        metavar="MB",
        help="SLO: RSS of the servers and their worker processes",
    )
    group.add_argument(
        "--active-share",
        type=float,
        default=1.0,
        help="share of users clicking (the others only watch, like idle tabs)",
    )
    group.add_argument(
        "--answer-key",
        help="a click is answered when this control's value changes (default: "
        "at the next patch, which may be another update's)",
    )
    group.add_argument(
        "--workers",
        default="1",
        help="server processes behind HAProxy (needs haproxy and redis-server); "
        "with --ramp a list such as 1,2 ramps each",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options, checked."""
    parser = _parser()
    _add_capacity_options(parser)
    args = parser.parse_args(argv)
    if args.serve:
        return args
    try:
        args.counts = parse_ramp(args.ramp) if args.ramp else [args.users]
        args.worker_counts = [int(w) for w in args.workers.split(",")]
    except ValueError as error:
        parser.error(str(error))
    users = args.counts[0]
    if users < 1 or args.duration <= 0 or args.batch < 1:
        parser.error("need --users >= 1, --duration > 0, --batch >= 1")
    if not 0 <= args.heavy_share < 1:
        parser.error("need 0 <= --heavy-share < 1")
    if args.heavy_key and args.scenario != "clicks":
        parser.error("--heavy-key applies to --scenario clicks only")
    if args.heavy_key and users < 2:
        parser.error("--heavy-key needs --users >= 2 (heavy users plus bystanders)")
    if min(args.think, args.click_timeout, args.drop_every) <= 0:
        parser.error("need --think, --click-timeout and --drop-every > 0")
    if min(args.worker_counts) < 1 or (len(args.worker_counts) > 1 and not args.ramp):
        parser.error("need --workers >= 1 (a list only with --ramp)")
    if not 0 < args.active_share <= 1:
        parser.error("need 0 < --active-share <= 1")
    if args.ramp and args.scenario != "clicks":
        parser.error("--ramp measures clicks: use --scenario clicks")
    return args


def plan_of(args: argparse.Namespace) -> Plan:
    """The run's plan from the options."""
    return Plan(
        target=args.app,
        scenario=args.scenario,
        users=args.counts[-1],
        duration=args.duration,
        click_key=args.click_key,
        heavy_key=args.heavy_key,
        heavy_share=args.heavy_share,
        think=args.think,
        drop_every=args.drop_every,
        click_timeout=args.click_timeout,
        batch=args.batch,
        seed=args.seed,
        out=args.out,
        active_share=args.active_share,
        answer_key=args.answer_key,
        workers=args.worker_counts[0],
    )


def main(argv: list[str] | None = None) -> int:
    """Run the load test (or the ramp): report.md, results.json, the plot."""
    args = parse_args(argv)
    if args.serve:
        serve(args.app)
        return 0
    plan = plan_of(args)
    if importlib.util.find_spec("psutil") is None:
        raise SystemExit(
            "loadtest: measuring the server needs psutil (pip install psutil)"
        )
    modes = list(MODES) if args.compare else [args.mode]
    plan.out.mkdir(parents=True, exist_ok=True)
    words = sys.argv[1:] if argv is None else argv
    command = "python -m flet_resilient.loadtest " + shlex.join(words)
    try:
        if args.ramp:
            slo = SLO(
                args.slo_ms,
                None if args.rss_budget is None else int(args.rss_budget * 2**20),
            )
            ramps = asyncio.run(ramp(plan, modes, args.worker_counts, args.counts, slo))
        else:
            results = asyncio.run(run(plan, modes))
    except KeyboardInterrupt:
        progress("interrupted: servers stopped, no report")
        return 130
    finally:
        stop_all_servers()
    if args.ramp:
        save_ramp(plan, ramps, slo, command)
    else:
        save_run(plan, results, command)
    progress(f"saved {plan.out / 'report.md'}")
    return 0


def _plot_note(drawn: bool, path: Path, what: str) -> str:
    """The report's line for the plot: the image, or why there is none."""
    if drawn:
        return f"![{what}]({path.name})"
    progress(NO_PLOT)
    return NO_PLOT


def _save(plan: Plan, text: str, results: list[Any]) -> None:
    """report.md and results.json (the plan and every result) in `plan.out`."""
    (plan.out / "report.md").write_text(text)
    (plan.out / "results.json").write_text(
        json.dumps(
            {"plan": {**asdict(plan), "out": str(plan.out)}, "results": results},
            indent=1,
            default=str,
        )
    )


def save_run(plan: Plan, results: list[Any], command: str) -> None:
    """Write a single run's report, data and plot; print its table."""
    png = plan.out / "loadtest.png"
    note = _plot_note(plot(plan, results, png), png, "latency and memory over time")
    _save(plan, report(plan, results, command, note), [asdict(r) for r in results])
    print(table(plan, results))


def save_ramp(plan: Plan, ramps: list[Ramp], slo: SLO, command: str) -> None:
    """Write a ramp's report, data and plot; print the capacities."""
    png = plan.out / "capacity.png"
    note = _plot_note(plot_ramp(ramps, slo, png), png, "capacity against users")
    data = [{"label": r.label, "capacity": r.capacity, **asdict(r)} for r in ramps]
    _save(plan, ramp_report(plan, ramps, slo, command, note), data)
    print(capacity_table(ramps))
