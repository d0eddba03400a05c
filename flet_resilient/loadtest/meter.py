"""CPU and memory of the app's server processes, the load generator and the machine.

The one meter of the load-test CLI and the benchmarks: `Meter` follows given
server processes, `CpuMeter` this process's tree against the rest of the machine.
Needs psutil (the `bench` or `test` extra).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any


def cpu_seconds(process: Any) -> float:
    """User + system CPU seconds of a `psutil.Process` so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine, all processes (not idle, not iowait)."""
    import psutil

    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class Meter:
    """Memory and CPU of the server process trees, this process and the machine.

    `pids` are the serving processes (one, or each worker); their children
    (`@offload` workers) count in the tree's RSS and as worker CPU.
    """

    def __init__(self, pids: list[int]) -> None:
        import psutil

        self._psutil = psutil
        self.servers: list[Any] = [psutil.Process(pid) for pid in pids]
        self.me = psutil.Process()
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds last seen
        self.rss_peak = 0
        self.tree_rss_peak = 0

    def sample(self) -> tuple[int, int]:
        """(servers' RSS, servers + workers RSS) in bytes; records CPU and peaks."""
        rss = tree = 0
        own = {server.pid for server in self.servers}
        processes = list(self.servers)
        for server in self.servers:
            with contextlib.suppress(self._psutil.Error):
                processes += server.children(recursive=True)
        for process in processes:
            with contextlib.suppress(self._psutil.Error):
                with process.oneshot():
                    memory = process.memory_info().rss
                    self.cpu[process.pid] = cpu_seconds(process)
                tree += memory
                if process.pid in own:
                    rss += memory
        self.rss_peak = max(self.rss_peak, rss)
        self.tree_rss_peak = max(self.tree_rss_peak, tree)
        return rss, tree

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds so far: (server processes, their worker processes)."""
        own = sum(self.cpu.get(server.pid, 0.0) for server in self.servers)
        return own, sum(self.cpu.values()) - own

    def my_cpu(self) -> float:
        """CPU seconds of this (load-generating) process."""
        return cpu_seconds(self.me)

    def machine_busy(self) -> float:
        """Busy CPU seconds of the whole machine, all processes."""
        return machine_busy()

    def reset_peaks(self) -> None:
        """Start the RSS peaks afresh (a ramp's next step)."""
        self.rss_peak = self.tree_rss_peak = 0


class CpuMeter(Meter):
    """CPU used over a window, in cores: this process tree's and everyone else's.

    Benchmarks report the second number so a busy machine shows in the results.
    A child that exits before `cores()` counts as far as `sample()` last saw it.
    """

    def __init__(self) -> None:
        super().__init__([os.getpid()])
        self.started = time.perf_counter()
        self.sample()
        self.tree = dict(self.cpu)  # pid -> CPU seconds at the start
        self.busy = machine_busy()

    def used(self, pid: int) -> float:
        """CPU seconds process `pid` used since the start, as last sampled."""
        return self.cpu.get(pid, 0.0) - self.tree.get(pid, 0.0)

    def cores(self, unseen: float = 0.0) -> tuple[float, float]:
        """(own, other) CPU used since the start, in cores (steal counts as
        other); `unseen`: CPU seconds of our children that `sample()` never saw
        (they are ours, not others')."""
        wall = time.perf_counter() - self.started
        self.sample()
        own = sum(self.used(pid) for pid in self.cpu) + unseen
        busy = machine_busy() - self.busy
        return own / wall, max(0.0, busy - own) / wall
