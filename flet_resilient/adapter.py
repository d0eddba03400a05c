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
  takes plain `update()` patches and declarative components' re-renders),
  outboxes per session (the replay buffer, ...), session and socket events,
  the REGISTER_CLIENT vetting that keeps sessions to their app and browser,
  and hooks for a session found on a stale socket (`take_over`) and for
  sessions keyed without the client IP (`key_without_ip`); what is kept per
  session lives in one `session_data.SessionData`;
* inbound screening: one session per socket, frames and messages Flet cannot
  take are dropped and counted instead of ending the socket, and an
  `InboundGuard` (see `limits`) bounds frame size, event rate and new sessions;
* speed-ups of Flet's own page build and diff, same frames (`speedups`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import logging
import secrets
import sys
import threading
import traceback
import weakref
from collections.abc import Awaitable, Callable, Iterator
from importlib.metadata import version
from typing import Any, Literal, Protocol, TypeGuard

import msgpack
from fastapi import WebSocketDisconnect
from flet.components.component import Component
from flet.controls import object_patch
from flet.controls.base_control import BaseControl
from flet.controls.context import _context_page, context
from flet.controls.control_event import Event
from flet.controls.object_patch import DiffBuilder, ObjectPatchException
from flet.controls.page import Page
from flet.controls.value_types import Prop
from flet.messaging import protocol
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
from flet_resilient.session_data import data_of, find
from flet_resilient.switch import disabled, speedups_off

