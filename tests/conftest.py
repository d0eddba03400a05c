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
