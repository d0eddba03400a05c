"""Worker recycling: a worker that served its sessions, or holds memory its live
sessions do not need, drains and is replaced."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flet_resilient import evict_idle
from flet_resilient.cluster import Cluster, Worker
from flet_resilient.recycle import Recycler
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


# --- recycle_idle_rss: leave once the memory is reclaimable -------------------------

BURST = 5  # closed tabs per worker, each a page of CONTROLS Texts
RECLAIM_LINE = "MiB reclaimable"


def recycle_worker(tmp_path: Path, name: str) -> Worker:
    """gunicorn with one worker of recycle_app(recycle_idle_rss=1 byte), its
    state (and recycling turns) and its log (NAME.log) in `tmp_path`."""
    env = {
        "FLET_RESILIENT_STATE_DIR": str(tmp_path / "state"),
        "CONTROLS": "1500",
        "RECYCLE_IDLE_RSS": "1",
    }
    return Worker(
        "recycle_app:create_app",
        cwd=APPS,
        server="gunicorn",
        env=env,
        name=name,
        log_dir=tmp_path,
    )


async def active_then_burst(worker: Worker) -> tuple[FletClient, set[str]]:
    """One user who clicked once and stays connected, then BURST tabs that
    load the page and close; returns the user and the pids that served all."""
    active = await FletClient(worker.ws_url).connect()
    assert await page_count(active) == "0"
    await active.click("inc")
    await active.wait_for(lambda: active.value("count") == "1")
    pids = {str(active.value("pid"))}
    for _ in range(BURST):
        tab = await FletClient(worker.ws_url).connect()
        await page_count(tab)
        pids.add(str(tab.value("pid")))
        await tab.close()
    return active, pids


def recycle_lines(worker: Worker, kind: str) -> list[str]:
    text = worker.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if kind in line]


def has_line(worker: Worker, text: str) -> bool:
    return bool(recycle_lines(worker, text))


async def test_workers_recycle_in_turn_once_evictions_left_reclaimable_memory(
    tmp_path,
):
    """Two gunicorns of one machine (one state directory), each with one
    active user and a burst of closed tabs: one worker recycles, the other
    defers to its turn; the active user comes back to its state."""
    async with recycle_worker(tmp_path, "a") as a, recycle_worker(tmp_path, "b") as b:
        before = a.worker_pids() | b.worker_pids()
        served = await asyncio.gather(active_then_burst(a), active_then_burst(b))
        await wait_until(
            lambda: has_line(a, "recycle deferred") or has_line(b, "recycle deferred"),
            timeout=30,
        )
        deferred = [w for w in (a, b) if has_line(w, "recycle deferred")]
        first = [w for w in (a, b) if has_line(w, "recycling this worker")]
        assert len(deferred) == 1 and first and first[0] is not deferred[0]
        worker, (active, pids) = first[0], served[(a, b).index(first[0])]
        await asyncio.wait_for(active.closed.wait(), 30)  # drained: come back
        assert active.ws is not None and active.ws.close_code == 1012
        await wait_until(lambda: worker.worker_pids() - before, timeout=30)
        again = await active.reconnect()
        count, pid = await page_count(again), str(again.value("pid"))
        await again.click("inc")  # the replacement took it over, evicted
        await again.wait_for(lambda: again.value("count") == "2")  # nothing: stays
        await again.close()
        recycled = recycle_lines(worker, "recycling this worker")
    assert len(pids) == 1  # no recycle while the burst was live
    assert count == "1"  # the drain saved it, the replacement restored it
    assert pid not in pids  # served by the replacement
    assert len(recycled) == 1 and RECLAIM_LINE in recycled[0], recycled


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "64MiB"])
def test_recycle_idle_rss_must_be_a_positive_int_of_bytes(bad):
    with pytest.raises(ValueError, match="recycle_idle_rss must be a positive int"):
        evict_idle(recycle_idle_rss=bad)


def test_recycle_idle_rss_without_a_writable_state_dir_fails_at_startup(
    tmp_path, monkeypatch
):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setenv("FLET_RESILIENT_STATE_DIR", str(not_a_dir))
    monkeypatch.setattr(Recycler, "current", None)
    with pytest.raises(RuntimeError, match="FLET_RESILIENT_STATE_DIR"):
        evict_idle(recycle_idle_rss=1, secret_key="k" * 32)
