"""The only module that touches Flet internals (flet / flet-web 1.0.x, web mode).

Everything else in flet-resilient goes through the small functions here, so a
Flet upgrade is checked against one file. Importing it verifies the installed
Flet version; `install()` (called by the decorators, `serve()` and the test
server, never by an import) checks that every method it wraps exists
(`PATCHED`), then wraps them once (see docs/compatibility.md):

* every ended WebSocket ends or disconnects its session (Flet skips
  `disconnect_session` when `send_bytes` raises, leaking "connected" sessions),
  a client that never registers does not leave a send loop behind, and a
  closed session is freed by reference counting (no Session <-> FletApp cycle);
* the per-socket send queue is thread-safe (a worker thread's `update()` wakes
  the loop at once instead of waiting ~100 ms) and measures its backlog;
* hooks the mitigations plug into: a patch sink per session (coalescing; it
  takes plain `update()` patches and declarative components' re-renders), an
  outbox per session (replay buffer), session lifecycle events, and the
  REGISTER_CLIENT vetting that keeps sessions to their app and takes a session
  over from a stale socket;
* inbound screening: one session per socket, frames and messages Flet cannot
  take are dropped and counted instead of ending the socket, and an
  `InboundGuard` (see `limits`) bounds frame size, event rate and new sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import logging
import secrets
import sys
import threading
import traceback
import weakref
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any, Literal, Protocol, TypeGuard

import msgpack
from fastapi import WebSocketDisconnect
from flet.components.component import Component
from flet.controls.base_control import BaseControl
from flet.controls.context import _context_page, context
from flet.controls.control_event import Event
from flet.controls.page import Page
from flet.messaging.protocol import (
    Message,
    MessageAction,
    configure_encode_object_for_msgpack,
)
from flet.messaging.session import Session
from flet_web.fastapi.flet_app import FletApp, app_manager
from flet_web.fastapi.flet_app_manager import FletAppManager
from flet_web.fastapi.flet_fastapi import FastAPI as FletFastAPI

from flet_resilient.background import spawn
from flet_resilient.metrics import count, register_section
from flet_resilient.switch import disabled
from flet_resilient.watchdog import watch_loop

__all__ = [
    "POLICY_ATTRIBUTE",
    "SUPPORTED_FLET",
    "Admission",
    "HandlerRun",
    "InboundGuard",
    "Outbox",
    "PatchSink",
    "SendQueue",
    "UnsupportedFletVersion",
    "came_from_elsewhere",
    "cannot_route",
    "close_session",
    "close_sockets",
    "control_count",
    "control_page",
    "current_handler",
    "current_page",
    "dismantle",
    "end_session",
    "fail_invoke",
    "hold",
    "install",
    "installed",
    "invoke_call",
    "invoke_pending",
    "is_component",
    "is_connected",
    "is_flet_event",
    "is_one_shot",
    "message_size",
    "on_session",
    "on_shutdown",
    "patch_now",
    "release",
    "resend",
    "send_queue",
    "session_main",
    "session_tag",
    "sessions",
    "set_inbound_guard",
    "set_outbox",
    "set_patch_sink",
]

logger = logging.getLogger("flet_resilient")

SUPPORTED_FLET = ("1.0.",)
"""Flet release series this adapter was tested against (1.0.5)."""


class UnsupportedFletVersion(ImportError):
    """Raised at import when the installed Flet is not a tested release."""


def _check_version() -> str:
    installed = version("flet")
    if not installed.startswith(SUPPORTED_FLET):
        raise UnsupportedFletVersion(
            f"flet-resilient supports flet {', '.join(v + 'x' for v in SUPPORTED_FLET)}"
            f" but flet {installed} is installed; pin 'flet>=1.0,<1.1'."
        )
    return installed


FLET_VERSION = _check_version()

# --- outbound queue ---------------------------------------------------------


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


class _SendQueueSlot:
    """Descriptor replacing FletApp's private send-queue attribute.

    Flet assigns a fresh `asyncio.Queue` in `handle()`; we store a
    `SendQueue` instead (Flet's queue is still empty at that point).
    """

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        if "_flet_resilient_queue" in obj.__dict__:
            return obj.__dict__["_flet_resilient_queue"]
        return obj.__dict__.get("_FletApp__send_queue")  # began before install

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["_flet_resilient_queue"] = (
            SendQueue() if isinstance(value, asyncio.Queue) else value
        )


# --- session lifecycle --------------------------------------------------------

SessionEvent = Literal[
    "created", "activity", "handled", "attached", "disconnected", "closed"
]
_hooks: dict[str, list[Callable[[Session], None]]] = {
    "created": [],
    "activity": [],
    "handled": [],
    "attached": [],
    "disconnected": [],
    "closed": [],
}


def on_session(event: SessionEvent, hook: Callable[[Session], None]) -> None:
    """Call `hook(session)` (on the loop) when Flet has made it for a client
    ("created", before its `main` runs, even if it never does), when its
    client sends an event or a property change ("activity"), when the handler
    of a client event has ended ("handled"), when it is re-attached to a
    socket, loses its socket, or is closed by Flet (expiry or eviction)."""
    if hook not in _hooks[event]:
        _hooks[event].append(hook)


def _run_hooks(event: SessionEvent, session: Session) -> None:
    for hook in list(_hooks[event]):
        try:
            hook(session)
        except Exception:
            logger.exception("session %s hook %r failed", event, hook)


def _session_key(app: FletApp) -> str | None:
    session = app._FletApp__session
    if session is None:
        return None
    return app._FletApp__get_unique_session_id(session.id)


_live_apps: weakref.WeakSet[FletApp] = weakref.WeakSet()


class HandlerRun:
    """One client event being handled (its task and the tasks it starts)."""

    __slots__ = ("active", "answered")

    def __init__(self) -> None:
        self.active = True
        self.answered = False  # a mitigation already sent its first response


_handler_run: contextvars.ContextVar[HandlerRun | None] = contextvars.ContextVar(
    "flet_resilient_handler_run", default=None
)


_from_client: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "flet_resilient_from_client", default=False
)
"""Set while Flet handles a client's CONTROL_EVENT (and so in the handler task
it starts), unlike the connect/disconnect/close events Flet dispatches."""


def current_handler() -> HandlerRun | None:
    """The client event whose handler is running now, if any."""
    run = _handler_run.get()
    return run if run is not None and run.active else None


_transport_log = logging.getLogger("flet_transport")


class _QuietMessage(Message):
    """A message with a short repr. flet-web formats every outgoing message
    for a debug line even when that log is off: for a 1000-control page a
    1 MB repr, about 38 ms of the loop per page build."""

    def __repr__(self) -> str:
        return f"Message({self.action!r}, ...)"


class PatchSink(Protocol):
    """Takes over a session's `update()` patches (see `coalesce`)."""

    def defer(self, control: BaseControl) -> None:
        """Remember that `control` changed; send its patch later."""

    def flush(self) -> None:
        """Send every pending patch now."""

    def merge(self, control: BaseControl) -> bool:
        """True if `control`'s patch is already pending here (nothing to do)."""

    def bypassed(self, shape: str) -> None:
        """A `patch_control` call of `shape` could not be deferred: sent at once."""


