"""Token protection for the operator endpoints (metrics, status page).

An endpoint is refused at mount time without a token (from the argument or an
environment variable), so its numbers are never public by accident. A request
is let in with `Authorization: Bearer <token>` (scrapers, curl) or HTTP Basic
auth with the token as the password (browsers: they prompt once, then send it
with every request, the page's own polls included); compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["endpoint_secret", "guarded_route", "mount_routes"]

Handler = Callable[[Any], Awaitable[Any]]


def endpoint_secret(token: str | None, env: str, what: str) -> bytes:
    """The token for endpoint `what`: `token`, else $`env`; none is an error."""
    secret = token or os.environ.get(env)
    if not secret:
        raise ValueError(f"{what} needs token= or ${env}")
    return secret.encode()


def _presented(header: str) -> bytes:
    """The token an `Authorization` header carries (b"" if none or malformed)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip().encode()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return b""
        return decoded.partition(b":")[2]  # any user name; the token is the password
    return b""


def guarded_route(path: str, handler: Handler, secret: bytes, realm: str) -> Any:
    """A GET route at `path` running `handler(request)` for the token holder;
    others get 401 with a Basic challenge naming `realm`."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    challenge = {"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'}

    async def endpoint(request: Request) -> Response:
        given = _presented(request.headers.get("authorization", ""))
        if not hmac.compare_digest(given, secret):
            return Response("unauthorized", status_code=401, headers=challenge)
        response: Response = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        return response

    return Route(path, endpoint, methods=["GET"])


def mount_routes(app: Any, *routes: Any) -> None:
    """Add `routes` to a Flet FastAPI app ahead of Flet's static files, which
    are mounted at "/" and would otherwise match every path."""
    app.router.routes[0:0] = routes
