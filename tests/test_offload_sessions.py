"""Per-session limits, busy policies and cancellation, through a real Flet server."""

import asyncio
import threading

import flet as ft
import offload_jobs
import pytest

from flet_resilient import JobCancelled, JobDropped, _flet, stats
from flet_resilient.testing import FletClient, FletServer, wait_until

JOBS = {
    "queue": offload_jobs.hold_queue,
    "drop": offload_jobs.hold_drop,
    "latest": offload_jobs.hold_latest,
}


@pytest.fixture(autouse=True)
def _reset_jobs():
    offload_jobs.release.clear()
    offload_jobs.ran.clear()
    yield
    offload_jobs.release.set()


def make_app(policy: str, outcomes: list[str], sessions: list):
    job = JOBS[policy]

    def main(page: ft.Page) -> None:
        sessions.append(page.session)
        calls = ft.Text("0", key="calls")

        async def run(e: ft.Event) -> None:
            n = int(calls.value) + 1
            calls.value = str(n)
            calls.update()
            try:
                outcomes.append(f"ran {await job(n)}")
            except JobDropped:
                outcomes.append(f"dropped {n}")
            except JobCancelled:
                outcomes.append(f"cancelled {n}")

        page.add(calls, ft.Button("run", key="run", on_click=run))

    return main


async def click_three_times(user: FletClient) -> None:
    for n in (1, 2, 3):
        await user.click("run")
        await user.wait_for(lambda n=n: user.value("calls") == str(n))
    await asyncio.sleep(0.2)  # let the server reach the per-session gate


@pytest.mark.parametrize(
    ("policy", "expected_ran", "expected_dropped"),
    [
        ("queue", [1, 2, 3], []),
        ("drop", [1], ["dropped 2", "dropped 3"]),
        ("latest", [1, 3], ["dropped 2"]),
    ],
)
async def test_busy_policy(policy, expected_ran, expected_dropped):
    outcomes: list[str] = []
    async with (
        FletServer(make_app(policy, outcomes, [])) as server,
        FletClient(server.ws_url) as user,
    ):
        await click_three_times(user)
        assert offload_jobs.ran == [1]  # per_session=1: only one runs at a time
        assert sorted(o for o in outcomes if o.startswith("dropped")) == (
            expected_dropped
        )
        offload_jobs.release.set()
        await wait_until(lambda: len(outcomes) == 3)
    assert offload_jobs.ran == expected_ran
    assert sorted(o for o in outcomes if o.startswith("ran")) == [
        f"ran {n}" for n in expected_ran
    ]


async def test_sessions_do_not_share_the_per_session_limit():
    outcomes: list[str] = []
    async with (
        FletServer(make_app("drop", outcomes, [])) as server,
        FletClient(server.ws_url) as a,
        FletClient(server.ws_url) as b,
    ):
        await a.click("run")
        await b.click("run")
        await wait_until(lambda: len(offload_jobs.ran) == 2)
        assert offload_jobs.ran == [1, 1]  # both users' first calls run at once
        assert outcomes == []
        offload_jobs.release.set()


async def test_session_close_cancels_pending_and_running_jobs():
    outcomes: list[str] = []
    sessions: list = []
    async with (
        FletServer(make_app("queue", outcomes, sessions)) as server,
        FletClient(server.ws_url) as user,
    ):
        await click_three_times(user)  # 1 running, 2 and 3 queued
        before = stats()["counters"].get("offload.cancelled", 0)
        await server.call(_flet.close_session(sessions[0]))
        await wait_until(lambda: len(outcomes) == 3)
    assert sorted(outcomes) == ["cancelled 1", "cancelled 2", "cancelled 3"]
    assert stats()["counters"]["offload.cancelled"] == before + 3
    assert offload_jobs.ran == [1]  # the queued calls never started


async def test_session_close_kills_a_running_process_job():
    sessions: list = []
    outcomes: list[str] = []
    started = threading.Event()

    def main(page: ft.Page) -> None:
        sessions.append(page.session)

        async def run(e: ft.Event) -> None:
            started.set()
            try:
                await offload_jobs.long_spin(60)
            except JobCancelled:
                outcomes.append("cancelled")

        page.add(ft.Button("run", key="run", on_click=run))

    async with FletServer(main) as server, FletClient(server.ws_url) as user:
        await user.click("run")
        await asyncio.to_thread(started.wait, 10)
        await wait_until(lambda: stats()["offload"]["process"]["running"] == 1)
        await server.call(_flet.close_session(sessions[0]))
        await wait_until(lambda: outcomes)
    assert outcomes == ["cancelled"]
    assert stats()["offload"]["process"]["running"] == 0
    # The 60 s job's worker was killed and replaced: the pool still serves calls.
    assert await offload_jobs.square(4) == 16
