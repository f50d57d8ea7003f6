"""Bytecode shipped in the Lambda bundle: what the handlers import, compiled to be trusted as shipped."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

from stacks.bundling import compile_cold_start_bytecode

# PEP 552: the pyc flags word; bit 0 = hash-based, bit 1 = check the source. Unchecked hash: 0b01.
UNCHECKED_HASH = 0b01


def _tree(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "handler.py").write_text("import app.used\n")
    (root / "app" / "used.py").write_text("VALUE = 1\n")
    (root / "app" / "unused.py").write_text("VALUE = 2\n")
    (root / "other.py").write_text("VALUE = 3\n")
    return root


def test_only_the_modules_the_handler_imports_are_compiled_with_unchecked_hashes(tmp_path: Path) -> None:
    bundle = _tree(tmp_path / "bundle")
    count = compile_cold_start_bytecode(bundle, sys.executable, ("app.handler",))
    tag = sys.implementation.cache_tag
    compiled = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*.pyc")}
    assert compiled == {
        f"app/__pycache__/__init__.{tag}.pyc",
        f"app/__pycache__/handler.{tag}.pyc",
        f"app/__pycache__/used.{tag}.pyc",
    }
    assert count == 3
    for path in bundle.rglob("*.pyc"):
        magic, flags = struct.unpack("<4sI", path.read_bytes()[:8])
        assert magic == importlib.util.MAGIC_NUMBER
        assert flags == UNCHECKED_HASH, path