__all__ = [
    "SUPPORTED_FLET",
    "Admission",
    "HandlerRun",
    "InboundGuard",
    "Outbox",
    "PatchSink",
    "SendQueue",
    "UnsupportedFletVersion",
    "add_outbox",
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
    "key_without_ip",
    "message_size",
    "on_session",
    "on_shutdown",
    "on_socket",
    "on_stale_socket",
    "patch_now",
    "release",
    "resend",
    "send_queue",
    "session_main",
    "session_tag",
    "sessions",
    "set_inbound_guard",
    "set_patch_sink",
    "speedups",
    "speedups_on",
    "take_over",
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
    data = find(session) if sink is None else data_of(session)
    if data is not None:
        data.sink = sink


def _sink(session: Session) -> PatchSink | None:
    """The session's patch sink, if it has one."""
    data = find(session)
    return data.sink if data is not None else None


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


def add_outbox(session: Session, outbox: Outbox) -> None:
    """Show the session's outgoing messages to `outbox` too (each outbox sees
    every message; one that keeps it keeps it from being sent)."""
    outboxes = data_of(session).outboxes
    if outbox not in outboxes:
        outboxes.append(outbox)


def _outboxes(session: Session) -> list[Outbox]:
    """The outboxes watching the session's messages (often none)."""
    data = find(session)
    return data.outboxes if data is not None else []


_from_elsewhere: weakref.WeakSet[FletApp] = weakref.WeakSet()
"""Sockets that presented a session id this process lacks (their session,
once made, is marked `from_elsewhere`)."""


def came_from_elsewhere(session: Session) -> bool:
    """Whether the session began as a reconnect of a session this process
    never had (e.g. one held by another worker, or by a restarted one)."""
    data = find(session)
    return data is not None and data.from_elsewhere


async def _vet_register(app: FletApp, body: dict[str, Any]) -> None:
    """Check a REGISTER_CLIENT that names an existing session.

    A session belongs to the app (`main`) that created it and to the browser
    holding its binding cookie: anyone else presenting its id gets a fresh
    session instead. A session still attached to another socket is offered
    to the `on_stale_socket` hooks (which may `take_over` it).
    """
    key = app._FletApp__get_unique_session_id(body["session_id"])
    candidate = await app_manager.get_session(key)
    if candidate is None:
        count("reconnect.unknown_sessions")  # another worker's, or expired
        _from_elsewhere.add(app)
        return
    main = app._FletApp__main
    known = session_main(candidate)
    if known is not None and known is not main:
        _refuse_session(candidate, body, "another app")
        return
    bound = data_of(candidate).binding
    if bound is not None and bound != browser_binding(app):
        _refuse_session(candidate, body, "a browser without its binding cookie")
        return
    stale = candidate.connection
    if stale is not None and stale is not app:
        for hook in list(_stale_hooks):
            await hook(candidate, main)


_stale_hooks: list[Callable[[Session, Any], Awaitable[None]]] = []
_ip_free: list[Callable[[Any], bool]] = []
_socket_hooks: list[Callable[[], object]] = []


def on_stale_socket(hook: Callable[[Session, Any], Awaitable[None]]) -> None:
    """Await `hook(session, main)` when a client of app `main` registers with
    the id of a session still attached to another (stale) socket: Flet alone
    would answer it with a brand-new session."""
    if hook not in _stale_hooks:
        _stale_hooks.append(hook)


async def take_over(session: Session) -> None:
    """Detach `session` from its stale socket and close that socket, so the
    registering client gets the session back."""
    stale = session.connection
    if stale is None:
        return
    websocket = _private(stale, "_FletApp__websocket")
    await app_manager.disconnect_session(
        _private(stale, "_FletApp__get_unique_session_id")(session.id),
        _private(stale, "_FletApp__session_timeout_seconds"),
    )
    if websocket is not None:
        spawn(websocket.close(), quiet=True)


def key_without_ip(predicate: Callable[[Any], bool]) -> None:
    """Key the sessions of every app whose `main` satisfies `predicate` by
    page + id + User-Agent only, not the client IP (Flet's default)."""
    if predicate not in _ip_free:
        _ip_free.append(predicate)


def on_socket(hook: Callable[[], object]) -> None:
    """Call `hook()` on the loop whenever a client socket opens."""
    if hook not in _socket_hooks:
        _socket_hooks.append(hook)


def _run_socket_hooks() -> None:
    for hook in list(_socket_hooks):
        try:
            hook()
        except Exception:
            logger.exception("socket hook %r failed", hook)


def _refuse_session(candidate: Session, body: dict[str, Any], to: str) -> None:
    """Answer a REGISTER_CLIENT naming `candidate` with a fresh session."""
    count("reconnect.takeovers_refused")
    logger.warning("refused session %s to %s", session_tag(candidate), to)
    body["session_id"] = None


BINDING_COOKIE = "flet_resilient_bind"
"""An HttpOnly cookie set on the page load: a session goes back only to the
browser that created it, so its id alone (a leaked log line) is not enough."""


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
    data = data_of(session)
    if data.main is None:
        data.main = app._FletApp__main
        data.binding = browser_binding(app)
        _run_hooks("created", session)
    if app in _from_elsewhere:
        _from_elsewhere.discard(app)
        data.from_elsewhere = True


def session_main(session: Session) -> Any:
    """The app `main` the session was created for (None if not known)."""
    data = find(session)
    return data.main if data is not None else None


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
READ_CHUNK_BYTES = 8 * 1024
"""Bytes read from a guarded client socket at once (about 200 small events)."""
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


class _GuardedSocket:
    """A client's WebSocket as Flet sees it: a frame over the guard's size
    limit closes it (1009) before Flet decodes it, a text frame (which Flet
    cannot read) arrives empty (which Flet skips), and once closed it reads
    as disconnected (not as an error Flet would log with a traceback)."""

    def __init__(self, websocket: Any, app: FletApp) -> None:
        self._websocket = websocket
        self._app = weakref.ref(app)
        self._closed: int | None = None
        self._transport = _bound_reads(websocket) if _guard is not None else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._websocket, name)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close once; later reads raise WebSocketDisconnect with this code."""
        if self._closed is None:
            self._closed = code
            self._read_freely()
            await self._websocket.close(code=code, reason=reason)

    def _read_freely(self) -> None:
        """Closing: what the client still sends is discarded, so read it in
        asyncio's big chunks again (8 KiB reads of a refused 10 MB frame cost
        the loop 1,280 callbacks per frame)."""
        if self._transport is not None:
            vars(self._transport).pop("max_size", None)

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
        except WebSocketDisconnect:  # e.g. uvicorn refused a frame over its limit
            self._read_freely()
            raise
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


def _bound_reads(websocket: Any) -> Any:
    """Read this client's socket `READ_CHUNK_BYTES` at a time; its transport.

    asyncio reads up to 256 KiB per callback and uvicorn parses every frame of
    a read in that callback: a flood of small frames waiting in the kernel's
    buffers held the loop 170 ms. The transport is uvicorn's, reached through
    the ASGI receive callable (a middleware wrapping it, or uvloop, hides it:
    warned once, counted as `transport.reads_unbounded`: None).
    """
    protocol = getattr(getattr(websocket, "_receive", None), "__self__", None)
    transport = getattr(protocol, "transport", None)
    if isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = READ_CHUNK_BYTES  # type: ignore[union-attr]
        return transport
    count("transport.reads_unbounded")
    if not _unbounded_warned:
        _unbounded_warned.append(type(transport).__name__)
        logger.warning(
            "cannot bound reads of client sockets (transport %s has no max_size): "
            "a flood of small frames can hold the event loop per read",
            type(transport).__name__,
        )
    return None


_unbounded_warned: list[str] = []


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


# --- the wrappers ---------------------------------------------------------------
# Each replaces one Flet method (see `WRAPPERS`) and calls Flet's own through
# `_flet`, filled by `install()`.

_flet: dict[str, Any] = {}
"""Flet's own methods, by `Owner.name`, as they were before `install()`."""


