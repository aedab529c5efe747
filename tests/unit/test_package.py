"""The package surface: exports, generated code, typing marker."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import angzarr_es

ROOT = Path(__file__).resolve().parents[2]


def test_all_is_exactly_the_public_surface() -> None:
    public = {name for name in vars(angzarr_es) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(angzarr_es, name)).__name__ == "module"}
    assert set(angzarr_es.__all__) == public - modules
    assert list(angzarr_es.__all__) == sorted(angzarr_es.__all__)


def test_py_typed_is_shipped() -> None:
    assert importlib.resources.files("angzarr_es").joinpath("py.typed").is_file()


def test_generated_protobuf_modules_are_fresh(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_proto
    finally:
        sys.path.pop(0)
    generated = gen_proto.generate(tmp_path)
    assert generated, "protoc produced nothing"
    for path in generated:
        rel = path.relative_to(tmp_path)
        committed = ROOT / rel
        assert committed.exists(), f"{rel} is not committed"
        assert committed.read_text() == path.read_text(), (
            f"{rel} is stale: run python scripts/gen_proto.py"
        )
    committed_all = sorted((ROOT / "angzarr_es" / "pb").glob("*_pb2.py*"))
    assert len(committed_all) == len(generated)
