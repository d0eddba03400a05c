"""A plain Flet app that shows which server process answered (run as a worker).

    python -m uvicorn cluster_app:create_app --factory --port 8000

`create_resilient_app` is the same app with flet-resilient's fixes installed.
"""

import os

import flet as ft
import flet_web.fastapi as flet_fastapi


def create_app() -> object:
    async def main(page: ft.Page) -> None:
        page.add(ft.Text(str(os.getpid()), key="pid"))

    return flet_fastapi.app(main)


def create_resilient_app() -> object:
    import flet_resilient

    flet_resilient.install()  # the seam's fixes, without any decorator
    return create_app()
