"""What every benchmark does the same way: its `--modes`-style options, its phase
loop, its entry point, its report's header and figures, and where it goes.

Only the benchmarks use this, so it lives beside them (each script's folder is on
`sys.path` when it runs) rather than in the shipped `flet_resilient` package, as
do `children` (child servers) and `clients` (simulated users); what the load-test
CLI shares with them is in `flet_resilient.measure`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from flet_resilient.measure import machine

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where reports go by default (gitignored)."""

T = TypeVar("T")


def ms(value: float) -> str:
    """Milliseconds for a table: one decimal below 100, none above; n/a for nan."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def code_version(path: str | os.PathLike[str] = ".") -> str:
    """`git describe` of the checkout at `path` ("-dirty": edited), or unknown."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def command_line() -> str:
    """How this script was started, for its report: `python <script> <args>`."""
    script = os.path.relpath(sys.argv[0]) if sys.argv[0] else "benchmark"
    return "python " + " ".join([script, *sys.argv[1:]])


def report_header(
    title: str, command: str, checkout: str | os.PathLike[str]
) -> list[str]:
    """A benchmark report's first lines: title, date, machine, code, command."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"# {title}",
        "",
        f"- date: {now}",
        f"- machine: {machine()}",
        f"- code: flet-resilient {code_version(checkout)}",
        f"- command: `{command}`",
    ]


def save_report(text: str, path: Path) -> None:
    """Print a markdown report and write it to `path` (creating its folder)."""
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"saved {path}", file=sys.stderr)


def choices(
    parser: argparse.ArgumentParser, option: str, value: str, known: Sequence[str]
) -> list[str]:
    """The known values `value` lists (comma-separated), in canonical order; a
    usage error naming `option` when it lists none or an unknown one."""
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    if not chosen or any(v not in known for v in chosen):
        parser.error(f"{option} must list some of {', '.join(known)}")
    return [v for v in known if v in chosen]


def stamped(name: str) -> Path:
    """A report path that does not overwrite the last: results/<name>-<time>.md."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return RESULTS_DIR / f"{name}-{stamp}.md"


async def each_phase(
    modes: Iterable[str],
    run_phase: Callable[[str, argparse.Namespace], Awaitable[T]],
    args: argparse.Namespace,
    about: str | None = None,
) -> list[T]:
    """`run_phase(mode, args)` for every mode, one after the other; `about` (the
    phase's size) is announced on stderr before each."""
    phases = []
    for mode in modes:
        if about is not None:
            print(f"phase {mode}: {about} ...", file=sys.stderr, flush=True)
        phases.append(await run_phase(mode, args))
    return phases


def bench_main(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, T]],
    report: Callable[[T, argparse.Namespace, str], str],
    output: Path | None = None,
    name: str = "",
    serve: Callable[[argparse.Namespace], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """A benchmark's entry point: its child process's `serve(args)` if it was
    started with `--serve`; otherwise `run(args)`, then its report printed and
    saved to `output` (default: `stamped(name)`, taken when the run ends)."""
    if serve is not None and getattr(args, "serve", None):
        asyncio.run(serve(args))
        return
    results = asyncio.run(run(args))
    save_report(report(results, args, command_line()), output or stamped(name))
