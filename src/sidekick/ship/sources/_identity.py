"""Which file a tailed file is: (device, inode), a fingerprint of its first bytes, a generation.

A path says nothing about identity (logrotate renames, a new file takes the old name), and an
inode alone is not enough either: inodes are reused, and a copytruncate keeps the inode while
the bytes start over. A file is therefore (device, inode) plus the hash of its first
``FP_BYTES`` bytes (fewer while the file is shorter; the fingerprint is taken again as it
grows) plus a generation counted up at each truncation. ``log.file.id`` is
``<dev>-<ino>-<fingerprint>-<generation>``.

This module decides, from those, whether a saved position belongs to the file now at an inode
(``resume``), and whether an open file was truncated (``truncated``: shorter than our offset,
or first bytes that changed) so its reading starts over as a new generation. Its checkpoint
entry lives under ``<input>/<dev>:<ino>``.

Left out: opening, reading and the rotation bookkeeping of the tail source (which only needs
the identity to find a renamed file again); a truncation refilled past the old offset between
two checks, with the same first bytes, cannot be told from growth.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

FP_BYTES = 1024  # fingerprint length once the file is that long


def fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def checkpoint_key(prefix: str, dev: int, ino: int) -> str:
    """The checkpoint entry of a file of the input whose keys start with ``prefix``."""
    return f"{prefix}{dev}:{ino}"


def saved_ident(entry: dict[str, Any] | None) -> tuple[int, int] | None:
    """(device, inode) of a saved checkpoint entry; None if the entry is damaged."""
    if entry is None:
        return None
    try:
        return (int(entry["dev"]), int(entry["ino"]))
    except (KeyError, ValueError, TypeError):
        return None


class FileIdentity:
    """(device, inode), fingerprint and generation of one file, and its checkpoint key."""

    def __init__(self, dev: int, ino: int, key: str) -> None:
        self.dev = dev
        self.ino = ino
        self.key = key
        self.gen = 0
        self.fp = ""
        self.fp_len = 0
        self.file_id = ""

    @property
    def ident(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def new_id(self) -> None:
        self.file_id = f"{self.dev:x}-{self.ino:x}-{self.fp}-{self.gen}"

    def take_fingerprint(self, fd: int) -> None:
        head = os.pread(fd, FP_BYTES, 0)
        self.fp = fingerprint(head)
        self.fp_len = len(head)

    def next_generation(self, fd: int) -> None:
        """The file starts over (truncated): a new generation, fingerprint and id."""
        self.gen += 1
        self.take_fingerprint(fd)
        self.new_id()

    def resume(self, fd: int, saved: dict[str, Any]) -> int | None:
        """Take identity from ``saved`` if it describes the file open at ``fd`` (same first
        bytes); the saved offset, or None if it is another file at the same inode."""
        fp_len = int(saved.get("fp_len", 0))
        head = os.pread(fd, fp_len, 0) if fp_len else b""
        if len(head) != fp_len or fingerprint(head) != saved.get("fp"):
            return None
        self.gen = int(saved.get("gen", 0))
        self.fp, self.fp_len = str(saved["fp"]), fp_len
        self.file_id = str(saved.get("id") or "")
        if not self.file_id:
            self.new_id()
        return int(saved.get("offset", 0))

    def rewritten(self, fd: int) -> bool:
        """Whether the first bytes changed: truncated and written past our offset again.

        A size check alone misses a copytruncate when the file grows back beyond the offset
        before we look; its new first lines would be skipped. An appended file never changes
        its head, so a different fingerprint means a new generation.
        """
        if not self.fp_len:
            return False
        try:
            head = os.pread(fd, self.fp_len, 0)
        except OSError:
            return False
        return len(head) < self.fp_len or fingerprint(head) != self.fp

    def truncated(self, fd: int, size: int, read_pos: int) -> bool:
        """Whether the file open at ``fd`` (``size`` bytes) was truncated under us."""
        return size < read_pos or self.rewritten(fd)

    def grows_past_fingerprint(self, size: int) -> bool:
        """Whether the fingerprint can be taken over more bytes now (the id stays)."""
        return self.fp_len < FP_BYTES and size > self.fp_len

    def entry(self, path: str, offset: int) -> dict[str, Any]:
        """The checkpoint entry of this file at ``path`` with committed ``offset``."""
        return {
            "path": path,
            "dev": self.dev,
            "ino": self.ino,
            "fp": self.fp,
            "fp_len": self.fp_len,
            "id": self.file_id,
            "gen": self.gen,
            "offset": offset,
        }
