"""The only module that touches Flet internals (flet / flet-web 1.0.x, web mode).

Everything else in flet-resilient goes through the small functions here, so a
Flet upgrade is checked against one file. Importing it verifies the installed
Flet version and installs three narrow fixes on `FletApp`:

* every ended WebSocket ends or disconnects its session (Flet skips
  `disconnect_session` when `send_bytes` raises, leaking "connected" sessions);
* a client that connects but never registers does not leave a send loop behind;
* frames enqueued from a worker thread wake the event loop at once instead of
  waiting for uvicorn's next tick (~100 ms), and the outbound backlog is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import weakref
from collections.abc import Callable
from importlib.metadata import version
from typing import Any, Protocol

from flet.controls.base_control import BaseControl
from flet.controls.context import _context_page
from flet.controls.control_event import Event
from flet.controls.page import Page
from flet.messaging.protocol import MessageAction
from flet.messaging.session import Session
from flet_web.fastapi.flet_app import FletApp, app_manager

from flet_resilient.metrics import count, register_section
from flet_resilient.watchdog import watch_loop

__all__ = [
    "SUPPORTED_FLET",
    "UnsupportedFletVersion",
    "close_session",
    "current_page",
    "is_flet_event",
    "on_session_closed",
    "sessions",
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


class SendQueue(asyncio.Queue):  # type: ignore[type-arg]
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
        return obj.__dict__.get("_flet_resilient_queue")

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["_flet_resilient_queue"] = (
            SendQueue() if isinstance(value, asyncio.Queue) else value
        )


# --- session lifecycle --------------------------------------------------------

_close_hooks: list[Callable[[Session], None]] = []


def on_session_closed(hook: Callable[[Session], None]) -> None:
    """Call `hook(session)` when Flet closes a session (expiry or eviction)."""
    if hook not in _close_hooks:
        _close_hooks.append(hook)


def _session_key(app: FletApp) -> str | None:
    session = app._FletApp__session  # type: ignore[attr-defined]
    if session is None:
        return None
    return app._FletApp__get_unique_session_id(session.id)  # type: ignore[attr-defined]


_live_apps: weakref.WeakSet[FletApp] = weakref.WeakSet()


class PatchSink(Protocol):
    """Takes over a session's `update()` patches (see `coalesce`)."""

    def defer(self, control: BaseControl) -> None:
        """Remember that `control` changed; send its patch later."""

    def flush(self) -> None:
        """Send every pending patch now."""


_sinks: weakref.WeakKeyDictionary[Session, PatchSink] = weakref.WeakKeyDictionary()


def set_patch_sink(session: Session, sink: PatchSink | None) -> None:
    """Route the session's plain `update()` patches to `sink` (None: directly)."""
    if sink is None:
        _sinks.pop(session, None)
    else:
        _sinks[session] = sink


_ORDERED_ACTIONS = (MessageAction.INVOKE_METHOD, MessageAction.SESSION_CRASHED)


