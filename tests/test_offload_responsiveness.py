"""Acceptance: one user's 1.5 s CPU job must not stall another user's click."""

import asyncio
import threading

import flet as ft
import pytest
from offload_jobs import spin, spin_offloaded

from flet_resilient.testing import FletClient, FletServer

JOB_SECONDS = 1.5


def make_app(
    use_offload: bool, job_started: threading.Event, job_done: threading.Event
):
    def main(page: ft.Page) -> None:
        status = ft.Text("idle", key="status")
        count = ft.Text("0", key="count")

        async def heavy(e: ft.Event) -> None:
            status.value = "busy"
            status.update()
            job_started.set()
            if use_offload:
                await spin_offloaded(JOB_SECONDS)
            else:
                spin(JOB_SECONDS)  # the "async lie": sync CPU work on the loop
            job_done.set()
            status.value = "done"
            status.update()

        def light(e: ft.Event) -> None:
            count.value = str(int(count.value) + 1)

        page.add(
            status,
            count,
            ft.Button("heavy", key="heavy", on_click=heavy),
            ft.Button("light", key="light", on_click=light),
        )

    return main


@pytest.mark.parametrize("use_offload", [True, False], ids=["offload", "plain"])
async def test_bystander_click_answered_while_cpu_job_runs(use_offload, request):
    if not use_offload:  # compared with Flet as shipped, not merely undecorated
        request.getfixturevalue("stock_flet")
    job_started, job_done = threading.Event(), threading.Event()
    async with (
        FletServer(make_app(use_offload, job_started, job_done)) as server,
        FletClient(server.ws_url) as a,
        FletClient(server.ws_url) as b,
    ):
        await b.wait_for(lambda: b.find("light"))
        await a.click("heavy")
        await asyncio.to_thread(job_started.wait, 10)  # A's job is under way
        await b.click("light")
        await b.wait_for(lambda: b.value("count") == "1", timeout=30)
        answered_during_job = not job_done.is_set()
        await a.wait_for(lambda: a.value("status") == "done", timeout=30)

    # With @offload, B is answered while A's job still runs; plain Flet makes
    # B wait for A's job (this is what the test proves it can detect).
    assert answered_during_job is use_offload
