"""Concurrency slots shared fairly between owners (sessions), with a busy policy.

One class serves both limits `offload` needs: the per-session limit (one
owner, policy `queue`/`drop`/`latest`) and the global worker limit (many
owners, free slots handed round-robin so one busy user cannot starve others).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import anyio

from flet_resilient.errors import JobDropped

__all__ = ["FairSlots", "Policy"]

Policy = Literal["queue", "drop", "latest"]
POLICIES: tuple[Policy, ...] = ("queue", "drop", "latest")


@dataclass(eq=False)
class _Waiter:
    event: anyio.Event = field(default_factory=anyio.Event)
    superseded: bool = False


class FairSlots:
    """At most `capacity` holders at once (None: unlimited).

    A call that finds no free slot waits (`queue`), fails with `JobDropped`
    (`drop`), or waits and replaces the same owner's earlier waiters, which
    fail with `JobDropped` (`latest`). Freed slots go to owners in turn.
    """

    def __init__(self, capacity: int | None, policy: Policy = "queue") -> None:
        if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
            raise ValueError(
                f"capacity must be a positive int or None, got {capacity!r}"
            )
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.capacity = capacity
        self.policy = policy
        self.in_use = 0
        self._waiting: OrderedDict[Hashable, deque[_Waiter]] = OrderedDict()

    @property
    def waiting(self) -> int:
        """Calls currently waiting for a slot."""
        return sum(len(queue) for queue in self._waiting.values())

    @property
    def idle(self) -> bool:
        """No holder and nobody waiting."""
        return not self.in_use and not self._waiting

    @asynccontextmanager
    async def slot(self, owner: Hashable = None) -> AsyncIterator[None]:
        """Hold one slot for the body of the `async with`."""
        await self._acquire(owner)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, owner: Hashable) -> None:
        if self.capacity is None or (self.in_use < self.capacity and not self._waiting):
            self.in_use += 1
            return
        if self.policy == "drop":
            raise JobDropped("dropped: the session is still busy with an earlier call")
        queue = self._waiting.setdefault(owner, deque())
        if self.policy == "latest":
            for stale in queue:
                stale.superseded = True
                stale.event.set()
            queue.clear()
        waiter = _Waiter()
        queue.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.event.is_set() and not waiter.superseded:
                self._release()  # a slot was handed over just as we were cancelled
            elif waiter in queue:
                queue.remove(waiter)
                if not queue:
                    del self._waiting[owner]
            raise
        if waiter.superseded:
            raise JobDropped("replaced by a newer call from the same session")

    def _release(self) -> None:
        if not self._waiting:
            self.in_use -= 1
            return
        owner, queue = next(iter(self._waiting.items()))
        waiter = queue.popleft()
        if queue:
            self._waiting.move_to_end(owner)  # round-robin between owners
        else:
            del self._waiting[owner]
        waiter.event.set()  # the slot passes straight to the waiter
