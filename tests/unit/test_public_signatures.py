"""Every angzarr_es type a public signature names can be imported from a public place."""

from __future__ import annotations

import inspect
import typing
from types import ModuleType

import angzarr_es
from angzarr_es import codec, config, filters, health, metrics, testing, tracing
from angzarr_es.pb import core_pb2

PUBLIC_MODULES: tuple[ModuleType, ...] = (
    angzarr_es,
    codec,
    config,
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
    generated = {id(v) for mod in (core_pb2,) for v in vars(mod).values()}
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


def _signatures() -> list[tuple[str, dict[str, object]]]:
    out: list[tuple[str, dict[str, object]]] = []
    for name in angzarr_es.__all__:
        thing = getattr(angzarr_es, name)
        members = [(name, thing)]
        if inspect.isclass(thing):
            members = [
                (f"{name}.{attr}", member)
                for attr, member in vars(thing).items()
                if not attr.startswith("_") and callable(member)
            ]
        for where, member in members:
            if inspect.isfunction(member) or inspect.ismethod(member):
                out.append((where, typing.get_type_hints(member, vars(inspect.getmodule(member)))))
    return out


def test_public_signatures_name_only_exported_types() -> None:
    reachable = _reachable()
    missing = sorted(
        f"{where}: {getattr(t, '__qualname__', t)!s} ({getattr(t, '__module__', '?')})"
        for where, hints in _signatures()
        for hint in hints.values()
        for t in _named(hint)
        if getattr(t, "__module__", "").startswith("angzarr_es")
        and id(t) not in reachable
        and not isinstance(t, typing.TypeVar)
    )
    assert missing == []
