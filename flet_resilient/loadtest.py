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

The server also answers `GET /__flet_resilient/stats` (`flet_resilient.stats()`
as JSON), from which the event-loop lag is read. Results go to `--out`:
`report.md`, `results.json`, `loadtest.png` (with matplotlib, extra `plot`)
and the servers' stderr logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import importlib
import importlib.util
import json
import logging
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flet_resilient.measure import machine, percentile
from flet_resilient.metrics import Histogram
from flet_resilient.testing import Action, FletClient, loopback_socket

__all__ = ["STATS_PATH", "ModeResult", "build_app", "load_main", "main", "run"]

STATS_PATH = "/__flet_resilient/stats"
SCENARIOS = ("clicks", "dashboard", "flaky")
MODES = ("plain", "resilient")  # FLET_RESILIENT_DISABLE=1, and mitigations on
OFFLINE_S = (0.2, 2.0)  # flaky: how long a user stays away before reconnecting
CONNECT_TIMEOUT = 30.0  # one user's connect + register
START_TIMEOUT = 60.0  # the server process answering its stats route
NOISY_CORES = 0.3  # CPU used by other processes that makes numbers suspect
BUSY_CLIENT = 0.9  # load generator cores above which it is the bottleneck
FLOWING_S = 2.0  # dashboard: a user "keeps receiving" with a patch this recent

logger = logging.getLogger("flet_resilient.loadtest")


# --- the server side (child process) -------------------------------------------


def _import_location(location: str) -> tuple[str, Path]:
    """(module name, sys.path root) for a dotted module or a .py file path."""
    path = Path(location)
    if location.endswith(".py") or path.is_file():
        path = path.resolve()
        if not path.is_file():
            raise SystemExit(f"loadtest: no such file: {location}")
        cwd = Path.cwd().resolve()
        with contextlib.suppress(ValueError):
            parts = path.with_suffix("").relative_to(cwd).parts
            if all(part.isidentifier() for part in parts):
                return ".".join(parts), cwd  # e.g. examples.cpu_heavy
        return path.stem, path.parent
    return location, Path.cwd().resolve()


def load_main(target: str) -> Callable[..., Any]:
    """The app's main from `module:attr` or `path/to/app.py:attr` (attr: main)."""
    location, sep, attr = target.rpartition(":")
    if not sep or not location or len(location) == 1:  # "app.py" or "C:..."
        location, attr = target, "main"
    module_name, root = _import_location(location)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # also reaches spawned @offload workers
    module = importlib.import_module(module_name)
    app_main: Callable[..., Any] | None = getattr(module, attr or "main", None)
    if not callable(app_main):
        raise SystemExit(f"loadtest: {module_name} has no callable {attr!r}")
    return app_main


def build_app(app_main: Callable[..., Any], **app_kwargs: Any) -> Any:
    """`flet_web.fastapi.app(main)` plus a JSON route with `flet_resilient.stats()`.

    The route goes first: Flet mounts its static files on "/", which would
    otherwise answer it. Asking for stats also starts the loop-lag watchdog.
    """
    import flet_web.fastapi as flet_fastapi
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    import flet_resilient

    async def stats_route(request: Request) -> Response:
        flet_resilient.watch_loop()
        body = json.dumps(flet_resilient.stats(), default=str)
        return Response(body, media_type="application/json")

    app_kwargs.setdefault("no_cdn", True)
    flet_resilient.install()  # as serve() does (a no-op when switched off)
    app = flet_fastapi.app(app_main, **app_kwargs)
    app.router.routes.insert(0, Route(STATS_PATH, stats_route, methods=["GET"]))
    return app


def serve(target: str) -> None:
    """Child side: serve `target` on 127.0.0.1, print the port, stop on stdin EOF.

    The parent closes our stdin to stop us, so we also stop when it dies.
    """
    import uvicorn

    from flet_resilient import configure_offload

    # Plain Flet blocks the loop on purpose; the watchdog would log every stall.
    logging.getLogger("flet_resilient.watchdog").setLevel(logging.ERROR)
    app = build_app(load_main(target))
    sock = loopback_socket()
    sock.listen(2048)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3)
    )

    def stop_on_eof() -> None:
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=stop_on_eof, daemon=True).start()
    print(sock.getsockname()[1], flush=True)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        configure_offload()  # stop the app's worker processes, if any
        sock.close()


# --- the server process, seen from the parent -------------------------------------


_live_servers: set[ServerProcess] = set()


