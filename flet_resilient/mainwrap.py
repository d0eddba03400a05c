"""Wrap an app's `main(page)` so a mitigation is installed before it runs.

Flet inspects `main` to decide how to call it, so the wrapper keeps its kind
(coroutine function or plain function).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from flet.controls.page import Page

from flet_resilient import _flet

__all__ = ["Main", "wrap_main"]

Main = TypeVar("Main", bound=Callable[..., Any])


def wrap_main(main: Main, install: Callable[[Page], object], decorator: str) -> Main:
    """Return `main` with `install(page)` run first, keeping main's kind."""
    if not callable(main):
        raise TypeError(f"{decorator} decorates the app's main(page), got {main!r}")
    _flet.install()
    if inspect.isgeneratorfunction(main) or inspect.isasyncgenfunction(main):
        raise TypeError(
            f"{decorator}: generator mains are not supported; "
            "use a plain or async main(page)"
        )
    if inspect.iscoroutinefunction(main):

        @functools.wraps(main)
        async def async_main(page: Page) -> Any:
            install(page)
            return await main(page)

        return async_main  # type: ignore[return-value]

    @functools.wraps(main)
    def sync_main(page: Page) -> Any:
        install(page)
        return main(page)

    return sync_main  # type: ignore[return-value]
