"""Speed-ups of Flet's own page build and diff: the same frames, byte for byte
(tests/test_speedup.py), in a fraction of the time.

Flet configures every control of a new subtree (a first visit, a rehydrate,
added controls) by walking *every* dataclass field of it with nested
generators and `dataclasses.fields()` per object: ~75 fields and ~230
generator steps per control, 130 ms of a 1000-control page. The walk here
does the same steps in the same order, but knows per class which fields it
must look at: of the Prop fields whose default the step ignores, only those
set in `_values` (what Prop.__get__ returns), and no scalar at all.

Every client event also had Flet resolve its handler's payload type from the
control class's annotations (repr-ing each one): 0.4 ms per click, 0.9 ms per
text field change. That is a pure function of (class, field), remembered here.

Each diff also left its chain of operations (a doubly linked list) as a cycle
for the garbage collector: Flet's teardown resets only the chain's root. Under
load that was most of what the collector's passes examined; the chain is
unlinked here, so reference counting frees it at once.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import weakref
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

from flet.controls import base_control, object_patch
from flet.controls.base_control import BaseControl
from flet.controls.object_patch import DiffBuilder, ObjectPatchException
from flet.controls.value_types import Prop
from flet.messaging import protocol

from flet_resilient._flet import fastinit
from flet_resilient._flet.version import missing, private

_inert_types: set[type] = {str, int, float, bool, type(None)}
"""Types of the values Flet's configure step ignores (neither dataclass, dict
nor list: scalars, enums, ...), learnt as the walk meets them."""


@dataclasses.dataclass(frozen=True)
class _FieldPlan:
    """Per dataclass, its non-skip fields by their place in Flet's walk: the
    ones to read on every instance, and the Prop fields whose default the
    walk ignores, read only when set (in `_values`, as Prop.__get__ does)."""

    always: tuple[tuple[int, str, bool, Any], ...]
    """(place, name, read from `_values`, default) of the other fields."""
    when_set: dict[str, int]
    """Place of each Prop field whose default Flet's configure step ignores."""


_plans: dict[type, _FieldPlan] = {}


def _inert(value: Any) -> bool:
    """Whether Flet's configure step does nothing with `value` (not a list,
    dict or dataclass: scalars, enums, colours...)."""
    if isinstance(value, (list, dict)) or hasattr(type(value), "__dataclass_fields__"):
        return False
    return not (isinstance(value, type) and dataclasses.is_dataclass(value))


def _field_plan(cls: type) -> _FieldPlan:
    """The fields Flet's configure step visits on instances of `cls`; a class
    met the first time also gets the faster `__init__` (fastinit)."""
    plan = _plans.get(cls)
    if plan is None:
        fastinit.speed_up(cls)
        always, when_set = [], {}
        fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("skip")]
        for place, f in enumerate(fields):
            owner = next((k for k in cls.__mro__ if f.name in vars(k)), None)
            found = vars(owner)[f.name] if owner is not None else None
            if type(found) is not Prop or found.name != f.name:
                always.append((place, f.name, False, None))
            elif _inert(found.default):
                when_set[f.name] = place
            else:
                always.append((place, f.name, True, found.default))
        plan = _plans[cls] = _FieldPlan(tuple(always), when_set)
    return plan


def _field_values(item: Any) -> list[Any]:
    """The values of `item`'s fields that Flet's configure step would act on,
    in the order it visits them: set Prop fields and the always-read ones."""
    plan = _field_plan(type(item))
    found: list[tuple[int, Any]] = []
    if plan.when_set:
        when_set = plan.when_set
        for name, value in item._values.items():
            place = when_set.get(name)
            if place is not None and type(value) not in _inert_types:
                found.append((place, value))
    for place, name, sparse, default in plan.always:
        value = item._values.get(name, default) if sparse else getattr(item, name)
        if type(value) not in _inert_types:
            found.append((place, value))
    if len(found) > 1:
        found.sort(key=itemgetter(0))
    return [value for _, value in found]


