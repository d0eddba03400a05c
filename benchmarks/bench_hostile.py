"""Bystander click latency and server memory while one client attacks: plain Flet
vs flet-resilient, in one run.

Run from the repository root (`pip install -e .[bench]`):

    python benchmarks/bench_hostile.py          # 20 bystanders, 10 s phases (~2 min)
    python benchmarks/bench_hostile.py --smoke  # 2 bystanders, 1.5 s phases: it runs

Each (server, phase) pair gets its own server in a child process (`--serve`),
serving a "+1" counter with `--page-controls` Texts below it under uvicorn:

* plain: `FLET_RESILIENT_DISABLE=1` there, so Flet runs exactly as shipped;
* resilient: flet-resilient with uvicorn configured as `serve()` does it
  (`serving.uvicorn_options()`: uvicorn refuses a frame over 1 MiB itself);
* resilient-adapter (only with `--servers`): uvicorn's defaults (16 MiB
  frames), so the adapter enforces the 1 MiB limit after uvicorn has read
  the frame, as for an app run by a uvicorn not given those options.

`--bystanders` `FletClient`s click "+1" every 0.5-1.5 s and time each
click until their mirror shows the new count, while one attacker, in a third
process (`hostile_attacker.py`, at nice `--attacker-nice` so that on 2 cores
it does not outrun the server), does one of:

* idle: nothing (the reference);
* big-frames: `--frame-mb` MB CONTROL_EVENT frames of small ints, back to back
  (reconnecting to its session when its socket is closed);
* event-flood: CONTROL_EVENTs for a control that does not exist, as fast as
  its socket takes them;
* reregister: REGISTER_CLIENT frames with random session ids on one socket.

The server's RSS is sampled every 0.25 s; its sessions and refusal counters
are read at the end of each phase. The markdown report goes to stdout and to
`benchmarks/results/` (gitignored). Goal: with flet-resilient, bystander p99
in every attack phase at most 2x its idle p99, and the server's peak RSS at
most its idle peak + 64 MiB (two 16 MiB frames in flight, and their decoding,
whatever the attack's length).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flet as ft
import psutil
from children import ChildServer
from clients import clicking_at_random, connect_many
from harness import bench_main, choices, ms, report_header

from flet_resilient.measure import percentile, reply, serve_child

SERVERS = ("plain", "resilient", "resilient-adapter")
DEFAULT_SERVERS = "plain,resilient"
PHASES = ("idle", "big-frames", "event-flood", "reregister")
GOAL_VS_IDLE = 2.0  # flet-resilient's attack p99 at most 2x its idle p99
GOAL_RSS_MIB = 64  # ... and its peak RSS at most idle peak + 64 MiB
RSS_SAMPLE_S = 0.25
MIB = 1024 * 1024


# --- the server (child process) ----------------------------------------------------


def make_main(controls: int) -> Any:
    """A "+1" counter above `controls` Texts (what a missing-control lookup walks)."""

    def main(page: ft.Page) -> None:
        count = ft.Text("0", key="count")

        def plus(e: ft.Event) -> None:
            count.value = str(int(count.value) + 1)

        rows = [ft.Text(f"row {i}") for i in range(controls)]
        page.add(count, ft.Button("+1", key="plus", on_click=plus), ft.Column(rows))

    return main


def server_stats() -> dict[str, Any]:
    """Flet's sessions (all, still connected) and flet-resilient's refusals."""
    from flet_resilient import _flet
    from flet_resilient.metrics import counters

    sessions = list(_flet.sessions().values())
    return {
        "sessions": len(sessions),
        "connected": sum(_flet.is_connected(s) for s in sessions),
        "refused": sum(
            n
            for name, n in counters.items()
            if name.startswith("transport.") and not name.endswith("_sent")
        ),
    }


def handle_command(words: list[str]) -> None:
    """The child's control channel: `stats T` answers `stats T <json>`."""
    if words[0] == "stats":
        reply("stats", words[1], json.dumps(server_stats(), separators=(",", ":")))


async def serve(args: argparse.Namespace) -> None:
    """The child side of `ServerProcess`: serve until stdin closes."""
    import flet_web.fastapi as flet_fastapi

    from flet_resilient.serving import uvicorn_options

    logging.getLogger().setLevel(logging.ERROR)  # refusals and stalls: counted
    app = flet_fastapi.app(make_main(args.page_controls))
    options = uvicorn_options() if args.serve == "resilient" else {}
    await serve_child(app, handle_command, **options)


