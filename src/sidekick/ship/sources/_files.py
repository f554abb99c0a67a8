"""The files of one ``file://`` input: their table, descriptors and checkpoint entries.

``FileTable`` holds what the tail source knows of its files (``files``, by (device, inode);
the descriptor budget ``fds``; the checkpoint store) and does what changes that table
outside the read loop: opening a matched file at its saved, first or last position (after
checking that the descriptor is the file the scan saw, inside the glob's base directory and
not compressed), dropping a file, saving its checkpoint entry, and counting and logging, once
a minute per kind, a failed operation on a path. Rotation and truncation build on it
(``_rotation``), and the source's run loop on both (``tail``).

Left out: deciding which files to open (``tail`` scans with ``_discover``) and reading them
(``_reader``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time

from sidekick.core.ratelog import RateLimitedLog
from sidekick.ship.acks import AckTracker
from sidekick.ship.config import seconds
from sidekick.ship.sources._descriptors import Descriptors, open_budget
from sidekick.ship.sources._discover import Finder, compressed_kind
from sidekick.ship.sources._identity import checkpoint_key
from sidekick.ship.sources._reader import LineReader, TailFile, last_line_end, shown_path
from sidekick.ship.sources.base import InputSpec, SourceContext

log = logging.getLogger("sidekick.ship.tail")

ERROR_LOG_INTERVAL = 60.0  # seconds between log lines of one kind of repeated error
_ERROR_HINTS = {
    "EMFILE": "; raise the open-file limit (ulimit -n) or lower max_open_files",
    "ENFILE": "; the system's open-file table is full (fs.file-max)",
    "EACCES": "; give the shipper read access",
}


class FileTable:
    """The files one tail input holds, and opening, dropping and saving them."""

    def __init__(self, spec: InputSpec, patterns: list[str], ctx: SourceContext) -> None:
        cfg = ctx.config
        self.spec = spec
        self.name = spec.url
        self.patterns = patterns
        self.ctx = ctx
        self.store = ctx.checkpoints
        self.reader = LineReader(spec, ctx)
        self.rotate_wait = seconds(cfg.rotate_wait)
        self.multiline_timeout = seconds(cfg.multiline_timeout)
        self.start_at_end = cfg.start_at == "end"
        self.files: dict[tuple[int, int], TailFile] = {}
        self.retiring: list[tuple[str, AckTracker]] = []
        m = ctx.metrics
        name = self.name
        self._rotations = m.rotations.labels(name)
        self._truncations = m.truncations.labels(name)
        self._watched = m.files_watched.labels(name)
        self._lag = m.checkpoint_lag_bytes
        self._prefix = name + "/"
        self._refused = m.symlinks_refused.labels(name)
        self._errors = m.tail_errors
        self._open_gauge = m.files_open.labels(name)
        follow = cfg.follow_symlinks if spec.follow_symlinks is None else spec.follow_symlinks
        self._finder = Finder(patterns, follow_symlinks=follow, exclude=spec.exclude)
        self._compressed = m.compressed_skipped.labels(name)
        self._special = m.non_regular_skipped.labels(name)
        # Compressed files, and files another input tails: not opened again (while matched).
        self._skipped: set[tuple[int, int]] = set()
        self._shared = m.shared_skipped.labels(name)
        self._tailed = ctx.tailed  # shared by the file inputs
        self._errlog = RateLimitedLog(log, ERROR_LOG_INTERVAL)
        # At most max_open_files descriptors; parks idle files to make room.
        self.fds = Descriptors(
            self.files, open_budget(cfg), self._finder.opened_inside, self._error
        )
        # Matched files waiting for a descriptor, with their paths.
        self._waiting: dict[tuple[int, int], str] = {}
        # New matched files whose open failed at the latest scan (tried again at each).
        self._unopened: dict[tuple[int, int], str] = {}
        # Checkpoint keys of saved files not matched at start that could not be opened or
        # looked for yet (out of descriptors); tried again at each scan.
        self._unresumed: set[str] = set()
        self.lag_reported = 0.0  # time.monotonic() of the latest update of the lag gauges
        self._started: list[tuple[str, int]] = []  # new files opened, for one log line

    def _error(self, op: str, path: str, exc: OSError) -> None:
        """Count a failed operation on a tailed path; log it once a minute per kind."""
        code = errno.errorcode.get(exc.errno or 0, "OTHER")
        self._errors.labels(self.name, code).inc()
        self._errlog.warning(
            (op, code),
            "Cannot %s %s (%s); keeping what is known of it and trying again%s.",
            op,
            shown_path(path),
            exc.strerror or code,
            _ERROR_HINTS.get(code, ""),
        )
        fds = self.fds
        if code in ("EMFILE", "ENFILE") and fds.count > 4:
            # The process has fewer descriptors than max_open_files assumed (a low limit,
            # or other parts hold many): hold fewer from now on, leaving a quarter free.
            lowered = max(4, fds.count * 3 // 4)
            if lowered < fds.max_open:
                log.warning(
                    "Out of file descriptors with %d files of %s open; holding at most %d "
                    "from now on (raise the open-file limit to hold more).",
                    fds.count,
                    self.name,
                    lowered,
                )
                fds.max_open = lowered
                fds.shed()

    def _open(
        self,
        path: str,
        ident: tuple[int, int],
        *,
        first_size: int | None,
        rotated: bool = False,
    ) -> TailFile | None:
        """Open a matched file at its saved position, or at 0; with start_at end, a file
        present at the first start (``first_size``: its size then) at its last line end up
        to that size, so lines written since are read however late it is opened."""
        other = self._tailed.get(ident)
        if other is not None and other[0] != self.name:
            self._skip_shared(path, ident, *other)
            return None
        try:
            fd = self.fds.open(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # deleted since the scan: nothing to say
                self._error("open", path, exc)
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != ident:
            os.close(fd)  # replaced between stat and open; the next scan sees the new one
            return None
        if not self._finder.opened_inside(fd):
            # A link swapped in between the scan's check and the open.
            os.close(fd)
            self._refused.inc()
            self._errlog.warning(
                ("refused", path),
                "Not tailing %s: it now leads outside the glob's base directory; "
                "set follow_symlinks (--follow-symlinks) to ship files outside it.",
                shown_path(path),
            )
            return None
        kind = compressed_kind(os.pread(fd, 10, 0))
        if kind is not None:
            os.close(fd)
            self._skip_compressed(path, ident, kind)
            return None
        self.fds.count += 1
        f = TailFile(fd, path, st.st_dev, st.st_ino, checkpoint_key(self._prefix, *ident))
        f.size = st.st_size
        self._forget_retired(f.key)
        saved = self.store.get(f.key)
        if saved is not None and saved.get("waiting"):
            saved = None  # only known to exist: read from its start (or end, start_at end)
        offset = f.resume(fd, saved) if saved is not None else None
        if offset is not None:
            if st.st_size < offset:
                log.info("%s is shorter than its saved offset; reading it again from 0.", f.shown)
                self._truncations.inc()
                offset = 0
                f.next_generation(fd)
            f.read_pos = offset
            # A checkpoint inside a line means the line was being shipped in pieces:
            # the rest of it continues that split (and is marked as such).
            f.continuing = offset > 0 and os.pread(fd, 1, offset - 1) != b"\n"
        else:
            if saved is not None:
                log.info("%s is a new file at a known inode; reading it from 0.", f.shown)
            f.take_fingerprint(fd)
            f.new_id()
            if first_size is not None and self.start_at_end and st.st_size >= first_size:
                # (Shorter than then: truncated meanwhile, so all of it is new.)
                f.read_pos = last_line_end(fd, first_size)
        f.tracker = self._tracker(f, f.read_pos)
        self.reader.prepare(f)
        if offset:
            self.reader.resume(f, offset)
        if rotated:
            f.rotated_at = time.monotonic()
        self.files[f.ident] = f
        self._tailed[f.ident] = (self.name, f.shown)
        self._save_entry(f)
        if offset is None:
            self._started.append((f.shown, f.read_pos))
        return f

    def _save_waiting(self, path: str, ident: tuple[int, int]) -> None:
        """Keep a matched file that waits for a descriptor in the state file (no position,
        no fingerprint yet), so a restart looks for it by inode if it was renamed out of the
        glob meanwhile, as for any saved file."""
        key = checkpoint_key(self._prefix, *ident)
        if self.store.get(key) is None:
            entry = {"path": shown_path(path), "dev": ident[0], "ino": ident[1]}
            entry.update({"fp": "", "fp_len": 0, "offset": 0, "waiting": True})
            self.store.put(key, entry, urgent=False)

    def _forget_retired(self, key: str) -> None:
        """A file opened at the inode of a released one whose last batches are still on their
        way (a new file that got the freed inode, or the released file back under a matching
        name): the key is the opened file's now. The released file's acknowledgements must
        neither write its offset into that entry nor drop it when they are done; the saved
        entry decides as for any file (its first bytes tell whether it is the same file)."""
        retired = [t for k, t in self.retiring if k == key]
        for tracker in retired:
            tracker.close()
        if retired:
            self.retiring = [(k, t) for k, t in self.retiring if k != key]

    def _forget(self, f: TailFile) -> None:
        """Take ``f`` out of the table (and out of the files the inputs tail)."""
        del self.files[f.ident]
        if self._tailed.get(f.ident, ("",))[0] == self.name:
            del self._tailed[f.ident]

    def _drop(self, f: TailFile) -> None:
        """Forget ``f`` entirely (nothing of it was read): no position, no descriptor."""
        self._forget(f)
        self.fds.close(f)
        f.tracker.close()
        self.store.drop(f.key)
        with contextlib.suppress(KeyError):
            self._lag.remove(f.shown)
        self._watched.set(len(self.files))
        self._open_gauge.set(self.fds.count)

    def _skip_shared(self, path: str, ident: tuple[int, int], other: str, where: str) -> None:
        self._skipped.add(ident)
        self.store.drop(checkpoint_key(self._prefix, *ident))  # the other input's now
        self._shared.inc()
        log.warning(
            "Not tailing %s: it is %s, which input %s tails already; each file is shipped "
            "once, by the input that found it first.",
            shown_path(path),
            where,
            other,
        )

    def _skip_compressed(self, path: str, ident: tuple[int, int], kind: str) -> None:
        self._skipped.add(ident)
        self.store.drop(checkpoint_key(self._prefix, *ident))  # if it waited for a descriptor
        self._compressed.inc()
        log.warning(
            "Not tailing %s: it holds %s-compressed data, not log lines; add an exclude "
            "pattern (like exclude=*.gz) to keep the glob from matching it.",
            shown_path(path),
            kind,
        )

    def _log_started(self) -> None:
        """One line per new file, or one for all when a scan finds many (thousands at start)."""
        started, self._started = self._started, []
        if len(started) <= 3:
            for path, offset in started:
                log.info("Tailing %s from offset %d.", path, offset)
        else:
            log.info(
                "Tailing %d new files of %s (%s from offset %d, and the rest).",
                len(started),
                self.name,
                started[0][0],
                started[0][1],
            )

    def _tracker(self, f: TailFile, start: int) -> AckTracker:
        key = f.key
        store = self.store

        def on_commit(pos: int) -> None:
            store.update(key, {"offset": pos})

        return AckTracker(start, on_commit)

    def _save_entry(self, f: TailFile) -> None:
        # Not urgent: a new or resumed position needs no prompt write (a restart finds the
        # same); the first delivered batch makes the next write prompt.
        self.store.put(f.key, f.entry(f.shown, f.tracker.committed), urgent=False)
