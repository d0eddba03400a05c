"""Small measurement helpers shared by the load-test CLI and the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import os
import platform
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol, TypeVar

import websockets

from flet_resilient.testing import FletClient, loopback_socket

__all__ = [
    "FIRST_RETRY_S",
    "RETRYABLE",
    "ChildServer",
    "ClickLog",
    "announced_port",
    "click_and_wait",
    "click_at_random",
    "clicking_at_random",
    "close_all",
    "code_version",
    "command_line",
    "connect_many",
    "connect_retrying",
    "machine",
    "ms",
    "percentile",
    "reply",
    "report_header",
    "same_browser",
    "save_report",
    "serve_child",
    "start_child",
    "stop_child",
]

FIRST_RETRY_S = 0.5
"""Flet's Flutter client waits this long before it reconnects, doubling the
wait after each failed try."""

RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset; ConnectionError: closed before the page came
    TimeoutError,
    asyncio.TimeoutError,
    websockets.exceptions.WebSocketException,  # handshake refused, closed
)
"""What a failed connect or page load raises."""


def percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile (nan when empty)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(value: float) -> str:
    """Milliseconds for a table: one decimal below 100, none above; n/a for nan."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def machine() -> str:
    """CPU model and count, OS, Python and Flet versions."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, flet {version('flet')}"
    )


def code_version(path: str | os.PathLike[str] = ".") -> str:
    """`git describe` of the checkout at `path` ("-dirty": edited), or unknown."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def command_line() -> str:
    """How this script was started, for its report: `python <script> <args>`."""
    script = os.path.relpath(sys.argv[0]) if sys.argv[0] else "benchmark"
    return "python " + " ".join([script, *sys.argv[1:]])


