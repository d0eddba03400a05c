from typing import Any

from flet.app import AppCallable
from flet_web.fastapi.flet_fastapi import FastAPI

def app(
    main: AppCallable,
    before_main: AppCallable | None = None,
    **options: Any,
) -> FastAPI: ...
