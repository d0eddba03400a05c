"""The Grafana dashboard in docs/ queries only what the exporter serves.

Every metric name in the dashboard's PromQL must be in the scrape of a running
app that uses the mitigations, so a renamed metric fails here instead of
leaving an empty panel in production.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import flet as ft
import pytest
from operator_endpoints import get

from flet_resilient import (
    MemoryStore,
    buffer_reconnects,
    coalesce_updates,
    evict_idle,
    offload,
)
from flet_resilient.evict import EVICTION_REASONS
from flet_resilient.prometheus import FROM_ZERO, mount_metrics
from flet_resilient.testing import FletClient, FletServer

parser = pytest.importorskip("prometheus_client.parser")

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana" / "flet-resilient.json"
NAME = re.compile(r"\b(?:flet_resilient|process)_[a-zA-Z0-9_]+")
NAME_REGEX = re.compile(r'__name__=~"([^"]+)"')


def queries(node: object) -> list[str]:
    """Every PromQL string in the dashboard: panel targets and variables."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("expr", "definition")]
        return found + [q for v in node.values() for q in queries(v)]
    if isinstance(node, list):
        return [q for v in node for q in queries(v)]
    return []


@offload(kind="thread")
def doubled(n: int) -> int:
    return 2 * n


@evict_idle(store=MemoryStore())
@buffer_reconnects()
@coalesce_updates(max_hz=20)
async def full_app(page: ft.Page) -> None:
    shown = ft.Text("0", key="count")

    async def increment(e: ft.Event) -> None:
        shown.value = str(await doubled(int(shown.value) + 1) // 2)

    page.add(shown, ft.Button("+1", key="inc", on_click=increment))


async def exported_names() -> set[str]:
    """Sample names in a scrape of an app with every mitigation in use."""
    async with FletServer(full_app) as server:
        mount_metrics(server.app, token="t")
        async with FletClient(server.ws_url) as user:
            await user.click("inc")  # an offloaded call, a patch
            await user.wait_for(lambda: user.value("count") == "1")
            status, _, text = await asyncio.to_thread(
                get, f"{server.url}/metrics", "Bearer t"
            )
    assert status == 200
    families = parser.text_string_to_metric_families(text)
    return {sample.name for family in families for sample in family.samples}


async def test_every_metric_the_dashboard_queries_is_exported():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = queries(dashboard)
    patterns = {p for expr in exprs for p in NAME_REGEX.findall(expr)}
    plain = [NAME_REGEX.sub("", expr) for expr in exprs]
    used = {name for expr in plain for name in NAME.findall(expr)}
    exported = await exported_names()
    assert len(used) > 20 and patterns  # the parsing found the queries
    assert sorted(used - exported) == []
    for pattern in patterns:
        assert any(re.fullmatch(pattern, name) for name in exported), pattern


def test_dashboard_is_importable():
    """Unique panel ids, one templated Prometheus data source, balanced PromQL."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert {v["name"] for v in dashboard["templating"]["list"]} == {
        "datasource",
        "job",
        "instance",
    }
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            for opening, closing in ("()", "{}", "[]"):
                assert expr.count(opening) == expr.count(closing), expr


def test_counters_exported_from_zero_are_counted_by_the_library():
    """A `FROM_ZERO` name nobody counts any more would keep a dead series at 0."""
    source = "\n".join(p.read_text() for p in (ROOT / "flet_resilient").rglob("*.py"))
    for name in FROM_ZERO:
        literal = f'count("{name}"' in source
        reason = name.removeprefix("evict.")
        evicted = reason in EVICTION_REASONS and 'count(f"evict.{reason}")' in source
        assert literal or evicted, name