_sinks: weakref.WeakKeyDictionary[Session, PatchSink] = weakref.WeakKeyDictionary()
_held: dict[int, PatchSink] = {}
"""id(control) -> the sink holding its patch: a repeated `update()` of a
control that is still pending skips Flet's page lookups (most of its cost)."""


def hold(control: BaseControl, sink: PatchSink) -> None:
    """`sink` holds `control`'s patch until it calls `release`."""
    _held[id(control)] = sink


def release(control: BaseControl) -> None:
    """`control`'s patch is no longer held (sent or dropped)."""
    _held.pop(id(control), None)


def set_patch_sink(session: Session, sink: PatchSink | None) -> None:
    """Route the session's plain `update()` patches and its components'
    re-renders to `sink` (None: directly)."""
    if sink is None:
        _sinks.pop(session, None)
    else:
        _sinks[session] = sink


_sending: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "flet_resilient_sending", default=False
)
"""Set while a sink's pending patch is diffed and sent (see `patch_now`)."""

_PATCH_PARAMETERS = ("prev_control", "parent", "path", "frozen")
"""`Session.patch_control`'s parameters after `control`, in order."""


def _patch_arguments(args: tuple[Any, ...], kw: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a `patch_control` call after `control`, by name."""
    return dict(zip(_PATCH_PARAMETERS, args, strict=False)) | kw


def _plain_patch(
    control: BaseControl, args: tuple[Any, ...], kw: dict[str, Any]
) -> bool:
    """Whether a `patch_control` call means just `patch_control(control)`."""
    if not args and not kw:
        return True  # the hot path: every plain `update()`
    given = _patch_arguments(args, kw)
    prev = given.get("prev_control")
    return (
        given.keys() <= set(_PATCH_PARAMETERS)
        and (prev is None or prev is control)
        and given.get("parent") is None
        and not given.get("path")
        and not given.get("frozen")
    )


def _patch_shape(args: tuple[Any, ...], kw: dict[str, Any]) -> str:
    """A call's shape for a warning, e.g. `patch_control(control, parent=Column)`."""
    given = _patch_arguments(args, kw)
    shown = "".join(f", {name}={type(v).__name__}" for name, v in given.items())
    return f"patch_control(control{shown})"


_ORDERED_ACTIONS = (MessageAction.INVOKE_METHOD, MessageAction.SESSION_CRASHED)
_CLIENT_ACTIVITY = (
    MessageAction.CONTROL_EVENT.value,
    MessageAction.UPDATE_CONTROL_PROPS.value,
)


class Outbox(Protocol):
    """Sees every message a session sends (see `reconnect`)."""

    def capture(self, message: Any) -> bool:
        """Look at an outgoing message; True means it was kept, not sent."""

    def answered(self, call_id: str) -> None:
        """The client answered the `invoke_method` call `call_id`."""


_outboxes: weakref.WeakKeyDictionary[Session, Outbox] = weakref.WeakKeyDictionary()


def set_outbox(session: Session, outbox: Outbox | None) -> None:
    """Show the session's outgoing messages to `outbox` (None: stop)."""
    if outbox is None:
        _outboxes.pop(session, None)
    else:
        _outboxes[session] = outbox


class ReconnectPolicy(Protocol):
    """Server-level reconnect options an app's `main` carries (see `reconnect`)."""

    bind_ip: bool


POLICY_ATTRIBUTE = "__flet_resilient_reconnect__"


def _policy(app: FletApp) -> ReconnectPolicy | None:
    main = app._FletApp__main
    return getattr(main, POLICY_ATTRIBUTE, None)


_session_mains: weakref.WeakKeyDictionary[Session, Any] = weakref.WeakKeyDictionary()
_from_elsewhere: weakref.WeakSet[Any] = weakref.WeakSet()
"""Sockets, then sessions, that presented a session id this process lacks."""


def came_from_elsewhere(session: Session) -> bool:
    """Whether the session began as a reconnect of a session this process
    never had (e.g. one held by another worker, or by a restarted one)."""
    return session in _from_elsewhere


async def _vet_register(app: FletApp, body: dict[str, Any]) -> None:
    """Check a REGISTER_CLIENT that names an existing session.

    A session belongs to the app (`main`) that created it: any other app
    presenting its id gets a fresh session instead. With `buffer_reconnects`,
    the owning app takes a session over from a stale, still-attached socket,
    which Flet would otherwise answer with a brand-new session.
    """
    key = app._FletApp__get_unique_session_id(body["session_id"])
    candidate = await app_manager.get_session(key)
    if candidate is None:
        count("reconnect.unknown_sessions")  # another worker's, or expired
        _from_elsewhere.add(app)
        return
    main = app._FletApp__main
    if _session_mains.get(candidate, main) is not main:
        _refuse_session(candidate, body, "another app")
        return
    bound = _bindings.get(candidate)
    if bound is not None and bound != browser_binding(app):
        _refuse_session(candidate, body, "a browser without its binding cookie")
        return
    stale = candidate.connection
    if stale is None or stale is app or _policy(app) is None:
        return
    count("reconnect.takeovers")
    logger.info("session %s taken over from a stale socket", session_tag(candidate))
    websocket = stale._FletApp__websocket
    await app_manager.disconnect_session(
        key,
        stale._FletApp__session_timeout_seconds,
    )
    if websocket is not None:
        spawn(websocket.close(), quiet=True)


def _refuse_session(candidate: Session, body: dict[str, Any], to: str) -> None:
    """Answer a REGISTER_CLIENT naming `candidate` with a fresh session."""
    count("reconnect.takeovers_refused")
    logger.warning("refused session %s to %s", session_tag(candidate), to)
    body["session_id"] = None


BINDING_COOKIE = "flet_resilient_bind"
"""An HttpOnly cookie set on the page load: a session goes back only to the
browser that created it, so its id alone (a leaked log line) is not enough."""
_bindings: weakref.WeakKeyDictionary[Session, str] = weakref.WeakKeyDictionary()


def browser_binding(app: FletApp) -> str | None:
    """The binding cookie the app's socket handshake carried, if any."""
    websocket = _private(app, "_FletApp__websocket")
    cookies = getattr(websocket, "cookies", None) or {}
    value = cookies.get(BINDING_COOKIE)
    return value if isinstance(value, str) and value else None


class _BindingCookie:
    """ASGI middleware: give every browser that lacks one a binding cookie."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or _carries_binding(scope):
            await self.app(scope, receive, send)
            return
        cookie = f"{BINDING_COOKIE}={secrets.token_urlsafe(24)}; Path=/; HttpOnly"
        cookie += "; SameSite=Strict"
        if scope.get("scheme") == "https":
            cookie += "; Secure"

        async def send_with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                extra = (b"set-cookie", cookie.encode())
                message = {**message, "headers": [*message.get("headers", []), extra]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _carries_binding(scope: Any) -> bool:
    marker = f"{BINDING_COOKIE}=".encode()
    return any(k == b"cookie" and marker in v for k, v in scope.get("headers", []))


def _note_registered(app: FletApp) -> None:
    """After Flet handled a REGISTER_CLIENT (even one that failed halfway):
    remember the session's app and announce a session Flet just made."""
    session = app._FletApp__session
    if session is None:
        return
    if session not in _session_mains:
        _session_mains[session] = app._FletApp__main
        binding = browser_binding(app)
        if binding is not None:
            _bindings[session] = binding
        _run_hooks("created", session)
    if app in _from_elsewhere:
        _from_elsewhere.discard(app)
        _from_elsewhere.add(session)


def session_main(session: Session) -> Any:
    """The app `main` the session was created for (None if not known)."""
    return _session_mains.get(session)


# --- inbound screening --------------------------------------------------------

Admission = Literal["run", "drop", "close"]


class InboundGuard(Protocol):
    """Limits on what clients send; the adapter enforces them (see `limits`)."""

    def max_frame_bytes(self) -> int | None:
        """Largest frame a client may send; a larger one closes its socket."""

    def admit_event(self, session: Session) -> Admission:
        """Run, drop, or close the socket over, one more client event."""

    def admit_session(self, client_ip: str) -> bool:
        """Whether a client at `client_ip` may start one more session now."""

    def read_pause(self, socket: object) -> float:
        """Seconds to wait before reading the socket's next frame (pacing)."""

    def admit_search(self, session: Session) -> bool:
        """Whether one more event for a control the session does not index may
        make Flet search the whole tree for it (costly: bounded)."""

    def refused(
        self,
        client_ip: str,
        session: Session | None,
        kind: str,
        what: str,
        exc: BaseException | None,
    ) -> None:
        """Report client input refused as `kind` (already counted)."""


_guard: InboundGuard | None = None
_registered: weakref.WeakSet[FletApp] = weakref.WeakSet()
"""Sockets that sent their REGISTER_CLIENT: a second one is refused."""

_CLIENT_ACTIONS = frozenset(
    action.value
    for action in (
        MessageAction.REGISTER_CLIENT,
        MessageAction.CONTROL_EVENT,
        MessageAction.UPDATE_CONTROL_PROPS,
        MessageAction.INVOKE_METHOD,
    )
)


def set_inbound_guard(guard: InboundGuard | None) -> None:
    """Enforce `guard`'s limits on every client socket (None: no limits)."""
    global _guard
    _guard = guard


def _refuse(
    app: FletApp, kind: str, what: str, exc: BaseException | None = None
) -> None:
    """Count refused client input as `transport.<kind>` and report it."""
    count(f"transport.{kind}")
    if _guard is not None:
        ip = _private(app, "_FletApp__client_ip")
        _guard.refused(ip, app._FletApp__session, kind, what, exc)


async def _close_socket(app: FletApp, code: int, reason: str) -> None:
    """Close the app's client socket (its receive loop then ends quietly)."""
    websocket = app._FletApp__websocket
    if websocket is not None:
        with contextlib.suppress(Exception):
            await websocket.close(code=code, reason=reason)


class _Undecodable:
    """What flet-web's receive loop gets for a frame msgpack cannot decode."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class _TolerantMsgpack:
    """msgpack as flet-web's module sees it: a frame that does not decode
    becomes an `_Undecodable` the message screen drops, instead of an
    exception that ends the socket's receive loop with a traceback."""

    def __getattr__(self, name: str) -> Any:
        return getattr(msgpack, name)

    @staticmethod
    def unpackb(data: bytes, **options: Any) -> Any:
        """msgpack.unpackb, or an `_Undecodable` instead of raising."""
        try:
            return msgpack.unpackb(data, **options)
        except Exception as exc:
            return _Undecodable(exc)


class _QuietBody(dict[str, Any]):
    """A client message body with a short repr: flet-web formats every
    incoming message for a debug line even when that log is off (a 10 MB
    frame of small ints: over a second of the loop and 100+ MB)."""

    def __repr__(self) -> str:
        return f"{{... {len(self)} keys}}"


def _quiet(data: list[Any]) -> list[Any]:
    """The message with a short-repr body, unless flet-web's debug log is on."""
    if _transport_log.isEnabledFor(logging.DEBUG):
        return data
    return [data[0], _QuietBody(data[1])]


def _malformed(data: Any) -> str | None:
    """Why `data` is not a client message Flet can take (None: it is one)."""
    if isinstance(data, _Undecodable):
        return f"a frame that is not msgpack ({data.error!r:.100})"
    if not (isinstance(data, list) and len(data) == 2 and isinstance(data[1], dict)):
        return "a frame that is not [action, {body}]"
    if not isinstance(data[0], int) or data[0] not in _CLIENT_ACTIONS:
        return "a message with an action clients do not send"
    if data[0] == MessageAction.REGISTER_CLIENT.value and not isinstance(
        data[1].get("session_id"), (str, type(None))
    ):
        return "a REGISTER_CLIENT whose session_id is not a string"
    return None


async def _admit_session(app: FletApp, body: dict[str, Any]) -> bool:
    """Vet a REGISTER_CLIENT; if it makes a new session, ask the guard."""
    if body.get("session_id"):
        await _vet_register(app, body)
    session_id = body.get("session_id")
    if session_id:
        candidate = await app_manager.get_session(
            app._FletApp__get_unique_session_id(session_id)
        )
        if candidate is not None and candidate.connection is None:
            return True  # Flet re-attaches it: not a new session
    if _guard is None or _guard.admit_session(app._FletApp__client_ip):
        return True
    _refuse(app, "sessions_refused", "a new session over the per-address limit")
    await _close_socket(app, 1013, "too many new sessions")
    return False


async def _admit_event(app: FletApp, session: Session) -> bool:
    """Whether the guard lets one more client event of `session` run."""
    verdict = _guard.admit_event(session) if _guard is not None else "run"
    if verdict == "run":
        return True
    if verdict == "drop":
        _refuse(app, "events_dropped", "client events over the rate limit")
        return False
    _refuse(app, "flood_closed", "client events over the rate limit: socket closed")
    await _close_socket(app, 1008, "too many events")
    return False


async def _admitted(app: FletApp, action: int, body: dict[str, Any]) -> bool:
    """One session per socket, none before REGISTER_CLIENT, the guard's limits."""
    if action == MessageAction.REGISTER_CLIENT.value:
        if app in _registered:
            _refuse(app, "reregister_refused", "a second REGISTER_CLIENT on a socket")
            return False
        _registered.add(app)
        return await _admit_session(app, body)
    session = app._FletApp__session
    if session is None:
        _refuse(app, "malformed", "a message before REGISTER_CLIENT")
        return False
    if action == MessageAction.CONTROL_EVENT.value:
        if not await _admit_event(app, session):
            return False
        return _known_target(app, session, body)
    return True


def _known_target(app: FletApp, session: Session, body: dict[str, Any]) -> bool:
    """An event for a control Flet does not index makes it walk every field of
    the page's tree (tens of ms for a few hundred controls): a few a second."""
    target = body.get("target")
    if not isinstance(target, int) or target in session.index:
        return True  # (an ill-formed body is Flet's to refuse: malformed)
    if target == session.page._i:
        return True
    if _guard is None or _guard.admit_search(session):
        return True
    _refuse(app, "events_unknown", "events for controls the page does not have")
    return False


def _screened(
    on_message: Callable[[FletApp, Any], Awaitable[None]],
) -> Callable[[FletApp, Any], Awaitable[None]]:
    """Flet's message handler behind the inbound screen: what it cannot take
    or the limits refuse is dropped and counted, and its own failure on a
    message no longer ends the socket (except a failed REGISTER_CLIENT's)."""

    @functools.wraps(on_message)
    async def screened(self: FletApp, data: Any) -> None:
        """Drop what is malformed or refused; hand the rest to Flet, quietly."""
        reason = _malformed(data)
        if reason is not None:
            _refuse(self, "malformed", reason)
            return
        if not await _admitted(self, data[0], data[1]):
            return
        try:
            await on_message(self, _quiet(data))
        except Exception as exc:
            _refuse(self, "malformed", f"a message Flet failed on: {exc!r:.200}", exc)
            if data[0] == MessageAction.REGISTER_CLIENT.value:
                await _close_socket(self, 1002, "register failed")

    return screened


class _GuardedSocket:
    """A client's WebSocket as Flet sees it: a frame over the guard's size
    limit closes it (1009) before Flet decodes it, a text frame (which Flet
    cannot read) arrives empty (which Flet skips), and once closed it reads
    as disconnected (not as an error Flet would log with a traceback)."""

    def __init__(self, websocket: Any, app: FletApp) -> None:
        self._websocket = websocket
        self._app = weakref.ref(app)
        self._closed: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._websocket, name)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close once; later reads raise WebSocketDisconnect with this code."""
        if self._closed is None:
            self._closed = code
            await self._websocket.close(code=code, reason=reason)

    async def receive_bytes(self) -> bytes:
        """The next binary frame, after the closed, text-frame and size checks."""
        if self._closed is not None:
            raise WebSocketDisconnect(self._closed)
        pause = _guard.read_pause(self) if _guard is not None else 0.0
        if pause:
            await asyncio.sleep(pause)  # a flood: TCP now pushes back on it
        try:
            data = await self._websocket.receive_bytes()
        except KeyError:  # a text frame: its ASGI message has no "bytes"
            data = None
        app = self._app()
        if app is None:
            return data or b""
        if not isinstance(data, bytes):
            _refuse(app, "malformed", "a text frame")
            return b""
        limit = _guard.max_frame_bytes() if _guard is not None else None
        if limit is not None and len(data) > limit:
            _refuse(app, "oversize", f"a {len(data):,}-byte frame (limit {limit:,})")
            await self.close(1009, "message too big")
            raise WebSocketDisconnect(1009, "message too big")
        return data


def _tolerate_undecodable() -> None:
    """Make flet-web's receive loop hand undecodable frames to the screen."""
    module = sys.modules[FletApp.__module__]
    if getattr(module, "msgpack", None) is not msgpack:
        raise RuntimeError(
            f"{module.__name__} no longer decodes frames with its module-level "
            "`msgpack` (flet-resilient's inbound screen needs it): unsupported "
            f"flet-web {FLET_VERSION}"
        )
    module.msgpack = _TolerantMsgpack()  # type: ignore[attr-defined]


