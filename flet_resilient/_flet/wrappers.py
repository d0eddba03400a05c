"""The wrappers: each replaces one Flet method (see `WRAPPERS`) and calls
Flet's own through `stock`, filled by `install()` (`seam`).

* every ended WebSocket ends or disconnects its session (Flet skips
  `disconnect_session` when `send_bytes` raises, leaking "connected" sessions),
  a client that never registers does not leave a send loop behind, and a
  closed session is freed by reference counting (no Session <-> FletApp cycle);
* a session's `update()` patches and components' re-renders go to its patch
  sink, its messages past its outboxes, and the hooks (`hooks`) hear of its
  events; client messages are screened first (`inbound`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import traceback
from collections.abc import Callable
from typing import Any

from flet.components.component import Component
from flet.controls.base_control import BaseControl
from flet.controls.context import _context_page, context
from flet.controls.page import Page, ServiceRegistry
from flet.controls.services.service import Service
from flet.messaging.protocol import MessageAction
from flet.messaging.session import Session
from flet_web.fastapi.flet_app import FletApp, app_manager
from flet_web.fastapi.flet_app_manager import FletAppManager
from flet_web.fastapi.flet_fastapi import FastAPI as FletFastAPI

from flet_resilient._flet.accessors import is_component
from flet_resilient._flet.hooks import (
    HandlerRun,
    handler_run,
    held,
    ip_free,
    live_apps,
    outboxes_of,
    run_hooks,
    run_socket_hooks,
    shutdown_hooks,
    sink_of,
    startup_hooks,
)
from flet_resilient._flet.inbound import GuardedSocket, flet_failed, screen
from flet_resilient._flet.outbound import ORDERED_ACTIONS, QuietMessage, transport_log
from flet_resilient._flet.register import BindingCookie, note_registered
from flet_resilient._flet.services import give_random_id
from flet_resilient.metrics import count

logger = logging.getLogger("flet_resilient")


_from_client: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "flet_resilient_from_client", default=False
)
"""Set while Flet handles a client's CONTROL_EVENT (and so in the handler task
it starts), unlike the connect/disconnect/close events Flet dispatches."""


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


_CLIENT_ACTIVITY = (
    MessageAction.CONTROL_EVENT.value,
    MessageAction.UPDATE_CONTROL_PROPS.value,
)


stock: dict[str, Any] = {}
"""Flet's own methods, by `Owner.name`, as they were before `install()` (a
property's getter for `BaseControl.page`)."""


def _fastapi_init(self: FletFastAPI, *args: Any, **kwargs: Any) -> None:
    """Flet's FastAPI app, plus the browser-binding cookie middleware."""
    stock["FastAPI.__init__"](self, *args, **kwargs)
    self.add_middleware(BindingCookie)


async def _start(self: FletAppManager) -> None:
    """Flet's own start, then the startup hooks (e.g. the fleet's reports)."""
    await stock["FletAppManager.start"](self)
    for hook in list(startup_hooks):
        try:
            hook()
        except Exception:
            logger.exception("startup hook %r failed", hook)


async def _shutdown(self: FletAppManager) -> None:
    """Await the shutdown hooks (e.g. drain), then Flet's own cleanup."""
    for hook in list(shutdown_hooks):
        try:
            await hook()
        except Exception:
            logger.exception("shutdown hook %r failed", hook)
    await stock["FletAppManager.shutdown"](self)


async def _handle(self: FletApp, websocket: Any) -> None:
    """Serve a socket behind the inbound guard; its end always ends or
    disconnects its session (Flet skips that when `send_bytes` raises)."""
    run_socket_hooks()
    live_apps.add(self)
    try:
        await stock["FletApp.handle"](self, GuardedSocket(websocket, self))
    except Exception as exc:  # the send loop died on a vanished client
        logger.debug("Flet socket ended with %r", exc)
    finally:
        live_apps.discard(self)
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
        await stock["FletApp._FletApp__send_loop"](self)
    except Exception:
        if websocket is not None:
            with contextlib.suppress(Exception):
                await websocket.close()
        raise


