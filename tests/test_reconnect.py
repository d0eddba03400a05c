"""Flaky networks through a loopback fault-injection proxy, real protocol."""

import asyncio
import inspect
import logging
from collections.abc import Coroutine
from typing import Any

import flet as ft
import pytest

from flet_resilient import buffer_reconnects, connected, stats
from flet_resilient.reconnect import _buffers
from flet_resilient.testing import FaultProxy, FletClient, FletServer, wait_until


class App:
    """A counter app recording how often main ran, with a focusable field."""

    def __init__(self, decorated: bool, **options) -> None:
        self.main_runs = 0
        self.pages: list[ft.Page] = []
        self.fields: list[ft.TextField] = []
        self.main = (
            buffer_reconnects(**options)(self._main) if decorated else self._main
        )

    def _main(self, page: ft.Page) -> None:
        self.main_runs += 1
        self.pages.append(page)
        count = ft.Text("0", key="count")
        field = ft.TextField(key="field")
        self.fields.append(field)

        def increment(e: ft.Event) -> None:
            count.value = str(int(count.value) + 1)

        page.add(count, field, ft.Button("+", key="inc", on_click=increment))


async def count_to(user: FletClient, n: int, start: int = 0) -> None:
    for i in range(start + 1, n + 1):
        await user.click("inc")
        await user.wait_for(lambda i=i: user.value("count") == str(i))


async def sent(server: FletServer, call: Coroutine[Any, Any, Any]) -> asyncio.Future:
    """Start the invoke `call` on the server loop; its future, once the call has
    sent its message and waits for the answer (its first suspension)."""
    future = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, server.loop))
    done = (inspect.CORO_SUSPENDED, inspect.CORO_CLOSED)
    await wait_until(lambda: inspect.getcoroutinestate(call) in done)
    return future


async def cut_off(app: App, proxy: FaultProxy, clicks: int = 1) -> FletClient:
    """A phone that used the app, then lost its link (once the server noticed)."""
    phone = await FletClient(proxy.ws_url).connect()
    await count_to(phone, clicks)
    proxy.cut()
    await wait_until(lambda: app.pages[0].session.connection is None)
    return phone


@pytest.mark.parametrize("decorated", [True, False], ids=["buffered", "plain"])
async def test_half_open_link_then_quick_reconnect_keeps_the_session(
    decorated, request
):
    if not decorated:  # compared with Flet as shipped, not merely undecorated
        request.getfixturevalue("stock_flet")
    app = App(decorated)
    async with FletServer(app.main) as server, FaultProxy(server.port) as proxy:
        phone = await FletClient(proxy.ws_url).connect()
        await count_to(phone, 3)
        proxy.blackhole()  # Wi-Fi -> cellular: the old link goes silent
        again = await FletClient(proxy.ws_url, session_id=phone.session_id).connect()
        await again.wait_for(lambda: again.value("count") is not None)
        same_session = again.session_id == phone.session_id
        if same_session:
            await again.click("inc")
            await again.wait_for(lambda: again.value("count") == "4")
        await again.close()
    assert same_session is decorated
    assert (app.main_runs == 1) is decorated
    if decorated:
        assert stats()["counters"]["reconnect.takeovers"] >= 1


@pytest.mark.parametrize("decorated", [True, False], ids=["buffered", "plain"])
async def test_invoke_method_sent_while_cut_off_is_delivered_after_reconnect(
    decorated, request
):
    if not decorated:  # compared with Flet as shipped, not merely undecorated
        request.getfixturevalue("stock_flet")
    app = App(decorated)
    async with FletServer(app.main) as server, FaultProxy(server.port) as proxy:
        phone = await cut_off(app, proxy)
        focus = await sent(server, app.fields[0].focus())  # while nobody listens
        again = await FletClient(proxy.ws_url, session_id=phone.session_id).connect()
        try:
            await asyncio.wait_for(asyncio.shield(focus), timeout=5)
            delivered = True
        except TimeoutError:
            delivered = False
            focus.cancel()
        await again.close()
    assert delivered is decorated
    assert (("focus", None) in again.invocations) is decorated


