"""What the load generator itself costs: CPU per simulated user, CLI vs Locust.

Run from the repository root (about two minutes with the defaults):

    python benchmarks/bench_loadgen.py                     # 200 users, 20 s windows
    python benchmarks/bench_loadgen.py --smoke             # 10 users, 2 s windows

One app server (a counter page, plain Flet, a child process) and, one after
the other, two load generators, each a child process driving `--users`
users over Flet's real protocol:

* `cli`: the load-test CLI's own users (`flet_resilient.loadtest`'s
  `connect_users` and `clicker`: asyncio, `websockets`, `FletClient`);
* `locust`: `flet_resilient.locust.FletUser` under `python -m locust
  --headless` (gevent, `websockets` sync client), `benchmarks/loadgen_locustfile.py`.

Each generator connects every user, then reads its own process CPU time over
two windows of `--duration` s: every user idle (connected, receiving), then
every user clicking "+1" every 0.5-1.5 x `--think` s, each click timed to its
patch. Reported per generator and window: CPU ms per user-second, the users
one core could drive at that rate, CPU per click, clicks and failures, click
p50/p99, and the CPU everything else on the machine used (a busy machine makes
the numbers noisy); per generator, CPU per connect and the memory each user
added. The markdown goes to stdout and `--out` (default
`benchmarks/results/loadgen.md`, gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import flet as ft
import psutil
from children import ChildServer
from harness import RESULTS_DIR, bench_main, ms, report_header

from flet_resilient import is_connected
from flet_resilient.loadtest.meter import CpuMeter
from flet_resilient.measure import close_all, percentile, reply, serve_child

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).resolve().parent / "loadgen_locustfile.py"
GENERATORS = ("cli", "locust")
PHASES = ("idle", "clicks")
SPAWN_RATE = 50  # Locust users started per second (the CLI connects 20 at a time)
RUN_TIMEOUT_S = 300.0


# --- the server (child process) ---------------------------------------------------


class CounterApp:
    """A "+1" button and its count, and a clock ticking `tick_hz` times a second
    (a live panel: idle users receive too); counts every click it handles."""

    def __init__(self, tick_hz: float) -> None:
        self.tick_hz = tick_hz
        self.handled = 0

    def main(self, page: ft.Page) -> None:
        count = ft.Text("0", key="count")
        clock = ft.Text("0", key="clock")

        def increment(e: ft.Event) -> None:
            self.handled += 1
            count.value = str(int(count.value) + 1)

        async def tick() -> None:
            while True:
                await asyncio.sleep(1 / self.tick_hz)
                if not is_connected(page):
                    return  # the benchmark's users do not come back
                clock.value = str(int(clock.value) + 1)
                clock.update()

        page.add(count, clock, ft.Button("+1", key="inc", on_click=increment))
        if self.tick_hz > 0:
            page.run_task(tick)

    def handle(self, words: list[str]) -> None:
        """`clicks T` -> `clicks T <handled>`."""
        if words[0] == "clicks":
            reply("clicks", words[1], self.handled)


async def serve(tick_hz: float) -> None:
    import flet_web.fastapi as flet_fastapi

    app = CounterApp(tick_hz)
    # A short session timeout: one generator's users are gone before the next.
    main = flet_fastapi.app(app.main, no_cdn=True, session_timeout_seconds=2)
    await serve_child(main, app.handle)


# --- the CLI's users (child process) ----------------------------------------------


async def generate_cli(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Connect and drive the CLI's users; what this process's CPU did."""
    from flet_resilient.loadtest import model, scenarios

    plan = model.Plan(
        target="", scenario="clicks", users=args.users, duration=args.duration,
        click_key="inc", heavy_key=None, heavy_share=0.0, think=args.think,
        drop_every=0.0, click_timeout=10.0, batch=20, seed=1, out=Path("."),
    )  # fmt: skip
    result = model.ModeResult(mode="cli", users=args.users)
    users: list[scenarios.User] = []
    me = psutil.Process()
    rss_start, cpu = me.memory_info().rss, time.process_time()
    await scenarios.connect_users(plan, url, result, users, args.users)
    out: dict[str, Any] = {
        "connected": result.connected,
        "connect_failures": result.connect_failures,
        "connect_cpu_s": time.process_time() - cpu,
        "rss_start": rss_start,
    }
    times, wall = usage(), time.perf_counter()
    await asyncio.sleep(args.duration)
    out["idle"] = window(times, wall)
    times, wall, start = usage(), time.perf_counter(), time.monotonic()
    await asyncio.gather(
        *(
            scenarios.guarded(
                user,
                result,
                functools.partial(
                    scenarios.clicker, user, plan, result, start, start + args.duration
                ),
            )
            for user in users
        )
    )
    out["clicks"] = window(times, wall)
    out["samples"] = [[s.ms, s.done] for s in result.bystander]
    out["rss_end"] = me.memory_info().rss
    await close_all([user.client for user in users])
    return out