async def _build_page(self: FletApp) -> None:
    """Flet's page build (the app's `main`, then the update after it); then
    the "built" hooks, even if `main` raised."""
    try:
        await stock["FletApp._FletApp__on_session_created"](self)
    finally:
        session = self._FletApp__session
        if session is not None:
            run_hooks("built", session)


async def _receive_loop(self: FletApp) -> None:
    """Flet's receive loop; a socket that never registered stops its send loop."""
    await stock["FletApp._FletApp__receive_loop"](self)
    queue = self._FletApp__send_queue
    if self._FletApp__session is None and queue is not None:
        queue.put_nowait(None)


def _close(self: Session) -> None:
    """Flet's close, the "closed" hooks, and no Session <-> FletApp cycle."""
    stock["Session.close"](self)
    run_hooks("closed", self)
    # A session closed while connected keeps its socket's FletApp, which
    # points back at it: a cycle only a full gc pass frees (over a second
    # on a big heap). Dropping this edge lets reference counting free the
    # session, page and controls as soon as the socket's handler ends.
    self._Session__conn = None  # type: ignore[attr-defined]


def _attach_connection(self: Session, conn: Any) -> None:
    """Flet's attach, then the "attached" hooks."""
    stock["Session.attach_connection"](self, conn)
    run_hooks("attached", self)


async def _disconnect(self: Session, session_timeout_seconds: int) -> None:
    """Flet's disconnect, then the "disconnected" hooks."""
    await stock["Session.disconnect"](self, session_timeout_seconds)
    run_hooks("disconnected", self)


def _session_send(self: Session, message: Any) -> None:
    """Show the message to each of the session's outboxes; send it unless one
    keeps it."""
    outboxes = outboxes_of(self)
    kept = [outbox.capture(message) for outbox in outboxes] if outboxes else ()
    if not any(kept):
        stock["Session._Session__send_message"](self, message)


def _invoke_results(
    self: Session,
    control_id: int,
    call_id: str,
    result: Any,
    error: str | None,
) -> None:
    """Tell the session's outboxes a call was answered, then Flet."""
    for outbox in outboxes_of(self):
        outbox.answered(call_id)
    stock["Session.handle_invoke_method_results"](
        self, control_id, call_id, result, error
    )


async def _dispatch_event(
    self: Session, control_id: int, event_name: str, event_data: Any
) -> None:
    """Flet's dispatch; a client event's handler runs as a `HandlerRun`."""
    original = stock["Session.dispatch_event"]
    if not _from_client.get():  # Flet's own connect/disconnect/close
        await original(self, control_id, event_name, event_data)
        return
    run = HandlerRun()
    token = handler_run.set(run)
    try:
        await original(self, control_id, event_name, event_data)
    finally:
        run.active = False
        handler_run.reset(token)
        run_hooks("handled", self)


async def _on_message(self: FletApp, data: Any) -> None:
    """Flet's handler of one client message, then registration and activity."""
    registering = data[0] == MessageAction.REGISTER_CLIENT.value
    token = _from_client.set(data[0] == MessageAction.CONTROL_EVENT.value)
    try:
        await stock["FletApp._FletApp__on_message"](self, data)
    finally:
        _from_client.reset(token)
        if registering:
            note_registered(self)
    session = self._FletApp__session
    if data[0] in _CLIENT_ACTIVITY and session is not None:
        run_hooks("activity", session)


async def _screened_message(self: FletApp, data: Any) -> None:
    """Drop what is malformed or refused; hand the rest to Flet, quietly: its
    own failure on a message no longer ends the socket (except a failed
    REGISTER_CLIENT's)."""
    message = await screen(self, data)
    if message is None:
        return
    try:
        await _on_message(self, message)
    except Exception as exc:
        await flet_failed(self, data, exc)


def _unique_session_id(self: FletApp, session_id: str) -> str:
    """Flet's session key; without the client IP for apps a `key_without_ip`
    predicate names (a phone whose IP changes keeps its session)."""
    original = stock["FletApp._FletApp__get_unique_session_id"]
    main = self._FletApp__main
    if not any(predicate(main) for predicate in ip_free):
        return original(self, session_id)
    ip = self._FletApp__client_ip
    self._FletApp__client_ip = ""
    try:
        return original(self, session_id)
    finally:
        self._FletApp__client_ip = ip


