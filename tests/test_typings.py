"""typings/ (the flet-web stubs mypy checks the seam against) names only what
the installed flet-web has: the written list of what we depend on is true."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

TYPINGS = Path(__file__).parent.parent / "typings"


def declared() -> list[tuple[str, str, str]]:
    """(module, owner or "", name) for each name the stubs declare."""
    found = []
    for stub in sorted(TYPINGS.rglob("*.pyi")):
        parts = stub.relative_to(TYPINGS).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.parse(stub.read_text()).body:
            if isinstance(node, ast.ClassDef):
                found += [(module, node.name, name) for name in _names(node.body)]
            found += [(module, "", name) for name in _names([node])]
    return found


def _names(body: list[ast.stmt]) -> list[str]:
    """The names a stub body defines or annotates (not its imports)."""
    names = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


def _exists(owner: object, name: str) -> bool:
    """A class attribute, or a private one its methods assign (`self.__x =`)."""
    if hasattr(owner, name):
        return True
    mangled = f"_{getattr(owner, '__name__', '')}__"
    if isinstance(owner, type) and name.startswith(mangled):
        assigned = re.compile(rf"self\.__{name.removeprefix(mangled)}\b\s*[:=]")
        return any(
            assigned.search(inspect.getsource(cls))
            for cls in owner.__mro__
            if cls.__module__.startswith("flet")
        )
    return False


@pytest.mark.parametrize(
    ("module", "owner", "name"), declared(), ids=lambda part: part or "-"
)
def test_every_stubbed_flet_web_name_exists(module, owner, name):
    target = importlib.import_module(module)
    if owner:
        target = getattr(target, owner)
    assert _exists(target, name), f"{module}.{owner}.{name} is not in flet-web"
