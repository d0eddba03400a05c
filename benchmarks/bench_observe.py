"""What watching a worker costs its event loop: `stats()`, a status-page read and a
Prometheus scrape, per call, as the sessions grow.

Run from the repository root (`pip install -e .[test]`):

    python benchmarks/bench_observe.py          # 100, 400, 1000 sessions (~1 min)
    python benchmarks/bench_observe.py --smoke  # 1 and 20 sessions: it runs

One in-process server (`FletServer`) serves a page of `--controls` Texts with
`evict_idle` and `coalesce_updates`; real-protocol clients connect step by step
and stay idle. At each step the three reads run `--repeat` times on the server's
own loop (where a real poll or scrape runs them) and the median is reported,
with the cost per session fitted between the first and last step. Every call
blocks the loop for that long: with a page open it runs once a second, a scrape
once per scrape interval. The report goes to stdout and to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flet as ft
from harness import save_report

from flet_resilient import MemoryStore, coalesce_updates, evict_idle, stats
from flet_resilient.prometheus import metrics_text
from flet_resilient.status import StatusSampler
from flet_resilient.testing import FletClient, FletServer


def make_main(controls: int) -> Callable[[ft.Page], None]:
    @evict_idle(store=MemoryStore())
    @coalesce_updates(max_hz=20)
    def main(page: ft.Page) -> None:
        page.add(*(ft.Text(str(i)) for i in range(controls)), ft.Text("0", key="n"))

    return main


def median_ms(call: Callable[[], Any], repeat: int) -> float:
    """Median wall time of `call()` in milliseconds (after one warm-up call)."""
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def measure(repeat: int) -> dict[str, float]:
    """The three reads' median cost, on the loop that calls this."""
    return {
        "stats()": median_ms(stats, repeat),
        "status read": median_ms(lambda: StatusSampler().read(), repeat),
        "scrape": median_ms(metrics_text, repeat),
    }


async def run(args: argparse.Namespace) -> list[tuple[int, dict[str, float]]]:
    rows = []
    users: list[FletClient] = []
    async with FletServer(make_main(args.controls)) as server:
        try:
            for step in args.sessions:
                while len(users) < step:
                    users.append(await FletClient(server.ws_url).connect())
                rows.append((step, await server.call(measure(args.repeat))))
                print(f"{step} sessions: {rows[-1][1]}", file=sys.stderr, flush=True)
        finally:
            await asyncio.gather(*(u.close() for u in users), return_exceptions=True)
    return rows


def report(rows: list[tuple[int, dict[str, float]]], args: argparse.Namespace) -> str:
    names = list(rows[0][1])
    (first, low), (last, high) = rows[0], rows[-1]
    lines = [
        "# What watching a worker costs its loop (bench_observe)",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"`{' '.join(sys.argv)}`: pages of {args.controls} Texts, `evict_idle` + "
        f"`coalesce_updates`, idle real-protocol clients; median of {args.repeat} "
        "calls on the server's loop.",
        "",
        "| sessions | " + " | ".join(f"{n} ms" for n in names) + " |",
        "|---:|" + "---:|" * len(names),
        *(
            f"| {step} | " + " | ".join(f"{ms[n]:.2f}" for n in names) + " |"
            for step, ms in rows
        ),
    ]
    if last > first:
        per = [
            f"{n} {(high[n] - low[n]) / (last - first) * 1000:.0f} µs" for n in names
        ]
        lines += [
            "",
            "- per session (between the first and last step): " + ", ".join(per),
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="100,400,1000", help="steps")
    parser.add_argument("--controls", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sessions, args.controls, args.repeat = "1,20", 20, 3
    args.sessions = [int(n) for n in args.sessions.split(",")]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    text = report(asyncio.run(run(args)), args)
    if args.out is None:
        print(text)
    else:
        save_report(text, args.out)


if __name__ == "__main__":
    main()