def report_header(
    title: str, command: str, checkout: str | os.PathLike[str]
) -> list[str]:
    """A benchmark report's first lines: title, date, machine, code, command."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"# {title}",
        "",
        f"- date: {now}",
        f"- machine: {machine()}",
        f"- code: flet-resilient {code_version(checkout)}",
        f"- command: `{command}`",
    ]


def save_report(text: str, path: Path) -> None:
    """Print a markdown report and write it to `path` (creating its folder)."""
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"saved {path}", file=sys.stderr)


async def connect_many(
    url: str, count: int, batch: int = 20, **options: Any
) -> list[FletClient]:
    """Connect `count` simulated users, `batch` at a time (a gentle ramp-up)."""
    clients: list[FletClient] = []
    for start in range(0, count, batch):
        size = min(batch, count - start)
        clients += await asyncio.gather(
            *(FletClient(url, **options).connect() for _ in range(size))
        )
    return clients


def same_browser(client: FletClient) -> FletClient:
    """A new, unconnected client for the browser behind `client`: its URL,
    session id, User-Agent and route, and a copy of its storage."""
    again = FletClient(
        client.ws_url, session_id=client.session_id, user_agent=client.user_agent
    )
    again.route = client.route
    again.storage = dict(client.storage)
    return again


async def connect_retrying(
    make: Callable[[], FletClient],
    ready: Callable[[FletClient], object],
    *,
    first_wait: float = FIRST_RETRY_S,
    within: float = 30.0,
) -> FletClient:
    """Connect a client from `make()` until its page satisfies `ready`, as
    Flet's Flutter client does: the first try after `first_wait` s, then waits
    from `FIRST_RETRY_S` doubling; TimeoutError once `within` s are spent."""
    deadline = time.monotonic() + within
    wait = FIRST_RETRY_S
    await asyncio.sleep(first_wait)
    while True:
        client = make()
        try:
            remaining = max(deadline - time.monotonic(), 0.1)
            await asyncio.wait_for(_load(client, ready, remaining), remaining)
            return client
        except RETRYABLE:
            if client.ws is not None:
                with contextlib.suppress(Exception):
                    client.abort()
            if time.monotonic() + wait > deadline:
                raise TimeoutError(f"no page within {within:g} s") from None
        await asyncio.sleep(wait)
        wait *= 2


async def _load(
    client: FletClient, ready: Callable[[FletClient], object], timeout: float
) -> None:
    await client.connect()
    await client.wait_for(lambda: ready(client), timeout)


async def click_and_wait(
    client: FletClient, button: str, text: str, target: int, timeout: float
) -> float:
    """Click `button`, wait until Text `text` shows >= `target`; seconds taken."""
    started = time.perf_counter()
    await client.click(button)
    await client.wait_for(lambda: int(client.value(text)) >= target, timeout=timeout)
    return time.perf_counter() - started


class ClickLog(Protocol):
    """Where `click_at_random` records: latencies (ms), how many timed out."""

    latencies_ms: list[float]
    timeouts: int


async def click_at_random(
    client: FletClient,
    button: str,
    rng: random.Random,
    deadline: float,
    timeout: float,
    log: ClickLog,
) -> None:
    """Click `button` every 0.5-1.5 s until `deadline` (`time.perf_counter`),
    logging how long each click took to show in Text "count" (a timeout, or a
    closed socket, counts at its length: a lower bound)."""
    clicks = int(client.value("count"))
    while True:
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        if time.perf_counter() >= deadline:
            return
        clicks += 1
        started = time.perf_counter()
        try:
            await click_and_wait(client, button, "count", clicks, timeout)
        except (TimeoutError, ConnectionError):
            log.timeouts += 1
        log.latencies_ms.append((time.perf_counter() - started) * 1000)


def clicking_at_random(
    clients: Iterable[FletClient],
    button: str,
    rng: random.Random,
    deadline: float,
    timeout: float,
    log: ClickLog,
) -> list[Coroutine[Any, Any, None]]:
    """`click_at_random` for each of `clients` (the bystanders of a phase), each
    with its own random generator drawn from `rng`, all into one `log`."""
    return [
        click_at_random(c, button, random.Random(rng.random()), deadline, timeout, log)
        for c in clients
    ]


async def close_all(clients: list[FletClient], timeout: float = 10) -> None:
    """Close every client; abort the ones that do not close within `timeout` s
    (a client whose close fails is left as it is)."""
    closing = asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    try:
        await asyncio.wait_for(closing, timeout)
    except asyncio.TimeoutError:
        for client in clients:
            if not client.closed.is_set():  # any client with closed and abort()
                with contextlib.suppress(Exception):
                    client.abort()


ServerT = TypeVar("ServerT", bound="ChildServer")


class ChildServer:
    """A benchmark's app server in a child process, with a line control channel.

    The child prints its `ws://` URL first, then answers requests written to
    its stdin as `KIND TOKEN ARGS...` with lines `KIND TOKEN WORDS...`; closing
    its stdin stops it. Running the server apart keeps its RSS and CPU its own.
    """

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.command = command
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.ws_url = ""
        self._replies: dict[tuple[str, str], asyncio.Future[list[str]]] = {}
        self._tokens = 0
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def port(self) -> int:
        return announced_port(self.ws_url)

    async def __aenter__(self: ServerT) -> ServerT:
        self.process = await start_child(self.command, self.env)
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        if not line.startswith(b"ws://"):
            await self.__aexit__()
            raise RuntimeError(f"the benchmark server did not start: {line!r}")
        self.ws_url = line.decode().strip()
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            kind, token, *rest = line.decode().split()
            future = self._replies.pop((kind, token), None)
            if future is not None and not future.done():
                future.set_result(rest)

    def send(
        self, kind: str, *args: str, replies: tuple[str, ...] = ()
    ) -> tuple[asyncio.Future[list[str]], ...]:
        """Write one request; return futures for the reply kinds it will get
        (default: one reply of the same kind)."""
        assert self.process is not None and self.process.stdin is not None
        self._tokens += 1
        token = str(self._tokens)
        loop = asyncio.get_running_loop()
        futures = []
        for reply in replies or (kind,):
            futures.append(loop.create_future())
            self._replies[(reply, token)] = futures[-1]
        self.process.stdin.write(" ".join((kind, token, *args)).encode() + b"\n")
        return tuple(futures)

    async def request(self, kind: str, *args: str, timeout: float = 30) -> list[str]:
        """One request and the words of its reply."""
        (reply,) = self.send(kind, *args)
        return await asyncio.wait_for(reply, timeout)

    async def __aexit__(self, *exc: object) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        await stop_child(process)
        if self._reader is not None:
            self._reader.cancel()


async def start_child(
    command: list[str], env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """Start a benchmark's child process with pipes to its stdin and stdout (its
    stderr is ours, so its errors show)."""
    return await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )


async def stop_child(process: asyncio.subprocess.Process, timeout: float = 30) -> None:
    """Close the child's stdin (its signal to finish), wait `timeout` s for it to
    exit, then kill it."""
    assert process.stdin is not None
    with contextlib.suppress(ProcessLookupError):
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()


def announced_port(line: str) -> int:
    """The port in a child's first line: its last `:PORT`, as in
    `ws://127.0.0.1:PORT/ws` (ValueError if there is none)."""
    found = re.search(r":(\d+)\D*$", line.strip())
    if found is None:
        raise ValueError(f"no port in {line!r}")
    return int(found.group(1))


def reply(*words: object) -> None:
    """Child side of `ChildServer`: one line to the parent (`KIND TOKEN ...`)."""
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


async def serve_child(
    app: Any, handle: Callable[[list[str]], None] | None = None, **uvicorn_options: Any
) -> None:
    """Child side of `ChildServer` and of the load-test CLI's `ServerProcess`:
    serve the ASGI `app` on 127.0.0.1 with uvicorn's defaults (pings included;
    log level error) but for `uvicorn_options`, print its `ws://` URL, then hand
    the words of each stdin line to `handle` until stdin closes."""
    import uvicorn

    from flet_resilient import _flet

    _flet.install()  # as serve() does (a no-op with FLET_RESILIENT_DISABLE=1)
    sock = loopback_socket()
    options = {"log_level": "error", **uvicorn_options}
    server = uvicorn.Server(uvicorn.Config(app, **options))
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 30
    while not server.started:
        if serving.done() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.01)
    reply(f"ws://127.0.0.1:{sock.getsockname()[1]}/ws")
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while line := await reader.readline():
        if (words := line.decode().split()) and handle is not None:
            handle(words)
    server.should_exit = True
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(serving), 10)
