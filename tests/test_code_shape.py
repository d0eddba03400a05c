"""The shipped package stays easy to change: no function over ~60 lines.

A long function mixes jobs (issue 11: the adapter's 174-line `_install` held
every wrapper and three mitigations' decisions); this lists any that creep in.
Its docstring does not count: a public decorator documents each argument.
"""

from __future__ import annotations

import ast
from pathlib import Path

import flet_resilient

MAX_LINES = 60
PACKAGE = Path(flet_resilient.__file__).parent


def code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from `def` to the function's end, less its docstring's."""
    length = (node.end_lineno or node.lineno) - node.lineno + 1
    if ast.get_docstring(node, clean=False) is not None:
        first = node.body[0]
        length -= (first.end_lineno or first.lineno) - first.lineno + 1
    return length


def long_functions(root: Path) -> list[str]:
    """`path:line name (n lines)` for every function longer than MAX_LINES."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = code_lines(node)
                if length > MAX_LINES:
                    where = path.relative_to(root.parent)
                    found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_over_sixty_lines() -> None:
    assert long_functions(PACKAGE) == []
