"""Hostile clients: one socket, one session; inbound frame and event limits;
malformed input dropped, counted and logged without flooding."""

import asyncio
import logging
import secrets

import flet as ft
import msgpack
import pytest

from flet_resilient import _flet, evict_idle, serving
from flet_resilient._flet import hooks, inbound
from flet_resilient.metrics import counters
from flet_resilient.testing import Action, FletClient, FletServer, wait_until


class Counter:
    """A "+1" button and its count, counting handler calls."""

    def __init__(self) -> None:
        self.calls = 0

    def main(self, page: ft.Page) -> None:
        count = ft.Text("0", key="count")

        def plus(e: ft.Event) -> None:
            self.calls += 1
            count.value = str(self.calls)

        page.add(count, ft.Button("+1", key="plus", on_click=plus))


@pytest.fixture(autouse=True)
def _default_limits():
    """Every test starts and ends with the default inbound limits."""
    from flet_resilient import limits

    limits.configure_limits()
    yield
    limits.configure_limits()


def register_body(session_id: str | None) -> dict:
    return {
        "session_id": session_id,
        "page_name": "",
        "page": {"route": "/", "width": 1280, "height": 720},
    }


async def click_counts(user: FletClient, expected: int) -> None:
    await user.click("plus")
    await user.wait_for(lambda: user.value("count") == str(expected))


async def plus_id(user: FletClient) -> int:
    """The "+1" button's control id, once the client mirrors it."""
    await user.wait_for(lambda: user.find("plus"))
    return user.find("plus")["_i"]


async def sockets_gone() -> None:
    """Every server socket's handler has ended (so all its frames were handled)."""
    await wait_until(lambda: not hooks.live_apps, timeout=60)


def connected(session_id: str | None) -> bool:
    """Whether the server has the session with this id on a live socket."""
    found = [s for s in _flet.sessions().values() if s.id == session_id]
    return any(_flet.is_connected(s) for s in found)


def delta(name: str, before: dict[str, int]) -> int:
    return counters[name] - before.get(name, 0)


# --- 1. one socket, one session ------------------------------------------------------


async def test_reregistering_on_one_socket_creates_no_more_sessions():
    app = Counter()
    async with FletServer(app.main) as server:
        before = set(_flet.sessions())
        user = await FletClient(server.ws_url).connect()
        for _ in range(200):
            await user.send(Action.REGISTER_CLIENT, register_body(secrets.token_hex(8)))
        await user.close()
        await sockets_gone()
        mine = [s for k, s in _flet.sessions().items() if k not in before]
        assert len(mine) <= 1
        assert not any(_flet.is_connected(s) for s in mine)


async def test_a_refused_reregister_leaves_the_socket_working():
    app = Counter()
    counted = dict(counters)
    async with FletServer(app.main) as server:
        user = await FletClient(server.ws_url).connect()
        for _ in range(5):
            await user.send(Action.REGISTER_CLIENT, register_body(None))
        await click_counts(user, 1)
        assert delta("transport.reregister_refused", counted) == 5
        await user.close()


async def test_a_session_whose_main_never_runs_is_still_tracked():
    def failing_before_main(page: ft.Page) -> None:
        raise RuntimeError("before_main failed")

    main = evict_idle(disconnected_ttl=0.2, sweep_interval=0.05)(Counter().main)
    async with FletServer(main, before_main=failing_before_main) as server:
        before = set(_flet.sessions())
        user = await FletClient(server.ws_url).connect()
        (key,) = set(_flet.sessions()) - before
        from flet_resilient import evict

        assert evict._trackers.get(_flet.sessions()[key]) is not None
        await user.close()
        await wait_until(lambda: key not in _flet.sessions())