def _configure(
    builder: DiffBuilder,
    item: Any,
    parent: Any,
    frozen: bool,
    setattr_only: bool,
    out: list[Any],
) -> None:
    """Flet's configure step for `item` and what it holds; controls go to `out`."""
    cls = type(item)
    if cls in _inert_types:
        return
    if cls is list or cls is dict:  # (builtins: never dataclasses) the common case
        for value in item if cls is list else item.values():
            _configure(builder, value, parent, frozen, False, out)
    elif hasattr(cls, "__dataclass_fields__"):
        _configure_object(builder, item, parent, frozen, setattr_only, out)
    elif isinstance(item, dict):
        for value in item.values():
            _configure(builder, value, parent, frozen, False, out)
    elif isinstance(item, list):
        for value in item:
            _configure(builder, value, parent, frozen, False, out)
    elif isinstance(item, type):  # a class: what it is decides, not its type
        if dataclasses.is_dataclass(item):
            out.extend(_stock["configure"](builder, item, parent, frozen, setattr_only))
    else:
        _inert_types.add(cls)


def _configure_object(
    builder: DiffBuilder,
    item: Any,
    parent: Any,
    frozen: bool,
    setattr_only: bool,
    out: list[Any],
) -> None:
    """Configure one dataclass instance: parent, frozen mark, build, its fields."""
    if parent is None:
        parent_ref = getattr(item, "_parent", None)
        parent = parent_ref() if parent_ref else None
    if parent:
        if parent is item:
            raise ObjectPatchException(f"Parent is the same as item: {item}")
        item._parent = weakref.ref(parent)
    if hasattr(item, "_frozen"):
        frozen = item._frozen
    elif frozen:
        item._frozen = frozen
    cls = item.__class__
    if getattr(cls, "__flet_control_cls__", None) is None:
        cls.__flet_control_cls__ = builder.control_cls
    control_cls = builder.control_cls
    is_control = control_cls is not None and isinstance(item, control_cls)
    if is_control:
        if not setattr_only:
            item.build()
            item._before_update_safe()
            object.__setattr__(item, "_initialized", True)
        out.append(item)
    if not setattr_only:
        child_parent = item if is_control else parent
        for value in _field_values(item):
            _configure(builder, value, child_parent, frozen, False, out)
    if not frozen:
        _track_changes(item)


def _track_changes(item: Any) -> None:
    """What Flet's configure step ends with for a non-frozen object: a clean
    dirty set, or (plain dataclass) its setattr hook and an empty change log."""
    dirty = getattr(item, "_dirty", None)
    if dirty is not None:
        dirty.clear()
        return
    cls = type(item)
    hook = object_patch._control_setattr
    if cls.__setattr__ is not hook:
        cls.__setattr__ = hook  # type: ignore[assignment]
    object.__setattr__(item, "__changes", {})


def _fast_configure(
    self: DiffBuilder,
    item: Any,
    parent: Any,
    frozen: bool,
    configure_setattr_only: bool = False,
) -> Iterator[Any]:
    """`DiffBuilder._configure_dataclass`, walked eagerly (its only caller
    drains it at once): the controls it configured, in Flet's order. With
    Flet's object-patch debug log on, Flet's own walk runs (it logs each step)."""
    if object_patch.logger.isEnabledFor(logging.DEBUG):
        stock = _stock["configure"]
        return stock(self, item, parent, frozen, configure_setattr_only)
    out: list[Any] = []
    _configure(self, item, parent, frozen, configure_setattr_only, out)
    return iter(out)


_dataclass_types: dict[type, bool] = {}


def _is_dataclass(obj: Any) -> bool:
    """`dataclasses.is_dataclass`, remembered per type of instance: Flet asks it
    of every value it diffs or encodes, and for an enum the lookup is slow."""
    cls = type(obj)
    found = _dataclass_types.get(cls)
    if found is None:
        if issubclass(cls, type):  # a class: the answer depends on which one
            return dataclasses.is_dataclass(obj)
        found = _dataclass_types[cls] = dataclasses.is_dataclass(obj)
    return found


class _CachedDataclasses:
    """The `dataclasses` module as Flet's differ sees it, with `fields()`
    computed once per class (Flet calls it per dirty or removed object)."""

    def __init__(self) -> None:
        self._fields: dict[type, tuple[dataclasses.Field[Any], ...]] = {}
        self.is_dataclass = _is_dataclass

    def __getattr__(self, name: str) -> Any:
        return getattr(dataclasses, name)

    def fields(self, class_or_instance: Any) -> tuple[dataclasses.Field[Any], ...]:
        """`dataclasses.fields`, remembered per class."""
        cls = (
            class_or_instance
            if isinstance(class_or_instance, type)
            else type(class_or_instance)
        )
        found = self._fields.get(cls)
        if found is None:
            found = self._fields[cls] = dataclasses.fields(class_or_instance)
        return found


