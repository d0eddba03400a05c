"""Capacity at an SLO: plain Flet vs flet-resilient (1 and 2 workers) vs NiceGUI,
on the same operations console, on this machine, in one run.

Run from the repository root (`pip install -e '.[bench,plot]'`; two workers need
redis-server and haproxy: `.ci/install-redis`, `.ci/install-haproxy`):

    python benchmarks/bench_capacity.py           # the full ramp (long: see docs)
    python benchmarks/bench_capacity.py --smoke   # one tiny step each, ~2 minutes

The app is `examples/ops_console.py` (Flet; plain = `FLET_RESILIENT_DISABLE=1`)
and its twin `benchmarks/nicegui_ops_console.py`. Each run ramps users with the
load-test CLI's capacity mode (`flet_resilient.loadtest.ramp_mode`): users are
added `--ramp START:STOP:STEP` on the same server until a step misses the SLO
(acknowledge click -> the "acknowledged" count changing, p99 <= `--slo-ms`; no
session lost; `--rss-budget`). `--active-share` of the users click "Acknowledge"
every `--think` s; the others are idle tabs that only receive the live panel.
Two workloads: `light` (nobody runs the report) and `heavy` (`--heavy-share` of
the users click "SLA report", half a second or more of CPU per click).

Reported per run: users at the SLO, bytes/s and MB per session (received bytes
per user, RSS growth per added user between the first and last step within
the SLO), reconnect time (a short phase of `--reconnect-users` users dropping
their socket and coming back with their session), and the acceptance goals.
The markdown report goes to `--out` (default `benchmarks/results/capacity.md`),
the plots, data and server logs next to it (`<out>-files/`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # nicegui_client
from harness import command_line, report_header, save_report

from flet_resilient.cluster import free_port, missing_program
from flet_resilient.loadtest import SLO, Plan, Ramp, ServerProcess, parse_ramp
from flet_resilient.loadtest.model import ModeResult, progress
from flet_resilient.loadtest.plot import plot_ramp
from flet_resilient.loadtest.ramp import ramp_mode
from flet_resilient.loadtest.ramp_report import ramp_table
from flet_resilient.loadtest.runner import run_mode
from flet_resilient.loadtest.server import Servers, stop_all_servers
from flet_resilient.measure import percentile

ROOT = Path(__file__).resolve().parent.parent
FLET_APP = "examples/ops_console.py:main"
NICEGUI_APP = str(ROOT / "benchmarks" / "nicegui_ops_console.py")
OFFLINE_S = (0.2, 2.0)  # reconnect phase: how long a user stays away
FAILED: list[str] = []  # runs that raised, for the report
SHORT = "met the SLO at every step: ramp further (--ramp)"
PING_TIMEOUT = "Client is gone, closing socket"  # engine.io, in the twin's log


@dataclass(frozen=True)
class Run:
    """One ramp: which app and how it is served."""

    mode: str  # plain, resilient or nicegui
    workers: int = 1


class NiceGUIServer(ServerProcess):
    """The NiceGUI twin in a child process on a free port."""

    def __init__(self, log_path: Path) -> None:
        super().__init__(NICEGUI_APP, "nicegui", log_path)
        self.nicegui_port = free_port()

    def command(self) -> list[str]:
        return [sys.executable, self.target]

    def environment(self) -> dict[str, str]:
        env = {**super().environment(), "PORT": str(self.nicegui_port)}
        env.pop("PYTEST_CURRENT_TEST", None)  # else NiceGUI starts in its test mode
        return env

    def answers(self) -> bool:
        import socket

        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def snapshots(self, timeout: float = 10.0) -> list[dict[str, object] | None]:
        return [None]  # no flet_resilient.stats() in NiceGUI: lag is n/a

    @property
    def ws_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"  # NiceGUIClient loads the page


async def start_nicegui(plan: Plan, mode: str) -> Servers:
    """Serve the NiceGUI twin."""
    return await NiceGUIServer(plan.out / "server-nicegui.log").start()


def nicegui_client(url: str, index: int) -> object:
    from nicegui_client import NiceGUIClient

    return NiceGUIClient(url, index)


def nicegui_drops(log: Path, clients: list[Any]) -> str:
    """Why NiceGUI users lost sockets (the twin logs engine.io's ping-timeout
    closes) and how many the users brought back to their page."""
    text = log.read_text(errors="replace") if log.exists() else ""
    closed = {line.split(":")[0] for line in text.splitlines() if PING_TIMEOUT in line}
    dropped = sum(c.dropped for c in clients)
    back = sum(c.recovered for c in clients)
    return (
        f"NiceGUI closed {len(closed)} sockets for a ping answer it had not read "
        "within its engine.io ping timeout (2 s: its event loop stalled longer, "
        "as while it built arriving users' pages or ran a full garbage "
        f"collection); the users lost {dropped} sockets and brought {back} back to "
        "their page as the page script does; the others were refused (NiceGUI "
        "had deleted the page client after its 3 s reconnect_timeout; a browser "
        "reloads the page: a new session)"
    )


async def ramp_run(
    plan: Plan, run: Run, counts: list[int], slo: SLO, reconnect: tuple[int, float]
) -> Measured:
    """Ramp one run through `counts` users, then (`reconnect`: users, seconds;
    0 users: none) time reconnects on the same servers."""
    plan.workers = run.workers
    times: list[float] = []
    notes: list[str] = []
    clients: list[Any] = []  # NiceGUI's, for their lost sockets

    def make_client(url: str, index: int) -> object:
        clients.append(nicegui_client(url, index))
        return clients[-1]

    async def reconnects(servers: Servers) -> None:
        if run.mode == "nicegui":
            notes.append(nicegui_drops(plan.out / "server-nicegui.log", clients))
            progress(f"== {notes[-1]}")
        if reconnect[0] and run.mode == "nicegui":
            times.extend(await nicegui_reconnects(servers, *reconnect, plan.seed))
        elif reconnect[0]:
            times.extend(await flet_reconnects(plan, run, servers, *reconnect))

    if run.mode == "nicegui":
        ramp = await ramp_mode(
            plan, "nicegui", counts, slo, start_nicegui, make_client, reconnects
        )
    else:
        ramp = await ramp_mode(plan, run.mode, counts, slo, then=reconnects)
    return Measured("", run, ramp, times, notes)


async def flet_reconnects(
    plan: Plan, run: Run, servers: Servers, users: int, seconds: float
) -> list[float]:
    """Reconnect times (ms; nan: a new session) of Flet users dropping their
    socket abruptly and coming back with their session id (the load test's
    `flaky` scenario)."""
    flaky = replace(
        plan,
        scenario="flaky",
        users=users,
        duration=seconds,
        heavy_key=None,
        active_share=1.0,
        drop_every=1.0,
    )
    result: ModeResult = await run_mode(flaky, run.mode, servers)
    return [math.nan if r.lost else r.ms for r in result.reconnects]


async def nicegui_reconnects(
    servers: Servers, users: int, seconds: float, seed: int
) -> list[float]:
    """Reconnect times (ms; nan: the client was gone) of NiceGUI users closing
    their socket and coming back to the same page client."""
    from nicegui_client import NiceGUIClient

    clients = [await NiceGUIClient(servers.ws_url, i).connect() for i in range(users)]
    deadline = time.monotonic() + seconds
    rng = random.Random(seed)
    times: list[float] = []

    async def cycle(client: NiceGUIClient) -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            times.append(await client.reconnect(rng.uniform(*OFFLINE_S)))

    await asyncio.gather(*(cycle(c) for c in clients))
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return times


def per_session(ramp: Ramp) -> tuple[float, float]:
    """(bytes/s received per user, MB of RSS per added user) within the SLO."""
    met = [s for s in ramp.steps if s.met] or ramp.steps[:1]
    if not met:
        return math.nan, math.nan
    last = met[-1].result
    rate = last.bytes / (last.seconds or math.nan) / max(1, last.connected)
    if len(met) < 2:
        return rate, math.nan
    first = met[0]
    grown = last.tree_rss_peak - first.result.tree_rss_peak
    return rate, grown / 2**20 / (met[-1].users - first.users)


@dataclass
class Measured:
    """One run of one workload: its ramp and its reconnect times."""

    workload: str  # light or heavy
    run: Run
    ramp: Ramp
    reconnect_ms: list[float]
    notes: list[str] = field(default_factory=list)  # e.g. why sessions were lost


def runs_here(skip: set[str]) -> list[Run]:
    """The runs this machine can do (two workers need haproxy and redis-server,
    NiceGUI its package)."""
    runs = [Run(mode) for mode in ("plain", "resilient") if mode not in skip]
    if "workers" not in skip:
        if missing_program() is None:
            runs.append(Run("resilient", 2))
        else:
            progress(f"skipping 2 workers: {missing_program()}")
    if "nicegui" not in skip:
        if importlib.util.find_spec("nicegui") and importlib.util.find_spec("socketio"):
            runs.append(Run("nicegui"))
        else:
            progress("skipping NiceGUI: pip install -e '.[bench]'")
    return runs


async def measure_all(args: argparse.Namespace, files: Path) -> list[Measured]:
    """Every workload on every run, one after the other."""
    slo = slo_of(args)
    counts = parse_ramp(args.ramp)
    measured = []
    for workload in args.workloads:
        for run in runs_here(set(args.skip)):
            plan = base_plan(args, files / f"{workload}-{run.mode}-{run.workers}")
            if workload == "light":
                plan.heavy_key = None
            progress(f"== {workload}: {run.mode} on {run.workers} worker(s)")
            # Reconnects do not depend on the workload: timed once, after light.
            users = args.reconnect_users if workload == "light" else 0
            try:
                done = await ramp_run(plan, run, counts, slo, (users, args.reconnect_s))
            except Exception as error:  # one broken run must not lose the others
                FAILED.append(f"{workload}: {run.mode} on {run.workers}: {error!r}")
                progress(f"== failed: {FAILED[-1]}")
                continue
            measured.append(replace(done, workload=workload))
    return measured


def slo_of(args: argparse.Namespace) -> SLO:
    """The objective from the options (the RSS budget in MB)."""
    budget = None if args.rss_budget is None else int(args.rss_budget * 2**20)
    return SLO(args.slo_ms, budget)


def base_plan(args: argparse.Namespace, out: Path) -> Plan:
    """The load-test plan every run shares (`out`: its logs)."""
    out.mkdir(parents=True, exist_ok=True)
    return Plan(
        target=FLET_APP,
        scenario="clicks",
        users=parse_ramp(args.ramp)[-1],
        duration=args.duration,
        click_key="ack",
        heavy_key="report",
        heavy_share=args.heavy_share,
        think=args.think,
        drop_every=1.0,
        click_timeout=args.click_timeout,
        batch=args.batch,
        seed=1,
        out=out,
        active_share=args.active_share,
        answer_key="acked",
    )


def find(
    measured: list[Measured], workload: str, mode: str, workers: int = 1
) -> Ramp | None:
    """The ramp of one run of one workload, if it ran."""
    for m in measured:
        if m.workload == workload and m.run == Run(mode, workers):
            return m.ramp
    return None


def goal(name: str, better: Ramp | None, worse: Ramp | None, factor: float) -> str:
    """`better` carries at least `factor` times the users of `worse`: met or missed,
    with the figures (n/a when a run is missing or the ramp was too short)."""
    if better is None or worse is None:
        return f"- {name}: n/a (not run here)"
    shown = f"{better.capacity:,} vs {worse.capacity:,} users"
    if worse.reached_top:
        return f"- {name}: n/a, {shown}: {worse.label} {SHORT}"
    needed = factor * worse.capacity
    if better.capacity >= needed and better.capacity > worse.capacity:
        return f"- {name}: met, {shown}"
    if better.reached_top:
        return f"- {name}: n/a, {shown}: {better.label} {SHORT}"
    return f"- {name}: missed, {shown}"


def goals(measured: list[Measured]) -> list[str]:
    """The acceptance goals, each met, missed or n/a."""
    lines = []
    for workload in ("heavy", "light"):
        one = find(measured, workload, "resilient")
        plain = find(measured, workload, "plain")
        if workload == "heavy":
            lines.append(
                goal("heavy: flet-resilient >= 10x plain Flet", one, plain, 10)
            )
        else:
            lines.append(goal("light: flet-resilient >= 2x plain Flet", one, plain, 2))
            two = find(measured, workload, "resilient", 2)
            lines.append(goal("light: 2 workers >= 1.7x 1 worker", two, one, 1.7))
        nicegui = find(measured, workload, "nicegui")
        lines.append(goal(f"{workload}: flet-resilient > NiceGUI", one, nicegui, 1.0))
    return lines


def summary_row(m: Measured, plain: Ramp | None) -> str:
    """One run's line of the summary table."""
    ramp = m.ramp
    rate, mb = per_session(ramp)
    ratio = "-"
    if plain is not None and plain is not ramp and plain.capacity:
        ratio = f"{ramp.capacity / plain.capacity:,.1f}x"
    kept = [ms for ms in m.reconnect_ms if not math.isnan(ms)]
    lost = len(m.reconnect_ms) - len(kept)
    cells = [
        ramp.label,
        f"{ramp.capacity:,}" + (" (or more)" if ramp.reached_top else ""),
        ratio,
        f"{rate:,.0f}" if not math.isnan(rate) else "n/a",
        f"{mb:.2f}" if not math.isnan(mb) else "n/a",
        ms_cell(percentile(kept, 50)),
        ms_cell(percentile(kept, 99)),
        f"{lost} of {len(m.reconnect_ms)}" if m.reconnect_ms else "-",
    ]
    return "| " + " | ".join(cells) + " |"


