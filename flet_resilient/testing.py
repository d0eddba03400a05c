"""Test a Flet web app for real: serve it under uvicorn, drive it over the protocol.

`FletServer` runs an app on 127.0.0.1 and a free port in a background thread.
`FletClient` speaks Flet's WebSocket protocol (frames `b"\\x00" +
msgpack([action, body])`), keeps a mirror of the control tree from the
register response and every patch, and clicks controls by `key`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import msgpack
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection

__all__ = [
    "Action",
    "FaultProxy",
    "FletClient",
    "FletServer",
    "Frame",
    "LoopbackEndpoint",
    "Mirror",
    "loopback_socket",
    "wait_until",
]

T = TypeVar("T")


class Action:
    """Flet message action codes (`flet.messaging.protocol.MessageAction`)."""

    REGISTER_CLIENT = 1
    PATCH_CONTROL = 2
    CONTROL_EVENT = 3
    UPDATE_CONTROL_PROPS = 4
    INVOKE_METHOD = 5
    SESSION_CRASHED = 6


REPLACE, ADD, REMOVE, MOVE = 0, 1, 2, 3  # patch operations (object_patch.Operation)


def loopback_socket() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on a free port, for `uvicorn.Server.serve`.

    Created with proto IPPROTO_TCP (not 0), as `uvicorn.run(host=, port=)`
    gets it from getaddrinfo: asyncio then sets TCP_NODELAY on accepted
    sockets; otherwise a frame sent right after another waits ~40 ms for the
    peer's delayed ACK (Nagle).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def encode(action: int, body: Any) -> bytes:
    """One protocol frame."""
    return b"\x00" + msgpack.packb([action, body])


def decode(frame: bytes) -> tuple[int, Any]:
    """(action, body) of a protocol frame."""
    action, body = msgpack.unpackb(frame[1:], strict_map_key=False)
    return action, body


class LoopbackEndpoint:
    """Something serving a Flet app on 127.0.0.1:`port`: its page and socket URLs."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """The Flet WebSocket endpoint (`FletClient`'s URL)."""
        return f"ws://127.0.0.1:{self.port}/ws"


class FletServer(LoopbackEndpoint):
    """A Flet app served by uvicorn on 127.0.0.1:<free port> in a thread.

    Use as a context manager (sync or async); extra keyword arguments go to
    `flet_web.fastapi.app` (e.g. `session_timeout_seconds`, `no_cdn`).
    """

    def __init__(self, main: Callable[..., Any], **app_kwargs: Any) -> None:
        import flet_web.fastapi as flet_fastapi

        from flet_resilient import _flet

        _flet.install()  # the seam's fixes, as any decorated app gets them
        self.app = flet_fastapi.app(main, **app_kwargs)
        self._socket = loopback_socket()
        self.port: int = self._socket.getsockname()[1]
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", ws_ping_interval=None)
        )
        self.loop: asyncio.AbstractEventLoop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> FletServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Flet test server did not start")
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        loop = self.loop
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        finally:
            pending = asyncio.all_tasks(loop)  # e.g. the app's background producers
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(
                    asyncio.gather(*pending, return_exceptions=True)
                )
            loop.close()

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine on the server loop from the test's loop."""
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(coro, self.loop)
        )

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()
        from flet_resilient import gcfreeze

        gcfreeze.unfreeze()  # what its sessions left frozen is collectable

    def __enter__(self) -> FletServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FletServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


@dataclass
class Frame:
    """One frame the client received, as decoded."""

    action: int
    body: Any
    size: int
    at: float = field(default_factory=time.monotonic)


