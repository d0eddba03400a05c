"""GET an operator endpoint (metrics, status page) as a scraper or browser would."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from email.message import Message


def basic(token: str, user: str = "ops") -> str:
    """The `Authorization` value a browser sends after its login prompt."""
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def get(url: str, authorization: str | None = None) -> tuple[int, Message, str]:
    """(status, headers, body) of a GET with that `Authorization` header, if any."""
    request = urllib.request.Request(url)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, ""
