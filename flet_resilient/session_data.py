"""One object per Flet session: everything flet-resilient keeps for it.

The seam and each mitigation used to keep their own weakly keyed dict per
session (nine of them, two holding the same object twice). They now share one
`SessionData` per session, weakly keyed so it goes with its session: what a
session holds is found in one place, and a new mitigation adds a field here
instead of another registry. `SessionField` reads one field of every session
as a mapping (the shape the mitigations' code and tests use).
"""

from __future__ import annotations

import weakref
from collections.abc import ItemsView, Iterator, MutableMapping, ValuesView
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import anyio
    from flet.messaging.session import Session

    from flet_resilient._flet.hooks import Outbox, PatchSink

__all__ = ["SessionData", "SessionField", "data_of", "find"]

T = TypeVar("T")


@dataclass(eq=False)
class SessionData:
    """What the seam and the mitigations keep for one session."""

    main: Any = None
    """The app `main` the session was created for (the seam's ownership check)."""
    binding: str | None = None
    """The browser-binding cookie of the browser that created it."""
    from_elsewhere: bool = False
    """It began as a reconnect of a session this process never had."""
    sink: PatchSink | None = None
    """Takes the session's plain `update()` patches (a coalescer): a deferred
    patch has one sender, so there is one sink."""
    outboxes: list[Outbox] = field(default_factory=list)
    """See every message the session sends (the replay buffer, and any other
    mitigation that needs outgoing messages)."""
    coalescer: Any = None
    """`coalesce.Coalescer` (also the sink)."""
    replay: Any = None
    """`reconnect.ReplayBuffer` (also an outbox)."""
    presence: anyio.Event | None = None
    """Set while a client is connected (`reconnect.connected`)."""
    tracker: Any = None
    """`evict._Tracker` of the app that evicts it."""
    state: Any = None
    """`persist.Bound`: its app state, saved behind."""
    jobs: set[anyio.CancelScope] = field(default_factory=set)
    """Its running `@offload` calls (cancelled when it closes)."""


_data: weakref.WeakKeyDictionary[Session, SessionData] = weakref.WeakKeyDictionary()


def data_of(session: Session) -> SessionData:
    """The session's data, made empty on first use."""
    data = _data.get(session)
    if data is None:
        data = _data[session] = SessionData()
    return data


def find(session: Session) -> SessionData | None:
    """The session's data if anything was kept for it (never makes one)."""
    return _data.get(session)


class SessionField(MutableMapping["Session", T], Generic[T]):
    """One `SessionData` field of every session, as a mapping (None: absent)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getitem__(self, session: Session) -> T:
        value = getattr(_data.get(session), self._name, None)
        if value is None:
            raise KeyError(session)
        return value

    def __setitem__(self, session: Session, value: T) -> None:
        setattr(data_of(session), self._name, value)

    def __delitem__(self, session: Session) -> None:
        self[session]
        setattr(_data[session], self._name, None)

    def __iter__(self) -> Iterator[Session]:
        return iter([s for s, d in list(_data.items()) if self._has(d)])

    def __len__(self) -> int:
        return sum(1 for d in list(_data.values()) if self._has(d))

    def items(self) -> ItemsView[Session, T]:
        return _FieldItems(self)

    def values(self) -> ValuesView[T]:
        return _FieldValues(self)

    def present(self) -> list[tuple[Session, T]]:
        """(session, value) of every session that has the field, in one pass
        (the mapping's own views look each session up again: stats() reads
        every session's fields at each scrape)."""
        name = self._name
        return [
            (session, value)
            for session, data in list(_data.items())
            if (value := getattr(data, name)) is not None
        ]

    def _has(self, data: SessionData) -> bool:
        return getattr(data, self._name) is not None

    def get(self, session: Session, default: Any = None) -> Any:
        value = getattr(_data.get(session), self._name, None)
        return default if value is None else value


class _FieldItems(ItemsView["Session", T]):
    """`SessionField.items()` in one pass over the sessions' data."""

    _mapping: SessionField[T]

    def __iter__(self) -> Iterator[tuple[Session, T]]:
        return iter(self._mapping.present())


class _FieldValues(ValuesView[T]):
    """`SessionField.values()` in one pass over the sessions' data."""

    _mapping: SessionField[T]

    def __iter__(self) -> Iterator[T]:
        return iter([value for _, value in self._mapping.present()])
