"""What a load-test run is made of: its plan, the samples it takes, its results."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

SCENARIOS = ("clicks", "dashboard", "flaky")
MODES = ("plain", "resilient")  # FLET_RESILIENT_DISABLE=1, and mitigations on
FLOWING_S = 2.0  # dashboard: a user "keeps receiving" with a patch this recent


@dataclass
class Sample:
    """One timed action: when it started (s into the run) and how long it took."""

    t: float
    ms: float
    done: bool = True  # False: timed out or cut off at the end (a lower bound)


@dataclass
class Reconnect:
    """One flaky-scenario reconnect."""

    t: float
    ms: float
    lost: bool  # the server handed out a new session id: main() ran again


@dataclass
class Tick:
    """What one second of the run looked like."""

    t: float
    connected: int
    frames: int
    bytes: int
    rss: int
    tree_rss: int


@dataclass
class ModeResult:
    """Everything one mode (plain or resilient) measured."""

    mode: str
    users: int
    heavy_users: int = 0
    connected: int = 0
    connect_failures: int = 0
    seconds: float = 0.0
    bystander: list[Sample] = field(default_factory=list)
    heavy: list[Sample] = field(default_factory=list)
    reconnects: list[Reconnect] = field(default_factory=list)
    reconnect_failures: int = 0
    frames: int = 0
    bytes: int = 0
    flowing: int = 0  # users who received a patch in the last FLOWING_S seconds
    worst_gap_s: float = 0.0  # longest silence between patches, worst user
    ticks: list[Tick] = field(default_factory=list)
    rss_peak: int = 0
    rss_end: int = 0
    tree_rss_peak: int = 0
    tree_rss_end: int = 0
    server_cpu_s: float = 0.0
    workers_cpu_s: float = 0.0
    client_cores: float = 0.0
    other_cores: float = 0.0
    lag_p99_ms: float = math.nan
    lag_max_ms: float = math.nan
    stalls: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """What a run does, decided from the arguments and the app's first page."""

    target: str
    scenario: str
    users: int
    duration: float
    click_key: str | None
    heavy_key: str | None
    heavy_share: float
    think: float
    drop_every: float
    click_timeout: float
    batch: int
    seed: int
    out: Path
    active_share: float = 1.0  # clicks: share of users clicking; the rest watch
    workers: int = 1  # server processes (more than one: behind HAProxy)
    answer_key: str | None = None  # a click is answered when this control changes

    def heavy_count(self, users: int | None = None) -> int:
        """How many of `users` (default: all) click the heavy button (at least
        one bystander left)."""
        users = self.users if users is None else users
        if self.scenario != "clicks" or not self.heavy_key or self.heavy_share <= 0:
            return 0
        if users < 2:
            return 0
        return min(users - 1, max(1, round(users * self.heavy_share)))

    def bystander_count(self, users: int | None = None) -> int:
        """How many of `users` click the light button; the others only watch."""
        users = self.users if users is None else users
        if self.scenario == "dashboard":
            return 0
        free = users - self.heavy_count(users)
        return min(free, max(1, round(users * self.active_share)))

    def role(self, index: int, before: int, upto: int) -> str:
        """The role of user `index` joining with users `before`..`upto`: new heavy
        users first, then new bystanders, then viewers, so that each count
        matches `heavy_count(upto)` and `bystander_count(upto)`."""
        heavy = self.heavy_count(upto) - self.heavy_count(before)
        clicking = heavy + self.bystander_count(upto) - self.bystander_count(before)
        offset = index - before
        if offset < heavy:
            return "heavy"
        return "bystander" if offset < clicking else "viewer"


def note(result: ModeResult, message: str) -> None:
    """Keep the first few problems for the report."""
    if len(result.errors) < 20:
        result.errors.append(message)


def progress(line: str) -> None:
    """One progress line on stderr (stdout gets the table)."""
    print(line, file=sys.stderr, flush=True)
