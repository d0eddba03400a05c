"""What the seam sends: Flet's per-socket send queue, made thread-safe and
measured, and outgoing messages with a short repr."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from flet.messaging.protocol import Message, MessageAction

from flet_resilient.metrics import count


class SendQueue(asyncio.Queue):
    """Flet's per-socket send queue, made thread-safe and measured.

    `put_nowait` from a foreign thread is handed to the loop with
    `call_soon_threadsafe`, which wakes it immediately.
    """

    def __init__(self) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.backlog_bytes = 0

    def put_nowait(self, item: Any) -> None:
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.put_nowait, item)
            return
        if item is not None:
            self.backlog_bytes += len(item)
        super().put_nowait(item)

    def get_nowait(self) -> Any:
        item = super().get_nowait()
        if item is not None:
            self.backlog_bytes -= len(item)
            count("transport.frames_sent")
            count("transport.bytes_sent", len(item))
        return item


SEND_QUEUE = "_FletApp__send_queue"
"""FletApp's private send-queue attribute."""


class SendQueueSlot:
    """Descriptor replacing FletApp's private send-queue attribute.

    Flet assigns a fresh `asyncio.Queue` in `handle()`; we store a
    `SendQueue` instead (Flet's queue is still empty at that point), in the
    instance's own slot, so a socket outlives an `uninstall()` unharmed.
    """

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get(SEND_QUEUE)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[SEND_QUEUE] = (
            SendQueue() if isinstance(value, asyncio.Queue) else value
        )


transport_log = logging.getLogger("flet_transport")


class QuietMessage(Message):
    """A message with a short repr. flet-web formats every outgoing message
    for a debug line even when that log is off: for a 1000-control page a
    1 MB repr, about 38 ms of the loop per page build."""

    def __repr__(self) -> str:
        return f"Message({self.action!r}, ...)"


ORDERED_ACTIONS = (MessageAction.INVOKE_METHOD, MessageAction.SESSION_CRASHED)
"""Messages sent once: they must not overtake patches deferred before them."""
