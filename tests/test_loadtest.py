"""The load-test CLI end to end: real server processes, real protocol, real report.

Short runs against the examples; the assertions are about what was measured
(counts, both modes, cleanup), not about timings.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from flet_resilient import cluster, loadtest

ROOT = Path(__file__).resolve().parent.parent
CPU_HEAVY = f"{ROOT / 'examples' / 'cpu_heavy.py'}:main"
DASHBOARD = str(ROOT / "examples" / "live_dashboard.py")


def server_children() -> list[psutil.Process]:
    """Load-test server processes started by this test process, still alive."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "--serve" in child.cmdline() and child.status() != "zombie":
                found.append(child)
        except psutil.Error:
            continue
    return found


def results(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    return {r["mode"]: r for r in data["results"]}


def test_compare_clicks_writes_both_modes(tmp_path: Path) -> None:
    """--compare: plain and resilient each measured, heavy users apart."""
    code = loadtest.main(
        [
            CPU_HEAVY,
            *("--users", "6", "--duration", "3", "--scenario", "clicks"),
            *("--heavy-key", "crunch", "--heavy-share", "0.2", "--compare"),
            *("--out", str(tmp_path)),
        ]
    )
    assert code == 0
    report = (tmp_path / "report.md").read_text()
    assert "| metric | plain | resilient | plain ÷ resilient |" in report
    assert "bystander click→patch p99 ms" in report
    assert "heavy click→patch p99 ms" in report
    by_mode = results(tmp_path)
    assert set(by_mode) == {"plain", "resilient"}
    for mode in by_mode.values():
        assert mode["connected"] == 6
        assert mode["heavy_users"] == 1
        assert len(mode["bystander"]) > 0
        assert len(mode["heavy"]) > 0
        assert mode["frames"] > 0 and mode["bytes"] > 0
        assert mode["rss_peak"] > 0 and mode["server_cpu_s"] > 0
        assert not math.isnan(mode["lag_p99_ms"])  # the stats route answered
        assert len(mode["ticks"]) >= 3
    # Plain Flet ran the CPU job inline; the resilient server offloaded it.
    assert "offload.completed" not in by_mode["plain"]["counters"]
    assert by_mode["resilient"]["counters"].get("offload.calls", 0) > 0
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "loadtest.png").stat().st_size > 10_000
        assert "![latency and memory over time](loadtest.png)" in report
    assert server_children() == []


def test_dashboard_counts_frames_per_user(tmp_path: Path) -> None:
    """Dashboard users only receive: frames keep flowing to every user."""
    code = loadtest.main(
        [
            DASHBOARD,
            *("--users", "3", "--duration", "2", "--scenario", "dashboard"),
            *("--out", str(tmp_path)),
        ]
    )
    assert code == 0
    mode = results(tmp_path)["resilient"]
    assert mode["frames"] > 3 * 2  # many per user and second
    assert mode["flowing"] == 3
    assert "users receiving in the last 2 s" in (tmp_path / "report.md").read_text()


def test_flaky_reconnects_with_the_session_id(tmp_path: Path) -> None:
    """Flaky users reset their sockets and come back to their own session."""
    code = loadtest.main(
        [
            CPU_HEAVY,
            *("--users", "3", "--duration", "3", "--scenario", "flaky"),
            *("--drop-every", "0.8", "--click-key", "plus", "--mode", "plain"),
            *("--out", str(tmp_path)),
        ]
    )
    assert code == 0
    mode = results(tmp_path)["plain"]
    assert len(mode["reconnects"]) >= 3
    assert mode["reconnect_failures"] == 0
    assert all(r["ms"] > 0 for r in mode["reconnects"])
    assert len(mode["bystander"]) > 0
    assert "sessions lost" in (tmp_path / "report.md").read_text()


def a_plan(out: Path, **changes: Any) -> loadtest.Plan:
    """A one-user clicks plan (`changes` override), for tests that run nothing."""
    fields: dict[str, Any] = {
        "target": "app:main",
        "scenario": "clicks",
        "users": 1,
        "duration": 1.0,
        "click_key": "plus",
        "heavy_key": None,
        "heavy_share": 0.0,
        "think": 1.0,
        "drop_every": 4.0,
        "click_timeout": 1.0,
        "batch": 1,
        "seed": 1,
        "out": out,
    }
    return loadtest.Plan(**{**fields, **changes})


def test_without_matplotlib_the_report_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    plan = a_plan(tmp_path)
    result = loadtest.ModeResult("resilient", 1, bystander=[loadtest.Sample(0, 5)])
    assert not loadtest.plot(plan, [result], tmp_path / "loadtest.png")
    assert not (tmp_path / "loadtest.png").exists()
    assert "| click→patch p50 ms | 5.0 |" in loadtest.table(plan, [result])


def test_load_main_accepts_paths_and_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_main adds the root
    main = loadtest.load_main("examples/cpu_heavy.py:main")
    cpu_heavy = sys.modules["examples.cpu_heavy"]
    assert main is cpu_heavy.main
    assert loadtest.load_main("examples.cpu_heavy:main") is cpu_heavy.main
    assert loadtest.load_main("examples/cpu_heavy.py") is cpu_heavy.main
    with pytest.raises(SystemExit, match="no callable"):
        loadtest.load_main("examples.cpu_heavy:nope")