class ServerProcess:
    """The app served by `python -m flet_resilient.loadtest --serve` in a child.

    The child gets its own process group (Ctrl-C reaches only us; `stop()`
    ends the child and any worker processes it started).
    """

    def __init__(self, target: str, mode: str, log_path: Path) -> None:
        self.target = target
        self.mode = mode
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def environment(self) -> dict[str, str]:
        """Our environment, mitigations switched per mode, the app importable."""
        env = dict(os.environ)
        env.pop("FLET_RESILIENT_DISABLE", None)
        if self.mode == "plain":
            env["FLET_RESILIENT_DISABLE"] = "1"
        location = self.target.rpartition(":")[0] or self.target
        _, root = _import_location(location)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(root), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        return env

    async def start(self) -> ServerProcess:
        """Start the child and wait until it answers its stats route."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flet_resilient.loadtest",
                    "--serve",
                    self.target,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.environment(),
                start_new_session=True,
            )
        _live_servers.add(self)
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(
                asyncio.to_thread(self.process.stdout.readline), START_TIMEOUT
            )
            self.port = int(line)
        except (asyncio.TimeoutError, ValueError):
            self.stop()
            raise RuntimeError(self._failure("did not start")) from None
        deadline = time.monotonic() + START_TIMEOUT
        while await asyncio.to_thread(self.stats, 2.0) is None:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(self._failure("does not answer"))
            await asyncio.sleep(0.1)
        return self

    def _failure(self, what: str) -> str:
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join(self.log_path.read_text().splitlines()[-15:])
        return f"the {self.mode} server {what}; {self.log_path}:\n{tail}"

    def stats(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """The server's `flet_resilient.stats()`, or None if it does not answer."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(
                f"http://127.0.0.1:{self.port}{STATS_PATH}", timeout=timeout
            ) as response:
                data: dict[str, Any] = json.load(response)
                return data
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """End the child: stdin EOF, then SIGTERM, then SIGKILL to its group."""
        _live_servers.discard(self)
        process = self.process
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        for sig in (None, signal.SIGTERM, getattr(signal, "SIGKILL", signal.SIGTERM)):
            if sig is not None and process.poll() is None:
                _signal_group(process.pid, sig)
            try:
                process.wait(timeout=10 if sig is None else 5)
                break
            except subprocess.TimeoutExpired:
                continue
        # Worker processes the child left behind share its process group.
        _signal_group(process.pid, getattr(signal, "SIGKILL", signal.SIGTERM))
        with contextlib.suppress(OSError):
            if process.stdout is not None:
                process.stdout.close()


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group the child leads (the child itself elsewhere)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if hasattr(os, "killpg"):
            os.killpg(pid, sig)
        else:  # pragma: no cover - no process groups (Windows)
            os.kill(pid, sig)


def stop_all_servers() -> None:
    """Stop every server process still running (the last line of defence)."""
    for server in list(_live_servers):
        server.stop()


class Meter:
    """Memory and CPU of the server process tree, this process and the machine."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.server = psutil.Process(pid)
        self.me = psutil.Process()
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds last seen
        self.rss_peak = 0
        self.tree_rss_peak = 0

    def sample(self) -> tuple[int, int]:
        """(server RSS, server + workers RSS) in bytes; records CPU and peaks."""
        rss = tree = 0
        processes = [self.server]
        with contextlib.suppress(self._psutil.Error):
            processes += self.server.children(recursive=True)
        for process in processes:
            with contextlib.suppress(self._psutil.Error):
                with process.oneshot():
                    memory = process.memory_info().rss
                    times = process.cpu_times()
                self.cpu[process.pid] = times.user + times.system
                tree += memory
                if process.pid == self.server.pid:
                    rss = memory
        self.rss_peak = max(self.rss_peak, rss)
        self.tree_rss_peak = max(self.tree_rss_peak, tree)
        return rss, tree

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds so far: (server process, its worker processes)."""
        own = self.cpu.get(self.server.pid, 0.0)
        return own, sum(self.cpu.values()) - own

    def my_cpu(self) -> float:
        """CPU seconds of this (load-generating) process."""
        times = self.me.cpu_times()
        return float(times.user + times.system)

    def machine_busy(self) -> float:
        """Busy CPU seconds of the whole machine, all processes."""
        times = self._psutil.cpu_times()
        return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


# --- simulated users ------------------------------------------------------------


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


class User:
    """One simulated user: its client and what it has received so far."""

    def __init__(self, client: FletClient, role: str, rng: random.Random) -> None:
        self.client = client
        self.role = role  # "bystander", "heavy", "viewer"
        self.rng = rng
        self.pending_since: float | None = None  # a click waiting for its patch
        self.scanned = 0  # frames of `client.frames` already counted
        self.last_patch: float | None = None
        self.max_gap = 0.0
        self.gone = False

    def account(
        self, result: ModeResult, window: tuple[float, float], clear: bool
    ) -> tuple[int, int]:
        """Count the frames received in `window` since the last call.

        Returns (frames, bytes) counted; `clear` drops the frames seen.
        """
        frames = self.client.frames
        counted = size = 0
        for frame in frames[self.scanned :]:
            if not window[0] <= frame.at <= window[1]:
                continue  # outside the measured window
            counted += 1
            size += frame.size
            if frame.action == Action.PATCH_CONTROL:
                if self.last_patch is not None:
                    self.max_gap = max(self.max_gap, frame.at - self.last_patch)
                self.last_patch = frame.at
        if clear:
            frames.clear()  # dashboards: do not keep every frame in memory
            self.scanned = 0
        else:
            self.scanned = len(frames)
        result.frames += counted
        result.bytes += size
        return counted, size


