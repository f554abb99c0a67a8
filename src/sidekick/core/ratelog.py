"""Log a repeated condition once per interval, with a count of how often it happened.

An error that repeats for every file, every write or every scan (a full disk, a descriptor
limit) must not flood the log: the first occurrence of a key is logged at once, later ones
within ``interval`` seconds are only counted, and the next one logged after the interval says
how many were held back. ``flush()`` reports counts still held back once their interval has
passed, so the last burst of an error that then stops is not lost from the log; call it from
a loop that runs anyway (a scan, a retry).

Keys are chosen by the caller: one key per kind of error (``"emfile"``) keeps the log to one
line per interval however many files are affected; one key per path keeps paths apart. Tracking
state is one small entry per key that has been seen; callers with unbounded keys should
``forget`` those that no longer matter.

Left out: rate limiting by log level or logger, and any handler-level filtering (the caller
knows which messages are the same condition; a handler would have to guess).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    logged_at: float
    held: int = 0  # occurrences since ``logged_at`` that were counted, not logged
    last_message: str = ""
    level: int = logging.WARNING


class RateLimitedLog:
    """Logs each key at most once per ``interval`` seconds, counting what it holds back."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._entries: dict[Hashable, _Entry] = {}

    def log(self, key: Hashable, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval`` ago.

        Returns whether a line was written. A held-back occurrence is counted, and its
        message kept, so the next line for ``key`` can say how many there were.
        """
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and now - entry.logged_at < self.interval:
            entry.held += 1
            entry.last_message = msg % args if args else msg
            entry.level = level
            return False
        text = msg % args if args else msg
        held = entry.held if entry is not None else 0
        if held:
            text += self._suffix(held, now - entry.logged_at if entry is not None else 0.0)
        self.logger.log(level, "%s", text)
        self._entries[key] = _Entry(logged_at=now)
        return True

    def warning(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(key, logging.WARNING, msg, *args)

    def error(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(key, logging.ERROR, msg, *args)

    def flush(self) -> int:
        """Log the held-back count of each key whose interval has passed; lines written."""
        now = self._clock()
        written = 0
        for entry in self._entries.values():
            if entry.held and now - entry.logged_at >= self.interval:
                text = entry.last_message + self._suffix(entry.held, now - entry.logged_at)
                self.logger.log(entry.level, "%s", text)
                entry.logged_at = now
                entry.held = 0
                written += 1
        return written

    def held(self, key: Hashable) -> int:
        """Occurrences of ``key`` counted but not yet logged."""
        entry = self._entries.get(key)
        return entry.held if entry is not None else 0

    def forget(self, key: Hashable) -> None:
        """Drop ``key`` (its held-back count is logged first, if any); the next is logged."""
        entry = self._entries.pop(key, None)
        if entry is not None and entry.held:
            since = self._clock() - entry.logged_at
            self.logger.log(entry.level, "%s", entry.last_message + self._suffix(entry.held, since))

    @staticmethod
    def _suffix(held: int, since: float) -> str:
        times = "time" if held == 1 else "times"
        return f" (happened {held} more {times} in the last {since:.0f}s)"