async def test_invoke_method_lost_in_a_half_open_socket_is_replayed():
    app = App(True)
    async with FletServer(app.main) as server, FaultProxy(server.port) as proxy:
        phone = await FletClient(proxy.ws_url).connect()
        await count_to(phone, 1)
        proxy.blackhole()
        # The server still believes the old socket is fine and sends into it.
        focus = await sent(server, app.fields[0].focus())
        assert app.pages[0].session.connection is not None
        assert not focus.done()
        again = await FletClient(proxy.ws_url, session_id=phone.session_id).connect()
        await asyncio.wait_for(focus, timeout=10)
        assert ("focus", None) in again.invocations
        assert app.main_runs == 1
        await again.close()


async def test_overflow_drops_oldest_and_fails_their_callers():
    app = App(True, max_messages=2)
    async with FletServer(app.main) as server, FaultProxy(server.port) as proxy:
        phone = await cut_off(app, proxy)
        calls = [
            asyncio.ensure_future(server.call(app.fields[0].focus())) for _ in range(4)
        ]
        await wait_until(lambda: sum(c.done() for c in calls) == 2)
        for call in calls[:2]:  # the two oldest were dropped with a clear error
            with pytest.raises(RuntimeError, match="not delivered: overflow"):
                call.result()
        again = await FletClient(proxy.ws_url, session_id=phone.session_id).connect()
        await asyncio.wait_for(asyncio.gather(*calls[2:]), timeout=10)
        assert [n for n, _ in again.invocations] == ["focus", "focus"]
        await again.close()


async def test_overflow_reload_policy_ends_the_session():
    app = App(True, max_messages=1, overflow="reload")
    async with FletServer(app.main) as server, FaultProxy(server.port) as proxy:
        phone = await cut_off(app, proxy, clicks=2)
        calls = [
            asyncio.ensure_future(server.call(app.fields[0].focus())) for _ in range(2)
        ]
        await asyncio.wait(calls, timeout=10)
        again = await FletClient(proxy.ws_url, session_id=phone.session_id).connect()
        await again.wait_for(lambda: again.value("count") == "0")
        assert again.session_id != phone.session_id  # a fresh session: a reload
        assert app.main_runs == 2
        await again.close()


async def test_another_session_id_or_another_app_cannot_take_over():
    app, other = App(True), App(True)
    async with (
        FletServer(app.main) as server,
        FletServer(other.main) as other_server,
        FletClient(server.ws_url) as owner,
    ):
        await count_to(owner, 2)
        wrong = await FletClient(server.ws_url, session_id="x" * 16).connect()
        assert wrong.session_id != owner.session_id
        thief = await FletClient(
            other_server.ws_url, session_id=owner.session_id
        ).connect()
        assert thief.session_id != owner.session_id
        await thief.wait_for(lambda: thief.value("count") == "0")
        await wrong.wait_for(lambda: wrong.value("count") == "0")
        await count_to(owner, 3, start=2)  # the owner's session is undisturbed
        assert app.main_runs == 2 and other.main_runs == 1
        await wrong.close()
        await thief.close()


@pytest.mark.parametrize("bind_ip", [False, True], ids=["unbound", "bound"])
async def test_ip_change_keeps_the_session_unless_bound(bind_ip):
    app = App(True, bind_ip=bind_ip)
    async with FletServer(app.main) as server:
        phone = await FletClient(server.ws_url, source_ip="127.0.0.2").connect()
        await count_to(phone, 2)
        await phone.close()
        moved = await FletClient(
            server.ws_url, session_id=phone.session_id, source_ip="127.0.0.3"
        ).connect()
        await moved.wait_for(lambda: moved.value("count") is not None)
        assert (moved.session_id == phone.session_id) is not bind_ip
        assert moved.value("count") == ("0" if bind_ip else "2")
        await moved.close()


