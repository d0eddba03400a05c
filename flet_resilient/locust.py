"""Drive a Flet app with Locust: `FletUser` speaks Flet's real WebSocket protocol.

    from locust import constant, task
    from flet_resilient.locust import FletUser

    class Visitor(FletUser):
        wait_time = constant(1)

        @task
        def plus_one(self) -> None:
            self.click("plus")

    locust -f locustfile.py --host http://127.0.0.1:8550

Locust runs its users on gevent, so each `FletUser` holds a `websockets`
sync-client connection (the library `FletClient` uses, cooperative under
Locust's monkey-patching, negotiating permessage-deflate as browsers do) and a
reader greenlet that keeps `mirror` (a `flet_resilient.testing.Mirror`, the
same page mirror as the asyncio `FletClient`) up to date. Clicks and
reconnects are reported to Locust as requests, so its statistics, charts, web
UI and distributed workers see click->patch latency. Needs the `locust` extra.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import gevent
from gevent.event import Event
from locust import User
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from flet_resilient.testing import Action, Mirror, _holds, decode, encode

__all__ = ["FletUser", "SessionCrashed", "SessionLost", "ws_url"]

# Importing Flet costs seconds of CPU, and gevent's loop caches its clock: a
# `--run-time` timer Locust sets right after loading the locustfile would fire
# that many seconds early (a 3 s run lasting 0.1 s). Bring the clock up to date.
gevent.get_hub().loop.update_now()


class SessionLost(Exception):
    """A reconnect got a new session: the server no longer had the old one."""


class SessionCrashed(Exception):
    """The app's code raised (Flet sent SESSION_CRASHED with its message)."""


def ws_url(host: str) -> str:
    """Flet's WebSocket endpoint for an app URL: http(s)://h/p -> ws(s)://h/p/ws."""
    parts = urlsplit(host)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


# What a timed action fails with (Locust counts them as the request's failure).
FAILURES = (TimeoutError, ConnectionError, LookupError, SessionLost, SessionCrashed)


