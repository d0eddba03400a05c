"""Small accessors the mitigations use instead of Flet's internals: sessions,
sockets, pages, controls and protocol messages (the `stats()` sections of
sessions and sockets too)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import secrets
import weakref
from typing import Any, TypeGuard

import msgpack
from flet.components.component import Component
from flet.controls.base_control import BaseControl
from flet.controls.context import _context_page
from flet.controls.control_event import Event
from flet.controls.page import Page
from flet.messaging.protocol import MessageAction, configure_encode_object_for_msgpack
from flet.messaging.session import Session
from flet_web.fastapi.flet_app import app_manager

from flet_resilient._flet.hooks import live_apps
from flet_resilient._flet.outbound import ORDERED_ACTIONS, SendQueue
from flet_resilient._flet.version import private
from flet_resilient.background import spawn
from flet_resilient.metrics import register_section


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


_tags: weakref.WeakKeyDictionary[Session, tuple[str, str]] = (
    weakref.WeakKeyDictionary()
)
"""Each session's (id, tag), so a stats() call does not hash every id again."""


def session_tag(session: Session) -> str:
    """An opaque name for a session in logs and stats (its id is a secret:
    with `buffer_reconnects` it lets a client take the session over)."""
    known = _tags.get(session)
    if known is not None and known[0] == session.id:
        return known[1]
    digest = hashlib.blake2s(str(session.id).encode(), key=_TAG_KEY, digest_size=6)
    _tags[session] = (session.id, digest.hexdigest())
    return digest.hexdigest()


async def close_sockets(
    code: int = 1012,
    reason: str = "server restarting",
    *,
    per_second: float | None = None,
    within: float | None = None,
) -> int:
    """Close every live client socket (1012: the client reconnects); how many.

    With `per_second`, in waves every `CLOSE_WAVE_S` at that rate, raised to
    finish `within` seconds: clients come back spread out, not as one herd."""
    websockets = [app._FletApp__websocket for app in list(live_apps)]
    wave = _wave_size(len(websockets), per_second, within)
    for start in range(0, len(websockets), wave):
        if start:
            await asyncio.sleep(CLOSE_WAVE_S)
        for websocket in websockets[start : start + wave]:
            with contextlib.suppress(Exception):
                if websocket is not None:
                    await websocket.close(code=code, reason=reason)
    return len(websockets)


CLOSE_WAVE_S = 0.1
"""Seconds between two waves of a paced `close_sockets`."""


def _wave_size(sockets: int, per_second: float | None, within: float | None) -> int:
    """Sockets per wave: all of them unless paced; enough to end `within`."""
    if per_second is None or sockets == 0:
        return max(sockets, 1)
    if within is not None:
        per_second = max(per_second, sockets / max(within, CLOSE_WAVE_S))
    return max(1, math.ceil(per_second * CLOSE_WAVE_S))


def is_connected(session: Session) -> bool:
    """Whether a session currently has a live connection."""
    return session.connection is not None


def _transport_section() -> dict[str, int]:
    """`stats()["transport"]`: the live sockets and what waits in their queues."""
    slots = [app._FletApp__send_queue for app in list(live_apps)]
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
    queue = private(connection, "_FletApp__send_queue")
    return queue if isinstance(queue, SendQueue) else None


async def close_session(session: Session) -> None:
    """End a session now, as Flet's expiry would (runs close hooks)."""
    for key, candidate in sessions().items():
        if candidate is session:
            await app_manager.delete_session(key)
            return


async def end_session(session: Session, code: int = 1000) -> None:
    """Close a session and its socket (with `code`; 1012: "service restart",
    as a drain does); the client reconnects to a fresh one."""
    connection = session.connection
    websocket = None
    if connection is not None:
        websocket = private(connection, "_FletApp__websocket")
    await close_session(session)
    if websocket is not None:
        spawn(websocket.close(code=code), quiet=True)


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
    return message.action in ORDERED_ACTIONS


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