PATCHED: tuple[tuple[type, str], ...] = (
    (FletApp, "handle"),
    (FletApp, "send_message"),
    (FletApp, "_FletApp__send_loop"),
    (FletApp, "_FletApp__receive_loop"),
    (FletApp, "_FletApp__on_message"),
    (FletApp, "_FletApp__get_unique_session_id"),
    (FletAppManager, "shutdown"),
    (FletFastAPI, "__init__"),
    (Session, "close"),
    (Session, "attach_connection"),
    (Session, "disconnect"),
    (Session, "dispatch_event"),
    (Session, "patch_control"),
    (Session, "schedule_update"),
    (Session, "handle_invoke_method_results"),
    (Session, "_Session__send_message"),
    (BaseControl, "page"),
    (BaseControl, "update"),
)
"""The Flet methods the seam wraps (tests/test_flet_contract.py checks their
signatures); with the instance attributes read through `_private`, this is
the written list of what flet-resilient depends on."""


def _missing(owner: type, name: str) -> UnsupportedFletVersion:
    """The error for a Flet internal the seam needs and this Flet lacks."""
    return UnsupportedFletVersion(
        f"flet {FLET_VERSION}: {owner.__qualname__}.{name} is missing; "
        f"flet-resilient was tested with flet {SUPPORTED_FLET[0]}x"
    )


