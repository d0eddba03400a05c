"""Run an app the way production does: several server processes behind a load
balancer, sharing a Redis, all on 127.0.0.1, started and stopped by a test.

`RedisServer` runs a throwaway `redis-server`; `Worker` runs one server process
(uvicorn, or a gunicorn master with N uvicorn worker processes) for an ASGI app
factory; `LoadBalancer` puts HAProxy in front of worker ports (least connections,
WebSockets, fast health checks, retries on another worker, optional cookie
stickiness); `Cluster` starts all three and stops them however the test ends.

Each one is a context manager (sync and async) and keeps its logs and config in
a temporary directory, removed on a clean exit and kept (the path is added to
the exception's notes) when the block raised. Linux/POSIX only: processes run
in their own process group, and `kill()` SIGKILLs the whole group.

    async with Cluster("cluster_app:create_app", cwd=APPS, workers=2) as cluster:
        client = await FletClient(cluster.ws_url).connect()
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import http.client
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from flet_resilient.testing import LoopbackEndpoint, loopback_socket

__all__ = [
    "Cluster",
    "LoadBalancer",
    "RedisServer",
    "Worker",
    "free_port",
    "missing_program",
    "wait_for_port",
]

S = TypeVar("S", bound="_Service")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with loopback_socket() as sock:
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, process: subprocess.Popen[Any] | None = None, timeout: float = 30
) -> None:
    """Poll until 127.0.0.1:`port` accepts a connection.

    Raises RuntimeError at once if `process` (the one meant to listen) exits,
    TimeoutError after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{_program(process)} exited with code {process.returncode}"
                f" before listening on 127.0.0.1:{port}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on 127.0.0.1:{port} after {timeout} s"
                ) from None
            time.sleep(0.05)


def _program(process: subprocess.Popen[Any]) -> str:
    args = process.args
    first = args[0] if isinstance(args, Sequence) and args else args
    return Path(str(first)).name


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


_INSTALLERS = {"redis-server": "install-redis", "haproxy": "install-haproxy"}
"""The programs a `Cluster` runs, and the .ci script that installs each."""


def missing_program() -> str | None:
    """Why a `Cluster` cannot start on this machine (a test's skip reason), or
    None when redis-server and haproxy are both installed."""
    for program in _INSTALLERS:
        if shutil.which(program) is None:
            return _not_installed(program)
    return None


def _not_installed(program: str) -> str:
    return f"{program} is not installed (run .ci/{_INSTALLERS[program]})"


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise RuntimeError(_not_installed(program))
    return path


class _Service:
    """One or more processes with a log directory, used as a context manager."""

    def __init__(self, log_dir: str | os.PathLike[str] | None) -> None:
        self._own_dir = log_dir is None
        prefix = f"flet-resilient-{type(self).__name__.lower()}-"
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix=prefix))

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: S) -> S:
        try:
            self.start()
        except BaseException as error:
            self.__exit__(type(error), error, error.__traceback__)
            raise
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self.stop()
        if not self._own_dir:
            return
        if exc is None:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        elif hasattr(exc, "add_note"):  # Python 3.11+
            exc.add_note(f"{type(self).__name__} logs kept in {self.log_dir}")

    async def __aenter__(self: S) -> S:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(
        self, kind: object, exc: BaseException | None, tb: object
    ) -> None:
        await asyncio.to_thread(self.__exit__, kind, exc, tb)


