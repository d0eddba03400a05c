import logging

import pytest

from flet_resilient import configure_offload, metrics


@pytest.fixture(autouse=True, scope="session")
def _small_pool():
    """Two worker processes: enough to show isolation on a 2-core machine."""
    configure_offload(processes=2)
    yield
    configure_offload()


@pytest.fixture(autouse=True)
def _fresh_metrics():
    """Each test counts from zero: a `>= 1` cannot pass on an earlier test's count."""
    metrics.reset()


@pytest.fixture(params=[False, True], ids=["log-off", "log-on"])
def transport_lines(request, monkeypatch):
    """(debug, lines): what flet-web formats for its `flet_transport` debug
    lines, with that log off or on."""
    debug = request.param
    formatted: list[str] = []
    transport_log = logging.getLogger("flet_transport")
    monkeypatch.setattr(transport_log, "debug", lambda text, *a: formatted.append(text))
    level = logging.DEBUG if debug else logging.WARNING
    monkeypatch.setattr(transport_log, "level", level)
    monkeypatch.setattr(transport_log, "disabled", False)
    transport_log.manager._clear_cache()
    yield debug, formatted
    transport_log.manager._clear_cache()