def _patch_control(self: Session, control: BaseControl, *args: Any, **kw: Any) -> None:
    """A plain `update()` patch goes to the session's sink, if it has one."""
    sink = sink_of(self)
    if sink is None or _sending.get():  # caused by a diff the sink runs
        stock["Session.patch_control"](self, control, *args, **kw)
    elif _plain_patch(control, args, kw):
        sink.defer(control)
    else:
        sink.flush()  # what was deferred before it goes first
        stock["Session.patch_control"](self, control, *args, **kw)
        sink.bypassed(_patch_shape(args, kw))


def _schedule_update(self: Session, control: BaseControl) -> None:
    """A component's re-render (its state changed in a handler, task or
    thread) waits in the session's sink instead of Flet's updates scheduler."""
    sink = sink_of(self)
    if sink is not None and is_component(control):
        sink.defer(control)
    else:
        stock["Session.schedule_update"](self, control)


def _update(self: BaseControl) -> None:
    """Flet's update, skipped when the control's patch is already pending."""
    sink = held.get(id(self))
    if sink is not None and sink.merge(self):
        context.mark_update_called()  # as Flet's update() would
        return
    stock["BaseControl.update"](self)


def _send_message(self: FletApp, message: Any) -> None:
    """One-shot messages do not overtake the patches deferred before them;
    messages get a short repr (unless flet-web's debug log is on). A message
    for a socket whose send loop has ended is dropped and counted (Flet raised
    into the app's `update()`, ending e.g. a live panel's task for good; the
    client gets the whole page when it reconnects, and `buffer_reconnects`
    has already kept the one-shot messages)."""
    if self._FletApp__send_queue is None:
        count("transport.sent_after_close")
        return
    session = self._FletApp__session
    sink = sink_of(session) if session is not None else None
    if sink is not None and message.action in ORDERED_ACTIONS:
        sink.flush()
    if not transport_log.isEnabledFor(logging.DEBUG):
        message = QuietMessage(message.action, message.body)
    stock["FletApp.send_message"](self, message)


def _page(self: BaseControl) -> Page:
    """Flet's `control.page`; a control added by a still-deferred patch (so
    not mounted yet) is found after the pending patches are sent."""
    original = stock["BaseControl.page"]
    try:
        return original(self)
    except RuntimeError:
        current = _context_page.get()
        sink = sink_of(current.session) if current is not None else None
        if sink is None:
            raise
        sink.flush()
        return original(self)


def _register_service(self: ServiceRegistry, service: Service) -> None:
    """Flet's `register_service`, the service first given a random id (a
    moved user's client may still bind the id the counter gives: `services`)."""
    give_random_id(service)
    stock["ServiceRegistry.register_service"](self, service)


WRAPPERS: tuple[tuple[type, str, Callable[..., Any]], ...] = (
    (FletApp, "handle", _handle),
    (FletApp, "send_message", _send_message),
    (FletApp, "_FletApp__send_loop", _send_loop),
    (FletApp, "_FletApp__receive_loop", _receive_loop),
    (FletApp, "_FletApp__on_message", _screened_message),
    (FletApp, "_FletApp__on_session_created", _build_page),
    (FletApp, "_FletApp__get_unique_session_id", _unique_session_id),
    (FletAppManager, "start", _start),
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
    (ServiceRegistry, "register_service", _register_service),
)
"""Each Flet method the seam wraps, and its wrapper (a property's getter for
`page`)."""

PATCHED: tuple[tuple[type, str], ...] = tuple((o, n) for o, n, _ in WRAPPERS)
"""The Flet methods the seam wraps (tests/test_flet_contract.py checks their
signatures); with the instance attributes read through `version.private`, this is
the written list of what flet-resilient depends on."""


def patch_now(session: Session, control: BaseControl) -> None:
    """Diff and send `control` at once, bypassing any patch sink (a component
    is re-rendered). Patches the diff causes itself (the render's, a dialog
    hook's) go straight out with it."""
    token = _sending.set(True)
    try:
        if is_component(control):
            _render(session, control)
        else:
            stock["Session.patch_control"](session, control)
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