def _fastapi_init(self: FletFastAPI, *args: Any, **kwargs: Any) -> None:
    """Flet's FastAPI app, plus the browser-binding cookie middleware."""
    _flet["FastAPI.__init__"](self, *args, **kwargs)
    self.add_middleware(_BindingCookie)


async def _shutdown(self: FletAppManager) -> None:
    """Await the shutdown hooks (e.g. drain), then Flet's own cleanup."""
    for hook in list(_shutdown_hooks):
        try:
            await hook()
        except Exception:
            logger.exception("shutdown hook %r failed", hook)
    await _flet["FletAppManager.shutdown"](self)


async def _handle(self: FletApp, websocket: Any) -> None:
    """Serve a socket behind the inbound guard; its end always ends or
    disconnects its session (Flet skips that when `send_bytes` raises)."""
    _run_socket_hooks()
    _live_apps.add(self)
    try:
        await _flet["FletApp.handle"](self, _GuardedSocket(websocket, self))
    except Exception as exc:  # the send loop died on a vanished client
        logger.debug("Flet socket ended with %r", exc)
    finally:
        _live_apps.discard(self)
        session = self._FletApp__session
        if session is not None and session.connection is self:
            await app_manager.disconnect_session(
                self._FletApp__get_unique_session_id(session.id),
                self._FletApp__session_timeout_seconds,
            )


async def _send_loop(self: FletApp) -> None:
    """Flet's send loop; when the client is gone, close the socket so the
    receive loop ends too."""
    websocket = self._FletApp__websocket
    try:
        await _flet["FletApp._FletApp__send_loop"](self)
    except Exception:
        if websocket is not None:
            with contextlib.suppress(Exception):
                await websocket.close()
        raise


async def _receive_loop(self: FletApp) -> None:
    """Flet's receive loop; a socket that never registered stops its send loop."""
    await _flet["FletApp._FletApp__receive_loop"](self)
    queue = self._FletApp__send_queue
    if self._FletApp__session is None and queue is not None:
        queue.put_nowait(None)


def _close(self: Session) -> None:
    """Flet's close, the "closed" hooks, and no Session <-> FletApp cycle."""
    _flet["Session.close"](self)
    _run_hooks("closed", self)
    # A session closed while connected keeps its socket's FletApp, which
    # points back at it: a cycle only a full gc pass frees (over a second
    # on a big heap). Dropping this edge lets reference counting free the
    # session, page and controls as soon as the socket's handler ends.
    self._Session__conn = None  # type: ignore[attr-defined]


def _attach_connection(self: Session, conn: Any) -> None:
    """Flet's attach, then the "attached" hooks."""
    _flet["Session.attach_connection"](self, conn)
    _run_hooks("attached", self)


async def _disconnect(self: Session, session_timeout_seconds: int) -> None:
    """Flet's disconnect, then the "disconnected" hooks."""
    await _flet["Session.disconnect"](self, session_timeout_seconds)
    _run_hooks("disconnected", self)


def _session_send(self: Session, message: Any) -> None:
    """Show the message to each of the session's outboxes; send it unless one
    keeps it."""
    outboxes = _outboxes(self)
    kept = [outbox.capture(message) for outbox in outboxes] if outboxes else ()
    if not any(kept):
        _flet["Session._Session__send_message"](self, message)


def _invoke_results(
    self: Session,
    control_id: int,
    call_id: str,
    result: Any,
    error: str | None,
) -> None:
    """Tell the session's outboxes a call was answered, then Flet."""
    for outbox in _outboxes(self):
        outbox.answered(call_id)
    _flet["Session.handle_invoke_method_results"](
        self, control_id, call_id, result, error
    )


