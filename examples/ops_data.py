"""The operations console's data, with no UI framework: the Flet reference app
(`examples/ops_console.py`) and its NiceGUI twin (`benchmarks/nicegui_ops_console.py`)
show the same services, the same live figures and the same heavy report.

Environment: `OPS_ROWS` (services listed, default 200), `OPS_REPORT_SAMPLES`
(simulated requests per service in the heavy report, default 3000: about half a
second of CPU on a 2024 server core).
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass

REGIONS = ("all", "eu-west", "us-east", "ap-south", "sa-east")
STATUSES = ("ok", "degraded", "down")
SEVERITIES = ("low", "medium", "high")
STATUS_COLORS = {"ok": "green", "degraded": "orange", "down": "red"}


@dataclass(frozen=True)
class Service:
    """One row of the console."""

    name: str
    region: str
    status: str
    p99_ms: int


def rows_wanted() -> int:
    """How many services the console lists ($OPS_ROWS, default 200)."""
    return int(os.environ.get("OPS_ROWS", "200"))


def report_samples() -> int:
    """Simulated requests per service in the heavy report ($OPS_REPORT_SAMPLES)."""
    return int(os.environ.get("OPS_REPORT_SAMPLES", "3000"))


def services(count: int, seed: int = 7) -> list[Service]:
    """`count` services, the same on every call (a fixed seed)."""
    rng = random.Random(seed)
    return [
        Service(
            name=f"svc-{i:03d}-{rng.choice(('api', 'db', 'cache', 'queue', 'web'))}",
            region=rng.choice(REGIONS[1:]),
            status=rng.choices(STATUSES, weights=(8, 2, 1))[0],
            p99_ms=rng.randint(5, 900),
        )
        for i in range(count)
    ]


def matching(rows: list[Service], query: str, region: str) -> list[Service]:
    """The rows the filters let through: name contains `query`, region matches."""
    query = query.strip().lower()
    return [
        row
        for row in rows
        if query in row.name and (region == "all" or row.region == region)
    ]


def row_text(row: Service) -> tuple[str, str, str]:
    """The three cells a row shows: name, region, status with its p99."""
    return row.name, row.region, f"{row.status} · p99 {row.p99_ms} ms"


def live_figures(now: float | None = None) -> dict[str, str]:
    """The live panel's figures for this second (the same for every user)."""
    second = int(time.time() if now is None else now)
    wave = math.sin(second / 30)
    return {
        "clock": time.strftime("%H:%M:%S", time.gmtime(second)),
        "requests": f"{4200 + 800 * wave:,.0f} req/s",
        "errors": f"{0.4 + 0.3 * wave:.2f} % errors",
        "incidents": f"{3 + second % 4} open incidents",
    }


def sla_report(rows: int, samples: int, seed: int = 1) -> str:
    """The heavy report: simulate `samples` requests per service and summarize
    their latency percentiles (deliberately pure-Python CPU work)."""
    rng = random.Random(seed)
    breaches = 0
    worst = 0.0
    for _ in range(rows):
        latencies = sorted(rng.lognormvariate(3.5, 0.8) for _ in range(samples))
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        worst = max(worst, p99)
        breaches += p99 > 200
    return (
        f"SLA report: {breaches} of {rows} services over 200 ms p99 "
        f"(worst {worst:,.0f} ms)"
    )
