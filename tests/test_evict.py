"""Evicting idle sessions, spilling their state and rehydrating returning users."""

import asyncio
import gc
import logging
import weakref
from dataclasses import dataclass

import flet as ft
import pytest

from flet_resilient import (
    MemoryStore,
    RedisStore,
    _flet,
    app_state,
    evict_idle,
    memory,
    save_state,
    stats,
)
from flet_resilient.evict import encode_state
from flet_resilient.identity import Identity
from flet_resilient.testing import FletClient, FletServer, wait_until


@dataclass
class Notes:
    count: int = 0
    text: str = ""


class App:
    def __init__(self, **options) -> None:
        self.pages: list[weakref.ref] = []
        self.controls: list[weakref.ref] = []
        self.evicted: list[str] = []
        options.setdefault("store", MemoryStore())
        options.setdefault("secret_key", "test-secret")
        options.setdefault("name", "notes")
        options.setdefault("sweep_interval", 0.2)
        self.main = evict_idle(state=Notes, on_evict=self._on_evict, **options)(
            self._main
        )

    def _on_evict(self, page: ft.Page) -> None:
        self.evicted.append(page.session.id)

    async def _main(self, page: ft.Page) -> None:
        self.pages.append(weakref.ref(page))
        notes = await app_state(page)
        count = ft.Text(str(notes.count), key="count")
        field = ft.TextField(value=notes.text, key="field")

        def increment(e: ft.Event) -> None:
            notes.count += 1
            count.value = str(notes.count)
            page.title = f"{notes.count} clicks"  # a handler closing over page

        self.controls.append(weakref.ref(count))

        def changed(e: ft.Event) -> None:
            notes.text = field.value

        field.on_change = changed
        page.add(count, field, ft.Button("+", key="inc", on_click=increment))


STORAGE_KEY = Identity("test-secret", app="notes").storage_key


def live_session_ids() -> set[str]:
    return {session.id for session in _flet.sessions().values()}


async def use(user: FletClient, clicks: int, text: str) -> None:
    for i in range(1, clicks + 1):
        await user.click("inc")
        await user.wait_for(lambda i=i: user.value("count") == str(i))
    await user.set_props("field", value=text)
    await user.event("field", "change", text)


async def come_back(server: FletServer, old: FletClient) -> FletClient:
    """The same browser returns: same client storage, its old session id."""
    user = FletClient(server.ws_url, session_id=old.session_id)
    user.storage = dict(old.storage)
    await user.connect()
    await user.wait_for(lambda: user.value("count") is not None)
    return user


async def test_idle_sessions_are_evicted_freed_and_rehydrated():
    app = App(idle_ttl=1.0)
    async with FletServer(app.main) as server:
        users = []
        for n in range(50):  # each uses the app once, then leaves the tab idle
            users.append(await FletClient(server.ws_url).connect())
            await use(users[-1], n % 3 + 1, f"note {n}")
        # All go idle: evicted within idle_ttl + sweep interval (+ slack).
        await asyncio.wait_for(
            asyncio.gather(*(u.closed.wait() for u in users)), timeout=10
        )
        assert len(app.evicted) == 50
        ids = {u.session_id for u in users}
        await wait_until(lambda: not ids & live_session_ids())
        await server.call(asyncio.sleep(0.2))
        gc.collect()
        assert [ref for ref in app.pages if ref() is not None] == []

        for n in (0, 1, 2, 49):
            back = await come_back(server, users[n])
            assert back.session_id != users[n].session_id  # a fresh session...
            assert back.value("count") == str(n % 3 + 1)  # ...with the state back
            assert back.value("field") == f"note {n}"
            await back.close()
    assert stats()["counters"]["evict.rehydrated"] >= 4
    assert stats()["evict"]["rehydrate"]["count"] >= 4


