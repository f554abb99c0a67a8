"""``file:///path``: append NDJSON batches to a local file.

Each batch is encoded in one call and appended with one ``write`` (``O_APPEND``), so a batch
is never interleaved with another writer's data. fsync policy: a batch counts as delivered
once the kernel has it (page cache), not once it is on the disk; the file is fsynced when the
output is closed (shutdown). Losing the machine itself can therefore lose the last few
seconds written to this output; a process crash loses nothing. The option ``fsync: true``
fsyncs after every batch instead (slower, survives power loss). A line torn by a crash in the
middle of a write is ended with a newline when the file is opened again; its records are
sent again after the restart, so only that one torn line is not valid JSON.

The file is reopened when it is moved away or deleted (an external rotation of our output),
checked at most once a second; a batch that finds the file deleted once written (no name
left) is written again to a new file, since it went with the old one.

A failed write (a full disk) is cut back off the file when nothing else was appended
meanwhile, so the retry starts on a clean line; the descriptor is closed and the file opened
again for the retry, and every step that can fail after an ``open`` closes what it opened, so
a failing disk costs no descriptors however long it lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import msgspec

from sidekick.core.config import field_path
from sidekick.core.errors import ConfigError, TemporaryError
from sidekick.ship.files import file_url_path, write_all
from sidekick.ship.records import DELIVERED, Record, SendResult
from sidekick.ship.sinks import OutputSpec
from sidekick.ship.sinks._encode import encode_ndjson
from sidekick.ship.sinks.base import BaseSink

THREAD_WRITE_BYTES = 256 * 1024  # smaller writes are cheaper than a thread hand-off


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of a ``file:`` output (config file)."""

    fsync: bool = False  # fsync after every batch (survives power loss; slower)


class FileSink(BaseSink):
    def __init__(self, path: Path, *, fsync: bool = False, url: str | None = None) -> None:
        self.path = path
        self.name = url or f"file://{path}"
        self.fsync = fsync
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._checked = 0.0

    def _open(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            st = os.fstat(fd)
            if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
                # A batch torn by a crash (kill -9 in the middle of a write): end that line
                # so the records written from now on stay one per line. The torn one is
                # re-sent.
                os.write(fd, b"\n")
        except OSError:
            os.close(fd)  # the newline fails on a full disk: keep no descriptor per attempt
            raise
        self._ident = (st.st_dev, st.st_ino)
        self._fd = fd
        self._checked = time.monotonic()
        return fd

    def _current_fd(self) -> int:
        fd = self._fd
        if fd is None:
            return self._open()
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            try:
                st = os.stat(self.path)
                moved = (st.st_dev, st.st_ino) != self._ident
            except FileNotFoundError:
                moved = True
            if moved:
                self._fd = None
                os.close(fd)
                return self._open()
        return fd

    async def send(self, records: list[Record]) -> SendResult:
        data = encode_ndjson(records)
        try:
            if not await self._write_batch(self._current_fd(), data):
                # Deleted before or while we wrote (the path is looked at once a second):
                # the batch is gone with that file, so it goes to a new one.
                self._close_held()
                await self._write_batch(self._current_fd(), data)
        except OSError as exc:
            # A full disk or a vanished directory may be fixed by someone: retry.
            self._close_held()
            raise TemporaryError(f"cannot write {self.path}: {exc.strerror}") from None
        return DELIVERED

    def _close_held(self) -> None:
        held, self._fd = self._fd, None
        if held is not None:
            with contextlib.suppress(OSError):
                os.close(held)

    async def _write_batch(self, fd: int, data: bytes) -> bool:
        """Append ``data``; False if the file had no name left afterwards (deleted)."""
        if len(data) >= THREAD_WRITE_BYTES:
            # The copy into the page cache runs without the GIL, so in a thread it
            # overlaps with reading and encoding the next batch on another core.
            return await asyncio.to_thread(self._write, fd, data)
        return self._write(fd, data)

    def _write(self, fd: int, data: bytes) -> bool:
        start = os.fstat(fd).st_size
        try:
            write_all(fd, data)
        except OSError:
            # Cut off the part that did get written, unless someone else appended since.
            with contextlib.suppress(OSError):
                end = os.fstat(fd).st_size
                if start < end <= start + len(data):
                    os.ftruncate(fd, start)
            raise
        if self.fsync:
            os.fsync(fd)
        return os.fstat(fd).st_nlink > 0

    async def aclose(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None


def create(spec: OutputSpec) -> FileSink:
    url = spec.url
    path = file_url_path(url, flag="--output", example="file:///path/to/out.ndjson")
    try:
        opts = msgspec.convert(spec.options, Options, strict=False)
    except msgspec.ValidationError as exc:
        where, problem = field_path(exc)
        if not where:  # "Object contains unknown field `name`"
            name = problem.rpartition(" ")[2].strip("`")
            raise ConfigError(
                f"--output {url!r}: unknown option {name!r}; file: outputs take only fsync"
            ) from None
        raise ConfigError(
            f"--output {url!r}: option {where!r}: {problem}; use true or false"
        ) from None
    p = Path(path)
    if not p.parent.is_dir():
        raise ConfigError(
            f"--output {url!r}: directory {str(p.parent)!r} does not exist; create it first"
        )
    return FileSink(p, fsync=opts.fsync, url=url)
