"""The descriptors one file input may hold, and how it keeps to that number.

A node-level shipper may tail thousands of files; an input holds at most ``open_budget`` of
them open (``--max-open-files``, or half the process's open-file limit, shared evenly by the
file inputs). ``Descriptors`` keeps to it by parking (closing) the least recently grown files
that are fully read, and reopening a parked file by its path when it changes, only if the
same (device, inode) is still there. The last eighth of the process's limit (at least
``RESERVE_MIN``) is never taken for a tailed file: an input that fits ``max_open_files`` to the
limit exactly would otherwise leave the admin server unable to accept and the state file
unwritable.

Left out: noticing that a parked file changed (the tail source's scan compares its size and
mtime with what ``park`` remembered) and reading it (``_reader``).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from typing import Any

from sidekick.core.limits import open_files_limit
from sidekick.ship.sources._reader import TailFile

RESERVE_MIN = 16  # descriptors always left to the rest of the shipper (1/8 of the limit if more)


class Descriptors:
    """The descriptors the files of one input hold: at most ``max_open`` at a time.

    A file that needs one and finds none parks (closes) the least recently grown file that is
    fully read and not rotated (``room``); ``shed`` closes down to a lowered budget, busy files
    too if it must. A parked file keeps everything but its descriptor; ``reopen`` takes it
    back only at the same (device, inode) and, with ``accept``, where it may be read.
    """

    def __init__(
        self,
        files: dict[tuple[int, int], TailFile],
        max_open: int,
        accept: Callable[[int], bool],
        on_error: Callable[[str, str, OSError], None],
    ) -> None:
        self.files = files  # the source's table, shared
        self.max_open = max_open
        self.count = 0  # descriptors held
        self._accept = accept
        self._on_error = on_error
        self._victims: list[TailFile] | None = None  # park candidates, built once per scan
        limit = open_files_limit()
        self.reserve = max(RESERVE_MIN, limit // 8)
        self._ceiling = limit - self.reserve  # descriptor numbers from here on are not ours

    def open(self, path: str) -> int:
        """Open ``path`` for reading; OSError (EMFILE) when the process is out of descriptors
        or only the last ``reserve`` are free: those are left to the outputs, the state file,
        the admin server's connections and listing directories. Descriptors are numbered
        lowest free first, so a number that high means all below it are taken.

        ``O_NONBLOCK``: the scan saw a regular file, but another file can take its name before
        the open (a named pipe there would block a plain open, and with it the whole event
        loop, until some process opened it for writing). The callers compare the opened
        file's (device, inode) with what the scan saw, and a regular file's reads ignore
        the flag. ``O_NOCTTY``: a terminal opened so would never become the process's own."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        if fd >= self._ceiling:
            os.close(fd)
            raise OSError(
                errno.EMFILE,
                f"only the last {self.reserve} descriptors are free, kept for the rest of ship",
            )
        return fd

    def close(self, f: TailFile) -> None:
        """Close ``f``'s descriptor, if it holds one, for good (released or dropped)."""
        if f.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(f.fd)
            f.fd = -1
            self.count -= 1

    def shed(self) -> None:
        """Close files down to the budget now: idle ones first, then the least recently
        grown with data still to read (not rotated ones: those are found by descriptor only)."""
        self._victims = None
        while self.count > self.max_open and self._park_one():
            pass
        if self.count <= self.max_open:
            return
        busy = [f for f in self.files.values() if f.fd >= 0 and f.rotated_at is None]
        busy.sort(key=lambda f: f.last_growth)
        for f in busy:
            if self.count <= self.max_open:
                break
            self.park(f, force=True)
        self._victims = None

    def room(self) -> bool:
        """Whether a descriptor is free; parks the least recently grown idle file if not."""
        return self.count < self.max_open or self._park_one()

    def _park_one(self) -> bool:
        if self._victims is None:
            idle = [f for f in self.files.values() if f.fd >= 0 and f.at_end]
            idle.sort(key=lambda f: f.last_growth, reverse=True)  # pop() takes the oldest
            self._victims = idle
        while self._victims:
            f = self._victims.pop()
            if f.fd >= 0 and f.at_end and f.rotated_at is None and self.park(f):
                return True
        return False

    def park(self, f: TailFile, *, force: bool = False) -> bool:
        """Close idle ``f``, remembering its size and mtime; False if it grew meanwhile.

        ``force`` closes a file that still has unread data too; it is reopened as soon as
        there is room, since no ``stat`` matches the size -1 it is given.
        """
        try:
            st = os.fstat(f.fd)
        except OSError:
            return False
        if force:
            f.size, f.mtime = -1, 0
        elif st.st_size != f.read_pos:
            f.at_end = False  # it grew (or shrank) since the last read: read it first
            return False
        else:
            f.size, f.mtime = st.st_size, st.st_mtime_ns
        with contextlib.suppress(OSError):
            os.close(f.fd)
        f.fd = -1
        self.count -= 1
        return True

    def reopen(self, f: TailFile) -> bool:
        """Open parked ``f`` again at its path if the same (device, inode) is still there."""
        try:
            fd = self.open(f.path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self._on_error("open", f.path, exc)
            return False
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return False
        if (st.st_dev, st.st_ino) != f.ident or not self._accept(fd):
            os.close(fd)  # replaced meanwhile; the next scan sees what is there now
            return False
        f.fd = fd
        f.size = st.st_size
        f.at_end = False
        self.count += 1
        return True


def open_budget(cfg: Any) -> int:
    """Descriptors one file input may hold: ``max_open_files`` (or half the open-file limit)
    shared evenly by the file inputs."""
    total = int(cfg.max_open_files) or max(16, open_files_limit() // 2)
    inputs = [i if isinstance(i, str) else i.url for i in cfg.input_entries]
    files = sum(1 for url in inputs if url.lower().startswith("file:")) or 1
    return max(4, total // files)
