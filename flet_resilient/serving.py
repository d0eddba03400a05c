"""Serve a Flet app for the web with one call (what the examples use)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["serve", "uvicorn_options"]


def serve(
    main: Callable[..., Any],
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    **app_options: Any,
) -> None:
    """Run `main` under uvicorn with `flet_web.fastapi.app`, printing its URL.

    The port is `port`, else $PORT, else 8550. The Flutter client is served
    from the `flet-web` package (`no_cdn=True`) unless told otherwise, so the
    app works without reaching a CDN. uvicorn gets the inbound frame limit
    (`configure_limits(max_frame_bytes=...)`), so it refuses a bigger frame
    before reading it.
    """
    import flet_web.fastapi as flet_fastapi
    import uvicorn

    from flet_resilient import _flet

    _flet.install()
    port = port or int(os.environ.get("PORT", "8550"))
    app_options.setdefault("no_cdn", True)
    print(f"{getattr(main, '__module__', 'app')}: http://{host}:{port}", flush=True)
    uvicorn.run(
        flet_fastapi.app(main, **app_options), host=host, port=port, **uvicorn_options()
    )


def uvicorn_options() -> dict[str, Any]:
    """The uvicorn options `serve()` adds for the inbound limits (pass them when
    running uvicorn yourself): `ws_max_size`, unless switched off."""
    from flet_resilient.limits import current_limits
    from flet_resilient.switch import disabled

    limit = current_limits().max_frame_bytes
    return {} if disabled() or limit is None else {"ws_max_size": limit}
