"""Source rules for the tests: they reach nothing private that a user could not.

An AST walk of `tests/`, outside `tests/support`: no `thing._name` (and no
`setattr(thing, "_name", ...)`, `monkeypatch.setattr("pkg._mod.NAME", ...)`),
except on `self` and `cls`, the tests' own classes. What a test needs of the
implementation (a client's wire to inject a fault, a hot-cache entry) comes
from `tests/support/internals.py`, the one door, so that a rename inside the
package changes one file; admin requests go through `tests/support/jsadmin.py`
on a connection of their own.

The walk cannot tell whose attribute it is, so the few private names of other
libraries that tests rightly use are listed in ALLOWED, each with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SUPPORT = TESTS / "support"

ALLOWED: dict[tuple[str, str], str] = {
    ("unit/test_parser.py", "_process_headers"): (
        "nats-py's own header parser: the reference our FastParser is compared with"
    ),
    ("unit/test_parser.py", "_parse_header_lines"): (
        "nats-py's own header parser: the reference our FastParser is compared with"
    ),
    ("cli/test_benchmarks_smoke.py", "_Protocol"): (
        "benchmarks/wire.py's raw-socket baseline (a benchmark, not the library): "
        "the test drives its protocol object as the event loop would"
    ),
    ("cli/test_benchmarks_smoke.py", "_inbox"): (
        "benchmarks/wire.py's raw-socket baseline: the fake server answers on its inbox"
    ),
    ("faults/test_server_lock.py", "_exit"): (
        "os._exit, the stdlib's documented way to end a forked child at once"
    ),
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


_SETTERS = {"setattr", "getattr", "hasattr", "delattr"}


def private_uses(source: str, filename: str = "<test>") -> list[tuple[int, str]]:
    """(line, name) of every private attribute `source` reaches."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called not in _SETTERS:
                continue
            for arg in node.args[:2]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    parts = arg.value.split(".")
                    found.extend((node.lineno, p) for p in parts if _private(p))
    return sorted(found)


# Files outside tests/unit (whose files are the unit tests of the modules they
# import, private ones included) that import a private module of the package,
# each with its reason. Every other test reaches the package through its
# public modules, tests/support/internals.py and tests/support/jsadmin.py.
ALLOWED_IMPORTS: dict[str, str] = {
    "eventsourcing/test_parts.py": (
        "the unit tests of the eventsourcing recorders' parts (here, not in unit/, "
        "because this folder's conftest skips them without the optional extra)"
    ),
    "integration/test_atomic_batch.py": "the seam's own test: a Wire's atomic batch on a server",
    "integration/test_wire_requests.py": "the seam's own test: a Wire's requests on a server",
    "integration/test_contract.py": "typed against the store contract it checks (_contract)",
    "integration/test_contract_client.py": "typed against the client contract it checks",
    "integration/conftest.py": "the contract tests' backend fixture, typed by the contract",
}


def private_imports(source: str, filename: str = "<test>") -> list[tuple[int, str]]:
    """(line, module) of every private module of angzarr_es that `source` imports."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "angzarr_es" and any(_private(p) for p in parts[1:]):
                found.append((node.lineno, name))
                break
    return found


def _import_offenders() -> list[str]:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        where = path.relative_to(TESTS).as_posix()
        if SUPPORT in path.parents or where.startswith("unit/") or where in ALLOWED_IMPORTS:
            continue
        found += [f"tests/{where}:{n} imports {m}" for n, m in private_imports(path.read_text())]
    return found


def test_tests_import_no_private_module() -> None:
    assert _import_offenders() == [], "use tests/support/internals.py, jsadmin or a public module"


def test_every_allowed_import_is_still_needed() -> None:
    assert [w for w in ALLOWED_IMPORTS if not private_imports((TESTS / w).read_text())] == []


def test_the_rule_sees_each_form_of_private_import() -> None:
    source = """
import angzarr_es._nats.api
from angzarr_es.store._context import leader_position
from angzarr_es.bus import _core
from angzarr_es import Client, _provision
from angzarr_es.bus import CatchUp
import angzarr_es.testing
from tests.support import internals
"""
    assert [m for _, m in private_imports(source)] == [
        "angzarr_es._nats.api",
        "angzarr_es.store._context",
        "angzarr_es.bus._core",
        "angzarr_es._provision",
    ]


def _offenders() -> list[str]:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        if SUPPORT in path.parents:
            continue
        where = path.relative_to(TESTS).as_posix()
        for line, name in private_uses(path.read_text(), str(path)):
            if (where, name) not in ALLOWED:
                found.append(f"tests/{where}:{line} reaches {name}")
    return found


def test_tests_reach_no_private_attribute() -> None:
    assert _offenders() == [], "use tests/support/internals.py or a public API"


def test_every_allowed_entry_is_still_needed() -> None:
    used = {
        (path.relative_to(TESTS).as_posix(), name)
        for path in TESTS.rglob("*.py")
        if SUPPORT not in path.parents
        for _, name in private_uses(path.read_text(), str(path))
    }
    assert set(ALLOWED) - used == set()


def test_the_rule_sees_each_form_of_private_access() -> None:
    source = """
client._wire.mux
store._ctx.hot.stats()
monkeypatch.setattr(sub, "_broken", True)
monkeypatch.setattr("angzarr_es.bus._core.CAPTURE_CHECK_TTL", 0.0)
getattr(p, "_in_hand")
self._mine
cls._ours
x.__class__
"""
    assert [name for _, name in sorted(private_uses(source))] == [
        "_wire",
        "_ctx",
        "_broken",
        "_core",
        "_in_hand",
    ]