class ServerProcess(ChildServer):
    """The app served by `bench_hostile.py --serve`, plain or flet-resilient."""

    def __init__(self, server: str, args: argparse.Namespace) -> None:
        super().__init__(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                *("--serve", server),
                *("--page-controls", str(args.page_controls)),
            ],
            env={
                **os.environ,
                "FLET_RESILIENT_DISABLE": "1" if server == "plain" else "",
            },
        )

    async def stats(self, timeout: float) -> dict[str, Any]:
        """Its sessions and refusals; {} if it cannot answer in `timeout` s."""
        try:
            return json.loads(" ".join(await self.request("stats", timeout=timeout)))
        except TimeoutError:
            return {}


# --- the attacker (child process: hostile_attacker.py) ------------------------------


@dataclass
class Attacker:
    """An `--attack` child process and what it reported."""

    process: asyncio.subprocess.Process
    sent: int = 0
    reconnects: int = 0

    @classmethod
    async def start(
        cls, kind: str, url: str, args: argparse.Namespace, seconds: float
    ) -> Attacker:
        """Start it and wait until it is connected and attacking."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve().with_name("hostile_attacker.py")),
            *(kind, url, str(seconds), str(int(args.frame_mb * 1_000_000))),
            str(args.attacker_nice),
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if line.strip() != b"attacking":
            process.kill()
            raise RuntimeError(f"the attacker did not start: {line!r}")
        return cls(process)

    async def finish(self, timeout: float) -> None:
        """Wait for its report (kill it if it hangs, e.g. on a stalled send)."""
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            line = b""
        words = line.decode().split()
        if len(words) == 4:
            self.sent, self.reconnects = int(words[1]), int(words[3])
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()


# --- the bystanders (this process) --------------------------------------------------


@dataclass
class Phase:
    """What one (server, phase) run measured."""

    server: str
    phase: str
    latencies_ms: list[float] = field(default_factory=list)
    timeouts: int = 0
    rss: list[int] = field(default_factory=list)
    attacker_sent: int = 0
    attacker_reconnects: int = 0
    end: dict[str, Any] = field(default_factory=dict)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def peak_rss(self) -> int:
        return max(self.rss, default=0)


async def sample_rss(pid: int, into: list[int]) -> None:
    """Append the server's RSS every `RSS_SAMPLE_S` until cancelled."""
    process = psutil.Process(pid)
    with contextlib.suppress(psutil.Error):
        while True:
            into.append(int(process.memory_info().rss))
            await asyncio.sleep(RSS_SAMPLE_S)


async def measure(
    server: ServerProcess, phase: Phase, args: argparse.Namespace
) -> None:
    """The bystanders' measured clicks, with an attacker unless idle."""
    clients = await connect_many(server.ws_url, args.bystanders)
    sampler = asyncio.ensure_future(sample_rss(server.pid, phase.rss))
    attacker = None
    try:
        for client in clients:  # warm-up, not measured
            await client.click("plus")
            await client.wait_for(lambda c=client: c.value("count") == "1")
        if phase.phase != "idle":
            attacker = await Attacker.start(
                phase.phase, server.ws_url, args, args.duration + 1
            )
        gc.collect()
        gc.freeze()  # the clients' own collections are not server latency
        deadline = time.perf_counter() + args.duration
        rng = random.Random(f"{args.seed}-{phase.server}-{phase.phase}")
        clicks = clicking_at_random(clients, "plus", rng, deadline, args.timeout, phase)
        await asyncio.gather(*clicks)
    finally:
        gc.unfreeze()
        if attacker is not None:
            await attacker.finish(args.timeout + 30)
            phase.attacker_sent = attacker.sent
            phase.attacker_reconnects = attacker.reconnects
        sampler.cancel()
        for client in clients:
            with contextlib.suppress(Exception):
                client.abort()


async def run_phase(
    server_kind: str, phase_name: str, args: argparse.Namespace
) -> Phase:
    """One phase on a fresh server."""
    phase = Phase(server_kind, phase_name)
    async with ServerProcess(server_kind, args) as server:
        try:
            await measure(server, phase, args)
            phase.end = await server.stats(args.timeout)
        finally:  # a swamped plain server may take long to stop: not measured
            assert server.process is not None
            server.process.kill()
            await server.process.wait()
    return phase


