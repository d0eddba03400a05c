"""Coalesced updates of declarative components (`@ft.component`, `use_state`,
`page.render`) over the real protocol: frame bounds, final state, clicks,
threads, nested components, order, and the warning when coalescing cannot act."""

import asyncio
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from typing import Any

import flet as ft
import pytest
from flet.components.utils import current_component
from flet.messaging.session import Session
from test_coalesce import (
    MAX_HZ,
    SLOW_WINDOW_HZ,
    _set,
    maybe_coalesced,
    session_stats,
)

from flet_resilient import coalesce, coalesce_updates, stats
from flet_resilient.testing import Action, FletClient, FletServer, wait_until


def rendered(component: Any) -> Any:
    """A main(page) that renders `component` declaratively."""

    def main(page: ft.Page) -> None:
        page.render(component)

    return main


def ramp(
    show: Callable[[int], None], last: int = 400, interval: float = 0.005
) -> Callable[[], Awaitable[None]]:
    """An `on_mounted` task: `show(n)` for n = 1..last, one every `interval` s
    (by default 200 Hz for 2 s)."""

    async def produce() -> None:
        for n in range(1, last + 1):
            show(n)
            await asyncio.sleep(interval)

    return produce


@ft.component
def Producer() -> ft.Control:
    value, set_value = ft.use_state(0)
    ft.on_mounted(ramp(set_value))
    return ft.Text(str(value), key="value")


async def frames_until(user: FletClient, done: Any) -> tuple[int, float]:
    """Patch frames until `done()` holds (and a quiet moment after), and the time."""
    started = time.monotonic()
    await user.wait_for(done, timeout=30)
    duration = time.monotonic() - started
    await asyncio.sleep(0.3)  # nothing more may trickle in
    return len(user.patch_frames()), duration


async def check_capped(
    component: Any,
    coalesced: bool,
    done: Callable[[FletClient], bool],
    subtrees: int = 1,
) -> None:
    """Serve `component`; once `done(user)`, its frames are within the cap
    (coalesced) or above it (plain), and none went to an unknown control."""
    main = maybe_coalesced(rendered(component), coalesced)
    async with FletServer(main) as server, FletClient(server.ws_url) as user:
        frames, duration = await frames_until(user, lambda: done(user))
        assert user.stale_patches == 0
    # 2 s at 20 Hz: at most 42 frames per subtree, stretched if the producer
    # ran slower.
    bound = subtrees * (max(duration, 2) * MAX_HZ + 2)
    assert (frames <= bound) is coalesced, (frames, bound)


@pytest.mark.parametrize("coalesced", [True, False], ids=["coalesced", "plain"])
async def test_component_state_at_200hz_is_capped_at_max_hz(coalesced, request):
    if not coalesced:  # compared with Flet as shipped, not merely undecorated
        request.getfixturevalue("stock_flet")
    await check_capped(Producer, coalesced, lambda user: user.value("value") == "400")


@ft.component
def Gauge(name: str) -> ft.Control:
    value, set_value = ft.use_state(0)
    ft.on_mounted(ramp(set_value, last=200, interval=0.01))
    return ft.Row(
        [
            ft.Text(f"{name} {value}", key=name),
            ft.Button("reset", key=f"{name}-reset", on_click=lambda: set_value(0)),
        ]
    )


@ft.component
def Board() -> ft.Control:
    ticks, set_ticks = ft.use_state(0)
    ft.on_mounted(ramp(set_ticks))
    return ft.Column([ft.Text(str(ticks), key="ticks"), Gauge("a"), Gauge("b")])


def board_done(user: FletClient) -> bool:
    return (user.value("ticks"), user.value("a"), user.value("b")) == (
        "400",
        "a 200",
        "b 200",
    )


@pytest.mark.parametrize("coalesced", [True, False], ids=["coalesced", "plain"])
async def test_nested_components_are_capped_and_stay_in_sync(coalesced, request):
    if not coalesced:  # compared with Flet as shipped, not merely undecorated
        request.getfixturevalue("stock_flet")
    # The board re-renders its gauges while each gauge also sets its own state.
    main = maybe_coalesced(rendered(Board), coalesced)
    async with FletServer(main) as server, FletClient(server.ws_url) as user:
        frames, duration = await frames_until(user, lambda: board_done(user))
        await user.click("a-reset")  # the mirror's ids still reach live controls
        await user.wait_for(lambda: user.value("a") == "a 0")
        assert user.stale_patches == 0
        await user.close()
        again = await user.reconnect()  # the server's full view of this session
        await again.close()
    assert again.page == user.page
    bound = max(duration, 2) * MAX_HZ + 2 + 1  # + the click's frame
    assert (frames <= bound) is coalesced, (frames, bound)


@ft.component
def TitledProducer() -> ft.Control:
    value, set_value = ft.use_state(0)
    page = ft.context.page

    def show(n: int) -> None:  # a render and a plain page diff
        set_value(n)
        page.title = f"title {n}"
        page.update()

    ft.on_mounted(ramp(show))
    return ft.Text(str(value), key="value")


