"""App state as bytes: a dataclass or dict state to msgpack and back."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import msgpack

__all__ = ["decode_state", "encode_state"]


def encode_state(state: Any) -> bytes:
    """msgpack bytes of a dataclass or dict state; TypeError names a bad field."""
    is_instance = dataclasses.is_dataclass(state) and not isinstance(state, type)
    fields = dataclasses.asdict(state) if is_instance else state
    if not isinstance(fields, dict):
        raise TypeError(
            f"app state must be a dataclass or a dict, got {type(state).__name__}"
        )
    for name, value in fields.items():
        try:
            msgpack.packb(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(
                f"app state field {name!r} ({type(value).__name__}) cannot be "
                "stored: msgpack encodes None, bool, int, float, str, bytes and "
                "lists/dicts of these"
            ) from exc
    return msgpack.packb(fields)


def decode_state(factory: Callable[[], Any], data: bytes) -> Any:
    """A state made by `factory` from stored bytes (unknown fields ignored)."""
    fields = msgpack.unpackb(data)
    if dataclasses.is_dataclass(factory):
        known = {f.name for f in dataclasses.fields(factory)}
        return factory(**{k: v for k, v in fields.items() if k in known})
    state = factory()
    state.update(fields)
    return state
