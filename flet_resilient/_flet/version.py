"""The Flet releases the seam was written for, and the error for anything else.

Every Flet internal the seam needs is checked by name (`missing`, `private`):
a renamed one is an `UnsupportedFletVersion` naming it, never a silent default.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

SUPPORTED_FLET = ("1.0.",)
"""Flet release series this seam was tested against (1.0.5)."""

FLET_VERSION = version("flet")
"""The installed Flet release."""


class UnsupportedFletVersion(ImportError):
    """Raised at import when the installed Flet is not a tested release."""


def check_version() -> str:
    """The installed Flet release, or `UnsupportedFletVersion` if untested."""
    installed = version("flet")
    if not installed.startswith(SUPPORTED_FLET):
        raise UnsupportedFletVersion(
            f"flet-resilient supports flet {', '.join(v + 'x' for v in SUPPORTED_FLET)}"
            f" but flet {installed} is installed; pin 'flet>=1.0,<1.1'."
        )
    return installed


def missing(owner: Any, name: str) -> UnsupportedFletVersion:
    """The error for a Flet internal (of a class or module) the seam needs and
    this Flet lacks."""
    where = getattr(owner, "__qualname__", owner.__name__)
    return UnsupportedFletVersion(
        f"flet {FLET_VERSION}: {where}.{name} is missing; "
        f"flet-resilient was tested with flet {SUPPORTED_FLET[0]}x"
    )


def private(obj: object, name: str) -> Any:
    """A Flet private attribute, or a clear error naming it (never a default)."""
    try:
        return getattr(obj, name)
    except AttributeError:
        raise missing(type(obj), name) from None
