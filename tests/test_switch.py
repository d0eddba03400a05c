"""FLET_RESILIENT_DISABLE=1 leaves apps as plain Flet runs them."""

import asyncio
import threading

import pytest

from flet_resilient import buffer_reconnects, coalesce_updates, offload, persist
from flet_resilient.durable import DurableStore
from flet_resilient.identity import Identity
from flet_resilient.stores import MemoryStore


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


class StandInSession:
    """Enough of a Session for persist's bookkeeping (weakly referenced)."""


@pytest.mark.parametrize("switched_off", [True, False])
async def test_disabled_never_writes_a_state_made_during_a_store_outage(
    monkeypatch, switched_off
):
    """Plain mode reads app state but saves none: not even the provisional
    state of a session that began while the store failed, once it answers."""
    if switched_off:
        monkeypatch.setenv("FLET_RESILIENT_DISABLE", "1")
    else:
        monkeypatch.delenv("FLET_RESILIENT_DISABLE", raising=False)
    memory = MemoryStore()
    store = DurableStore(memory)
    policy = persist.SavePolicy(store, Identity("test-secret"), 60, 1.0)
    session = StandInSession()
    state = persist.Bound("token", {"count": 2}, b"fresh", 1, True, policy)
    persist.bind(session, state)  # type: ignore[arg-type]
    store._failed(memory.read, TimeoutError())  # the outage it began in ...
    store._answered()  # ... is over
    await asyncio.sleep(0.1)  # the saves that recovery spawns, if any
    written = await memory.read(state.key)
    assert (written is None) is switched_off