def _check_flet() -> None:
    """Refuse to install, naming it, if a Flet method the seam wraps is gone."""
    for owner, name in PATCHED:
        if name not in vars(owner):
            raise _missing(owner, name)


def _private(obj: object, name: str) -> Any:
    """A Flet private attribute, or a clear error naming it (never a default)."""
    try:
        return getattr(obj, name)
    except AttributeError:
        raise _missing(type(obj), name) from None


def _install() -> None:
    if installed():
        return
    _check_flet()
    FletApp._flet_resilient_installed = True
    FletApp._FletApp__send_queue = _SendQueueSlot()
    _tolerate_undecodable()

    original_handle = FletApp.handle
    original_send_loop = FletApp._FletApp__send_loop
    original_receive_loop = FletApp._FletApp__receive_loop
    original_close = Session.close
    original_attach = Session.attach_connection
    original_disconnect = Session.disconnect
    original_session_send = Session._Session__send_message  # type: ignore[attr-defined]
    original_invoke_results = Session.handle_invoke_method_results
    original_dispatch_event = Session.dispatch_event
    original_on_message = FletApp._FletApp__on_message
    original_unique_id = FletApp._FletApp__get_unique_session_id
    original_patch_control = Session.patch_control
    original_schedule_update = Session.schedule_update
    original_send_message = FletApp.send_message
    original_page = BaseControl.page.fget  # type: ignore[attr-defined]
    original_update = BaseControl.update
    original_shutdown = FletAppManager.shutdown
    original_fastapi_init = FletFastAPI.__init__

    @functools.wraps(original_fastapi_init)
    def fastapi_init(self: FletFastAPI, *args: Any, **kwargs: Any) -> None:
        original_fastapi_init(self, *args, **kwargs)
        self.add_middleware(_BindingCookie)

    @functools.wraps(original_shutdown)
    async def shutdown(self: FletAppManager) -> None:
        for hook in list(_shutdown_hooks):
            try:
                await hook()
            except Exception:
                logger.exception("shutdown hook %r failed", hook)
        await original_shutdown(self)

    @functools.wraps(original_handle)
    async def handle(self: FletApp, websocket: Any) -> None:
        watch_loop()
        _live_apps.add(self)
        try:
            await original_handle(self, _GuardedSocket(websocket, self))
        except Exception as exc:  # the send loop died on a vanished client
            logger.debug("Flet socket ended with %r", exc)
        finally:
            _live_apps.discard(self)
            session = self._FletApp__session
            if session is not None and session.connection is self:
                await app_manager.disconnect_session(
                    _session_key(self),
                    self._FletApp__session_timeout_seconds,
                )

    @functools.wraps(original_send_loop)
    async def send_loop(self: FletApp) -> None:
        websocket = self._FletApp__websocket
        try:
            await original_send_loop(self)
        except Exception:
            # The client is gone: close the socket so the receive loop ends too.
            with contextlib.suppress(Exception):
                await websocket.close()
            raise

    @functools.wraps(original_receive_loop)
    async def receive_loop(self: FletApp) -> None:
        await original_receive_loop(self)
        queue = self._FletApp__send_queue
        if self._FletApp__session is None and queue is not None:
            queue.put_nowait(None)  # never registered: stop the send loop

    @functools.wraps(original_close)
    def close(self: Session) -> None:
        original_close(self)
        _run_hooks("closed", self)
        # A session closed while connected keeps its socket's FletApp, which
        # points back at it: a cycle only a full gc pass frees (over a second
        # on a big heap). Dropping this edge lets reference counting free the
        # session, page and controls as soon as the socket's handler ends.
        self._Session__conn = None  # type: ignore[attr-defined]

    @functools.wraps(original_attach)
    def attach_connection(self: Session, conn: Any) -> None:
        original_attach(self, conn)
        _run_hooks("attached", self)

    @functools.wraps(original_disconnect)
    async def disconnect(self: Session, session_timeout_seconds: int) -> None:
        await original_disconnect(self, session_timeout_seconds)
        _run_hooks("disconnected", self)

    @functools.wraps(original_session_send)
    def session_send(self: Session, message: Any) -> None:
        outbox = _outboxes.get(self)
        if outbox is None or not outbox.capture(message):
            original_session_send(self, message)

    @functools.wraps(original_invoke_results)
    def invoke_results(
        self: Session,
        control_id: int,
        call_id: str,
        result: Any,
        error: str | None,
    ) -> None:
        outbox = _outboxes.get(self)
        if outbox is not None:
            outbox.answered(call_id)
        original_invoke_results(self, control_id, call_id, result, error)

    @functools.wraps(original_dispatch_event)
    async def dispatch_event(
        self: Session, control_id: int, event_name: str, event_data: Any
    ) -> None:
        if not _from_client.get():  # Flet's own connect/disconnect/close
            await original_dispatch_event(self, control_id, event_name, event_data)
            return
        run = HandlerRun()
        token = _handler_run.set(run)
        try:
            await original_dispatch_event(self, control_id, event_name, event_data)
        finally:
            run.active = False
            _handler_run.reset(token)
            _run_hooks("handled", self)

    @functools.wraps(original_on_message)
    async def on_message(self: FletApp, data: Any) -> None:
        registering = data[0] == MessageAction.REGISTER_CLIENT.value
        token = _from_client.set(data[0] == MessageAction.CONTROL_EVENT.value)
        try:
            await original_on_message(self, data)
        finally:
            _from_client.reset(token)
            if registering:
                _note_registered(self)
        session = self._FletApp__session
        if data[0] in _CLIENT_ACTIVITY and session is not None:
            _run_hooks("activity", session)

    @functools.wraps(original_unique_id)
    def unique_session_id(self: FletApp, session_id: str) -> str:
        policy = _policy(self)
        if policy is None or policy.bind_ip:
            return original_unique_id(self, session_id)
        # Key the session by page + id + User-Agent only: a phone whose IP
        # changes (Wi-Fi -> cellular) keeps its session.
        ip = self._FletApp__client_ip
        self._FletApp__client_ip = ""
        try:
            return original_unique_id(self, session_id)
        finally:
            self._FletApp__client_ip = ip

    @functools.wraps(original_patch_control)
    def patch_control(
        self: Session, control: BaseControl, *args: Any, **kw: Any
    ) -> None:
        sink = _sinks.get(self)
        if sink is None or _sending.get():  # caused by a diff the sink runs
            original_patch_control(self, control, *args, **kw)
        elif _plain_patch(control, args, kw):
            sink.defer(control)
        else:
            sink.flush()  # what was deferred before it goes first
            original_patch_control(self, control, *args, **kw)
            sink.bypassed(_patch_shape(args, kw))

    @functools.wraps(original_schedule_update)
    def schedule_update(self: Session, control: BaseControl) -> None:
        sink = _sinks.get(self)
        if sink is not None and is_component(control):
            # A component's state changed (in a handler, task or thread): its
            # re-render waits in the sink instead of Flet's updates scheduler.
            sink.defer(control)
        else:
            original_schedule_update(self, control)

    @functools.wraps(original_update)
    def update(self: BaseControl) -> None:
        sink = _held.get(id(self))
        if sink is not None and sink.merge(self):
            context.mark_update_called()  # as Flet's update() would
            return
        original_update(self)

    @functools.wraps(original_send_message)
    def send_message(self: FletApp, message: Any) -> None:
        # One-shot messages must not overtake the patches deferred before them.
        sink = _sinks.get(self._FletApp__session)
        if sink is not None and message.action in _ORDERED_ACTIONS:
            sink.flush()
        if not _transport_log.isEnabledFor(logging.DEBUG):
            message = _QuietMessage(message.action, message.body)
        original_send_message(self, message)

    def page(self: BaseControl) -> Page:
        try:
            return original_page(self)
        except RuntimeError:
            # Added by a still-deferred patch, so not mounted yet: send the
            # pending patches (which mount it) and look again.
            current = _context_page.get()
            sink = _sinks.get(current.session) if current is not None else None
            if sink is None:
                raise
            sink.flush()
            return original_page(self)

    patch_control._flet_resilient = True  # type: ignore[attr-defined]
    schedule_update._flet_resilient = True  # type: ignore[attr-defined]
    Session.patch_control = patch_control  # type: ignore[method-assign]
    Session.schedule_update = schedule_update  # type: ignore[method-assign]
    BaseControl.update = update  # type: ignore[method-assign]
    FletApp.send_message = send_message
    BaseControl.page = property(  # type: ignore[method-assign,assignment]
        functools.wraps(original_page)(page)
    )
    FletApp.handle = handle
    FletApp._FletApp__send_loop = send_loop
    FletApp._FletApp__receive_loop = receive_loop
    Session.close = close  # type: ignore[method-assign]
    Session.attach_connection = attach_connection  # type: ignore[method-assign]
    Session.disconnect = disconnect  # type: ignore[method-assign]
    Session._Session__send_message = session_send  # type: ignore[attr-defined]
    Session.handle_invoke_method_results = invoke_results  # type: ignore[method-assign]
    Session.dispatch_event = dispatch_event  # type: ignore[method-assign]
    FletApp._FletApp__on_message = _screened(on_message)
    FletApp._FletApp__get_unique_session_id = unique_session_id
    FletAppManager.shutdown = shutdown
    FletFastAPI.__init__ = fastapi_init