def _patched_since(client: FletClient, start: int) -> bool:
    """Whether a patch frame arrived after the first `start` frames."""
    return any(f.action == Action.PATCH_CONTROL for f in client.frames[start:])


async def timed_click(user: User, key: str, timeout: float) -> tuple[float, bool]:
    """Click `key`; milliseconds until the next patch, and whether one came."""
    client = user.client
    before = len(client.frames)
    started = time.monotonic()
    user.pending_since = started
    try:
        await client.click(key)
        await client.wait_for(lambda: _patched_since(client, before), timeout)
        done = True
    except TimeoutError:
        done = False
    finally:
        user.pending_since = None
    return (time.monotonic() - started) * 1000, done


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

    def heavy_count(self) -> int:
        """How many users click the heavy button (at least one bystander left)."""
        if self.scenario != "clicks" or not self.heavy_key or self.heavy_share <= 0:
            return 0
        return min(self.users - 1, max(1, round(self.users * self.heavy_share)))


BUTTON_TYPES = ("Button", "IconButton", "FloatingActionButton", "Chip")


def find_button(client: FletClient, exclude: str | None) -> str | None:
    """The key of the first keyed button in the mirror (not `exclude`)."""
    for control in client.controls.values():
        key, kind = control.get("key"), str(control.get("_c", ""))
        if key and key != exclude and kind.endswith(BUTTON_TYPES):
            return str(key)
    return None


