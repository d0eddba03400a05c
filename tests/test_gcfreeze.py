"""Live pages leave the garbage collector's view; evicted ones are still freed."""

import asyncio
import gc
import subprocess
import sys
import weakref

import flet as ft
import pytest

from flet_resilient import MemoryStore, evict_idle, gcfreeze, stats
from flet_resilient.testing import FletClient, FletServer, wait_until

ROWS = 50


class App:
    """Pages of ROWS texts; weak references to every text it built."""

    def __init__(self, **options) -> None:
        self.texts: list[weakref.ref] = []
        options.setdefault("store", MemoryStore())
        options.setdefault("secret_key", "test-secret")
        self.main = evict_idle(name="gc", sweep_interval=0.2, **options)(self._main)

    def _main(self, page: ft.Page) -> None:
        texts = [ft.Text(f"row {i}") for i in range(ROWS)]
        self.texts += map(weakref.ref, texts)
        page.add(ft.Column(texts), ft.Text("ready", key="ready"))


def collector_sees(refs: list[weakref.ref]) -> int:
    """How many of the live objects the collector's generations still hold."""
    watched = {id(obj) for ref in refs if (obj := ref()) is not None}
    return sum(id(obj) in watched for obj in gc.get_objects())


async def visit(server: FletServer) -> FletClient:
    user = await FletClient(server.ws_url).connect()
    await user.wait_for(lambda: user.value("ready") == "ready")
    return user


async def test_built_pages_leave_the_collectors_view():
    app = App(idle_ttl=60)
    async with FletServer(app.main) as server:
        users = [await visit(server) for _ in range(4)]
        assert len(app.texts) == 4 * ROWS
        # A full pass examines only what was made since: not the pages' texts.
        await wait_until(lambda: collector_sees(app.texts) == 0, timeout=10)
        assert stats()["counters"]["gc.freezes"] >= 1
        assert stats()["gc"]["frozen_objects"] > 4 * ROWS
        await asyncio.gather(*(u.close() for u in users))


async def test_frozen_pages_of_evicted_sessions_are_still_freed():
    gc.collect()
    gc.disable()  # reference counting alone must free them
    try:
        app = App(idle_ttl=60, disconnected_ttl=0.3)
        async with FletServer(app.main) as server:
            users = [await visit(server) for _ in range(4)]
            await wait_until(lambda: collector_sees(app.texts) == 0, timeout=10)
            await asyncio.gather(*(u.close() for u in users))
            await wait_until(lambda: all(r() is None for r in app.texts), timeout=10)
        assert not gc.isenabled()  # the app's own choice, kept
    finally:
        gc.enable()


def test_full_collections_are_timed_in_stats():
    gcfreeze.enable()
    before = stats()["gc"]["full_collections"]["count"]
    gc.collect()
    assert stats()["gc"]["full_collections"]["count"] == before + 1
    assert stats()["gc"]["freezing"] is True


def test_freezing_is_off_with_freeze_gc_false_and_checked():
    script = (
        "from flet_resilient import evict_idle, gcfreeze\n"
        "evict_idle(freeze_gc=False, secret_key='k')(lambda page: None)\n"
        "print(gcfreeze.enabled())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
    with pytest.raises(TypeError, match="freeze_gc must be True or False"):
        evict_idle(freeze_gc="yes")


async def test_stats_does_not_walk_the_frozen_objects(monkeypatch):
    """CPython counts frozen objects by walking them all (29 ms at 200
    sessions, on every stats() call, status poll and scrape): the section
    reports the count kept at each freeze instead."""

    def walk() -> int:
        raise AssertionError("stats() walked every frozen object")

    app = App(idle_ttl=60)
    async with FletServer(app.main) as server:
        user = await visit(server)
        await wait_until(lambda: stats()["counters"].get("gc.freezes", 0) > 0)
        monkeypatch.setattr(gc, "get_freeze_count", walk)
        assert stats()["gc"]["frozen_objects"] > ROWS
        await user.close()


async def test_automatic_collections_wait_for_the_freeze(monkeypatch):
    """Between a page build and the freeze after it the collector is held off
    (its passes would examine the new controls over and over), then back on."""
    monkeypatch.setattr(gcfreeze, "FREEZE_DELAY_S", 1.0)
    app = App(idle_ttl=60)
    async with FletServer(app.main) as server:
        assert gc.isenabled()
        user = await visit(server)
        assert not gc.isenabled()
        await wait_until(gc.isenabled, timeout=10)
        assert collector_sees(app.texts) == 0
        await user.close()


async def test_a_server_stopped_before_its_freeze_leaves_the_collector_on(monkeypatch):
    monkeypatch.setattr(gcfreeze, "FREEZE_DELAY_S", 60.0)
    app = App(idle_ttl=60)
    async with FletServer(app.main) as server:
        user = await visit(server)
        assert not gc.isenabled()
        await user.close()
    assert gc.isenabled()


async def test_a_page_built_after_the_freeze_delay_is_frozen_too():
    """A build that ends later than the freeze its session's arrival scheduled
    (a slow main, or a burst of arrivals queued on the loop) is followed by a
    freeze of its own: left unfrozen, its controls made every later pass long
    (a 70-90 ms stall in the capacity ramp)."""
    texts: list[weakref.ref] = []

    async def slow_main(page: ft.Page) -> None:
        await asyncio.sleep(gcfreeze.FREEZE_DELAY_S * 3)
        built = [ft.Text(f"row {i}") for i in range(ROWS)]
        texts.extend(map(weakref.ref, built))
        page.add(ft.Column(built), ft.Text("ready", key="ready"))

    main = evict_idle(store=MemoryStore(), secret_key="test-secret")(slow_main)
    async with FletServer(main) as server:
        user = await visit(server)
        await wait_until(lambda: collector_sees(texts) == 0, timeout=10)
        await user.close()