class FletUser(User):
    """A Locust user that opens the app like a browser tab and clicks by key.

    `on_start` connects and registers (reported as request type "connect");
    `click(key)` and `event(key, name)` report click->patch time; `reconnect()`
    comes back with the same session id (a failure if the session was lost).
    `mirror` is the page as this user sees it; `value(key)` reads a control's
    property once it is mirrored.
    Subclasses add Locust tasks and a `wait_time`; `host` is the app's URL.
    """

    abstract = True
    route: ClassVar[str] = "/"
    # A key on the built page: connect and reconnect then wait (and are timed)
    # until it is mirrored, not only until the register response.
    ready_key: ClassVar[str | None] = None
    timeout: ClassVar[float] = 10.0  # seconds for a page, or a click's patch
    user_agent: ClassVar[str] = "flet-resilient-locust"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.mirror = Mirror(route=self.route)
        self.patches = 0  # PATCH_CONTROL frames received on this page so far
        self.received = 0  # bytes of frames received so far
        self._ws: ClientConnection | None = None
        self._reader: gevent.Greenlet | None = None
        self._frame = Event()  # set (and replaced) on every frame received
        self._ended = "not connected"  # why the reader stopped, once it has
        self._in_event = False  # an event awaits its answer: a crash fails it

    # --- Locust hooks ------------------------------------------------------------

    def on_start(self) -> None:
        """Open the page, reported as request type "connect"."""
        self._timed("connect", self.route, self._open)

    def on_stop(self) -> None:
        """Close the tab (a close frame), as the run stops this user."""
        self._close()

    # --- actions -------------------------------------------------------------------

    def event(
        self,
        key: str,
        name: str,
        data: Any = None,
        until: Callable[[], Any] | None = None,
    ) -> bool:
        """Fire `name` on the control with `key`; report the time to its answer.

        The answer is the next patch, or with `until` the moment `until()` holds
        on the mirror (e.g. `lambda: self.mirror.value("count") == "3"`, exact
        on a page that also receives unrelated patches). Reported as request
        type `name`, named `key`; a failure if the control is not on the page,
        the handler raised (`SessionCrashed`) or no answer comes within
        `timeout`. True on success.
        """
        return self._timed(name, key, lambda: self._send_event(key, name, data, until))

    def click(self, key: str, until: Callable[[], Any] | None = None) -> bool:
        """Click the control with `key` (see `event`)."""
        return self.event(key, "click", until=until)

    def reconnect(self) -> bool:
        """Close the socket and come back with the same session id (a reload, a
        phone back on the network); reports the time until the page is back
        (type "reconnect"), a failure if the server started a new session."""
        self._close()
        return self._timed("reconnect", self.route, self._reopen)

    def value(self, key: str, prop: str = "value") -> Any:
        """A property of the control with `key`, once it is mirrored (the page's
        controls arrive in patches after the register response)."""
        self.wait_for(lambda: self.mirror.find(key), self.timeout)
        return self.mirror.value(key, prop)

    def wait_for(self, predicate: Callable[[], Any], timeout: float) -> None:
        """Wait until `predicate()` is true, checked after every frame.

        A predicate raising LookupError counts as false; TimeoutError after
        `timeout` s, ConnectionError if the server closes the socket first.
        """
        deadline = time.monotonic() + timeout
        while not _holds(predicate):
            if self._reader is None or self._reader.dead:
                raise ConnectionError(self._ended)
            left = deadline - time.monotonic()
            if left <= 0 or not self._frame.wait(left):
                raise TimeoutError(f"not within {timeout:g} s")

    # --- the connection --------------------------------------------------------------

    def _open(self) -> int:
        """Connect, register, wait for the page; the bytes it took."""
        assert self.host, "FletUser needs the app's URL: --host or `host = ...`"
        self.mirror.page = {}
        # `__enter__` gives the connection on every websockets version (>= 17
        # warns when `connect()`'s result is used directly); `close()` ends it.
        ws = connect(
            ws_url(self.host),
            open_timeout=self.timeout,
            close_timeout=1,
            user_agent_header=self.user_agent,
            max_size=None,
            ping_interval=None,  # as FletClient: Flet's client does not ping
        ).__enter__()
        self._ws, self._ended = ws, "the server closed the connection"
        self._reader = gevent.spawn(self._read, ws)
        ws.send(self.mirror.register_frame())
        before = self.received
        self.wait_for(self._ready, self.timeout)
        return self.received - before

    def _ready(self) -> bool:
        """The page came (and, with `ready_key`, has that control)."""
        key = self.ready_key
        return bool(self.mirror.page) and (key is None or bool(self.mirror.find(key)))

    def _reopen(self) -> int:
        old = self.mirror.session_id
        size = self._open()
        if self.mirror.session_id != old:
            raise SessionLost(f"session {old} is gone: the server started a new one")
        return size

    def _read(self, ws: ClientConnection) -> None:
        """Mirror every frame; answer the server's method calls. A frame the
        mirror cannot apply ends the connection, its error kept in `_ended`."""
        try:
            for raw in ws:  # until the connection closes
                if isinstance(raw, bytes) and raw[:1] == b"\x00":
                    self._receive(ws, raw)
        except (WebSocketException, OSError):
            return
        except Exception as exc:
            self._ended = f"a frame the mirror could not apply: {exc!r}"
            ws.close()
        finally:
            self._wake()

    def _receive(self, ws: ClientConnection, raw: bytes) -> None:
        """Apply one protocol frame; a session crash is reported as a failure."""
        action, body = decode(raw)
        self.received += len(raw)
        self.patches += action == Action.PATCH_CONTROL
        reply = self.mirror.mirror(action, body)
        if reply is not None:
            ws.send(reply)
        if action == Action.SESSION_CRASHED and not self._in_event:
            self._report("session", "crashed", 0.0, len(raw), self._crash())
        self._wake()

    def _wake(self) -> None:
        frame, self._frame = self._frame, Event()
        frame.set()

    def _close(self) -> None:
        """Close the connection (the closing handshake, at most 1 s); the
        reader ends with it."""
        ws, reader = self._ws, self._reader
        self._ws = None
        if ws is None:
            return
        ws.close()
        if reader is not None:
            reader.join(timeout=self.timeout)

    def _send_event(
        self, key: str, name: str, data: Any, until: Callable[[], Any] | None
    ) -> int:
        """Send the event once `key` is mirrored; wait for its answer; its bytes."""
        self.wait_for(lambda: self.mirror.find(key), self.timeout)
        target = self.mirror.find(key)["_i"]
        if self._ws is None:
            raise ConnectionError(self._ended)
        patches, received = self.patches, self.received
        crashes = len(self.mirror.errors)
        self._ws.send(
            encode(Action.CONTROL_EVENT, {"target": target, "name": name, "data": data})
        )
        answered = until or (lambda: self.patches > patches)
        self._in_event = True
        try:
            self.wait_for(
                lambda: len(self.mirror.errors) > crashes or answered(), self.timeout
            )
        finally:
            self._in_event = False
        if len(self.mirror.errors) > crashes:
            raise self._crash()
        return self.received - received

    def _crash(self) -> SessionCrashed:
        """The last crash report's first line (the exception; no traceback)."""
        return SessionCrashed(self.mirror.errors[-1].partition("\n")[0])

    def _timed(self, kind: str, name: str, action: Callable[[], int]) -> bool:
        """Run `action` (returning bytes received) and report it to Locust."""
        started = time.perf_counter()
        size, error = 0, None
        try:
            size = action()
        except FAILURES as exc:
            error = exc
        except (WebSocketException, OSError) as exc:
            error = ConnectionError(f"{type(exc).__name__}: {exc}")
        self._report(kind, name, (time.perf_counter() - started) * 1000, size, error)
        return error is None

    def _report(
        self, kind: str, name: str, ms: float, size: int, error: Exception | None
    ) -> None:
        """One Locust request event (what its statistics and UI count)."""
        self.environment.events.request.fire(
            request_type=kind,
            name=name,
            response_time=ms,
            response_length=size,
            exception=error,
            context={},
        )