class Mirror:
    """A simulated browser's view of one page, whatever carries the frames.

    `controls` maps control id (`_i`) to the mirrored control dict, kept from
    the register response and every patch; `find(key)` looks one up by its
    `key`. Server `invoke_method` requests are answered with
    `on_invoke(name, args)`; by default `get`/`set`/`remove` calls work on
    `storage` (like the browser's SharedPreferences) and others answer None.
    Shared by the asyncio `FletClient` and the gevent Locust user.
    """

    def __init__(
        self,
        *,
        session_id: str | None = None,
        route: str = "/",
        on_invoke: Callable[[str, Any], Any] | None = None,
    ) -> None:
        self.session_id = session_id
        self.route = route
        self.storage: dict[str, Any] = {}
        self.on_invoke = on_invoke or self._client_storage
        self.page: dict[str, Any] = {}
        self.controls: dict[int, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.invocations: list[tuple[str, Any]] = []
        self.stale_patches = 0

    def register_frame(self) -> bytes:
        """The REGISTER_CLIENT frame a browser sends first (with our session id)."""
        return encode(
            Action.REGISTER_CLIENT,
            {
                "session_id": self.session_id,
                "page_name": "",
                "page": {"route": self.route, "width": 1280, "height": 720},
            },
        )

    def _client_storage(self, name: str, args: Any) -> Any:
        key = str(args.get("key")) if isinstance(args, dict) else ""
        if name == "get":
            return self.storage.get(key)
        if name == "set":
            self.storage[key] = args["value"]
            return True
        if name == "remove":
            return self.storage.pop(key, None) is not None
        return None

    def mirror(self, action: int, body: Any) -> bytes | None:
        """Apply one received message; the frame to answer with, if any."""
        if action == Action.REGISTER_CLIENT:
            self.session_id = body["session_id"]
            self.page = body["page_patch"]
            self.controls = {}
            self._index(self.page)
        elif action == Action.PATCH_CONTROL:
            target = self.controls.get(body["id"])
            if target is None:
                # A control no longer on the page (e.g. a detached subtree still
                # updated by its task): like the real client, ignore the patch.
                self.stale_patches += 1
                return None
            apply_patch(target, body["patch"], self._index, self._unindex)
        elif action == Action.INVOKE_METHOD:
            self.invocations.append((body["name"], body.get("args")))
            result, error = None, None
            try:
                result = self.on_invoke(body["name"], body.get("args"))
            except Exception as exc:
                error = str(exc)
            reply = {"control_id": body["control_id"], "call_id": body["call_id"]}
            return encode(
                Action.INVOKE_METHOD, {**reply, "result": result, "error": error}
            )
        elif action == Action.SESSION_CRASHED:
            self.errors.append(body["message"])
        return None

    def _index(self, value: Any) -> None:
        if isinstance(value, dict):
            if "_i" in value:
                self.controls[value["_i"]] = value
            for child in value.values():
                self._index(child)
        elif isinstance(value, list):
            for child in value:
                self._index(child)

    def _unindex(self, value: Any) -> None:
        if isinstance(value, dict):
            if self.controls.get(value.get("_i")) is value:  # type: ignore[arg-type]
                del self.controls[value["_i"]]
            for child in value.values():
                self._unindex(child)
        elif isinstance(value, list):
            for child in value:
                self._unindex(child)

    def find(self, key: str) -> dict[str, Any]:
        """The mirrored control whose `key` is `key` (KeyError if absent)."""
        for control in self.controls.values():
            if control.get("key") == key:
                return control
        raise KeyError(f"no control with key {key!r} in the mirror")

    def value(self, key: str, prop: str = "value") -> Any:
        """A property of the control with `key`, e.g. a Text's `value`."""
        return self.find(key).get(prop)


class FletClient(Mirror):
    """A simulated user speaking Flet's real WebSocket protocol over asyncio.

    The page is mirrored as `Mirror` describes; `frames` keeps every frame
    received, and `wait_for` waits on the mirror.
    """

    def __init__(
        self,
        ws_url: str,
        *,
        session_id: str | None = None,
        user_agent: str = "flet-resilient-test-client",
        route: str = "/",
        on_invoke: Callable[[str, Any], Any] | None = None,
        recv_buffer: int | None = None,
        source_ip: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(session_id=session_id, route=route, on_invoke=on_invoke)
        self.ws_url = ws_url
        self.user_agent = user_agent
        self.recv_buffer = recv_buffer
        self.source_ip = source_ip
        self.headers = headers  # extra handshake headers, e.g. a balancer's Cookie
        self.frames: list[Frame] = []
        self.raw_frames: list[bytes] | None = None
        """Set it to a list to also keep each received frame's bytes."""
        self.ws: ClientConnection | None = None
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()

    async def connect(self) -> FletClient:
        """Open the socket, register, and wait for the initial page."""
        sock = None
        if self.recv_buffer is not None or self.source_ip is not None:
            host, port = self.ws_url.split("//")[1].split("/")[0].rsplit(":", 1)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            if self.recv_buffer is not None:
                # A fixed receive buffer (no loopback autotuning to ~30 MB), so
                # a client that stops reading backs up the server like a phone.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.recv_buffer)
            if self.source_ip is not None:  # e.g. 127.0.0.2: "another network"
                sock.bind((self.source_ip, 0))
            await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        self.ws = await websockets.connect(
            self.ws_url,
            sock=sock,
            user_agent_header=self.user_agent,
            additional_headers=self.headers,
            max_size=None,
            ping_interval=None,
        )
        await self.ws.send(self.register_frame())
        self._reader = asyncio.create_task(self._read())
        await self.wait_for(lambda: bool(self.page), timeout=30)
        return self

    async def __aenter__(self) -> FletClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- reading -------------------------------------------------------------

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                await self._reading.wait()
                if isinstance(raw, str) or not raw or raw[0] != 0:
                    continue
                if self.raw_frames is not None:
                    self.raw_frames.append(raw)
                action, body = decode(raw)
                self.frames.append(Frame(action, body, len(raw)))
                await self._apply(action, body)
                async with self._changed:
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def _apply(self, action: int, body: Any) -> None:
        reply = self.mirror(action, body)
        if reply is not None:
            assert self.ws is not None
            await self.ws.send(reply)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10) -> None:
        """Wait until `predicate()` is true (checked after every frame).

        A predicate raising LookupError (control not mirrored yet) counts as
        false.
        """
        with anyio.fail_after(timeout):
            async with self._changed:
                while not _holds(predicate):
                    if self.closed.is_set():
                        raise ConnectionError("the server closed the connection")
                    await self._changed.wait()

    # --- mirror --------------------------------------------------------------

    def patch_frames(self) -> list[Frame]:
        """Frames that carried PATCH_CONTROL."""
        return [f for f in self.frames if f.action == Action.PATCH_CONTROL]

    # --- writing -------------------------------------------------------------

    async def send(self, action: int, body: Any) -> None:
        """Send one frame; ConnectionError once the server has closed the
        socket (as `wait_for` raises)."""
        assert self.ws is not None
        try:
            await self.ws.send(encode(action, body))
        except websockets.ConnectionClosed as exc:
            raise ConnectionError(f"the server closed the connection: {exc}") from exc

    async def event(self, key: str, name: str, data: Any = None) -> None:
        """Fire event `name` on the control with `key` (e.g. `click`).

        Waits (up to 10 s) for the control to be mirrored first.
        """
        await self.wait_for(lambda: self.find(key))
        control_id = self.find(key)["_i"]
        await self.send(
            Action.CONTROL_EVENT, {"target": control_id, "name": name, "data": data}
        )

    async def click(self, key: str) -> None:
        await self.event(key, "click")

    async def set_props(self, key: str, **props: Any) -> None:
        """Send a client-side property change (e.g. a TextField's value).

        Waits (up to 10 s) for the control to be mirrored first.
        """
        await self.wait_for(lambda: self.find(key))
        control = self.find(key)
        control.update(props)
        await self.send(
            Action.UPDATE_CONTROL_PROPS, {"id": control["_i"], "props": props}
        )

    async def reconnect(self, ws_url: str | None = None, **options: Any) -> FletClient:
        """The same browser coming back: a new socket presenting this client's
        session id, User-Agent and storage. Returns the new connected client."""
        again = FletClient(
            ws_url or self.ws_url,
            session_id=self.session_id,
            user_agent=self.user_agent,
            route=self.route,
            **options,
        )
        again.storage = dict(self.storage)
        return await again.connect()

    def stop_reading(self) -> None:
        """Behave like a stalled client: stop reading the socket (TCP backs up)."""
        assert self.ws is not None
        self._reading.clear()
        self.ws.transport.pause_reading()

    def resume_reading(self) -> None:
        assert self.ws is not None
        self._reading.set()
        self.ws.transport.resume_reading()

    async def close(self) -> None:
        """Close the socket cleanly."""
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await self._reader

    def abort(self) -> None:
        """Vanish abruptly: reset the TCP connection without a close frame."""
        assert self.ws is not None
        self.ws.transport.abort()


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 10, interval: float = 0.02
) -> None:
    """Poll `predicate()` (e.g. server-side state) until true, or TimeoutError."""
    with anyio.fail_after(timeout):
        while not _holds(predicate):
            await anyio.sleep(interval)


