"""The ingest spool's writing side: durable group-committed appends, sealing, recovery."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from sidekick.ship.sources.spool import (
    Spool,
    SpoolFullError,
    SpoolStats,
    segment_name,
)
from tests.ship.sources.spooling import line, open_spool, segments


async def test_appended_lines_are_on_disk_when_append_returns(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    await spool.append(line(1) + line(2))
    [seg] = segments(tmp_path)
    assert seg.read_bytes() == line(1) + line(2)
    await spool.aclose()


async def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    fsyncs: list[float] = []
    spool = Spool(tmp_path, max_bytes=1 << 30, stats=SpoolStats(on_fsync=fsyncs.append))
    spool.open()
    await asyncio.gather(*(spool.append(line(i)) for i in range(200)))
    await spool.aclose()
    data = b"".join(p.read_bytes() for p in segments(tmp_path))
    assert sorted(data.splitlines()) == sorted(line(i).strip() for i in range(200))
    assert len(fsyncs) < 200 / 2


async def test_segment_is_sealed_at_its_size_limit(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=100)
    for i in range(60):
        await spool.append(line(i))
    await spool.aclose()
    files = segments(tmp_path)
    assert len(files) >= 6
    assert all(p.stat().st_size < 100 + len(line(99)) for p in files)
    data = b"".join(p.read_bytes() for p in files)
    assert data == b"".join(line(i) for i in range(60))


async def test_append_beyond_the_size_limit_raises_full(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=50)
    await spool.append(line(1) * 4)
    with pytest.raises(SpoolFullError):
        await spool.append(line(2) * 2)
    await spool.aclose()


async def test_torn_tail_is_cut_to_the_last_complete_line_on_open(tmp_path: Path) -> None:
    seg = tmp_path / segment_name(5)
    seg.write_bytes(line(1) + line(2) + b'{"seq":3,"ha')
    spool = open_spool(tmp_path)
    assert seg.read_bytes() == line(1) + line(2)
    assert spool.used_bytes == len(line(1) + line(2))


async def test_failed_write_is_reported_and_the_next_one_starts_a_new_segment(
    tmp_path: Path,
) -> None:
    spool = open_spool(tmp_path)
    await spool.append(line(1))
    # Make the next write fail the way a full disk does: the file cannot be written.
    assert spool._fd is not None
    os.close(spool._fd)
    spool._fd = os.open(os.devnull, os.O_RDONLY)
    from sidekick.ship.sources.spool import SpoolWriteError

    with pytest.raises(SpoolWriteError):
        await spool.append(line(2))
    await spool.append(line(3))
    await spool.aclose()
    data = b"".join(p.read_bytes() for p in segments(tmp_path))
    assert data == line(1) + line(3)
