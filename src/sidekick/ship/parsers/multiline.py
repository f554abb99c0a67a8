"""Joining continuation lines (a Python traceback, a Java stack trace) into one record.

One ``MultilineJoiner`` per stream (per tailed file). Lines for which the ``start`` pattern
matches (``re.search``; anchor it with ``^``) begin a new record; every other line is appended,
joined by ``"\\n"``, to the record in progress. With ``start=r"^\\d{4}-\\d{2}-\\d{2}"``::

    2024-01-02 03:04:05 ERROR failed          <- starts a record
    Traceback (most recent call last):        <- appended
      File "app.py", line 1, in <module>      <- appended
    ValueError: x                             <- appended
    2024-01-02 03:04:06 INFO next             <- emits the record above, starts the next

The API, used by the pipeline:

``feed(lines, offsets) -> (messages, offsets)``
    ``lines`` are complete lines without newlines and ``offsets`` their byte offsets in the
    file. Returns the records completed by these lines (joined text, offset of the record's
    first line). The last group stays pending: a later line may still continue it.
``pending_offset``
    The offset of the pending group's first line, or ``None``. A file's checkpoint must not
    pass it: after a restart the group is read again from its first line, so no line is lost.
``flush() -> (messages, offsets)``
    Emits the pending group (after a flush timeout with no new line, or at the end of a
    rotated file).

A group also ends when it reaches ``max_lines`` lines or ``max_bytes`` characters of text;
the lines after it start a new group, so a stream that never matches ``start`` cannot grow
memory without bound. Lines seen before any start line form a group of their own.

Left out: "continuation" patterns (a line that must join the previous one) and negation;
one start pattern covers tracebacks and stack traces whose lines do not start with a date.
"""

from __future__ import annotations

import re

from sidekick.ship.parsers.regex import compile_pattern


class MultilineJoiner:
    def __init__(
        self,
        start: str | re.Pattern[str],
        max_lines: int = 1000,
        max_bytes: int = 1 << 20,
        *,
        flag: str = "--multiline-start",
    ) -> None:
        self._start = (
            start if isinstance(start, re.Pattern) else compile_pattern(start, f"{flag} {start!r}")
        )
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._lines: list[str] = []
        self._size = 0
        self._offset: int | None = None
        self.flags: list[list[str] | None] | None = None  # it marks no record

    @property
    def pending_offset(self) -> int | None:
        return self._offset

    def feed(self, lines: list[str], offsets: list[int]) -> tuple[list[str], list[int]]:
        out: list[str] = []
        out_offsets: list[int] = []
        group = self._lines
        size = self._size
        start_offset = self._offset
        max_lines = self.max_lines
        max_bytes = self.max_bytes
        for line, offset, starts in zip(
            lines, offsets, map(self._start.search, lines), strict=True
        ):
            if group and (
                starts is not None or len(group) >= max_lines or size + len(line) > max_bytes
            ):
                out.append("\n".join(group))
                assert start_offset is not None
                out_offsets.append(start_offset)
                group = []
                size = 0
            if not group:
                start_offset = offset
            group.append(line)
            size += len(line) + 1
        self._lines = group
        self._size = size
        self._offset = start_offset if group else None
        return out, out_offsets

    def flush(self) -> tuple[list[str], list[int]]:
        if not self._lines:
            return [], []
        assert self._offset is not None
        out = (["\n".join(self._lines)], [self._offset])
        self._lines = []
        self._size = 0
        self._offset = None
        return out
