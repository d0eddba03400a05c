"""The benchmarks' child servers: a benchmark's app in a child process of its
own (so its RSS and CPU are its own), driven over a line channel on its pipes.

The child's side is `flet_resilient.measure.serve_child` and `reply`, which the
load-test CLI's server uses too.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TypeVar

from flet_resilient.measure import announced_port

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
