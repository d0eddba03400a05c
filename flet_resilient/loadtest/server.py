"""The app's server processes, seen from the load generator.

`ServerProcess` is one child (`python -m flet_resilient.loadtest --serve APP`);
`WorkersBehindProxy` is the deploy setup: N uvicorn workers behind HAProxy with
a Redis (`flet_resilient.cluster`). Both give `ws_url`, `pids()` and
`snapshots()` (each worker's `stats()`), and always stop what they started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from flet_resilient.loadtest.app import APP_ENV, STATS_PATH, import_location
from flet_resilient.measure import announced_port

START_TIMEOUT = 60.0  # the server process answering its stats route


class Servers(Protocol):
    """What a run needs from the app's server side, however many processes."""

    mode: str

    @property
    def ws_url(self) -> str: ...

    def pids(self) -> list[int]: ...

    def snapshots(self, timeout: float = 10.0) -> list[dict[str, Any] | None]: ...

    def stop(self) -> None: ...


def mode_environment(target: str, mode: str) -> dict[str, str]:
    """Our environment with the mitigations switched per mode, the app importable."""
    env = dict(os.environ)
    env["FLET_RESILIENT_DISABLE"] = "1" if mode == "plain" else "0"
    location = target.rpartition(":")[0] or target
    _, root = import_location(location)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(root), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def fetch_stats(port: int, timeout: float = 10.0) -> dict[str, Any] | None:
    """`flet_resilient.stats()` of the server on `port`, or None if it does not
    answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(
            f"http://127.0.0.1:{port}{STATS_PATH}", timeout=timeout
        ) as response:
            data: dict[str, Any] = json.load(response)
            return data
    except (OSError, ValueError):
        return None


_live_servers: set[Servers] = set()


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
        return mode_environment(self.target, self.mode)

    def pids(self) -> list[int]:
        """The serving process (its children are its `@offload` workers)."""
        return [self.process.pid] if self.process is not None else []

    def snapshots(self, timeout: float = 10.0) -> list[dict[str, Any] | None]:
        """`stats()` of each serving process (here: one)."""
        return [self.stats(timeout)]

    async def start(self) -> ServerProcess:
        """Start the child and wait until it answers its stats route."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
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
            self.port = announced_port(line.decode())
        except (asyncio.TimeoutError, ValueError):
            self.stop()
            raise RuntimeError(self._failure("did not start")) from None
        # The rest of its stdout goes to the log: a full pipe would block the
        # server the first time it prints much.
        threading.Thread(target=self._copy_stdout, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while not await asyncio.to_thread(self.answers):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(self._failure("does not answer"))
            await asyncio.sleep(0.1)
        return self

    def _copy_stdout(self) -> None:
        """Append the child's stdout to its log until it closes."""
        assert self.process is not None and self.process.stdout is not None
        with self.log_path.open("ab") as log, contextlib.suppress(ValueError, OSError):
            for line in self.process.stdout:  # ValueError: closed by stop()
                log.write(line)
                log.flush()

    def command(self) -> list[str]:
        """The child's command line; its first stdout line is its URL."""
        return [sys.executable, "-m", "flet_resilient.loadtest", "--serve", self.target]

    def answers(self) -> bool:
        """Whether the child serves yet (its stats route answers)."""
        return self.stats(2.0) is not None

    def _failure(self, what: str) -> str:
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join(self.log_path.read_text().splitlines()[-15:])
        return f"the {self.mode} server {what}; {self.log_path}:\n{tail}"

    def stats(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """The server's `flet_resilient.stats()`, or None if it does not answer."""
        return fetch_stats(self.port, timeout)

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


SAME_LOOP = ("--loop", "asyncio")
"""Workers run on asyncio's loop, as the one-process run does (`serve_child`):
one worker and N compare like with like. uvicorn's CLI would pick uvloop when
installed, which alone moved the tail latency (and the seam's read slicing
needs asyncio's loop)."""


class WorkersBehindProxy:
    """`workers` uvicorn processes of the app behind HAProxy, sharing a Redis:
    the deploy setup (`flet_resilient.cluster.Cluster`)."""

    def __init__(
        self, target: str, mode: str, workers: int, logs_to: Path | None = None
    ) -> None:
        from flet_resilient.cluster import Cluster

        self.mode = mode
        self.logs_to = logs_to  # where stop() copies the workers' logs
        env = {**mode_environment(target, mode), APP_ENV: target}
        # The cluster's own temporary folder: HAProxy's stats socket path must be
        # short. Removed after a clean stop, kept (and named) after a failure.
        self.cluster = Cluster(
            "flet_resilient.loadtest.app:create_app",
            workers=workers,
            env=env,
            args=SAME_LOOP,
        )

    @property
    def ws_url(self) -> str:
        return self.cluster.ws_url

    async def start(self) -> WorkersBehindProxy:
        """Start Redis, the workers and HAProxy; wait until every worker's stats
        route answers."""
        _live_servers.add(self)
        try:
            await asyncio.to_thread(self.cluster.__enter__)
        except BaseException:
            _live_servers.discard(self)  # __enter__ stopped what it had started
            raise
        deadline = time.monotonic() + START_TIMEOUT
        while None in await asyncio.to_thread(self.snapshots, 2.0):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {self.mode} workers do not answer")
            await asyncio.sleep(0.1)
        return self

    def pids(self) -> list[int]:
        """The worker processes (their children are `@offload` workers)."""
        return [worker.pid for worker in self.cluster.workers if worker.alive]

    def snapshots(self, timeout: float = 10.0) -> list[dict[str, Any] | None]:
        """Each worker's `stats()`, asked directly (not through HAProxy)."""
        return [fetch_stats(worker.port, timeout) for worker in self.cluster.workers]

    def stop(self) -> None:
        """Stop HAProxy, the workers (their process groups) and Redis; copy
        the workers' logs to `logs_to`."""
        _live_servers.discard(self)
        self.cluster.stop()
        if self.logs_to is not None:
            self.logs_to.mkdir(parents=True, exist_ok=True)
            for worker in self.cluster.workers:
                if worker.log_path.exists():
                    shutil.copy(worker.log_path, self.logs_to / worker.log_path.name)
        self.cluster.__exit__(None, None, None)