async def _dispatch_event(
    self: Session, control_id: int, event_name: str, event_data: Any
) -> None:
    """Flet's dispatch; a client event's handler runs as a `HandlerRun`."""
    original = _flet["Session.dispatch_event"]
    if not _from_client.get():  # Flet's own connect/disconnect/close
        await original(self, control_id, event_name, event_data)
        return
    run = HandlerRun()
    token = _handler_run.set(run)
    try:
        await original(self, control_id, event_name, event_data)
    finally:
        run.active = False
        _handler_run.reset(token)
        _run_hooks("handled", self)


async def _on_message(self: FletApp, data: Any) -> None:
    """Flet's handler of one client message, then registration and activity."""
    registering = data[0] == MessageAction.REGISTER_CLIENT.value
    token = _from_client.set(data[0] == MessageAction.CONTROL_EVENT.value)
    try:
        await _flet["FletApp._FletApp__on_message"](self, data)
    finally:
        _from_client.reset(token)
        if registering:
            _note_registered(self)
    session = self._FletApp__session
    if data[0] in _CLIENT_ACTIVITY and session is not None:
        _run_hooks("activity", session)


async def _screened_message(self: FletApp, data: Any) -> None:
    """Drop what is malformed or refused; hand the rest to Flet, quietly: its
    own failure on a message no longer ends the socket (except a failed
    REGISTER_CLIENT's)."""
    reason = _malformed(data)
    if reason is not None:
        _refuse(self, "malformed", reason)
        return
    if not await _admitted(self, data[0], data[1]):
        return
    try:
        await _on_message(self, _quiet(data))
    except Exception as exc:
        _refuse(self, "malformed", f"a message Flet failed on: {exc!r:.200}", exc)
        if data[0] == MessageAction.REGISTER_CLIENT.value:
            await _close_socket(self, 1002, "register failed")


def _unique_session_id(self: FletApp, session_id: str) -> str:
    """Flet's session key; without the client IP for apps a `key_without_ip`
    predicate names (a phone whose IP changes keeps its session)."""
    original = _flet["FletApp._FletApp__get_unique_session_id"]
    main = self._FletApp__main
    if not any(predicate(main) for predicate in _ip_free):
        return original(self, session_id)
    ip = self._FletApp__client_ip
    self._FletApp__client_ip = ""
    try:
        return original(self, session_id)
    finally:
        self._FletApp__client_ip = ip


def _patch_control(self: Session, control: BaseControl, *args: Any, **kw: Any) -> None:
    """A plain `update()` patch goes to the session's sink, if it has one."""
    sink = _sink(self)
    if sink is None or _sending.get():  # caused by a diff the sink runs
        _flet["Session.patch_control"](self, control, *args, **kw)
    elif _plain_patch(control, args, kw):
        sink.defer(control)
    else:
        sink.flush()  # what was deferred before it goes first
        _flet["Session.patch_control"](self, control, *args, **kw)
        sink.bypassed(_patch_shape(args, kw))


def _schedule_update(self: Session, control: BaseControl) -> None:
    """A component's re-render (its state changed in a handler, task or
    thread) waits in the session's sink instead of Flet's updates scheduler."""
    sink = _sink(self)
    if sink is not None and is_component(control):
        sink.defer(control)
    else:
        _flet["Session.schedule_update"](self, control)


def _update(self: BaseControl) -> None:
    """Flet's update, skipped when the control's patch is already pending."""
    sink = _held.get(id(self))
    if sink is not None and sink.merge(self):
        context.mark_update_called()  # as Flet's update() would
        return
    _flet["BaseControl.update"](self)


def _send_message(self: FletApp, message: Any) -> None:
    """One-shot messages do not overtake the patches deferred before them;
    messages get a short repr (unless flet-web's debug log is on)."""
    session = self._FletApp__session
    sink = _sink(session) if session is not None else None
    if sink is not None and message.action in _ORDERED_ACTIONS:
        sink.flush()
    if not _transport_log.isEnabledFor(logging.DEBUG):
        message = _QuietMessage(message.action, message.body)
    _flet["FletApp.send_message"](self, message)