def ms_cell(value: float) -> str:
    """Milliseconds for the summary (n/a: nothing measured)."""
    return "n/a" if math.isnan(value) else f"{value:,.1f}"


NOTES = (
    "Bytes/s per session: received by each user at the largest step within the "
    "SLO. MB per session: RSS (servers and their worker processes) added per user "
    "between the first and last steps within the SLO. Reconnects: Flet users "
    "reset their socket and come back with their session id (a new id counts as "
    "lost: behind a non-sticky balancer a reconnect to the other worker starts a "
    "new Flet session, whose app state `app_state` restores from Redis); NiceGUI "
    "users close their socket and reconnect to the same page client."
)
SUMMARY_HEADER = (
    "| run | users at the SLO | vs plain | bytes/s per session | MB per session "
    "| reconnect p50 ms | reconnect p99 ms | sessions lost on reconnect |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|"
)


def report(
    args: argparse.Namespace, measured: list[Measured], slo: SLO, files: Path
) -> str:
    """The markdown report: settings, a summary per workload, goals, step tables."""
    lines = report_header(
        "Capacity at an SLO: the operations console", command_line(), ROOT
    )
    lines += [
        f"- SLO: acknowledge click → count shown p99 ≤ {args.slo_ms:g} ms, no session "
        "lost" + (f", RSS ≤ {args.rss_budget:g} MB" if args.rss_budget else ""),
        f"- ramp {args.ramp} users, {args.duration:g} s measured per step; "
        f"{args.active_share:.0%} of users click every {args.think:g} s, the rest "
        f"are idle tabs; heavy: {args.heavy_share:.0%} click the SLA report",
        f"- app: {args.rows} rows, report {args.report_samples} samples per service",
        "",
    ]
    for workload in args.workloads:
        rows = [m for m in measured if m.workload == workload]
        plain = find(measured, workload, "plain")
        lines += [
            f"## {workload}",
            "",
            SUMMARY_HEADER,
            *(summary_row(m, plain) for m in rows),
            "",
            NOTES,
            "",
        ]
        ramps = [m.ramp for m in rows]
        png = files / f"capacity-{workload}.png"
        if plot_ramp(ramps, slo, png):
            lines += [f"![capacity, {workload}]({png.relative_to(files.parent)})", ""]
    lines += ["## Goals", "", *goals(measured), ""]
    if FAILED:
        lines += ["## Runs that failed", "", *(f"- {f}" for f in FAILED), ""]
    lines += ["## Steps", ""]
    for m in measured:
        lines += [f"### {m.workload}: {m.ramp.label}", "", ramp_table(m.ramp)]
        lines += [line for note in m.notes for line in ("", f"- {note}")]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    """Command-line options; `--smoke` shrinks everything to seconds."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one tiny step per run")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/capacity.md"
    )
    parser.add_argument("--ramp", default="200:4000:200", help="START:STOP:STEP users")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--slo-ms", type=float, default=200.0)
    parser.add_argument("--rss-budget", type=float, metavar="MB")
    parser.add_argument("--active-share", type=float, default=0.1)
    parser.add_argument("--heavy-share", type=float, default=0.01)
    parser.add_argument("--think", type=float, default=1.0)
    parser.add_argument("--click-timeout", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--report-samples", type=int, default=3000)
    parser.add_argument("--reconnect-users", type=int, default=50)
    parser.add_argument("--reconnect-s", type=float, default=10.0)
    parser.add_argument(
        "--workloads", nargs="+", choices=("light", "heavy"), default=["light", "heavy"]
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        choices=("plain", "resilient", "workers", "nicegui"),
        default=[],
        help="runs to leave out",
    )
    args = parser.parse_args()
    if args.smoke:
        args.ramp, args.duration, args.batch = "2:2:1", 2.0, 5
        args.rows, args.report_samples = 20, 200
        args.reconnect_users, args.reconnect_s, args.active_share = 2, 2.0, 1.0
    return args


def main() -> int:
    args = parse_args()
    os.environ["OPS_ROWS"] = str(args.rows)  # the servers inherit these
    os.environ["OPS_REPORT_SAMPLES"] = str(args.report_samples)
    os.chdir(ROOT)  # FLET_APP is relative to the checkout
    files = args.out.with_name(args.out.stem + "-files")
    slo = slo_of(args)
    try:
        measured = asyncio.run(measure_all(args, files))
    finally:
        stop_all_servers()
    (files / "capacity.json").write_text(
        json.dumps([asdict(m) for m in measured], indent=1, default=str)
    )
    save_report(report(args, measured, slo, files), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
