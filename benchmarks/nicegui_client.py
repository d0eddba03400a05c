"""A simulated NiceGUI user, so the load-test ramp can drive NiceGUI too.

It does what a browser does: GET the page (NiceGUI builds the page's elements
on that request and embeds them and the client id in the HTML), connect
socket.io (engine.io over a WebSocket) with the page's implicit handshake,
mirror the `update` messages into its element table, acknowledge them every
3 s (NiceGUI keeps unacknowledged messages for a reconnect), and click a
button found by its `data-key` prop with the same `event` message the page's
JavaScript sends. It offers what the load test uses of
`flet_resilient.testing.FletClient`: `connect`, `click`, `find`, `value`,
`wait_for`, `frames`, `closed`, `close`, `abort`.

A socket the server closes comes back as the page's socket.io client brings
it back (reconnection on, 1 s doubling to 5 s, ±50 %, the latest message id in
the query), to the same page client: NiceGUI closes the socket of a tab whose
ping answer it has not read within its engine.io ping timeout (2 s by
default), as when its own event loop stalls longer than that, and keeps the
page client `reconnect_timeout` (3 s) for the tab to return; only a refused
handshake (the client deleted: the browser would reload the page) loses the
session. python-socketio's own reconnection does neither: it gives up after
an engine.io close packet and reconnects with the first query.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import html
import json
import math
import random
import re
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import socketio

from flet_resilient.testing import Action, Frame
from flet_resilient.testing import _holds as holds  # a missing element: not yet

SOCKET_PATH = "/_nicegui_ws/socket.io"
ACK_EVERY_S = 3.0  # as NiceGUI's page script
RECONNECT_DELAY_S = (1.0, 5.0, 0.5)  # socket.io-client's first, max, randomization
RECONNECT_GIVE_UP_S = 30.0  # a server that does not answer that long is gone
_ELEMENTS = re.compile(r"parseElements\(String\.raw`(.*?)`\)", re.S)
_QUERY = re.compile(r"query: (\{.*?\}),\n")


def parse_page(text: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(elements by id, socket.io query) from a NiceGUI page's HTML."""
    elements, query = _ELEMENTS.search(text), _QUERY.search(text)
    if elements is None or query is None:
        raise ConnectionError("not a NiceGUI page (no elements or socket query)")
    raw = html.unescape(elements.group(1).replace("&#36;", "$").replace("&#96;", "`"))
    return json.loads(raw), ast.literal_eval(query.group(1))


