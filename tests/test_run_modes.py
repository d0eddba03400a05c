"""Decorated apps started with `ft.run(view=WEB_BROWSER)` and `flet run --web`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flet_resilient.cluster import free_port, wait_for_port
from flet_resilient.testing import FletClient

APP = Path(__file__).parent / "apps" / "run_app.py"
FLET = shutil.which("flet", path=os.path.dirname(sys.executable))

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def started(command: list[str], port: int) -> Iterator[None]:
    """Run `command` (in its own process group) until the block ends."""
    env = {
        **os.environ,
        "FLET_SERVER_IP": "127.0.0.1",
        "FLET_SERVER_PORT": str(port),
        "FLET_DISPLAY_URL_PREFIX": "url:",  # print the URL, open no browser
    }
    process = subprocess.Popen(
        command, env=env, cwd=APP.parent, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, process, timeout=60)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(params=["ft.run", "flet run --web"])
def port(request) -> Iterator[int]:
    """The port of the app, started the way the parameter says."""
    port = free_port()
    command = [sys.executable, str(APP)]
    if request.param == "flet run --web":
        if FLET is None:
            pytest.skip("the flet command is not installed (flet-cli)")
        command = [FLET, "run", "--web", "--host", "127.0.0.1", "-p", str(port),
                   str(APP)]  # fmt: skip
    with started(command, port):
        yield port


async def test_the_decorators_act_however_the_app_is_started(port):
    async with FletClient(f"ws://127.0.0.1:{port}/ws") as user:
        await user.wait_for(lambda: user.find("mitigations"), timeout=30)
        mitigations = user.value("mitigations")
        await user.click("inc")
        await user.wait_for(lambda: user.value("count") == "1")
    assert mitigations == "coalesced sessions: 1"  # coalesce_updates is on