def _cached_event_type(stock: Any) -> Any:
    """Flet's `get_event_field_type`, resolved once per (control class, field):
    it reads only the class's annotations and module namespaces."""
    found: dict[tuple[type, str], Any] = {}

    @functools.wraps(stock)
    def get_event_field_type(control: Any, field_name: str) -> Any:
        key = (type(control), field_name)
        if key not in found:
            found[key] = stock(control, field_name)
        return found[key]

    return get_event_field_type


def _teardown(self: DiffBuilder) -> None:
    """Flet's teardown, with every node of the operation chain unlinked (each
    is `[previous, next, operation]`), the root too (Flet points it at itself)."""
    root = private(self, "_DiffBuilder__root")
    node = root[1] if root else root
    while node and node is not root:
        following = node[1]
        node.clear()
        node = following
    _stock["teardown"](self)
    root.clear()


SPED_UP: tuple[tuple[Any, str], ...] = (
    (DiffBuilder, "_configure_dataclass"),
    (DiffBuilder, "teardown"),
    (base_control, "get_event_field_type"),
    (object_patch, "dataclasses"),
    (protocol, "_get_root_dataclass_field"),
    (protocol, "is_dataclass"),
)
"""The Flet names the speed-ups replace (tests/test_flet_contract.py checks them)."""

SPEEDUP_READS: tuple[tuple[Any, str], ...] = (
    (object_patch, "_control_setattr"),
    (object_patch, "logger"),
    (BaseControl, "_before_update_safe"),
    (BaseControl, "build"),
)
"""Flet names the speed-ups read besides (and the `_values`, `_parent`,
`_frozen`, `_dirty` attributes of controls, as Flet's own step does)."""

_stock: dict[str, Any] = {}
"""Flet's own `_configure_dataclass` and `teardown`, object_patch's `dataclasses`, the
encoder's `_get_root_dataclass_field` and `is_dataclass`, and the event type
resolver."""


def check_flet() -> None:
    """Remember Flet's originals, or raise naming what this Flet lacks."""
    for owner, name in SPED_UP + SPEEDUP_READS:
        if name not in vars(owner):
            raise missing(owner, name)
    if not _stock:
        _stock["configure"] = DiffBuilder._configure_dataclass
        _stock["teardown"] = DiffBuilder.teardown
        _stock["dataclasses"] = object_patch.dataclasses
        _stock["root_field"] = protocol._get_root_dataclass_field
        _stock["is_dataclass"] = protocol.is_dataclass
        _stock["event_type"] = base_control.get_event_field_type


def speedups(on: bool) -> None:
    """Use the faster page build and diff steps (on), or Flet's own (off).
    Both give the same frames byte for byte (tests/test_speedup.py); the
    seam's `install()` turns them on unless FLET_RESILIENT_SPEEDUPS=0."""
    check_flet()
    if on and not speedups_on():
        _plans.clear()  # so each class met again gets the faster __init__ again
        fast = functools.wraps(_stock["configure"])(_fast_configure)
        DiffBuilder._configure_dataclass = fast  # type: ignore[method-assign]
        unlinking = functools.wraps(_stock["teardown"])(_teardown)
        DiffBuilder.teardown = unlinking  # type: ignore[method-assign]
        object_patch.dataclasses = _CachedDataclasses()  # type: ignore[assignment]
        # The encoder looks up, per scalar field of every control it sends,
        # the base class that declared it: a pure function of (class, name).
        protocol._get_root_dataclass_field = functools.cache(_stock["root_field"])
        protocol.is_dataclass = _is_dataclass  # type: ignore[assignment]
        base_control.get_event_field_type = _cached_event_type(_stock["event_type"])
    elif not on:
        DiffBuilder._configure_dataclass = _stock["configure"]  # type: ignore[method-assign]
        DiffBuilder.teardown = _stock["teardown"]  # type: ignore[method-assign]
        object_patch.dataclasses = _stock["dataclasses"]
        protocol._get_root_dataclass_field = _stock["root_field"]
        protocol.is_dataclass = _stock["is_dataclass"]
        base_control.get_event_field_type = _stock["event_type"]
        fastinit.restore()


def speedups_on() -> bool:
    """Whether the page build and diff speed-ups are in use."""
    return bool(_stock) and DiffBuilder._configure_dataclass is not _stock["configure"]
