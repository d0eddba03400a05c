"""Survive flaky networks: session takeover, bounded replay, paused producers.

`@buffer_reconnects()` on `main(page)`:

* a client re-registering with the id of a session whose old socket is still
  attached (half-open after a Wi-Fi -> cellular switch) takes the session over
  instead of getting a new one; by default the session key no longer includes
  the client IP, so an IP change keeps the session too (User-Agent still binds);
* one-shot messages (`invoke_method` calls, error reports) that a reconnect's
  full-page resend cannot recover are kept, bounded by count, bytes and age
  (`window`), and replayed after the reconnect; an `invoke_method` is kept
  until the client answers it, so one sent into a dead socket is delivered
  again on the new one (at least once), and its caller gets the result;
* `await connected(page)` lets background producers pause while nobody listens.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count as sequence
from typing import Any, Literal

import anyio
from flet.controls.page import Page
from flet.messaging.session import Session

from flet_resilient import _flet
from flet_resilient.background import spawn
from flet_resilient.checks import check_positive_int, check_seconds
from flet_resilient.mainwrap import Main, wrap_main
from flet_resilient.metrics import count, register_section
from flet_resilient.session_data import SessionField
from flet_resilient.switch import disabled

__all__ = ["ReplayBuffer", "buffer_reconnects", "connected", "is_connected"]

logger = logging.getLogger("flet_resilient.reconnect")

Overflow = Literal["drop_oldest", "reload"]
OVERFLOWS: tuple[Overflow, ...] = ("drop_oldest", "reload")


@dataclass(frozen=True)
class ReconnectOptions:
    """What `buffer_reconnects` was asked for (on its main: `POLICY_ATTRIBUTE`)."""

    window: float
    max_messages: int
    max_bytes: int
    overflow: Overflow
    bind_ip: bool


@dataclass
class _Entry:
    message: Any
    size: int
    at: float
    invoke: tuple[int, str] | None  # (control_id, call_id) of an invoke_method
    sent: bool  # went out on a socket (maybe a dead one) vs held while offline


class ReplayBuffer:
    """One session's kept one-shot messages, replayed on re-attach.

    Two kinds of entries: messages *held* while the session had no socket
    (Flet would drop them), and `invoke_method` requests *sent* on a socket
    that may turn out dead, tracked until answered. Bounds, overflow policy
    and expiry only ever fail callers of held messages; a sent request that
    no longer fits is simply not tracked any more (its caller keeps waiting
    for the client's answer, as in plain Flet). A message larger than
    `max_bytes` is never kept: held, its invoke caller fails at once (an
    error report is dropped with a warning); sent, it goes out untracked.

    Safe from any thread: a worker thread's one-shot message (`page.error()`
    from `page.run_thread`) is handed to the loop the buffer was created on,
    in order, and decided and sent there.
    """

    def __init__(self, session: Session, options: ReconnectOptions) -> None:
        self._session = weakref.ref(session)
        self.options = options
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._calls: dict[str, int] = {}
        self._seq = sequence()
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    # --- _flet.Outbox ---------------------------------------------------------

    def capture(self, message: Any) -> bool:
        session = self._session()
        if session is None or not _flet.is_one_shot(message):
            return False
        if self._handed_to_loop(self._capture_or_send, message):
            return True  # decided on the loop, after the thread's earlier patches
        offline = session.connection is None
        invoke = _flet.invoke_call(message)
        if offline or invoke is not None:
            size = _flet.message_size(message)
            if size > self.options.max_bytes:
                self._refuse(session, invoke, size, held=offline)
            else:
                self._keep(message, invoke, size, sent=not offline)
        return offline  # Flet would drop it while disconnected: we keep it

    def _capture_or_send(self, message: Any) -> None:
        """On the loop: what `capture` does, then send what it did not keep."""
        session = self._session()
        if session is not None and not self.capture(message):
            _flet.resend(session, message)

    def answered(self, call_id: str) -> None:
        if self._handed_to_loop(self.answered, call_id):
            return
        seq = self._calls.get(call_id)
        if seq is not None:
            self._remove(seq)

    # --- lifecycle ----------------------------------------------------------------

    def replay(self) -> None:
        """Re-send what is kept, in order, on the session's new socket."""
        if self._handed_to_loop(self.replay):
            return
        session = self._session()
        if session is None:
            return
        self.expire()
        for seq, entry in list(self._entries.items()):
            if entry.invoke is not None and not _flet.invoke_pending(
                session, entry.invoke[1]
            ):
                self._remove(seq)  # its caller gave up (timeout or cancel)
                continue
            _flet.resend(session, entry.message)
            count("reconnect.replayed")
            if entry.invoke is None:
                self._remove(seq)
            else:
                entry.sent = True  # tracked until the client answers

    def expire(self) -> None:
        """Forget what is older than `window`; callers of held messages fail."""
        if self._handed_to_loop(self.expire):
            return
        deadline = time.monotonic() - self.options.window
        for seq, entry in list(self._entries.items()):
            if entry.at >= deadline:
                break
            if entry.sent:
                self._untrack(seq)
            else:
                self._drop(seq, "reconnect.expired", "the client did not come back")
        self._schedule_expiry()

    # --- bookkeeping -----------------------------------------------------------------

    def _handed_to_loop(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Off the loop thread, queue `fn(*args)` on the loop (in order): True."""
        if threading.get_ident() == self._loop_thread:
            return False
        self._loop.call_soon_threadsafe(fn, *args)
        return True

    def _refuse(
        self, session: Session, invoke: tuple[int, str] | None, size: int, held: bool
    ) -> None:
        """Never keep a message larger than the whole buffer; fail a held one now."""
        count("reconnect.oversize")
        if not held:
            return  # it goes out on the live socket, untracked (as in plain Flet)
        why = (
            f"the client is away and this message ({size} bytes) is too large to "
            f"keep (buffer_reconnects max_bytes {self.options.max_bytes})"
        )
        if invoke is not None:
            self._fail(invoke, why)
            return
        logger.warning(
            "error report for session %s dropped: %s", _flet.session_tag(session), why
        )

    def _keep(
        self, message: Any, invoke: tuple[int, str] | None, size: int, sent: bool
    ) -> None:
        seq = next(self._seq)
        self._entries[seq] = _Entry(message, size, time.monotonic(), invoke, sent)
        self.bytes += size
        if invoke is not None:
            self._calls[invoke[1]] = seq
        count("reconnect.buffered")
        while self._over_bounds() and (oldest := self._oldest(sent=True)) is not None:
            self._untrack(oldest)
        if self._over_bounds():
            self._overflow()
        self._schedule_expiry()

    def _over_bounds(self) -> bool:
        return (
            len(self._entries) > self.options.max_messages
            or self.bytes > self.options.max_bytes
        )

    def _oldest(self, sent: bool) -> int | None:
        return next((q for q, e in self._entries.items() if e.sent is sent), None)

    def _overflow(self) -> None:
        count("reconnect.overflows")
        if self.options.overflow == "drop_oldest":
            while self._over_bounds():  # ends: no entry alone exceeds max_bytes
                self._drop(next(iter(self._entries)), "reconnect.dropped", "overflow")
            return
        # "reload": give the session up; the client reloads into a fresh one.
        for seq in list(self._entries):
            self._drop(seq, "reconnect.dropped", "overflow, session reloaded")
        session = self._session()
        if session is not None:
            tag = _flet.session_tag(session)
            logger.warning("replay buffer of %s overflowed: ending it", tag)
            spawn(_flet.close_session(session))

    def _schedule_expiry(self) -> None:
        if self._timer is not None or not self._entries:
            return
        oldest = next(iter(self._entries.values()))
        delay = max(0.0, oldest.at + self.options.window - time.monotonic())
        self._timer = self._loop.call_later(
            delay, self._on_timer, context=contextvars.Context()
        )

    def _on_timer(self) -> None:
        self._timer = None
        self.expire()

    def _untrack(self, seq: int) -> None:
        self._remove(seq)
        count("reconnect.untracked")

    def _drop(self, seq: int, counter: str, why: str) -> None:
        entry = self._remove(seq)
        count(counter)
        if entry.invoke is not None:
            window = self.options.window
            self._fail(entry.invoke, f"{why} (buffer_reconnects window {window} s)")

    def _fail(self, invoke: tuple[int, str], why: str) -> None:
        """Make the caller awaiting an `invoke_method` raise a clear RuntimeError."""
        session = self._session()
        if session is not None:
            _flet.fail_invoke(session, *invoke, f"invoke_method not delivered: {why}")

    def _remove(self, seq: int) -> _Entry:
        entry = self._entries.pop(seq)
        self.bytes -= entry.size
        if entry.invoke is not None:
            self._calls.pop(entry.invoke[1], None)
        return entry


_buffers: SessionField[ReplayBuffer] = SessionField("replay")
_presence: SessionField[anyio.Event] = SessionField("presence")


def _on_attached(session: Session) -> None:
    count("reconnect.reconnects")
    _presence_event(session).set()
    buffer = _buffers.get(session)
    if buffer is not None:
        buffer.replay()


def _on_disconnected(session: Session) -> None:
    count("reconnect.disconnects")
    if _presence_event(session).is_set():
        _presence[session] = anyio.Event()


_flet.on_session("attached", _on_attached)
_flet.on_session("disconnected", _on_disconnected)


def _presence_event(session: Session) -> anyio.Event:
    event = _presence.get(session)
    if event is None:
        event = _presence[session] = anyio.Event()
        if session.connection is not None:
            event.set()
    return event


def is_connected(page: Page) -> bool:
    """Whether someone is connected to this page's session right now."""
    return page.session.connection is not None


async def connected(page: Page) -> None:
    """Wait until the page's session has a live socket (returns at once if so).

    Put `await connected(page)` at the top of a background loop so it pauses
    while the user is away instead of diffing a page nobody sees.
    """
    if not is_connected(page):
        await _presence_event(page.session).wait()


def buffer_reconnects(
    window: float = 30.0,
    *,
    max_messages: int = 100,
    max_bytes: int = 256 * 1024,
    overflow: Overflow = "drop_oldest",
    bind_ip: bool = False,
) -> Callable[[Main], Main]:
    """Decorate `main(page)` so sessions survive drops of up to `window` s.

    Args:
        window: seconds one-shot messages are kept for a client that is away.
        max_messages: most one-shot messages a session's replay buffer keeps.
        max_bytes: most bytes it keeps (a bigger message is refused).
        overflow: "drop_oldest" (oldest kept messages are dropped, their
            invoke callers get an error) or "reload" (the session is ended;
            the returning client starts a fresh one).
        bind_ip: keep Flet's binding of the session to the client IP
            (default False: a changing mobile IP keeps the session).
    """
    if callable(window):
        raise TypeError("use @buffer_reconnects() or @buffer_reconnects(window=...)")
    check_seconds("window", window)
    check_positive_int("max_messages", max_messages)
    check_positive_int("max_bytes", max_bytes)
    if overflow not in OVERFLOWS:
        raise ValueError(f"overflow must be one of {OVERFLOWS}, got {overflow!r}")
    options = ReconnectOptions(window, max_messages, max_bytes, overflow, bind_ip)

    def install(page: Page) -> None:
        buffer = ReplayBuffer(page.session, options)
        _buffers[page.session] = buffer
        _flet.add_outbox(page.session, buffer)

    def decorate(main: Main) -> Main:
        if disabled():
            return main
        wrapped = wrap_main(main, install, "buffer_reconnects")
        setattr(wrapped, POLICY_ATTRIBUTE, options)
        return wrapped

    return decorate


POLICY_ATTRIBUTE = "__flet_resilient_reconnect__"
"""Where a decorated `main` carries its `ReconnectOptions` (server-level)."""


def _options(main: Any) -> ReconnectOptions | None:
    """The reconnect options of an app's `main`, if it buffers reconnects."""
    return getattr(main, POLICY_ATTRIBUTE, None)


async def _take_over(session: Session, main: Any) -> None:
    """A client of a `buffer_reconnects` app takes its session over from a
    stale, still-attached socket (Flet would make it a brand-new one)."""
    if _options(main) is None:
        return
    count("reconnect.takeovers")
    tag = _flet.session_tag(session)
    logger.info("session %s taken over from a stale socket", tag)
    await _flet.take_over(session)


def _keyed_without_ip(main: Any) -> bool:
    """Unless `bind_ip`, a session outlives its client's IP (Wi-Fi -> cellular)."""
    options = _options(main)
    return options is not None and not options.bind_ip


_flet.on_stale_socket(_take_over)
_flet.key_without_ip(_keyed_without_ip)


def _section() -> dict[str, Any]:
    buffers = list(_buffers.values())
    return {
        "sessions": len(buffers),
        "buffered_messages": sum(len(b) for b in buffers),
        "buffer_bytes": sum(b.bytes for b in buffers),
    }


register_section("reconnect", _section)