class NiceGUIClient:
    """One simulated NiceGUI user of the page at `url` (http://host:port)."""

    def __init__(self, url: str, index: int = 0) -> None:
        self.url = url.rstrip("/")
        self.index = index
        self.elements: dict[str, dict[str, Any]] = {}
        self.frames: list[Frame] = []
        self.closed = asyncio.Event()
        self.session_id: str | None = None  # the page's client id
        self.next_message_id = 0
        self._changed = asyncio.Event()
        self._tab: dict[str, str] = {}
        self._socket = self._new_socket()
        self._acks: asyncio.Task[None] | None = None
        self._online = asyncio.Event()  # the socket is connected
        self._leaving = False  # close() or reconnect(): no reconnection
        self._returning: asyncio.Task[None] | None = None
        self.dropped = 0  # sockets the server closed (or the transport lost)
        self.recovered = 0  # of those, back on the same page client

    async def connect(self) -> NiceGUIClient:
        """Load the page and connect its socket, as a browser tab does."""
        text = await asyncio.to_thread(self._get_page)
        self.elements, query = parse_page(text)
        self.session_id = str(query["client_id"])
        self.next_message_id = int(query.get("next_message_id", 0))
        self._tab = {"document_id": str(uuid.uuid4()), "tab_id": str(uuid.uuid4())}
        await self._open_socket()
        return self

    async def _open_socket(self) -> None:
        """Connect socket.io with the page's implicit handshake."""
        params = {
            "client_id": self.session_id,
            "next_message_id": self.next_message_id,
            "implicit_handshake": "true",
            **self._tab,
        }
        await self._socket.connect(
            f"{self.url}?{urllib.parse.urlencode(params)}",
            socketio_path=SOCKET_PATH,
            transports=["websocket"],
            wait_timeout=30,
        )
        self.closed.clear()
        self._online.set()
        self._changed.set()
        if self._acks is not None:
            self._acks.cancel()
        self._acks = asyncio.create_task(self._ack_loop())

    async def reconnect(self, offline: float) -> float:
        """Close the socket, stay away `offline` s, come back to the same page
        client as the page's socket.io does: ms until connected, or nan when
        NiceGUI had dropped the client (the browser would reload the page)."""
        await self.close()
        await asyncio.sleep(offline)
        self._socket = self._new_socket()
        started = time.monotonic()
        try:
            await self._open_socket()
        except socketio.exceptions.ConnectionError:
            return math.nan
        finally:
            self._leaving = False
        return (time.monotonic() - started) * 1000

    async def _come_back(self) -> None:
        """Reconnect a socket the server closed, as the page's socket.io does,
        until NiceGUI refuses the handshake or stops answering: then `closed`."""
        first, most, spread = RECONNECT_DELAY_S
        delay, give_up = first, time.monotonic() + RECONNECT_GIVE_UP_S
        while not self._leaving and time.monotonic() < give_up:
            await asyncio.sleep(delay * random.uniform(1 - spread, 1 + spread))
            delay = min(delay * 2, most)
            self._socket = self._new_socket()
            try:
                await self._open_socket()
            except socketio.exceptions.ConnectionError:
                if self._socket.failed_namespaces:
                    break  # handshake refused: NiceGUI deleted the page client
                continue  # not answering (yet)
            if self._online.is_set():  # not dropped again meanwhile
                self.recovered += 1
                return
        self.closed.set()
        self._changed.set()

    def _new_socket(self) -> socketio.AsyncClient:
        sock = socketio.AsyncClient(reconnection=False)  # see _come_back
        sock.on("update", self._on_update)
        sock.on("disconnect", self._on_disconnect)
        return sock

    def _get_page(self) -> str:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.url}/", timeout=30) as response:
            return str(response.read().decode())

    def _on_update(self, message: dict[str, Any]) -> None:
        """Mirror an `update` message (element id -> element, None: removed)."""
        size = len(json.dumps(message, separators=(",", ":")))
        for key, element in message.items():
            if key == "_id":
                self.next_message_id = int(element) + 1
            elif element is None:
                self.elements.pop(key, None)
            else:
                self.elements[key] = element
        self.frames.append(Frame(Action.PATCH_CONTROL, None, size))
        self._changed.set()

    def _on_disconnect(self, *args: Any) -> None:
        """Our own close ends the session; any other comes back (`_come_back`)."""
        self._online.clear()
        if self._leaving:
            self.closed.set()
            self._changed.set()
        elif self._returning is None or self._returning.done():
            self.dropped += 1
            self._returning = asyncio.create_task(self._come_back())

    async def _ack_loop(self) -> None:
        """Tell NiceGUI which messages arrived, so it can drop its history."""
        while self._socket.connected:
            await asyncio.sleep(ACK_EVERY_S)
            with contextlib.suppress(socketio.exceptions.SocketIOError):
                await self._socket.emit(
                    "ack",
                    {
                        "client_id": self.session_id,
                        "next_message_id": self.next_message_id,
                    },
                )

    def element_id(self, key: str) -> str:
        """The id of the element whose `data-key` prop is `key` (KeyError if none)."""
        for element_id, element in self.elements.items():
            if element.get("props", {}).get("data-key") == key:
                return element_id
        raise KeyError(f"no element with data-key {key!r}")

    def find(self, key: str) -> dict[str, Any]:
        """The element with `key`, its text also as `value` (as Flet's Text)."""
        element = self.elements[self.element_id(key)]
        return {**element, "key": key, "value": element.get("text")}

    def value(self, key: str, prop: str = "value") -> Any:
        return self.find(key).get(prop)

    async def click(self, key: str) -> None:
        """Send the button's click event, as the page's script does (a socket
        coming back first: socket.io buffers the event until it is)."""
        if not self._online.is_set():
            await self.wait_for(self._online.is_set, RECONNECT_GIVE_UP_S)
        element_id = self.element_id(key)
        listener = next(
            e
            for e in self.elements[element_id].get("events", [])
            if e["type"] == "click"
        )
        message = {
            "id": int(element_id),
            "client_id": self.session_id,
            "listener_id": listener["listener_id"],
            "args": [],
        }
        try:
            await self._socket.emit("event", message)
        except socketio.exceptions.SocketIOError as error:  # closed meanwhile
            raise ConnectionError(str(error)) from error

    async def wait_for(self, predicate: Callable[[], Any], timeout: float) -> None:
        """Wait until `predicate()` holds (a missing element: not yet)."""
        deadline = time.monotonic() + timeout
        while not holds(predicate):
            if self.closed.is_set():
                raise ConnectionError("the NiceGUI socket closed")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def close(self) -> None:
        self._leaving = True
        if self._acks is not None:
            self._acks.cancel()
        if self._returning is not None:
            self._returning.cancel()
        await self._socket.disconnect()
        self.closed.set()

    def abort(self) -> None:
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(self.close())
