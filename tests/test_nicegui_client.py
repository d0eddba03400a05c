"""The capacity benchmark's simulated NiceGUI user keeps its page as a browser
tab does: a socket lost in transit comes back to the same page client."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flet_resilient.testing import FaultProxy, wait_until

pytest.importorskip("nicegui")
pytest.importorskip("socketio")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_capacity import NiceGUIServer
from nicegui_client import NiceGUIClient


async def acknowledge(client: NiceGUIClient, count: int) -> None:
    """Click "Acknowledge" and wait for this page's count to reach `count`."""
    await client.click("ack")
    await client.wait_for(lambda: client.value("acked") == f"{count} acknowledged", 15)


async def test_a_cut_socket_comes_back_to_the_same_page_client(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_ROWS", "20")  # a small page: quick to build
    server = await NiceGUIServer(tmp_path / "nicegui.log").start()
    try:
        async with FaultProxy(server.port) as proxy:
            client = NiceGUIClient(f"http://127.0.0.1:{proxy.port}")
            await client.connect()
            try:
                await acknowledge(client, 1)
                proxy.cut()  # both sides see the connection reset
                await wait_until(lambda: client.dropped == 1, 15)
                await acknowledge(client, 2)  # the same page: its count goes on
                assert client.recovered == 1
                assert not client.closed.is_set()
            finally:
                await client.close()
    finally:
        server.stop()
