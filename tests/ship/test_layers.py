"""ship's own layers: each imports only the layers below it, and sources, sinks and transforms
never import each other (a plug-in is written against ``records`` and the layers under it).

Every import counts, including ones made inside functions or only for type checking.
"""

from __future__ import annotations

import ast
from pathlib import Path

SHIP = Path(__file__).resolve().parents[2] / "src" / "sidekick" / "ship"

# Top to bottom. A layer is a tuple of groups; groups of one layer may not import each other.
# Modules in one group may import each other.
LAYERS: tuple[tuple[frozenset[str], ...], ...] = (
    (frozenset({"app", "reload", "_running", "prepare"}),),
    (frozenset({"pipeline", "output_worker", "graph", "plan", "tap"}),),
    (frozenset({"sources"}), frozenset({"sinks"}), frozenset({"transforms"})),
    (frozenset({"parsers"}),),
    (
        frozenset(
            {
                "acks",
                "checkpoints",
                "config",
                "deadletter",
                "files",
                "k8s_path",
                "metrics",
                "timefmt",
            }
        ),
    ),
    (frozenset({"records"}),),
)


def unit(module: str) -> str:
    """``sidekick.ship.sources.tail`` -> ``sources``; ``sidekick.ship`` itself -> ``""``."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 else ""


def place(name: str) -> tuple[int, int] | None:
    """(layer, group) of a unit, None if no layer names it."""
    for depth, groups in enumerate(LAYERS):
        for index, group in enumerate(groups):
            if name in group:
                return depth, index
    return None


def imports_under(root: Path) -> dict[str, set[str]]:
    """Each file under ``root`` (relative path) -> the ship units it imports."""
    out: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            found.update(unit(n) for n in names if n.startswith("sidekick.ship."))
        out[str(path.relative_to(root))] = found
    return out


def own_unit(relative: str) -> str:
    return Path(relative).with_suffix("").parts[0]


def offenders(imports: dict[str, set[str]]) -> list[str]:
    """One line per import that goes up a layer or across to a sibling group."""
    found = []
    for relative, targets in sorted(imports.items()):
        source = own_unit(relative)
        here = place(source)
        if here is None:  # __init__.py, or a module the other test reports
            continue
        for target in sorted(targets - {source, ""}):
            there = place(target)
            if there is None:
                continue
            if there[0] < here[0]:
                found.append(f"{relative} imports {target}, a layer above it")
            elif there[0] == here[0] and there[1] != here[1]:
                found.append(f"{relative} imports {target}, a sibling it must not know")
    return found


def test_every_ship_module_has_a_layer() -> None:
    units = {own_unit(p) for p in imports_under(SHIP) if p != "__init__.py"}
    unplaced = sorted(u for u in units if place(u) is None)
    assert not unplaced, f"put these ship modules in a layer of LAYERS: {unplaced}"


def test_no_ship_module_imports_a_layer_above_it_or_a_sibling() -> None:
    found = offenders(imports_under(SHIP))
    assert not found, "\n".join(found)


def test_upward_and_sibling_imports_are_found_wherever_they_are(tmp_path: Path) -> None:
    (tmp_path / "sources").mkdir()
    (tmp_path / "sinks").mkdir()
    (tmp_path / "sources" / "x.py").write_text(
        "def f():\n    from sidekick.ship.pipeline import Pipeline\n    return Pipeline\n"
    )
    (tmp_path / "sinks" / "y.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import sidekick.ship.sources.tail\n"
        "from sidekick.ship.records import Record\n"
    )
    assert offenders(imports_under(tmp_path)) == [
        "sinks/y.py imports sources, a sibling it must not know",
        "sources/x.py imports pipeline, a layer above it",
    ]
