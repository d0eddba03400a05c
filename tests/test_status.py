"""The live status page: behind a token, the numbers an operator needs, no secrets."""

from __future__ import annotations

import asyncio
import json

import anyio
import pytest
from operator_endpoints import basic, counter_app, get

from flet_resilient import stats
from flet_resilient.metrics import Histogram
from flet_resilient.status import StatusSampler, mount_status
from flet_resilient.testing import FletClient, FletServer

TOKEN = "status-token-for-tests"


def test_no_token_no_page(monkeypatch):
    monkeypatch.delenv("FLET_RESILIENT_STATUS_TOKEN", raising=False)
    with pytest.raises(ValueError, match="FLET_RESILIENT_STATUS_TOKEN"):
        mount_status(object())
    with pytest.raises(ValueError, match="path"):
        mount_status(object(), "status", token=TOKEN)


async def test_page_and_data_are_for_the_token_holder_only(monkeypatch):
    monkeypatch.setenv("FLET_RESILIENT_STATUS_TOKEN", TOKEN)
    async with FletServer(counter_app) as server:
        mount_status(server.app, "/ops/status")  # the token from the environment
        base = f"{server.url}/ops/status"
        wrong = [None, "Bearer nope", basic("nope"), "Basic !!!", f"Token {TOKEN}"]
        refused = [
            await asyncio.to_thread(get, url, auth)
            for url in (base, f"{base}/data")
            for auth in wrong
        ]
        page = await asyncio.to_thread(get, base, basic(TOKEN))
        data = await asyncio.to_thread(get, f"{base}/data", f"Bearer {TOKEN}")
    assert [status for status, _, _ in refused] == [401] * len(refused)
    # A browser gets a login prompt, and nothing of the numbers.
    assert all("Basic realm=" in h["WWW-Authenticate"] for _, h, _ in refused)
    assert all(body == "unauthorized" or not body for _, _, body in refused)
    status, headers, html = page
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "<script>" in html and "src=" not in html  # self-contained: no CDN
    policy = headers["Content-Security-Policy"]
    assert "script-src 'sha256-" in policy and "frame-ancestors 'none'" in policy
    assert data[0] == 200 and data[1]["Cache-Control"] == "no-store"
    assert json.loads(data[2])["sessions"]["live"] == 0


async def test_data_has_every_signal_and_no_session_id():
    async with FletServer(counter_app) as server:
        mount_status(server.app, "/status", token=TOKEN)
        url = f"{server.url}/status/data"
        async with FletClient(server.ws_url) as user:
            first = await asyncio.to_thread(get, url, f"Bearer {TOKEN}")
            before = json.loads(first[2])
            for n in range(1, 6):
                await user.click("inc")
                await user.wait_for(lambda n=n: user.value("count") == str(n))
            # Polls within a second share one snapshot: poll until the clicks show.
            while True:
                second = await asyncio.to_thread(get, url, f"Bearer {TOKEN}")
                after = json.loads(second[2])
                if after["traffic"]["patches"] >= before["traffic"]["patches"] + 5:
                    break
                await asyncio.sleep(0.05)
            tags = list(stats()["coalesce"]["per_session"])
    assert set(after) == {
        *("worker", "window_s", "loop", "sessions", "traffic", "backlog"),
        *("evictions", "store", "offload", "levels"),
    }
    assert after["sessions"]["live"] == 1
    assert set(after["loop"]) == {"samples", "p50_ms", "p99_ms", "stalls"}
    assert before["traffic"]["patches_per_s"] is None  # one sample: no rate yet
    sent = after["traffic"]["patches"] - before["traffic"]["patches"]
    assert after["window_s"] >= 1  # the second snapshot is a second newer at least
    assert after["traffic"]["patches_per_s"] == pytest.approx(sent / after["window_s"])
    assert after["backlog"]["sockets"] == 1
    reasons = {"idle", "disconnected", "lru", "budget", "rebalance"}
    assert set(after["evictions"]["by_reason"]) == reasons
    assert set(after["store"]) == {
        *("present", "healthy", "kept_writes", "latency_p99_ms"),
        *("outages", "errors", "stores"),
    }
    assert set(after["levels"]) == {"loop", "backlog", "evictions", "store", "offload"}
    # The session id is a bearer secret; not even the opaque per-session tag shows.
    for body in (first[2], second[2]):
        assert user.session_id not in body
        assert tags and not any(tag in body for tag in tags)


async def test_loop_lag_is_measured_before_any_user_comes():
    async with FletServer(counter_app) as server:
        mount_status(server.app, "/status", token=TOKEN)
        url = f"{server.url}/status/data"
        with anyio.fail_after(10):
            while True:  # no socket yet: the page's own polls start the watchdog
                _, _, body = await asyncio.to_thread(get, url, f"Bearer {TOKEN}")
                if json.loads(body)["loop"]["samples"] > 0:
                    break
                await asyncio.sleep(0.1)


async def test_disconnected_sessions_are_counted_apart():
    # Flet keeps sessions process-wide: earlier tests' disconnected ones count too.
    kept = stats()["sessions"]["disconnected"]
    async with FletServer(counter_app) as server:
        user = await FletClient(server.ws_url).connect()
        await user.wait_for(lambda: user.value("count") == "0")
        assert stats()["sessions"] == {"live": 1, "disconnected": kept}
        await user.close()
        await wait_until(lambda: stats()["sessions"]["live"] == 0)
        assert stats()["sessions"] == {"live": 0, "disconnected": kept + 1}