_shutdown_hooks: list[Callable[[], Awaitable[None]]] = []


def on_shutdown(hook: Callable[[], Awaitable[None]]) -> None:
    """Await `hook()` when the server shuts down (ASGI lifespan shutdown, as on
    SIGTERM under uvicorn or gunicorn), before Flet's own cleanup."""
    if hook not in _shutdown_hooks:
        _shutdown_hooks.append(hook)


def install() -> None:
    """Wrap Flet's methods, once (a decorator, `serve()` or the test server
    calls it; importing flet-resilient does not). FLET_RESILIENT_DISABLE=1
    leaves Flet exactly as shipped."""
    if not disabled():
        _install()


def installed() -> bool:
    """Whether the seam wraps Flet's methods in this process."""
    return bool(getattr(FletApp, "_flet_resilient_installed", False))


# --- small accessors used by the mitigations ----------------------------------


def current_page() -> Page | None:
    """The page of the session whose handler is running, if any."""
    return _context_page.get()


def is_flet_event(value: object) -> bool:
    """Whether `value` is an event object Flet passes to handlers."""
    return isinstance(value, Event)


def sessions() -> dict[str, Session]:
    """All sessions Flet currently keeps, keyed by Flet's unique session key."""
    return dict(app_manager._FletAppManager__sessions)


