"""The drain pace: bad values are clear errors (the waves themselves are
tested on real workers in test_deploy.py)."""

import pytest

from flet_resilient import drain
from flet_resilient._flet.accessors import _wave_size
from flet_resilient.paced_shutdown import DEFAULT_PACE, PACE_ENV, drain_pace


@pytest.mark.parametrize("raw", ["fast", "-1", "inf", "nan"])
def test_a_bad_pace_in_the_environment_is_a_clear_error(monkeypatch, raw):
    monkeypatch.setenv(PACE_ENV, raw)
    with pytest.raises(ValueError, match=PACE_ENV):
        drain_pace()


@pytest.mark.parametrize(("raw", "pace"), [("", DEFAULT_PACE), ("0", None), ("8", 8)])
def test_the_pace_from_the_environment(monkeypatch, raw, pace):
    monkeypatch.setenv(PACE_ENV, raw)
    assert drain_pace() == pace


async def test_drain_refuses_a_pace_that_is_not_a_rate():
    with pytest.raises(ValueError, match="pace"):
        await drain(pace=0)


@pytest.mark.parametrize(
    ("sockets", "per_second", "within", "wave"),
    [
        (200, None, None, 200),  # all at once
        (200, 50, None, 5),  # 50/s in waves every 0.1 s
        (200, 50, 2.0, 10),  # raised to end within 2 s
        (0, 50, 1.0, 1),
    ],
)
def test_waves_keep_the_pace_and_end_within_the_budget(
    sockets, per_second, within, wave
):
    assert _wave_size(sockets, per_second, within) == wave
