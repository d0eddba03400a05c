"""The attacker of `bench_hostile.py`, in its own process (no flet import, so it
starts in a fraction of a second): one client doing one hostile thing.

    python benchmarks/hostile_attacker.py KIND WS_URL SECONDS [FRAME_BYTES] [NICE]

KIND is big-frames, event-flood or reregister (see bench_hostile.py). It
prints `attacking` once its first connection is registered, attacks for
SECONDS more, reconnecting to its session whenever the server closes its
socket, then prints `sent N reconnects M`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import websockets
from websockets.asyncio.client import ClientConnection

KINDS = ("big-frames", "event-flood", "reregister")
REGISTER_CLIENT, CONTROL_EVENT = 1, 3  # flet.messaging.protocol.MessageAction
MISSING_CONTROL = 2**31 - 1  # no control has this id


def big_frame(nbytes: int) -> bytes:
    """A CONTROL_EVENT frame of `nbytes` small ints (about `nbytes` bytes)."""
    body = {"target": MISSING_CONTROL, "name": "click", "data": [1] * nbytes}
    return b"\x00" + msgpack.packb([CONTROL_EVENT, body])


def flood_frame() -> bytes:
    """A CONTROL_EVENT for a control that does not exist."""
    body = {"target": MISSING_CONTROL, "name": "click", "data": None}
    return b"\x00" + msgpack.packb([CONTROL_EVENT, body])


def register_frame(session_id: str | None) -> bytes:
    """A REGISTER_CLIENT presenting `session_id` (None: asking for a new one)."""
    body = {
        "session_id": session_id,
        "page_name": "",
        "page": {"route": "/", "width": 1280, "height": 720},
    }
    return b"\x00" + msgpack.packb([REGISTER_CLIENT, body])


@dataclass
class Tally:
    """What the attacker did."""

    seconds: float
    sent: int = 0
    reconnects: int = 0
    deadline: float = 0.0  # set once the first connection is up


async def send_until(ws: ClientConnection, frames: Any, tally: Tally) -> None:
    """Send `frames()` back to back until the deadline (a send the server does
    not take by then is given up)."""
    while (left := tally.deadline - time.monotonic()) > 0:
        try:
            await asyncio.wait_for(ws.send(frames()), left)
        except TimeoutError:
            return
        tally.sent += 1


async def register(ws: ClientConnection, session_id: str | None) -> str:
    """Register on a raw socket (no mirror); the session id the server gave."""
    await ws.send(register_frame(session_id))
    while True:
        frame = await ws.recv()
        if isinstance(frame, bytes) and frame[:1] == b"\x00":
            action, body = msgpack.unpackb(frame[1:], strict_map_key=False)
            if action == REGISTER_CLIENT:
                return str(body["session_id"])


async def discard(ws: ClientConnection) -> None:
    """Read and drop whatever the server sends (a real client reads too)."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async for _ in ws:
            pass


async def attack_once(
    url: str, frames: Any, tally: Tally, session: list[str | None]
) -> None:
    """One connection: register (to `session[0]` once known), then attack;
    then drop the connection (a close handshake with a swamped server would
    wait for websockets' close timeout)."""
    ws = await websockets.connect(url, max_size=None, ping_interval=None)
    reader = None
    try:
        session[0] = await asyncio.wait_for(register(ws, session[0]), 30)
        if not tally.deadline:
            print("attacking", flush=True)
            tally.deadline = time.monotonic() + tally.seconds
        reader = asyncio.ensure_future(discard(ws))
        await send_until(ws, frames, tally)
    finally:
        if reader is not None:
            reader.cancel()
        ws.transport.abort()


async def attack(kind: str, url: str, seconds: float, frame_bytes: int) -> None:
    """Attack for `seconds` after connecting, reconnecting to the same session
    when the server closes the socket; print `sent N reconnects M`."""
    frame = big_frame(frame_bytes) if kind == "big-frames" else b""
    frames = {
        "big-frames": lambda: frame,
        "event-flood": flood_frame,
        "reregister": lambda: register_frame(secrets.token_hex(8)),
    }[kind]
    session: list[str | None] = [None]  # the attacker's own, once registered
    tally = Tally(seconds)
    while not tally.deadline or time.monotonic() < tally.deadline:
        try:
            await attack_once(url, frames, tally, session)
        except (websockets.ConnectionClosed, ConnectionError, OSError, TimeoutError):
            tally.reconnects += 1
    print(f"sent {tally.sent} reconnects {tally.reconnects}", flush=True)


def main(argv: list[str]) -> None:
    """Parse `KIND WS_URL SECONDS [FRAME_BYTES] [NICE]` and attack."""
    kind, url, seconds = argv[0], argv[1], float(argv[2])
    if kind not in KINDS:
        raise SystemExit(f"KIND must be one of {', '.join(KINDS)}, got {kind!r}")
    frame_bytes = int(argv[3]) if len(argv) > 3 else 10_000_000
    os.nice(int(argv[4]) if len(argv) > 4 else 0)
    asyncio.run(attack(kind, url, seconds, frame_bytes))


if __name__ == "__main__":
    main(sys.argv[1:])
