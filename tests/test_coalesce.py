"""Coalesced updates over the real protocol: frame bounds, final state, order."""

import asyncio
import json
import time

import flet as ft
import pytest

from flet_resilient import _flet, coalesce_updates, stats
from flet_resilient._flet import hooks
from flet_resilient.testing import Action, FletClient, FletServer, wait_until

MAX_HZ = 20


def maybe_coalesced(main, coalesced: bool):
    return coalesce_updates(max_hz=MAX_HZ)(main) if coalesced else main


def tight_loop_app(page: ft.Page) -> None:
    value = ft.Text("0", key="value")

    def burst(e: ft.Event) -> None:
        for n in range(1, 1001):
            value.value = str(n)
            value.update()

    page.add(value, ft.Button("burst", key="burst", on_click=burst))


@pytest.mark.parametrize("coalesced", [True, False], ids=["coalesced", "plain"])
async def test_tight_update_loop_sends_few_frames_and_the_final_value(
    coalesced, request
):
    if not coalesced:  # compared with Flet as shipped, not merely undecorated
        request.getfixturevalue("stock_flet")
    async with (
        FletServer(maybe_coalesced(tight_loop_app, coalesced)) as server,
        FletClient(server.ws_url) as user,
    ):
        await user.wait_for(lambda: user.value("value") == "0")
        before = len(user.patch_frames())
        started = time.monotonic()
        await user.click("burst")
        await user.wait_for(lambda: user.value("value") == "1000", timeout=30)
        duration = time.monotonic() - started
        await asyncio.sleep(0.3)  # nothing more may trickle in
        frames = len(user.patch_frames()) - before
    bound = duration * MAX_HZ + 2
    assert (frames <= bound) is coalesced, (frames, bound)
    assert user.value("value") == "1000"


def producer_app(page: ft.Page) -> None:
    value = ft.Text("0", key="value")
    page.add(value)

    async def produce() -> None:  # 200 Hz for 2 s
        for n in range(1, 401):
            value.value = str(n)
            value.update()
            await asyncio.sleep(0.005)

    page.run_task(produce)


@pytest.mark.parametrize("coalesced", [True, False], ids=["coalesced", "plain"])
async def test_200hz_producer_is_capped_at_max_hz(coalesced, request):
    if not coalesced:  # compared with Flet as shipped, not merely undecorated
        request.getfixturevalue("stock_flet")
    async with (
        FletServer(maybe_coalesced(producer_app, coalesced)) as server,
        FletClient(server.ws_url) as user,
    ):
        started = time.monotonic()
        await user.wait_for(lambda: user.value("value") == "400", timeout=30)
        duration = time.monotonic() - started
        await asyncio.sleep(0.3)
        frames = len(user.patch_frames())
    # 2 s at 20 Hz: at most 42 frames, stretched if the producer ran slower.
    bound = max(duration, 2) * MAX_HZ + 2
    assert (frames <= bound) is coalesced, (frames, bound)
    assert user.value("value") == "400"


@coalesce_updates(max_hz=MAX_HZ)
def ordered_app(page: ft.Page) -> None:
    items = ft.Column(key="items")

    async def shuffle(e: ft.Event) -> None:
        for n in range(5):
            items.controls.append(ft.Text(f"item {n}"))
            items.update()
        items.controls.pop(1)
        items.update()
        items.controls.insert(0, ft.Text("first"))
        items.update()
        field = ft.TextField(key="field")
        items.controls.append(field)
        items.update()
        await field.focus()  # a one-shot message right after a deferred add
        field.value = "focused"
        field.update()

    page.add(items, ft.Button("go", key="go", on_click=shuffle))


async def test_adds_removes_and_invoke_method_keep_their_order():
    async with FletServer(ordered_app) as server, FletClient(server.ws_url) as user:
        await user.click("go")
        await user.wait_for(lambda: user.value("field") == "focused")
        labels = [c.get("value") for c in user.find("items")["controls"]]
        field_id = user.find("field")["_i"]
        assert not user.errors
    assert labels == ["first", "item 0", "item 2", "item 3", "item 4", "focused"]
    kinds = [
        ("invoke" if f.action == Action.INVOKE_METHOD else "patch", f.body)
        for f in user.frames
        if f.action in (Action.PATCH_CONTROL, Action.INVOKE_METHOD)
    ]
    first_invoke = next(i for i, (k, _) in enumerate(kinds) if k == "invoke")
    assert kinds[first_invoke][1]["control_id"] == field_id
    # The patch that added the field reached the client before the focus call.
    assert any(adds(body, field_id) for _, body in kinds[:first_invoke])


def adds(body: dict, control_id: int) -> bool:
    """Whether a PATCH_CONTROL body has an op adding control `control_id`.

    Looks at each op's own value, not at `repr(body)`: the mirror applies later
    patches into the dicts earlier frames added, so an old body shows later
    controls too.
    """
    return any(len(op) == 4 and holds(op[3], control_id) for op in body["patch"][1:])


def holds(value: object, control_id: int) -> bool:
    """Whether a patch value is, or contains, control `control_id`."""
    if isinstance(value, dict):
        return value.get("_i") == control_id or any(
            holds(v, control_id) for v in value.values()
        )
    return isinstance(value, list) and any(holds(v, control_id) for v in value)