class _Process(_Service):
    """A single server process started from a command line, logging to a file."""

    name = "process"

    def __init__(
        self,
        port: int | None,
        log_dir: str | os.PathLike[str] | None,
        start_timeout: float,
    ) -> None:
        super().__init__(log_dir)
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        """The pid of the current (or last) process; RuntimeError if never
        started."""
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.process.pid

    @property
    def alive(self) -> bool:
        """Whether the process is running (a paused one counts as alive)."""
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    def cwd(self) -> str | None:
        return None

    def launch(self) -> None:
        """Start the process without waiting for it to listen."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        if self.process is not None:  # it died on its own (or was killed)
            self._reap()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by _reap
        try:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.cwd(),
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: kill() gets its children
            )
        except BaseException:
            self._log.close()
            self._log = None
            raise

    def wait_ready(self) -> None:
        """Wait until the port accepts; on failure, raise with the log's tail."""
        assert self.process is not None
        try:
            wait_for_port(self.port, self.process, self.start_timeout)
        except (RuntimeError, TimeoutError) as error:
            self.kill()
            raise RuntimeError(
                f"{self.name} did not start on 127.0.0.1:{self.port}: {error}\n"
                f"--- {self.log_path} (tail) ---\n{_tail(self.log_path)}"
            ) from None

    def start(self) -> None:
        """Start the process and wait until it accepts connections."""
        self.launch()
        self.wait_ready()

    def terminate(self, timeout: float = 15) -> float:
        """SIGTERM (graceful shutdown) and wait for the exit; seconds it took.

        A process still running after `timeout` is SIGKILLed and TimeoutError
        raised.
        """
        if self.process is None or self.process.poll() is not None:
            self._reap()
            return 0.0
        began = time.monotonic()
        self._signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(
                f"{self.name} (pid {self.pid}) had not exited {timeout} s after"
                " SIGTERM; killed it"
            ) from None
        took = time.monotonic() - began
        self._reap()
        return took

    def kill(self) -> None:
        """SIGKILL the process and its whole process group (a crash)."""
        if self.process is None:
            return
        self._signal(signal.SIGKILL, group=True)
        self.process.wait()
        self._reap()

    def stop(self) -> None:
        """Stop gracefully; kill what does not go within the timeout."""
        with contextlib.suppress(TimeoutError):
            self.terminate()

    def _signal(self, sig: signal.Signals, group: bool = False) -> None:
        assert self.process is not None
        try:
            if group:
                os.killpg(self.process.pid, sig)
            elif self.process.poll() is None:
                self.process.send_signal(sig)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        """After the main process exited: kill leftovers in its group, close
        the log."""
        if self.process is not None:
            self._signal(signal.SIGKILL, group=True)
        if self._log is not None:
            self._log.close()
            self._log = None


