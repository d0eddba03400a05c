"""`@throttle` and `@debounce` on chatty handlers, per control and per session."""

import asyncio
import time

import flet as ft
import pytest

from flet_resilient import debounce, throttle
from flet_resilient.testing import FletClient, FletServer, wait_until

WINDOW = 0.2
QUIET = 1.0  # debounce wait: far longer than the 10 ms gaps between events


def slider_app(seen: dict[str, list[str]], decorator, is_async: bool):
    def main(page: ft.Page) -> None:
        label = ft.Text("", key="label")

        def record(e: ft.Event) -> None:
            seen.setdefault(page.session.id, []).append(e.data)
            label.value = e.data

        if is_async:

            async def on_change(e: ft.Event) -> None:
                await asyncio.sleep(0)
                record(e)

        else:
            on_change = record

        page.add(label, ft.Slider(key="slider", on_change=decorator(on_change)))

    return main


async def fire(user: FletClient, count: int, gap: float) -> float:
    started = time.monotonic()
    for n in range(1, count + 1):
        await user.event("slider", "change", str(n))
        await asyncio.sleep(gap)
    return time.monotonic() - started


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_throttle_runs_first_and_last_event_and_caps_the_rate(is_async):
    seen: dict[str, list[str]] = {}
    main = slider_app(seen, throttle(WINDOW), is_async)
    async with FletServer(main) as server, FletClient(server.ws_url) as user:
        duration = await fire(user, 50, 0.01)
        await user.wait_for(lambda: user.value("label") == "50")
        calls = seen[user.session_id]
    assert calls[0] == "1"  # leading edge
    assert calls[-1] == "50"  # trailing edge: the latest event is never lost
    assert len(calls) <= duration / WINDOW + 2
    assert calls == sorted(calls, key=int)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_debounce_runs_once_with_the_latest_event(is_async):
    seen: dict[str, list[str]] = {}
    main = slider_app(seen, debounce(QUIET), is_async)
    async with FletServer(main) as server, FletClient(server.ws_url) as user:
        await fire(user, 30, 0.01)
        await user.wait_for(lambda: user.value("label") == "30")
        await asyncio.sleep(QUIET)
        assert seen[user.session_id] == ["30"]


async def test_two_users_never_share_a_window():
    seen: dict[str, list[str]] = {}
    main = slider_app(seen, debounce(QUIET), False)
    async with (
        FletServer(main) as server,
        FletClient(server.ws_url) as a,
        FletClient(server.ws_url) as b,
    ):
        await asyncio.gather(fire(a, 10, 0.01), fire(b, 20, 0.01))
        await wait_until(lambda: len(seen) == 2)
        await a.wait_for(lambda: a.value("label") == "10")
        await b.wait_for(lambda: b.value("label") == "20")
    assert seen[a.session_id] == ["10"]
    assert seen[b.session_id] == ["20"]


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="throttle"):
        throttle(0)
    with pytest.raises(TypeError, match="debounce"):
        debounce("fast")
    with pytest.raises(TypeError, match="event handler"):
        throttle(1)(None)
