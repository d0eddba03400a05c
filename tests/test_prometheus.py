"""The Prometheus endpoint: stats() in the exposition format, behind a token."""

import asyncio

import pytest
from operator_endpoints import counter_app, get

from flet_resilient.prometheus import mount_metrics
from flet_resilient.testing import FletClient, FletServer

pytest.importorskip("prometheus_client")


async def scrape(url: str, token: str | None) -> tuple[int, str]:
    status, _, text = await asyncio.to_thread(get, url, token and f"Bearer {token}")
    return status, text


async def test_metrics_are_served_to_the_token_holder_only():
    async with FletServer(counter_app) as server:
        mount_metrics(server.app, "/metrics", token="s3cret")
        async with FletClient(server.ws_url) as user:
            await user.click("inc")
            await user.wait_for(lambda: user.value("count") == "1")
            url = f"{server.url}/metrics"
            status, text = await scrape(url, "s3cret")
            refused = [await scrape(url, t) for t in (None, "x")]
    assert status == 200
    assert "flet_resilient_coalesce_batches_total" in text
    assert 'flet_resilient_loop_lag_seconds_bucket{le="+Inf"}' in text
    assert "flet_resilient_transport_sockets 1.0" in text
    assert user.session_id not in text  # no per-session labels, no ids
    assert [code for code, _ in refused] == [401, 401]


def test_no_token_no_endpoint(monkeypatch):
    monkeypatch.delenv("FLET_RESILIENT_METRICS_TOKEN", raising=False)
    with pytest.raises(ValueError, match="token"):
        mount_metrics(object())
