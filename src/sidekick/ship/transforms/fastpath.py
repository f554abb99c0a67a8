"""Simple CEL conditions compiled to Python closures (placeholder: none recognised yet)."""

from __future__ import annotations

from collections.abc import Callable

from sidekick.ship.records import Record


def compile_condition(text: str) -> Callable[[Record], bool | None] | None:
    return None
