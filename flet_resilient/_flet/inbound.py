"""Inbound screening: one session per socket, frames and messages Flet cannot
take dropped and counted instead of ending the socket, and an `InboundGuard`
(see `limits`) bounding frame size, event rate and new sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import weakref
from typing import Any, Literal, Protocol

import msgpack
from fastapi import WebSocketDisconnect
from flet.messaging.protocol import MessageAction
from flet.messaging.session import Session
from flet_web.fastapi.flet_app import FletApp, app_manager

from flet_resilient._flet.outbound import transport_log
from flet_resilient._flet.register import vet_register
from flet_resilient._flet.version import FLET_VERSION, private
from flet_resilient.metrics import count

logger = logging.getLogger("flet_resilient")


Admission = Literal["run", "drop", "close"]


class InboundGuard(Protocol):
    """Limits on what clients send; the seam enforces them (see `limits`)."""

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
        ip = private(app, "_FletApp__client_ip")
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
    if transport_log.isEnabledFor(logging.DEBUG):
        return data
    return [data[0], _QuietBody(data[1])]


async def screen(app: FletApp, data: Any) -> list[Any] | None:
    """The client message to hand Flet (with a short-repr body), or None when
    it is malformed or refused (counted and reported)."""
    reason = _malformed(data)
    if reason is not None:
        _refuse(app, "malformed", reason)
        return None
    if not await _admitted(app, data[0], data[1]):
        return None
    return _quiet(data)


async def flet_failed(app: FletApp, data: list[Any], exc: Exception) -> None:
    """Flet failed on a client message: counted as malformed, and the socket
    closed only for a failed REGISTER_CLIENT (the session is not there)."""
    _refuse(app, "malformed", f"a message Flet failed on: {exc!r:.200}", exc)
    if data[0] == MessageAction.REGISTER_CLIENT.value:
        await _close_socket(app, 1002, "register failed")


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
        await vet_register(app, body)
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


class GuardedSocket:
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


def tolerate_undecodable() -> None:
    """Make flet-web's receive loop hand undecodable frames to the screen."""
    module = sys.modules[FletApp.__module__]
    if getattr(module, "msgpack", None) is not msgpack:
        raise RuntimeError(
            f"{module.__name__} no longer decodes frames with its module-level "
            "`msgpack` (flet-resilient's inbound screen needs it): unsupported "
            f"flet-web {FLET_VERSION}"
        )
    module.msgpack = _TolerantMsgpack()  # type: ignore[attr-defined]