def _page(self: BaseControl) -> Page:
    """Flet's `control.page`; a control added by a still-deferred patch (so
    not mounted yet) is found after the pending patches are sent."""
    original = _flet["BaseControl.page"]
    try:
        return original(self)
    except RuntimeError:
        current = _context_page.get()
        sink = _sink(current.session) if current is not None else None
        if sink is None:
            raise
        sink.flush()
        return original(self)


WRAPPERS: tuple[tuple[type, str, Callable[..., Any]], ...] = (
    (FletApp, "handle", _handle),
    (FletApp, "send_message", _send_message),
    (FletApp, "_FletApp__send_loop", _send_loop),
    (FletApp, "_FletApp__receive_loop", _receive_loop),
    (FletApp, "_FletApp__on_message", _screened_message),
    (FletApp, "_FletApp__get_unique_session_id", _unique_session_id),
    (FletAppManager, "shutdown", _shutdown),
    (FletFastAPI, "__init__", _fastapi_init),
    (Session, "close", _close),
    (Session, "attach_connection", _attach_connection),
    (Session, "disconnect", _disconnect),
    (Session, "dispatch_event", _dispatch_event),
    (Session, "patch_control", _patch_control),
    (Session, "schedule_update", _schedule_update),
    (Session, "handle_invoke_method_results", _invoke_results),
    (Session, "_Session__send_message", _session_send),
    (BaseControl, "page", _page),
    (BaseControl, "update", _update),
)
"""Each Flet method the seam wraps, and its wrapper (a property's getter for
`page`)."""

PATCHED: tuple[tuple[type, str], ...] = tuple((o, n) for o, n, _ in WRAPPERS)
"""The Flet methods the seam wraps (tests/test_flet_contract.py checks their
signatures); with the instance attributes read through `_private`, this is
the written list of what flet-resilient depends on."""


def _missing(owner: Any, name: str) -> UnsupportedFletVersion:
    """The error for a Flet internal (of a class or module) the seam needs and
    this Flet lacks."""
    where = getattr(owner, "__qualname__", owner.__name__)
    return UnsupportedFletVersion(
        f"flet {FLET_VERSION}: {where}.{name} is missing; "
        f"flet-resilient was tested with flet {SUPPORTED_FLET[0]}x"
    )


def _check_flet() -> None:
    """Refuse to install, naming it, if a Flet method the seam wraps is gone."""
    for owner, name in PATCHED:
        if name not in vars(owner):
            raise _missing(owner, name)
    _speedup_flet()


def _private(obj: object, name: str) -> Any:
    """A Flet private attribute, or a clear error naming it (never a default)."""
    try:
        return getattr(obj, name)
    except AttributeError:
        raise _missing(type(obj), name) from None


def _install() -> None:
    """Check every Flet internal the seam needs, then wrap each `WRAPPERS` one."""
    if installed():
        return
    _check_flet()
    setattr(FletApp, "_flet_resilient_installed", True)  # noqa: B010 (not Flet's)
    FletApp._FletApp__send_queue = _SendQueueSlot()  # type: ignore[assignment]
    _tolerate_undecodable()
    for owner, name, wrapper in WRAPPERS:
        _wrap(owner, name, wrapper)
    if not speedups_off():
        speedups(True)


def _wrap(owner: type, name: str, wrapper: Callable[..., Any]) -> None:
    """Put `wrapper` in place of `owner.name`, keeping Flet's own in `_flet`
    (and as the wrapper's `__wrapped__`, with its name and signature)."""
    current = vars(owner)[name]
    is_property = isinstance(current, property)
    original: Callable[..., Any] = current.fget if is_property else current
    _flet[f"{owner.__qualname__}.{name}"] = original
    functools.update_wrapper(wrapper, original)
    wrapper._flet_resilient = True  # type: ignore[attr-defined]
    setattr(owner, name, property(wrapper) if is_property else wrapper)


# --- speed-ups of Flet's page build and diff (issue 13) ------------------------
#
# Flet configures every control of a new subtree (a first visit, a rehydrate,
# added controls) by walking *every* dataclass field of it with nested
# generators and `dataclasses.fields()` per object: ~75 fields and ~230
# generator steps per control, 130 ms of a 1000-control page. The walk below
# does the same steps in the same order, but knows per class which fields it
# must look at, reads Prop fields straight from `_values` (what Prop.__get__
# returns) and skips the scalars a step would ignore anyway.

_SCALARS = frozenset({str, int, float, bool, type(None)})
"""Values Flet's configure step ignores (neither dataclass, dict nor list)."""

