"""The page build and diff speed-ups send the very same frames as stock Flet:
a varied page and a components app, driven over the real protocol once with
them (FLET_RESILIENT_SPEEDUPS=1) and once without (=0), byte for byte."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flet.controls.object_patch import DiffBuilder

from flet_resilient import _flet
from flet_resilient._flet import pagebuild

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
