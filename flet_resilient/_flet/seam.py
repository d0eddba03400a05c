"""Putting the seam in place and taking it out again.

`install()` checks every Flet internal the seam needs (a missing one is an
`UnsupportedFletVersion` naming it), then wraps each `WRAPPERS` method, swaps
FletApp's send-queue slot, flet-web's `msgpack` and the page-build speed-ups.
`uninstall()` puts back exactly what was there, so a test can compare with
Flet as shipped in the same process.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
from flet.messaging.session import Session
from flet_web.fastapi.flet_app import FletApp

from flet_resilient._flet import pagebuild
from flet_resilient._flet.inbound import tolerate_undecodable
from flet_resilient._flet.outbound import SEND_QUEUE, SendQueueSlot
from flet_resilient._flet.version import missing
from flet_resilient._flet.wrappers import WRAPPERS, stock
from flet_resilient.switch import disabled, speedups_off

_MARK = "_flet_resilient_installed"
"""The class attribute on FletApp that says the seam is in place."""

_held_off: list[bool] = []
"""Non-empty inside `as_shipped()`: `install()` leaves Flet as shipped."""

_replaced: dict[tuple[type, str], Any] = {}
"""What `install()` replaced, by (owner, name), exactly as it was in the
owner's `__dict__` (a property object for `BaseControl.page`)."""


def check_flet() -> None:
    """Refuse to install, naming it, if a Flet method the seam wraps is gone."""
    for owner, name in PATCHED:
        if name not in vars(owner):
            raise missing(owner, name)
    pagebuild.check_flet()


PATCHED: tuple[tuple[type, str], ...] = tuple((o, n) for o, n, _ in WRAPPERS)
"""The Flet methods the seam wraps (tests/test_flet_contract.py checks their
signatures); with the instance attributes read through `version.private`,
this is the written list of what flet-resilient depends on."""


def install() -> None:
    """Wrap Flet's methods, once (a decorator, `serve()` or the test server
    calls it; importing flet-resilient does not). FLET_RESILIENT_DISABLE=1
    leaves Flet exactly as shipped."""
    if disabled() or installed() or _held_off:
        return
    check_flet()
    setattr(FletApp, _MARK, True)
    _replaced[(FletApp, SEND_QUEUE)] = vars(FletApp).get(SEND_QUEUE)
    setattr(FletApp, SEND_QUEUE, SendQueueSlot())
    tolerate_undecodable()
    for owner, name, wrapper in WRAPPERS:
        _wrap(owner, name, wrapper)
    if not speedups_off():
        pagebuild.speedups(True)


def uninstall() -> None:
    """Put back everything `install()` changed in Flet, exactly as it was
    (Flet's own methods, send-queue slot, `msgpack` and page build), so Flet
    runs as shipped again. Meant for tests: a socket served meanwhile keeps
    its send queue, but no longer its session's hooks."""
    if not installed():
        return
    pagebuild.speedups(False)
    for owner, name, _ in reversed(WRAPPERS):
        setattr(owner, name, _replaced.pop((owner, name)))
    sys.modules[FletApp.__module__].msgpack = msgpack  # type: ignore[attr-defined]
    slot = _replaced.pop((FletApp, SEND_QUEUE))
    if slot is None:
        delattr(FletApp, SEND_QUEUE)
    else:
        setattr(FletApp, SEND_QUEUE, slot)
    delattr(FletApp, _MARK)


@contextlib.contextmanager
def as_shipped() -> Iterator[None]:
    """Flet exactly as shipped inside the block, for a side-by-side test: the
    seam uninstalled and `install()` a no-op (so a test server or decorator
    does not put it back); reinstalled after, if it was installed."""
    was_installed = installed()
    uninstall()
    _held_off.append(True)
    try:
        yield
    finally:
        _held_off.pop()
        if was_installed:
            install()


def installed() -> bool:
    """Whether the seam wraps Flet's methods in this process."""
    return bool(getattr(FletApp, _MARK, False))


def _wrap(owner: type, name: str, wrapper: Callable[..., Any]) -> None:
    """Put `wrapper` in place of `owner.name`, keeping Flet's own in `stock`
    (and as the wrapper's `__wrapped__`, with its name and signature)."""
    current = vars(owner)[name]
    _replaced[(owner, name)] = current
    is_property = isinstance(current, property)
    original: Callable[..., Any] = current.fget if is_property else current
    stock[f"{owner.__qualname__}.{name}"] = original
    functools.update_wrapper(wrapper, original)
    wrapper._flet_resilient = True  # type: ignore[attr-defined]
    setattr(owner, name, property(wrapper) if is_property else wrapper)


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