_FieldPlan = tuple[tuple[str, bool, Any], ...]
_plans: dict[type, _FieldPlan] = {}
"""Per dataclass: its non-skip fields in order, as (name, read from `_values`,
default): a field whose descriptor is a `Prop` reads `_values.get(name,
default)`, as Prop.__get__ does; any other field is read with getattr."""


def _field_plan(cls: type) -> _FieldPlan:
    """The fields Flet's configure step visits on instances of `cls`."""
    plan = _plans.get(cls)
    if plan is None:
        steps = []
        for f in dataclasses.fields(cls):
            if f.metadata.get("skip", False):
                continue
            owner = next((k for k in cls.__mro__ if f.name in vars(k)), None)
            found = vars(owner)[f.name] if owner is not None else None
            if type(found) is Prop and found.name == f.name:
                steps.append((f.name, True, found.default))
            else:
                steps.append((f.name, False, None))
        plan = _plans[cls] = tuple(steps)
    return plan


def _configure(
    builder: DiffBuilder,
    item: Any,
    parent: Any,
    frozen: bool,
    setattr_only: bool,
    out: list[Any],
) -> None:
    """Flet's configure step for `item` and what it holds; controls go to `out`."""
    cls = type(item)
    if cls in _SCALARS:
        return
    if cls is list or cls is dict:  # (builtins: never dataclasses) the common case
        for value in item if cls is list else item.values():
            _configure(builder, value, parent, frozen, False, out)
    elif hasattr(cls, "__dataclass_fields__"):
        _configure_object(builder, item, parent, frozen, setattr_only, out)
    elif isinstance(item, dict):
        for value in item.values():
            _configure(builder, value, parent, frozen, False, out)
    elif isinstance(item, list):
        for value in item:
            _configure(builder, value, parent, frozen, False, out)
    elif isinstance(item, type) and dataclasses.is_dataclass(item):
        out.extend(_stock["configure"](builder, item, parent, frozen, setattr_only))


def _configure_object(
    builder: DiffBuilder,
    item: Any,
    parent: Any,
    frozen: bool,
    setattr_only: bool,
    out: list[Any],
) -> None:
    """Configure one dataclass instance: parent, frozen mark, build, its fields."""
    if parent is None:
        parent_ref = getattr(item, "_parent", None)
        parent = parent_ref() if parent_ref else None
    if parent:
        if parent is item:
            raise ObjectPatchException(f"Parent is the same as item: {item}")
        item._parent = weakref.ref(parent)
    if hasattr(item, "_frozen"):
        frozen = item._frozen
    elif frozen:
        item._frozen = frozen
    cls = item.__class__
    if getattr(cls, "__flet_control_cls__", None) is None:
        cls.__flet_control_cls__ = builder.control_cls
    control_cls = builder.control_cls
    is_control = control_cls is not None and isinstance(item, control_cls)
    if is_control:
        if not setattr_only:
            item.build()
            item._before_update_safe()
            object.__setattr__(item, "_initialized", True)
        out.append(item)
    if not setattr_only:
        child_parent = item if is_control else parent
        for name, sparse, default in _field_plan(type(item)):
            value = item._values.get(name, default) if sparse else getattr(item, name)
            if type(value) not in _SCALARS:
                _configure(builder, value, child_parent, frozen, False, out)
    if not frozen:
        _track_changes(item)


def _track_changes(item: Any) -> None:
    """What Flet's configure step ends with for a non-frozen object: a clean
    dirty set, or (plain dataclass) its setattr hook and an empty change log."""
    dirty = getattr(item, "_dirty", None)
    if dirty is not None:
        dirty.clear()
        return
    cls = type(item)
    hook = object_patch._control_setattr
    if cls.__setattr__ is not hook:
        cls.__setattr__ = hook  # type: ignore[assignment]
    object.__setattr__(item, "__changes", {})


def _fast_configure(
    self: DiffBuilder,
    item: Any,
    parent: Any,
    frozen: bool,
    configure_setattr_only: bool = False,
) -> Iterator[Any]:
    """`DiffBuilder._configure_dataclass`, walked eagerly (its only caller
    drains it at once): the controls it configured, in Flet's order. With
    Flet's object-patch debug log on, Flet's own walk runs (it logs each step)."""
    if object_patch.logger.isEnabledFor(logging.DEBUG):
        stock = _stock["configure"]
        return stock(self, item, parent, frozen, configure_setattr_only)
    out: list[Any] = []
    _configure(self, item, parent, frozen, configure_setattr_only, out)
    return iter(out)


