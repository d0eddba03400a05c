"""Simulated users: connecting, clicking and timing, flaky reconnects, watching."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
import time
from collections.abc import Callable
from typing import Any

from flet_resilient.loadtest.model import ModeResult, Plan, Reconnect, Sample, note
from flet_resilient.testing import Action, FletClient

OFFLINE_S = (0.2, 2.0)  # flaky: how long a user stays away before reconnecting
THINK = (0.5, 1.5)  # a clicker's wait between clicks, times --think
CONNECT_TIMEOUT = 30.0  # one user's connect + register


class User:
    """One simulated user: its client and what it has received so far."""

    def __init__(self, client: FletClient, role: str, rng: random.Random) -> None:
        self.client = client
        self.role = role  # "bystander", "heavy", "viewer"
        self.rng = rng
        self.pending_since: float | None = None  # a click waiting for its patch
        self.scanned = 0  # frames of `client.frames` already counted
        self.last_patch: float | None = None
        self.max_gap = 0.0
        self.gone = False

    def account(
        self, result: ModeResult, window: tuple[float, float], clear: bool
    ) -> tuple[int, int]:
        """Count the frames received in `window` since the last call.

        Returns (frames, bytes) counted; `clear` drops the frames seen.
        """
        frames = self.client.frames
        counted = size = 0
        for frame in frames[self.scanned :]:
            if not window[0] <= frame.at <= window[1]:
                continue  # outside the measured window
            counted += 1
            size += frame.size
            if frame.action == Action.PATCH_CONTROL:
                if self.last_patch is not None:
                    self.max_gap = max(self.max_gap, frame.at - self.last_patch)
                self.last_patch = frame.at
        if clear:
            frames.clear()  # dashboards: do not keep every frame in memory
            self.scanned = 0
        else:
            self.scanned = len(frames)
        result.frames += counted
        result.bytes += size
        return counted, size


def _patched_since(client: FletClient, start: int) -> bool:
    """Whether a patch frame arrived after the first `start` frames."""
    return any(f.action == Action.PATCH_CONTROL for f in client.frames[start:])


def answered(client: FletClient, key: str | None) -> Callable[[], bool]:
    """When a click counts as answered: at the next patch frame, or (`key`)
    once the value of the control with that key changes."""
    if key is None:
        start = len(client.frames)
        return lambda: _patched_since(client, start)
    old = client.value(key)
    return lambda: client.value(key) != old


async def timed_click(
    user: User, key: str, timeout: float, answer_key: str | None = None
) -> tuple[float, bool]:
    """Click `key`; milliseconds until it is answered (see `answered`), and
    whether it was."""
    client = user.client
    done_when = answered(client, answer_key)
    started = time.monotonic()
    user.pending_since = started
    try:
        await client.click(key)
        await client.wait_for(done_when, timeout)
        done = True
    except TimeoutError:
        done = False
    finally:
        user.pending_since = None
    return (time.monotonic() - started) * 1000, done


BUTTON_TYPES = ("Button", "IconButton", "FloatingActionButton", "Chip")


def find_button(client: FletClient, exclude: str | None) -> str | None:
    """The key of the first keyed button in the mirror (not `exclude`)."""
    for control in client.controls.values():
        key, kind = control.get("key"), str(control.get("_c", ""))
        if key and key != exclude and kind.endswith(BUTTON_TYPES):
            return str(key)
    return None


ClientFactory = Callable[[str, int], Any]  # (url, user index) -> a client


def flet_client(url: str, index: int) -> FletClient:
    """A real-protocol Flet client for user `index`."""
    return FletClient(url, user_agent=f"flet-resilient-loadtest/{index}")


async def connect_users(
    plan: Plan,
    url: str,
    result: ModeResult,
    users: list[User],
    upto: int,
    make_client: ClientFactory = flet_client,
) -> None:
    """Connect clients into `users` until there are `upto`, `plan.batch` at a time.

    Roles follow `plan.role`, so a ramp that adds users keeps the shares.
    """
    before = len(users)
    result.heavy_users = plan.heavy_count(upto)

    async def one(index: int) -> None:
        client = make_client(url, index)
        try:
            await asyncio.wait_for(client.connect(), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
            result.connect_failures += 1
            note(result, f"connect: {exc!r}")
            with contextlib.suppress(Exception):
                client.abort()
            return
        rng = random.Random(plan.seed * 1_000_003 + index)
        users.append(User(client, plan.role(index, before, upto), rng))

    for start in range(before, upto, plan.batch):
        await asyncio.gather(
            *(one(i) for i in range(start, min(upto, start + plan.batch)))
        )
    result.connected = len(users)


async def prepare(plan: Plan, users: list[User]) -> None:
    """Wait for every user's page; find the click key; one unmeasured click each.

    Flaky users click only when given `--click-key`.
    """
    if plan.scenario == "dashboard" or not users:
        return
    if plan.click_key is None and plan.scenario == "clicks":
        probe = users[0].client
        with contextlib.suppress(TimeoutError):
            await probe.wait_for(lambda: find_button(probe, plan.heavy_key), 15)
        plan.click_key = find_button(probe, plan.heavy_key)
        if plan.click_key is None:
            keys = sorted(
                {str(c["key"]) for c in probe.controls.values() if "key" in c}
            )
            raise SystemExit(
                f"loadtest: no keyed button found in the app's page (keys: {keys}); "
                "pass --click-key"
            )

    async def ready(user: User) -> None:
        key = plan.heavy_key if user.role == "heavy" else plan.click_key
        if key is None:
            return
        client = user.client
        with contextlib.suppress(TimeoutError, ConnectionError):
            await client.wait_for(lambda: client.find(key), 15)
            if user.role == "bystander":
                warm_up = min(plan.click_timeout, 10)
                await timed_click(user, key, warm_up, plan.answer_key)

    await asyncio.gather(*(ready(u) for u in users))


def first_wait(rng: random.Random) -> float:
    """The wait before a clicker's first click of the window (times --think):
    the shortest wait (the window's start settles meanwhile: the stats
    snapshot before it pauses a big server for tens of milliseconds), then
    what is left of the wait of a user who had been clicking all along (a
    wait as likely as it is long, cut at random). Clicks then come at the
    steady rate at once, not with every user's first click between 0.5 and
    1.5 s, half as many again as the steady rate there (a queue the server
    was then measured by)."""
    low, high = THINK
    wait = math.sqrt(rng.uniform(low * low, high * high))
    return low + rng.uniform(0, wait)


async def clicker(
    user: User, plan: Plan, result: ModeResult, start: float, deadline: float
) -> None:
    """Click at random intervals until `deadline`, recording click->patch times."""
    heavy = user.role == "heavy"
    key = plan.heavy_key if heavy else plan.click_key
    assert key is not None
    samples = result.heavy if heavy else result.bystander
    wait = first_wait(user.rng)
    while True:
        await asyncio.sleep(wait * plan.think)
        wait = user.rng.uniform(*THINK)
        if time.monotonic() >= deadline:
            return
        clicked = time.monotonic()
        answer = None if heavy else plan.answer_key
        ms, done = await timed_click(user, key, plan.click_timeout, answer)
        samples.append(Sample(clicked - start, ms, done))


async def flaky_user(
    user: User, plan: Plan, result: ModeResult, start: float, deadline: float
) -> None:
    """Stay online a while (clicking), vanish abruptly, come back with the session."""
    while time.monotonic() < deadline:
        online = user.rng.uniform(0.5, 1.5) * plan.drop_every
        online_until = time.monotonic() + online
        while time.monotonic() < min(online_until, deadline):
            await asyncio.sleep(user.rng.uniform(0.5, 1.5) * plan.think)
            if plan.click_key and time.monotonic() < deadline:
                clicked = time.monotonic()
                ms, done = await timed_click(
                    user, plan.click_key, plan.click_timeout, plan.answer_key
                )
                result.bystander.append(Sample(clicked - start, ms, done))
        if time.monotonic() >= deadline:
            return
        old = user.client
        user.account(result, (start, deadline), clear=False)
        old.abort()
        await asyncio.sleep(user.rng.uniform(*OFFLINE_S))
        again = FletClient(
            old.ws_url, session_id=old.session_id, user_agent=old.user_agent
        )
        again.storage = dict(old.storage)
        began = time.monotonic()
        try:
            await asyncio.wait_for(again.connect(), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
            result.reconnect_failures += 1
            note(result, f"reconnect: {exc!r}")
            user.gone = True
            return
        ms = (time.monotonic() - began) * 1000
        result.reconnects.append(
            Reconnect(began - start, ms, again.session_id != old.session_id)
        )
        user.client, user.scanned, user.last_patch = again, 0, None
        if plan.click_key:
            with contextlib.suppress(TimeoutError):
                await again.wait_for(
                    functools.partial(again.find, plan.click_key), plan.click_timeout
                )


async def viewer(deadline: float) -> None:
    """Dashboard users only receive."""
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def guarded(user: User, result: ModeResult, behaviour: Callable[[], Any]) -> None:
    """Run one user's behaviour; a dropped connection retires the user."""
    try:
        await behaviour()
    except ConnectionError:
        user.gone = True
        note(result, f"{user.role}: the server closed the connection")
    except Exception as exc:
        user.gone = True
        note(result, f"{user.role}: {exc!r}")