class RedisServer(_Process):
    """A throwaway redis-server on 127.0.0.1, for shared state.

    `kill()` then `start()` restarts it on the same port (a crash): empty, or
    with every acknowledged write when `durable` (append-only file, fsync on
    every write, in the log directory). `pause()`/`resume()` make it hang
    (SIGSTOP/SIGCONT) with its port open.
    """

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 10,
        durable: bool = False,
    ) -> None:
        self.executable = _require("redis-server")
        self.durable = durable
        super().__init__(port, log_dir, start_timeout)

    @property
    def url(self) -> str:
        """The `redis://` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--dir", str(self.log_dir),
            "--dbfilename", f"redis-{self.port}.rdb",
            "--appendfilename", f"redis-{self.port}.aof",
            "--appendonly", "yes" if self.durable else "no",
            "--appendfsync", "always",
        ]  # fmt: skip

    def pause(self) -> None:
        """SIGSTOP: Redis hangs, connections stay open but nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: a paused Redis carries on."""
        self._signal(signal.SIGCONT)


class Worker(_Process, LoopbackEndpoint):
    """One server process for an ASGI app factory `"module:factory"`.

    `server="uvicorn"` runs `python -m uvicorn --factory` (one process);
    `server="gunicorn"` runs a gunicorn master with `processes` uvicorn worker
    processes, which it replaces when one exits. `env` is added to os.environ;
    `args` are extra command-line options for the server.
    """

    def __init__(
        self,
        app: str,
        *,
        port: int | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        server: Literal["uvicorn", "gunicorn"] = "uvicorn",
        processes: int = 1,
        args: Sequence[str] = (),
        name: str = "worker",
        log_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 30,
    ) -> None:
        if server not in ("uvicorn", "gunicorn"):
            raise ValueError(f"unknown server {server!r}")
        if processes != 1 and server != "gunicorn":
            raise ValueError("processes > 1 needs server='gunicorn'")
        super().__init__(port, log_dir, start_timeout)
        self.app = app
        self.name = name
        self.server = server
        self.processes = processes
        self.args = list(args)
        self._cwd = None if cwd is None else str(cwd)
        self.env = dict(env or {})

    def command(self) -> list[str]:
        if self.server == "uvicorn":
            return [
                sys.executable, "-m", "uvicorn", self.app, "--factory",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "warning", *self.args,
            ]  # fmt: skip
        return [
            sys.executable, "-m", "gunicorn",
            "-k", "uvicorn.workers.UvicornWorker",
            "-w", str(self.processes),
            "--bind", f"127.0.0.1:{self.port}",
            # gunicorn >= 24 otherwise opens a control socket in $HOME (one
            # path shared by every gunicorn on the machine).
            "--no-control-socket",
            "--log-level", "warning", *self.args,
            f"{self.app}()",  # gunicorn calls a factory given as a call
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}

    def cwd(self) -> str | None:
        return self._cwd

    def wait_ready(self) -> None:
        """Wait until the app answers an HTTP request (not just until the port
        accepts: a gunicorn master listens before its workers load the app)."""
        super().wait_ready()
        deadline = time.monotonic() + self.start_timeout
        while True:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                connection.request("GET", "/")
                connection.getresponse().read()
                return
            except OSError as error:
                if not self.alive or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"{self.name} on 127.0.0.1:{self.port} does not answer"
                        f" HTTP: {error}\n--- {self.log_path} (tail) ---\n"
                        f"{_tail(self.log_path)}"
                    ) from None
                time.sleep(0.05)
            finally:
                connection.close()

    def worker_pids(self) -> set[int]:
        """The pids that serve requests: gunicorn's worker processes, or the
        uvicorn process itself."""
        if self.server == "uvicorn":
            return {self.pid} if self.alive else set()
        import psutil  # a test dependency; only gunicorn mode needs it

        try:
            return {child.pid for child in psutil.Process(self.pid).children()}
        except psutil.NoSuchProcess:
            return set()

    def restart(self) -> float:
        """Graceful restart on the same port: terminate, then start and wait
        until it serves. Returns the seconds the shutdown took."""
        took = self.terminate()
        self.start()
        return took


MAX_CONNECTIONS = 10_000
"""HAProxy's cap on open client connections, at most: each user holds a
WebSocket (4,096 stopped the capacity ramp's two workers at 4,096 users)."""


def _max_connections() -> int:
    """`MAX_CONNECTIONS`, or fewer if the file limit allows fewer: HAProxy
    raises its own limit to two descriptors a connection (and a few more),
    and refuses to start if the hard limit is below that."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, (hard - 100) // 2))


class LoadBalancer(_Service, LoopbackEndpoint):
    """HAProxy on 127.0.0.1 in front of backend ports, as in production.

    Least connections (a new socket goes to the worker with the fewest, so the
    users a crowded worker moves away land elsewhere; HAProxy takes turns among
    equals), WebSockets (long tunnel timeout), TCP health checks every
    200 ms (a worker that stopped listening leaves rotation after one failed
    check, comes back after one good one; a busy worker stays in), and a
    refused connection is retried on another worker.
    With `sticky=True` a cookie `SRV` pins each browser to one worker.
    Backends are named `w0`, `w1`, ... in config, cookies and `status()`.
    `checks=False` turns health checks off: only retries move traffic off a
    dead worker.
    """

    def __init__(
        self,
        backends: Sequence[int],
        *,
        sticky: bool = False,
        checks: bool = True,
        port: int | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 10,
    ) -> None:
        executable = _require("haproxy")
        super().__init__(log_dir)
        self.backends = list(backends)
        self.sticky = sticky
        self.checks = checks
        self.config_path = self.log_dir / "haproxy.cfg"
        self.socket_path = self.log_dir / "haproxy.sock"
        self.haproxy = _HAProxy(executable, self, port, start_timeout)
        self.port = self.haproxy.port

    @property
    def servers(self) -> list[str]:
        """Backend names, in the order of `backends`."""
        return [f"w{i}" for i in range(len(self.backends))]

    def config(self) -> str:
        """The HAProxy configuration text."""
        cookie = "    cookie SRV insert indirect nocache\n" if self.sticky else ""
        check = " check inter 200 fall 1 rise 1" if self.checks else ""
        servers = "".join(
            f"    server {name} 127.0.0.1:{port}{check}"
            + (f" cookie {name}" if self.sticky else "")
            + "\n"
            for name, port in zip(self.servers, self.backends, strict=True)
        )
        return f"""\
global
    maxconn {_max_connections()}
    nbthread 1
    stats socket {self.socket_path} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout check 1s
    timeout http-request 10s
    retries 3
    retry-on conn-failure empty-response
    option redispatch 1

frontend app
    bind 127.0.0.1:{self.port}
    default_backend workers

backend workers
    balance leastconn
{cookie}{servers}"""

    def start(self) -> None:
        """Write the config, start HAProxy and wait until it accepts."""
        self.config_path.write_text(self.config())
        self.haproxy.start()

    def stop(self) -> None:
        """Stop HAProxy (SIGTERM: an immediate stop)."""
        self.haproxy.stop()

    def status(self) -> dict[str, str]:
        """Each backend's health as HAProxy sees it: `{"w0": "UP", ...}`
        ("DOWN", "MAINT", or "UP 1/2" while changing)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        text = b"".join(chunks).decode().lstrip("# ")
        return {
            row["svname"]: row["status"]
            for row in csv.DictReader(text.splitlines())
            if row["pxname"] == "workers" and row["svname"] in self.servers
        }

    def wait_for_status(self, server: str, status: str, timeout: float = 10) -> None:
        """Poll `status()` until `server` is `status` (e.g. "UP"), or
        TimeoutError."""
        deadline = time.monotonic() + timeout
        while (now := self.status().get(server)) != status:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{server} is {now}, not {status}, after {timeout} s"
                )
            time.sleep(0.05)


