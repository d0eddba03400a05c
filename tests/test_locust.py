"""`flet_resilient.locust.FletUser` in a real headless Locust run against a real app.

Locust runs in a child process (its gevent monkey-patching stays out of
pytest); the app is served by `FletServer` in this one, so the test can count
the clicks the server handled.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import flet as ft
import pytest

from flet_resilient.testing import FletServer

# Never imported here: importing locust monkey-patches this process for gevent.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None,
    reason="the locust extra: pip install -e '.[locust]'",
)

ROOT = Path(__file__).resolve().parents[1]

# Each user clicks "+1", and after every second click drops its socket and
# comes back; its own mirror must show its own count throughout (so each user
# kept its session, and every click reached the server).
LOCUSTFILE = textwrap.dedent(
    """
    from locust import constant, task

    from flet_resilient.locust import FletUser


    class Counter(FletUser):
        wait_time = constant(0.05)
        ready_key = "count"  # connecting waits for the built page

        def on_start(self):
            super().on_start()
            self.clicked = 0
            assert self.mirror.value("count") == "0", "the page was not built"
            assert not self.click("boom"), "a handler that raised counted as done"

        @property
        def next(self):
            return str(self.clicked + 1)

        @task
        def use(self):
            if self.click("inc", until=lambda: self.mirror.value("count") == self.next):
                self.clicked += 1
            if self.clicked % 2 == 0:
                self.reconnect()
            assert self.mirror.value("count") == str(self.clicked), "count differs"
    """
)


def stats_rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Locust's `--csv` statistics: (type, name) -> the row."""
    with path.open(newline="") as file:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(file)}


def test_a_headless_locust_run_clicks_and_reconnects_through_flet_users(tmp_path):
    handled: list[int] = []  # clicks the server handled, all sessions

    def counter_app(page: ft.Page) -> None:
        count = ft.Text("0", key="count")

        def increment(e: ft.Event) -> None:
            handled.append(1)
            count.value = str(int(count.value) + 1)

        def explode(e: ft.Event) -> None:
            raise ValueError("boom in the handler")

        page.add(
            count,
            ft.Button("+1", key="inc", on_click=increment),
            ft.Button("boom", key="boom", on_click=explode),
        )

    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with FletServer(counter_app, no_cdn=True) as server:
        done = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
             "-u", "5", "-r", "5", "-t", "3s", "--host", server.url,
             "--csv", str(tmp_path / "run"), "--exit-code-on-error", "0"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": path},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    rows = stats_rows(tmp_path / "run_stats.csv")
    assert int(rows[("connect", "/")]["Request Count"]) == 5
    clicks = int(rows[("click", "inc")]["Request Count"])
    assert clicks >= 5, rows
    assert len(handled) >= clicks  # each reported click was handled by the server
    assert int(rows[("reconnect", "/")]["Request Count"]) >= 1, rows
    # Only the handler that raises fails, once per user, with its error.
    failed = {name: row["Failure Count"] for name, row in rows.items()}
    assert failed == {
        ("connect", "/"): "0", ("click", "inc"): "0", ("reconnect", "/"): "0",
        ("click", "boom"): "5", ("", "Aggregated"): "5",
    }, rows  # fmt: skip
    failures = (tmp_path / "run_failures.csv").read_text()
    assert "SessionCrashed('boom in the handler')" in failures, failures
    assert float(rows[("click", "inc")]["Average Content Size"]) > 0  # patch bytes
    exceptions = (tmp_path / "run_exceptions.csv").read_text().splitlines()
    assert exceptions[1:] == [], exceptions  # no task raised (counts all matched)
