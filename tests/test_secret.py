"""The signing secret: one per machine by default, required for shared stores."""

import logging
import stat

import pytest

from flet_resilient import MemoryStore, RedisStore, evict_idle
from flet_resilient.identity import Identity
from flet_resilient.secret import SECRET_FILE, MissingSecret


@pytest.fixture
def no_secret(monkeypatch, tmp_path):
    monkeypatch.delenv("FLET_SECRET_KEY", raising=False)
    monkeypatch.setenv("FLET_RESILIENT_STATE_DIR", str(tmp_path))
    return tmp_path


def test_a_shared_store_without_a_secret_is_refused_at_startup(no_secret):
    with pytest.raises(MissingSecret, match="FLET_SECRET_KEY"):
        evict_idle(state=dict, store=RedisStore("redis://127.0.0.1:1/0"))
    evict_idle(state=dict, store=RedisStore("redis://127.0.0.1:1/0"), secret_key="s")


def test_without_a_secret_restarts_keep_the_users_keys(no_secret, caplog):
    caplog.set_level(logging.WARNING, logger="flet_resilient.secret")
    key = Identity().mint()
    assert Identity().verify(key) is not None  # a new process, a hot reload
    evict_idle(state=dict, store=MemoryStore())  # a local store: no error
    secret = no_secret / SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600  # owner only
    announced = [r for r in caplog.records if str(secret) in r.getMessage()]
    assert len(announced) == 1  # said once, not per app or per session


def test_an_explicit_secret_wins(no_secret, monkeypatch):
    key = Identity("one").mint()
    assert Identity("two").verify(key) is None
    monkeypatch.setenv("FLET_SECRET_KEY", "one")
    assert Identity().verify(key) is not None
    assert not (no_secret / SECRET_FILE).exists()
