"""Imports go down the layers of docs/design.md's map, never up, and the two
halves (store/ and bus/) never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import angzarr_es

PACKAGE = Path(angzarr_es.__file__).parent

# Highest first. A module may import its own layer or any lower one; the
# longest matching prefix decides a module's layer.
LAYERS: dict[str, int] = {
    "angzarr_es": 6,  # the package's __init__ re-exports everything
    "angzarr_es.__main__": 6,
    "angzarr_es.cli": 6,
    "angzarr_es._cli": 6,
    "angzarr_es.metrics": 6,
    "angzarr_es.demo": 6,
    "angzarr_es.testing": 6,
    "angzarr_es.eventsourcing": 6,  # the eventsourcing library's recorders
    "angzarr_es.client": 5,
    "angzarr_es.store": 4,
    "angzarr_es.bus": 4,
    "angzarr_es._provision": 3,
    "angzarr_es._stream_configs": 3,
    "angzarr_es._durables": 3,
    "angzarr_es._health": 3,
    "angzarr_es.embedded": 2,
    "angzarr_es._nats": 1,
}
BOTTOM = 0  # records, rules and names: _types, codec, subjects, config, errors, ...
APART = ("angzarr_es.store", "angzarr_es.bus")


def _layer(module: str) -> int:
    if module == "angzarr_es":
        return LAYERS[module]
    best = ""
    for prefix in LAYERS:
        if prefix == "angzarr_es":
            continue
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return LAYERS[best] if best else BOTTOM


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = path
    return out


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, known: dict[str, Path]) -> set[str]:
    found: set[str] = set()
    skip = {id(n) for t in ast.walk(tree) if _type_checking(t) for n in ast.walk(t)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in known:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known.keys()
            found |= subs
            if len(subs) < len(node.names):
                found.add(node.module)
    return found


def test_imports_go_down_the_layers() -> None:
    known = _modules()
    upward = []
    for name, path in sorted(known.items()):
        if ".pb." in f"{name}.":
            continue
        for target in _imports(ast.parse(path.read_text(), str(path)), known):
            if target == name or name.startswith(target + "."):
                continue  # a package's own __init__ (re-exports) is not a layer above
            if _layer(target) > _layer(name):
                upward.append(f"{name} ({_layer(name)}) imports {target} ({_layer(target)})")
            halves = [h for h in APART if name.startswith(h) or target.startswith(h)]
            if len(halves) == 2 and not any(
                name.startswith(h) and target.startswith(h) for h in APART
            ):
                upward.append(f"{name} imports {target}: store/ and bus/ stay apart")
    assert upward == []


def test_the_rule_sees_an_upward_import() -> None:
    known = _modules()
    tree = ast.parse("from angzarr_es.client import Client\n")
    assert _imports(tree, known) == {"angzarr_es.client"}
    assert _layer("angzarr_es.client") > _layer("angzarr_es.store._append")
    assert _layer("angzarr_es._nats.wire") < _layer("angzarr_es.store")
