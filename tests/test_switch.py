"""FLET_RESILIENT_DISABLE=1 leaves apps as plain Flet runs them."""

import asyncio
import os
import threading
from collections.abc import Callable, Iterator

import pytest

from flet_resilient import buffer_reconnects, coalesce_updates, offload, persist
from flet_resilient.durable import DurableStore
from flet_resilient.identity import Identity
from flet_resilient.stores import MemoryStore
from flet_resilient.switch import disabled

SWITCH = "FLET_RESILIENT_DISABLE"


@pytest.fixture
def switch() -> Iterator[Callable[[str | None], None]]:
    """`switch(value)`: the process as if it had started with SWITCH=value
    (None: unset). The switch is read once per process, so its cache is
    cleared; after the test, the environment and the cache are as before."""
    saved = os.environ.get(SWITCH)

    def set_to(value: str | None) -> None:
        if value is None:
            os.environ.pop(SWITCH, None)
        else:
            os.environ[SWITCH] = value
        disabled.cache_clear()

    yield set_to
    set_to(saved)


def main(page):
    return page


def where_am_i() -> str:
    return threading.current_thread().name


async def test_disabled_decorators_leave_main_and_run_offload_inline(switch):
    switch("1")
    assert coalesce_updates()(main) is main
    assert buffer_reconnects()(main) is main
    inline = offload(where_am_i, kind="thread")
    assert await inline() == threading.current_thread().name


async def test_enabled_offload_runs_elsewhere(switch):
    switch(None)
    assert coalesce_updates()(main) is not main
    assert await offload(where_am_i, kind="thread")() != threading.current_thread().name


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_only_a_true_value_disables(switch, value):
    switch(value)
    assert not disabled()


def test_the_switch_is_read_once_per_process(switch):
    switch("1")
    assert disabled()
    os.environ[SWITCH] = "0"  # too late: every part already saw "off"
    assert disabled()


class StandInSession:
    """Enough of a Session for persist's bookkeeping (weakly referenced)."""


@pytest.mark.parametrize("switched_off", [True, False])
async def test_disabled_never_writes_a_state_made_during_a_store_outage(
    switch, switched_off
):
    """Plain mode reads app state but saves none: not even the provisional
    state of a session that began while the store failed, once it answers."""
    switch("1" if switched_off else None)
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
