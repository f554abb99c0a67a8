"""Records, and the small protocols that ship's plug-ins implement.

A record is a flat ``dict`` keyed by OpenTelemetry / ECS-style dotted names
(``@timestamp``, ``message``, ``log.file.path``, ``log.offset``, ``host.name``,
``http.response.status_code`` ...). Flat dicts are what every sink encodes, and msgspec
encodes a whole list of them in one call, which is where ship's speed comes from: work is
done per batch, never per byte.

Plug-in points, each one main method plus ``aclose()``:

- ``Parser.parse(records)`` enriches records in place (one call per batch); a parser may
  also give each tailed file a ``Joiner`` and split a batch into field columns.
- ``Sink.send(records)`` delivers a batch and says, per record, what became of it.

Delivery outcomes: a sink returns a ``SendResult``. Indices in ``retry`` are sent again
later (a 429 item in an Elasticsearch bulk response); indices in ``rejected`` go to the
dead-letter file with their reason (a 400 item); every other record was delivered. A sink
raises ``TemporaryError`` when nothing of the batch was delivered and a retry may help
(connection refused, 503), ``PermanentError`` when the whole batch is rejected for good.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Record = dict[str, Any]

# Field names used across ship (OpenTelemetry semantic conventions where one exists).
TIMESTAMP = "@timestamp"
MESSAGE = "message"
FILE_PATH = "log.file.path"
OFFSET = "log.offset"
HOST_NAME = "host.name"
FILE_ID = "log.file.id"  # stable id of a file's bytes: (device, inode, fingerprint, truncations)
FLAGS = "log.flags"  # list of markers, e.g. ["partial"] on the pieces of a split long line
PARSE_ERROR = "log.parse_error"  # marker on records a parser could not parse; value says why


@dataclass(slots=True)
class SendResult:
    """What a sink did with a batch; empty means every record was delivered."""

    retry: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)

    @property
    def all_delivered(self) -> bool:
        return not self.retry and not self.rejected


DELIVERED = SendResult()


class Joiner(Protocol):
    """Joins the lines of one tailed file into records before they are built (a traceback's
    lines, a container runtime's partial lines); the tail source drives it.

    ``feed`` returns the records these lines complete (text, offset of the first line); the
    last group may stay pending. ``pending_offset`` is the first byte of a pending group: a
    file's checkpoint never passes it. ``flush`` returns whatever is pending. ``flags``, after
    ``feed`` or ``flush``: ``None`` if no returned record is marked, else one ``log.flags``
    value (or ``None``) per returned record. Every line fed comes back in some record.
    """

    flags: list[list[str] | None] | None

    @property
    def pending_offset(self) -> int | None: ...

    def feed(self, lines: list[str], offsets: list[int]) -> tuple[list[str], list[int]]: ...

    def flush(self) -> tuple[list[str], list[int]]: ...


class Parser(Protocol):
    """Turns ``message`` into structured fields, in place, a batch at a time (defaults of
    ``joiner``, ``columns`` and ``column_names`` in ``parsers.base.BaseParser``)."""

    name: str
    column_names: tuple[str, ...]  # the fields ``columns`` gives, in order; () if it gives none

    def joiner(self, max_bytes: int) -> Joiner | None: ...  # one per tailed file, if it joins

    def columns(self, messages: list[str]) -> tuple[Sequence[Any], ...] | None: ...

    def parse(self, records: list[Record]) -> None: ...


class Sink(Protocol):
    """Delivers batches of records to one destination (defaults in ``sinks.base.BaseSink``)."""

    name: str
    concurrency: int  # batches it may have in flight at once (1: one at a time)

    def counters(self) -> dict[str, int]: ...  # its own events for /metrics, e.g. "truncated"

    async def send(self, records: list[Record]) -> SendResult: ...

    async def aclose(self) -> None: ...
