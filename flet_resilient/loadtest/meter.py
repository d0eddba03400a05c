"""CPU and memory of the app's server processes, the load generator and the machine."""

from __future__ import annotations

import contextlib
from typing import Any


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
                    times = process.cpu_times()
                self.cpu[process.pid] = times.user + times.system
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
        times = self.me.cpu_times()
        return float(times.user + times.system)

    def machine_busy(self) -> float:
        """Busy CPU seconds of the whole machine, all processes."""
        times = self._psutil.cpu_times()
        return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))

    def reset_peaks(self) -> None:
        """Start the RSS peaks afresh (a ramp's next step)."""
        self.rss_peak = self.tree_rss_peak = 0
