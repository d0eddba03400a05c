"""pytest fixtures to test a Flet app with simulated users (`pytest11` plugin).

Define a `flet_main` fixture returning your app's `main`, then use:

* `flet_server`: the app under uvicorn on 127.0.0.1 and a free port;
* `flet_proxy`: a `FaultProxy` in front of it (`blackhole()`, `cut()`);
* `flet_client`: a connected `FletClient` going through the proxy, with
  `click(key)`, `value(key)`, `wait_for(...)` and `reconnect()`;
* `flet_connect`: a factory for more clients (`await flet_connect()`);
* `stock_flet`: Flet exactly as shipped for the test (the seam uninstalled,
  and not reinstalled by a server or decorator until the test ends), to
  compare an app with and without flet-resilient in one run.

The fixtures are async and need pytest-asyncio (in the `test` extra); without
it this plugin registers nothing, so it never breaks an unrelated test run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

try:
    import pytest_asyncio
except ImportError:  # the plugin loads wherever flet-resilient is installed
    HAVE_ASYNCIO = False
else:
    HAVE_ASYNCIO = True

if HAVE_ASYNCIO:
    from flet_resilient._flet import as_shipped
    from flet_resilient.testing import FaultProxy, FletClient, FletServer

    @pytest.fixture
    def flet_main() -> Callable[..., Any]:
        """Override in your conftest: return the app's `main(page)`."""
        raise pytest.UsageError(
            "define a `flet_main` fixture returning your app's main(page) to use "
            "flet_server / flet_client"
        )

    @pytest.fixture
    def stock_flet() -> Iterator[None]:
        """Flet as shipped during the test (`flet_resilient.uninstall()`);
        the seam is reinstalled after it if it was installed before."""
        with as_shipped():
            yield

    @pytest.fixture
    def flet_server_options() -> dict[str, Any]:
        """Override to pass options to `flet_web.fastapi.app` (e.g. no_cdn=True)."""
        return {}

    @pytest_asyncio.fixture
    async def flet_server(
        flet_main: Callable[..., Any], flet_server_options: dict[str, Any]
    ) -> AsyncIterator[FletServer]:
        async with FletServer(flet_main, **flet_server_options) as server:
            yield server

    @pytest_asyncio.fixture
    async def flet_proxy(flet_server: FletServer) -> AsyncIterator[FaultProxy]:
        async with FaultProxy(flet_server.port) as proxy:
            yield proxy

    @pytest_asyncio.fixture
    async def flet_connect(
        flet_proxy: FaultProxy,
    ) -> AsyncIterator[Callable[..., Awaitable[FletClient]]]:
        clients: list[FletClient] = []

        async def connect(**options: Any) -> FletClient:
            client = await FletClient(flet_proxy.ws_url, **options).connect()
            clients.append(client)
            return client

        yield connect
        for client in clients:
            if not client.closed.is_set():
                client.abort()

    @pytest_asyncio.fixture
    async def flet_client(
        flet_connect: Callable[..., Awaitable[FletClient]],
    ) -> FletClient:
        return await flet_connect()
