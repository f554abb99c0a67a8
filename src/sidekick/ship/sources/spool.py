"""The durable spool behind every receiver: fsync'ed NDJSON segment files, written in order.

A receiver (HTTP ingest, OTLP, forward, syslog; ``sidekick.ship.sources.receiver``) answers
or acknowledges only once the records are on disk, so the spool is what turns
"the shipper said yes" into "the records survive a crash". It is a directory of segment files
``<id>.ndjson``, one JSON object per line; ids grow with time, so name order is write order.
Appends from concurrent requests are group-committed: while one ``write`` + ``fsync`` runs in a
worker thread, the next requests queue up and share the following ``fsync``.

One segment at a time is *active* (being appended to); it is sealed (closed for writing) once
it reaches ``segment_bytes``. Every segment found at start-up is sealed: its torn tail, if a
crash cut a line short, is truncated to the last complete line (that line was never
acknowledged to its client, which will resend it). The records a payload encodes, when the
receiver hands them over, stay beside their segment for the reader, up to ``MEMORY_BYTES``
of lines in the whole spool: when the outputs are down and the spool fills, memory does not
grow with it.

Left out: reading the segments back (``sidekick.ship.sources.spool_reader``: batches, acks,
checkpoint positions; it decides when a segment is delivered, ``Spool.delete`` removes it),
compression of segments (the page cache and the deletion of delivered segments keep the
spool small), and replication (the spool is as durable as the volume it lives on).
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
from pathlib import Path

from sidekick.core.ratelog import RateLimitedLog
from sidekick.ship.acks import AckTracker
from sidekick.ship.files import write_all
from sidekick.ship.records import Record

log = logging.getLogger("sidekick.ship.spool")

SUFFIX = ".ndjson"
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
# How much of what was written, counted in lines' bytes over all segments, is also kept as
# records for the reader (a reader that falls behind reads the rest from the file).
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
        self.memory_bytes = 0  # bytes of the lines whose records are kept, all segments
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._active: Segment | None = None
        self._fd: int | None = None
        self.last_id = 0
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        # A full disk fails every write until room is made: one line a minute, with a count.
        self._rate = RateLimitedLog(log)

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
                self._failed(seg, group, exc)
                continue
            self._bytes += len(data)
            offset = seg.size
            for p in group:
                if p.records is not None and self.memory_bytes < MEMORY_BYTES:
                    seg.memory.append(Written(offset, p.payload, p.records))
                    seg.memory_bytes += len(p.payload)
                    self.memory_bytes += len(p.payload)
                offset += len(p.payload)
            seg.size += len(data)
            if full:
                self._seal(seg)
            self.stats.on_bytes(self._bytes)
            self.changed.set()
            for p in group:
                if not p.future.done():
                    p.future.set_result(None)

    def _failed(self, seg: Segment, group: list[_Pending], exc: Exception) -> None:
        """A group's write failed: answer each of its requests with the error (none may wait
        on a write that will not happen), and start the next group in a fresh segment."""
        if isinstance(exc, OSError):
            self._rate.error(
                ("write", exc.errno),
                "Spool write failed in %s: %s; %d write(s) refused, their clients told to retry.",
                self.directory,
                exc,
                len(group),
            )
        else:
            log.error("Spool write failed in %s: %s", self.directory, exc, exc_info=exc)
        if seg.size == 0:
            self._discard(seg)
        else:
            self._seal(seg)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        err = SpoolWriteError(f"spool write failed: {reason}")
        for p in group:
            if not p.future.done():
                p.future.set_exception(err)
            # Mark the exception retrieved: a request may have gone away meanwhile.
            p.future.exception()

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

    def _discard(self, seg: Segment) -> None:
        """Remove the active segment that holds nothing: on a full disk every refused write
        would otherwise leave an empty file behind, thousands a minute."""
        self._seal(seg)
        self.segments.pop(seg.id, None)
        with contextlib.suppress(OSError):
            seg.path.unlink(missing_ok=True)

    # -- reading side ---------------------------------------------------------------------

    def take_written(self, seg: Segment) -> Written:
        """The oldest payload ``seg`` keeps in memory, no longer kept."""
        written = seg.memory.popleft()
        seg.memory_bytes -= len(written.payload)
        self.memory_bytes -= len(written.payload)
        return written

    def forget_written(self, seg: Segment) -> None:
        """Drop the records ``seg`` keeps in memory (the reader will read its file)."""
        seg.memory.clear()
        self.memory_bytes -= seg.memory_bytes
        seg.memory_bytes = 0

    def delete(self, seg: Segment) -> None:
        """Remove a sealed, fully delivered segment."""
        if self.segments.pop(seg.id, None) is None:
            return
        self.forget_written(seg)
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