async def connect_users(
    plan: Plan, url: str, result: ModeResult, users: list[User]
) -> None:
    """Connect `plan.users` clients, `plan.batch` at a time, into `users`."""
    rng = random.Random(plan.seed)
    heavy = plan.heavy_count()
    result.heavy_users = heavy

    async def one(index: int) -> None:
        client = FletClient(url, user_agent=f"flet-resilient-loadtest/{index}")
        try:
            await asyncio.wait_for(client.connect(), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
            result.connect_failures += 1
            _note(result, f"connect: {exc!r}")
            with contextlib.suppress(Exception):
                client.abort()
            return
        role = "heavy" if index < heavy else "bystander"
        if plan.scenario == "dashboard":
            role = "viewer"
        users.append(User(client, role, random.Random(rng.random())))

    for start in range(0, plan.users, plan.batch):
        await asyncio.gather(
            *(one(i) for i in range(start, min(plan.users, start + plan.batch)))
        )
    result.connected = len(users)


def _note(result: ModeResult, message: str) -> None:
    """Keep the first few problems for the report."""
    if len(result.errors) < 20:
        result.errors.append(message)


async def prepare(plan: Plan, users: list[User]) -> None:
    """Wait for every user's page; find the click key; one unmeasured click each.

    Flaky users click only when given `--click-key`.
    """
    if plan.scenario == "dashboard" or not users:
        return
    if plan.click_key is None and plan.scenario == "clicks":
        probe = users[0].client
        with contextlib.suppress(TimeoutError):
            await probe.wait_for(lambda: find_button(probe, plan.heavy_key), 15)
        plan.click_key = find_button(probe, plan.heavy_key)
        if plan.click_key is None:
            keys = sorted(
                {str(c["key"]) for c in probe.controls.values() if "key" in c}
            )
            raise SystemExit(
                f"loadtest: no keyed button found in the app's page (keys: {keys}); "
                "pass --click-key"
            )

    async def ready(user: User) -> None:
        key = plan.heavy_key if user.role == "heavy" else plan.click_key
        if key is None:
            return
        client = user.client
        with contextlib.suppress(TimeoutError, ConnectionError):
            await client.wait_for(lambda: client.find(key), 15)
            if user.role == "bystander":
                await timed_click(user, key, min(plan.click_timeout, 10))  # warm-up

    await asyncio.gather(*(ready(u) for u in users))


async def clicker(
    user: User, plan: Plan, result: ModeResult, start: float, deadline: float
) -> None:
    """Click at random intervals until `deadline`, recording click->patch times."""
    heavy = user.role == "heavy"
    key = plan.heavy_key if heavy else plan.click_key
    assert key is not None
    samples = result.heavy if heavy else result.bystander
    while True:
        await asyncio.sleep(user.rng.uniform(0.5, 1.5) * plan.think)
        if time.monotonic() >= deadline:
            return
        clicked = time.monotonic()
        ms, done = await timed_click(user, key, plan.click_timeout)
        samples.append(Sample(clicked - start, ms, done))


async def flaky_user(
    user: User, plan: Plan, result: ModeResult, start: float, deadline: float
) -> None:
    """Stay online a while (clicking), vanish abruptly, come back with the session."""
    while time.monotonic() < deadline:
        online = user.rng.uniform(0.5, 1.5) * plan.drop_every
        online_until = time.monotonic() + online
        while time.monotonic() < min(online_until, deadline):
            await asyncio.sleep(user.rng.uniform(0.5, 1.5) * plan.think)
            if plan.click_key and time.monotonic() < deadline:
                clicked = time.monotonic()
                ms, done = await timed_click(user, plan.click_key, plan.click_timeout)
                result.bystander.append(Sample(clicked - start, ms, done))
        if time.monotonic() >= deadline:
            return
        old = user.client
        user.account(result, (start, deadline), clear=False)
        old.abort()
        await asyncio.sleep(user.rng.uniform(*OFFLINE_S))
        again = FletClient(
            old.ws_url, session_id=old.session_id, user_agent=old.user_agent
        )
        again.storage = dict(old.storage)
        began = time.monotonic()
        try:
            await asyncio.wait_for(again.connect(), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
            result.reconnect_failures += 1
            _note(result, f"reconnect: {exc!r}")
            user.gone = True
            return
        ms = (time.monotonic() - began) * 1000
        result.reconnects.append(
            Reconnect(began - start, ms, again.session_id != old.session_id)
        )
        user.client, user.scanned, user.last_patch = again, 0, None
        if plan.click_key:
            with contextlib.suppress(TimeoutError):
                await again.wait_for(
                    functools.partial(again.find, plan.click_key), plan.click_timeout
                )


async def viewer(deadline: float) -> None:
    """Dashboard users only receive."""
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def guarded(user: User, result: ModeResult, behaviour: Callable[[], Any]) -> None:
    """Run one user's behaviour; a dropped connection retires the user."""
    try:
        await behaviour()
    except ConnectionError:
        user.gone = True
        _note(result, f"{user.role}: the server closed the connection")
    except Exception as exc:
        user.gone = True
        _note(result, f"{user.role}: {exc!r}")


# --- one mode ------------------------------------------------------------------


def _lag(
    start: dict[str, Any] | None, end: dict[str, Any] | None
) -> tuple[float, float, int]:
    """(p99 ms, max ms, stalls) of the loop lag between two stats() snapshots.

    The histogram is cumulative, so the window is the bucket difference; its
    max is the window's highest bucket bound, capped by the server's max.
    """
    if not end or "loop" not in end:
        return math.nan, math.nan, 0
    before = (start or {}).get("loop", {}).get("lag", {}).get("buckets_ms", {})
    after = end["loop"]["lag"]
    window = Histogram()
    window.buckets = [
        after["buckets_ms"][key] - before.get(key, 0) for key in after["buckets_ms"]
    ]
    window.count = sum(window.buckets)
    window.max_ms = float(after["max_ms"])
    stalls = int(end["loop"].get("stalls", 0)) - int(
        (start or {}).get("loop", {}).get("stalls", 0)
    )
    return window.percentile(99), window.percentile(100), stalls


def _counter_diff(
    start: dict[str, Any] | None, end: dict[str, Any] | None
) -> dict[str, int]:
    """Server counters that moved between two stats() snapshots."""
    before = (start or {}).get("counters", {})
    after = (end or {}).get("counters", {})
    diff = {k: int(v) - int(before.get(k, 0)) for k, v in after.items()}
    return {k: v for k, v in sorted(diff.items()) if v}


async def run_mode(plan: Plan, mode: str) -> ModeResult:
    """Serve the app in `mode`, run the scenario, measure; the server always stops."""
    result = ModeResult(mode, plan.users)
    server = ServerProcess(plan.target, mode, plan.out / f"server-{mode}.log")
    users: list[User] = []
    try:
        await server.start()
        assert server.process is not None
        meter = Meter(server.process.pid)
        meter.sample()
        await _run_with_server(plan, server, meter, result, users)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(_close_all(users), 10)
        server.stop()
    return result


async def _run_with_server(
    plan: Plan,
    server: ServerProcess,
    meter: Meter,
    result: ModeResult,
    users: list[User],
) -> None:
    """Connect, warm up, run the scenario for `plan.duration`, then measure."""
    label = f"[{result.mode}]"
    connecting = asyncio.create_task(connect_users(plan, server.ws_url, result, users))
    early: list[tuple[float, int, int, int]] = []  # (when, users, rss, tree)
    while not connecting.done():  # progress while connecting
        await asyncio.wait({connecting}, timeout=1.0)
        early.append((time.monotonic(), len(users), *meter.sample()))
        _progress(f"{label} connecting {len(users)}/{plan.users}")
    await connecting
    await prepare(plan, users)

    stats_start = await asyncio.to_thread(server.stats)
    meter.sample()
    cpu_start = meter.cpu_seconds()
    my_start, busy_start = meter.my_cpu(), meter.machine_busy()
    start = time.monotonic()
    result.ticks = [Tick(at - start, n, 0, 0, rss, tree) for at, n, rss, tree in early]
    deadline = start + plan.duration
    window = (start, deadline)
    for user in users:
        user.account(result, window, clear=True)  # skip what came before
    tasks = []
    for user in users:
        if plan.scenario == "clicks":
            behaviour: Callable[[], Any] = _bind(
                clicker, user, plan, result, start, deadline
            )
        elif plan.scenario == "flaky":
            behaviour = _bind(flaky_user, user, plan, result, start, deadline)
        else:
            behaviour = _bind_viewer(deadline)
        tasks.append(asyncio.create_task(guarded(user, result, behaviour)))

    sampler = asyncio.create_task(_sample(plan, result, users, meter, window, label))
    try:
        grace = plan.click_timeout + 5
        _, pending = await asyncio.wait(tasks, timeout=plan.duration + grace)
        now = time.monotonic()
        for user in users:  # clicks still waiting: counted at their age so far
            if user.pending_since is not None:
                samples = result.heavy if user.role == "heavy" else result.bystander
                samples.append(
                    Sample(
                        user.pending_since - start,
                        (now - user.pending_since) * 1000,
                        False,
                    )
                )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)

    end = time.monotonic()
    result.seconds = plan.duration  # frames are counted inside the window only
    for user in users:
        user.account(result, window, clear=plan.scenario == "dashboard")
    result.rss_end, result.tree_rss_end = meter.sample()
    cpu_end = meter.cpu_seconds()
    result.server_cpu_s = cpu_end[0] - cpu_start[0]
    result.workers_cpu_s = cpu_end[1] - cpu_start[1]
    wall = end - start
    result.client_cores = (meter.my_cpu() - my_start) / wall
    busy = meter.machine_busy() - busy_start
    result.other_cores = (
        max(0.0, busy - (meter.my_cpu() - my_start) - sum(cpu_end) + sum(cpu_start))
        / wall
    )
    result.rss_peak, result.tree_rss_peak = meter.rss_peak, meter.tree_rss_peak
    stats_end = await asyncio.to_thread(server.stats, 30.0)
    result.lag_p99_ms, result.lag_max_ms, result.stalls = _lag(stats_start, stats_end)
    result.counters = _counter_diff(stats_start, stats_end)
    recent = deadline - FLOWING_S
    result.flowing = sum(
        1
        for u in users
        if not u.gone and u.last_patch is not None and u.last_patch >= recent
    )
    result.worst_gap_s = max((u.max_gap for u in users), default=0.0)
    result.connected = sum(
        1 for u in users if not u.gone and not u.client.closed.is_set()
    )


def _bind(
    behaviour: Callable[[User, Plan, ModeResult, float, float], Any],
    user: User,
    plan: Plan,
    result: ModeResult,
    start: float,
    deadline: float,
) -> Callable[[], Any]:
    return lambda: behaviour(user, plan, result, start, deadline)


def _bind_viewer(deadline: float) -> Callable[[], Any]:
    return lambda: viewer(deadline)


async def _sample(
    plan: Plan,
    result: ModeResult,
    users: list[User],
    meter: Meter,
    window: tuple[float, float],
    label: str,
) -> None:
    """Once a second: count frames, sample memory, print a progress line."""
    start = window[0]
    seen_clicks = 0
    while True:
        await asyncio.sleep(1.0)
        frames = size = 0
        for user in users:
            counted, nbytes = user.account(
                result, window, clear=plan.scenario == "dashboard"
            )
            frames += counted
            size += nbytes
        rss, tree = meter.sample()
        now = time.monotonic() - start
        connected = sum(1 for u in users if not u.gone and not u.client.closed.is_set())
        result.ticks.append(Tick(now, connected, frames, size, rss, tree))
        recent = [s.ms for s in result.bystander[seen_clicks:]]
        seen_clicks = len(result.bystander)
        pending = sum(1 for u in users if u.pending_since is not None)
        line = f"{label} {now:5.1f}s users {connected}/{plan.users}"
        if plan.scenario == "dashboard":
            line += f" frames/s {frames} KB/s {size / 1024:.0f}"
        else:
            p99 = percentile(recent, 99)
            line += (
                f" clicks {len(result.bystander)} p99 {_ms(p99)} ms pending {pending}"
            )
        if plan.scenario == "flaky":
            lost = sum(r.lost for r in result.reconnects)
            line += f" reconnects {len(result.reconnects)} lost {lost}"
        _progress(f"{line} rss {rss / 2**20:.0f} MB")


def _progress(line: str) -> None:
    """One progress line on stderr (stdout gets the table)."""
    print(line, file=sys.stderr, flush=True)


async def _close_all(users: list[User]) -> None:
    """Close every client; abort those that do not close within 5 s."""
    clients = [u.client for u in users]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(c.close() for c in clients), return_exceptions=True), 5
        )
    except asyncio.TimeoutError:
        for client in clients:
            with contextlib.suppress(Exception):
                client.abort()


