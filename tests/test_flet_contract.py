"""What the seam needs from the installed Flet: every wrapped method exists and
its wrapper accepts every call Flet's own signature allows."""

import inspect

import pytest

from flet_resilient import adapter


def _original(owner: type, name: str):
    adapter.install()
    wrapper = vars(owner)[name]
    if isinstance(wrapper, property):
        return wrapper.fget, wrapper.fget.__wrapped__
    return wrapper, wrapper.__wrapped__


@pytest.mark.parametrize(
    ("owner", "name"),
    adapter.PATCHED,
    ids=[f"{o.__qualname__}.{n}" for o, n in adapter.PATCHED],
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
    monkeypatch.setattr(
        adapter, "PATCHED", (*adapter.PATCHED, (adapter.Session, "_gone_in_flet_9"))
    )
    missing = r"Session\._gone_in_flet_9"
    with pytest.raises(adapter.UnsupportedFletVersion, match=missing):
        adapter._check_flet()


def test_a_missing_private_attribute_is_a_clear_error_naming_it():
    with pytest.raises(adapter.UnsupportedFletVersion, match=r"object\._FletApp__gone"):
        adapter._private(object(), "_FletApp__gone")


@pytest.mark.parametrize(
    ("owner", "name"),
    adapter.SPED_UP + adapter.SPEEDUP_READS,
    ids=[
        f"{getattr(o, '__qualname__', o.__name__)}.{n}"
        for o, n in adapter.SPED_UP + adapter.SPEEDUP_READS
    ],
)
def test_each_flet_name_the_speedups_replace_or_read_exists(owner, name):
    assert name in vars(owner)


def test_the_fast_configure_step_keeps_flets_calls():
    adapter.install()
    test_each_wrapped_flet_method_exists_and_keeps_its_calls(
        adapter.DiffBuilder, "_configure_dataclass"
    )


def test_a_missing_flet_name_the_speedups_need_is_a_clear_error(monkeypatch):
    gone = (adapter.object_patch, "_gone_in_flet_9")
    monkeypatch.setattr(adapter, "SPEEDUP_READS", (*adapter.SPEEDUP_READS, gone))
    missing = r"flet\.controls\.object_patch\._gone_in_flet_9"
    with pytest.raises(adapter.UnsupportedFletVersion, match=missing):
        adapter._check_flet()
