"""The spool reader: delivery in order, acks, deletion, restart positions, record identity."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from sidekick.ship.sources.base import SourceBatch
from sidekick.ship.sources.spool import segment_name
from sidekick.ship.sources.spool_reader import SpoolReader
from tests.ship.sources.spooling import line, open_spool, segments


class Collector:
    """An ``emit`` that keeps batches and acks them only when told."""

    def __init__(self) -> None:
        self.batches: list[SourceBatch] = []
        self.arrived = asyncio.Event()

    async def __call__(self, batch: SourceBatch) -> None:
        self.batches.append(batch)
        self.arrived.set()

    @property
    def seqs(self) -> list[int]:
        return [r["seq"] for b in self.batches for r in b.records]

    async def wait(self, n: int) -> None:
        async with asyncio.timeout(5):
            while len(self.seqs) < n:
                self.arrived.clear()
                await self.arrived.wait()

    def ack_all(self) -> None:
        for b in self.batches:
            assert b.ack is not None
            b.ack.delivered()


class Reading:
    """A reader task over ``spool``; stopped when the block ends."""

    def __init__(self, reader: SpoolReader) -> None:
        self.reader = reader
        self.emit = Collector()
        self.stopping = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self.reader.start()
        self.task = asyncio.create_task(self.reader.run(self.emit, self.stopping))
        return self.emit

    async def __aexit__(self, *exc: object) -> None:
        self.stopping.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


async def test_segments_left_by_a_previous_run_are_shipped_in_order(tmp_path: Path) -> None:
    (tmp_path / segment_name(20)).write_bytes(line(3) + line(4))
    (tmp_path / segment_name(10)).write_bytes(line(1) + line(2))
    spool = open_spool(tmp_path)
    async with Reading(SpoolReader(spool)) as emit:
        await emit.wait(4)
    assert emit.seqs == [1, 2, 3, 4]


async def test_new_appends_after_a_restart_follow_the_old_segments(tmp_path: Path) -> None:
    (tmp_path / segment_name(10)).write_bytes(line(1))
    spool = open_spool(tmp_path)
    async with Reading(SpoolReader(spool)) as emit:
        await spool.append(line(2))
        await emit.wait(2)
    assert emit.seqs == [1, 2]


async def test_fully_delivered_sealed_segment_is_deleted(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=20)
    async with Reading(SpoolReader(spool)) as emit:
        for i in range(10):
            await spool.append(line(i))
        await emit.wait(10)
        assert len(segments(tmp_path)) == 5  # two 11-byte lines reach the 20-byte limit
        emit.ack_all()
        # Every segment is sealed and delivered.
        assert segments(tmp_path) == []
    assert spool.used_bytes == 0


async def test_segment_with_undelivered_records_is_kept(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=20)
    async with Reading(SpoolReader(spool)) as emit:
        await spool.append(line(1))
        await emit.wait(1)
        await spool.append(line(2))
        await emit.wait(2)
        first, *rest = emit.batches
        assert rest
        for b in rest:
            assert b.ack is not None
            b.ack.delivered()
        assert len(segments(tmp_path)) == 1
        assert first.ack is not None
        first.ack.delivered()
        assert segments(tmp_path) == []


async def test_active_segment_delivered_then_sealed_is_deleted(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    reader = SpoolReader(spool)
    async with Reading(reader) as emit:
        await spool.append(line(1))
        await emit.wait(1)
        emit.ack_all()
        assert len(segments(tmp_path)) == 1  # still the active segment
    await spool.aclose()
    reader.sweep()
    assert segments(tmp_path) == []


async def test_restart_resumes_after_the_delivered_position(tmp_path: Path) -> None:
    saved: dict[str, tuple[int, int]] = {}

    def save(seg: int, off: int) -> None:
        saved["pos"] = (seg, off)

    spool = open_spool(tmp_path)
    async with Reading(SpoolReader(spool, save_position=save)) as emit:
        await spool.append(line(1) + line(2))
        await emit.wait(2)
        emit.ack_all()
        await spool.append(line(3))
        await emit.wait(3)  # read but never acknowledged
    await spool.aclose()

    spool2 = open_spool(tmp_path)
    reader2 = SpoolReader(spool2, load_position=lambda: saved["pos"])
    async with Reading(reader2) as emit2:
        await emit2.wait(1)
    assert emit2.seqs == [3]


async def test_records_carry_segment_and_offset_as_their_identity(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    async with Reading(SpoolReader(spool, static_fields={"host.name": "h"})) as emit:
        await spool.append(line(1) + line(22))
        await emit.wait(2)
    records = [r for b in emit.batches for r in b.records]
    [seg] = segments(tmp_path)
    assert [r["log.file.id"] for r in records] == [f"spool-{int(seg.stem)}"] * 2
    assert [r["log.offset"] for r in records] == [0, len(line(1))]
    assert all(r["host.name"] == "h" for r in records)


@pytest.mark.parametrize("from_memory", [True, False])
async def test_a_records_own_field_wins_over_a_static_field(
    tmp_path: Path, from_memory: bool
) -> None:
    """Static fields fill in what a record lacks, whether the reader takes the records from
    memory or decodes them from the segment (a reader that fell behind, or a restart)."""
    payload = b'{"seq":1,"host.name":"sender"}\n{"seq":2}\n'
    records = [{"seq": 1, "host.name": "sender"}, {"seq": 2}]
    spool = open_spool(tmp_path)
    static = {"host.name": "h", "k8s.pod.name": "p"}
    async with Reading(SpoolReader(spool, static_fields=static)) as emit:
        await spool.append(payload, records if from_memory else None)
        await emit.wait(2)
    first, second = [r for b in emit.batches for r in b.records]
    assert (first["host.name"], first["k8s.pod.name"]) == ("sender", "p")
    assert (second["host.name"], second["k8s.pod.name"]) == ("h", "p")
    assert static == {"host.name": "h", "k8s.pod.name": "p"}


async def test_damaged_line_is_shipped_marked_not_dropped(tmp_path: Path) -> None:
    (tmp_path / segment_name(1)).write_bytes(line(1) + b"\x00\x00garbage\n" + line(2))
    spool = open_spool(tmp_path)
    async with Reading(SpoolReader(spool)) as emit:
        async with asyncio.timeout(5):
            while sum(len(b.records) for b in emit.batches) < 3:
                emit.arrived.clear()
                await emit.arrived.wait()
    records = [r for b in emit.batches for r in b.records]
    assert records[0]["seq"] == 1
    assert "log.parse_error" in records[1]
    assert "garbage" in records[1]["message"]
    assert records[2]["seq"] == 2


async def test_line_longer_than_one_read_is_read_whole(tmp_path: Path) -> None:
    big = msgspec.json.encode({"seq": 7, "pad": "x" * 5000}) + b"\n"
    spool = open_spool(tmp_path)
    async with Reading(SpoolReader(spool, read_bytes=1024)) as emit:
        await spool.append(line(1) + big + line(2))
        await emit.wait(3)
    assert emit.seqs == [1, 7, 2]


def _records(lines: list[bytes]) -> list[dict[str, object]]:
    return [msgspec.json.decode(x) for x in lines]


async def test_records_handed_with_their_lines_ship_exactly_as_the_file_reads_them(
    tmp_path: Path,
) -> None:
    """Records given to ``append`` with their payload reach the reader from memory, with the
    identity (segment, offset), static fields and text messages a read of the file gives; a
    reader after a restart reads the same from the file."""
    lines = [
        b'{"seq":1,"message":"a"}\n',
        b'{"seq":2,"message":{"k":[1,2]},"x":"\\u00e9"}\n',
        b'{"seq":3}\n',
    ]
    spool = open_spool(tmp_path)
    reader = SpoolReader(spool, static_fields={"host.name": "h"}, text_messages=True)
    decoded = 0
    original = SpoolReader._load

    def counting(self: SpoolReader, *args: object) -> object:
        nonlocal decoded
        decoded += 1
        return original(self, *args)  # type: ignore[arg-type]

    async with Reading(reader) as emit:
        SpoolReader._load = counting  # type: ignore[method-assign,assignment]
        try:
            await spool.append(lines[0] + lines[1], _records(lines[:2]))
            await spool.append(lines[2], _records(lines[2:]))
            await emit.wait(3)
        finally:
            SpoolReader._load = original  # type: ignore[method-assign]
    await spool.aclose()
    from_memory = [r for b in emit.batches for r in b.records]
    assert decoded == 0, "the records were read back from the file"

    spool2 = open_spool(tmp_path)
    async with Reading(
        SpoolReader(spool2, static_fields={"host.name": "h"}, text_messages=True)
    ) as emit2:
        await emit2.wait(3)
    await spool2.aclose()
    from_file = [r for b in emit2.batches for r in b.records]
    assert from_memory == from_file
    assert [r["log.offset"] for r in from_memory] == [0, len(lines[0]), len(lines[0] + lines[1])]
    assert from_memory[1]["message"] == '{"k":[1,2]}'
    assert from_memory[2]["message"] == ""


async def test_a_reader_behind_what_memory_keeps_reads_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory holds a bounded amount of what was written; beyond it, and for appends
    without records, the reader reads the file, in order, with nothing lost or repeated."""
    import sidekick.ship.sources.spool as spool_module

    monkeypatch.setattr(spool_module, "MEMORY_BYTES", 3 * len(line(1)))
    spool = open_spool(tmp_path)
    for i in range(10):  # written before anyone reads: only the first ones stay in memory
        await spool.append(line(i), _records([line(i)]))
    await spool.append(line(10) + line(11))  # no records: the file only
    for i in range(12, 15):
        await spool.append(line(i), _records([line(i)]))
    async with Reading(SpoolReader(spool)) as emit:
        await emit.wait(15)
    await spool.aclose()
    assert emit.seqs == list(range(15))
    offsets = [r["log.offset"] for b in emit.batches for r in b.records]
    assert offsets == [i * len(line(1)) for i in range(10)] + [
        10 * len(line(1)) + k * len(line(10)) for k in range(5)
    ]


async def test_memory_keeps_a_bounded_amount_of_records_over_all_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no reader (the outputs down), sealed segments pile up; the records kept for the
    reader stay within ``MEMORY_BYTES`` in all, not per segment, and everything is still
    shipped in order once a reader comes."""
    import sidekick.ship.sources.spool as spool_module

    size = len(line(10))
    monkeypatch.setattr(spool_module, "MEMORY_BYTES", 4 * size)
    spool = open_spool(tmp_path, segment_bytes=3 * size)
    for i in range(10, 40):
        await spool.append(line(i), _records([line(i)]))
    assert len(spool.segments) == 10
    assert sum(seg.memory_bytes for seg in spool.segments.values()) == 4 * size
    assert spool.memory_bytes == 4 * size
    async with Reading(SpoolReader(spool)) as emit:
        await emit.wait(30)
        emit.ack_all()
        await asyncio.sleep(0.05)
        assert spool.memory_bytes == 0
        # Memory is kept again for what is written while the reader keeps up.
        await spool.append(line(40), _records([line(40)]))
        await emit.wait(31)
    await spool.aclose()
    assert emit.seqs == list(range(10, 41))
    assert spool.memory_bytes == 0