async def test_evicted_sessions_are_freed_without_waiting_for_the_gc():
    # Flet's trees hold cycles (a connected session <-> its socket's FletApp,
    # page -> button -> handler -> page); a full gc pass over a big heap takes
    # seconds, so eviction breaks them and reference counting frees at once.
    gc.collect()
    gc.disable()
    try:
        app = App(idle_ttl=0.5)
        async with FletServer(app.main) as server:
            users = [await FletClient(server.ws_url).connect() for _ in range(5)]
            for user in users:
                await use(user, 2, "text")
            await asyncio.wait_for(
                asyncio.gather(*(u.closed.wait() for u in users)), timeout=10
            )
            ids = {u.session_id for u in users}
            await wait_until(lambda: not ids & live_session_ids())
            await wait_until(
                lambda: all(r() is None for r in app.pages + app.controls),
                timeout=10,
            )
    finally:
        gc.enable()


@pytest.mark.parametrize("release", [True, False], ids=["release", "keep"])
async def test_a_burst_of_evictions_returns_memory_once(release):
    trims = stats()["counters"].get("evict.memory_trims", 0)
    app = App(idle_ttl=0.5, release_memory=release)
    async with FletServer(app.main) as server:
        users = [await FletClient(server.ws_url).connect() for _ in range(5)]
        await asyncio.wait_for(
            asyncio.gather(*(u.closed.wait() for u in users)), timeout=10
        )
        await server.call(asyncio.sleep(2 * memory.QUIET_S + 0.5))
    # One malloc_trim (in a worker thread) for the whole burst, or none.
    assert stats()["counters"].get("evict.memory_trims", 0) - trims == int(release)


async def test_max_sessions_evicts_the_least_recently_active():
    app = App(idle_ttl=60, max_sessions=3)
    async with FletServer(app.main) as server:
        a, b, c = [await FletClient(server.ws_url).connect() for _ in range(3)]
        await use(b, 1, "b")
        await use(a, 1, "a")
        await use(c, 1, "c")  # b is now the least recently active
        d = await FletClient(server.ws_url).connect()
        await asyncio.wait_for(b.closed.wait(), timeout=10)
        assert app.evicted == [b.session_id]
        for user in (a, c, d):
            assert not user.closed.is_set()
            await user.close()


async def test_disconnected_session_is_evicted_after_disconnected_ttl():
    app = App(idle_ttl=60, disconnected_ttl=0.5)
    async with FletServer(app.main) as server:
        user = await FletClient(server.ws_url).connect()
        await use(user, 2, "kept")
        await user.close()
        await wait_until(lambda: app.evicted == [user.session_id], timeout=10)
        await wait_until(lambda: user.session_id not in live_session_ids())
        back = await come_back(server, user)
        assert (back.value("count"), back.value("field")) == ("2", "kept")
        await back.close()


async def test_a_forged_or_foreign_key_never_loads_another_users_state():
    app = App(idle_ttl=0.5)
    async with FletServer(app.main) as server:
        alice = await FletClient(server.ws_url).connect()
        await use(alice, 3, "alice's secret")
        await asyncio.wait_for(alice.closed.wait(), timeout=10)
        token, signature = alice.storage[STORAGE_KEY].split(".")
        altered = token[:-1] + ("B" if token.endswith("A") else "A")

        bob = await FletClient(server.ws_url).connect()  # a real key of his own
        await bob.wait_for(lambda: bob.value("count") is not None)
        forged = [
            f"{token}.{'0' * len(signature)}",  # alice's token, made-up signature
            f"{altered}.{signature}",  # altered token (one character)
            bob.storage[STORAGE_KEY].split(".")[0] + "." + signature,
        ]
        await bob.close()
        for key in forged:
            mallory = FletClient(server.ws_url)
            mallory.storage[STORAGE_KEY] = key
            await mallory.connect()
            await mallory.wait_for(lambda m=mallory: m.value("count") is not None)
            assert mallory.value("count") == "0"
            assert not mallory.value("field")
            assert mallory.storage[STORAGE_KEY] != key  # replaced by a fresh key
            await mallory.close()


async def test_a_malformed_stored_key_is_replaced_by_a_fresh_one():
    app = App(idle_ttl=60)
    async with FletServer(app.main) as server:
        user = FletClient(server.ws_url)
        user.storage[STORAGE_KEY] = "tökén." + "é" * 64  # non-ASCII signature
        await user.connect()
        await user.wait_for(lambda: user.value("count") is not None)
        assert user.value("count") == "0"
        await user.wait_for(lambda: user.storage[STORAGE_KEY].isascii())
        notes = Identity("test-secret", app="notes")
        assert notes.verify(user.storage[STORAGE_KEY]) is not None
        await user.close()


