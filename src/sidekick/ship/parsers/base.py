"""``BaseParser``: the defaults of the capabilities the ``Parser`` protocol declares.

Besides ``parse``, a parser may help the tail source in two ways, and says so here rather
than being probed for it:

- ``joiner(max_bytes)`` gives each tailed file a ``Joiner`` that puts the container
  runtime's partial lines back together before records are built (``cri``, ``docker``);
- ``columns(messages)`` splits a whole batch into field columns named by ``column_names``,
  so the tail builds records with those fields at once instead of parsing them later (``cri``).

Most parsers do neither; they inherit these defaults (no joiner, no columns) and implement
``parse`` alone. ``argument`` names what follows ``name:`` in a ``--parser`` value
(``regex:PATTERN``); ``create`` builds the parser from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sidekick.ship.records import Joiner, Record


class BaseParser:
    name: str = ""
    argument: str | None = None  # what follows "name:" in --parser; None: takes nothing
    column_names: tuple[str, ...] = ()  # the fields ``columns`` gives, in order; () for none

    @classmethod
    def create(cls, argument: str) -> BaseParser:
        """The parser for ``--parser name:argument`` (``argument`` is empty if it takes none)."""
        return cls()

    def joiner(self, max_bytes: int) -> Joiner | None:
        """A joiner for one tailed file (``max_bytes``: ``--max-line-bytes``); none here."""
        return None

    def columns(self, messages: list[str]) -> tuple[Sequence[Any], ...] | None:
        """One column per ``column_names`` field for this batch, or ``None`` to ``parse`` it."""
        return None

    def parse(self, records: list[Record]) -> None:
        raise NotImplementedError


class RawParser(BaseParser):
    """Leaves records as they are; the default."""

    name = "raw"

    def parse(self, records: list[Record]) -> None:
        return None