async def test_a_register_flet_fails_on_halfway_closes_and_is_tracked():
    import websockets

    main = evict_idle(disconnected_ttl=0.2, sweep_interval=0.05)(Counter().main)
    async with FletServer(main) as server:
        before = set(_flet.sessions())
        async with websockets.connect(server.ws_url) as ws:
            body = {**register_body(None), "page": "not a page patch"}
            await ws.send(b"\x00" + msgpack.packb([Action.REGISTER_CLIENT, body]))
            await asyncio.wait_for(ws.wait_closed(), 30)
            assert ws.close_code == 1002
        made = set(_flet.sessions()) - before
        assert made  # Flet made the session before failing on the page patch
        await wait_until(lambda: not made & set(_flet.sessions()))


async def test_new_sessions_per_address_can_be_capped():
    from flet_resilient import limits

    limits.configure_limits(max_new_sessions_per_ip=(2, 3600))
    counted = dict(counters)
    async with FletServer(Counter().main) as server:
        users = [await FletClient(server.ws_url).connect() for _ in range(2)]
        refused = FletClient(server.ws_url)
        with pytest.raises(ConnectionError):
            await refused.connect()
        assert refused.ws is not None and refused.ws.close_code == 1013
        assert delta("transport.sessions_refused", counted) == 1
        await users[0].close()
        await wait_until(lambda: not connected(users[0].session_id))
        again = await users[0].reconnect()  # a returning session is not new
        assert again.session_id == users[0].session_id
        await click_counts(again, 1)
        for user in (users[1], again):
            await user.close()


# --- 2. inbound limits ------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"max_frame_bytes": 0},
        {"event_burst": True},
        {"event_rate": 0},
        {"event_rate": float("inf")},
        {"on_flood": "ignore"},
        {"max_new_sessions_per_ip": 5},
        {"max_new_sessions_per_ip": (5, 0)},
    ],
)
def test_configure_limits_rejects_nonsense(options):
    from flet_resilient import limits

    with pytest.raises(ValueError):
        limits.configure_limits(**options)
    assert limits.current_limits() == limits.Limits()  # unchanged


def test_the_limits_in_force_are_in_stats():
    from flet_resilient import configure_limits, stats

    configure_limits(event_rate=None, max_new_sessions_per_ip=(10, 60))
    shown = stats()["limits"]
    assert shown["event_rate"] is None
    assert shown["max_new_sessions_per_ip"] == (10, 60)
    assert shown["max_frame_bytes"] == 1024 * 1024


def big_event(target: int, nbytes: int) -> bytes:
    """A CONTROL_EVENT frame of about `nbytes` bytes of small ints."""
    body = {"target": target, "name": "click", "data": [1] * nbytes}
    return b"\x00" + msgpack.packb([Action.CONTROL_EVENT, body])


async def test_an_oversize_frame_closes_only_its_socket():
    app = Counter()
    counted = dict(counters)
    async with FletServer(app.main) as server:
        bystander = await FletClient(server.ws_url).connect()
        attacker = await FletClient(server.ws_url).connect()
        assert attacker.ws is not None
        await attacker.ws.send(big_event(await plus_id(attacker), 2 * 1024 * 1024))
        await asyncio.wait_for(attacker.closed.wait(), 30)
        assert attacker.ws.close_code == 1009
        assert delta("transport.oversize", counted) == 1
        assert app.calls == 0
        await click_counts(bystander, 1)
        await bystander.close()


async def test_a_frame_within_a_raised_limit_is_handled():
    from flet_resilient import limits

    limits.configure_limits(max_frame_bytes=4 * 1024 * 1024)
    app = Counter()
    async with FletServer(app.main) as server:
        user = await FletClient(server.ws_url).connect()
        assert user.ws is not None
        await user.ws.send(big_event(await plus_id(user), 2 * 1024 * 1024))
        await user.wait_for(lambda: user.value("count") == "1", timeout=30)
        await user.close()


def test_serve_passes_the_frame_limit_to_uvicorn(monkeypatch):
    import uvicorn

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(options))
    serving.serve(Counter().main, port=1)
    assert seen["ws_max_size"] == 1024 * 1024