_TAG_KEY = secrets.token_bytes(16)


def session_tag(session: Session) -> str:
    """An opaque name for a session in logs and stats (its id is a secret:
    with `buffer_reconnects` it lets a client take the session over)."""
    digest = hashlib.blake2s(str(session.id).encode(), key=_TAG_KEY, digest_size=6)
    return digest.hexdigest()


async def close_sockets(code: int = 1012, reason: str = "server restarting") -> int:
    """Close every live client socket (1012: the client reconnects); how many."""
    websockets = [app._FletApp__websocket for app in list(_live_apps)]
    for websocket in websockets:
        with contextlib.suppress(Exception):
            await websocket.close(code=code, reason=reason)
    return len(websockets)


def is_connected(session: Session) -> bool:
    """Whether a session currently has a live connection."""
    return session.connection is not None


def _transport_section() -> dict[str, int]:
    queues = [app._FletApp__send_queue for app in list(_live_apps)]
    queues = [q for q in queues if isinstance(q, SendQueue)]
    return {
        "sockets": len(queues),
        "backlog_frames": sum(q.qsize() for q in queues),
        "backlog_bytes": sum(q.backlog_bytes for q in queues),
    }


register_section("transport", _transport_section)


def send_queue(session: Session) -> SendQueue | None:
    """The outbound queue of the session's live socket, if connected."""
    connection = session.connection
    if connection is None:
        return None
    queue = _private(connection, "_FletApp__send_queue")
    return queue if isinstance(queue, SendQueue) else None