async def wait_until(predicate, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def snapshot(frames: int, sent: int, lag_ms: list[float], **counters: int):
    """A `stats()` snapshot with these counters and loop-lag samples."""
    lag = Histogram()
    for value in lag_ms:
        lag.record(value)
    taken = stats()
    taken["counters"] = {
        "transport.frames_sent": frames,
        "transport.bytes_sent": sent,
        **{name.replace("_", ".", 1): n for name, n in counters.items()},
    }
    taken["loop"] = {"lag": lag.snapshot(), "stalls": 0}
    return taken


def test_rates_and_recent_lag_come_from_the_window():
    now = [100.0]
    sampler = StatusSampler(window=10, clock=lambda: now[0])
    first = sampler.read(snapshot(0, 0, [300] * 50))
    assert first["traffic"]["patches_per_s"] is None and first["window_s"] is None
    assert first["loop"]["p99_ms"] == 300 and first["levels"]["loop"] == "bad"
    now[0] = 104.0
    second = sampler.read(snapshot(200, 40_000, [300] * 50 + [1] * 100))
    assert second["window_s"] == 4
    assert second["traffic"]["patches_per_s"] == 50
    assert second["traffic"]["bytes_per_s"] == 10_000
    # Only the lag recorded since: the old 300 ms samples are out of it.
    assert second["loop"]["samples"] == 100 and second["loop"]["p99_ms"] == 1
    assert second["levels"]["loop"] == "ok"
    now[0] = 120.0  # the first two samples are older than the window now
    third = sampler.read(snapshot(300, 50_000, [300] * 50 + [1] * 100, evict_lru=3))
    assert third["window_s"] == 16  # from the newest sample beyond the window
    assert third["traffic"]["patches_per_s"] == 100 / 16
    assert third["evictions"]["by_reason"]["lru"] == 3
    assert third["evictions"]["pressure_per_min"] == 60 * 3 / 16
    assert third["levels"]["evictions"] == "warn"
    now[0] = 131.0
    fourth = sampler.read(snapshot(350, 50_000, [300] * 50 + [1] * 100, evict_lru=3))
    assert fourth["window_s"] == 11 and fourth["traffic"]["patches_per_s"] == 50 / 11


def test_readers_within_a_second_share_one_snapshot(monkeypatch):
    """However many pages poll, stats() (O(sessions)) runs once a second."""
    taken = []
    monkeypatch.setattr(
        "flet_resilient.status.stats", lambda: taken.append(1) or snapshot(0, 0, [1])
    )
    now = [0.0]
    sampler = StatusSampler(clock=lambda: now[0])
    first = sampler.read()
    for at in (0.1, 0.5, 0.99):
        now[0] = at
        assert sampler.read() is first
    now[0] = 1.0
    assert sampler.read() is not first
    assert len(taken) == 2


def test_a_slow_stats_is_reused_longer_so_the_page_takes_little_of_the_loop(
    monkeypatch,
):
    """On a worker with thousands of sessions one stats() takes tens of ms; an
    open status page polling every second must not spend that each second."""
    now = [0.0]

    def slow_stats():
        now[0] += 0.06  # 60 ms of the loop
        return snapshot(0, 0, [1])

    monkeypatch.setattr("flet_resilient.status.stats", slow_stats)
    sampler = StatusSampler(clock=lambda: now[0])
    first = sampler.read()
    now[0] = 2.5
    assert sampler.read() is first  # 60 ms at most 2 % of the loop: 3 s
    now[0] = 3.1
    assert sampler.read() is not first


def test_a_counter_reset_gives_no_negative_rate():
    now = [0.0]
    sampler = StatusSampler(clock=lambda: now[0])
    sampler.read(snapshot(500, 9_000, [5] * 10))
    now[0] = 2.0
    after_reset = sampler.read(snapshot(0, 0, [1]))
    assert after_reset["traffic"]["patches_per_s"] == 0
    assert after_reset["loop"]["samples"] == 1  # all of the cleared histogram's


def test_a_store_that_is_down_is_bad():
    taken = snapshot(0, 0, [1])
    taken["store"] = {
        "healthy": False,
        "kept_writes": 4,
        "latency": Histogram().snapshot(),
        "stores": [
            {
                "store": "RedisStore",
                "healthy": False,
                "down_for_s": 12.5,
                "kept_writes": 4,
            }
        ],
    }
    taken["counters"]["store.outages"] = 1
    status = StatusSampler().read(taken)
    assert status["levels"]["store"] == "bad"
    assert status["store"]["outages"] == 1
    assert status["store"]["stores"] == taken["store"]["stores"]


async def test_stats_reads_each_sessions_fields_in_one_pass(monkeypatch):
    """stats() runs at every scrape and status poll: each session's fields are
    read in one pass (no lookup of every session again), and its tag is hashed
    once."""
    import flet as ft

    from flet_resilient import coalesce_updates, stats
    from flet_resilient._flet import accessors
    from flet_resilient.session_data import SessionField
    from flet_resilient.testing import FletClient, FletServer

    main = coalesce_updates()(lambda page: page.add(ft.Text("hi", key="t")))
    async with FletServer(main) as server:
        users = [await FletClient(server.ws_url).connect() for _ in range(3)]
        stats()  # the tags are made

        def lookup(self, session):
            raise AssertionError("a session looked up again")

        def rehash(*args, **kwargs):
            raise AssertionError("a session's tag hashed again")

        monkeypatch.setattr(SessionField, "__getitem__", lookup)
        monkeypatch.setattr(accessors.hashlib, "blake2s", rehash)
        assert len(stats()["coalesce"]["per_session"]) >= 3  # (earlier tests: more)
        monkeypatch.undo()
        for user in users:
            await user.close()
