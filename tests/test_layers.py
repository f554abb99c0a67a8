"""The layering the README promises: core imports no program; programs import no other program."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "sidekick"
PROGRAMS = ("ship", "sync", "pod")


def imported_modules(package: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in (SRC / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(SRC))] = names
    return out


def forbidden(package: str) -> tuple[str, ...]:
    others = [p for p in PROGRAMS if p != package]
    if package == "core":
        others = [*PROGRAMS, "cli", "demo"]
    return tuple(f"sidekick.{p}" for p in others)


@pytest.mark.parametrize("package", ["core", *PROGRAMS])
def test_package_imports_no_higher_or_sibling_layer(package: str) -> None:
    bad = forbidden(package)
    offenders = {
        f"{path}: {name}"
        for path, names in imported_modules(package).items()
        for name in names
        if name.startswith(bad) and (name in bad or name.startswith(tuple(b + "." for b in bad)))
    }
    assert not offenders, f"{package} must not import {bad}: {sorted(offenders)}"