async def run(plan: Plan, modes: list[str]) -> list[ModeResult]:
    """Every mode, one after the other, each with its own server."""
    results = []
    for mode in modes:
        _progress(
            f"[{mode}] {plan.users} users, {plan.scenario}, {plan.duration:g} s: "
            f"{plan.target}"
            + (" (FLET_RESILIENT_DISABLE=1)" if mode == "plain" else "")
        )
        results.append(await run_mode(plan, mode))
    return results


# --- report --------------------------------------------------------------------


def _ms(value: float) -> str:
    """Milliseconds for the table: one decimal below 100."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _num(value: float, digits: int = 1) -> str:
    """A number for the table (n/a for nan)."""
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


Row = tuple[str, Callable[[ModeResult], float], Callable[[float], str]]


def rows(plan: Plan) -> list[Row]:
    """The report's metrics for this scenario: (label, value, format)."""

    def count(value: float) -> str:
        return f"{value:,.0f}"

    def mb(value: float) -> str:
        return f"{value / 2**20:,.0f}"

    def by(
        samples: Callable[[ModeResult], list[Sample]], p: float
    ) -> Callable[[ModeResult], float]:
        return lambda r: percentile((s.ms for s in samples(r)), p)

    def byst(r: ModeResult) -> list[Sample]:
        return r.bystander

    def heavy(r: ModeResult) -> list[Sample]:
        return r.heavy

    table: list[Row] = [("users connected at the end", lambda r: r.connected, count)]
    if plan.scenario != "dashboard" and plan.click_key:
        name = "bystander " if plan.heavy_count() else ""
        table += [
            (f"{name}click→patch p50 ms", by(byst, 50), _ms),
            (f"{name}click→patch p99 ms", by(byst, 99), _ms),
            (f"{name}click→patch max ms", by(byst, 100), _ms),
            (f"{name}clicks measured", lambda r: len(r.bystander), count),
            (
                f"{name}clicks timed out or cut off",
                lambda r: sum(not s.done for s in r.bystander),
                count,
            ),
        ]
    if plan.heavy_count():
        table += [
            ("heavy click→patch p50 ms", by(heavy, 50), _ms),
            ("heavy click→patch p99 ms", by(heavy, 99), _ms),
            ("heavy click→patch max ms", by(heavy, 100), _ms),
            ("heavy clicks measured", lambda r: len(r.heavy), count),
        ]
    if plan.scenario == "flaky":
        table += [
            ("reconnects", lambda r: len(r.reconnects), count),
            ("sessions lost", lambda r: sum(x.lost for x in r.reconnects), count),
            ("reconnects failed", lambda r: r.reconnect_failures, count),
            (
                "reconnect p50 ms",
                lambda r: percentile((x.ms for x in r.reconnects), 50),
                _ms,
            ),
            (
                "reconnect p99 ms",
                lambda r: percentile((x.ms for x in r.reconnects), 99),
                _ms,
            ),
            (
                "reconnect max ms",
                lambda r: percentile((x.ms for x in r.reconnects), 100),
                _ms,
            ),
        ]
    table += [
        (
            "frames/s received, total",
            lambda r: r.frames / r.seconds,
            lambda v: _num(v, 0),
        ),
        (
            "frames/s per user",
            lambda r: r.frames / r.seconds / max(1, r.connected),
            _num,
        ),
        ("KB/s received, total", lambda r: r.bytes / 1024 / r.seconds, _num),
        (
            "KB/s per user",
            lambda r: r.bytes / 1024 / r.seconds / max(1, r.connected),
            lambda v: _num(v, 2),
        ),
    ]
    if plan.scenario == "dashboard":
        table += [
            (
                f"users receiving in the last {FLOWING_S:g} s",
                lambda r: r.flowing,
                count,
            ),
            (
                "longest gap between patches s (worst user)",
                lambda r: r.worst_gap_s,
                lambda v: _num(v, 2),
            ),
        ]
    table += [
        ("server RSS peak MB", lambda r: r.rss_peak, mb),
        ("server RSS end MB", lambda r: r.rss_end, mb),
        ("server + workers RSS peak MB", lambda r: r.tree_rss_peak, mb),
        ("server CPU s", lambda r: r.server_cpu_s, _num),
        ("worker processes CPU s", lambda r: r.workers_cpu_s, _num),
        ("loop lag p99 ms", lambda r: r.lag_p99_ms, _ms),
        ("loop lag max ms (≤)", lambda r: r.lag_max_ms, _ms),
        ("loop stalls > 250 ms", lambda r: r.stalls, count),
        ("load generator CPU cores", lambda r: r.client_cores, lambda v: _num(v, 2)),
    ]
    return table