def test_ctrl_c_stops_the_server(tmp_path: Path) -> None:
    """SIGINT mid-run: the CLI exits 130 and its server process is gone."""
    process = subprocess.Popen(
        [
            sys.executable,
            *("-m", "flet_resilient.loadtest", CPU_HEAVY),
            *("--users", "2", "--duration", "60", "--out", str(tmp_path)),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:  # wait for the first measured second
            if " users 2/2 " in line:
                break
        servers = [
            c
            for c in psutil.Process(process.pid).children()
            if "--serve" in c.cmdline()
        ]
        assert len(servers) == 1
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
        deadline = time.monotonic() + 10
        while servers[0].is_running() and servers[0].status() != "zombie":
            assert time.monotonic() < deadline, "the server process survived Ctrl-C"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- capacity mode (--ramp) ------------------------------------------------------

SLOW_PAST = str(ROOT / "tests" / "apps" / "slow_past_app.py")


def ramp_args(tmp_path: Path, ramp: str, *extra: str) -> list[str]:
    """A short ramp of the slow-past app: 2 s steps, a generous 1 s SLO."""
    return [
        SLOW_PAST,
        *("--ramp", ramp, "--duration", "2", "--think", "0.3"),
        *("--slo-ms", "1000", "--click-timeout", "5", "--out", str(tmp_path)),
        *extra,
    ]


def ramps(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    return {r["label"]: r for r in data["results"]}


def test_ramp_finds_the_step_where_clicks_break_the_slo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ramp --compare: both modes stop at the first step past the app's wall
    (clicks take 2 s once more than 4 sessions exist) and report 4 users."""
    monkeypatch.setenv("SLOW_PAST", "4")
    assert loadtest.main(ramp_args(tmp_path, "2:8:2", "--compare")) == 0
    by_label = ramps(tmp_path)
    assert set(by_label) == {"plain", "resilient"}
    for ramp in by_label.values():
        assert ramp["capacity"] == 4
        assert [s["users"] for s in ramp["steps"]] == [2, 4, 6]  # stopped at 6
        assert [bool(s["misses"]) for s in ramp["steps"]] == [False, False, True]
        assert "click p99" in ramp["steps"][-1]["misses"][0]
        for step in ramp["steps"]:
            assert step["result"]["connected"] == step["users"]
            assert step["result"]["bystander"]  # clicks measured in every step
            assert step["result"]["tree_rss_peak"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "| plain | 4 | - |" in report
    assert "| resilient | 4 | 1.0x |" in report
    assert "SLO: click→patch p99 ≤ 1000 ms, no session lost" in report
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "capacity.png").stat().st_size > 10_000
    assert server_children() == []


@pytest.mark.skipif(
    cluster.missing_program() is not None, reason=str(cluster.missing_program())
)
def test_ramp_capacity_grows_with_workers_behind_haproxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--workers 1,2: each worker slows past 2 of its own sessions, so one
    worker carries 2 users and two behind HAProxy carry 4."""
    monkeypatch.setenv("SLOW_PAST", "2")
    assert loadtest.main(ramp_args(tmp_path, "2:4:2", "--workers", "1,2")) == 0
    by_label = ramps(tmp_path)
    assert by_label["resilient"]["capacity"] == 2
    two = by_label["resilient, 2 workers"]
    assert two["capacity"] == 4
    assert all(not s["misses"] for s in two["steps"])
    assert (
        "| resilient, 2 workers | 4 (or more) | - |"
        in (tmp_path / "report.md").read_text()
    )


def result_with(
    users: int, connected: int, clicks_ms: list[float], rss: int = 0
) -> loadtest.ModeResult:
    return loadtest.ModeResult(
        "resilient",
        users,
        connected=connected,
        bystander=[loadtest.Sample(0, ms) for ms in clicks_ms],
        tree_rss_peak=rss,
    )


def test_slo_names_every_miss_and_capacity_stops_at_the_first() -> None:
    slo = loadtest.SLO(p99_ms=200, rss_budget=100 * 2**20)
    assert slo.misses(result_with(10, 10, [5.0] * 99 + [150.0])) == []
    missed = slo.misses(result_with(10, 9, [5.0, 900.0], rss=200 * 2**20))
    assert [m.split()[0] for m in missed] == ["click", "1", "RSS"]
    assert slo.misses(result_with(10, 10, [])) == ["no click measured"]
    steps = [
        loadtest.Step(n, result_with(n, n, [1.0]), misses)
        for n, misses in ((10, []), (20, ["x"]), (30, []))
    ]
    ramp = loadtest.Ramp("plain", 1, steps)
    assert ramp.capacity == 10  # a lucky step after a miss does not count
    assert not ramp.reached_top
    assert loadtest.Ramp("plain", 1, steps[:1]).reached_top
    assert loadtest.Ramp("plain", 1, steps[1:]).capacity == 0


def test_parse_ramp_counts_and_rejects() -> None:
    assert loadtest.parse_ramp("100:500:200") == [100, 300, 500]
    assert loadtest.parse_ramp("5:5:1") == [5]
    for bad in ("1:2", "0:10:5", "10:5:1", "a:b:c"):
        with pytest.raises(ValueError, match="--ramp"):
            loadtest.parse_ramp(bad)


def test_roles_keep_their_shares_as_a_ramp_adds_users(tmp_path: Path) -> None:
    """Each step's new users get roles so that the heavy users, bystanders and
    viewers among everyone connected match the plan's shares."""
    plan = a_plan(
        tmp_path, users=100, heavy_key="report", heavy_share=0.05, active_share=0.2
    )
    roles: list[str] = []
    for before, upto in ((0, 2), (2, 10), (10, 30), (30, 100)):
        roles += [plan.role(i, before, upto) for i in range(before, upto)]
        assert roles.count("heavy") == plan.heavy_count(upto)
        assert roles.count("bystander") == plan.bystander_count(upto)
    assert (roles.count("heavy"), roles.count("bystander")) == (5, 20)
    assert roles[:2] == ["heavy", "bystander"]  # a heavy user from the first step


def test_a_child_s_announced_port_is_read_from_its_url_line() -> None:
    from flet_resilient.measure import announced_port

    assert announced_port("ws://127.0.0.1:4321/ws\n") == 4321  # serve_child
    assert announced_port("NiceGUI ops console: http://127.0.0.1:8080") == 8080
    with pytest.raises(ValueError):
        announced_port("Traceback (most recent call last):")


def test_the_generators_users_leave_its_collectors_view():
    """After users connect, a full pass of the load generator's collector no
    longer walks their pages (its pauses would count as server latency)."""
    import gc

    from flet_resilient.loadtest.runner import settle_collector

    pages = [{"controls": [[i]]} for i in range(1000)]
    try:
        settle_collector()
        watched = {id(page) for page in pages}
        assert not any(id(obj) in watched for obj in gc.get_objects())
    finally:
        gc.unfreeze()


def test_a_window_starts_at_the_steady_click_rate() -> None:
    """After the shortest wait, every clicker's first wait is what is left of
    a wait already under way, so clicks do not bunch up in the window's first
    seconds (every user's first click inside 0.5-1.5 s made the rate there
    1.5x the steady one)."""
    import random

    from flet_resilient.loadtest.scenarios import THINK, first_wait

    rng = random.Random(1)
    users, bins = 20_000, [0] * 12  # quarter seconds of a 3 s start
    for _ in range(users):
        at = first_wait(rng)
        while at < 3.0:
            bins[int(at * 4)] += 1
            at += rng.uniform(*THINK)
    steady = users / 4  # clicks a quarter second: one a second each
    assert bins[:2] == [0, 0]  # the start settles first
    assert all(abs(n - steady) < 0.05 * steady for n in bins[2:]), bins


def test_each_step_shows_where_the_machine_s_cores_went() -> None:
    """A step's row splits the cores between the servers, the load generator
    and everything else (a balancer, Redis): what bounds several workers on
    the machine that also generates the load."""
    from flet_resilient.loadtest.ramp_report import ramp_table

    result = result_with(100, 100, [1.0])
    result.seconds, result.server_cpu_s, result.workers_cpu_s = 10.0, 12.0, 3.0
    result.client_cores, result.other_cores = 0.31, 0.07
    header, _, row = ramp_table(
        loadtest.Ramp("resilient", 2, [loadtest.Step(100, result)])
    ).splitlines()[:3]
    names, values = header.strip("| ").split(" | "), row.strip("| ").split(" | ")
    cells = dict(zip(names, values, strict=True))
    assert cells["server CPU cores"] == "1.50"
    assert cells["load generator cores"] == "0.31"
    assert cells["other cores"] == "0.07"


@pytest.mark.skipif(
    cluster.missing_program() is not None, reason=str(cluster.missing_program())
)
async def test_several_workers_run_on_the_loop_one_worker_runs_on(
    tmp_path: Path,
) -> None:
    """A load test's workers run on asyncio's loop like its one-process server
    (uvicorn's CLI picks uvloop when installed: one worker against two then
    compared two event loops, and the seam could not bound socket reads)."""
    from flet_resilient.loadtest.server import WorkersBehindProxy
    from flet_resilient.testing import FletClient

    servers = await WorkersBehindProxy(SLOW_PAST, "resilient", 2, tmp_path).start()
    try:
        clients = [await FletClient(servers.ws_url).connect() for _ in range(2)]
        snapshots = servers.snapshots()
        for client in clients:
            await client.close()
    finally:
        servers.stop()
    assert all(s is not None for s in snapshots)
    assert sum(s["sessions"]["live"] for s in snapshots if s) == 2
    assert [
        s["counters"].get("transport.reads_unbounded", 0) for s in snapshots if s
    ] == [0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "worker-0.log",
        "worker-1.log",
    ]
