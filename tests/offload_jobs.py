"""Module-level jobs for the offload tests (process workers import them by name)."""

import os
import signal
import threading
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


# --- session-aware jobs (thread kind: they share this process's state) -------

release = threading.Event()
ran: list[int] = []


def hold(n: int) -> int:
    """Record that call `n` ran, then block until the test releases it."""
    ran.append(n)
    release.wait(timeout=20)
    return n


hold_queue = offload(hold, kind="thread", per_session=1, policy="queue")
hold_drop = offload(hold, kind="thread", per_session=1, policy="drop")
hold_latest = offload(hold, kind="thread", per_session=1, policy="latest")


@offload(per_session=1)
def long_spin(seconds: float) -> float:
    return spin(seconds)


@offload
def niceness() -> int:
    return os.nice(0)


def note_pid(path: str) -> None:
    """Append this worker's pid to `path`: the test sees that the job started."""
    with open(path, "a") as notes:
        notes.write(f"{os.getpid()}\n")


@offload
def note_then_die(path: str) -> None:
    """Append this worker's pid to `path`, then SIGKILL it (as the OOM killer)."""
    note_pid(path)
    os.kill(os.getpid(), signal.SIGKILL)


@offload
def note_then_wait(path: str, release: str) -> str:
    """Append this worker's pid to `path`, then wait (at most 20 s) until the
    file `release` exists: a call surely running while the test acts."""
    note_pid(path)
    deadline = time.monotonic() + 20
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"


@offload
def autogroup() -> str:
    """This worker's Linux autogroup line ("/autogroup-N nice K")."""
    with open("/proc/self/autogroup") as group:
        return group.read().strip()
