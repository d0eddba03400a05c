"""Load-test a Flet web app over its real protocol, with and without flet-resilient.

    python -m flet_resilient.loadtest examples/cpu_heavy.py:main --users 200 \\
        --duration 20 --scenario clicks --heavy-key crunch --compare

The app is served by uvicorn in a child process on 127.0.0.1 (so its memory and
CPU can be measured, and `--compare` can run it a second time with
`FLET_RESILIENT_DISABLE=1`); `--users` simulated users
(`flet_resilient.testing.FletClient`) drive it from this process. Scenarios:

* `clicks`: users click `--click-key` at random intervals and time each click
  until the next patch arrives; `--heavy-key` users (`--heavy-share`) click a
  heavy button instead and are reported apart from the bystanders;
* `dashboard`: users connect and receive; frames/s and bytes/s per user, and
  whether every user keeps receiving;
* `flaky`: users reset their connection every `--drop-every` seconds or so
  and reconnect with their session id; sessions lost and reconnect time.

`--ramp START:STOP:STEP` is capacity mode: users are added step by step (the
same server, `--duration` seconds measured per step) until a step misses the SLO
(`--slo-ms` click→patch p99, no session lost, `--rss-budget`); the capacity is
the largest step that met it. `--workers N` serves the app with N uvicorn
workers behind HAProxy (the deploy setup, `flet_resilient.cluster`).

The server also answers `GET /__flet_resilient/stats` (`flet_resilient.stats()`
as JSON), from which the event-loop lag is read. Results go to `--out`:
`report.md`, `results.json`, `loadtest.png` (with matplotlib, extra `plot`)
and the servers' stderr logs (`capacity.png` for a ramp).
"""

from flet_resilient.loadtest.app import STATS_PATH, build_app, create_app, load_main
from flet_resilient.loadtest.cli import main
from flet_resilient.loadtest.meter import CpuMeter, Meter
from flet_resilient.loadtest.model import ModeResult, Plan, Sample
from flet_resilient.loadtest.plot import plot, plot_ramp
from flet_resilient.loadtest.ramp import SLO, Ramp, Step, parse_ramp, ramp
from flet_resilient.loadtest.report import table
from flet_resilient.loadtest.runner import run
from flet_resilient.loadtest.server import ServerProcess, WorkersBehindProxy

__all__ = [
    "SLO",
    "STATS_PATH",
    "CpuMeter",
    "Meter",
    "ModeResult",
    "Plan",
    "Ramp",
    "Sample",
    "ServerProcess",
    "Step",
    "WorkersBehindProxy",
    "build_app",
    "create_app",
    "load_main",
    "main",
    "parse_ramp",
    "plot",
    "plot_ramp",
    "ramp",
    "run",
    "table",
]