class _CachedDataclasses:
    """The `dataclasses` module as Flet's differ sees it, with `fields()`
    computed once per class (Flet calls it per dirty or removed object)."""

    is_dataclass = staticmethod(dataclasses.is_dataclass)

    def __init__(self) -> None:
        self._fields: dict[type, tuple[dataclasses.Field[Any], ...]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(dataclasses, name)

    def fields(self, class_or_instance: Any) -> tuple[dataclasses.Field[Any], ...]:
        """`dataclasses.fields`, remembered per class."""
        cls = (
            class_or_instance
            if isinstance(class_or_instance, type)
            else type(class_or_instance)
        )
        found = self._fields.get(cls)
        if found is None:
            found = self._fields[cls] = dataclasses.fields(class_or_instance)
        return found


SPED_UP: tuple[tuple[Any, str], ...] = (
    (DiffBuilder, "_configure_dataclass"),
    (object_patch, "dataclasses"),
    (protocol, "_get_root_dataclass_field"),
)
"""The Flet names the speed-ups replace (tests/test_flet_contract.py checks them)."""

SPEEDUP_READS: tuple[tuple[Any, str], ...] = (
    (object_patch, "_control_setattr"),
    (object_patch, "logger"),
    (BaseControl, "_before_update_safe"),
    (BaseControl, "build"),
)
"""Flet names the speed-ups read besides (and the `_values`, `_parent`,
`_frozen`, `_dirty` attributes of controls, as Flet's own step does)."""

_stock: dict[str, Any] = {}
"""Flet's own `_configure_dataclass`, object_patch's `dataclasses` and the
encoder's `_get_root_dataclass_field`."""


def _speedup_flet() -> None:
    """Remember Flet's originals, or raise naming what this Flet lacks."""
    for owner, name in SPED_UP + SPEEDUP_READS:
        if name not in vars(owner):
            raise _missing(owner, name)
    if not _stock:
        _stock["configure"] = DiffBuilder._configure_dataclass
        _stock["dataclasses"] = object_patch.dataclasses
        _stock["root_field"] = protocol._get_root_dataclass_field


def speedups(on: bool) -> None:
    """Use the faster page build and diff steps (on), or Flet's own (off).
    Both give the same frames byte for byte (tests/test_speedup.py); the
    seam's `install()` turns them on unless FLET_RESILIENT_SPEEDUPS=0."""
    _speedup_flet()
    if on and not speedups_on():
        fast = functools.wraps(_stock["configure"])(_fast_configure)
        DiffBuilder._configure_dataclass = fast  # type: ignore[method-assign]
        object_patch.dataclasses = _CachedDataclasses()  # type: ignore[assignment]
        # The encoder looks up, per scalar field of every control it sends,
        # the base class that declared it: a pure function of (class, name).
        protocol._get_root_dataclass_field = functools.cache(_stock["root_field"])
    elif not on:
        DiffBuilder._configure_dataclass = _stock["configure"]  # type: ignore[method-assign]
        object_patch.dataclasses = _stock["dataclasses"]
        protocol._get_root_dataclass_field = _stock["root_field"]


def speedups_on() -> bool:
    """Whether the page build and diff speed-ups are in use."""
    return bool(_stock) and DiffBuilder._configure_dataclass is not _stock["configure"]


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
            if websocket is not None:
                await websocket.close(code=code, reason=reason)
    return len(websockets)


def is_connected(session: Session) -> bool:
    """Whether a session currently has a live connection."""
    return session.connection is not None


def _transport_section() -> dict[str, int]:
    slots = [app._FletApp__send_queue for app in list(_live_apps)]
    queues = [q for q in slots if isinstance(q, SendQueue)]
    return {
        "sockets": len(queues),
        "backlog_frames": sum(q.qsize() for q in queues),
        "backlog_bytes": sum(q.backlog_bytes for q in queues),
    }


register_section("transport", _transport_section)


def _sessions_section() -> dict[str, int]:
    """`stats()['sessions']`: the sessions Flet keeps, with and without a socket."""
    kept = list(sessions().values())
    live = sum(is_connected(s) for s in kept)
    return {"live": live, "disconnected": len(kept) - live}


register_section("sessions", _sessions_section)


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