def usage() -> resource.struct_rusage:
    """This process's resource usage (CPU to the microsecond)."""
    return resource.getrusage(resource.RUSAGE_SELF)


def window(start: resource.struct_rusage, wall: float) -> dict[str, float]:
    """CPU (all, and in the kernel) and wall seconds since `start`, `wall`."""
    now = usage()
    kernel = now.ru_stime - start.ru_stime
    return {
        "cpu_s": now.ru_utime - start.ru_utime + kernel,
        "kernel_s": kernel,
        "seconds": time.perf_counter() - wall,
    }


# --- running the generators (parent) ----------------------------------------------


def generator_command(name: str, url: str, args: argparse.Namespace) -> list[str]:
    """The child process for generator `name` against the server at `url`."""
    if name == "cli":
        return [
            sys.executable, __file__, "--generate", url, "--users", str(args.users),
            "--duration", str(args.duration), "--think", str(args.think),
        ]  # fmt: skip
    host = url.replace("ws://", "http://").removesuffix("/ws")
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(args.users), "-r", str(min(args.users, SPAWN_RATE)),
        "--host", host, "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip


async def run_generator(
    name: str, server: ChildServer, args: argparse.Namespace, folder: Path
) -> dict[str, Any]:
    """One generator's run: its measurements, clicks the server handled, noise."""
    output = folder / f"{name}.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
        ),
        "LOADGEN_USERS": str(args.users),
        "LOADGEN_SECONDS": str(args.duration),
        "LOADGEN_THINK": str(args.think),
        "LOADGEN_OUT": str(output),
    }
    handled = int((await server.request("clicks"))[0])
    meter = CpuMeter()
    child = await asyncio.create_subprocess_exec(
        *generator_command(name, server.ws_url, args),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(child.communicate(), RUN_TIMEOUT_S)
    if not output.exists():
        raise SystemExit(f"{name} generator failed:\n{stderr.decode()[-3000:]}")
    data: dict[str, Any] = json.loads(output.read_text())
    data["handled"] = int((await server.request("clicks"))[0]) - handled
    data["other_cores"] = meter.cores()[1]
    return data


async def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Serve the app; run each generator against it in turn."""
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, __file__, "--serve", "--tick", str(args.tick)]
        async with ChildServer(command) as server:
            for name in GENERATORS:
                print(f"{name}: {args.users} users ...", file=sys.stderr)
                results[name] = await run_generator(name, server, args, Path(folder))
    return results


# --- the report --------------------------------------------------------------------


def per_user_ms(data: dict[str, Any], phase: str, users: int) -> float:
    """Generator CPU milliseconds per user-second in `phase`."""
    measured = data[phase]
    return float(measured["cpu_s"] * 1000 / max(users, 1) / measured["seconds"])


def per_click(data: dict[str, Any], samples: list[Any]) -> str:
    """CPU ms per click beyond the idle window's rate (the cost of clicking)."""
    idle_rate = data["idle"]["cpu_s"] / data["idle"]["seconds"]
    extra = data["clicks"]["cpu_s"] - idle_rate * data["clicks"]["seconds"]
    return f"{extra * 1000 / len(samples):.2f}" if samples else "n/a"


def rows(results: dict[str, dict[str, Any]], users: int) -> list[str]:
    """One table row per generator and window."""
    lines = []
    for name, data in results.items():
        for phase in PHASES:
            cost = per_user_ms(data, phase, users)
            samples = data.get("samples", []) if phase == "clicks" else []
            done = [ms_ for ms_, ok in samples if ok]
            cells = [
                name, phase, f"{data['connected']}/{users}",
                f"{data[phase]['cpu_s']:.3f}",
                f"{data[phase]['kernel_s'] / max(data[phase]['cpu_s'], 1e-9):.0%}",
                f"{cost:.3f}",
                f"{1000 / cost:,.0f}" if cost > 0 else "n/a",
                per_click(data, samples) if phase == "clicks" else "",
                str(len(samples)) if phase == "clicks" else "",
                str(len(samples) - len(done)) if phase == "clicks" else "",
                ms(percentile(done, 50)) if phase == "clicks" else "",
                ms(percentile(done, 99)) if phase == "clicks" else "",
                f"{data['other_cores']:.2f}",
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, command: str
) -> str:
    lines = report_header(
        "Load generator CPU per simulated user: CLI vs Locust", command, ROOT
    )
    lines += [
        f"- users: {args.users} per generator; windows: {args.duration:g} s idle, "
        f"then {args.duration:g} s clicking every 0.5-1.5 x {args.think:g} s; "
        f"the page's clock ticks {args.tick:g} times a second",
        "",
        "| generator | window | connected | CPU s | in the kernel "
        "| CPU ms per user-second "
        "| users per core | CPU ms per click | clicks | failures | click p50 ms "
        "| click p99 ms | other processes' cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows(results, args.users),
        "",
    ]
    for name, data in results.items():
        connected = max(data["connected"], 1)
        connect = data["connect_cpu_s"] * 1000 / connected
        memory = (data["rss_end"] - data["rss_start"]) / 1024 / connected
        lines.append(
            f"- {name}: connect {connect:.1f} ms CPU per user; memory "
            f"{memory:.0f} KiB per user (RSS {data['rss_end'] / 2**20:.0f} MiB at "
            f"the end); clicks the server handled during the run: {data['handled']}"
        )
    cheap = {
        name: per_user_ms(data, "clicks", args.users) for name, data in results.items()
    }
    best = min(cheap, key=lambda name: cheap[name])
    other = max(cheap, key=lambda name: cheap[name])
    ratio = cheap[other] / cheap[best] if cheap[best] > 0 else math.nan
    lines.append(
        f"- cheaper per clicking user: {best} ({ratio:.2f}x less CPU than {other})"
    )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--duration", type=float, default=20.0, help="s per window")
    parser.add_argument("--think", type=float, default=1.0, help="s between clicks")
    parser.add_argument("--tick", type=float, default=1.0, help="clock Hz, 0: off")
    parser.add_argument("--smoke", action="store_true", help="10 users, 2 s windows")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "loadgen.md")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--generate", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.users, args.duration, args.think = 10, 2.0, 0.5
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or one of its child processes)."""
    args = parse_args(argv)
    logging.getLogger("flet_resilient").setLevel(logging.ERROR)
    if args.generate:
        out = Path(os.environ["LOADGEN_OUT"])
        out.write_text(json.dumps(asyncio.run(generate_cli(args.generate, args))))
        return
    bench_main(args, run, report, args.out, serve=lambda a: serve(a.tick))


if __name__ == "__main__":
    main()