def _install() -> None:
    if getattr(FletApp, "_flet_resilient_installed", False):
        return
    FletApp._flet_resilient_installed = True  # type: ignore[attr-defined]
    FletApp._FletApp__send_queue = _SendQueueSlot()  # type: ignore[attr-defined]

    original_handle = FletApp.handle
    original_send_loop = FletApp._FletApp__send_loop  # type: ignore[attr-defined]
    original_receive_loop = FletApp._FletApp__receive_loop  # type: ignore[attr-defined]
    original_close = Session.close
    original_patch_control = Session.patch_control
    original_send_message = FletApp.send_message
    original_page = BaseControl.page.fget  # type: ignore[attr-defined]

    @functools.wraps(original_handle)
    async def handle(self: FletApp, websocket: Any) -> None:
        watch_loop()
        _live_apps.add(self)
        try:
            await original_handle(self, websocket)
        except Exception as exc:  # the send loop died on a vanished client
            logger.debug("Flet socket ended with %r", exc)
        finally:
            _live_apps.discard(self)
            session = self._FletApp__session  # type: ignore[attr-defined]
            if session is not None and session.connection is self:
                await app_manager.disconnect_session(
                    _session_key(self),
                    self._FletApp__session_timeout_seconds,  # type: ignore[attr-defined]
                )

    @functools.wraps(original_send_loop)
    async def send_loop(self: FletApp) -> None:
        websocket = self._FletApp__websocket  # type: ignore[attr-defined]
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
        queue = self._FletApp__send_queue  # type: ignore[attr-defined]
        if self._FletApp__session is None and queue is not None:  # type: ignore[attr-defined]
            queue.put_nowait(None)  # never registered: stop the send loop

    @functools.wraps(original_close)
    def close(self: Session) -> None:
        original_close(self)
        for hook in list(_close_hooks):
            try:
                hook(self)
            except Exception:
                logger.exception("session-closed hook %r failed", hook)

    @functools.wraps(original_patch_control)
    def patch_control(
        self: Session, control: BaseControl, *args: Any, **kw: Any
    ) -> None:
        sink = _sinks.get(self)
        if sink is None or args or kw:
            original_patch_control(self, control, *args, **kw)
        else:
            sink.defer(control)

    @functools.wraps(original_send_message)
    def send_message(self: FletApp, message: Any) -> None:
        # One-shot messages must not overtake the patches deferred before them.
        sink = _sinks.get(self._FletApp__session)  # type: ignore[attr-defined]
        if sink is not None and message.action in _ORDERED_ACTIONS:
            sink.flush()
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

    Session.patch_control = patch_control  # type: ignore[method-assign]
    FletApp.send_message = send_message  # type: ignore[method-assign]
    BaseControl.page = property(  # type: ignore[method-assign,assignment]
        functools.wraps(original_page)(page)
    )
    FletApp.handle = handle  # type: ignore[method-assign]
    FletApp._FletApp__send_loop = send_loop  # type: ignore[attr-defined]
    FletApp._FletApp__receive_loop = receive_loop  # type: ignore[attr-defined]
    Session.close = close  # type: ignore[method-assign]


_install()

# --- small accessors used by the mitigations ----------------------------------


def current_page() -> Page | None:
    """The page of the session whose handler is running, if any."""
    return _context_page.get()


def is_flet_event(value: object) -> bool:
    """Whether `value` is an event object Flet passes to handlers."""
    return isinstance(value, Event)


def sessions() -> dict[str, Session]:
    """All sessions Flet currently keeps, keyed by Flet's unique session key."""
    return dict(app_manager._FletAppManager__sessions)  # type: ignore[attr-defined]


def is_connected(session: Session) -> bool:
    """Whether a session currently has a live connection."""
    return session.connection is not None


def _transport_section() -> dict[str, int]:
    queues = [app._FletApp__send_queue for app in list(_live_apps)]  # type: ignore[attr-defined]
    queues = [q for q in queues if isinstance(q, SendQueue)]
    return {
        "sockets": len(queues),
        "backlog_frames": sum(q.qsize() for q in queues),
        "backlog_bytes": sum(q.backlog_bytes for q in queues),
    }


register_section("transport", _transport_section)


def send_queue(session: Session) -> SendQueue | None:
    """The outbound queue of the session's live socket, if connected."""
    queue = getattr(session.connection, "_FletApp__send_queue", None)
    return queue if isinstance(queue, SendQueue) else None


def patch_now(session: Session, control: BaseControl) -> None:
    """Diff and send `control` at once, bypassing any patch sink."""
    Session.patch_control.__wrapped__(session, control)  # type: ignore[attr-defined]


async def close_session(session: Session) -> None:
    """End a session now, as Flet's expiry would (runs close hooks)."""
    for key, candidate in sessions().items():
        if candidate is session:
            await app_manager.delete_session(key)
            return


def control_page(control: BaseControl) -> Page | None:
    """The page a control is mounted on, or None."""
    try:
        return control.page
    except RuntimeError:
        return None


def loop_of(session: Session) -> asyncio.AbstractEventLoop | None:
    """The event loop serving the session's socket, if connected."""
    connection = session.connection
    return connection.loop if connection is not None else None