def patch_now(session: Session, control: BaseControl) -> None:
    """Diff and send `control` at once, bypassing any patch sink (a component
    is re-rendered). Patches the diff causes itself (the render's, a dialog
    hook's) go straight out with it."""
    token = _sending.set(True)
    try:
        if is_component(control):
            _render(session, control)
        else:
            Session.patch_control.__wrapped__(session, control)  # type: ignore[attr-defined]
    finally:
        _sending.reset(token)


def _render(session: Session, component: Component) -> None:
    """Re-render a component now, as Flet's updates scheduler would.

    Its frozen diff compares the body the client has with the new one, so
    however many state changes were merged, the patch is exact. A render that
    raises is reported like a failing handler instead of ending the flush.
    """
    token = _context_page.set(session.page)
    try:
        component.update()
    except Exception as exc:
        logger.exception("re-render of %s failed", component)
        session.error(f"{exc}\n{traceback.format_exc()}")
    finally:
        _context_page.reset(token)


def cannot_route(session: Session) -> str | None:
    """Why this session's patches would not reach a patch sink, if they would not."""
    if not installed():
        return (
            "the seam is not installed (decorate main, or call"
            " flet_resilient.install() before serving; FLET_RESILIENT_DISABLE=1?)"
        )
    cls = type(session)
    for method in ("patch_control", "schedule_update"):
        if not getattr(getattr(cls, method), "_flet_resilient", False):
            return f"{cls.__qualname__}.{method} is not the one flet-resilient wraps"
    connection = session.connection
    if connection is not None and not isinstance(connection, FletApp):
        return f"the page is served by {type(connection).__qualname__}, not flet_web"
    return None


