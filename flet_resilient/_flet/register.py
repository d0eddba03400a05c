"""A client's REGISTER_CLIENT, vetted: a session goes back only to its app and
to the browser holding its binding cookie; one on a stale socket is offered to
the `on_stale_socket` hooks (which may `take_over` it)."""

from __future__ import annotations

import logging
import secrets
import weakref
from typing import Any

from flet.messaging.session import Session
from flet_web.fastapi.flet_app import FletApp, app_manager

from flet_resilient._flet.accessors import session_tag
from flet_resilient._flet.hooks import run_hooks, session_main, stale_hooks
from flet_resilient._flet.version import private
from flet_resilient.background import spawn
from flet_resilient.metrics import count
from flet_resilient.session_data import data_of

logger = logging.getLogger("flet_resilient")


_from_elsewhere: weakref.WeakSet[FletApp] = weakref.WeakSet()
"""Sockets that presented a session id this process lacks (their session,
once made, is marked `from_elsewhere`)."""


async def vet_register(app: FletApp, body: dict[str, Any]) -> None:
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
        for hook in list(stale_hooks):
            await hook(candidate, main)


async def take_over(session: Session) -> None:
    """Detach `session` from its stale socket and close that socket, so the
    registering client gets the session back."""
    stale = session.connection
    if stale is None:
        return
    websocket = private(stale, "_FletApp__websocket")
    await app_manager.disconnect_session(
        private(stale, "_FletApp__get_unique_session_id")(session.id),
        private(stale, "_FletApp__session_timeout_seconds"),
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


def browser_binding(app: FletApp) -> str | None:
    """The binding cookie the app's socket handshake carried, if any."""
    websocket = private(app, "_FletApp__websocket")
    cookies = getattr(websocket, "cookies", None) or {}
    value = cookies.get(BINDING_COOKIE)
    return value if isinstance(value, str) and value else None


class BindingCookie:
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
    """Whether an HTTP request carries a binding cookie already."""
    marker = f"{BINDING_COOKIE}=".encode()
    return any(k == b"cookie" and marker in v for k, v in scope.get("headers", []))


def note_registered(app: FletApp) -> None:
    """After Flet handled a REGISTER_CLIENT (even one that failed halfway):
    remember the session's app and announce a session Flet just made."""
    session = app._FletApp__session
    if session is None:
        return
    data = data_of(session)
    if data.main is None:
        data.main = app._FletApp__main
        data.binding = browser_binding(app)
        run_hooks("created", session)
    if app in _from_elsewhere:
        _from_elsewhere.discard(app)
        data.from_elsewhere = True