async def test_the_key_is_read_through_a_service_id_no_other_worker_counts_to():
    """The Flutter client keeps service bindings by id across sessions, and each
    worker numbers controls from the same start: a user moved between two fresh
    workers got the key-reading service under the id the client still bound to
    the old session's control, and the page crashed after 10 s (the rolling
    restart test in tests/e2e, under least-connections balancing). The service
    now takes a random id, out of the counters' range."""
    app = App(idle_ttl=60)
    async with FletServer(app.main) as server:
        for _ in range(2):
            user = await FletClient(server.ws_url).connect()
            await user.wait_for(lambda u=user: u.value("count") is not None)
            controls = user.controls.items()
            (service,) = [i for i, c in controls if c["_c"] == "SharedPreferences"]
            assert service in _flet.RANDOM_IDS, user.controls
            assert max(i for i in user.controls if i != service) < 2**20  # counted
            await user.close()


def test_unencodable_state_names_the_field():
    with pytest.raises(TypeError, match=r"field 'text' \(object\)"):
        encode_state(Notes(count=1, text=object()))
    with pytest.raises(TypeError, match="dataclass or a dict"):
        encode_state([1, 2])


async def test_save_state_raises_in_the_handler_that_broke_the_state():
    errors: list[str] = []

    @evict_idle(state=dict, store=MemoryStore(), secret_key="s")
    async def main(page: ft.Page) -> None:
        state = await app_state(page)

        async def save(e: ft.Event) -> None:
            state["when"] = object()
            try:
                await save_state(page)
            except TypeError as exc:
                errors.append(str(exc))

        page.add(ft.Button("save", key="save", on_click=save))

    async with FletServer(main) as server, FletClient(server.ws_url) as user:
        await user.click("save")
        await wait_until(lambda: errors)
    assert "'when'" in errors[0]


async def test_a_failing_store_keeps_the_state_with_one_clear_log(caplog):
    caplog.set_level(logging.WARNING, logger="flet_resilient.stores")
    app = App(idle_ttl=0.5, store=RedisStore("redis://127.0.0.1:1/0"))
    async with FletServer(app.main) as server:
        user = await FletClient(server.ws_url).connect()
        await use(user, 2, "still here")
        await asyncio.wait_for(user.closed.wait(), timeout=10)
        back = await come_back(server, user)
        assert (back.value("count"), back.value("field")) == ("2", "still here")
        await back.close()
    outages = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outages) == 1  # once per outage, not once per call


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="idle_ttl"):
        evict_idle(idle_ttl=0)
    with pytest.raises(ValueError, match="max_sessions"):
        evict_idle(max_sessions=0)
    with pytest.raises(TypeError, match="state"):
        evict_idle(state=42)
    with pytest.raises(TypeError, match="evict_idle"):
        evict_idle(lambda page: None)
    with pytest.raises(TypeError, match="release_memory"):
        evict_idle(release_memory="yes")


async def count_shown(server: FletServer, storage: dict) -> str:
    """The count a visit with this browser storage shows (the storage is shared)."""
    user = FletClient(server.ws_url)
    user.storage = storage
    await user.connect()
    await user.wait_for(lambda: user.value("count") is not None)
    count = user.value("count")
    await user.close()
    return count


async def test_two_apps_on_one_origin_never_share_a_key_or_a_state():
    # One browser (one storage), one shared secret and one store, two apps.
    store, storage = MemoryStore(), {}
    first = App(idle_ttl=60, store=store, name=None)
    second = App(idle_ttl=60, store=store, name="second")
    async with FletServer(first.main) as a, FletServer(second.main) as b:
        alice = FletClient(a.ws_url)
        alice.storage = storage
        await alice.connect()
        await use(alice, 4, "for app A")
        await alice.close()  # saved on disconnect
        key_of_a = dict(storage)
        found_in_b = await count_shown(b, storage)
        found_in_a = await count_shown(a, storage)
    assert found_in_b == "0"  # B neither reads A's state ...
    assert all(storage[k] == v for k, v in key_of_a.items())  # ... nor replaces its key
    assert found_in_a == "4"
