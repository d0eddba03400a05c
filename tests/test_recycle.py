"""Worker recycling: a worker that served its sessions drains and is replaced."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flet_resilient.cluster import Cluster
from flet_resilient.testing import FletClient, wait_until

APPS = Path(__file__).parent / "apps"

pytestmark = pytest.mark.timeout(120)


async def page_count(client: FletClient) -> str:
    await client.wait_for(lambda: client.find("count"))
    return str(client.value("count"))


async def test_a_recycled_worker_drains_and_its_replacement_restores_users():
    env = {"RECYCLE_AFTER": "3", "SAVE_DELAY": "60"}  # drain must do the saving
    async with Cluster(
        "deploy_app:create_app", cwd=APPS, workers=1, server="gunicorn", env=env
    ) as deploy:
        master = deploy.workers[0]
        before = master.worker_pids()
        users = [await FletClient(master.ws_url).connect() for _ in range(2)]
        for n, user in enumerate(users, start=1):
            await page_count(user)
            for i in range(1, n + 1):
                await user.click("inc")
                await user.wait_for(lambda u=user, i=i: u.value("count") == str(i))
        third = await FletClient(master.ws_url).connect()  # the last it serves
        for user in [*users, third]:
            await asyncio.wait_for(user.closed.wait(), 30)  # drained: go elsewhere
        await wait_until(lambda: master.worker_pids() - before, timeout=30)
        fresh = master.worker_pids() - before
        again = [await user.reconnect() for user in users]
        counts = [await page_count(user) for user in again]
        pids = {int(user.value("pid")) for user in again}
        for user in again:
            await user.close()
    assert counts == ["1", "2"]
    assert pids <= fresh  # served by the replacement process
