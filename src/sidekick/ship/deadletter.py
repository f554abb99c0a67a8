"""The dead-letter file: records an output rejected for good, kept with the reason.

``<state_dir>/dead-letter.ndjson``, one JSON object per line::

    {"@timestamp": "...", "output": "http://...", "reason": "HTTP 400: ...", "record": {...}}

Nothing is dropped silently: a rejected record is appended here (flushed and fsynced before
its batch is acknowledged), counted in ``sidekick_ship_records_dead_lettered`` and logged.
The file is not rotated by ship; move it away to start a new one (it is reopened per write).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import msgspec

from sidekick.ship.files import write_all
from sidekick.ship.records import Record
from sidekick.ship.timefmt import now_rfc3339

log = logging.getLogger("sidekick.ship.deadletter")

DEAD_LETTER_FILE = "dead-letter.ndjson"


class DeadLetter:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DEAD_LETTER_FILE
        self._encoder = msgspec.json.Encoder()

    def write(self, output: str, items: Sequence[tuple[Record, str]]) -> None:
        """Append ``(record, reason)`` pairs; raises OSError if the disk refuses."""
        if not items:
            return
        ts = now_rfc3339()
        body = self._encoder.encode_lines(
            [
                {"@timestamp": ts, "output": output, "reason": reason, "record": rec}
                for rec, reason in items
            ]
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            write_all(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        log.warning(
            "Output %s rejected %d record(s) for good (first reason: %s); written to %s.",
            output,
            len(items),
            items[0][1],
            self.path,
        )
