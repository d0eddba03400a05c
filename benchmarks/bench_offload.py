"""Bystander click latency while other users run CPU jobs: plain Flet vs `@offload`.

Run from the repository root (about 90 s with the defaults; `pip install -e .[bench]`):

    python benchmarks/bench_offload.py                        # 200 users, 12 s phases
    python benchmarks/bench_offload.py --users 20 --duration 3  # quick smoke run

Three phases, each with its own server and freshly connected simulated users
(`flet_resilient.testing.FletClient`, Flet's real WebSocket protocol):

* idle: nobody runs a CPU job;
* plain: `--heavy-share` of the users (10 %) click "heavy" again and again, whose
  async handler calls the sync `spin()` directly (CPU work on the event loop);
* offload: the same, but the handler awaits `offloaded_spin()` (`@offload`, a
  pool of `--processes` worker processes).

The other users ("bystanders") click "light" every 0.5-1.5 s and time the
click until their mirror shows the incremented counter. The markdown table
goes to stdout and to `benchmarks/results/` (gitignored).

The server runs in a child process (`--serve`, itself spawning the `@offload`
workers) and the 200 clients on this process's asyncio loop, so the server's
event loop shares the machine's CPUs with the clients but not its GIL (and the
clients freeze their garbage collector while measuring, so its pauses are not
counted as latency).
`--in-process` serves from a thread of this process instead, as the test suite
does; the clients' GIL contention then inflates every latency.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import flet as ft
from children import ChildServer
from clients import click_and_wait, clicking_at_random, connect_many
from harness import bench_main, choices, each_phase, ms, report_header

from flet_resilient import configure_offload, offload
from flet_resilient.loadtest.meter import CpuMeter
from flet_resilient.measure import close_all, percentile
from flet_resilient.testing import FletClient, FletServer

MODES = ("idle", "plain", "offload")
GOAL_VS_IDLE = 3.0  # offload p99 at most 3x the idle p99
GOAL_VS_PLAIN = 100.0  # ... and at least 100x better than plain Flet's p99
NOISY_CORES = 0.2  # other processes' CPU use that makes a phase's numbers suspect


# --- the CPU job (module level: worker processes import it by name) -----------


def spin(seconds: float, nice: int = 0) -> float:
    """Burn CPU (holding the GIL) for `seconds`; return the seconds spun.

    `nice` > 0 first lowers this process's priority to that niceness (for
    `--worker-nice`: a worker process that yields the CPU to the event loop).
    """
    if nice > os.getpriority(os.PRIO_PROCESS, 0):
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += 1
    return seconds


offloaded_spin = offload(spin)


# --- the app under test ---------------------------------------------------------


def make_app(
    offloaded: bool, job_seconds: float, worker_nice: int = 0
) -> Callable[[ft.Page], None]:
    """A page with a "heavy" CPU-job button and a "light" counter button."""

    def main(page: ft.Page) -> None:
        count = ft.Text("0", key="count")
        jobs = ft.Text("0", key="jobs")

        async def heavy(e: ft.Event) -> None:
            if offloaded:
                await offloaded_spin(job_seconds, worker_nice)
            else:
                spin(job_seconds)  # the "async lie": sync CPU work on the loop
            jobs.value = str(int(jobs.value) + 1)

        def light(e: ft.Event) -> None:
            count.value = str(int(count.value) + 1)

        page.add(
            count,
            jobs,
            ft.Button("heavy", key="heavy", on_click=heavy),
            ft.Button("light", key="light", on_click=light),
        )

    return main


# --- where the server runs ----------------------------------------------------------


class ServerProcess(ChildServer):
    """The app served by `bench_offload.py --serve MODE` in a child process.

    The child prints its WebSocket URL, then serves until its stdin closes.
    """

    def __init__(self, mode: str, args: argparse.Namespace) -> None:
        super().__init__(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                *("--serve", mode),
                *("--job-seconds", str(args.job_seconds)),
                *("--processes", str(args.processes)),
                *("--worker-nice", str(args.worker_nice)),
            ]
        )


def serve(mode: str, args: argparse.Namespace) -> None:
    """The child side of `ServerProcess`: serve until stdin closes."""
    configure_offload(processes=args.processes)
    try:
        with FletServer(
            make_app(mode == "offload", args.job_seconds, args.worker_nice)
        ) as server:
            print(server.ws_url, flush=True)
            sys.stdin.read()
    finally:
        configure_offload()  # stop the worker processes


# --- simulated users --------------------------------------------------------------


@dataclass
class Phase:
    """What one phase measured."""

    mode: str
    latencies_ms: list[float] = field(default_factory=list)
    timeouts: int = 0
    heavy_users: int = 0
    heavy_jobs: int = 0
    seconds: float = 0.0
    complete: bool = True
    own_cores: float = 0.0  # CPU used by this benchmark's processes, in cores
    other_cores: float = 0.0  # CPU used by everything else on the machine


async def heavy_user(
    client: FletClient, deadline: float, timeout: float, phase: Phase
) -> None:
    """Run CPU jobs back to back until `deadline`; count those done in time."""
    jobs = int(client.value("jobs"))
    while time.perf_counter() < deadline:
        jobs += 1
        try:
            await click_and_wait(client, "heavy", "jobs", jobs, timeout)
        except TimeoutError:
            return
        if time.perf_counter() <= deadline:
            phase.heavy_jobs += 1


async def run_phase(mode: str, args: argparse.Namespace) -> Phase:
    """One phase: its own server, `args.users` clients, `args.duration` seconds."""
    phase = Phase(mode)
    rng = random.Random(f"{args.seed}-{mode}")
    server: FletServer | ServerProcess
    if args.in_process:
        server = FletServer(
            make_app(mode == "offload", args.job_seconds, args.worker_nice)
        )
    else:
        server = ServerProcess(mode, args)
    async with server:
        clients = await connect_many(server.ws_url, args.users)
        try:
            heavy_count = max(1, round(args.users * args.heavy_share))
            heavy, bystanders = clients[:heavy_count], clients[heavy_count:]
            phase.heavy_users = 0 if mode == "idle" else heavy_count
            # Warm-up, not measured: every code path once, the worker pool spawned.
            if mode != "idle":
                await asyncio.gather(
                    *(
                        click_and_wait(c, "heavy", "jobs", 1, args.job_timeout)
                        for c in heavy[: args.processes]
                    )
                )
            await asyncio.gather(
                *(
                    click_and_wait(c, "light", "count", 1, args.click_timeout)
                    for c in bystanders
                )
            )

            if not args.in_process:
                # The clients' own garbage collections (100+ ms for 200 mirrors)
                # would add to the latencies they measure: freeze what exists.
                gc.collect()
                gc.freeze()
            meter = CpuMeter()
            started = time.perf_counter()
            deadline = started + args.duration
            tasks = clicking_at_random(
                bystanders, "light", rng, deadline, args.click_timeout, phase
            )
            if mode != "idle":
                tasks += [
                    heavy_user(c, deadline, args.job_timeout, phase) for c in heavy
                ]
            bound = args.duration + args.click_timeout + args.job_timeout + 30
            try:
                await asyncio.wait_for(asyncio.gather(*tasks), bound)
            except asyncio.TimeoutError:
                phase.complete = False
            phase.seconds = time.perf_counter() - started
            phase.own_cores, phase.other_cores = meter.cores()
        finally:
            gc.unfreeze()
            await close_all(clients)
    return phase


# --- report -------------------------------------------------------------------------


def report(phases: list[Phase], args: argparse.Namespace, command: str) -> str:
    """The markdown report: settings, table, ratios, goal."""
    heavy = max(1, round(args.users * args.heavy_share))
    lines = [
        *report_header("bench_offload", command, Path(__file__).resolve().parent),
        f"- {args.users} users ({heavy} heavy, {args.users - heavy} bystanders), "
        f"{args.duration:g} s per phase, {args.job_seconds:g} s CPU jobs, "
        f"{args.processes} worker process{'es' if args.processes != 1 else ''}"
        + (f" at nice {args.worker_nice}" if args.worker_nice else "")
        + (", server in-process" if args.in_process else ""),
        "",
        "| mode | bystander p50 ms | p99 ms | max ms | clicks measured | timeouts "
        "| heavy users | heavy jobs done | CPU cores: bench / others |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    p99: dict[str, float] = {}
    for phase in phases:
        values = phase.latencies_ms
        p99[phase.mode] = percentile(values, 99)
        note = "" if phase.complete else " (cut off)"
        lines.append(
            f"| {phase.mode}{note} | {ms(percentile(values, 50))} | "
            f"{ms(p99[phase.mode])} | {ms(max(values, default=math.nan))} | "
            f"{len(values)} | {phase.timeouts} | {phase.heavy_users} | "
            f"{phase.heavy_jobs} | {phase.own_cores:.2f} / {phase.other_cores:.2f} |"
        )
    lines.append("")
    busy = [p.mode for p in phases if p.other_cores > NOISY_CORES]
    if busy:
        lines += [
            f"- warning: other processes used more than {NOISY_CORES:g} cores during "
            f"{', '.join(busy)}; those latencies include CPU contention from them",
        ]
    if {"idle", "offload"} <= p99.keys():
        vs_idle = p99["offload"] / p99["idle"]
        lines.append(
            f"- offload p99 / idle p99 = {vs_idle:.2f} (goal <= {GOAL_VS_IDLE:g}): "
            f"{'met' if vs_idle <= GOAL_VS_IDLE else 'NOT met'}"
        )
    if {"plain", "offload"} <= p99.keys():
        vs_plain = p99["plain"] / p99["offload"]
        lines.append(
            f"- plain p99 / offload p99 = {vs_plain:.0f}x "
            f"(goal >= {GOAL_VS_PLAIN:g}x): "
            f"{'met' if vs_plain >= GOAL_VS_PLAIN else 'NOT met'}"
        )
    if set(MODES) <= p99.keys():
        met = (
            p99["offload"] <= GOAL_VS_IDLE * p99["idle"]
            and p99["plain"] >= GOAL_VS_PLAIN * p99["offload"]
        )
        lines.append(f"- goal met: {'yes' if met else 'no'}")
    return "\n".join(lines) + "\n"


# --- entry point --------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200, help="simulated users")
    parser.add_argument(
        "--duration", type=float, default=12.0, help="measured seconds per phase"
    )
    parser.add_argument(
        "--heavy-share", type=float, default=0.1, help="share of users running CPU jobs"
    )
    parser.add_argument(
        "--job-seconds", type=float, default=0.5, help="CPU seconds per heavy click"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=importlib.import_module("flet_resilient.offload").DEFAULT_PROCESSES,
        help="@offload worker processes (default: the library's, cores - 1)",
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated phases to run, of idle,plain,offload",
    )
    parser.add_argument(
        "--click-timeout",
        type=float,
        default=60.0,
        help="longest wait for one light click",
    )
    parser.add_argument(
        "--job-timeout",
        type=float,
        default=120.0,
        help="longest wait for one heavy job",
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=0,
        help="niceness the job sets on its worker (0: keep the library's nice 10)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="serve from a thread of this process (shares the GIL with clients)",
    )
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="report file (default: benchmarks/results/<time>.md)",
    )
    args = parser.parse_args(argv)
    args.modes = choices(parser, "--modes", args.modes, MODES)
    if args.users < 2 or not 0 < args.heavy_share < 1:
        parser.error("need --users >= 2 and 0 < --heavy-share < 1")
    return args


async def run(args: argparse.Namespace) -> list[Phase]:
    """Every requested phase, one after the other."""
    return await each_phase(
        args.modes, run_phase, args, f"{args.users} users, {args.duration:g} s"
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the report and save it under benchmarks/results/."""
    args = parse_args(argv)
    # Plain Flet blocks the loop on purpose; the watchdog would log every stall.
    logging.getLogger("flet_resilient.watchdog").setLevel(logging.ERROR)
    if args.serve:
        serve(args.serve, args)
        return
    configure_offload(processes=args.processes)
    try:
        bench_main(args, run, report, args.output, "offload")
    finally:
        configure_offload()  # stop the worker processes


if __name__ == "__main__":
    main()