@pytest.mark.parametrize("coalesced", [True, False], ids=["coalesced", "plain"])
async def test_a_pending_page_update_does_not_swallow_a_render(coalesced, request):
    if not coalesced:  # compared with Flet as shipped, not merely undecorated
        request.getfixturevalue("stock_flet")
    # The page is the component's ancestor, but its plain diff does not
    # re-render components: both must be sent.
    await check_capped(
        TitledProducer,
        coalesced,
        lambda user: (
            (user.value("value"), user.page.get("title")) == ("400", "title 400")
        ),
        subtrees=2,
    )


@ft.component
def TickingDialog() -> ft.Control:
    n, set_n = ft.use_state(0)
    ft.on_mounted(ramp(set_n))  # into an open dialog
    # Re-rendering an open dialog is a frozen patch_control of the dialog itself.
    ft.use_dialog(ft.AlertDialog(title=ft.Text(f"tick {n}", key="tick")))
    return ft.Text("host", key="host")


@pytest.mark.parametrize("coalesced", [True, False], ids=["coalesced", "plain"])
async def test_an_open_dialog_rerendered_by_its_component_is_capped(coalesced, request):
    if not coalesced:  # compared with Flet as shipped, not merely undecorated
        request.getfixturevalue("stock_flet")
    await check_capped(
        TickingDialog, coalesced, lambda user: user.value("tick") == "tick 400"
    )
    assert "coalesce.bypassed" not in stats()["counters"]


@ft.component
def Fragile() -> ft.Control:
    n, set_n = ft.use_state(0)
    if n == 2:
        raise ValueError("two is not allowed")
    return ft.Column(
        [
            ft.Text(str(n), key="value"),
            ft.Button("+1", key="plus", on_click=lambda: set_n(lambda v: v + 1)),
        ]
    )


async def test_a_render_that_raises_is_reported_and_later_renders_still_go_out():
    # Flet's own updates scheduler dies with the exception: no render after it.
    main = coalesce_updates(max_hz=MAX_HZ)(rendered(Fragile))
    async with FletServer(main) as server, FletClient(server.ws_url) as user:
        await user.click("plus")
        await user.wait_for(lambda: user.value("value") == "1")
        await user.click("plus")
        await user.wait_for(lambda: user.errors)
        assert "two is not allowed" in user.errors[0]
        await user.click("plus")
        await user.wait_for(lambda: user.value("value") == "3")


def ticker_counter_app(gate: asyncio.Event, ticks: list[int], coalesced: bool):
    """A counter and a gated job beside a 50 Hz clock, under a 2-minute window."""

    @ft.component
    def Counter() -> ft.Control:
        count, set_count = ft.use_state(0)
        clock, set_clock = ft.use_state(0)
        status, set_status = ft.use_state("idle")

        def tick(n: int) -> None:  # 50 Hz: the rate window is always in use
            set_clock(n)
            ticks.append(n)

        async def work() -> None:
            set_status("working")
            await gate.wait()
            set_status("done")  # within the window: sent when the handler ends

        ft.on_mounted(ramp(tick, last=100_000, interval=0.02))
        return ft.Column(
            [
                ft.Text(str(clock), key="clock"),
                ft.Text(str(count), key="count"),
                ft.Text(status, key="status"),
                ft.Button("+1", key="plus", on_click=lambda: set_count(count + 1)),
                ft.Button("work", key="work", on_click=work),
            ]
        )

    main = rendered(Counter)
    return coalesce_updates(max_hz=SLOW_WINDOW_HZ)(main) if coalesced else main


@pytest.mark.parametrize("coalesced", [True, False], ids=["coalesced", "plain"])
async def test_counter_clicks_show_each_new_value_at_once(coalesced, request):
    if not coalesced:  # compared with Flet as shipped, not merely undecorated
        request.getfixturevalue("stock_flet")
    # Without the event path the clicks' renders would wait for the 2-minute
    # window (these waits time out); plain Flet answers too, but sends every tick.
    ticks: list[int] = []
    main = ticker_counter_app(asyncio.Event(), ticks, coalesced)
    async with FletServer(main) as server, FletClient(server.ws_url) as user:
        await wait_until(lambda: len(ticks) >= 25)
        for n in range(1, 4):
            await user.click("plus")
            await user.wait_for(lambda n=n: user.value("count") == str(n), timeout=20)
        frames = len(user.patch_frames())
        assert int(user.value("clock")) >= 25  # each answer carries the latest tick
    # The first render, then one frame per click: the clock stays capped.
    assert (frames <= 4) is coalesced, frames


async def test_a_client_events_render_is_not_held_for_the_rate_window():
    gate, ticks = asyncio.Event(), []
    main = ticker_counter_app(gate, ticks, coalesced=True)
    async with FletServer(main) as server, FletClient(server.ws_url) as user:
        await wait_until(lambda: len(ticks) >= 25)
        await user.click("work")
        await user.wait_for(lambda: user.value("status") == "working", timeout=20)
        await server.call(_set(gate))
        await user.wait_for(lambda: user.value("status") == "done", timeout=20)
        frames = len(user.patch_frames())
    assert frames <= 3, frames  # the first render, then the event's two flushes


