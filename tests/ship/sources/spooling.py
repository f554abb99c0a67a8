"""Helpers for the spool tests: NDJSON lines, the segment files on disk, an opened spool."""

from __future__ import annotations

from pathlib import Path

from sidekick.ship.sources.spool import SUFFIX, Spool


def line(i: int) -> bytes:
    return b'{"seq":%d}\n' % i


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + SUFFIX))


def open_spool(directory: Path, **kw: int) -> Spool:
    spool = Spool(directory, max_bytes=kw.pop("max_bytes", 1 << 30), **kw)
    spool.open()
    return spool
