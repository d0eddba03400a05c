"""A plain Flet app that shows which server process answered (run as a worker);
its "block" button holds the worker's event loop for BLOCK_S seconds (2).

    python -m uvicorn cluster_app:create_app --factory --port 8000

`create_resilient_app` is the same app with flet-resilient's fixes installed.
"""

import os
import time

import flet as ft
import flet_web.fastapi as flet_fastapi


def create_app() -> object:
    async def main(page: ft.Page) -> None:
        def block(e: ft.Event) -> None:
            time.sleep(float(os.environ.get("BLOCK_S", "2")))  # inline, on the loop

        page.add(
            ft.Text(str(os.getpid()), key="pid"),
            ft.Button("block", key="block", on_click=block),
        )

    return flet_fastapi.app(main)


def create_resilient_app() -> object:
    import flet_resilient

    flet_resilient.install()  # the seam's fixes, without any decorator
    return create_app()
