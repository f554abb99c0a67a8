"""Per-file reading of the tail source: an open file's bytes to batches of records.

How it reads: each open file is read with ``pread`` in large chunks (``read_bytes``, 256 KiB),
the chunk is cut at its last newline, split with one ``bytes.split``, decoded with one
``decode`` and turned into records by one list comprehension sharing one timestamp string.
The partial last line waits in memory (``carry``) for its newline. A line longer than
``max_line_bytes`` is shipped in pieces, each marked ``log.flags: ["partial"]`` and the last
also ``"partial_end"``; pieces are cut at UTF-8 character boundaries, so memory stays bounded
by ``read_bytes + max_line_bytes`` per file. Invalid UTF-8 is replaced (U+FFFD); NUL bytes
pass through (JSON escapes them).

Joining: an input whose parser joins the container runtime's partial lines (``cri``,
``docker``) gets one of its joiners per file, and an input with ``multiline_start`` a
multi-line joiner; a batch's acknowledgement then covers only up to the first byte of a
pending group. With ``k8s_metadata`` the Kubernetes fields a file's path names are built into
its records like the static fields. A parser that splits a whole batch into field columns
(``cri``) has its records built from those columns at once.

Left out: deciding what a short read means (end of file, truncation, a compressed file): the
tail source does that with ``_identity`` and ``_discover``, then hands the bytes here.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from itertools import accumulate, count, repeat
from operator import add, setitem
from typing import Any

from sidekick.ship.acks import AckTracker
from sidekick.ship.config import size
from sidekick.ship.k8s_path import k8s_fields
from sidekick.ship.parsers._container import PartialJoiner
from sidekick.ship.records import (
    FILE_ID,
    FILE_PATH,
    FLAGS,
    MESSAGE,
    OFFSET,
    TIMESTAMP,
    Joiner,
    Record,
)
from sidekick.ship.sources._identity import FileIdentity
from sidekick.ship.sources.base import Emit, InputSpec, SourceBatch, SourceContext
from sidekick.ship.timefmt import rfc3339_ns

PARTIAL = ["partial"]
PARTIAL_END = ["partial", "partial_end"]
FOLLOW_WAIT = 1.0  # seconds a rotated file's successor waits for it to be read to its end
RESUME_LOOKBACK = 32 * 1024  # bytes before a saved position a joiner is shown at a restart

Piece = tuple[int, bytes, list[str] | None]  # (file offset, bytes, log.flags)


def utf8_cut(data: bytes | memoryview, limit: int) -> int:
    """A cut position <= ``limit`` that does not split a UTF-8 character (if possible)."""
    cut = limit
    while cut > limit - 4 and cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if cut > limit - 4 and cut > 0 else limit


def shown_path(path: str) -> str:
    """``path`` as text: a file name that is not UTF-8 reaches Python with its bytes as
    surrogates, which no JSON (records, the state file) or metrics text can hold; they become
    U+FFFD, as in messages."""
    if path.isascii():
        return path
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class TailFile(FileIdentity):
    """One generation of one tailed file; ``fd`` is -1 while it is parked (closed, idle).

    ``path`` opens the file; ``shown`` (``path`` as text) goes into records, checkpoint
    entries and metric labels.
    """

    def __init__(self, fd: int, path: str, dev: int, ino: int, key: str) -> None:
        super().__init__(dev, ino, key)
        self.fd = fd
        self._path = path
        self.shown = shown_path(path)
        self.read_pos = 0  # bytes read so far; ``read_pos - len(carry)`` is the next record
        self.carry = b""
        self.continuing = False  # the carry continues a long line already shipped in pieces
        self.tracker = AckTracker()
        self.rotated_at: float | None = None
        self.last_growth = time.monotonic()
        self.joiner: Joiner | None = None
        self.build: Builder | None = None  # with the path's Kubernetes fields, if any
        self.build_columns: ColumnBuilder | None = None  # for a parser that gives columns
        self.size = 0
        self.mtime = 0  # st_mtime_ns when parked; a change (or of size) reopens it
        self.at_end = False  # the latest read found nothing new
        # The file that had this one's name before a rotation, while its runtime-line joiner
        # may hold a line that goes on here (``LineReader.follow``); with when that was seen.
        self.predecessor: TailFile | None = None
        self.opened_at = time.monotonic()

    @property
    def path(self) -> str:
        return self._path

    @path.setter
    def path(self, path: str) -> None:
        self._path = path
        self.shown = shown_path(path)


class LineReader:
    """Turns the chunks read from the files of one input into records and emits them."""

    def __init__(self, spec: InputSpec, ctx: SourceContext) -> None:
        cfg = ctx.config
        m = ctx.metrics
        name = spec.url
        self.spec = spec
        self.parser = spec.parser
        self.static = dict(ctx.static_fields)
        self.read_bytes = size(cfg.read_bytes)
        self.max_line = size(cfg.max_line_bytes)
        self.multiline_start = spec.multiline_start
        self.k8s_metadata = spec.k8s_metadata
        self._lines = m.lines_read.labels(name)
        self._bytes = m.bytes_read.labels(name)
        self._split = m.lines_split.labels(name)
        self._build = record_builder(self.static)
        # Whether the parser joins the runtime's partial lines (``cri``, ``docker``).
        self.runtime_joiner = spec.parser is not None and isinstance(
            spec.parser.joiner(1), PartialJoiner
        )
        # A parser that splits a whole batch into field columns (``cri``) has its records
        # built with those fields at once, instead of being parsed in the pipeline later.
        self._column_names = spec.parser.column_names if spec.parser is not None else ()

    def prepare(self, f: TailFile) -> None:
        """Give a newly opened ``f`` its joiner and its record builders."""
        # A parser that joins the container runtime's partial lines gives each file a joiner.
        if self.parser is not None:
            f.joiner = self.parser.joiner(self.max_line)
        if f.joiner is None and self.multiline_start is not None:
            from sidekick.ship.parsers.multiline import MultilineJoiner

            f.joiner = MultilineJoiner(
                self.multiline_start,
                max_bytes=self.max_line,
                flag=f"--input {self.spec.given!r}: multiline_start",
            )
        static = self.static
        if self.k8s_metadata:
            fields = k8s_fields(f.shown)
            if fields:
                static = {**static, **fields}
                f.build = _with_static(static)
        if self._column_names:
            f.build_columns = column_builder(static, self._column_names)

    def resume(self, f: TailFile, offset: int) -> None:
        """``f`` (prepared) is read again from its saved ``offset``: show its runtime-line
        joiner the lines before it, so the rest of a line shipped in part before the stop is
        marked ``partial_end`` as it would have been without the restart."""
        joiner = f.joiner
        if offset <= 0 or not isinstance(joiner, PartialJoiner):
            return
        start = max(0, offset - RESUME_LOOKBACK)
        lines = os.pread(f.fd, offset - start, start).split(b"\n")
        lines.pop()  # empty, or a line cut by the position (a long line shipped in pieces)
        if start and lines:
            del lines[0]  # cut by the window
        joiner.resume_after([x.decode("utf-8", "replace") for x in lines if x])

    def waits_for_predecessor(self, f: TailFile) -> bool:
        """Whether ``f`` should not be read yet: the file it replaced (rotated) still has data
        to read, where a line cut at the rotation may end. After ``FOLLOW_WAIT`` it is read
        anyway, and a line cut at that rotation is not followed (its end is not marked)."""
        old = f.predecessor
        if old is None or old.fd < 0 or old.at_end:
            return False
        if time.monotonic() - f.opened_at < FOLLOW_WAIT:
            return True
        f.predecessor = None
        return False

    async def follow(self, f: TailFile, emit: Emit) -> None:
        """``f`` took the name of its predecessor, now read to its end: the runtime lines it
        left cut (shipped in part, or pending: shipped now, marked partial) end in ``f``."""
        old, f.predecessor = f.predecessor, None
        if old is None or not isinstance(f.joiner, PartialJoiner):
            return
        if not isinstance(old.joiner, PartialJoiner):
            return
        await self.flush_joiner(old, emit)
        f.joiner.follow(old.joiner)

    def read(self, f: TailFile) -> bytes:
        """The next chunk of open ``f`` (empty at its end); OSError if it cannot be read."""
        return os.pread(f.fd, self.read_bytes, f.read_pos)

    async def take(self, f: TailFile, data: bytes, emit: Emit) -> None:
        """``data`` was read at ``f.read_pos``: emit its complete lines, keep the rest."""
        n = len(data)
        f.at_end = False
        f.read_pos += n
        f.last_growth = time.monotonic()
        self._bytes.inc(n)
        if f.carry:
            data = f.carry + data
            f.carry = b""
        base = f.read_pos - len(data)  # file offset of data[0]
        cut = data.rfind(b"\n")
        if cut < 0:
            f.carry = data
        else:
            complete = data[:cut]
            f.carry = data[cut + 1 :]
            end = base + cut + 1
            if f.continuing:
                await self._emit_slow(f, emit, complete, base, end)
            else:
                await self._emit_fast(f, emit, complete, base, end)
        if len(f.carry) > self.max_line:
            await self._emit_carry_pieces(f, emit)

    async def ship_carry(self, f: TailFile, emit: Emit, flags: list[str] | None) -> None:
        """Ship the line ``f`` holds without its newline as it is, marked with ``flags``."""
        data, f.carry = f.carry, b""
        base = f.read_pos - len(data)
        await self.emit_pieces(f, emit, [(base, data, flags)], f.read_pos)

    async def _emit_fast(
        self, f: TailFile, emit: Emit, complete: bytes, base: int, end: int
    ) -> None:
        messages = complete.decode("utf-8", "replace").split("\n")
        # Offsets need byte lengths; for ASCII text (the common case) they are the lengths
        # of the decoded lines, which saves splitting the bytes a second time.
        if complete.isascii():
            lengths = list(map(len, messages))
        else:
            lengths = list(map(len, complete.split(b"\n")))
        if len(complete) > self.max_line and max(lengths) > self.max_line:
            # Longer than max_line_bytes: the tail cuts such lines itself, unless the file's
            # joiner takes them all (runtime lines, which it cuts keeping their time and
            # stream); cutting here would also take every line of the chunk past the joiner.
            joiner = f.joiner
            limit = self.max_line
            if not isinstance(joiner, PartialJoiner) or not all(
                joiner.takes(m) for m, n in zip(messages, lengths, strict=True) if n > limit
            ):
                await self._emit_slow(f, emit, complete, base, end)
                return
        # Start of line i: base + (lengths of the lines before it) + i newlines; all in C.
        offsets = list(map(add, accumulate(lengths, initial=base), count()))
        offsets.pop()
        flags = None
        if f.joiner is not None:
            messages, offsets = f.joiner.feed(messages, offsets)
            flags = f.joiner.flags
            pending = f.joiner.pending_offset
            if pending is not None:
                end = pending
        await self._emit_records(f, emit, messages, offsets, end, len(complete) + 1, flags)

    async def _emit_records(
        self,
        f: TailFile,
        emit: Emit,
        messages: list[str],
        offsets: list[int],
        end: int,
        nbytes: int,
        flags: list[list[str] | None] | None = None,
    ) -> None:
        parser = self.parser
        columns = None
        if parser is not None and f.build_columns is not None:
            columns = parser.columns(messages)
        if columns is not None and f.build_columns is not None:
            records = f.build_columns(f.shown, f.file_id, offsets, *columns)
            parser = None  # parsed already
        else:
            ts = rfc3339_ns(time.time_ns())
            records = (f.build or self._build)(ts, f.shown, f.file_id, messages, offsets)
        if flags is not None:
            for rec, fl in zip(records, flags, strict=True):
                if fl is not None:
                    rec[FLAGS] = list(fl)
        self._lines.inc(len(records))
        await emit(SourceBatch(records, nbytes, f.tracker.track(end), parser))

    async def _emit_slow(
        self, f: TailFile, emit: Emit, complete: bytes, base: int, end: int
    ) -> None:
        """Complete lines of which some are longer than ``max_line_bytes`` (or continue one)."""
        pieces: list[Piece] = []
        o = base
        for line in complete.split(b"\n"):
            n = len(line)
            if f.continuing or n > self.max_line:
                if not f.continuing:
                    self._split.inc()
                pieces.extend(self._cut(line, o, last=True))
                f.continuing = False
            else:
                pieces.append((o, line, None))
            o += n + 1
        await self.emit_pieces(f, emit, pieces, end)

    async def _emit_carry_pieces(self, f: TailFile, emit: Emit) -> None:
        """The carry holds more than ``max_line_bytes`` without a newline: ship it in pieces."""
        if not f.continuing:
            self._split.inc()
        data = f.carry
        base = f.read_pos - len(data)
        pieces: list[Piece] = []
        pos = 0
        while len(data) - pos > self.max_line:
            cut = utf8_cut(memoryview(data)[pos:], self.max_line)
            pieces.append((base + pos, data[pos : pos + cut], PARTIAL))
            pos += cut
        f.carry = data[pos:]
        f.continuing = True
        await self.emit_pieces(f, emit, pieces, base + pos)

    def _cut(self, line: bytes, offset: int, *, last: bool) -> list[Piece]:
        out: list[Piece] = []
        pos = 0
        view = memoryview(line)
        while len(line) - pos > self.max_line:
            cut = utf8_cut(view[pos:], self.max_line)
            out.append((offset + pos, line[pos : pos + cut], PARTIAL))
            pos += cut
        out.append((offset + pos, line[pos:], PARTIAL_END if last else PARTIAL))
        return out

    async def emit_pieces(self, f: TailFile, emit: Emit, pieces: list[Piece], end: int) -> None:
        messages = [p[1].decode("utf-8", "replace") for p in pieces]
        offsets = [p[0] for p in pieces]
        flags = [p[2] for p in pieces]
        nbytes = sum(len(p[1]) for p in pieces)
        if f.joiner is not None:
            # Pieces of a long line are records of their own; first finish a pending group.
            done, done_offsets = f.joiner.flush()
            if done:
                messages = done + messages
                offsets = done_offsets + offsets
                done_flags = f.joiner.flags or [None] * len(done)
                flags = done_flags + flags
        await self._emit_records(f, emit, messages, offsets, end, nbytes, flags)

    async def flush_joiner(self, f: TailFile, emit: Emit) -> None:
        if f.joiner is None:
            return
        messages, offsets = f.joiner.flush()
        if messages:
            end = f.read_pos - len(f.carry)
            flags = f.joiner.flags
            await self._emit_records(
                f, emit, messages, offsets, end, sum(map(len, messages)), flags
            )


Builder = Callable[[str, str, str, list[str], list[int]], list[Record]]


def record_builder(static: dict[str, Any]) -> Builder:
    """A function that builds a chunk's records with one list comprehension.

    The static fields are written into the comprehension's dict display as constant keys
    (names bound to their values), which makes building a record about a third cheaper than
    merging them with ``**static`` per record. Keys are inserted with ``repr``, so any field
    name is safe; later keys win, as with ``{**record, **static}``.
    """
    names = {f"_s{i}": v for i, v in enumerate(static.values())}
    extra = "".join(f", {k!r}: _s{i}" for i, k in enumerate(static))
    source = (
        "lambda ts, path, fid, messages, offsets: ["
        f"{{{TIMESTAMP!r}: ts, {MESSAGE!r}: m, {FILE_PATH!r}: path, {FILE_ID!r}: fid, "
        f"{OFFSET!r}: o{extra}}} for m, o in zip(messages, offsets)]"
    )
    builder: Builder = eval(source, {"__builtins__": {"zip": zip}, **names})
    return builder


ColumnBuilder = Callable[..., list[Record]]


def column_builder(static: dict[str, Any], names: tuple[str, ...]) -> ColumnBuilder:
    """Like ``record_builder``, for a batch whose parser gave one column per field in
    ``names`` (``@timestamp`` and ``message`` among them): ``(path, fid, offsets, *columns)``.

    Each record is a copy of one template dict (a copy of a dict is a block copy in C, much
    cheaper than building a dict of a dozen keys), then every column is stored with one
    ``map(setitem, ...)`` run in C. Static fields win over columns of the same name, as they
    win over the fields of ``record_builder``.
    """
    template: Record = {n: None for n in names}
    template.update({FILE_PATH: "", FILE_ID: "", OFFSET: 0})
    template.update(static)
    stored = [i for i, n in enumerate(names) if n not in static]

    def build(path: str, fid: str, offsets: list[int], *columns: Iterable[Any]) -> list[Record]:
        first = dict(template)
        first[FILE_PATH] = path
        first[FILE_ID] = fid
        records = list(map(dict.copy, repeat(first, len(offsets))))
        for i in stored:
            deque(map(setitem, records, repeat(names[i]), columns[i]), maxlen=0)
        deque(map(setitem, records, repeat(OFFSET), offsets), maxlen=0)
        return records

    return build


def _with_static(static: dict[str, Any]) -> Builder:
    """A ``Builder`` for many static fields (a file's Kubernetes fields): template copies."""
    build = column_builder(static, (TIMESTAMP, MESSAGE))

    def builder(
        ts: str, path: str, fid: str, messages: list[str], offsets: list[int]
    ) -> list[Record]:
        return build(path, fid, offsets, repeat(ts), messages)

    return builder


def last_line_end(fd: int, size: int) -> int:
    """The offset just after the last newline before ``size`` (0 if none in the last 1 MiB)."""
    start = max(0, size - (1 << 20))
    tail = os.pread(fd, size - start, start)
    cut = tail.rfind(b"\n")
    return start + cut + 1 if cut >= 0 else start if start else 0