async def test_producers_pause_while_nobody_listens():
    ticks: list[int] = []

    @buffer_reconnects()
    def main(page: ft.Page) -> None:
        value = ft.Text("0", key="value")
        page.add(value)

        async def produce() -> None:
            while True:
                await connected(page)
                ticks.append(1)
                value.value = str(len(ticks))
                value.update()
                await asyncio.sleep(0.01)  # the app's pace: 100 ticks/s

        page.run_task(produce)

    async with FletServer(main) as server, FaultProxy(server.port) as proxy:
        phone = await FletClient(proxy.ws_url).connect()
        await wait_until(lambda: len(ticks) > 5)
        proxy.cut()
        # The server has handled the cut (its "disconnected" hooks ran).
        await wait_until(lambda: stats()["counters"].get("reconnect.disconnects") == 1)
        paused_at = len(ticks)
        await asyncio.sleep(0.5)  # on purpose: 50 ticks' time passes, unseen
        assert len(ticks) <= paused_at + 1  # at most the tick already under way
        again = await FletClient(proxy.ws_url, session_id=phone.session_id).connect()
        await wait_until(lambda: len(ticks) > paused_at + 5)
        await again.wait_for(lambda: int(again.value("value")) > paused_at)
        await again.close()


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="window"):
        buffer_reconnects(window=0)
    with pytest.raises(ValueError, match="overflow"):
        buffer_reconnects(overflow="panic")
    with pytest.raises(ValueError, match="max_messages"):
        buffer_reconnects(max_messages=0)
    with pytest.raises(TypeError, match="buffer_reconnects"):
        buffer_reconnects(lambda page: None)


async def test_a_call_held_offline_fails_once_the_window_passes():
    app = App(True, window=1.0)
    async with FletServer(app.main) as server, FaultProxy(server.port) as proxy:
        await cut_off(app, proxy)
        # On purpose, not a wait: the call is held well after the disconnect
        # and still fails once its own window passes.
        await asyncio.sleep(0.5)
        with pytest.raises(RuntimeError, match="client did not come back"):
            await asyncio.wait_for(server.call(app.fields[0].focus()), timeout=10)
    assert stats()["counters"]["reconnect.expired"] >= 1


@pytest.mark.parametrize("overflow", ["drop_oldest", "reload"])
async def test_calls_on_a_healthy_socket_never_overflow(overflow):
    app = App(True, max_messages=2, overflow=overflow)
    async with FletServer(app.main) as server, FletClient(server.ws_url) as user:
        await count_to(user, 1)

        async def burst():
            return await asyncio.gather(*(app.fields[0].focus() for _ in range(8)))

        await asyncio.wait_for(server.call(burst()), timeout=10)
        assert [name for name, _ in user.invocations].count("focus") == 8
        await count_to(user, 2, start=1)  # the session was not ended
    assert app.main_runs == 1


async def test_a_call_whose_caller_gave_up_is_not_replayed():
    app = App(True)
    async with FletServer(app.main) as server, FaultProxy(server.port) as proxy:
        phone = await FletClient(proxy.ws_url).connect()
        await count_to(phone, 1)
        proxy.blackhole()
        with pytest.raises(TimeoutError):
            await server.call(app.fields[0]._invoke_method("focus", timeout=0.3))
        again = await phone.reconnect(proxy.ws_url)
        await count_to(again, 2, start=1)
        assert ("focus", None) not in again.invocations
        await again.close()


def oversize(options: dict) -> dict:
    """Arguments of an invoke_method about four times the buffer's max_bytes."""
    return {"blob": "x" * 4 * options["max_bytes"]}


async def on_loop(fn, *args):
    """Call a sync function on the server loop (via `FletServer.call`)."""
    return fn(*args)