class _HAProxy(_Process):
    name = "haproxy"

    def __init__(
        self,
        executable: str,
        balancer: LoadBalancer,
        port: int | None,
        start_timeout: float,
    ) -> None:
        super().__init__(port, balancer.log_dir, start_timeout)
        self.executable = executable
        self.balancer = balancer

    def command(self) -> list[str]:
        return [self.executable, "-f", str(self.balancer.config_path), "-db"]


class Cluster(_Service, LoopbackEndpoint):
    """Redis, `workers` server processes of one app and HAProxy in front.

    Every worker gets `REDIS_URL` and the same `FLET_SECRET_KEY` (plus `env`);
    `server`/`processes`/`args` are as for `Worker`, `sticky`/`checks` as for
    `LoadBalancer`, `durable_redis` as `RedisServer(durable=...)`.
    Everything is stopped on exit, however the block ends.
    """

    def __init__(
        self,
        app: str,
        *,
        workers: int = 2,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        server: Literal["uvicorn", "gunicorn"] = "uvicorn",
        processes: int = 1,
        args: Sequence[str] = (),
        sticky: bool = False,
        checks: bool = True,
        secret_key: str | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        durable_redis: bool = False,
    ) -> None:
        super().__init__(log_dir)
        self.redis = RedisServer(log_dir=self.log_dir, durable=durable_redis)
        shared = {
            "REDIS_URL": self.redis.url,
            "FLET_SECRET_KEY": secret_key or secrets.token_urlsafe(32),
            **(env or {}),
        }
        self.workers = [
            Worker(
                app,
                cwd=cwd,
                env=shared,
                server=server,
                processes=processes,
                args=args,
                name=f"worker-{i}",
                log_dir=self.log_dir,
            )
            for i in range(workers)
        ]
        self.balancer = LoadBalancer(
            [worker.port for worker in self.workers],
            sticky=sticky,
            checks=checks,
            log_dir=self.log_dir,
        )
        self.port = self.balancer.port  # `url`/`ws_url` go through the balancer

    def start(self) -> None:
        """Start Redis, then the workers (booting in parallel), then HAProxy."""
        self.redis.start()
        for worker in self.workers:
            worker.launch()
        for worker in self.workers:
            worker.wait_ready()
        self.balancer.start()

    def rolling_restart(self) -> None:
        """Restart the workers one at a time, each back in the balancer's
        rotation before the next goes down."""
        for worker, server in zip(self.workers, self.balancer.servers, strict=True):
            worker.restart()
            self.balancer.wait_for_status(server, "UP")

    def stop(self) -> None:
        """Stop the balancer, the workers and Redis (killing what hangs)."""
        self.balancer.stop()
        for worker in self.workers:
            worker.stop()
        self.redis.stop()
