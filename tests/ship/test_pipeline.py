"""The pipeline's delivery rules, driven through scripted sinks that follow the Sink protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from sidekick.core.errors import PermanentError, TemporaryError
from sidekick.ship.acks import AckTracker
from sidekick.ship.deadletter import DEAD_LETTER_FILE, DeadLetter
from sidekick.ship.metrics import ShipMetrics
from sidekick.ship.pipeline import RECORD_OVERHEAD, Pipeline, PipelineSettings
from sidekick.ship.records import DELIVERED, Record, SendResult
from sidekick.ship.sinks.base import BaseSink
from sidekick.ship.sources.base import SourceBatch

Script = Callable[[list[Record]], SendResult]


class ScriptedSink(BaseSink):
    """Answers each send with the next step of a script, then delivers everything."""

    def __init__(self, name: str, steps: list[Script | BaseException] | None = None) -> None:
        self.name = name
        self.steps = list(steps or [])
        self.calls: list[list[str]] = []
        self.delivered: list[str] = []
        self.gate: asyncio.Event | None = None

    async def send(self, records: list[Record]) -> SendResult:
        self.calls.append([r["message"] for r in records])
        if self.gate is not None:
            await self.gate.wait()
        step = self.steps.pop(0) if self.steps else None
        if isinstance(step, BaseException):
            raise step
        result = step(records) if step is not None else DELIVERED
        bad = set(result.retry) | {i for i, _ in result.rejected}
        self.delivered += [r["message"] for i, r in enumerate(records) if i not in bad]
        return result

    async def aclose(self) -> None:
        return None


def make(
    tmp_path: Path, *sinks: ScriptedSink, **settings: float
) -> tuple[Pipeline, CollectorRegistry]:
    registry = CollectorRegistry()
    defaults: dict[str, float] = {"retry_initial": 0.01, "retry_max": 0.02}
    defaults.update(settings)
    pipe = Pipeline(
        list(sinks),
        settings=PipelineSettings(**defaults),  # type: ignore[arg-type]
        metrics=ShipMetrics(registry),
        dead_letter=DeadLetter(tmp_path),
    )
    return pipe, registry


def batch(tracker: AckTracker, end: int, *messages: str) -> SourceBatch:
    return SourceBatch([{"message": m} for m in messages], len(messages), tracker.track(end))


async def run_until_drained(pipe: Pipeline, *batches: SourceBatch) -> None:
    tasks = [asyncio.create_task(o.run()) for o in pipe.outputs]
    try:
        for b in batches:
            await pipe.emit(b)
        await asyncio.wait_for(pipe.drained(), 5)
    finally:
        for t in tasks:
            t.cancel()


async def test_retry_indices_are_sent_again_alone(tmp_path: Path) -> None:
    sink = ScriptedSink("s", [lambda recs: SendResult(retry=[1])])
    pipe, registry = make(tmp_path, sink)
    tracker = AckTracker()
    await run_until_drained(pipe, batch(tracker, 3, "a", "b", "c"))
    assert sink.calls == [["a", "b", "c"], ["b"]]
    assert sorted(sink.delivered) == ["a", "b", "c"]
    assert tracker.committed == 3
    assert registry.get_sample_value("sidekick_ship_records_retried_total", {"output": "s"}) == 1


async def test_a_retry_after_progress_waits_the_first_delay_not_a_grown_one(
    tmp_path: Path,
) -> None:
    # Each answer takes the first record and asks for the rest again: six partial answers.
    def first_only(recs: list[Record]) -> SendResult:
        return SendResult(retry=list(range(1, len(recs))))

    sink = ScriptedSink("s", [first_only] * 6)
    pipe, _registry = make(tmp_path, sink, retry_initial=0.1, retry_max=10.0)
    tracker = AckTracker()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await run_until_drained(pipe, batch(tracker, 7, *"abcdefg"))
    # Six waits of at most 0.1 s; a delay doubling over them would be 0.1 * 63 (at least
    # half of that with jitter).
    assert loop.time() - started < 1.5
    assert sink.delivered == list("abcdefg")
    assert tracker.committed == 7


async def test_retries_without_progress_still_back_off(tmp_path: Path) -> None:
    def none_taken(recs: list[Record]) -> SendResult:
        return SendResult(retry=list(range(len(recs))))

    sink = ScriptedSink("s", [none_taken] * 4)
    pipe, _registry = make(tmp_path, sink, retry_initial=0.1, retry_max=10.0)
    tracker = AckTracker()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await run_until_drained(pipe, batch(tracker, 2, "a", "b"))
    # 0.1 + 0.2 + 0.4 + 0.8, each at least half of itself with jitter.
    assert loop.time() - started >= 0.75
    assert tracker.committed == 2


async def test_rejected_records_go_to_the_dead_letter_file_and_the_rest_is_acked(
    tmp_path: Path,
) -> None:
    sink = ScriptedSink("s", [lambda recs: SendResult(rejected=[(0, "mapper_parsing_exception")])])
    pipe, registry = make(tmp_path, sink)
    tracker = AckTracker()
    await run_until_drained(pipe, batch(tracker, 2, "bad", "good"))
    dead = [msgspec.json.decode(x) for x in (tmp_path / DEAD_LETTER_FILE).read_bytes().splitlines()]
    assert [(d["record"]["message"], d["reason"], d["output"]) for d in dead] == [
        ("bad", "mapper_parsing_exception", "s")
    ]
    assert sink.calls == [["bad", "good"]]
    assert tracker.committed == 2
    assert (
        registry.get_sample_value("sidekick_ship_records_dead_lettered_total", {"output": "s"}) == 1
    )
    assert registry.get_sample_value("sidekick_ship_records_delivered_total", {"output": "s"}) == 1


async def test_temporary_error_retries_the_whole_batch(tmp_path: Path) -> None:
    sink = ScriptedSink("s", [TemporaryError("503"), TemporaryError("503")])
    pipe, registry = make(tmp_path, sink)
    tracker = AckTracker()
    await run_until_drained(pipe, batch(tracker, 2, "a", "b"))
    assert sink.calls == [["a", "b"]] * 3
    assert tracker.committed == 2
    assert registry.get_sample_value("sidekick_ship_records_failed_total", {"output": "s"}) == 4


async def test_unexpected_sink_exception_is_retried_not_dropped(tmp_path: Path) -> None:
    sink = ScriptedSink("s", [RuntimeError("bug")])
    pipe, _ = make(tmp_path, sink)
    tracker = AckTracker()
    await run_until_drained(pipe, batch(tracker, 1, "a"))
    assert sink.delivered == ["a"]


async def test_permanent_error_dead_letters_the_whole_batch(tmp_path: Path) -> None:
    sink = ScriptedSink("s", [PermanentError("HTTP 400: bad")])
    pipe, _ = make(tmp_path, sink)
    tracker = AckTracker()
    await run_until_drained(pipe, batch(tracker, 2, "a", "b"))
    dead = [msgspec.json.decode(x) for x in (tmp_path / DEAD_LETTER_FILE).read_bytes().splitlines()]
    assert [d["record"]["message"] for d in dead] == ["a", "b"]
    assert {d["reason"] for d in dead} == {"HTTP 400: bad"}
    assert tracker.committed == 2


async def test_batch_is_acked_only_when_every_output_delivered_it(tmp_path: Path) -> None:
    fast = ScriptedSink("fast")
    slow = ScriptedSink("slow")
    slow.gate = asyncio.Event()
    pipe, _ = make(tmp_path, fast, slow)
    tracker = AckTracker()
    tasks = [asyncio.create_task(o.run()) for o in pipe.outputs]
    try:
        await pipe.emit(batch(tracker, 5, "x"))
        for _ in range(50):
            await asyncio.sleep(0.01)
        assert fast.delivered == ["x"]
        assert tracker.committed == 0
        slow.gate.set()
        await asyncio.wait_for(pipe.drained(), 5)
        assert tracker.committed == 5
    finally:
        for t in tasks:
            t.cancel()


async def test_big_source_batch_is_split_by_max_records_and_acked_once_all_parts_arrive(
    tmp_path: Path,
) -> None:
    sink = ScriptedSink("s")
    pipe, _ = make(tmp_path, sink, batch_max_records=2)
    tracker = AckTracker()
    await run_until_drained(pipe, batch(tracker, 5, "1", "2", "3", "4", "5"))
    assert sink.calls == [["1", "2"], ["3", "4"], ["5"]]
    assert tracker.committed == 5


async def test_queued_batches_are_merged_while_the_output_is_busy(tmp_path: Path) -> None:
    sink = ScriptedSink("s")
    sink.gate = asyncio.Event()
    pipe, _ = make(tmp_path, sink)
    tracker = AckTracker()
    tasks = [asyncio.create_task(o.run()) for o in pipe.outputs]
    try:
        await pipe.emit(batch(tracker, 1, "a"))
        await asyncio.sleep(0.01)  # "a" is being sent
        await pipe.emit(batch(tracker, 2, "b"))
        await pipe.emit(batch(tracker, 3, "c"))
        sink.gate.set()
        await asyncio.wait_for(pipe.drained(), 5)
    finally:
        for t in tasks:
            t.cancel()
    assert sink.calls == [["a"], ["b", "c"]]
    assert tracker.committed == 3


async def test_emit_waits_while_the_inflight_limit_is_reached(tmp_path: Path) -> None:
    sink = ScriptedSink("s")
    sink.gate = asyncio.Event()
    pipe, registry = make(tmp_path, sink, max_inflight_bytes=RECORD_OVERHEAD)
    tracker = AckTracker()
    tasks = [asyncio.create_task(o.run()) for o in pipe.outputs]
    try:
        await pipe.emit(batch(tracker, 1, "a"))  # reaches the limit
        second = asyncio.create_task(pipe.emit(batch(tracker, 2, "b")))
        await asyncio.sleep(0.05)
        assert not second.done()
        assert registry.get_sample_value("sidekick_ship_backpressure_waits_total") == 1
        sink.gate.set()
        await asyncio.wait_for(second, 5)
        await asyncio.wait_for(pipe.drained(), 5)
    finally:
        for t in tasks:
            t.cancel()
    assert tracker.committed == 2


def test_tracker_commits_only_the_delivered_prefix() -> None:
    commits: list[int] = []
    tracker = AckTracker(0, commits.append)
    a, b, c = tracker.track(10), tracker.track(20), tracker.track(30)
    c.delivered()
    b.delivered()
    assert tracker.committed == 0 and commits == []
    a.delivered()
    assert tracker.committed == 30 and commits == [30]


def test_closed_tracker_stops_reporting_commits() -> None:
    commits: list[int] = []
    tracker = AckTracker(0, commits.append)
    a = tracker.track(10)
    tracker.close()
    a.delivered()
    assert commits == []


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]])
def test_tracker_ends_at_the_last_end_in_any_delivery_order(order: list[int]) -> None:
    tracker = AckTracker(5)
    acks = [tracker.track(end) for end in (10, 20, 30, 40)]
    for i in order:
        acks[i].delivered()
    assert tracker.committed == 40 and tracker.idle


async def assert_emit_waits_for_room(
    pipe: Pipeline,
    sink: ScriptedSink,
    sending: SourceBatch,
    *queued: SourceBatch,
    late: SourceBatch,
) -> None:
    """``sending`` blocks in the sink, ``queued`` fill the queue, so emitting ``late`` waits
    until the sink is let go; then everything is delivered."""
    sink.gate = asyncio.Event()
    tasks = [asyncio.create_task(o.run()) for o in pipe.outputs]
    try:
        await pipe.emit(sending)  # taken by the output, blocked in send
        await asyncio.sleep(0.01)
        for b in queued:
            await pipe.emit(b)
        waiting = asyncio.create_task(pipe.emit(late))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        sink.gate.set()
        await asyncio.wait_for(waiting, 5)
        await asyncio.wait_for(pipe.drained(), 5)
    finally:
        for t in tasks:
            t.cancel()


async def test_emit_waits_while_an_output_has_its_queue_full(tmp_path: Path) -> None:
    sink = ScriptedSink("s")
    # Each one-record batch costs 1 byte of line plus RECORD_OVERHEAD of memory: the queue
    # limit of 2 x RECORD_OVERHEAD is reached by two waiting batches.
    pipe, _ = make(tmp_path, sink, batch_max_bytes=RECORD_OVERHEAD, max_queued_batches=2)
    tracker = AckTracker()
    await assert_emit_waits_for_room(
        pipe,
        sink,
        batch(tracker, 1, "a"),
        batch(tracker, 2, "b"),
        batch(tracker, 3, "c"),
        late=batch(tracker, 4, "d"),
    )
    assert tracker.committed == 4


async def test_the_queue_limit_counts_record_memory_not_line_bytes(tmp_path: Path) -> None:
    # Parsing can make a record many times larger than its line; the queue limit counts the
    # memory, so one waiting batch of large records fills it although its lines are tiny.
    sink = ScriptedSink("s")
    pipe, _ = make(tmp_path, sink, batch_max_bytes=4 * RECORD_OVERHEAD, max_queued_batches=1)
    tracker = AckTracker()

    def parsed(end: int) -> SourceBatch:
        return SourceBatch(
            [{"message": "m", "user_agent.original": "u" * 4096}], 1, tracker.track(end)
        )

    # The one queued batch has one byte of line and over 4 KiB of memory.
    await assert_emit_waits_for_room(pipe, sink, parsed(1), parsed(2), late=parsed(3))
    assert tracker.committed == 3


async def test_sink_concurrency_allows_that_many_batches_in_flight(tmp_path: Path) -> None:
    sink = ScriptedSink("s")
    sink.concurrency = 2
    sink.gate = asyncio.Event()
    pipe, _ = make(tmp_path, sink, batch_max_records=1)
    tracker = AckTracker()
    tasks = [asyncio.create_task(o.run()) for o in pipe.outputs]
    try:
        for i in range(3):
            await pipe.emit(batch(tracker, i + 1, str(i)))
        await asyncio.sleep(0.05)
        assert sink.calls == [["0"], ["1"]]  # two in flight, the third waits for a slot
        # ... in the queue, where the queue limit counts it (not taken off it early).
        assert len(pipe.outputs[0]._queue) == 1
        sink.gate.set()
        await asyncio.wait_for(pipe.drained(), 5)
    finally:
        for t in tasks:
            t.cancel()
    assert tracker.committed == 3


async def test_failure_in_a_concurrent_send_ends_the_output_task(tmp_path: Path) -> None:
    sink = ScriptedSink("s", [PermanentError("HTTP 400")])
    sink.concurrency = 2
    (tmp_path / DEAD_LETTER_FILE).mkdir()  # the dead-letter write fails
    pipe, _ = make(tmp_path, sink)
    task = asyncio.create_task(pipe.outputs[0].run())
    await pipe.emit(batch(AckTracker(), 1, "x"))
    with pytest.raises(IsADirectoryError):
        await asyncio.wait_for(task, 5)
