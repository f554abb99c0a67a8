"""What an input is to the pipeline: a ``Source`` that emits ``SourceBatch``es.

A source runs until it is cancelled or ``ctx.stopping`` is set, and hands batches of records
to ``emit``. ``await emit(batch)`` is where backpressure happens: it returns only when the
pipeline has room for the batch's bytes, so a source that awaits it never reads ahead of
what the outputs can take (a tailed file stays on disk, the ingest spool answers 503).

Each batch carries an ``Ack`` from an ``AckTracker`` (``sidekick.ship.acks``) of the stream
it came from; the pipeline calls ``ack.delivered()`` once every output has the batch, and the
tracker advances the stream's committed position over the delivered prefix only. Sources
persist that position through ``ctx.checkpoints`` (namespaced by their own ``name``).

Static fields every record should carry (``host.name``, ``k8s.*``, ``--field``s) are in
``ctx.static_fields``; sources add them when they build records, so nothing walks the
records again later.

Shutdown (the drain): when ``ctx.stopping`` is set a source does not stop at once. A tailed
file goes on being read to its end, and HTTP ingest goes on accepting, until no input has
seen new data for ``drain_quiet`` (``ctx.drain``, one clock shared by all inputs: a file
that still grows keeps every input open); then each source hands over what it holds and
returns. The program bounds the whole drain by ``--shutdown-timeout``.

Each input has its own parser (``InputSpec.parser``, from ``?parser=`` or the global
``--parser``). A source puts it on every batch it emits and the pipeline runs it over the
batch once, after waiting for room, so parsing stays one call per batch and records that
wait are not parsed earlier than they must be.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sidekick.ship.acks import Ack
from sidekick.ship.records import Parser, Record

if TYPE_CHECKING:
    from sidekick.ship.checkpoints import CheckpointStore
    from sidekick.ship.config import ShipConfig
    from sidekick.ship.metrics import ShipMetrics


@dataclass(slots=True)
class SourceBatch:
    """Records read from one stream, their size in bytes, and the token that acks them.

    ``ack`` is ``None`` only for batches whose delivery needs no bookkeeping. ``parser`` is
    the parser of the input the batch came from (``None``: shipped as read); the pipeline
    applies it.
    """

    records: list[Record]
    size: int
    ack: Ack | None = None
    parser: Parser | None = None


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One ``--input`` with its options resolved (``sidekick.ship.sources.resolve_input``).

    ``url`` is the input without its ``?options``: the source's name, its ``input`` metric
    label and its checkpoint namespace, so adding or changing an option neither re-reads
    files nor starts new metric series. ``given`` is the input as the user wrote it, for
    messages. ``parser`` is built and checked (``None`` for ``raw``); ``multiline_start`` is a
    pattern known to compile.
    """

    url: str
    given: str
    parser_spec: str = "raw"
    parser: Parser | None = None
    multiline_start: str | None = None
    # ``?follow_symlinks=``: None means the global ``follow_symlinks``.
    follow_symlinks: bool | None = None
    # ``?exclude=``: glob patterns of matched files not to tail (file inputs).
    exclude: tuple[str, ...] = ()
    # ``?k8s_metadata=``: add the Kubernetes fields a file's path names (file inputs).
    k8s_metadata: bool = False


Emit = Callable[[SourceBatch], Awaitable[None]]


class DrainClock:
    """When any input last saw new data during a shutdown drain; ``quiet`` ends the drain.

    ``begin()`` starts the clock at the shutdown request, so an app that writes its last lines
    just after SIGTERM (as a classic sidecar's app does) is still read. Once ``quiet`` has
    been true it stays true, so every input ends its drain at the same moment.
    """

    def __init__(self, quiet_seconds: float) -> None:
        self.quiet_seconds = quiet_seconds
        self.last = time.monotonic()
        self.ended = False

    def begin(self) -> None:
        self.last = time.monotonic()

    def activity(self) -> None:
        """Record new data (a file grew, a request was accepted)."""
        if not self.ended:
            self.last = time.monotonic()

    def remaining(self) -> float:
        """Seconds until the drain is quiet if nothing more arrives (0 once it is)."""
        if self.ended:
            return 0.0
        return max(0.0, self.quiet_seconds - (time.monotonic() - self.last))

    @property
    def quiet(self) -> bool:
        if not self.ended and self.remaining() <= 0:
            self.ended = True
        return self.ended


@dataclass
class SourceContext:
    """Everything a source gets from the pipeline; passed to ``create(spec, ctx)``."""

    config: ShipConfig
    checkpoints: CheckpointStore
    metrics: ShipMetrics
    state_dir: Path
    static_fields: dict[str, Any] = field(default_factory=dict)
    # Set when the program is shutting down: read what is left until ``drain`` is quiet,
    # hand it to ``emit``, return from ``run``.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    drain: DrainClock = field(default_factory=lambda: DrainClock(1.0))
    # Files tailed by the file inputs, (device, inode) -> (input, path): one file matched by
    # two inputs (a /var/log/containers link into /var/log/pods) is read by the first only.
    tailed: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict)


class Source(Protocol):
    """An input: reads records and emits them in batches until stopped."""

    name: str

    async def run(self, emit: Emit) -> None:
        """Read and ``await emit(batch)``; after ``ctx.stopping``, drain, then return."""
        ...

    def unshipped(self) -> dict[str, int]:
        """Bytes not yet delivered, by stream (file path, spool): reported when a drain is
        cut short by the shutdown timeout."""
        ...

    async def aclose(self) -> None:
        """Release files, sockets and servers; called once after ``run`` returned."""
        ...


SourceFactory = Callable[[str, SourceContext], Source]
