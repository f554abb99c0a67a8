"""Rotation and truncation of the files of one ``file://`` input.

A tailed file is held open by descriptor, so a rename (even two) does not matter: when its
inode is no longer at any matching path it is read to its end and released once it has not
grown for ``rotate_wait`` (``_release``; its checkpoint entry goes once its last batch is
delivered). A parked file no longer at a matching path is looked up by inode in the watched
directories (``_find_parked``), and after a restart a saved file no longer matched is looked
up the same way and finished (``_resume_missing``; one that cannot be opened or looked for
now, as when the process is out of descriptors, is tried again at each scan, never
forgotten). The periodic check (``_check_files``)
catches a copytruncate (``_truncated``: reading restarts at 0 as a new generation), grows the
fingerprint, flushes a joiner's group that waited ``multiline_timeout`` and releases rotated
files that are done.

Left out: telling a truncation from a grown file (``_identity``), finding files by identity
(``_discover``), and the scan that notices a file left its path (``tail``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable

from sidekick.ship.acks import AckTracker
from sidekick.ship.sources._discover import regular_files_in, static_dir
from sidekick.ship.sources._files import FileTable
from sidekick.ship.sources._identity import saved_ident
from sidekick.ship.sources._reader import PARTIAL_END, TailFile, shown_path
from sidekick.ship.sources.base import Emit

log = logging.getLogger("sidekick.ship.tail")


class Rotation(FileTable):
    """Finishing rotated files, restarting truncated ones, and the periodic checks."""

    def _find_parked(self, gone: list[TailFile], now: float) -> None:
        """Parked files no longer at a matching path: find them by inode (rotated) or release.

        They were fully read when parked; one renamed away may have grown since, so it is
        reopened at its new name and read to its end like any rotated file.
        """
        wanted = {f.ident: f for f in gone}
        dirs = {static_dir(p) for p in self.patterns}
        dirs.update(os.path.dirname(f.path) for f in gone)
        found, unsure = self._regular_files_in(dirs)
        for ident, path in found:
            f = wanted.pop(ident, None)
            if f is None:
                continue
            old, old_shown = f.path, f.shown
            f.path = path
            self.fds.room()  # a rotated file is reopened even over the budget
            if not self.fds.reopen(f):
                f.path = old  # tried again at the next scan
                continue
            with contextlib.suppress(KeyError):
                self._lag.remove(old_shown)
            self.store.update(f.key, {"path": f.shown})
            f.rotated_at = now
            self._rotations.inc()
            log.info("%s was rotated to %s; reading it to its end.", old_shown, f.shown)
        if unsure:
            return  # the rest may be in a directory that could not be listed
        for f in wanted.values():
            f.rotated_at = now
            self._rotations.inc()
            log.info("%s was rotated or deleted; it was read to its end.", f.shown)

    def _resume_missing(self) -> None:
        """Finish files saved in the state but no longer matched (rotated while we were down)."""
        known = {f.key for f in self.files.values()}
        self._resume([k for k in self.store.keys(self._prefix) if k not in known])

    def _resume_again(self) -> None:
        """Try again the saved files ``_resume`` could not open or look for (out of
        descriptors, a directory that could not be listed): they are not dropped meanwhile."""
        if self._unresumed:
            known = {f.key for f in self.files.values()}
            self._resume([k for k in self._unresumed if k not in known and self.store.get(k)])

    def _resume(self, missing: list[str]) -> None:
        wanted: dict[tuple[int, int], str] = {}
        for key in list(missing):
            ident = saved_ident(self.store.get(key))
            if ident is None:
                self.store.drop(key)
                missing.remove(key)
                continue
            if ident in self._waiting:
                missing.remove(key)  # matched, only waiting for a descriptor
            else:
                wanted[ident] = key
        dirs = {static_dir(p) for p in self.patterns}
        for key in missing:
            entry = self.store.get(key)
            if entry and entry.get("path"):
                dirs.add(os.path.dirname(str(entry["path"])))
        found, unsure = self._regular_files_in(dirs)
        unopened: set[str] = set()  # found, but the open failed: tried again, not dropped
        for ident, path in found:
            saved = wanted.get(ident)
            if saved is None or ident in self.files:
                continue
            self.fds.room()  # rotated files are opened even over the budget
            if self._open(path, ident, first_size=None, rotated=True) is not None:
                log.info("Finishing %s (rotated while ship was stopped).", shown_path(path))
            elif ident not in self._skipped:
                unopened.add(saved)
        self._log_started()
        open_keys = {f.key for f in self.files.values()}
        left = [k for k in missing if k not in open_keys]
        if unsure:
            # The rest may be in a directory that could not be listed: looked for again.
            self._unresumed = set(left)
            return
        self._unresumed = unopened
        for key in left:
            if key not in unopened:
                entry = self.store.get(key) or {}
                log.info("%s is gone; forgetting its position.", entry.get("path", key))
                self.store.drop(key)

    def _regular_files_in(
        self, dirs: Iterable[str]
    ) -> tuple[list[tuple[tuple[int, int], str]], bool]:
        """(identity, path) of the regular files directly in ``dirs``, and whether some
        directory could not be listed (then a file not found may still be there)."""
        found, errors = regular_files_in(dirs)
        for d, exc in errors:
            self._error("list", d, exc)
        return found, bool(errors)

    # -- periodic checks -------------------------------------------------------------------

    async def _check_files(self, emit: Emit) -> None:
        now = time.monotonic()
        for f in list(self.files.values()):
            # A parked file was fully read at its size when parked; the scan reopens it
            # when that changes, so it is checked (and its size known) only while open.
            if f.fd >= 0:
                try:
                    st = os.fstat(f.fd)
                except OSError:
                    continue
                f.size = st.st_size
                if f.truncated(f.fd, st.st_size, f.read_pos):
                    await self._truncated(f, emit)
                elif f.grows_past_fingerprint(st.st_size):
                    # Strengthen the identity check as the file grows; the id stays as it was.
                    f.take_fingerprint(f.fd)
                    self.store.update(f.key, {"fp": f.fp, "fp_len": f.fp_len}, urgent=False)
            self._lag.labels(f.shown).set(max(0, f.size - f.tracker.committed))
            self.lag_reported = now
            if (
                f.joiner is not None
                and f.joiner.pending_offset is not None
                and now - f.last_growth >= self.multiline_timeout
                and not f.carry
            ):
                await self.reader.flush_joiner(f, emit)
            if (
                f.rotated_at is not None
                and now - f.last_growth >= self.rotate_wait
                and now - f.rotated_at >= self.rotate_wait
                and f.size <= f.read_pos
            ):
                await self._release(f, emit)
        still: list[tuple[str, AckTracker]] = []
        for key, tracker in self.retiring:
            if tracker.idle:
                self.store.drop(key)
            else:
                still.append((key, tracker))
        self.retiring = still

    def report_lag(self) -> None:
        """Set every file's lag gauge from its size now, outside the periodic check.

        The check runs in the read loop, which waits in ``emit`` while an output is down and
        reading has paused at the in-flight limit; the files keep growing meanwhile.
        """
        for f in self.files.values():
            size = f.size
            if f.fd >= 0:
                with contextlib.suppress(OSError):
                    size = os.fstat(f.fd).st_size
            self._lag.labels(f.shown).set(max(0, size - f.tracker.committed))
        self.lag_reported = time.monotonic()

    async def _truncated(self, f: TailFile, emit: Emit) -> None:
        # A pending multi-line group was read before the truncation: ship it first.
        await self.reader.flush_joiner(f, emit)
        self._truncations.inc()
        log.info(
            "%s was truncated (shorter than offset %d, or its first bytes changed); "
            "reading it again from 0.",
            f.shown,
            f.read_pos,
        )
        f.tracker.close()  # late acks of the old generation must not move the new offset
        f.read_pos = 0
        f.carry = b""
        f.continuing = False
        f.next_generation(f.fd)
        f.tracker = self._tracker(f, 0)
        self._save_entry(f)

    async def _release(self, f: TailFile, emit: Emit) -> None:
        if f.carry:
            # The last line of a rotated file never got its newline; ship it as it is.
            flags = PARTIAL_END if f.continuing else None
            f.continuing = False
            await self.reader.ship_carry(f, emit, flags)
        await self.reader.flush_joiner(f, emit)
        self._forget(f)
        self.fds.close(f)
        with contextlib.suppress(KeyError):
            self._lag.remove(f.shown)
        self._watched.set(len(self.files))
        self._open_gauge.set(self.fds.count)
        log.info("Finished %s at offset %d; released.", f.shown, f.read_pos)
        if f.tracker.idle:
            self.store.drop(f.key)
        else:
            self.retiring.append((f.key, f.tracker))