async def flood(user: FletClient, frames: int) -> None:
    target = await plus_id(user)
    for _ in range(frames):
        await user.send(
            Action.CONTROL_EVENT, {"target": target, "name": "click", "data": None}
        )


async def test_an_event_flood_is_cut_to_the_bucket():
    from flet_resilient import limits

    limits.configure_limits(event_burst=10, event_rate=0.001)
    app = Counter()
    counted = dict(counters)
    async with FletServer(app.main) as server:
        user = await FletClient(server.ws_url).connect()
        await flood(user, 200)
        await wait_until(lambda: delta("transport.events_dropped", counted) == 190)
        await user.wait_for(lambda: user.value("count") == "10")
        assert app.calls == 10
        await user.close()


async def test_an_event_flood_can_close_the_socket_instead():
    from flet_resilient import limits

    limits.configure_limits(event_burst=5, event_rate=0.001, on_flood="close")
    app = Counter()
    counted = dict(counters)
    async with FletServer(app.main) as server:
        bystander = await FletClient(server.ws_url).connect()
        user = await FletClient(server.ws_url).connect()
        await flood(user, 20)
        await asyncio.wait_for(user.closed.wait(), 30)
        assert user.ws is not None and user.ws.close_code == 1008
        assert delta("transport.flood_closed", counted) == 1
        assert app.calls == 5
        await click_counts(bystander, 6)
        await bystander.close()


async def test_incoming_messages_are_formatted_only_for_a_debug_log(
    transport_lines,
):
    # flet-web f-formats every incoming message for its debug line even when
    # that log is off (a 10 MB frame took over a second of the loop); the
    # seam keeps the repr short unless the log is on.
    debug, formatted = transport_lines
    marker = "marker " * 50
    async with FletServer(Counter().main) as server:
        user = await FletClient(server.ws_url).connect()
        await user.event("plus", "click", marker)
        await user.wait_for(lambda: user.value("count") == "1")
        await user.close()
    received = [text for text in formatted if text.startswith("_on_message")]
    assert received
    assert any(marker in text for text in received) is debug


# --- 3. malformed input ------------------------------------------------------------

MALFORMED = (
    b"\x00\xc1",  # not msgpack
    b"\x00" + msgpack.packb("not a message"),
    b"\x00" + msgpack.packb([99, {}]),  # no such action
    b"\x00" + msgpack.packb([Action.PATCH_CONTROL, {}]),  # a server-only action
    b"\x00" + msgpack.packb([Action.CONTROL_EVENT, "not a body"]),
    b"\x00" + msgpack.packb([Action.CONTROL_EVENT, {"wrong": "keys"}]),
    b"\x00" + msgpack.packb([Action.INVOKE_METHOD, {"control_id": -1, "call_id": "x"}]),
)


UNRELATED = ("flet_resilient.watchdog", "flet_resilient.drain")  # stalls, shutdown


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """WARNING records about client input (not loop stalls or the shutdown)."""
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name not in UNRELATED
    ]


async def test_malformed_frames_on_one_socket_are_dropped_and_logged_once(caplog):
    caplog.set_level(logging.WARNING)
    app = Counter()
    counted = dict(counters)
    async with FletServer(app.main) as server:
        user = await FletClient(server.ws_url).connect()
        assert user.ws is not None
        for i in range(100):
            await user.ws.send(MALFORMED[i % len(MALFORMED)])
        await click_counts(user, 1)  # the socket survived them all
        assert delta("transport.malformed", counted) == 100
        await user.close()
    found = warnings_in(caplog)
    assert 1 <= len(found) <= 2
    assert all(r.exc_info is None for r in found)


async def test_malformed_frames_on_many_sockets_do_not_flood_the_log(caplog):
    caplog.set_level(logging.WARNING)
    counted = dict(counters)
    async with FletServer(Counter().main) as server:
        for i in range(100):
            user = await FletClient(server.ws_url).connect()
            assert user.ws is not None
            await user.ws.send(MALFORMED[i % len(MALFORMED)])
            await user.close()
        await sockets_gone()
    assert delta("transport.malformed", counted) == 100
    assert len(warnings_in(caplog)) <= 2


