"""Where the mitigations plug into the seam: session, socket and shutdown
hooks, the patch sink and outboxes of a session, and the registries the
wrappers consult (live sockets, apps keyed without the client IP).

Nothing here touches Flet; the wrappers (`wrappers`) call these."""

from __future__ import annotations

import contextvars
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from flet.controls.base_control import BaseControl
from flet.messaging.session import Session
from flet_web.fastapi.flet_app import FletApp

from flet_resilient.session_data import data_of, find

logger = logging.getLogger("flet_resilient")


SessionEvent = Literal[
    "created", "built", "activity", "handled", "attached", "disconnected", "closed"
]
_session_hooks: dict[str, list[Callable[[Session], None]]] = {
    "created": [],
    "built": [],
    "activity": [],
    "handled": [],
    "attached": [],
    "disconnected": [],
    "closed": [],
}


def on_session(event: SessionEvent, hook: Callable[[Session], None]) -> None:
    """Call `hook(session)` (on the loop) when Flet has made it for a client
    ("created", before its `main` runs, even if it never does), when its page
    is built (`main` and the update after it ended, "built"), when its
    client sends an event or a property change ("activity"), when the handler
    of a client event has ended ("handled"), when it is re-attached to a
    socket, loses its socket, or is closed by Flet (expiry or eviction)."""
    if hook not in _session_hooks[event]:
        _session_hooks[event].append(hook)


def run_hooks(event: SessionEvent, session: Session) -> None:
    """Call the `event` hooks; one that fails is logged, the others still run."""
    for hook in list(_session_hooks[event]):
        try:
            hook(session)
        except Exception:
            logger.exception("session %s hook %r failed", event, hook)


live_apps: weakref.WeakSet[FletApp] = weakref.WeakSet()
"""The sockets being served now (their FletApp)."""


class HandlerRun:
    """One client event being handled (its task and the tasks it starts)."""

    __slots__ = ("active", "answered")

    def __init__(self) -> None:
        self.active = True
        self.answered = False  # a mitigation already sent its first response


handler_run: contextvars.ContextVar[HandlerRun | None] = contextvars.ContextVar(
    "flet_resilienthandler_run", default=None
)


def current_handler() -> HandlerRun | None:
    """The client event whose handler is running now, if any."""
    run = handler_run.get()
    return run if run is not None and run.active else None


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


held: dict[int, PatchSink] = {}
"""id(control) -> the sink holding its patch: a repeated `update()` of a
control that is still pending skips Flet's page lookups (most of its cost)."""


def hold(control: BaseControl, sink: PatchSink) -> None:
    """`sink` holds `control`'s patch until it calls `release`."""
    held[id(control)] = sink


def release(control: BaseControl) -> None:
    """`control`'s patch is no longer held (sent or dropped)."""
    held.pop(id(control), None)


def set_patch_sink(session: Session, sink: PatchSink | None) -> None:
    """Route the session's plain `update()` patches and its components'
    re-renders to `sink` (None: directly)."""
    data = find(session) if sink is None else data_of(session)
    if data is not None:
        data.sink = sink


def sink_of(session: Session) -> PatchSink | None:
    """The session's patch sink, if it has one."""
    data = find(session)
    return data.sink if data is not None else None


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


def outboxes_of(session: Session) -> list[Outbox]:
    """The outboxes watching the session's messages (often none)."""
    data = find(session)
    return data.outboxes if data is not None else []


def came_from_elsewhere(session: Session) -> bool:
    """Whether the session began as a reconnect of a session this process
    never had (e.g. one held by another worker, or by a restarted one)."""
    data = find(session)
    return data is not None and data.from_elsewhere


stale_hooks: list[Callable[[Session, Any], Awaitable[None]]] = []
ip_free: list[Callable[[Any], bool]] = []
"""Predicates on an app's `main`: its sessions are keyed without the client IP."""
_socket_hooks: list[Callable[[], object]] = []


def on_stale_socket(hook: Callable[[Session, Any], Awaitable[None]]) -> None:
    """Await `hook(session, main)` when a client of app `main` registers with
    the id of a session still attached to another (stale) socket: Flet alone
    would answer it with a brand-new session."""
    if hook not in stale_hooks:
        stale_hooks.append(hook)


def key_without_ip(predicate: Callable[[Any], bool]) -> None:
    """Key the sessions of every app whose `main` satisfies `predicate` by
    page + id + User-Agent only, not the client IP (Flet's default)."""
    if predicate not in ip_free:
        ip_free.append(predicate)


def on_socket(hook: Callable[[], object]) -> None:
    """Call `hook()` on the loop whenever a client socket opens."""
    if hook not in _socket_hooks:
        _socket_hooks.append(hook)


def run_socket_hooks() -> None:
    """Call the `on_socket` hooks (a failing one is logged)."""
    for hook in list(_socket_hooks):
        try:
            hook()
        except Exception:
            logger.exception("socket hook %r failed", hook)


def session_main(session: Session) -> Any:
    """The app `main` the session was created for (None if not known)."""
    data = find(session)
    return data.main if data is not None else None


startup_hooks: list[Callable[[], object]] = []


def on_startup(hook: Callable[[], object]) -> None:
    """Call `hook()` on the server's loop when it starts (ASGI lifespan
    startup), after Flet's own start, before any client connects."""
    if hook not in startup_hooks:
        startup_hooks.append(hook)


shutdown_hooks: list[Callable[[], Awaitable[None]]] = []


def on_shutdown(hook: Callable[[], Awaitable[None]]) -> None:
    """Await `hook()` when the server shuts down (ASGI lifespan shutdown, as on
    SIGTERM under uvicorn or gunicorn), before Flet's own cleanup."""
    if hook not in shutdown_hooks:
        shutdown_hooks.append(hook)
