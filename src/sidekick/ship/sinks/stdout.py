"""``stdout:``: NDJSON on standard output, for debugging and for log collectors that read it.

One ``write`` per batch on the raw file descriptor (no Python text layer). A write error
(a closed pipe) is retried like any temporary failure: nothing is dropped. The write runs in
a thread: a pipe whose reader stalls blocks it until the reader comes back, and the event
loop (the admin server, signals, the drain's timeout) must go on meanwhile. A lock keeps a
write left running by a cancelled send from interleaving with the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading

from sidekick.core.errors import ConfigError, TemporaryError
from sidekick.core.redact import redact_url
from sidekick.ship.files import write_all
from sidekick.ship.records import DELIVERED, Record, SendResult
from sidekick.ship.sinks import OutputSpec
from sidekick.ship.sinks._encode import encode_ndjson
from sidekick.ship.sinks.base import BaseSink


class StdoutSink(BaseSink):
    def __init__(self, fd: int = 1) -> None:
        self.name = "stdout:"
        self.fd = fd
        self._lock = threading.Lock()

    def _write(self, data: bytes) -> None:
        with self._lock:
            write_all(self.fd, data)

    async def send(self, records: list[Record]) -> SendResult:
        try:
            await asyncio.to_thread(self._write, encode_ndjson(records))
        except BlockingIOError as exc:
            raise TemporaryError(f"stdout is not writable now: {exc}") from None
        except OSError as exc:
            raise TemporaryError(f"cannot write to stdout: {exc.strerror}") from None
        return DELIVERED

    async def aclose(self) -> None:
        return None


def create(spec: OutputSpec) -> StdoutSink:
    shown = redact_url(spec.url)
    if spec.url.partition(":")[2] not in ("", "//"):
        raise ConfigError(
            f"--output {shown!r}: stdout: takes no path or options; write --output stdout:"
        )
    if spec.options:
        names = ", ".join(sorted(map(str, spec.options)))
        raise ConfigError(
            f"output {shown!r}: unknown option(s) {names}; stdout: takes no options, remove them"
        )
    # A stdout shared with a parent that made it non-blocking would fail a write halfway
    # through a batch once the pipe is full, and the retry would tear a line and repeat the
    # rest; a blocking write waits for the reader instead, as on any ordinary stdout.
    with contextlib.suppress(OSError):
        os.set_blocking(1, True)
    return StdoutSink()