async def test_a_message_before_registering_is_malformed():
    import websockets

    counted = dict(counters)
    async with (
        FletServer(Counter().main) as server,
        websockets.connect(server.ws_url) as ws,
    ):
        frame = msgpack.packb([Action.CONTROL_EVENT, {"target": 1, "name": "x"}])
        await ws.send(b"\x00" + frame)
        await wait_until(lambda: delta("transport.malformed", counted) == 1)


async def test_a_flooding_socket_is_read_at_a_pace_and_bystanders_are_answered():
    app = Counter()
    async with FletServer(app.main) as server:
        bystander = await FletClient(server.ws_url).connect()
        flooder = await FletClient(server.ws_url).connect()
        assert flooder.ws is not None
        junk = MALFORMED[0]

        async def flood() -> None:
            for _ in range(20_000):
                await flooder.ws.send(junk)

        flooding = asyncio.create_task(flood())
        await wait_until(lambda: counters.get("transport.reads_paced", 0) > 0, 30)
        await click_counts(bystander, 1)  # answered while the flood is queued
        read = counters.get("transport.malformed", 0)
        flooding.cancel()
        await bystander.close()
    # Read at 200 frames/s after a burst of 100, not as fast as they came.
    assert read < 5_000, read


async def test_a_client_socket_is_read_in_small_slices():
    """A flood already in the kernel's buffers is parsed a slice at a time:
    asyncio reads 256 KiB at once, and uvicorn parsing a read of small events
    held the loop 170 ms (bench_hostile's event flood)."""
    async with FletServer(Counter().main) as server:
        user = await FletClient(server.ws_url).connect()
        (app,) = list(hooks.live_apps)
        websocket = app._FletApp__websocket._websocket  # inside the guard
        transport = websocket._receive.__self__.transport
        assert transport.max_size == inbound.READ_CHUNK_BYTES
        await user.close()


async def test_a_refused_socket_is_read_in_big_chunks_again():
    """What a client sends once its socket is refused is only discarded: read
    8 KiB at a time, the rest of a 10 MB frame cost the loop 1,280 callbacks
    (bench_hostile's big frames)."""
    async with FletServer(Counter().main) as server:
        user = await FletClient(server.ws_url).connect()
        (app,) = list(hooks.live_apps)
        transport = app._FletApp__websocket._transport
        assert transport.max_size == inbound.READ_CHUNK_BYTES
        assert user.ws is not None
        await user.ws.send(b"\x00" * (2 * 1024 * 1024))  # over the 1 MiB limit
        await asyncio.wait_for(user.closed.wait(), 30)
        assert transport.max_size == type(transport).max_size


def test_a_socket_whose_reads_cannot_be_bounded_says_so(caplog, monkeypatch):
    monkeypatch.setattr(inbound, "_unbounded_warned", [])
    inbound._bound_reads(object())  # e.g. behind a middleware that wraps receive
    inbound._bound_reads(object())
    assert counters["transport.reads_unbounded"] == 2
    assert [r.getMessage() for r in caplog.records].count(
        "cannot bound reads of client sockets (transport NoneType has no max_size): "
        "a flood of small frames can hold the event loop per read"
    ) == 1


async def test_events_for_missing_controls_make_few_tree_searches():
    # Flet walks every field of the page's tree for a control it does not index.
    app = Counter()
    async with FletServer(app.main) as server:
        user = await FletClient(server.ws_url).connect()
        for _ in range(30):
            await user.send(
                Action.CONTROL_EVENT, {"target": 999_999, "name": "click", "data": None}
            )
        await wait_until(lambda: counters.get("transport.events_unknown", 0) >= 20)
        await click_counts(user, 1)  # a real control still answers
        await user.close()
    # 1 at once, then 1 a second: the rest never reach Flet's search.
    assert counters["transport.events_unknown"] >= 20
