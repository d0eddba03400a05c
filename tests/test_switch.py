"""FLET_RESILIENT_DISABLE=1 leaves apps as plain Flet runs them."""

import threading

import pytest

from flet_resilient import buffer_reconnects, coalesce_updates, offload


def main(page):
    return page


def where_am_i() -> str:
    return threading.current_thread().name


async def test_disabled_decorators_leave_main_and_run_offload_inline(monkeypatch):
    monkeypatch.setenv("FLET_RESILIENT_DISABLE", "1")
    assert coalesce_updates()(main) is main
    assert buffer_reconnects()(main) is main
    inline = offload(where_am_i, kind="thread")
    assert await inline() == threading.current_thread().name


async def test_enabled_offload_runs_elsewhere(monkeypatch):
    monkeypatch.delenv("FLET_RESILIENT_DISABLE", raising=False)
    assert coalesce_updates()(main) is not main
    assert await offload(where_am_i, kind="thread")() != threading.current_thread().name


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_only_a_true_value_disables(monkeypatch, value):
    from flet_resilient.switch import disabled

    monkeypatch.setenv("FLET_RESILIENT_DISABLE", value)
    assert not disabled()
