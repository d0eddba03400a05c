"""The Flet seam: version guard, install and uninstall, thread-safe send queue,
no leaked sessions."""

import asyncio
import sys
import threading

import flet as ft
import pytest
from flet_web.fastapi.flet_app import FletApp

from flet_resilient import _flet
from flet_resilient._flet import hooks, pagebuild, version
from flet_resilient.testing import FletClient, FletServer, wait_until


def test_unsupported_flet_version_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(version, "version", lambda name: "2.3.0")
    with pytest.raises(_flet.UnsupportedFletVersion, match=r"flet 2\.3\.0"):
        version.check_version()


ABSENT = object()


def flet_names() -> dict[tuple[object, str], object]:
    """What Flet holds under each name the seam replaces, as in the owner's
    `__dict__` (ABSENT where it has none)."""
    names = [
        *_flet.PATCHED,
        *pagebuild.SPED_UP,
        (FletApp, "_FletApp__send_queue"),
        (FletApp, "_flet_resilient_installed"),
        (sys.modules[FletApp.__module__], "msgpack"),
    ]
    return {(owner, name): vars(owner).get(name, ABSENT) for owner, name in names}


def test_uninstall_puts_back_every_flet_name_exactly():
    reinstall = _flet.installed()
    _flet.uninstall()
    try:
        shipped = flet_names()
        _flet.install()
        installed = flet_names()
        assert all(installed[key] is not shipped[key] for key in shipped)
        _flet.uninstall()
        assert not _flet.installed()
        restored = flet_names()
        assert all(restored[key] is shipped[key] for key in shipped)
    finally:
        if reinstall:
            _flet.install()


def test_stock_flet_keeps_the_seam_out_for_the_test(stock_flet):
    _flet.install()  # as the test server and the decorators do
    assert not _flet.installed()


def test_as_shipped_puts_the_seam_back_after():
    _flet.install()
    with _flet.as_shipped():
        assert not _flet.installed()
    assert _flet.installed()


async def test_send_queue_put_from_a_thread_wakes_the_loop():
    queue = _flet.SendQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    frame = b"\x00" + b"x" * 100
    threading.Thread(target=queue.put_nowait, args=(frame,)).start()
    # Nothing else wakes this loop: the frame arrives only if the put did.
    assert await asyncio.wait_for(getter, timeout=5) == frame
    assert queue.backlog_bytes == 0


async def test_send_queue_counts_backlog_bytes():
    queue = _flet.SendQueue()
    queue.put_nowait(b"a" * 10)
    queue.put_nowait(b"b" * 5)
    assert (queue.qsize(), queue.backlog_bytes) == (2, 15)
    assert await queue.get() == b"a" * 10
    assert queue.backlog_bytes == 5


def producer_app(page: ft.Page) -> None:
    """Pushes an update every 2 ms, so the server is mid-send when clients vanish."""
    value = ft.Text("0", key="value")
    page.add(value)

    async def produce() -> None:
        n = 0
        while page.session.connection is not None:
            n += 1
            value.value = str(n)
            value.update()
            await asyncio.sleep(0.002)

    page.run_task(produce)


async def connected_sessions() -> int:
    return sum(_flet.is_connected(s) for s in _flet.sessions().values())


async def test_abruptly_vanishing_clients_leave_no_connected_session():
    async with FletServer(producer_app) as server:
        clients = [await FletClient(server.ws_url).connect() for _ in range(20)]
        for client in clients:
            await client.wait_for(lambda c=client: len(c.patch_frames()) > 3)
        assert await server.call(connected_sessions()) == 20
        for client in clients:
            client.abort()

        async def none_connected() -> None:
            while await server.call(connected_sessions()):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(none_connected(), timeout=30)
        assert len(_flet.sessions()) >= 20  # kept for reconnects, but disconnected


async def test_client_that_never_registers_does_not_keep_a_send_loop():
    import websockets

    async with FletServer(producer_app) as server:
        async with websockets.connect(server.ws_url):
            await wait_until(lambda: hooks.live_apps)
        await wait_until(lambda: not hooks.live_apps)


async def test_outgoing_messages_are_formatted_only_for_a_debug_log(
    transport_lines,
):
    # flet-web f-formats every outgoing message for its debug line even when
    # that log is off (a 1 MB string for a 1000-control page); the seam
    # keeps the repr short unless the log is on, where it stays the full one.
    debug, formatted = transport_lines
    page_text = "marker " * 50
    async with FletServer(lambda page: page.add(ft.Text(page_text))) as server:
        user = await FletClient(server.ws_url).connect()
        await user.close()
    sent = [text for text in formatted if text.startswith("send_message")]
    assert sent
    assert any(page_text in text for text in sent) is debug


async def test_an_update_after_the_send_loop_ended_is_dropped_not_raised():
    """Between a socket's send loop ending and Flet detaching the session, an
    update (a live panel's tick) found no send queue: Flet raised into the
    app, ending its task for good. The seam drops the message and counts it;
    the client gets the whole page when it reconnects."""
    from flet_resilient import stats

    texts: list[ft.Text] = []

    def main(page: ft.Page) -> None:
        texts.append(ft.Text("before", key="t"))
        page.add(texts[0])

    async def update_after_close() -> None:
        (session,) = [s for s in _flet.sessions().values() if s.page is texts[0].page]
        session.connection._FletApp__send_queue = None  # as its ended send loop
        texts[0].value = "after"
        texts[0].update()

    async with FletServer(main) as server:
        user = await FletClient(server.ws_url).connect()
        await user.wait_for(lambda: user.value("t") == "before")
        await server.call(update_after_close())
        assert stats()["counters"]["transport.sent_after_close"] >= 1
        user.abort()


async def test_every_service_takes_an_id_no_other_worker_counts_to():
    """Each worker numbers controls from the same start, and the Flutter client
    keeps service bindings by id across sessions: a moved user's new session
    reusing a service id its old one had found no listener (a 10 s wait, then a
    crashed page). Services an app makes in `main` get random ids, and answer."""

    async def main(page: ft.Page) -> None:
        prefs = ft.SharedPreferences()  # the app's own, not flet-resilient's
        await prefs.set("draft", "kept")  # answered by the client, under its id
        page.add(ft.Text("ready", key="ready"))

    async with FletServer(main) as server:
        user = await FletClient(server.ws_url).connect()
        await user.wait_for(lambda: user.value("ready") == "ready")
        controls = user.controls.items()
        (service,) = [i for i, c in controls if c["_c"] == "SharedPreferences"]
        assert service in _flet.RANDOM_IDS
        assert max(i for i in user.controls if i != service) < 2**20  # counted
        await user.close()
