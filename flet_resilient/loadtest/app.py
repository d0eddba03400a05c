"""The server side of a load test: the app, its stats route, the child process.

`serve()` runs in the child `python -m flet_resilient.loadtest --serve APP`;
`create_app()` is the ASGI factory each worker of a multi-worker run loads
(`$FLET_RESILIENT_LOADTEST_APP` names the app).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATS_PATH = "/__flet_resilient/stats"
APP_ENV = "FLET_RESILIENT_LOADTEST_APP"  # the target a worker's create_app() serves


def import_location(location: str) -> tuple[str, Path]:
    """(module name, sys.path root) for a dotted module or a .py file path."""
    path = Path(location)
    if location.endswith(".py") or path.is_file():
        path = path.resolve()
        if not path.is_file():
            raise SystemExit(f"loadtest: no such file: {location}")
        cwd = Path.cwd().resolve()
        with contextlib.suppress(ValueError):
            parts = path.with_suffix("").relative_to(cwd).parts
            if all(part.isidentifier() for part in parts):
                return ".".join(parts), cwd  # e.g. examples.cpu_heavy
        return path.stem, path.parent
    return location, Path.cwd().resolve()


def load_main(target: str) -> Callable[..., Any]:
    """The app's main from `module:attr` or `path/to/app.py:attr` (attr: main)."""
    location, sep, attr = target.rpartition(":")
    if not sep or not location or len(location) == 1:  # "app.py" or "C:..."
        location, attr = target, "main"
    module_name, root = import_location(location)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # also reaches spawned @offload workers
    module = importlib.import_module(module_name)
    app_main: Callable[..., Any] | None = getattr(module, attr or "main", None)
    if not callable(app_main):
        raise SystemExit(f"loadtest: {module_name} has no callable {attr!r}")
    return app_main


def build_app(app_main: Callable[..., Any], **app_kwargs: Any) -> Any:
    """`flet_web.fastapi.app(main)` plus a JSON route with `flet_resilient.stats()`.

    The route goes first: Flet mounts its static files on "/", which would
    otherwise answer it. Asking for stats also starts the loop-lag watchdog.
    """
    import flet_web.fastapi as flet_fastapi
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    import flet_resilient

    async def stats_route(request: Request) -> Response:
        flet_resilient.watch_loop()
        body = json.dumps(flet_resilient.stats(), default=str)
        return Response(body, media_type="application/json")

    app_kwargs.setdefault("no_cdn", True)
    flet_resilient.install()  # as serve() does (a no-op when switched off)
    app = flet_fastapi.app(app_main, **app_kwargs)
    app.router.routes.insert(0, Route(STATS_PATH, stats_route, methods=["GET"]))
    return app


def serve(target: str) -> None:
    """Child side: serve `target` on 127.0.0.1, print its URL, stop on stdin EOF.

    The parent closes our stdin to stop us, so we also stop when it dies.
    """
    from flet_resilient import configure_offload
    from flet_resilient.measure import serve_child

    app = create_app(target)
    try:
        asyncio.run(serve_child(app, log_level="warning", timeout_graceful_shutdown=3))
    finally:
        configure_offload()  # stop the app's worker processes, if any


def create_app(target: str | None = None) -> Any:
    """The app `target` (default: `$FLET_RESILIENT_LOADTEST_APP`) with its stats
    route, as an ASGI app (`uvicorn flet_resilient.loadtest.app:create_app
    --factory`)."""
    # Plain Flet blocks the loop on purpose; the watchdog would log every stall.
    logging.getLogger("flet_resilient.watchdog").setLevel(logging.ERROR)
    return build_app(load_main(target or os.environ[APP_ENV]))