@coalesce_updates(max_hz=MAX_HZ)
def threaded_app(page: ft.Page) -> None:
    value = ft.Text("0", key="value")

    def work() -> None:
        for n in range(1, 301):
            value.value = str(n)
            value.update()  # from a worker thread

    page.add(value, ft.Button("go", key="go", on_click=lambda e: page.run_thread(work)))


async def test_updates_from_a_worker_thread_are_delivered():
    async with FletServer(threaded_app) as server, FletClient(server.ws_url) as user:
        await user.click("go")
        await user.wait_for(lambda: user.value("value") == "300")
        assert len(user.patch_frames()) < 300


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="max_hz"):
        coalesce_updates(max_hz=0)
    with pytest.raises(TypeError, match="coalesce_updates"):
        coalesce_updates(tight_loop_app)
    with pytest.raises(TypeError, match="main"):
        coalesce_updates()(42)


async def test_stats_report_batches_and_merges():
    async with (
        FletServer(maybe_coalesced(tight_loop_app, True)) as server,
        FletClient(server.ws_url) as user,
    ):
        await user.click("burst")
        await user.wait_for(lambda: user.value("value") == "1000")
        section = stats()["coalesce"]
        assert section["sessions"] >= 1
        mine = session_stats(user)
        assert mine["coalesced"] >= 990
        assert mine["pending"] == 0
        # A session id lets a client take the session over: never in stats().
        assert user.session_id not in json.dumps(stats(), default=str)


def session_stats(user: FletClient) -> dict:
    """`stats()["coalesce"]` of the user's session (listed by its opaque tag)."""
    session = next(s for s in _flet.sessions().values() if s.id == user.session_id)
    return stats()["coalesce"]["per_session"][_flet.session_tag(session)]


async def test_repeated_updates_of_a_pending_control_hold_nothing_afterwards():
    # A repeated update() of a pending control is a no-op looked up in the
    # seam's held map; every entry must go once the patch is sent or the
    # session ends mid-stream (ids would otherwise be reused by new controls).
    async with FletServer(maybe_coalesced(producer_app, True)) as server:
        finished = await FletClient(server.ws_url).connect()
        await finished.wait_for(lambda: finished.value("value") == "400", timeout=30)
        await wait_until(lambda: not hooks.held)
        await finished.close()
        gone = await FletClient(server.ws_url).connect()
        await gone.wait_for(lambda: int(gone.value("value") or 0) > 10)
        gone.abort()
        await wait_until(lambda: not hooks.held, timeout=10)


@coalesce_updates(max_hz=MAX_HZ)
def detached_app(page: ft.Page) -> None:
    value = ft.Text("0", key="value")

    def go(e: ft.Event) -> None:
        for n in range(1, 101):
            value.value = str(n)
            value.update()
        try:
            ft.Text("never added").update()
        except RuntimeError as exc:
            value.value = f"refused: {exc}"
            value.update()

    page.add(value, ft.Button("go", key="go", on_click=go))


async def test_update_of_a_control_not_on_the_page_still_raises():
    async with FletServer(detached_app) as server, FletClient(server.ws_url) as user:
        await user.click("go")
        await user.wait_for(lambda: str(user.value("value")).startswith("refused"))
        assert "added to the page" in user.value("value")


SLOW_WINDOW_HZ = 1 / 120  # a 2-minute window: nothing server-pushed gets through


def clicks_beside_a_ticker_app(gate: asyncio.Event, ticks: list[int], shared: bool):
    """A 50 Hz clock and a gated job. With `shared`, both update the Column
    holding them: the event's change merges into a patch already pending."""

    @coalesce_updates(max_hz=SLOW_WINDOW_HZ)
    def main(page: ft.Page) -> None:
        clock = ft.Text("0", key="clock")
        status = ft.Text("idle", key="status")
        card = ft.Column([clock, status])

        async def tick() -> None:  # 50 Hz: the rate window is always in use
            for n in range(1, 100_000):
                clock.value = str(n)
                (card if shared else clock).update()
                ticks.append(n)
                await asyncio.sleep(0.02)

        async def work(e: ft.Event) -> None:
            status.value = "working"
            (card if shared else status).update()
            await gate.wait()
            status.value = "done"
            (card if shared else status).update()  # sent when the handler ends

        page.add(card, ft.Button("go", key="go", on_click=work))
        page.run_task(tick)

    return main


@pytest.mark.parametrize("shared", [False, True], ids=["own-control", "pending"])
async def test_a_client_events_response_is_not_held_for_the_rate_window(shared):
    # main's page.add() is the first flush and opens a 2-minute window; without
    # the event path, the click's patches would wait for it: these waits time out.
    gate, ticks = asyncio.Event(), []
    async with (
        FletServer(clicks_beside_a_ticker_app(gate, ticks, shared)) as server,
        FletClient(server.ws_url) as user,
    ):
        await wait_until(lambda: ticks)  # the clock's patch is pending
        await user.click("go")
        await user.wait_for(lambda: user.value("status") == "working", timeout=20)
        await wait_until(lambda: len(ticks) >= 25)
        await server.call(_set(gate))
        await user.wait_for(lambda: user.value("status") == "done", timeout=20)
        frames = len(user.patch_frames())
        clock = int(user.value("clock"))
    # 25+ ticks, yet the ticker stays capped: main's add, then one frame per
    # dirty control in each of the event's two flushes, which carry its values.
    assert frames <= 5, frames
    assert clock >= 25


async def _set(event: asyncio.Event) -> None:
    event.set()