async def close_session(session: Session) -> None:
    """End a session now, as Flet's expiry would (runs close hooks)."""
    for key, candidate in sessions().items():
        if candidate is session:
            await app_manager.delete_session(key)
            return


async def end_session(session: Session) -> None:
    """Close a session and its socket; the client reconnects to a fresh one."""
    connection = session.connection
    websocket = None
    if connection is not None:
        websocket = _private(connection, "_FletApp__websocket")
    await close_session(session)
    if websocket is not None:
        spawn(websocket.close(), quiet=True)


def dismantle(page: Page) -> None:
    """Drop an ended session's control tree (views, overlay, dialogs).

    Handlers that close over `page` make the page and its whole tree a cycle
    that only a full gc pass frees. Emptying the tree, and Flet's diff
    snapshots of it, lets reference counting free the controls at once.
    """
    overlay = page._overlay
    dialogs = page._dialogs
    for holder, children in (
        (page, page.views),
        (overlay, overlay.controls),
        (dialogs, dialogs.controls),
    ):
        children.clear()
        for snapshot in ("__prev_lists", "__prev_dicts", "__prev_classes"):
            getattr(holder, snapshot, {}).clear()


def control_count(session: Session) -> int:
    """Controls mounted in the session (a proxy for its memory)."""
    return len(session.index)


def is_component(control: BaseControl) -> TypeGuard[Component]:
    """Whether a control is a declarative component (`@ft.component`)."""
    return isinstance(control, Component)


def control_page(control: BaseControl) -> Page | None:
    """The page a control is mounted on, or None."""
    try:
        return control.page
    except RuntimeError:
        return None


_encode = configure_encode_object_for_msgpack(BaseControl)


def message_size(message: Any) -> int:
    """Bytes a protocol message takes on the wire."""
    return 1 + len(msgpack.packb([message.action, message.body], default=_encode))


def invoke_call(message: Any) -> tuple[int, str] | None:
    """(control_id, call_id) of an `invoke_method` request, else None."""
    if message.action != MessageAction.INVOKE_METHOD:
        return None
    return message.body.control_id, message.body.call_id


def is_one_shot(message: Any) -> bool:
    """Messages a reconnect's full-page resend does not recover."""
    return message.action in _ORDERED_ACTIONS


def invoke_pending(session: Session, call_id: str) -> bool:
    """Whether an `invoke_method` caller still waits for `call_id`."""
    return call_id in session._Session__method_calls  # type: ignore[attr-defined]


def fail_invoke(session: Session, control_id: int, call_id: str, error: str) -> None:
    """Make a pending `invoke_method` caller raise `RuntimeError(error)`."""
    with contextlib.suppress(RuntimeError):  # its control is gone already
        session.handle_invoke_method_results(control_id, call_id, None, error)


def resend(session: Session, message: Any) -> None:
    """Send a message on the session's current socket (for replays)."""
    if session.connection is not None:
        session.connection.send_message(message)
