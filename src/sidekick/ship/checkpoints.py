"""The state file: where each stream's delivered data ends, survived across restarts.

One JSON file, ``<state_dir>/ship-state.json``, versioned::

    {"version": 1, "streams": {"<source>/<stream key>": {... source-owned fields ...}}}

Sources own their entries (the tail source keeps path, device, inode, fingerprint,
truncation generation and committed offset); this module only keeps them in memory, marks
them dirty, and writes the file atomically: a temporary file, ``fsync``, ``rename`` over the
old one, ``fsync`` of the directory. Every byte is written (a short write is continued, a
failed one such as ``ENOSPC`` abandons the temporary file), so a crash leaves either the old or
the new file, never a torn one. A failed write keeps the old file, is logged once per minute
with a count and retried at the next flush; the shipper keeps running. Writes happen at most
once per ``interval`` (the pipeline's flusher task) and once more on shutdown, so a busy
shipper does not fsync per batch.

The previous good file is kept as ``ship-state.json.prev`` (a hard link taken just before each
rename). If the current file cannot be trusted (not JSON, another version, the wrong shape),
the previous one is loaded with a warning naming both; only when both are damaged does ship
refuse to start. Entries are checked per kind at load (a tailed file's entry, an input's start
marker, the ingest spool's position): a damaged entry is dropped with a warning, so its file
is read again from its start (a repeat, never a loss) instead of stalling or crashing a source.

A lock file (``flock``) keeps a second shipper from using the same state directory; the
kernel drops the lock when the process dies, so ``kill -9`` never leaves it stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from sidekick.core.errors import ConfigError, UserError
from sidekick.core.ratelog import RateLimitedLog

if TYPE_CHECKING:
    from sidekick.ship.metrics import ShipMetrics

log = logging.getLogger("sidekick.ship.checkpoints")

VERSION = 1
STATE_FILE = "ship-state.json"
PREV_SUFFIX = ".prev"
LOCK_FILE = "ship.lock"
ERROR_LOG_INTERVAL = 60.0  # seconds between two log lines about failing writes

# A tailed file's key is ``<input URL>/<device>:<inode>``; its start marker ``<input>#started``.
_TAIL_KEY = re.compile(r"/\d+:\d+\Z")
_SPOOL_KEY = "ingest/spool"
# Far above the tail source's fingerprint length: only a damaged entry asks for more.
_MAX_FP_LEN = 1 << 16


class _Damaged(Exception):
    """A state file that cannot be used; the message says why (a few words)."""


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# Per field of a tailed file's entry: (required, check, what a good value is).
_TAIL_FIELDS: dict[str, tuple[bool, Any, str]] = {
    "offset": (True, _count, "a whole number >= 0"),
    "fp": (True, lambda v: isinstance(v, str), "a string"),
    "fp_len": (True, lambda v: _count(v) and v <= _MAX_FP_LEN, "a byte count up to 65536"),
    "path": (False, lambda v: isinstance(v, str), "a string"),
    "dev": (False, _count, "a whole number >= 0"),
    "ino": (False, _count, "a whole number >= 0"),
    "gen": (False, _count, "a whole number >= 0"),
    "id": (False, lambda v: isinstance(v, str), "a string"),
}
_SPOOL_FIELDS: dict[str, tuple[bool, Any, str]] = {
    "segment": (True, _count, "a whole number >= 0"),
    "offset": (True, _count, "a whole number >= 0"),
}


def entry_problem(key: str, entry: Any) -> str | None:
    """Why ``entry`` cannot be used by the source that owns ``key``, or None if it can."""
    if not isinstance(entry, dict):
        return f"is {type(entry).__name__}, not an object"
    if key == _SPOOL_KEY:
        fields = _SPOOL_FIELDS
    elif _TAIL_KEY.search(key):
        fields = _TAIL_FIELDS
    else:
        return None  # a start marker, or an entry of a kind this version does not check
    for name, (required, check, good) in fields.items():
        if name not in entry:
            if required:
                return f"has no {name!r}"
            continue
        if not check(entry[name]):
            value = msgspec.json.encode(entry[name]).decode()[:40]
            return f"has {name} {value}, not {good}"
    return None


def _write_all(fd: int, body: bytes) -> None:
    """Write every byte of ``body``; a full disk raises (ENOSPC) instead of stopping short."""
    view = memoryview(body)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


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

    def __init__(self, state_dir: Path, metrics: ShipMetrics | None = None) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_FILE
        self.prev_path = state_dir / (STATE_FILE + PREV_SUFFIX)
        self.streams: dict[str, dict[str, Any]] = {}
        self.dirty = False
        self.writes = 0
        self.write_errors = 0
        self.metrics = metrics
        self._errors = RateLimitedLog(log, ERROR_LOG_INTERVAL)
        self._failing = 0  # failed writes since the last good one
        # Whether the file at ``path`` is one we trust enough to keep as the previous copy.
        self._current_good = False
        self._lock_fd: int | None = None
        self._changed = asyncio.Event()
        self._seq = 0
        self._written_seq = 0
        self._write_lock = threading.Lock()

    def lock(self) -> None:
        """Take the state directory's lock; UserError if another shipper holds it."""
        path = self.state_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise UserError(
                f"--state-dir {str(self.state_dir)!r}: cannot create {LOCK_FILE} "
                f"({exc.strerror}); give ship a writable state directory with free space"
            ) from None
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
        """Load the state file, or its previous copy if it is damaged; UserError if both are."""
        try:
            streams = self._read(self.path)
        except _Damaged as exc:
            streams = self._fall_back(str(exc))
        else:
            if streams is None:
                self._forget_stale_prev()
                return
            self._current_good = True
        self.streams = self._checked(streams)

    def _read(self, path: Path) -> dict[str, Any] | None:
        """The streams of the state file at ``path``; None if there is none; _Damaged."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _Damaged(f"is unreadable ({exc.strerror})") from None
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise _Damaged("is corrupt") from None
        if not isinstance(data, dict):
            raise _Damaged("is corrupt (not a JSON object)")
        if data.get("version") != VERSION:
            version = msgspec.json.encode(data.get("version")).decode()[:20]
            raise _Damaged(f"has version {version}, this sidekick understands {VERSION}")
        streams = data.get("streams")
        if not isinstance(streams, dict):
            raise _Damaged("is corrupt (no streams object)")
        return streams

    def _fall_back(self, problem: str) -> dict[str, Any]:
        try:
            streams = self._read(self.prev_path)
        except _Damaged as exc:
            raise UserError(
                f"state file {str(self.path)!r} {problem} and its previous copy "
                f"{str(self.prev_path)!r} {exc}; move both away to start over "
                "(files are then shipped again from their start)"
            ) from None
        if streams is None:
            fix = "use a matching sidekick or move it away" if "version" in problem else ""
            raise UserError(
                f"state file {str(self.path)!r} {problem} and there is no previous copy; "
                f"{fix or 'move it away to start over'} "
                "(files are then shipped again from their start)"
            )
        log.warning(
            "State file %s %s; resuming from the previous copy %s instead (lines delivered "
            "after it was written will be sent again).",
            self.path,
            problem,
            self.prev_path,
        )
        if self.metrics is not None:
            self.metrics.state_fallbacks.inc()
        # The damaged file is replaced at the next write without becoming the previous copy.
        self._current_good = False
        return streams

    def _forget_stale_prev(self) -> None:
        # No current file: a first start, or one moved away to start over. A previous copy
        # left from before must not come back if the new file is ever damaged.
        if self.prev_path.exists():
            log.info("No state file %s; removing the stale %s.", self.path, self.prev_path)
            with contextlib.suppress(OSError):
                self.prev_path.unlink()

    def _checked(self, streams: dict[str, Any]) -> dict[str, dict[str, Any]]:
        good: dict[str, dict[str, Any]] = {}
        dropped: list[str] = []
        for key, entry in streams.items():
            problem = entry_problem(key, entry)
            if problem is None:
                good[key] = entry
            else:
                dropped.append(f"{key} {problem}")
        if dropped:
            log.warning(
                "Dropped %d damaged entr%s of state file %s (%s); %s read again from the start.",
                len(dropped),
                "y" if len(dropped) == 1 else "ies",
                self.path,
                "; ".join(dropped[:3]) + ("; ..." if len(dropped) > 3 else ""),
                "its file is" if len(dropped) == 1 else "their files are",
            )
            if self.metrics is not None:
                self.metrics.state_entries_dropped.inc(len(dropped))
        return good

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
            try:
                _write_all(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            # A short or failed write never replaces the old file; free the space it took.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self._current_good:
            self._keep_previous()
        os.replace(tmp, self.path)
        self._current_good = True
        dfd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.writes += 1

    def _keep_previous(self) -> None:
        """Make the current file the previous copy, keeping it in place (a hard link)."""
        link = self.prev_path.with_name(self.prev_path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        try:
            os.link(self.path, link)
        except FileNotFoundError:
            return  # moved away while running: nothing to keep
        os.replace(link, self.prev_path)

    def _write_failed(self, exc: OSError, *, last: bool = False) -> None:
        # Keep running: the next attempt may succeed; data is still safe on the source
        # side, only a restart would re-send more.
        self.write_errors += 1
        self._failing += 1
        if self.metrics is not None:
            self.metrics.checkpoint_write_errors.inc()
        if last:
            # The shutdown's write has no retry: say so even if the rate limit has spoken.
            log.error(
                "Cannot write state file %s at shutdown (%s); the next start resumes from "
                "the previous one and sends the lines delivered since it was written again.",
                self.path,
                exc.strerror or exc,
            )
            return
        self._errors.error(
            "write",
            "Cannot write state file %s (%s); keeping the previous one and retrying.",
            self.path,
            exc.strerror or exc,
        )
        self._mark()  # the flusher tries again after its interval

    def _write_done(self) -> None:
        if self._failing:
            self._errors.forget("write")
            log.info(
                "State file %s written again after %d failed attempts.", self.path, self._failing
            )
            self._failing = 0

    async def save_in_thread(self) -> None:
        """Like ``save_if_dirty`` but the fsyncs run in a thread: a slow disk must not
        stall reading and sending (the snapshot is taken here, on the event loop)."""
        if not self.dirty:
            return
        seq, body = self._snapshot()
        try:
            await asyncio.to_thread(self._write, seq, body)
        except OSError as exc:
            self._write_failed(exc)
        else:
            self._write_done()

    def save_if_dirty(self) -> None:
        if self.dirty:
            try:
                self.save()
            except OSError as exc:
                self._write_failed(exc)
            else:
                self._write_done()

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
        # A snapshot the flusher took may still be on its way to disk in a worker thread (its
        # task was cancelled, the thread was not): write the state again here rather than
        # leave the last word to a thread that may not finish before the process ends.
        if self._seq > self._written_seq:
            self.dirty = True
        if self.dirty:
            try:
                self.save()
            except OSError as exc:
                self._write_failed(exc, last=True)
            else:
                self._write_done()
        self.unlock()