@ft.component
def Threaded() -> ft.Control:
    value, set_value = ft.use_state(0)

    def work() -> None:  # 200 Hz for 2 s, from a worker thread
        for n in range(1, 401):
            set_value(n)
            time.sleep(0.005)

    return ft.Column(
        [
            ft.Text(str(value), key="value"),
            ft.Button(
                "go", key="go", on_click=lambda: ft.context.page.run_thread(work)
            ),
        ]
    )


async def test_rerenders_from_a_worker_thread_are_delivered_and_capped():
    # Flet's own scheduler is not woken reliably from a thread: it sends
    # irregular bursts (about 70 frames for these 2 s) instead of 20 a second.
    main = coalesce_updates(max_hz=MAX_HZ)(rendered(Threaded))
    async with FletServer(main) as server, FletClient(server.ws_url) as user:
        await user.click("go")
        frames, duration = await frames_until(
            user, lambda: user.value("value") == "400"
        )
        assert user.stale_patches == 0
    bound = max(duration, 2) * MAX_HZ + 2
    assert frames <= bound, (frames, bound)


@ft.component
def Saver() -> ft.Control:
    saved, set_saved = ft.use_state("unsaved")

    async def save() -> None:
        set_saved("saved")
        await ft.SharedPreferences().set("note", "kept")  # an invoke_method

    return ft.Column(
        [ft.Text(saved, key="note"), ft.Button("save", key="save", on_click=save)]
    )


async def test_a_render_before_invoke_method_reaches_the_client_first():
    main = coalesce_updates(max_hz=MAX_HZ)(rendered(Saver))
    async with FletServer(main) as server, FletClient(server.ws_url) as user:
        await user.click("save")
        await user.wait_for(lambda: user.storage.get("note") == "kept")
        await user.wait_for(lambda: user.value("note") == "saved")
    # The op that sets the Text (frame bodies are shared with the mirror, so
    # look at the op itself, not at what it added).
    kinds = [
        "invoke"
        if f.action == Action.INVOKE_METHOD
        else "render"
        if any(op[2:] == ["value", "saved"] for op in f.body["patch"][1:])
        else "other"
        for f in user.frames
        if f.action in (Action.PATCH_CONTROL, Action.INVOKE_METHOD)
    ]
    # Plain Flet renders after the handler yields, so after the invoke.
    assert kinds.index("render") < kinds.index("invoke"), kinds


@ft.component
def DirectUpdate() -> ft.Control:
    box = ft.use_ref(0)
    me = current_component()

    def bump() -> None:
        box.current += 1
        me.update()  # renders outside Flet's update scheduler: cannot be deferred

    return ft.Column(
        [
            ft.Text(str(box.current), key="value"),
            ft.Button("bump", key="bump", on_click=bump),
        ]
    )


async def test_a_patch_coalescing_cannot_defer_is_warned_once_and_counted(
    caplog, monkeypatch
):
    monkeypatch.setattr(coalesce, "_warned", set())  # none warned yet
    caplog.set_level(logging.WARNING, logger="flet_resilient.coalesce")
    main = coalesce_updates(max_hz=MAX_HZ)(rendered(DirectUpdate))
    async with FletServer(main) as server, FletClient(server.ws_url) as user:
        for n in (1, 2):
            await user.click("bump")
            await user.wait_for(lambda n=n: user.value("value") == str(n))
        mine = session_stats(user)
    assert stats()["counters"]["coalesce.bypassed"] == 2
    assert mine["bypassed"] == 2
    warnings = [r for r in caplog.records if "not rate-limited" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "parent=Component" in warnings[0].getMessage()


async def test_a_page_the_seam_does_not_route_is_warned_about(caplog, monkeypatch):
    # As if Flet's Session were not the one the seam wraps.
    monkeypatch.setattr(Session, "patch_control", Session.patch_control.__wrapped__)
    monkeypatch.setattr(coalesce, "_warned", set())
    caplog.set_level(logging.WARNING, logger="flet_resilient.coalesce")
    main = coalesce_updates(max_hz=MAX_HZ)(rendered(Producer))
    async with FletServer(main) as server, FletClient(server.ws_url) as user:
        await user.wait_for(lambda: user.value("value") == "400", timeout=30)
    assert stats()["counters"]["coalesce.bypassed"] == 1
    assert any("cannot act" in r.getMessage() for r in caplog.records)


NOT_INSTALLED = textwrap.dedent(
    """
    import asyncio, types
    from flet.messaging.session import Session
    from flet.pubsub.pubsub_hub import PubSubHub
    from flet_resilient import coalesce_page, stats

    async def main():  # a page served by something else, the seam never installed
        session = Session(types.SimpleNamespace(pubsubhub=PubSubHub()))
        coalesce_page(session.page)
        assert stats()["counters"]["coalesce.bypassed"] == 1
        assert stats()["coalesce"]["sessions"] == 0  # left to Flet

    asyncio.run(main())
    """
)


def test_coalesce_page_without_the_seam_says_so_and_leaves_the_page_to_flet():
    done = subprocess.run(
        [sys.executable, "-c", NOT_INSTALLED], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "cannot act on this page: the seam is not installed" in done.stderr
