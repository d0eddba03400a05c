"""Small measurement helpers the load-test CLI shares with the benchmarks.

What only the benchmarks use lives beside them, in `benchmarks/` (`harness`,
`children`, `clients`), not in the shipped package.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from flet_resilient.testing import FletClient, loopback_socket

__all__ = [
    "announced_port",
    "close_all",
    "machine",
    "percentile",
    "reply",
    "serve_child",
]


def percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile (nan when empty)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


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


def announced_port(line: str) -> int:
    """The port in a child's first line: its last `:PORT`, as in
    `ws://127.0.0.1:PORT/ws` (ValueError if there is none)."""
    found = re.search(r":(\d+)\D*$", line.strip())
    if found is None:
        raise ValueError(f"no port in {line!r}")
    return int(found.group(1))


def reply(*words: object) -> None:
    """Child side of the benchmarks' `ChildServer` (`benchmarks/children.py`):
    one line to the parent (`KIND TOKEN ...`)."""
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


async def serve_child(
    app: Any, handle: Callable[[list[str]], None] | None = None, **uvicorn_options: Any
) -> None:
    """Child side of the benchmarks' `ChildServer` and of the load-test CLI's
    `ServerProcess`: serve the ASGI `app` on 127.0.0.1 with uvicorn's defaults
    (pings included; log level error) but for `uvicorn_options`, print its
    `ws://` URL, then hand the words of each stdin line to `handle` until stdin
    closes."""
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
