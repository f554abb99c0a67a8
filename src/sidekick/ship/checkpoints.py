"""The state file: where each stream's delivered data ends, survived across restarts.

One JSON file, ``<state_dir>/ship-state.json``, versioned::

    {"version": 1, "streams": {"<source>/<stream key>": {... source-owned fields ...}}}

Sources own their entries (the tail source keeps path, device, inode, fingerprint,
truncation generation and committed offset); this module only keeps them in memory, marks
them dirty, and writes the file atomically: a temporary file, ``fsync``, ``rename`` over the
old one, ``fsync`` of the directory. A crash leaves either the old or the new file, never a
torn one. Writes happen at most once per ``interval`` (the pipeline's flusher task) and once
more on shutdown, so a busy shipper does not fsync per batch.

A lock file (``flock``) keeps a second shipper from using the same state directory; the
kernel drops the lock when the process dies, so ``kill -9`` never leaves it stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Any

import msgspec

from sidekick.core.errors import ConfigError, UserError

log = logging.getLogger("sidekick.ship.checkpoints")

VERSION = 1
STATE_FILE = "ship-state.json"
LOCK_FILE = "ship.lock"


def prepare_state_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check it is a writable directory; ConfigError if not."""
    p = Path(path)
    if not str(path):
        raise ConfigError("--state-dir is required; give a directory where ship keeps its state")
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--state-dir {str(p)!r} is not a directory; choose a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--state-dir {str(p)!r} cannot be created ({exc.strerror}); "
            "choose a writable directory"
        ) from None
    if not p.is_dir():
        raise ConfigError(f"--state-dir {str(p)!r} is not a directory; choose a directory")
    if not os.access(p, os.R_OK | os.W_OK | os.X_OK):
        raise ConfigError(
            f"--state-dir {str(p)!r} is not readable and writable by this user; "
            "fix its permissions or choose another directory"
        )
    return p


class CheckpointStore:
    """In-memory stream entries, persisted atomically to the state file."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_FILE
        self.streams: dict[str, dict[str, Any]] = {}
        self.dirty = False
        self.writes = 0
        self._lock_fd: int | None = None
        self._changed = asyncio.Event()
        self._seq = 0
        self._written_seq = 0
        self._write_lock = threading.Lock()

    def lock(self) -> None:
        """Take the state directory's lock; UserError if another shipper holds it."""
        fd = os.open(self.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(
                f"--state-dir {str(self.state_dir)!r} is in use by another sidekick ship; "
                "give each shipper its own state directory"
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise UserError(
                f"state file {str(self.path)!r} is corrupt; move it away to start over "
                "(files are then shipped again from their start)"
            ) from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            raise UserError(
                f"state file {str(self.path)!r} has version {version!r}, this sidekick "
                f"understands {VERSION}; use a matching sidekick or move the file away"
            )
        streams = data.get("streams")
        if isinstance(streams, dict):
            self.streams = streams

    def get(self, key: str) -> dict[str, Any] | None:
        return self.streams.get(key)

    def put(self, key: str, entry: dict[str, Any], *, urgent: bool = True) -> None:
        """Set ``key``'s entry. ``urgent=False`` for changes that need no prompt write (a
        new file at offset 0): they are saved with the next urgent change or on close."""
        self.streams[key] = entry
        self._mark(urgent)

    def update(self, key: str, fields: dict[str, Any], *, urgent: bool = True) -> None:
        entry = self.streams.get(key)
        if entry is not None:
            entry.update(fields)
            self._mark(urgent)

    def drop(self, key: str) -> None:
        if self.streams.pop(key, None) is not None:
            self._mark()

    def _mark(self, urgent: bool = True) -> None:
        self.dirty = True
        if urgent:
            self._changed.set()

    def keys(self, prefix: str) -> list[str]:
        return [k for k in self.streams if k.startswith(prefix)]

    def save(self) -> None:
        """Write the state file now (tmp + fsync + rename + directory fsync)."""
        self._write(*self._snapshot())

    def _snapshot(self) -> tuple[int, bytes]:
        self.dirty = False
        self._seq += 1
        return self._seq, msgspec.json.encode({"version": VERSION, "streams": self.streams})

    def _write(self, seq: int, body: bytes) -> None:
        # A write from the flusher's thread may still run when the final save starts: the
        # lock orders them and an older snapshot never replaces a newer one.
        with self._write_lock:
            if seq <= self._written_seq:
                return
            self._write_file(body)
            self._written_seq = seq

    def _write_file(self, body: bytes) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.writes += 1

    async def save_in_thread(self) -> None:
        """Like ``save_if_dirty`` but the fsyncs run in a thread: a slow disk must not
        stall reading and sending (the snapshot is taken here, on the event loop)."""
        if not self.dirty:
            return
        seq, body = self._snapshot()
        try:
            await asyncio.to_thread(self._write, seq, body)
        except OSError as exc:
            self.dirty = True
            log.error("Cannot write state file %s: %s", self.path, exc)

    def save_if_dirty(self) -> None:
        if self.dirty:
            try:
                self.save()
            except OSError as exc:
                # Keep running: the next attempt may succeed; data is still safe on the
                # source side, only a restart would re-send more.
                self.dirty = True
                log.error("Cannot write state file %s: %s", self.path, exc)

    async def run_flusher(self, interval: float) -> None:
        """Write the state file soon after it changes, but at most once per ``interval``.

        The first change after a quiet spell is written at once, so a shipper killed shortly
        after a (re)start repeats little; under steady load it is one write per interval.
        """
        loop = asyncio.get_running_loop()
        last = -interval
        while True:
            await self._changed.wait()
            wait = last + interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._changed.clear()
            await self.save_in_thread()
            last = loop.time()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.save_if_dirty()
        self.unlock()
