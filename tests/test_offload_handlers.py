"""`@offload(kind="thread")` directly on a sync Flet handler."""

import threading

import flet as ft

from flet_resilient import offload
from flet_resilient.testing import FletClient, FletServer


async def test_thread_handler_updates_reach_the_client_while_it_runs():
    proceed = threading.Event()
    handler_threads: list[str] = []

    def main(page: ft.Page) -> None:
        status = ft.Text("idle", key="status")
        count = ft.Text("0", key="count")

        @offload(kind="thread")
        def save(e: ft.Event) -> None:  # a blocking handler, fixed with one line
            handler_threads.append(threading.current_thread().name)
            status.value = "saving"
            status.update()
            proceed.wait(timeout=20)  # blocking I/O stand-in
            status.value = "saved"
            status.update()

        def light(e: ft.Event) -> None:
            count.value = str(int(count.value) + 1)

        page.add(
            status,
            count,
            ft.Button("save", key="save", on_click=save),
            ft.Button("light", key="light", on_click=light),
        )

    try:
        async with FletServer(main) as server, FletClient(server.ws_url) as user:
            await user.click("save")
            # The update made inside the still-blocked handler thread arrives...
            await user.wait_for(lambda: user.value("status") == "saving")
            # ...and the loop stays free for other events meanwhile.
            await user.click("light")
            await user.wait_for(lambda: user.value("count") == "1")
            assert user.value("status") == "saving"
            proceed.set()
            await user.wait_for(lambda: user.value("status") == "saved")
            assert not user.errors
    finally:
        proceed.set()
    assert handler_threads and handler_threads[0] != threading.main_thread().name
