"""Ships a spool's segments like a tailed file: in order, with acks, from the saved position.

``SpoolReader`` reads the committed bytes of the segments ``sidekick.ship.sources.spool``
writes, in large chunks, emits batches with acks, saves the position of the oldest live segment
in the checkpoint store, and deletes a sealed segment once every output has all of it. A
record's stable identity is (segment, byte offset), carried as ``log.file.id``/``log.offset``.
Records the writer kept in memory with their lines are shipped as they are instead of being
read and decoded again, with what a read of the file would give them (identity, static fields,
text messages); a reader that falls behind, and every restart, read the file. A line that is
not a JSON object (a damaged segment) is shipped marked with ``log.parse_error``, never dropped.

Left out: writing, sealing and recovering segments (``spool.py``), and more than one reader
per spool (the read position lives on each segment).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import setitem
from typing import Any

import msgspec

from sidekick.ship.acks import AckTracker
from sidekick.ship.records import FILE_ID, MESSAGE, OFFSET, PARSE_ERROR, Parser, Record
from sidekick.ship.sources.base import Emit, SourceBatch
from sidekick.ship.sources.spool import Segment, Spool

# The writing side's logger: one name for everything the spool reports.
log = logging.getLogger("sidekick.ship.spool")

# How much of a segment is read per step; a longer line makes one read grow to its newline.
READ_BYTES = 1024 * 1024

PositionLoad = Callable[[], tuple[int, int] | None]
PositionSave = Callable[[int, int], None]

_decode_list = msgspec.json.Decoder(list[Any]).decode


@dataclass
class SpoolReader:
    """Ships a spool's segments in order, with acks; deletes delivered sealed segments."""

    spool: Spool
    static_fields: dict[str, Any] = field(default_factory=dict)
    load_position: PositionLoad = lambda: None
    save_position: PositionSave = lambda seg, off: None
    read_bytes: int = READ_BYTES
    on_read: Callable[[int, int], None] = lambda records, size: None
    # Set when a parser will read ``message``: parsers take it to be a string, and one posted
    # record without it must not stop the pipeline (and, kept in the spool, stop it again at
    # every start). Such a record gets "" (absent, null) or the JSON text of its value.
    text_messages: bool = False
    # The input's parser, put on every batch for the pipeline to apply.
    parser: Parser | None = None

    def start(self) -> None:
        """Apply the saved position: older segments were delivered, the oldest resumes."""
        saved = self.load_position()
        if saved is None:
            return
        seg_id, offset = saved
        # New segment ids must stay above the saved one even if the clock went back.
        self.spool.last_id = max(self.spool.last_id, seg_id)
        for seg in list(self.spool.segments.values()):
            if seg.id < seg_id and seg.sealed:
                log.info(
                    "Spool segment %s was delivered before the restart; deleting it.", seg.path.name
                )
                self.spool.delete(seg)
            elif seg.id == seg_id:
                seg.read_pos = min(offset, seg.size)
                seg.tracker = self._tracker(seg, seg.read_pos)
                self._maybe_delete(seg)

    async def run(self, emit: Emit, stopping: asyncio.Event) -> None:
        """Ship segments as they fill until ``stopping`` is set."""
        while not stopping.is_set():
            seg = self._next()
            if seg is None:
                self.spool.changed.clear()
                self.sweep()
                if self._next() is not None:
                    continue
                waiter = asyncio.ensure_future(self.spool.changed.wait())
                stopper = asyncio.ensure_future(stopping.wait())
                try:
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopper.cancel()
                continue
            await self._emit_next(seg, emit)

    async def drain(self, emit: Emit) -> None:
        """Emit everything committed and not yet read (at shutdown, once writes stopped)."""
        while (seg := self._next()) is not None:
            await self._emit_next(seg, emit)

    async def _emit_next(self, seg: Segment, emit: Emit) -> None:
        start = seg.read_pos
        taken = self._from_memory(seg, start)
        if taken is not None:
            cut, records = taken
        else:
            # Read on the event loop: the bytes were just written and sit in the page cache,
            # and decoding in a worker thread would only fight the loop for the GIL.
            cut, records = self._load(seg, start, seg.size)
        # Bookkeeping stays on the event loop, where acks arrive.
        seg.read_pos = start + cut
        if seg.tracker is None:
            seg.tracker = self._tracker(seg, start)
        ack = seg.tracker.track(start + cut)
        self.on_read(len(records), cut)
        await emit(SourceBatch(records, cut, ack, self.parser))
        await asyncio.sleep(0)  # let requests in between reads of a large backlog

    def _next(self) -> Segment | None:
        for seg in self.spool.segments.values():
            if seg.read_pos < seg.size:
                return seg
            if not seg.sealed:
                return None  # the active segment is caught up; later ones do not exist yet
        return None

    def _tracker(self, seg: Segment, committed: int) -> AckTracker:
        def on_commit(position: int) -> None:
            self._maybe_delete(seg)
            self._save()

        return AckTracker(committed, on_commit=on_commit)

    def _maybe_delete(self, seg: Segment) -> None:
        t = seg.tracker
        if not seg.sealed or seg.read_pos < seg.size:
            return
        if seg.size == 0 or (t is not None and t.committed >= seg.size):
            if t is not None:
                t.close()
            self.spool.delete(seg)

    def sweep(self) -> None:
        """Delete segments that became fully delivered before they were sealed."""
        for seg in list(self.spool.segments.values()):
            self._maybe_delete(seg)
        self._save()

    def _save(self) -> None:
        for seg in self.spool.segments.values():
            committed = seg.tracker.committed if seg.tracker is not None else seg.read_pos
            self.save_position(seg.id, committed)
            return

    def _from_memory(self, seg: Segment, start: int) -> tuple[int, list[Record]] | None:
        """The records written at ``start`` and after it, while they are still in memory
        (None: read the file). What is returned is what decoding the same bytes gives, but
        for values JSON cannot hold (a NaN stays a NaN here, the file has null)."""
        memory = seg.memory
        while memory and memory[0].offset < start:  # read from the file meanwhile
            self.spool.take_written(seg)
        if not memory or memory[0].offset != start:
            return None
        static = self.static_fields
        file_id = f"spool-{seg.id}"
        out: list[Record] = []
        pos = start
        while memory and memory[0].offset == pos and pos - start < self.read_bytes:
            written = self.spool.take_written(seg)
            # NDJSON holds no raw "\r" or "\n" inside a line, so these are its lines.
            lines = written.payload.splitlines(keepends=True)
            records = written.records
            if len(lines) != len(records):  # not one line a record: read the file
                self.spool.forget_written(seg)
                break
            _add_static(records, static)
            # map stops at the shorter input: accumulate gives one offset more, the end.
            deque(map(setitem, records, repeat(FILE_ID), repeat(file_id)), maxlen=0)
            deque(
                map(setitem, records, repeat(OFFSET), accumulate(map(len, lines), initial=pos)),
                maxlen=0,
            )
            out += records
            pos += len(written.payload)
        if pos == start:
            return None
        if self.text_messages:
            _text_messages(out)
        return pos - start, out

    def _load(self, seg: Segment, start: int, end: int) -> tuple[int, list[Record]]:
        """Read and decode the next complete lines of ``seg``."""
        want = min(self.read_bytes, end - start)
        with open(seg.path, "rb") as f:
            while True:
                f.seek(start)
                chunk = f.read(want)
                cut = chunk.rfind(b"\n") + 1
                if cut > 0:
                    break
                if want >= end - start:
                    # Committed data always ends with a newline; this means the file changed
                    # under us (someone edited the spool).
                    raise RuntimeError(f"spool segment {seg.path} has no newline after {start}")
                want = min(want * 2, end - start)
        return cut, self._records(seg, start, chunk[:cut])

    def _records(self, seg: Segment, start: int, data: bytes) -> list[Record]:
        lines = data.split(b"\n")
        lines.pop()  # data ends with a newline
        try:
            decoded: list[Any] = _decode_list(b"[" + b",".join(lines) + b"]")
        except (msgspec.DecodeError, RecursionError):
            decoded = [_decode_line(line) for line in lines]
        file_id = f"spool-{seg.id}"
        static = self.static_fields
        out: list[Record]
        if set(map(type, decoded)) == {dict}:
            out = decoded
            _add_static(out, static)
        else:
            out = [
                obj
                if isinstance(obj, dict)
                # Only a damaged segment gets here; the line is kept, marked, never dropped.
                else {
                    MESSAGE: line.decode("utf-8", "replace"),
                    PARSE_ERROR: "spool line is not a JSON object",
                }
                for line, obj in zip(lines, decoded, strict=True)
            ]
            _add_static(out, static)
        # Each line's offset: the start plus the lines before it, each with its newline.
        offsets = accumulate(map((1).__add__, map(len, lines)), initial=start)
        deque(map(setitem, out, repeat(FILE_ID), repeat(file_id)), maxlen=0)
        deque(
            map(setitem, out, repeat(OFFSET), offsets), maxlen=0
        )  # the last offset, the end, unused
        if self.text_messages:
            _text_messages(out)
        return out


def _add_static(records: list[Record], static: dict[str, Any]) -> None:
    """Give each record the shipper's static fields it does not have (a record's own value
    wins), after its own fields: one pass in C per static field, no copy of the record."""
    for key, value in static.items():
        deque(map(dict.setdefault, records, repeat(key), repeat(value)), maxlen=0)


def _text_messages(records: list[Record]) -> None:
    for rec in records:
        msg = rec.get(MESSAGE)
        if type(msg) is not str:
            rec[MESSAGE] = "" if msg is None else msgspec.json.encode(msg).decode()


def _decode_line(line: bytes) -> Any:
    try:
        return msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return None
