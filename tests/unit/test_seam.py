"""Source rules: nats-py is reached through `angzarr_es._nats` only.

An AST walk of the package, as a test, so that the seam cannot erode by one
convenient import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import angzarr_es

PACKAGE = Path(angzarr_es.__file__).parent
SEAM = PACKAGE / "_nats"


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "pb" not in p.relative_to(PACKAGE).parts)


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_only_the_seam_imports_nats() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for path in _sources()
        if SEAM not in path.parents
        for line, name in _imported(ast.parse(path.read_text(), str(path)))
        if name == "nats" or name.startswith("nats.")
    ]
    assert offenders == []


def test_the_seam_is_where_nats_is_imported() -> None:
    # The rule above must not pass by accident (say, the seam moved).
    inside = [
        name
        for path in _sources()
        if SEAM in path.parents
        for _, name in _imported(ast.parse(path.read_text(), str(path)))
    ]
    assert any(name.startswith("nats") for name in inside)


def test_no_jetstream_api_subject_outside_the_api_module() -> None:
    # Every `$JS.API...` subject is a template in `_nats/api.py`.
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
        for path in _sources()
        if path != SEAM / "api.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("$JS.")
    ]
    assert offenders == []
