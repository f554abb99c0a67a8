"""The ``Transform`` protocol: a named stage between inputs and outputs, a batch at a time.

A transform takes a list of records and returns, per output name, the records that leave it.
Most transforms have one output, ``DEFAULT`` (the empty name, so a graph refers to them as
``name``); ``route`` has one per branch (``name.branch``) plus ``_unmatched``, and
``throttle`` may add ``excess``. A record given to ``process`` and returned under no output is
dropped; the transform counts it in ``counters()["dropped"]``, and the pipeline treats it as
handled.

``BaseTransform`` is the small shared implementation: the name, the three counters every
transform keeps (``in``, ``out``, ``dropped``), and extra named counters. Each kind is one
module with a typed ``Options`` struct (``msgspec``, unknown fields forbidden) and a class
built from ``(name, options)``; :mod:`sidekick.ship.transforms` maps kinds to classes.

Left out: asynchronous transforms and transforms that hold records back across batches
(aggregation); every transform here answers for its batch before the next one.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import msgspec

from sidekick.ship.records import Record

__all__ = ["DEFAULT", "BaseTransform", "Record", "Transform"]

DEFAULT = ""  # the name of a transform's one output


class Transform(Protocol):
    name: str  # the component name from the config
    kind: ClassVar[str]  # "filter", "modify", "redact", "sample", "throttle", "parse", "route"
    outputs: tuple[str, ...]  # (DEFAULT,) or, for route, its branch names + "_unmatched"

    def process(self, records: list[Record]) -> dict[str, list[Record]]:
        """Records in, records out per output name; records not returned are dropped (counted
        by the transform in `dropped`). May modify the given records in place: the pipeline
        copies records where a branch fans out, so no other branch sees the change."""
        ...

    def counters(
        self,
    ) -> dict[str, int]:  # e.g. {"in": n, "out": n, "dropped": n, "redacted.jwt": n}
        ...


class BaseTransform:
    """Shared bookkeeping: ``in``/``out``/``dropped`` and extra counters by name.

    Subclasses set ``kind`` and ``Options`` and implement ``process``; they call ``_count``
    once per batch. ``out`` counts records returned summed over outputs (a record ``route``
    sends to two branches counts twice); ``dropped`` counts records returned under no output.
    """

    kind: ClassVar[str] = ""
    Options: ClassVar[type[msgspec.Struct]]

    def __init__(self, name: str, options: Any) -> None:
        self.name = name
        self.outputs: tuple[str, ...] = (DEFAULT,)
        self._in = 0
        self._out = 0
        self._dropped = 0
        self._extra: dict[str, int] = {}

    def process(self, records: list[Record]) -> dict[str, list[Record]]:
        raise NotImplementedError

    def _count(self, n_in: int, n_out: int, n_dropped: int) -> None:
        self._in += n_in
        self._out += n_out
        self._dropped += n_dropped

    def _add(self, counter: str, n: int = 1) -> None:
        self._extra[counter] = self._extra.get(counter, 0) + n

    def counters(self) -> dict[str, int]:
        return {"in": self._in, "out": self._out, "dropped": self._dropped, **self._extra}
