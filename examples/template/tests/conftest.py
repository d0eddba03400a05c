import pytest

from my_flet_app.app import main


@pytest.fixture
def flet_main():
    """The app under test, for flet-resilient's pytest plugin fixtures."""
    return main
