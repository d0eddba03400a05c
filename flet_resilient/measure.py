"""Small measurement helpers shared by the load-test CLI and the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from flet_resilient.testing import FletClient

__all__ = ["CpuMeter", "code_version", "connect_many", "machine", "ms", "percentile"]


def percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile (nan when empty)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(value: float) -> str:
    """Milliseconds for a table: one decimal below 100, none above; n/a for nan."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def machine() -> str:
    """CPU model and count, OS, Python and Flet versions."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, flet {version('flet')}"
    )


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


async def connect_many(
    url: str, count: int, batch: int = 20, **options: Any
) -> list[FletClient]:
    """Connect `count` simulated users, `batch` at a time (a gentle ramp-up)."""
    clients: list[FletClient] = []
    for start in range(0, count, batch):
        size = min(batch, count - start)
        clients += await asyncio.gather(
            *(FletClient(url, **options).connect() for _ in range(size))
        )
    return clients


class CpuMeter:
    """CPU used over a window, in cores: this process tree's and everyone else's.

    Benchmarks report the second number so a busy machine shows in the results.
    Needs psutil (the `bench` or `test` extra).
    """

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.me = psutil.Process()
        self.started = time.perf_counter()
        self.tree = self._tree()
        self.busy = self._busy()

    def _tree(self) -> dict[int, float]:
        seconds = {}
        for process in [self.me, *self.me.children(recursive=True)]:
            with contextlib.suppress(self._psutil.Error):
                times = process.cpu_times()
                seconds[process.pid] = times.user + times.system
        return seconds

    def _busy(self) -> float:
        times = self._psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def cores(self) -> tuple[float, float]:
        """(own, other) CPU used since the start, in cores (steal counts as other)."""
        wall = time.perf_counter() - self.started
        tree = self._tree()
        own = sum(t - self.tree.get(pid, 0.0) for pid, t in tree.items())
        busy = self._busy() - self.busy
        return own / wall, max(0.0, busy - own) / wall
