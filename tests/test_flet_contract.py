"""What the seam needs from the installed Flet: every wrapped method exists and
its wrapper accepts every call Flet's own signature allows."""

import inspect

import pytest
from flet.messaging.session import Session

from flet_resilient import _flet
from flet_resilient._flet import pagebuild, seam, version


def _original(owner: type, name: str):
    _flet.install()
    wrapper = vars(owner)[name]
    if isinstance(wrapper, property):
        return wrapper.fget, wrapper.fget.__wrapped__
    return wrapper, wrapper.__wrapped__


@pytest.mark.parametrize(
    ("owner", "name"),
    _flet.PATCHED,
    ids=[f"{o.__qualname__}.{n}" for o, n in _flet.PATCHED],
)
def test_each_wrapped_flet_method_exists_and_keeps_its_calls(owner, name):
    wrapper, original = _original(owner, name)
    flet = inspect.signature(original)
    ours = inspect.signature(wrapper, follow_wrapped=False)
    positional = [
        p for p in flet.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]  # fmt: skip
    keywords = {
        p.name: None for p in flet.parameters.values() if p.kind is p.KEYWORD_ONLY
    }
    ours.bind(*[None] * len(positional), **keywords)  # TypeError if not accepted


def test_a_missing_flet_method_is_a_clear_error_naming_it(monkeypatch):
    monkeypatch.setattr(seam, "PATCHED", (*_flet.PATCHED, (Session, "_gone_in_flet_9")))
    missing = r"Session\._gone_in_flet_9"
    with pytest.raises(_flet.UnsupportedFletVersion, match=missing):
        seam.check_flet()


def test_a_missing_private_attribute_is_a_clear_error_naming_it():
    with pytest.raises(_flet.UnsupportedFletVersion, match=r"object\._FletApp__gone"):
        version.private(object(), "_FletApp__gone")


@pytest.mark.parametrize(
    ("owner", "name"),
    pagebuild.SPED_UP + pagebuild.SPEEDUP_READS,
    ids=[
        f"{getattr(o, '__qualname__', o.__name__)}.{n}"
        for o, n in pagebuild.SPED_UP + pagebuild.SPEEDUP_READS
    ],
)
def test_each_flet_name_the_speedups_replace_or_read_exists(owner, name):
    assert name in vars(owner)


def test_the_fast_configure_step_keeps_flets_calls():
    _flet.install()
    test_each_wrapped_flet_method_exists_and_keeps_its_calls(
        pagebuild.DiffBuilder, "_configure_dataclass"
    )


def test_a_missing_flet_name_the_speedups_need_is_a_clear_error(monkeypatch):
    gone = (pagebuild.object_patch, "_gone_in_flet_9")
    monkeypatch.setattr(pagebuild, "SPEEDUP_READS", (*pagebuild.SPEEDUP_READS, gone))
    missing = r"flet\.controls\.object_patch\._gone_in_flet_9"
    with pytest.raises(_flet.UnsupportedFletVersion, match=missing):
        seam.check_flet()
