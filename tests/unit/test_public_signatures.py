"""Every angzarr_es type a public signature names can be imported from a public place.

Public signatures: the functions, methods (own and inherited), properties and
struct fields of everything the public modules export.
"""

from __future__ import annotations

import inspect
import typing
from types import ModuleType

import msgspec

import angzarr_es
from angzarr_es import codec, config, embedded, filters, health, metrics, testing, tracing
from angzarr_es.pb import core_pb2
from angzarr_es.testing import faults

PUBLIC_MODULES: tuple[ModuleType, ...] = (
    angzarr_es,
    codec,
    config,
    embedded,
    faults,
    filters,
    health,
    metrics,
    testing,
    tracing,
)


def _reachable() -> set[int]:
    exported = {
        id(getattr(mod, name)) for mod in PUBLIC_MODULES for name in getattr(mod, "__all__", [])
    }
    generated = {id(v) for v in vars(core_pb2).values()}
    return exported | generated


def _named(annotation: object) -> list[object]:
    """The classes and aliases an annotation mentions."""
    found = [annotation]
    origin = typing.get_origin(annotation)
    if origin is not None and origin is not typing.Literal:
        found.append(origin)
    if origin is not typing.Literal:
        for arg in typing.get_args(annotation):
            found += _named(arg)
    return found


def _hints(owner: object, member: object) -> dict[str, object]:
    if isinstance(member, property):
        member = member.fget
    if isinstance(member, (classmethod, staticmethod)):
        member = member.__func__
    if not (inspect.isfunction(member) or inspect.ismethod(member)):
        return {}
    module = inspect.getmodule(member) or inspect.getmodule(owner)
    return typing.get_type_hints(member, vars(module) if module else None)


# Handed out by the library (`connect()`, `client.store()`, ...), never made by
# users: their constructors take the library's internals.
HANDED_OUT = {
    "Bus",
    "CatchUp",
    "Client",
    "EventStore",
    "InMemoryBus",
    "InMemoryCatchUp",
    "InMemoryEventStore",
    "InMemoryProjector",
    "Projector",
    "Subscription",
    "TapPoint",
}


def _signatures() -> list[tuple[str, dict[str, object]]]:
    out: list[tuple[str, dict[str, object]]] = []
    for mod in PUBLIC_MODULES:
        for name in getattr(mod, "__all__", []):
            thing = getattr(mod, name)
            where = f"{mod.__name__}.{name}"
            if not inspect.isclass(thing):
                out.append((where, _hints(mod, thing)))
                continue
            if issubclass(thing, msgspec.Struct):
                out.append((where, typing.get_type_hints(thing)))
            for klass in thing.__mro__:
                if not klass.__module__.startswith("angzarr_es"):
                    continue
                for attr, member in vars(klass).items():
                    if not attr.startswith("_") or (attr == "__init__" and name not in HANDED_OUT):
                        out.append((f"{where}.{attr}", _hints(thing, member)))
    return out


def test_public_signatures_name_only_exported_types() -> None:
    reachable = _reachable()
    missing = sorted(
        {
            f"{where}: {getattr(t, '__qualname__', t)!s} ({getattr(t, '__module__', '?')})"
            for where, hints in _signatures()
            for hint in hints.values()
            for t in _named(hint)
            if getattr(t, "__module__", "").startswith("angzarr_es")
            and id(t) not in reachable
            and not isinstance(t, typing.TypeVar)
        }
    )
    assert missing == []


def test_the_check_sees_properties_fields_and_inherited_methods() -> None:
    names = {where for where, _ in _signatures()}
    assert "angzarr_es.Client.config" in names  # a property
    assert "angzarr_es.History" in names
    assert "angzarr_es.testing.InMemoryClient.store" in names
