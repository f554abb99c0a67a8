"""A minimal inotify binding (ctypes) used only to wake the tail reader early.

Linux tells us when a watched directory gains, loses or renames an entry, or when a file in
it is written. The tail source treats events purely as hints: it still re-reads globs and
sizes on its own poll interval, so a lost event (queue overflow) or a system without inotify
(``Inotify.create`` returns ``None``) only costs latency, never data.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import struct
from collections.abc import Callable, Iterable

log = logging.getLogger("sidekick.ship.tail")

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

STRUCTURAL = (
    IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_Q_OVERFLOW
)
MASK = IN_MODIFY | IN_ATTRIB | STRUCTURAL
_HEADER = struct.Struct("iIII")


class Inotify:
    """Watches directories; calls ``on_event(structural)`` after each batch of events."""

    def __init__(self, libc: ctypes.CDLL, fd: int, on_event: Callable[[bool], None]) -> None:
        self._libc = libc
        self.fd = fd
        self._on_event = on_event
        self._watched: dict[str, int] = {}
        asyncio.get_running_loop().add_reader(fd, self._readable)

    @classmethod
    def create(cls, on_event: Callable[[bool], None]) -> Inotify | None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError):
            log.info("inotify is not available; polling for changes.")
            return None
        if fd < 0:
            log.info("inotify cannot be used (errno %d); polling for changes.", ctypes.get_errno())
            return None
        return cls(libc, fd, on_event)

    def watch_dirs(self, dirs: Iterable[str]) -> None:
        for d in dirs:
            if d in self._watched:
                continue
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(d), MASK)
            if wd >= 0:
                self._watched[d] = wd
            # A directory that does not exist yet is simply polled until it does.

    def _readable(self) -> None:
        structural = False
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                break
            if not buf:
                break
            pos = 0
            while pos + _HEADER.size <= len(buf):
                _wd, mask, _cookie, length = _HEADER.unpack_from(buf, pos)
                if mask & STRUCTURAL:
                    structural = True
                pos += _HEADER.size + length
        if structural:
            # Watches of deleted directories vanish; re-add them on the next scan.
            self._watched.clear()
        self._on_event(structural)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)
