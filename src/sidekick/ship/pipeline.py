"""Sources -> parser -> transforms -> outputs, with bounded memory and at-least-once acks.

``Pipeline.emit`` is the ``emit`` every source awaits. It waits while ``max_inflight_bytes``
(the memory of records read but not yet delivered) are in flight, or while the records
waiting for an output hold ``max_queued_batches`` x ``batch_max_bytes`` of memory (that wait
*is* the backpressure: a tail reader stops reading, the log file on disk is the buffer;
counting memory rather than line bytes keeps parsed records, about twice as large, from
doubling the queue), runs the batch's parser (the one of the
input it came from, ``SourceBatch.parser``) over the whole batch once, and queues the batch
on every output. With transforms (``sidekick.ship.graph``), the batch then goes through its
input's ``Plan`` and each output queues the records that reached it; records dropped on the
way count as handled, and a batch no output received is acknowledged at once.

Each output has one worker task (``output_worker.OutputWorker``): it sends what is queued for
it in batches and retries until each record is delivered or dead-lettered. A source batch
counts as delivered once every output that received records of it has delivered (or
dead-lettered) them; only then is its ``Ack`` delivered and its bytes leave the in-flight
total. Each output's records count in that total (fan-out does not escape the bound).

Records are shared between outputs: sinks must not modify them (the graph copies records only
where a transform may change them).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sidekick.ship.deadletter import DeadLetter
from sidekick.ship.metrics import ShipMetrics
from sidekick.ship.output_worker import OutputWorker, Part, Unit
from sidekick.ship.records import FILE_ID, FILE_PATH, HOST_NAME, MESSAGE, Record, Sink
from sidekick.ship.sources.base import SourceBatch

if TYPE_CHECKING:
    from sidekick.ship.plan import Plan
    from sidekick.ship.tap import Taps

# Least memory one record is counted for beyond its line: the dict, its list slot, its offset.
RECORD_OVERHEAD = 512
# Fields whose value is one string shared by every record of a file.
_SHARED = frozenset((FILE_PATH, FILE_ID, HOST_NAME, MESSAGE))


def record_overhead(sample: Record) -> int:
    """Memory of one record like ``sample`` beyond its message bytes (a per-batch estimate).

    Measured on the first record after parsing, so parsed fields are counted too: the nginx
    parser roughly doubles a record's size. Values shared by a file's records are left out.
    """
    size = sys.getsizeof(sample) + 56  # the dict, the message's str header, the list slot
    for key, value in sample.items():
        if key not in _SHARED:
            size += sys.getsizeof(value)
    return max(RECORD_OVERHEAD, size)


@dataclass
class PipelineSettings:
    max_inflight_bytes: int = 64 * 1024 * 1024
    batch_max_bytes: int = 512 * 1024
    batch_max_records: int = 10000
    batch_timeout: float = 0.0
    retry_initial: float = 0.5
    retry_max: float = 30.0
    max_queued_batches: int = 2


class Pipeline:
    """The ``emit`` of every source, the in-flight bound, and the output workers."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        settings: PipelineSettings,
        metrics: ShipMetrics,
        dead_letter: DeadLetter,
        plans: dict[str, Plan] | None = None,
        previous: Pipeline | None = None,
        taps: Taps | None = None,
        output_names: Sequence[str] = (),
    ) -> None:
        if not sinks:
            raise ValueError("a pipeline needs at least one output")
        # By input name: what that input's batches go through; None (the shorthand) sends
        # every batch to every output as it is.
        self.plans = plans
        # Readers of the live tap (sidekick.ship.tap), and the output names they tap by.
        self.taps = taps
        self.output_names = list(output_names) or [s.name for s in sinks]
        # The pipeline this one replaced (a reload) while it still delivers what it holds:
        # its records count against the same in-flight limit.
        self.previous = previous
        self._successor: Pipeline | None = None
        self.settings = settings
        self.metrics = metrics
        self.outputs = [OutputWorker(s, settings, metrics, dead_letter) for s in sinks]
        self.inflight_bytes = 0
        self.inflight_units = 0
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._gauge = metrics.inflight_bytes
        self._waits = metrics.backpressure_waits
        metrics.inflight_limit_bytes.set(settings.max_inflight_bytes)
        # Reading also pauses while an output has this much memory of records waiting: more
        # queued work does not make it faster, and memory stays a few batches per output.
        self._queue_limit = settings.batch_max_bytes * settings.max_queued_batches
        for out in self.outputs:
            out.on_dequeue = self._update_room

    def emitter(self, input_name: str) -> Callable[[SourceBatch], Awaitable[None]]:
        """The ``emit`` for the source of input ``input_name``."""
        if self.plans is None:
            return self.emit

        async def emit(batch: SourceBatch) -> None:
            await self.emit_for(input_name, batch)

        return emit

    async def emit_for(self, input_name: str, batch: SourceBatch) -> None:
        """Queue a batch of input ``input_name`` (through its plan if the graph has one);
        waits while the in-flight limit is reached."""
        if not self._room.is_set():
            self._waits.inc()
            await self._room.wait()
        if self._successor is not None:
            await self._successor.emit_for(input_name, batch)
            return
        if self.plans is None:
            self._queue_all(batch)
            taps = self.taps
            if taps is not None and taps.active:
                taps.offer(input_name, batch.records)
                for name in self.output_names:
                    taps.offer(name, batch.records)
        else:
            self._queue_planned(input_name, batch)
        await asyncio.sleep(0)

    async def emit(self, batch: SourceBatch) -> None:
        """Queue ``batch`` on every output; waits while the in-flight limit is reached."""
        if not self._room.is_set():
            self._waits.inc()
            await self._room.wait()
        if self._successor is not None:
            await self._successor.emit(batch)
            return
        self._queue_all(batch)
        # Let the outputs run between two reads: without this a fast reader would fill the
        # whole in-flight allowance before the first batch is sent.
        await asyncio.sleep(0)

    def retire(self, successor: Pipeline) -> None:
        """Take no more batches: those still waiting for room go to ``successor``; what is
        in flight is delivered (``drained``) by this pipeline's outputs."""
        self._successor = successor
        self._room.set()

    def _queue_planned(self, input_name: str, batch: SourceBatch) -> None:
        records = batch.records
        if records and batch.parser is not None:
            batch.parser.parse(records)
        assert self.plans is not None
        routed = self.plans[input_name].run(records, self.taps) if records else []
        if not routed:
            # Every record was dropped (or went to no output): handled at once.
            if batch.ack is not None:
                batch.ack.delivered()
            return
        n_read = len(records)
        overhead = record_overhead(routed[0][1][0])
        # Each output's records count, whether or not they share their dicts: a list per
        # output, plus (over-counted where shared) the records it holds.
        held = sum(len(got) for _i, got in routed)
        cost = batch.size + overhead * held
        unit = Unit(self, cost, batch.ack, len(routed))
        self.inflight_bytes += cost
        self.inflight_units += 1
        self._idle.clear()
        outputs = self.outputs
        for index, got in routed:
            n = len(got)
            size = batch.size * n // n_read
            outputs[index].put(Part(unit, got, size, size + overhead * n))
        self._update_room()

    def _queue_all(self, batch: SourceBatch) -> None:
        records = batch.records
        if not records:
            if batch.ack is not None:
                batch.ack.delivered()
            return
        # Parsed here, after the wait, not by the source: a batch waiting for room holds only
        # its lines, and each batch is parsed exactly once, by its own input's parser.
        if batch.parser is not None:
            batch.parser.parse(records)
        # Count what the records cost in memory, not only the bytes they were read from.
        cost = batch.size + record_overhead(records[0]) * len(records)
        unit = Unit(self, cost, batch.ack, len(self.outputs))
        part = Part(unit, records, batch.size, cost)
        self.inflight_bytes += cost
        self.inflight_units += 1
        self._idle.clear()
        for out in self.outputs:
            out.put(part)
        self._update_room()

    def _update_room(self) -> None:
        if self._successor is not None:
            self._room.set()
            self._successor._update_room()
            return
        inflight = self.held_bytes()
        self._gauge.set(inflight)
        full = inflight >= self.settings.max_inflight_bytes or any(
            o.queued_cost >= self._queue_limit for o in self.outputs
        )
        if full:
            self._room.clear()
        else:
            self._room.set()

    def held_bytes(self) -> int:
        """Bytes in flight here and in the pipelines this one replaced that still deliver."""
        previous = self.previous
        if previous is None:
            return self.inflight_bytes
        held = previous.held_bytes()
        if held == 0 and previous.inflight_units == 0:
            self.previous = None  # it delivered everything: forget it
        return self.inflight_bytes + held

    def _unit_done(self, unit: Unit) -> None:
        self.inflight_bytes -= unit.cost
        self.inflight_units -= 1
        self._update_room()
        if self.inflight_units == 0:
            self._idle.set()
        if unit.ack is not None:
            unit.ack.delivered()

    async def drained(self) -> None:
        """Return once everything emitted so far has been delivered by every output (of this
        pipeline and of those it replaced)."""
        await self._idle.wait()
        if self.previous is not None:
            await self.previous.drained()
