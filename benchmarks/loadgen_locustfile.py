"""bench_loadgen.py's Locust side: `FletUser`s idle, then clicking, CPU measured.

Run by `benchmarks/bench_loadgen.py` as `python -m locust -f <this> --headless
-u N -r R --host URL` with `LOADGEN_USERS`, `LOADGEN_SECONDS`, `LOADGEN_THINK`
and `LOADGEN_OUT` (a JSON file) in the environment. Once every user has
connected, this process's CPU time is read over two windows of
LOADGEN_SECONDS each: every user idle, then every user clicking "inc" every
0.5-1.5 x LOADGEN_THINK s (as the CLI's clickers do); the RSS the users
added is read too. Then it writes the JSON and ends the run.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import gevent
import psutil
from gevent.event import Event
from locust import between, events, task
from locust.env import Environment

from flet_resilient.locust import FletUser

USERS = int(os.environ.get("LOADGEN_USERS", "10"))
SECONDS = float(os.environ.get("LOADGEN_SECONDS", "3"))
THINK = float(os.environ.get("LOADGEN_THINK", "1"))
OUT = Path(os.environ.get("LOADGEN_OUT", "loadgen-locust.json"))

clicking = Event()  # set once the idle window is over
run: dict[str, Any] = {"cpu": time.process_time(), "environment": None}
ME = psutil.Process()
result: dict[str, Any] = {"connected": 0, "connect_failures": 0, "samples": []}


class Visitor(FletUser):
    """Connects, stays idle until the clicking window, then clicks "+1"."""

    wait_time = between(0.5 * THINK, 1.5 * THINK)

    @task
    def plus_one(self) -> None:
        if not clicking.is_set():
            clicking.wait()
            return  # the first click after a `wait_time`, not all at once
        self.click("inc")


@events.init.add_listener
def _init(environment: Environment, **kwargs: Any) -> None:
    run["environment"] = environment


@events.test_start.add_listener
def _test_start(**kwargs: Any) -> None:
    run["cpu"] = time.process_time()
    result["rss_start"] = ME.memory_info().rss


@events.request.add_listener
def _request(request_type: str, response_time: float, exception: Any, **_: Any) -> None:
    if request_type == "connect":
        result["connected" if exception is None else "connect_failures"] += 1
        if result["connected"] + result["connect_failures"] == USERS:
            gevent.spawn(_windows)
    elif request_type == "click" and clicking.is_set():
        result["samples"].append([response_time, exception is None])


def _windows() -> None:
    """The idle window, the clicking window, then the report; the run ends."""
    result["connect_cpu_s"] = time.process_time() - run["cpu"]
    for phase in ("idle", "clicks"):
        if phase == "clicks":
            clicking.set()
        start, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        gevent.sleep(SECONDS)
        now = resource.getrusage(resource.RUSAGE_SELF)
        result[phase] = {
            "cpu_s": now.ru_utime - start.ru_utime + now.ru_stime - start.ru_stime,
            "kernel_s": now.ru_stime - start.ru_stime,
            "seconds": time.perf_counter() - wall,
        }
    result["rss_end"] = ME.memory_info().rss
    OUT.write_text(json.dumps(result))
    run["environment"].runner.quit()
