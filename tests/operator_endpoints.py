"""What the operator-endpoint tests (metrics, status page) share: a small app to
watch, and a GET as a scraper or a browser sends it."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from email.message import Message

import flet as ft

from flet_resilient import coalesce_updates


@coalesce_updates(max_hz=20)
def counter_app(page: ft.Page) -> None:
    """A count and a "+1" button (keys `count`, `inc`)."""
    shown = ft.Text("0", key="count")

    def increment(e: ft.Event) -> None:
        shown.value = str(int(shown.value) + 1)

    page.add(shown, ft.Button("+1", key="inc", on_click=increment))


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
