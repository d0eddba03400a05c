"""The loop's overload factor: doubles under lag, halves back once calm."""

import asyncio

import pytest

from flet_resilient import overload
from flet_resilient.coalesce import Coalescer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(overload.time, "monotonic", fake)
    return fake


def feed(load: overload.LoadFactor, clock: Clock, lag_s: float, seconds: float) -> None:
    """Probes every 50 ms for `seconds`, each `lag_s` late."""
    for _ in range(round(seconds / 0.05)):
        clock.now += 0.05 + lag_s
        load.record(lag_s)


def test_lag_doubles_the_factor_up_to_its_cap(clock):
    load = overload.LoadFactor()
    feed(load, clock, 0.0, 1.0)
    assert load.factor == 1  # a loop on time is left alone
    feed(load, clock, 0.2, 0.6)  # a saturated loop: every probe 200 ms late
    assert load.factor >= 2
    feed(load, clock, 0.2, 20)
    assert load.factor == overload.MAX_FACTOR


def test_a_calm_loop_halves_it_back_to_one(clock):
    load = overload.LoadFactor()
    feed(load, clock, 0.2, 5)
    assert load.factor == overload.MAX_FACTOR
    feed(load, clock, 0.05, 10)  # busy but not overloaded: it holds
    assert load.factor == overload.MAX_FACTOR
    feed(load, clock, 0.0, overload.CALM_S * 5)
    assert load.factor == 1


async def test_an_overloaded_loop_stretches_the_coalescers_window(monkeypatch):
    loop = asyncio.get_running_loop()
    load = overload.load_factor(loop)
    coalescer = Coalescer.__new__(Coalescer)  # just its rate state
    coalescer.loop, coalescer.interval = loop, 0.05
    assert coalescer.window() == pytest.approx(0.05)
    monkeypatch.setattr(load, "factor", 4)
    assert coalescer.window() == pytest.approx(0.2)
