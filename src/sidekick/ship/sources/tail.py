"""``file:///var/log/app/*.log``: tail files matching globs, losing no line.

This module is the source: the run loop, the scan of the globs, reading and the drain. It
builds on ``_rotation`` (rotated, parked-and-moved and truncated files, the periodic checks,
releasing finished files), which builds on ``_files`` (the table of files, opening one at its
position, dropping it, checkpoint entries, errors on a path). Beside them: ``_discover``
(which files the globs match, compressed files, finding a rotated file by identity),
``_identity`` (which file a file is: device, inode, fingerprint, generation; checkpoint keys
and entries) and ``_reader`` (an open file's bytes to records: chunks, lines, the partial
last line, long lines in pieces, joiners, record builders, the descriptor budget).

Identity: a file is (device, inode) plus a fingerprint (hash) of its first bytes, checked
when a saved position is resumed after a restart, so a reused inode or a new file at the old
path starts at 0 instead of at a stranger's offset. ``log.file.id`` is
``<dev>-<ino>-<fingerprint>-<generation>``, saved in the state file, so the same bytes keep
the same id across restarts and a copytruncate (a new generation) gets a new one.

Rotation: the file is held open by descriptor, so a rename (even two) does not matter; when
its inode is no longer at any matching path it is read to the end and released once it has
not grown for ``rotate_wait``. After a restart, a saved file no longer matched by the globs
is looked up by inode in the globs' directories and finished the same way. Copytruncate: a
size below the read position, or first bytes that no longer match the fingerprint (checked
every ``poll_interval``; this catches a file that grew back past the old position before we
looked), means the file was truncated; reading restarts at 0 as a new generation
(``sidekick_ship_truncations``). Lines read from the new content before the check are sent
again under the new generation: duplicates, never gaps.

Discovery: globs are re-evaluated every ``poll_interval`` and whenever inotify reports a
created, moved or deleted entry in a watched directory; inotify (through ctypes) also wakes
the reader when a file grows. Without inotify the reader checks idle files every 100 ms.

Checkpoints: each file has an ``AckTracker``; its committed position (the end of the
delivered prefix, never past a pending multi-line group) is saved under
``<input>/<dev>:<ino>``. New files start at 0; files present at the very first start begin
at their end with ``start_at: end``. The lag gauge (size minus committed position) is set by
the periodic check, and by a task of its own when the read loop has not run that check for a
second (it waits in ``emit`` while an output is down), so a dead output shows as growing lag.

Finding files: ``_discover.Finder`` expands the globs. A symlink (the match itself, or a
directory below the glob's base directory) that resolves outside the base directory is not
followed unless ``follow_symlinks`` is set: refused once per path, logged and counted
(``sidekick_ship_symlinks_refused``). A directory that cannot be listed or a file that cannot
be ``stat``-ed for any reason but absence (too many open files, no permission) is never taken
for rotated or deleted: the files below it stay as they were until a later scan sees them.
Such errors are counted (``sidekick_ship_tail_errors``) and logged once a minute per kind.

One file, one input: the file inputs share a table of the files they tail
(``SourceContext.tailed``). A file another input already tails (a ``/var/log/containers`` link
into ``/var/log/pods`` followed by a second input, or overlapping globs) is not opened again:
logged once, counted (``sidekick_ship_shared_files_skipped``) and left while it keeps its
(device, inode).

Descriptors (``_descriptors.Descriptors``): at most ``max_open_files`` files (shared by the file
inputs; by default half the open-file limit) are held open. A new file that finds no free
descriptor closes ("parks") the least recently grown file that is fully read and not rotated;
a parked file keeps its position, carry and checkpoint and is no rotation. The scan's ``stat`` shows when it changes
(size or mtime); it is then reopened by path and taken only with the same (device, inode),
and the poll check compares its first bytes with the fingerprint as for any open file. A
parked file no longer at a matching path is looked up by inode in the watched directories
(rotated: reopened and read to its end) or, if gone, released. New files that find every
descriptor busy with unread data wait for a later scan.

Container logs: an input whose parser joins partial lines (``cri``, ``docker``) gets one of
its joiners per file in place of a multi-line joiner, with the same checkpoint rule (never
past the first byte of a pending group). With ``k8s_metadata`` (on by default with those
parsers) the Kubernetes fields the file's path names (``sidekick.ship.k8s_path``) are
computed when the file is opened and built into its records like the static fields. A new
file at the name of a tailed one (the kubelet's rotation) is read once that one is read to
its end (for at most a second): a line the runtime cut across the two ends in the new file
marked ``partial_end``, after its pieces.

Other kinds of files: a matched named pipe, socket or device is not opened; it is logged
once and counted (``sidekick_ship_non_regular_files_skipped``). Files are opened with
``O_NONBLOCK``, so a named pipe put in place of a regular file between the scan and the open
cannot block the event loop.

Drain: after SIGTERM the globs are scanned at least four times per ``--drain-quiet``, so
files waiting for a descriptor are opened and read before the drain ends. Files left unread
at its end (their open failed) are named in one warning instead of "Read every file ... to
its end", and a drain cut short by the timeout counts, in ``unshipped``, files never opened,
parked files that grew and the batches of released ones still in flight.

Compressed files: a matched file whose first bytes are gzip, zstd, bzip2 or xz magic is never
read as lines (it would ship binary garbage); it is skipped, logged once, counted
(``sidekick_ship_compressed_files_skipped``) and not looked at again while it keeps its
(device, inode). ``exclude`` patterns (``*.gz``) keep such files from being opened at all.

Left out: reading compressed files, and detecting a truncation that is refilled past the
old offset between two checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from sidekick.ship.config import seconds
from sidekick.ship.files import file_url_path
from sidekick.ship.sources._discover import (
    MAGIC_FIRST,
    Discovery,
    compressed_kind,
    regular_files_in,
    static_dir,
)
from sidekick.ship.sources._identity import checkpoint_key, saved_ident
from sidekick.ship.sources._inotify import Inotify
from sidekick.ship.sources._reader import PARTIAL, TailFile, shown_path
from sidekick.ship.sources._rotation import Rotation
from sidekick.ship.sources.base import Emit, InputSpec, SourceContext

log = logging.getLogger("sidekick.ship.tail")

IDLE_POLL = 0.1  # seconds between growth checks of idle files when inotify is unavailable
LAG_INTERVAL = 1.0  # at least this often the lag gauges follow the files, reading or not
UNREAD_NAMED = 10  # files named in the line that says which were left unread at stop


class TailSource(Rotation):
    """Tails every file matching the globs of one ``file://`` input."""

    def __init__(self, spec: InputSpec, patterns: list[str], ctx: SourceContext) -> None:
        super().__init__(spec, patterns, ctx)
        cfg = ctx.config
        self.poll_interval = seconds(cfg.poll_interval)
        self._inotify: Inotify | None = None
        self._wake = asyncio.Event()
        self._rescan = True
        # Files present at the first start and not opened yet: their size then, where they
        # start with start_at end however late a descriptor lets them be opened.
        self._first_seen: dict[tuple[int, int], int] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        lag = asyncio.create_task(self._keep_lag_current(), name=f"lag {self.name}")
        try:
            await self._run(emit)
        finally:
            lag.cancel()

    async def _keep_lag_current(self) -> None:
        """Update the lag gauges when the read loop has not for a while: it waits in ``emit``
        while an output is down, and the files it tails keep growing meanwhile."""
        interval = max(LAG_INTERVAL, self.poll_interval)
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self.lag_reported >= interval:
                self.report_lag()

    async def _run(self, emit: Emit) -> None:
        stopping = self.ctx.stopping
        # "First start" (for --start-at end) is remembered, so files created while the
        # shipper was down are not skipped at its second start.
        marker = self.name + "#started"
        first = self.store.get(marker) is None
        if first:
            # With start_at end the marker and the end positions the scan below saves are
            # written at once: a crash before anything is delivered must not make the next
            # start a first one again, which would skip every line written meanwhile.
            self.store.put(marker, {"version": 1}, urgent=self.start_at_end)
        if self.ctx.config.inotify:
            self._inotify = Inotify.create(self._on_inotify)
        self._scan(first_start=first)
        self._resume_missing()
        loop = asyncio.get_running_loop()
        last_scan = loop.time()
        drain = self.ctx.drain
        while True:
            # After SIGTERM every file is still read to its end, and files that keep growing
            # keep being read, until no input has seen new data for --drain-quiet.
            draining = stopping.is_set()
            progressed = False
            # Cleared before reading, so an event that arrives while we read is not lost.
            self._wake.clear()
            for f in list(self.files.values()):
                if await self._read_once(f, emit):
                    progressed = True
            if progressed:
                drain.activity()
            now = loop.time()
            if self._rescan or now >= last_scan + self._scan_interval(draining):
                self._rescan = False
                last_scan = now
                self._scan(first_start=False)
                self._resume_again()
                await self._check_files(emit)
            if progressed:
                continue
            if draining:
                if drain.quiet:
                    await self._finish_drain(emit)
                    return
                await self._idle(None, min(drain.remaining(), IDLE_POLL))
            else:
                await self._idle(stopping)

    def _scan_interval(self, draining: bool) -> float:
        """``poll_interval``; while draining, short enough for several scans to fall within
        ``--drain-quiet``: files that wait for a descriptor are opened at a scan (once the
        open ones are read to their end), and the drain must not end quiet before that."""
        if not draining:
            return self.poll_interval
        return min(self.poll_interval, max(IDLE_POLL, self.ctx.drain.quiet_seconds / 4))

    async def _idle(self, stopping: asyncio.Event | None, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.poll_interval if self._inotify is not None else IDLE_POLL
        waiters = {asyncio.ensure_future(self._wake.wait())}
        if stopping is not None:
            waiters.add(asyncio.ensure_future(stopping.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _finish_drain(self, emit: Emit) -> None:
        """Hand over what only memory holds: a last line with no newline, a multi-line group.

        In a Pod that stops, the files usually go away with their volume, so a line the app
        never ended is shipped as it is rather than kept waiting for its newline. It is marked
        ``partial``: if the file outlives the shipper, the rest of the line follows at the next
        start, marked ``partial_end``.
        """
        for f in list(self.files.values()):
            if f.carry:
                f.continuing = True
                await self.reader.ship_carry(f, emit, PARTIAL)
            await self.reader.flush_joiner(f, emit)
        unread = self._left_unread()
        if not unread:
            log.info("Read every file of %s to its end.", self.name)
            return
        names = sorted(unread)
        log.warning(
            "Files of %s left unread at stop (%d, %d bytes): %s%s. They were never opened "
            "(waiting for a descriptor, or the open failed) and are read at the next start.",
            self.name,
            len(names),
            sum(unread.values()),
            ", ".join(f"{n} ({unread[n]} bytes)" for n in names[:UNREAD_NAMED]),
            f" and {len(names) - UNREAD_NAMED} more" if len(names) > UNREAD_NAMED else "",
        )

    def unshipped(self) -> dict[str, int]:
        """Bytes not delivered, by file: past the committed offset of the files held (open
        or parked), in flight from released ones, and all of those never opened."""
        out: dict[str, int] = {}

        def add(path: str, nbytes: int) -> None:
            if nbytes > 0:
                out[path] = out.get(path, 0) + nbytes

        for f in self.files.values():
            end: int | None = None
            if f.fd >= 0:
                with contextlib.suppress(OSError):
                    end = os.fstat(f.fd).st_size
            else:
                end = self._size_at(f.ident, f.path)
            if end is None:
                end = max(f.size, f.read_pos)
            add(f.shown, end - f.tracker.committed)
        for key, tracker in self.retiring:
            entry = self.store.get(key) or {}
            add(str(entry.get("path", key)), tracker.emitted - tracker.committed)
        for path, nbytes in self._left_unread().items():
            add(path, nbytes)
        return out

    def _left_unread(self) -> dict[str, int]:
        """Files known to this input and never opened: waiting for a descriptor, whose open
        failed at the latest scan, or saved ones (rotated while ship was down) not opened
        yet; the bytes each holds past its saved position, by path."""
        left: dict[str, int] = {}
        known: dict[tuple[int, int], tuple[str, int]] = {}
        for ident, path in [*self._unopened.items(), *self._waiting.items()]:
            entry = self.store.get(checkpoint_key(self._prefix, *ident))
            if entry is not None and not entry.get("waiting"):
                start = _offset(entry)
            elif self.start_at_end and ident in self._first_seen:
                start = self._first_seen[ident]
            else:
                start = 0
            known[ident] = (path, start)
        for key in self._unresumed:
            entry = self.store.get(key)
            saved = saved_ident(entry)
            if entry is not None and saved is not None:
                known[saved] = (str(entry.get("path", "")), _offset(entry))
        for ident, (path, start) in known.items():
            if ident in self.files:
                continue
            size = self._size_at(ident, path)
            if size is not None and size > start:
                left[shown_path(path)] = size - start
        return left

    def _size_at(self, ident: tuple[int, int], path: str) -> int | None:
        """The size of the file ``ident``, at ``path`` or renamed in its directory; None if
        it is gone (or cannot be looked at)."""
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == ident:
                return st.st_size
        except OSError:
            pass
        found, _errors = regular_files_in([os.path.dirname(path)])
        for other, where in found:
            if other == ident:
                with contextlib.suppress(OSError):
                    return os.stat(where).st_size
        return None

    def _on_inotify(self, structural: bool) -> None:
        if structural:
            self._rescan = True
        self._wake.set()

    async def aclose(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        for f in self.files.values():
            if f.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(f.fd)
                f.fd = -1
            if self._tailed.get(f.ident, ("",))[0] == self.name:
                del self._tailed[f.ident]
        self.files.clear()
        self.fds.count = 0
        self._watched.set(0)
        self._open_gauge.set(0)

    # -- discovery -------------------------------------------------------------------------

    def _discover(self) -> Discovery:
        found = self._finder.scan()
        for path, real, base in found.refused:
            self._refused.inc()
            log.warning(
                "Not tailing %s: it resolves to %s, outside the glob's base directory %s; "
                "set follow_symlinks (--follow-symlinks) to ship files outside it.",
                shown_path(path),
                shown_path(real),
                shown_path(base),
            )
        for path, kind in found.special:
            self._special.inc()
            log.warning(
                "Not tailing %s: it is %s, not a regular file, so no position in it can be "
                "kept; add an exclude pattern to keep the glob from matching it.",
                shown_path(path),
                kind,
            )
        for op, path, exc in found.errors:
            self._error(op, path, exc)
        self._errlog.flush()
        return found

    def _scan(self, *, first_start: bool) -> None:
        self.fds.shed()  # below the budget first (it may have been lowered) to list with room
        found = self._discover()
        matches = found.files
        if first_start:
            self._first_seen = {ident: m.st.st_size for ident, m in matches.items()}
        new: list[tuple[tuple[int, int], str]] = []
        moved: dict[str, TailFile] = {}  # by the path they had before this scan
        for ident, m in matches.items():
            f = self.files.get(ident)
            if f is None:
                if ident not in self._skipped:
                    new.append((ident, m.path))
                continue
            if f.path != m.path:
                moved[f.path] = f
                with contextlib.suppress(KeyError):
                    self._lag.remove(f.shown)  # the gauge follows the file's new name
                f.path = m.path
                self.store.update(f.key, {"path": f.shown})
            if f.rotated_at is not None:
                f.rotated_at = None  # moved back under a matching name
            changed = (m.st.st_size, m.st.st_mtime_ns) != (f.size, f.mtime)
            if f.fd < 0 and changed and self.fds.room():
                self.fds.reopen(f)
        if found.complete and self._skipped:
            self._skipped &= matches.keys()
        gone_waiting = {i: p for i, p in self._waiting.items() if i not in matches}
        self._waiting = {}
        self._unopened = {}
        by_path: dict[str, TailFile] | None = None
        for ident, path in new:
            if not self.fds.room():
                self._waiting[ident] = path
                self._save_waiting(path, ident)
                continue
            if by_path is None and self.reader.runtime_joiner:
                # A new file at the name of a tailed one: a rotation, which may cut a line.
                by_path = {f.path: f for f in self.files.values()}
                by_path.update(moved)
            opened = self._open(path, ident, first_size=self._first_seen.get(ident))
            if opened is not None and by_path is not None and path in by_path:
                opened.predecessor = by_path[path]
            if opened is not None or ident in self._skipped:
                self._first_seen.pop(ident, None)
            else:
                self._unopened[ident] = path
        now = time.monotonic()
        parked_gone: list[TailFile] = []
        for ident, f in self.files.items():
            if ident in matches or f.rotated_at is not None or found.uncertain(f.path):
                continue
            if f.fd < 0:
                parked_gone.append(f)
                continue
            f.rotated_at = now
            self._rotations.inc()
            log.info("%s was rotated or deleted; reading it to its end.", f.shown)
        if parked_gone:
            self._find_parked(parked_gone, now)
        if gone_waiting:
            self._find_waiting(gone_waiting, uncertain=not found.complete)
        if self._waiting:
            self._errlog.log(
                "waiting",
                logging.INFO,
                "%d files of %s wait for a descriptor: all %d it may hold (max_open_files) "
                "have unread data; they are opened as those are read.",
                len(self._waiting),
                self.name,
                self.fds.max_open,
            )
        if self._inotify is not None:
            dirs = {static_dir(p) for p in self.patterns}
            dirs.update(os.path.dirname(f.path) for f in self.files.values())
            self._inotify.watch_dirs(dirs)
        self._watched.set(len(self.files))
        self._open_gauge.set(self.fds.count)
        self._log_started()

    def _find_waiting(self, gone: dict[tuple[int, int], str], *, uncertain: bool) -> None:
        """Files that waited for a descriptor and are no longer at a matching path: renamed
        (rotated) before they could be opened. Each is looked up by inode and opened where it
        is now, even over the budget, and read to its end; one that cannot be opened yet (or
        found, while a directory cannot be listed) waits on. One gone from every directory
        was deleted unread, which is said."""
        dirs = {static_dir(p) for p in self.patterns}
        dirs.update(os.path.dirname(p) for p in gone.values())
        found, unsure = self._regular_files_in(dirs)
        for ident, path in found:
            old = gone.pop(ident, None)
            if old is None or ident in self.files:
                continue
            self.fds.room()  # rotated files are opened even over the budget
            size = self._first_seen.get(ident)
            if self._open(path, ident, first_size=size, rotated=True) is None:
                if ident not in self._skipped:
                    self._waiting[ident] = path  # tried again at the next scan
                continue
            self._first_seen.pop(ident, None)
            self._rotations.inc()
            log.info(
                "%s was rotated to %s before a descriptor was free for it; reading it.",
                shown_path(old),
                shown_path(path),
            )
        if unsure or uncertain:
            self._waiting.update(gone)
            return
        for ident, old in gone.items():
            self._first_seen.pop(ident, None)
            self.store.drop(checkpoint_key(self._prefix, *ident))
            log.warning(
                "%s was deleted before a descriptor was free to read it (all max_open_files "
                "held files with unread data); raise the open-file limit or max_open_files.",
                shown_path(old),
            )

    # -- reading ---------------------------------------------------------------------------

    async def _read_once(self, f: TailFile, emit: Emit) -> bool:
        """Read one chunk of ``f`` and emit its complete lines; False at end of file."""
        if f.fd < 0:
            return False  # parked: fully read; the scan reopens it when it changes
        if self.reader.waits_for_predecessor(f):
            return False
        if f.predecessor is not None:
            await self.reader.follow(f, emit)
        try:
            data = self.reader.read(f)
        except OSError as exc:
            self._error("read", f.path, exc)
            return False
        if not data:
            f.at_end = True
            # At the end: a size below our position means copytruncate. Checked here, not
            # only on the poll interval, so a refilled file is caught before it regrows.
            try:
                if os.fstat(f.fd).st_size < f.read_pos:
                    await self._truncated(f, emit)
                    return True
            except OSError:
                pass
            return False
        if f.read_pos == 0 and f.gen == 0 and data[:1] in MAGIC_FIRST:
            kind = compressed_kind(data[:10])
            if kind is not None:
                # Empty when it was opened (a compressor had just created it).
                self._drop(f)
                self._skip_compressed(f.path, f.ident, kind)
                return False
        await self.reader.take(f, data, emit)
        return True


def _offset(entry: dict[str, Any]) -> int:
    """The saved offset of a checkpoint entry (0 if it is damaged)."""
    try:
        return max(0, int(entry.get("offset", 0)))
    except (ValueError, TypeError):
        return 0


def parse_file_url(spec: str) -> list[str]:
    """``file:///var/log/*.log`` -> ``["/var/log/*.log"]``; ConfigError if it is no local path.

    ``spec`` is the URL without its ``?options`` (``sidekick.ship.sources.split_options``).
    """
    path = file_url_path(
        spec,
        flag="--input",
        example="a path or glob like file:///var/log/app/*.log",
        names="no files",
    )
    return [path]


def create(spec: InputSpec, ctx: SourceContext) -> TailSource:
    return TailSource(spec, parse_file_url(spec.url), ctx)
