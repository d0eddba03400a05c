"""A faster `__init__` for Flet's control classes: the same signature and the
same object afterwards (tests/test_speedup.py), built by the seam per class.

A control's dataclass `__init__` assigns every field, and each assignment of a
`Prop` field calls `Prop.__set__`, which drops the value again when it is the
field's default: ~60 descriptor calls per `ft.Text()`, a third of what an app
spends building a 1000-control page. The `__init__` made here assigns a Prop
field only when the argument is not its default object, so the calls that
would store nothing are not made; every other line is what the dataclass
would run.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from flet.controls.base_control import BaseControl
from flet.controls.value_types import Prop

_stock_inits: dict[type, Callable[..., None]] = {}
"""Each class given a faster `__init__`, with the dataclass's own."""


def speed_up(cls: type) -> None:
    """Give control class `cls` the faster `__init__`, if it has a dataclass one
    of its own that assigns with plain attribute stores."""
    stock = vars(cls).get("__init__")
    if cls in _stock_inits or not _generated(cls, stock):
        return
    assert stock is not None
    cls.__init__ = _fast_init(cls, stock)  # type: ignore[misc]
    _stock_inits[cls] = stock


def restore() -> None:
    """Give every class back its dataclass `__init__`."""
    while _stock_inits:
        cls, stock = _stock_inits.popitem()
        cls.__init__ = stock  # type: ignore[misc]


def _generated(cls: type, init: Any) -> bool:
    """Whether `init` is the `__init__` `@dataclass` wrote for control `cls`."""
    code = getattr(init, "__code__", None)
    return (
        issubclass(cls, BaseControl)
        and "__dataclass_fields__" in vars(cls)
        and not cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        and cls.__setattr__ is object.__setattr__
        and code is not None
        and (code.co_filename, code.co_name) == ("<string>", "__init__")
    )


def _fast_init(cls: type, stock: Callable[..., None]) -> Callable[..., None]:
    """Write and compile `cls`'s faster `__init__` (the signature of `stock`)."""
    params = inspect.signature(stock).parameters
    names = dict(_default_names(params))
    fields = dataclasses.fields(cls)
    field_names = {f.name for f in fields}
    init_vars = [n for n in vars(cls)["__dataclass_fields__"] if n in params]
    init_vars = [n for n in init_vars if n not in field_names]
    namespace: dict[str, Any] = {n: params[p].default for p, n in names.items()}
    body = []
    for f in fields:
        body.extend(_field_lines(cls, f, params, names, namespace))
    body.append(f"self.__post_init__({', '.join(init_vars)})")
    source = "def __init__({}):\n    {}\n".format(
        _signature_text(params, names), "\n    ".join(body)
    )
    exec(source, namespace)  # our own text, as @dataclass does
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = stock.__qualname__
    init.__annotations__ = stock.__annotations__
    return init


def _default_names(params: Any) -> list[tuple[str, str]]:
    """(parameter, the global name of its default) of each defaulted one."""
    return [
        (p.name, f"_default_{p.name}")
        for p in params.values()
        if p.default is not inspect.Parameter.empty
    ]


def _signature_text(params: Any, names: dict[str, str]) -> str:
    """The parameter list: positional ones, then `*` and the keyword-only ones."""
    parts, star = [], False
    for p in params.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        parts.append(f"{p.name}={names[p.name]}" if p.name in names else p.name)
    return ", ".join(parts)


def _field_lines(
    cls: type,
    f: dataclasses.Field[Any],
    params: Any,
    names: dict[str, str],
    namespace: dict[str, Any],
) -> list[str]:
    """What `__init__` runs for field `f`, as the dataclass's would."""
    factory = f.default_factory
    if factory is not dataclasses.MISSING:
        namespace[f"_factory_{f.name}"] = factory
        if not f.init:
            return [f"self.{f.name} = _factory_{f.name}()"]
        passed = f"{f.name} is {names[f.name]}"
        return [f"self.{f.name} = _factory_{f.name}() if {passed} else {f.name}"]
    if not f.init:
        if f.default is dataclasses.MISSING:
            return []
        namespace[f"_value_{f.name}"] = f.default
        return [f"self.{f.name} = _value_{f.name}"]
    line = f"self.{f.name} = {f.name}"
    if f.name in names and _drops_its_default(cls, f.name, params[f.name].default):
        return [f"if {f.name} is not {names[f.name]}:", f"    {line}"]
    return [line]


def _drops_its_default(cls: type, name: str, default: Any) -> bool:
    """Whether assigning `default` to `name` on a new instance stores nothing:
    the field is a Prop with that default (which equals itself)."""
    prop = next((vars(k)[name] for k in cls.__mro__ if name in vars(k)), None)
    if type(prop) is not Prop or prop.name != name or prop.default is not default:
        return False
    try:
        return bool(default == default)
    except Exception:
        return False
