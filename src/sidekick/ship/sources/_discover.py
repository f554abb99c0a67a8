"""Finding the files of a ``file://`` glob, telling "not there" apart from "could not look".

``glob.glob`` drops a directory it cannot list (too many open files, no permission) as if it
were empty; the tail source would then take every file in it for rotated or deleted and read
them all again. This walker expands the same patterns (``*``, ``?``, ``[...]`` per path
component, hidden names only for patterns that start with a dot) but reports each listing
or ``stat`` that failed for a reason other than "no such file", so the caller keeps what it
knew about the files below that directory until a later scan can see them.

Symlinks: the glob's *base directory* is the deepest directory of the pattern without
wildcards (``/var/log/app`` for ``/var/log/app/*/x.log``). A match whose real path
(``os.path.realpath``: the file itself or a directory below the base being a symlink) lies
outside the base is refused unless ``follow_symlinks`` is set: otherwise anyone who can write
the log volume could make the shipper send any file it can read (``evil.log ->
/etc/passwd``). A verdict is kept per (path, device, inode), so a refused link is reported
once and an accepted file costs no ``realpath`` on later scans. ``opened_inside`` checks the
path of an opened descriptor (``/proc/self/fd``), so a link swapped between the check and the
``open`` is caught too.

A component that is exactly ``**`` matches any number of directories, none included
(``/var/log/pods/**/*.log``); as the last component it matches every file below. It descends
into real directories only, never through a symlink to a directory (a link loop would never
end, and a link out of the base is refused anyway), and skips hidden directories as ``*``
does. Exclude patterns drop matched files: one without a ``/`` is matched against the file
name (``*.gz``), one with a ``/`` against the whole path.

Other kinds of files: a match that is a named pipe, a socket or a device is never opened (it
has no offset to resume from, and reading a pipe takes its lines from whoever else reads it);
the scan reports it once per (path, device, inode) in ``Discovery.special``.

Compressed files: ``compressed_kind`` tells a file whose first bytes are gzip, zstd, bzip2 or
xz magic (a rotation compressed by logrotate or the kubelet), which the tail source skips
instead of shipping binary garbage as lines.

Rotated files: a file renamed out of the globs is found again by its identity among the
regular files of the watched directories (``regular_files_in``, ``static_dir``).

Left out: hard links (a hard link is the file itself; the kernel's ``protected_hardlinks``
and a separate log volume keep them from pointing at files of others) and ``**`` inside a
component (``a**b`` is an ordinary ``*`` pattern).
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

Ident = tuple[int, int]

# Errors that mean the entry is really not there (or is not a directory to list).
_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)

# Magic numbers of the compressed formats logrotate and the kubelet produce.
_COMPRESSED = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
)


# The first bytes of those formats: a chunk starting with none of them needs no closer look.
MAGIC_FIRST = frozenset(magic[:1] for magic, _kind in _COMPRESSED)


def compressed_kind(head: bytes) -> str | None:
    """The compression format ``head`` (a file's first bytes) starts with, or ``None``."""
    for magic, kind in _COMPRESSED:
        if head.startswith(magic):
            # "BZh" is plain text too: bzip2 also needs the block size digit and the magic of
            # the first block (or of an empty stream's end).
            if kind == "bzip2" and not (
                len(head) >= 10
                and head[3:4].isdigit()
                and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90")
            ):
                return None
            return kind
    return None


def special_kind(mode: int) -> str | None:
    """What a file of ``mode`` that is no regular file nor directory is, for a log line."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return None


def static_dir(pattern: str) -> str:
    """The deepest directory of ``pattern`` without glob characters."""
    parts = Path(pattern).parts
    out: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        out.append(part)
    return os.path.join(*out) if out else "/"


def regular_files_in(
    dirs: Iterable[str],
) -> tuple[list[tuple[Ident, str]], list[tuple[str, OSError]]]:
    """(identity, path) of the regular files directly in ``dirs``, and (directory, error) of
    each directory that could not be listed (a file not found may still be there)."""
    found: list[tuple[Ident, str]] = []
    errors: list[tuple[str, OSError]] = []
    for d in dirs:
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            errors.append((d, exc))
            continue
        for e in entries:
            try:
                if not e.is_file(follow_symlinks=False):
                    continue
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            found.append(((st.st_dev, st.st_ino), e.path))
    return found, errors


@dataclass(slots=True)
class Match:
    path: str
    st: os.stat_result


@dataclass(slots=True)
class Discovery:
    """One scan: the regular files found, what could not be looked at, what was refused."""

    files: dict[Ident, Match] = field(default_factory=dict)
    # (operation, path, error) for each listing or stat that failed for a reason other than
    # absence; files at or below these paths are unknown in this scan, not gone.
    errors: list[tuple[str, str, OSError]] = field(default_factory=list)
    # (path, real path, base directory) of symlinks refused for the first time.
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    # (path, what it is) of matches that are no regular file nor directory (a named pipe,
    # a socket, a device), seen for the first time.
    special: list[tuple[str, str]] = field(default_factory=list)
    _unsure_dirs: list[str] = field(default_factory=list)
    _unsure_paths: set[str] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return not self.errors

    def uncertain(self, path: str) -> bool:
        """Whether this scan could not tell if ``path`` is still there."""
        if path in self._unsure_paths:
            return True
        return any(path.startswith(d) for d in self._unsure_dirs)

    def _failed(self, op: str, path: str, exc: OSError, *, directory: bool) -> None:
        self.errors.append((op, path, exc))
        if directory:
            self._unsure_dirs.append(path.rstrip("/") + "/")
        else:
            self._unsure_paths.add(path)


def split_pattern(pattern: str) -> tuple[str, list[str]]:
    """``/var/log/*/a.log`` -> ``("/var/log", ["*", "a.log"])``: base directory, the rest.

    The last component never belongs to the base, even without wildcards (it is the file).
    """
    parts = Path(pattern).parts
    static: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        static.append(part)
    base = os.path.join(*static) if static else "."
    return base, list(parts[len(static) :])


def is_inside(real: str, base_real: str) -> bool:
    return base_real == "/" or real == base_real or real.startswith(base_real + "/")


class Finder:
    """Expands the patterns of one input; keeps symlink verdicts from scan to scan."""

    def __init__(
        self, patterns: list[str], *, follow_symlinks: bool, exclude: tuple[str, ...] = ()
    ) -> None:
        self.follow_symlinks = follow_symlinks
        self._exclude_names = [re.compile(fnmatch.translate(p)) for p in exclude if "/" not in p]
        self._exclude_paths = [re.compile(fnmatch.translate(p)) for p in exclude if "/" in p]
        self._patterns: list[tuple[str, str, list[str]]] = []
        for pattern in patterns:
            base, rest = split_pattern(pattern)
            self._patterns.append((base, os.path.realpath(base), rest))
        # (path, dev, ino) -> accepted? ; only for matches seen in the latest complete scan.
        self._verdicts: dict[tuple[str, int, int], bool] = {}
        # (path, dev, ino) of the matches that are no regular file, reported once each.
        self._special: set[tuple[str, int, int]] = set()

    @property
    def bases(self) -> list[str]:
        """The base directory of each pattern (as written, not resolved)."""
        return [b for b, _r, _p in self._patterns]

    def scan(self) -> Discovery:
        out = Discovery()
        seen: set[tuple[str, int, int]] = set()
        special: set[tuple[str, int, int]] = set()
        for base, base_real, rest in self._patterns:
            for path in self._expand(base, rest, 0, out):
                if self._excluded(path):
                    continue
                try:
                    st = os.stat(path)
                except OSError as exc:
                    if exc.errno not in _ABSENT:
                        out._failed("stat", path, exc, directory=False)
                    continue
                if not stat.S_ISREG(st.st_mode):
                    kind = special_kind(st.st_mode)
                    if kind is not None:
                        key = (path, st.st_dev, st.st_ino)
                        special.add(key)
                        if key not in self._special:
                            self._special.add(key)
                            out.special.append((path, kind))
                    continue
                ident = (st.st_dev, st.st_ino)
                if ident in out.files:
                    continue
                if not self.follow_symlinks:
                    key = (path, st.st_dev, st.st_ino)
                    seen.add(key)
                    verdict = self._verdicts.get(key)
                    if verdict is None:
                        real = os.path.realpath(path)
                        verdict = is_inside(real, base_real)
                        self._verdicts[key] = verdict
                        if not verdict:
                            out.refused.append((path, real, base))
                    if not verdict:
                        continue
                out.files[ident] = Match(path, st)
        if out.complete:
            # Forget verdicts of paths that are gone, so the table does not grow without
            # bound and a link made again later is reported again.
            for key in [k for k in self._verdicts if k not in seen]:
                del self._verdicts[key]
            self._special &= special
        return out

    def _excluded(self, path: str) -> bool:
        if self._exclude_names:
            name = os.path.basename(path)
            if any(p.match(name) for p in self._exclude_names):
                return True
        return any(p.match(path) for p in self._exclude_paths)

    def opened_inside(self, fd: int) -> bool:
        """Whether the file open at ``fd`` lies inside a base directory (always if following)."""
        if self.follow_symlinks:
            return True
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return True  # no /proc: the realpath check of the scan stands alone
        real = real.removesuffix(" (deleted)")
        return any(is_inside(real, base_real) for _b, base_real, _p in self._patterns)

    def _expand(self, directory: str, rest: list[str], i: int, out: Discovery) -> list[str]:
        comp = rest[i]
        last = i == len(rest) - 1
        if comp == "**":
            found: list[str] = []
            for d in self._walk(directory, out):
                if last:
                    found.extend(self._list(d, "*", out))
                else:
                    found.extend(self._expand(d, rest, i + 1, out))
            return found
        if not glob.has_magic(comp):
            path = os.path.join(directory, comp)
            return [path] if last else self._expand(path, rest, i + 1, out)
        paths = self._list(directory, comp, out)
        if last:
            return paths
        found = []
        for p in paths:
            found.extend(self._expand(p, rest, i + 1, out))
        return found

    @staticmethod
    def _list(directory: str, comp: str, out: Discovery) -> list[str]:
        """The entries of ``directory`` matching the one-component pattern ``comp``."""
        try:
            with os.scandir(directory) as it:
                names = [e.name for e in it]
        except OSError as exc:
            if exc.errno not in _ABSENT:
                out._failed("list", directory, exc, directory=True)
            return []
        if not comp.startswith("."):
            names = [n for n in names if not n.startswith(".")]
        names = sorted(fnmatch.filter(names, comp))
        return [os.path.join(directory, n) for n in names]

    @staticmethod
    def _walk(top: str, out: Discovery) -> list[str]:
        """``top`` and every real, non-hidden directory below it (what ``**`` matches)."""
        found: list[str] = []
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as it:
                    subdirs = [
                        e.path
                        for e in it
                        if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
                    ]
            except OSError as exc:
                if exc.errno not in _ABSENT:
                    out._failed("list", directory, exc, directory=True)
                continue
            found.append(directory)
            stack.extend(sorted(subdirs, reverse=True))
        return found
