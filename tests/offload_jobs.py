"""Module-level jobs for the offload tests (process workers import them by name)."""

import os
import time

from flet_resilient import offload


def spin(seconds: float) -> float:
    """Burn CPU (holding the GIL) for `seconds`; return the seconds spun."""
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += 1
    return seconds


spin_offloaded = offload(spin)


@offload
def worker_pid() -> int:
    return os.getpid()


@offload
def crash() -> None:
    os._exit(3)


@offload(timeout=0.5)
def sleepy(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@offload
def square(x: int) -> int:
    return x * x