# --- report -------------------------------------------------------------------------


def phase_row(phase: Phase) -> str:
    """One row of the report table."""
    values = phase.latencies_ms
    attacker = (
        f"{phase.attacker_sent:,} ({phase.attacker_reconnects} reconnects)"
        if phase.phase != "idle"
        else "-"
    )
    return (
        f"| {phase.server} | {phase.phase} | {ms(percentile(values, 50))} | "
        f"{ms(phase.p99)} | {ms(max(values, default=math.nan))} | {len(values)} | "
        f"{phase.timeouts} | {attacker} | {phase.peak_rss / MIB:.0f} | "
        f"{phase.end.get('sessions', '?')} ({phase.end.get('connected', '?')}) | "
        f"{phase.end.get('refused', '?')} |"
    )


def goal_lines(phases: list[Phase]) -> list[str]:
    """Each flet-resilient server's attack phases against its idle phase."""
    by = {(p.server, p.phase): p for p in phases}
    lines, met = [], True
    for server in SERVERS[1:]:
        idle = by.get((server, "idle"))
        for name in PHASES[1:] if idle is not None else ():
            mine, plain = by.get((server, name)), by.get(("plain", name))
            if mine is None:
                continue
            ratio = mine.p99 / idle.p99
            growth = (mine.peak_rss - idle.peak_rss) / MIB
            ok = ratio <= GOAL_VS_IDLE and growth <= GOAL_RSS_MIB
            met = met and ok
            versus = f"; plain p99 {ms(plain.p99)} ms" if plain else ""
            lines.append(
                f"- {server} {name}: p99 / idle p99 = {ratio:.2f} "
                f"(goal <= {GOAL_VS_IDLE:g}), peak RSS {growth:+.0f} MiB over idle "
                f"(goal <= {GOAL_RSS_MIB}){versus}: {'met' if ok else 'NOT met'}"
            )
    if lines:
        lines.append(f"- goal met: {'yes' if met else 'no'}")
    return lines


def report(phases: list[Phase], args: argparse.Namespace, command: str) -> str:
    """The markdown report: settings, table, goals."""
    lines = [
        *report_header("bench_hostile", command, Path(__file__).resolve().parent),
        f"- {args.bystanders} bystanders clicking every 0.5-1.5 s, "
        f"{args.duration:g} s per phase, {args.page_controls} Texts per page, "
        f"{args.frame_mb:g} MB big frames, attacker at nice {args.attacker_nice}",
        "",
        "| server | phase | bystander p50 ms | p99 ms | max ms | clicks | timeouts "
        "| attacker frames | server peak RSS MiB | sessions (connected) at end "
        "| refused (transport.*) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *map(phase_row, phases),
        "",
        *goal_lines(phases),
    ]
    return "\n".join(lines) + "\n"


# --- entry point --------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (`--smoke` shrinks everything)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bystanders", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0, help="s per phase")
    parser.add_argument("--page-controls", type=int, default=200)
    parser.add_argument("--frame-mb", type=float, default=10.0)
    parser.add_argument("--attacker-nice", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=30.0, help="per click")
    parser.add_argument("--servers", default=DEFAULT_SERVERS, help=", ".join(SERVERS))
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny and quick: check that it runs"
    )
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.bystanders, args.duration, args.page_controls = 2, 1.5, 20
        args.frame_mb, args.timeout = 2.0, 2.0
    args.servers = choices(parser, "--servers", args.servers, SERVERS)
    args.phases = choices(parser, "--phases", args.phases, PHASES)
    return args


async def run(args: argparse.Namespace) -> list[Phase]:
    """Every (server, phase) pair, one after the other."""
    phases = []
    for server in args.servers:
        for phase in args.phases:
            started = time.monotonic()
            phases.append(await run_phase(server, phase, args))
            took = time.monotonic() - started
            print(f"{server} / {phase}: {took:.1f} s", file=sys.stderr, flush=True)
    return phases


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or one of its child processes)."""
    args = parse_args(argv)
    bench_main(args, run, report, args.output, "hostile", serve=serve)


if __name__ == "__main__":
    main()