def table(plan: Plan, results: list[ModeResult]) -> str:
    """Markdown table, one column per mode, plus plain ÷ resilient with two."""
    by_mode = {r.mode: r for r in results}
    compare = set(MODES) <= by_mode.keys()
    header = ["metric", *(r.mode for r in results)]
    if compare:
        header.append("plain ÷ resilient")
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for label, value, fmt in rows(plan):
        cells = [label]
        values = {}
        for r in results:
            try:
                values[r.mode] = float(value(r))
            except (ZeroDivisionError, ValueError):
                values[r.mode] = math.nan
            cells.append(fmt(values[r.mode]))
        if compare:
            cells.append(_ratio(values["plain"], values["resilient"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _ratio(plain: float, resilient: float) -> str:
    """plain ÷ resilient, or - when it means nothing."""
    if math.isnan(plain) or math.isnan(resilient) or resilient == 0:
        return "-"
    ratio = plain / resilient
    return f"{ratio:,.1f}x" if ratio < 100 else f"{ratio:,.0f}x"


def report(plan: Plan, results: list[ModeResult], command: str, plot_note: str) -> str:
    """The markdown report: settings, table, warnings, plot."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    heavy = plan.heavy_count()
    who = f"{plan.users} users"
    if heavy:
        who += f" ({heavy} clicking `{plan.heavy_key}`, {plan.users - heavy} bystanders"
        who += f" clicking `{plan.click_key}`)"
    elif plan.click_key and plan.scenario != "dashboard":
        who += f" clicking `{plan.click_key}`"
    lines = [
        f"# Load test: `{plan.target}`, scenario `{plan.scenario}`",
        "",
        f"- date: {now}",
        f"- machine: {machine()}",
        f"- command: `{command}`",
        f"- {who}, {plan.duration:g} s measured per mode, {_pace(plan)}",
        "- modes: "
        + ", ".join(
            "plain (`FLET_RESILIENT_DISABLE=1`)"
            if r.mode == "plain"
            else "resilient (mitigations on)"
            for r in results
        ),
        "",
        table(plan, results),
    ]
    notes = []
    for r in results:
        if r.client_cores > BUSY_CLIENT:
            notes.append(
                f"{r.mode}: the load generator used {r.client_cores:.2f} cores; it may "
                "be the bottleneck (received rates are then a lower bound)"
            )
        if r.other_cores > NOISY_CORES:
            notes.append(
                f"{r.mode}: other processes used {r.other_cores:.2f} cores; the "
                "numbers include CPU contention from them"
            )
        if r.connect_failures:
            notes.append(f"{r.mode}: {r.connect_failures} users failed to connect")
        if r.counters:
            shown = ", ".join(f"{k} {v}" for k, v in r.counters.items())
            notes.append(f"{r.mode}: server counters during the run: {shown}")
        notes += [f"{r.mode}: {e}" for e in r.errors[:5]]
    lines += [
        "Click→patch: from sending a click until the user's next patch frame "
        "(timed-out clicks count at their timeout, clicks still waiting at the end "
        "at their age: lower bounds). Loop lag: the server's `stats()` histogram "
        "over the measured window (bucket bounds). Ratios are plain ÷ resilient.",
        "",
    ]
    if notes:
        lines += [*(f"- {n}" for n in notes), ""]
    lines += [plot_note, ""]
    return "\n".join(lines)


def _pace(plan: Plan) -> str:
    """How often users act, in words."""
    if plan.scenario == "dashboard":
        return "users only receive"
    pace = f"a click every {plan.think:g} s per user on average"
    if plan.scenario == "flaky":
        drops = (
            f"connections reset every {plan.drop_every:g} s on average, "
            f"{OFFLINE_S[0]:g}-{OFFLINE_S[1]:g} s offline, then a reconnect with "
            "the session id"
        )
        return f"{drops}; {pace}" if plan.click_key else drops
    return pace


def plot(plan: Plan, results: list[ModeResult], path: Path) -> bool:
    """PNG: the scenario's main measure over time per mode, and RSS over time.

    Returns False (and draws nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    colors = {"plain": "tab:red", "resilient": "tab:blue"}
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    for r in results:
        color = colors.get(r.mode, "tab:gray")
        if plan.scenario == "dashboard":
            users = max(1, r.connected)
            top.plot(
                [t.t for t in r.ticks if t.t >= 0],
                [t.frames / users for t in r.ticks if t.t >= 0],
                color=color,
                label=f"{r.mode}: frames/s per user",
            )
        else:
            _latency_panel(top, r, color)
        if plan.scenario == "flaky" and r.reconnects:
            top.scatter(
                [x.t for x in r.reconnects],
                [max(x.ms, 0.1) for x in r.reconnects],
                s=14,
                marker="^",
                color=color,
                alpha=0.5,
                label=f"{r.mode}: reconnect ms",
            )
        bottom.plot(
            [t.t for t in r.ticks],
            [t.rss / 2**20 for t in r.ticks],
            color=color,
            label=f"{r.mode}: server",
        )
        if any(t.tree_rss != t.rss for t in r.ticks):
            bottom.plot(
                [t.t for t in r.ticks],
                [t.tree_rss / 2**20 for t in r.ticks],
                color=color,
                linestyle="--",
                label=f"{r.mode}: server + workers",
            )
    if plan.scenario == "dashboard":
        top.set_ylabel("frames/s per user")
    else:
        top.set_yscale("log")
        what = "click → patch" if plan.scenario == "clicks" else "reconnect, click"
        top.set_ylabel(f"{what} (ms, log)")
    fig.suptitle(
        f"{plan.target}: {plan.scenario}, {plan.users} users", x=0.01, ha="left"
    )
    top.grid(True, which="both", alpha=0.3)
    # Above the axes: the points fill every corner of the plot.
    top.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2)
    bottom.set_ylabel("RSS (MB)")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("seconds since the measured window started (< 0: connecting)")
    bottom.grid(True, alpha=0.3)
    bottom.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _latency_panel(axes: Any, r: ModeResult, color: str) -> None:
    """Bystander clicks as dots with a per-second p99 line, heavy clicks as x."""
    if r.bystander:
        axes.scatter(
            [s.t for s in r.bystander],
            [max(s.ms, 0.1) for s in r.bystander],
            s=6,
            color=color,
            alpha=0.3,
            linewidths=0,
        )
        seconds = sorted({int(s.t) for s in r.bystander})
        p99 = [
            percentile((s.ms for s in r.bystander if int(s.t) == sec), 99)
            for sec in seconds
        ]
        axes.plot(
            [sec + 0.5 for sec in seconds],
            p99,
            color=color,
            linewidth=2,
            label=f"{r.mode}: bystander p99 per second",
        )
    if r.heavy:
        axes.scatter(
            [s.t for s in r.heavy],
            [max(s.ms, 0.1) for s in r.heavy],
            s=16,
            marker="x",
            color=color,
            alpha=0.6,
            label=f"{r.mode}: heavy clicks",
        )


# --- entry point ------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m flet_resilient.loadtest",
        description=(__doc__ or "").splitlines()[0],
    )
    parser.add_argument(
        "app", help="MODULE:main or path/to/app.py:main (attribute defaults to main)"
    )
    parser.add_argument("--users", type=int, default=50, help="simulated users")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="measured seconds per mode"
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default="clicks")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run plain (FLET_RESILIENT_DISABLE=1), then resilient, side by side",
    )
    parser.add_argument(
        "--mode", choices=MODES, default="resilient", help="the mode without --compare"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("loadtest-results"), help="results directory"
    )
    parser.add_argument(
        "--click-key", help="key of the button users click (default: the first found)"
    )
    parser.add_argument("--heavy-key", help="key of a heavy button some users click")
    parser.add_argument(
        "--heavy-share", type=float, default=0.1, help="share of users clicking it"
    )
    parser.add_argument(
        "--think", type=float, default=1.0, help="mean seconds between a user's clicks"
    )
    parser.add_argument(
        "--drop-every",
        type=float,
        default=4.0,
        help="flaky: mean seconds a connection lives before it drops",
    )
    parser.add_argument(
        "--click-timeout", type=float, default=30.0, help="longest wait for a patch"
    )
    parser.add_argument(
        "--batch", type=int, default=20, help="users connecting at once"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return args
    if args.users < 1 or args.duration <= 0 or args.batch < 1:
        parser.error("need --users >= 1, --duration > 0, --batch >= 1")
    if not 0 <= args.heavy_share < 1:
        parser.error("need 0 <= --heavy-share < 1")
    if args.heavy_key and args.scenario != "clicks":
        parser.error("--heavy-key applies to --scenario clicks only")
    if args.heavy_key and args.users < 2:
        parser.error("--heavy-key needs --users >= 2 (heavy users plus bystanders)")
    if min(args.think, args.click_timeout, args.drop_every) <= 0:
        parser.error("need --think, --click-timeout and --drop-every > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the load test: report.md, results.json, the plot; print the table."""
    args = parse_args(argv)
    if args.serve:
        serve(args.app)
        return 0
    plan = Plan(
        target=args.app,
        scenario=args.scenario,
        users=args.users,
        duration=args.duration,
        click_key=args.click_key,
        heavy_key=args.heavy_key,
        heavy_share=args.heavy_share,
        think=args.think,
        drop_every=args.drop_every,
        click_timeout=args.click_timeout,
        batch=args.batch,
        seed=args.seed,
        out=args.out,
    )
    if importlib.util.find_spec("psutil") is None:
        raise SystemExit(
            "loadtest: measuring the server needs psutil (pip install psutil)"
        )
    modes = list(MODES) if args.compare else [args.mode]
    plan.out.mkdir(parents=True, exist_ok=True)
    try:
        results = asyncio.run(run(plan, modes))
    except KeyboardInterrupt:
        _progress("interrupted: servers stopped, no report")
        return 130
    finally:
        stop_all_servers()
    words = sys.argv[1:] if argv is None else argv
    command = "python -m flet_resilient.loadtest " + shlex.join(words)
    png = plan.out / "loadtest.png"
    if plot(plan, results, png):
        plot_note = f"![latency and memory over time]({png.name})"
    else:
        plot_note = (
            "No plot: matplotlib is not installed (`pip install matplotlib`, or the "
            "`plot` extra)."
        )
        _progress(plot_note)
    text = report(plan, results, command, plot_note)
    (plan.out / "report.md").write_text(text)
    (plan.out / "results.json").write_text(
        json.dumps(
            {
                "plan": {**asdict(plan), "out": str(plan.out)},
                "results": [asdict(r) for r in results],
            },
            indent=1,
            default=str,
        )
    )
    print(table(plan, results))
    _progress(f"saved {plan.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
