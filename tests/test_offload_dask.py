"""The pluggable executor path, proven with a real Dask distributed cluster."""

import asyncio
import os

import offload_jobs
import pytest

from flet_resilient import configure_offload, stats

distributed = pytest.importorskip(
    "distributed", reason="install the 'dask' extra to test the Dask executor path"
)


async def test_process_kind_calls_run_on_a_dask_cluster():
    def start():
        cluster = distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        return cluster, distributed.Client(cluster)

    cluster, client = await asyncio.to_thread(start)
    try:
        configure_offload(executor=client.get_executor())
        assert await offload_jobs.square(7) == 49
        dask_worker_pids = set(client.run(os.getpid).values())
        assert await offload_jobs.worker_pid() in dask_worker_pids
        assert "ClientExecutor" in stats()["offload"]
    finally:
        configure_offload(processes=2)
        await asyncio.to_thread(client.close)
        await asyncio.to_thread(cluster.close)