class FaultProxy:
    """A loopback TCP proxy that breaks connections the ways networks do.

    `blackhole()` makes connections silently lose everything in both
    directions while staying open (a half-open link: neither side sees a FIN);
    `half_open()` also resets the client's side (the phone notices, the server
    does not); `cut()` resets both sides. Each acts on every current
    connection, or on one client's (`blackhole(client)`). New connections are
    always forwarded, so a client "moving to another network" just connects
    again through the proxy.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: dict[int, _Link] = {}  # by the client's local port

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", 0, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")[1]
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
        except OSError:
            writer.transport.abort()
            return
        link = self._links[peer] = _Link(writer, up_writer)
        try:
            await asyncio.gather(
                link.pump(reader, up_writer), link.pump(up_reader, writer)
            )
        finally:
            if self._links.get(peer) is link:
                del self._links[peer]

    def _select(self, client: FletClient | None) -> list[_Link]:
        if client is None:
            return list(self._links.values())
        assert client.ws is not None
        port = client.ws.transport.get_extra_info("sockname")[1]
        return [self._links[port]] if port in self._links else []

    def blackhole(self, client: FletClient | None = None) -> None:
        """Connections go silent: bytes are swallowed, nothing closes."""
        for link in self._select(client):
            link.blackholed = True

    def half_open(self, client: FletClient | None = None) -> None:
        """The client side is reset (the phone notices and reconnects) while the
        server side stays open and silent (the server notices nothing)."""
        for link in self._select(client):
            link.blackholed = True
            link.writers[0].transport.abort()

    def cut(self, client: FletClient | None = None) -> None:
        """Reset connections abruptly (both sides see an error)."""
        for link in self._select(client):
            link.abort()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class _Link:
    def __init__(self, *writers: asyncio.StreamWriter) -> None:
        self.writers = writers
        self.blackholed = False

    async def pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await source.read(65536):
                if self.blackholed:
                    continue  # lost in transit
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not self.blackholed:
                self.abort()

    def abort(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


def _holds(predicate: Callable[[], Any]) -> bool:
    """A predicate that looks up a control not mirrored yet is simply false."""
    try:
        return bool(predicate())
    except LookupError:
        return False


def _index_paths(node: list[Any], prefix: list[Any], paths: dict[int, Any]) -> None:
    """Each node id of a patch's path tree -> its path (a function of its own:
    a nested one calling itself is a cycle, garbage only a collection frees)."""
    paths[node[0]] = prefix
    if len(node) > 1:
        for part, child in node[1].items():
            _index_paths(child, [*prefix, part], paths)


def apply_patch(
    root: dict[str, Any],
    patch: list[Any],
    index: Callable[[Any], None],
    unindex: Callable[[Any], None],
) -> None:
    """Apply one PATCH_CONTROL body (`[path_tree, *ops]`) to a mirrored control.

    `index` sees every value added or replaced, `unindex` every value removed
    or replaced, so a mirror's id index holds only what is on the page.
    """
    paths: dict[int, list[Any]] = {}
    _index_paths(patch[0], [], paths)

    def target(node: int) -> Any:
        obj: Any = root
        for part in paths[node]:
            obj = obj[part]
        return obj

    for op in patch[1:]:
        kind, node, key = op[0], op[1], op[2]
        obj = target(node)
        if kind == REPLACE:
            if isinstance(obj, list) or key in obj:
                unindex(obj[key])
            obj[key] = op[3]
            index(op[3])
        elif kind == ADD:
            if isinstance(obj, list):
                obj.insert(key, op[3])
            else:
                obj[key] = op[3]
            index(op[3])
        elif kind == REMOVE:
            unindex(obj[key])
            del obj[key]
        elif kind == MOVE:
            value = obj.pop(key)
            destination = target(op[3])
            destination.insert(op[4], value)