async def test_a_message_larger_than_the_buffer_is_refused_at_once(caplog):
    caplog.set_level(logging.WARNING, logger="flet_resilient.reconnect")
    options = {"max_bytes": 16 * 1024}
    app = App(True, **options)
    refused = stats()["counters"].get("reconnect.oversize", 0)
    async with FletServer(app.main) as server, FaultProxy(server.port) as proxy:
        phone = await FletClient(proxy.ws_url).connect()
        await count_to(phone, 1)
        field, page = app.fields[0], app.pages[0]
        # On a healthy socket it goes out (untracked) and its caller gets the answer.
        await asyncio.wait_for(
            server.call(field._invoke_method("focus", oversize(options))), timeout=10
        )
        proxy.cut()
        await wait_until(lambda: page.session.connection is None)
        with pytest.raises(RuntimeError, match=r"\d+ bytes.*max_bytes 16384"):
            await asyncio.wait_for(
                server.call(field._invoke_method("blur", oversize(options))), timeout=5
            )
        await server.call(on_loop(page.error, "e" * 4 * options["max_bytes"]))
        small = asyncio.ensure_future(server.call(field.focus()))
        await wait_until(lambda: len(_buffers[page.session]) == 1)
        assert _buffers[page.session].bytes <= options["max_bytes"]
        again = await phone.reconnect(proxy.ws_url)
        await asyncio.wait_for(small, timeout=10)
        assert [name for name, _ in again.invocations] == ["focus"]  # not the blur
        assert again.errors == []  # the oversize error report was dropped
        await again.close()
    assert stats()["counters"]["reconnect.oversize"] - refused == 3
    assert any("too large" in r.getMessage() for r in caplog.records)


async def test_the_buffer_never_holds_more_than_max_bytes():
    options = {"max_bytes": 16 * 1024}
    app = App(True, **options)
    async with FletServer(app.main) as server, FaultProxy(server.port) as proxy:
        phone = await cut_off(app, proxy)
        page = app.pages[0]
        buffer = _buffers[page.session]
        totals = []
        for share in (0.2, 0.5, 0.3, 4, 0.9, 0.1, 0.6, 2, 0.4):  # of max_bytes
            report = "e" * int(share * options["max_bytes"])
            await server.call(on_loop(page.error, report))
            totals.append(buffer.bytes)
        assert max(totals) <= options["max_bytes"]
        await phone.close()


async def test_one_shot_messages_from_a_worker_thread_are_replayed_in_order():
    app = App(True)
    reports = [f"report {n}" for n in range(8)]

    def worker(page: ft.Page) -> list[BaseException]:
        failures = []
        for report in reports:
            try:
                page.error(report)
            except BaseException as exc:
                failures.append(exc)
        return failures

    async with FletServer(app.main) as server, FaultProxy(server.port) as proxy:
        phone = await cut_off(app, proxy)
        assert await asyncio.to_thread(worker, app.pages[0]) == []
        await wait_until(lambda: len(_buffers[app.pages[0].session]) == len(reports))
        again = await phone.reconnect(proxy.ws_url)
        await again.wait_for(lambda: len(again.errors) == len(reports))
        assert again.errors == reports
        # Connected again: a worker thread's reports go straight out, in order.
        assert await asyncio.to_thread(worker, app.pages[0]) == []
        await again.wait_for(lambda: len(again.errors) == 2 * len(reports))
        assert again.errors == reports + reports
        await count_to(again, 2, start=1)
        await again.close()


def page_cookie(url: str) -> str:
    """The binding cookie the server sets on a page load, as a Cookie header."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        set_cookie = response.headers.get_all("Set-Cookie") or []
    (binding,) = [c for c in set_cookie if c.startswith("flet_resilient_bind=")]
    assert "HttpOnly" in binding and "SameSite=Strict" in binding
    return binding.split(";")[0]


async def test_a_leaked_session_id_alone_cannot_take_the_session_over():
    app = App(True)
    async with FletServer(app.main) as server, FaultProxy(server.port) as proxy:
        cookie = await asyncio.to_thread(page_cookie, server.url)
        browser = {"Cookie": cookie}
        phone = await FletClient(proxy.ws_url, headers=browser).connect()
        await count_to(phone, 2)
        proxy.blackhole()  # the owner's link goes half-open
        # Same session id and User-Agent, but not the owner's browser:
        thief = await FletClient(server.ws_url, session_id=phone.session_id).connect()
        await thief.wait_for(lambda: thief.value("count") == "0")
        stolen = thief.session_id == phone.session_id
        await thief.close()
        # The owner's browser (its cookie) still takes its session back.
        again = await FletClient(
            server.ws_url, session_id=phone.session_id, headers=browser
        ).connect()
        await again.wait_for(lambda: again.value("count") == "2")
        kept = again.session_id == phone.session_id
        await again.close()
    assert not stolen
    assert kept
    assert stats()["counters"]["reconnect.takeovers_refused"] == 1
