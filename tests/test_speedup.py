"""The page build and diff speed-ups send the very same frames as stock Flet:
a varied page and a components app, driven over the real protocol once with
them (FLET_RESILIENT_SPEEDUPS=1) and once without (=0), byte for byte."""

from __future__ import annotations

import gc
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flet.controls.base_control import BaseControl
from flet.controls.object_patch import DiffBuilder, ObjectPatch
from flet.controls.value_types import Prop

from flet_resilient import _flet
from flet_resilient._flet import fastinit, pagebuild

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "apps" / "varied_page.py"


def record_both(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the recording app without and with the speed-ups, side by side."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    runs = []
    for on in ("0", "1"):
        out = tmp_path / f"frames{on}.json"
        env = {
            **os.environ,
            "PYTHONPATH": path,
            "FLET_RESILIENT_SPEEDUPS": on,
            "PYTHONHASHSEED": "0",  # Flet encodes frozenset fields: same order
        }
        child = subprocess.Popen(
            [sys.executable, str(APP), str(out)], env=env, stderr=subprocess.PIPE
        )
        runs.append((child, out))
    reports = []
    for child, out in runs:
        _, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr.decode()[-3000:]
        reports.append(json.loads(out.read_text()))
    return reports[0], reports[1]


@pytest.mark.timeout(180)
def test_frames_are_byte_identical_with_and_without_the_speedups(tmp_path):
    stock, fast = record_both(tmp_path)
    assert stock["speedups"] is False and stock["plans"] == 0
    assert fast["speedups"] is True and fast["plans"] > 20  # the fast walk ran
    # The page: register, page build, then change/add/remove/reorder/add/type.
    # The components app: register, first render, four re-renders.
    assert (len(stock["page"]), len(stock["components"])) == (8, 6)
    for app in ("page", "components"):
        assert len(fast[app]) == len(stock[app]), app
        for n, (ours, flets) in enumerate(zip(fast[app], stock[app], strict=True)):
            assert ours == flets, f"{app}: frame {n} differs"


def test_speedups_switch_between_flets_own_steps_and_the_fast_ones():
    _flet.install()
    assert _flet.speedups_on()  # install() turns them on
    fast = DiffBuilder._configure_dataclass
    try:
        _flet.speedups(False)
        assert not _flet.speedups_on()
        assert not hasattr(DiffBuilder._configure_dataclass, "__wrapped__")
        assert type(pagebuild.object_patch.dataclasses).__name__ == "module"
        assert not hasattr(pagebuild.protocol._get_root_dataclass_field, "cache_info")
    finally:
        _flet.speedups(True)
    assert _flet.speedups_on()
    assert DiffBuilder._configure_dataclass.__wrapped__ is fast.__wrapped__
    assert hasattr(pagebuild.protocol._get_root_dataclass_field, "cache_info")


def _cyclic_garbage_of_a_diff() -> int:
    """How many objects one diff of several operations leaves to the collector."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        before, after = {"rows": [1, 2, 3]}, {"rows": [4, 5, 6, 7], "title": "x"}
        ObjectPatch.from_diff(before, after, control_cls=BaseControl)
        gc.collect()
        return len(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_a_diff_leaves_no_cycle_for_the_garbage_collector():
    """Flet's teardown resets only the root of its chain of operations, so
    each diff left the chain as a cycle: most of what the collector's passes
    examined under load. The speed-up unlinks it; refcounting frees it."""
    _flet.install()
    assert _cyclic_garbage_of_a_diff() == 0
    _flet.speedups(False)
    try:
        assert _cyclic_garbage_of_a_diff() > 0
    finally:
        _flet.speedups(True)


def _control_classes() -> list[type]:
    """Every control class Flet defines (its modules are imported lazily)."""
    import importlib
    import pkgutil

    import flet.controls
    from flet.controls.base_control import BaseControl

    for module in pkgutil.walk_packages(flet.controls.__path__, "flet.controls."):
        importlib.import_module(module.name)

    found, todo = [], [BaseControl]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def _event_fields(cls: type) -> list[str]:
    fields = getattr(cls, "__dataclass_fields__", {})
    return [name for name in fields if name.startswith("on_")]


def test_event_types_are_the_ones_flet_resolves():
    _flet.install()
    stock = pagebuild._stock["event_type"]
    cached = pagebuild._cached_event_type(stock)
    checked = 0
    for cls in _control_classes():
        control = cls.__new__(cls)
        for name in _event_fields(cls):
            try:
                expected = stock(control, name)
            except RuntimeError as error:  # unresolvable in Flet too
                with pytest.raises(RuntimeError, match=re.escape(str(error))):
                    cached(control, name)
                continue
            assert cached(control, name) == expected, (cls, name)
            checked += 1
    assert checked > 500


def test_an_event_type_is_resolved_once_per_class_and_field():
    _flet.install()
    from flet.controls import base_control

    resolver = base_control.get_event_field_type
    assert resolver.__wrapped__ is pagebuild._stock["event_type"]
    calls = []

    def stock(control: Any, name: str) -> str:
        calls.append((type(control), name))
        return f"{type(control).__name__}.{name}"

    cached = pagebuild._cached_event_type(stock)
    import flet as ft

    for control in (ft.Button("a"), ft.Button("b"), ft.TextField()):
        cached(control, "on_click")
    assert calls == [(ft.Button, "on_click"), (ft.TextField, "on_click")]


def _stock_init(cls: type) -> Any:
    return fastinit._stock_inits.get(cls, vars(cls).get("__init__"))


def _built(cls: type, init: Any, **kwargs: Any) -> Any:
    """A `cls` made by `init` (the instance, or the error it raised)."""
    control = cls.__new__(cls)
    try:
        init(control, **kwargs)
    except Exception as error:
        return type(error)
    return control


def _shape(value: Any) -> Any:
    """`value` as two equal constructions share it: scalars and lists as they
    are, a bound method by its function, anything else by its type."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return getattr(value, "__func__", type(value))


def _state(control: Any) -> Any:
    """What construction left on `control`, but its (ever new) id."""
    if isinstance(control, type):
        return control
    fields = {k: _shape(v) for k, v in vars(control).items() if k != "_i"}
    return fields, {k: _shape(v) for k, v in control._values.items()}, control._dirty


def test_every_fast_init_takes_the_same_arguments_and_builds_the_same_control():
    checked = 0
    for cls in _control_classes():
        stock = _stock_init(cls)
        if not fastinit._generated(cls, stock):
            continue
        fast = fastinit._fast_init(cls, stock)
        ours, flets = inspect.signature(fast), inspect.signature(stock)
        assert [(p.name, p.kind) for p in ours.parameters.values()] == [
            (p.name, p.kind) for p in flets.parameters.values()
        ], cls
        defaults = {
            p.name: p.default
            for p in flets.parameters.values()
            if p.default is not inspect.Parameter.empty
        }
        assert all(ours.parameters[n].default is d for n, d in defaults.items()), cls
        if len(defaults) < len(flets.parameters) - 1:  # needs arguments
            continue
        assert _state(_built(cls, fast)) == _state(_built(cls, stock)), cls
        passed = {n: d for n, d in defaults.items() if not n.startswith("_")}
        assert _state(_built(cls, fast, **passed)) == _state(
            _built(cls, stock, **passed)
        ), cls
        checked += 1
    assert checked > 150


def test_a_sped_up_control_sets_only_the_props_it_was_given(monkeypatch):
    import flet as ft

    fastinit.speed_up(ft.Text)
    sets = []
    stock_set = Prop.__set__

    def counting_set(prop: Prop, obj: Any, value: Any) -> None:
        sets.append(prop.name)
        stock_set(prop, obj, value)

    monkeypatch.setattr(Prop, "__set__", counting_set)
    text = ft.Text("hi", size=3, italic=False)  # italic: its default
    assert sorted(sets) == ["size", "value"]
    assert text._values == {"value": "hi", "size": 3}
