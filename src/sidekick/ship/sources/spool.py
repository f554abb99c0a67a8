"""The durable spool behind every receiver: fsync'ed NDJSON segment files, read back in order.

A receiver (HTTP ingest, OTLP, forward, syslog; ``sidekick.ship.sources.receiver``) answers
or acknowledges only once the records are on disk, so the spool is what turns
"the shipper said yes" into "the records survive a crash". It is a directory of segment files
``<id>.ndjson``, one JSON object per line; ids grow with time, so name order is write order.
Appends from concurrent requests are group-committed: while one ``write`` + ``fsync`` runs in a
worker thread, the next requests queue up and share the following ``fsync``.

One segment at a time is *active* (being appended to); it is sealed (closed for writing) once
it reaches ``segment_bytes``. Every segment found at start-up is sealed: its torn tail, if a
crash cut a line short, is truncated to the last complete line (that line was never
acknowledged to its client, which will resend it).

``SpoolReader`` ships the segments like a tailed file: it reads committed bytes in large
chunks, emits batches with acks, saves the position of the oldest live segment in the
checkpoint store, and deletes a sealed segment once every output has all of it. A record's
stable identity is (segment, byte offset), carried as ``log.file.id``/``log.offset``.

Left out: compression of segments (the page cache and the deletion of delivered segments keep
the spool small), and replication (the spool is as durable as the volume it lives on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import setitem
from pathlib import Path
from typing import Any

import msgspec

from sidekick.ship.acks import AckTracker
from sidekick.ship.files import write_all
from sidekick.ship.records import FILE_ID, MESSAGE, OFFSET, PARSE_ERROR, Parser, Record
from sidekick.ship.sources.base import Emit, SourceBatch

log = logging.getLogger("sidekick.ship.spool")

SUFFIX = ".ndjson"
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
# How much of a segment is read per step; a longer line makes one read grow to its newline.
READ_BYTES = 1024 * 1024
# How much of what was just written is also kept as records for the reader (a reader that
# falls behind reads the rest from the file).
MEMORY_BYTES = 8 * 1024 * 1024


class SpoolFullError(Exception):
    """The spool holds ``max_bytes`` already; the client should retry later."""


class SpoolWriteError(Exception):
    """Writing or syncing a segment failed (disk full, I/O error); nothing was acknowledged."""


@dataclass(slots=True, eq=False)
class Segment:
    id: int
    path: Path
    size: int = 0  # committed (written and fsync'ed) bytes; always ends with a newline
    sealed: bool = False
    # Reader state.
    read_pos: int = 0
    tracker: AckTracker | None = None
    # Records just written, still in memory, by their payload's offset in the file: the
    # reader takes them from here instead of reading and decoding their bytes again.
    memory: deque[Written] = field(default_factory=deque)
    memory_bytes: int = 0


@dataclass(slots=True)
class Written:
    """A payload committed to a segment at ``offset``, and the records it encodes."""

    offset: int
    payload: bytes
    records: list[Record]


@dataclass(slots=True)
class _Pending:
    payload: bytes
    future: asyncio.Future[None]
    records: list[Record] | None = None


@dataclass
class SpoolStats:
    """Hooks for metrics; set by the ingest source, no-ops by default."""

    on_fsync: Callable[[float], None] = lambda seconds: None
    on_bytes: Callable[[int], None] = lambda total: None


def segment_name(seg_id: int) -> str:
    return f"{seg_id:020d}{SUFFIX}"


class Spool:
    """Segment files under ``directory``; ``append`` returns once the payload is durable."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        stats: SpoolStats | None = None,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.stats = stats or SpoolStats()
        self.segments: dict[int, Segment] = {}  # insertion order == id order
        self.changed = asyncio.Event()  # set when bytes are committed or a segment is sealed
        self.freed = asyncio.Event()  # set when a delivered segment is deleted
        self._bytes = 0  # committed bytes of all live segments
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._active: Segment | None = None
        self._fd: int | None = None
        self.last_id = 0
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    # -- start-up -------------------------------------------------------------------------

    def open(self) -> None:
        """Create the directory and take over the segments a previous run left (all sealed)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        found: list[tuple[int, Path]] = []
        for path in self.directory.iterdir():
            stem = path.name.removesuffix(SUFFIX)
            if path.name.endswith(SUFFIX) and stem.isdigit():
                found.append((int(stem), path))
            elif path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
        for seg_id, path in sorted(found):
            size = _recover(path)
            if size == 0:
                path.unlink(missing_ok=True)
                continue
            self.segments[seg_id] = Segment(seg_id, path, size=size, sealed=True)
            self._bytes += size
            self.last_id = max(self.last_id, seg_id)
        if self.segments:
            log.info(
                "Spool %s holds %d segment(s), %d bytes not yet delivered.",
                self.directory,
                len(self.segments),
                self._bytes,
            )
        self.stats.on_bytes(self._bytes)

    # -- writing --------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes on disk plus bytes waiting to be written."""
        return self._bytes + self._pending_bytes

    def has_room(self, size: int) -> bool:
        return self.used_bytes + size <= self.max_bytes

    async def wait_for_room(self, size: int) -> None:
        """Return once ``size`` more bytes fit (for receivers that hold their client back
        instead of refusing it); SpoolFullError at once if they never can."""
        if size > self.max_bytes:
            raise SpoolFullError(f"{size} bytes are more than the spool's {self.max_bytes}")
        while not self.has_room(size):
            self.freed.clear()
            # The wait is bounded: bytes pending for the group commit leave without an event.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self.freed.wait()

    async def append(self, payload: bytes, records: list[Record] | None = None) -> None:
        """Write ``payload`` (complete NDJSON lines) durably; raise if full or on I/O error.

        ``records``, if given, are what ``payload`` encodes, one per line and in order; the
        reader then ships them as they are instead of decoding the line again. The caller
        must not change them afterwards."""
        if self._closed:
            raise SpoolWriteError("the spool is closed (shutting down)")
        if not self.has_room(len(payload)):
            raise SpoolFullError(f"spool holds {self.used_bytes} of {self.max_bytes} bytes")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(payload, future, records))
        self._pending_bytes += len(payload)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="spool flush")
        # Shielded: a client hanging up must not cancel a write other requests share.
        await asyncio.shield(future)

    async def _flush(self) -> None:
        # Group commit: everything that queued while the previous fsync ran goes in one write.
        while self._pending:
            group, self._pending = self._pending, []
            data = b"".join(p.payload for p in group)
            self._pending_bytes -= len(data)
            seg = self._active
            if seg is None:
                # Registered here, on the event loop, so the reader never sees the segment
                # table change under it; the worker thread only does file I/O.
                seg_id = max(time.time_ns(), self.last_id + 1)
                self.last_id = seg_id
                seg = self._active = Segment(seg_id, self.directory / segment_name(seg_id))
                self.segments[seg_id] = seg
            try:
                full = await asyncio.to_thread(self._write_sync, seg, data)
            except Exception as exc:
                # Never leave a request waiting on a write that will not happen.
                log.error(
                    "Spool write failed: %s; answering 503 to %d request(s).",
                    exc,
                    len(group),
                    exc_info=not isinstance(exc, OSError),
                )
                self._seal(seg)
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                err = SpoolWriteError(f"spool write failed: {reason}")
                for p in group:
                    if not p.future.done():
                        p.future.set_exception(err)
                    # Mark the exception retrieved: a request may have gone away meanwhile.
                    p.future.exception()
                continue
            self._bytes += len(data)
            offset = seg.size
            for p in group:
                if p.records is not None and seg.memory_bytes < MEMORY_BYTES:
                    seg.memory.append(Written(offset, p.payload, p.records))
                    seg.memory_bytes += len(p.payload)
                offset += len(p.payload)
            seg.size += len(data)
            if full:
                self._seal(seg)
            self.stats.on_bytes(self._bytes)
            self.changed.set()
            for p in group:
                if not p.future.done():
                    p.future.set_result(None)

    def _write_sync(self, seg: Segment, data: bytes) -> bool:
        """Append and fsync in a worker thread; only the flusher calls it, one at a time.

        Returns whether the segment reached its size limit.
        """
        if self._fd is None:
            self._fd = os.open(
                seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640
            )
            _fsync_dir(self.directory)
        fd = self._fd
        start = time.perf_counter()
        try:
            write_all(fd, data)
            os.fsync(fd)
        except OSError:
            # Cut what this group wrote (it was not acknowledged); the flusher seals the
            # segment so the next group starts a fresh file.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, seg.size)
                os.fsync(fd)
            raise
        self.stats.on_fsync(time.perf_counter() - start)
        return seg.size + len(data) >= self.segment_bytes

    def _seal(self, seg: Segment) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._active = None
        seg.sealed = True
        self.changed.set()

    # -- reading side ---------------------------------------------------------------------

    def delete(self, seg: Segment) -> None:
        """Remove a sealed, fully delivered segment."""
        if self.segments.pop(seg.id, None) is None:
            return
        seg.path.unlink(missing_ok=True)
        self._bytes -= seg.size
        self.stats.on_bytes(self._bytes)
        self.freed.set()

    async def aclose(self) -> None:
        """Finish queued writes, then close the active segment (it is sealed on next start)."""
        self._closed = True
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self._active is not None:
            self._seal(self._active)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover(path: Path) -> int:
    """Truncate a segment to its last complete line; return its size."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        # Walk back in blocks to the last newline; a torn tail is at most one group long.
        end = size
        block = 64 * 1024
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                good = start + nl + 1
                break
            end = start
        else:
            good = 0
        if good != size:
            log.warning(
                "Spool segment %s ends with %d bytes of an unfinished write; cutting them "
                "(they were never acknowledged).",
                path.name,
                size - good,
            )
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())
        return good


# -- reader --------------------------------------------------------------------------------

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
            seg.memory_bytes -= len(memory.popleft().payload)
        if not memory or memory[0].offset != start:
            return None
        static = self.static_fields
        file_id = f"spool-{seg.id}"
        out: list[Record] = []
        pos = start
        while memory and memory[0].offset == pos and pos - start < self.read_bytes:
            written = memory.popleft()
            seg.memory_bytes -= len(written.payload)
            # NDJSON holds no raw "\r" or "\n" inside a line, so these are its lines.
            lines = written.payload.splitlines(keepends=True)
            records = written.records
            if len(lines) != len(records):  # not one line a record: read the file
                memory.clear()
                seg.memory_bytes = 0
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
