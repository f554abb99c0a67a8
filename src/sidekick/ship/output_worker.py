"""One output's worker: it batches what is queued for its sink, sends, retries, dead-letters.

Each output of a ``Pipeline`` has one ``OutputWorker`` task. While it is busy sending, new
records queue up (as ``Part``s: the records of one source batch, a ``Unit``, that this output
received); when it is free it takes everything queued up to ``batch.max_records`` /
``batch.max_bytes`` and sends it as one batch, so batches are large under load and latency is
low when idle (``batch.timeout`` adds an optional wait for more records). A batch that fails
is retried with jittered exponential back-off, forever: ``TemporaryError`` (or any unexpected
error) retries the whole batch, ``SendResult.retry`` only those records, ``SendResult.rejected``
and ``PermanentError`` go to the dead-letter file. When every output holding a slice of a
unit has delivered it, the unit tells its pipeline, which acknowledges the source batch.

Left out: the in-flight bound, the parser, the transforms and the fan-out (``pipeline``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sidekick.core.backoff import Backoff
from sidekick.core.errors import PermanentError, TemporaryError
from sidekick.ship.acks import Ack
from sidekick.ship.deadletter import DeadLetter
from sidekick.ship.metrics import ShipMetrics
from sidekick.ship.records import Record, Sink

if TYPE_CHECKING:
    from sidekick.ship.pipeline import Pipeline, PipelineSettings

log = logging.getLogger("sidekick.ship.pipeline")


class Unit:
    """One source batch in flight; ``remaining`` counts undelivered slices over all outputs."""

    __slots__ = ("ack", "cost", "pipeline", "remaining")

    def __init__(self, pipeline: Pipeline, cost: int, ack: Ack | None, outputs: int) -> None:
        self.pipeline = pipeline
        self.cost = cost  # memory held (the in-flight limit counts these)
        self.ack = ack
        self.remaining = outputs

    def slice_done(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.pipeline._unit_done(self)


class Part:
    """The records of one unit that one output received (all of them, without transforms)."""

    __slots__ = ("cost", "records", "size", "unit")

    def __init__(self, unit: Unit, records: list[Record], size: int, cost: int) -> None:
        self.unit = unit
        self.records = records
        self.size = size  # bytes read (batches are cut by these)
        self.cost = cost  # memory held (the output's queue limit counts these)


Slice = tuple[Part, int, int]


class OutputWorker:
    """Sends queued records to one sink, in batches, retrying until each is delivered."""

    def __init__(
        self,
        sink: Sink,
        settings: PipelineSettings,
        metrics: ShipMetrics,
        dead_letter: DeadLetter,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.settings = settings
        self.dead_letter = dead_letter
        self._queue: deque[tuple[Part, int]] = deque()
        self._queued_records = 0
        self.queued_cost = 0  # memory of the queued records (the queue limit counts this)
        self.on_dequeue: Callable[[], None] | None = None
        self._wake = asyncio.Event()
        self._delivered = metrics.records_delivered.labels(self.name)
        self._failed = metrics.records_failed.labels(self.name)
        self._retried = metrics.records_retried.labels(self.name)
        self._dead = metrics.records_dead_lettered.labels(self.name)
        self._sent = metrics.batches_sent.labels(self.name)
        self.backoff = Backoff(settings.retry_initial, settings.retry_max)
        self.failing = False
        self._error: BaseException | None = None

    def put(self, part: Part) -> None:
        self._queue.append((part, 0))
        self._queued_records += len(part.records)
        self.queued_cost += part.cost
        self._wake.set()

    async def _take(self) -> list[Slice]:
        while not self._queue:
            if self._error is not None:
                raise self._error
            self._wake.clear()
            await self._wake.wait()
        s = self.settings
        if s.batch_timeout > 0 and self._queued_records < s.batch_max_records:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + s.batch_timeout
            while self._queued_records < s.batch_max_records:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break
        slices: list[Slice] = []
        count = 0
        nbytes = 0
        cost = 0
        queue = self._queue
        while queue and count < s.batch_max_records and nbytes < s.batch_max_bytes:
            part, lo = queue[0]
            hi = len(part.records)
            room = s.batch_max_records - count
            if hi - lo > room:
                # The rest of this source batch stays queued as one more slice.
                part.unit.remaining += 1
                queue[0] = (part, lo + room)
                hi = lo + room
            else:
                queue.popleft()
            slices.append((part, lo, hi))
            count += hi - lo
            total = len(part.records)
            nbytes += part.size * (hi - lo) // total if total else 0
            cost += part.cost * (hi - lo) // total if total else 0
        self._queued_records -= count
        self.queued_cost = max(0, self.queued_cost - cost) if queue else 0
        if self.on_dequeue is not None:
            self.on_dequeue()
        return slices

    async def run(self) -> None:
        # A sink may allow several batches in flight at once (``concurrency``, e.g. HTTP
        # outputs, whose server works while we encode the next batch); the ack trackers
        # keep checkpoints in order whatever order the batches finish in.
        limit = max(1, self.sink.concurrency)
        if limit == 1:
            while True:
                await self._send(await self._take())
        slots = asyncio.Semaphore(limit)
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None and self._error is None:
                self._error = task.exception()
                self._wake.set()  # a waiting _take raises it

        try:
            while True:
                # A free slot first: a batch taken off the queue only to wait for one would
                # hold its records outside the queue limit.
                await slots.acquire()
                try:
                    slices = await self._take()
                except BaseException:
                    slots.release()
                    raise
                if self._error is not None:
                    slots.release()
                    raise self._error
                task = asyncio.create_task(self._send(slices), name=f"send {self.name}")
                running.add(task)
                task.add_done_callback(finished)
        finally:
            for task in list(running):
                task.cancel()
            if running:
                await asyncio.wait(running)

    async def _send(self, slices: list[Slice]) -> None:
        if len(slices) == 1 and slices[0][1] == 0 and slices[0][2] == len(slices[0][0].records):
            records = slices[0][0].records
        else:
            records = []
            for part, lo, hi in slices:
                records.extend(part.records[lo:hi])
        await self.deliver(records)
        for part, _lo, _hi in slices:
            part.unit.slice_done()

    async def deliver(self, records: list[Record]) -> None:
        """Send until every record is delivered or dead-lettered."""
        pending = records
        while pending:
            self._sent.inc()
            try:
                result = await self.sink.send(pending)
            except TemporaryError as exc:
                await self._failed_attempt(pending, str(exc), exc.retry_after)
                continue
            except PermanentError as exc:
                self._to_dead_letter([(r, str(exc)) for r in pending])
                self._recovered()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A bug or an unforeseen error in a sink must not drop data: retry it.
                log.exception("Output %s failed unexpectedly; retrying.", self.name)
                await self._failed_attempt(pending, f"{type(exc).__name__}: {exc}", None)
                continue
            n_retry = len(result.retry)
            n_rejected = len(result.rejected)
            self._delivered.inc(len(pending) - n_retry - n_rejected)
            if n_rejected:
                self._to_dead_letter([(pending[i], reason) for i, reason in result.rejected])
            if not n_retry:
                self._recovered()
                return
            if n_retry < len(pending):
                # The sink took part of the batch: it works, so the rest waits the first
                # delay again rather than one that grew over attempts that made progress.
                self.backoff.reset()
            pending = [pending[i] for i in result.retry]
            await self._failed_attempt(pending, f"{n_retry} record(s) to retry", None)

    async def _failed_attempt(
        self, pending: Sequence[Record], reason: str, hint: float | None
    ) -> None:
        self._failed.inc(len(pending))
        delay = self.backoff.next_delay()
        if hint is not None:
            delay = max(delay, min(hint, self.settings.retry_max))
        if not self.failing:
            log.warning(
                "Output %s failed (%s); retrying %d record(s) in %.1fs and until it works.",
                self.name,
                reason,
                len(pending),
                delay,
            )
            self.failing = True
        else:
            log.debug("Output %s failed again (%s); next try in %.1fs.", self.name, reason, delay)
        await asyncio.sleep(delay)
        self._retried.inc(len(pending))

    def _recovered(self) -> None:
        if self.failing:
            log.info("Output %s delivers again.", self.name)
            self.failing = False
        self.backoff.reset()

    def _to_dead_letter(self, items: list[tuple[Record, str]]) -> None:
        # If the dead-letter file cannot be written the error propagates: the task dies,
        # /healthz fails and the records stay unacknowledged (they are re-read on restart).
        self.dead_letter.write(self.name, items)
        self._dead.inc(len(items))
