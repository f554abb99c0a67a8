"""The Fluent forward protocol into ``forward://``: fluent-logger, the four modes, acks."""

from __future__ import annotations

import copy
import gzip
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from fluent import sender
from hypothesis import given, settings
from hypothesis import strategies as st

from sidekick.ship.sources import forward
from sidekick.ship.sources.forward import decode_message
from sidekick.ship.sources.receiver import Stamps
from tests.conftest import free_port
from tests.ship.sources.receivers import receiving


def event_time(t: float) -> msgpack.ExtType:
    sec = int(t)
    return msgpack.ExtType(0, sec.to_bytes(4, "big") + int((t - sec) * 1e9).to_bytes(4, "big"))


def send(port: int, data: bytes, *, want_acks: int = 0, timeout: float = 10.0) -> list[object]:
    """Send ``data`` on a new connection; return the acks read (``want_acks`` of them)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        unpacker = msgpack.Unpacker(raw=False)
        acks: list[object] = []
        while len(acks) < want_acks:
            chunk = s.recv(4096)
            if not chunk:
                break
            unpacker.feed(chunk)
            acks.extend(unpacker)
        return acks


def entries(start: int, n: int) -> list[list[object]]:
    now = time.time()
    return [[event_time(now), {"seq": i, "log": f"line {i}\n"}] for i in range(start, start + n)]


def test_fluent_logger_records_all_arrive_with_tag_and_fields(tmp_path: Path) -> None:
    port = free_port()
    with receiving(tmp_path, f"forward://127.0.0.1:{port}") as rx:
        logger = sender.FluentSender("app", host="127.0.0.1", port=port, nanosecond_precision=True)
        try:
            for i in range(200):
                assert logger.emit("orders", {"seq": i, "message": f"order {i}", "level": "info"})
        finally:
            logger.close()
        records = rx.wait_records(200)
    assert sorted(r["seq"] for r in records) == list(range(200))
    rec = records[0]
    assert rec["fluent.tag"] == "app.orders"
    assert rec["message"].startswith("order ")
    assert rec["level"] == "info"
    assert rec["@timestamp"].endswith("Z") and rec["@timestamp"][:2] == "20"


def test_every_mode_is_acknowledged_after_it_is_durable_and_survives_kill_9(
    tmp_path: Path,
) -> None:
    port, nobody = free_port(), free_port()
    state = tmp_path / "state"
    packed = b"".join(msgpack.packb(e) for e in entries(200, 1000))
    messages = [
        # Message mode with a chunk option.
        msgpack.packb(["web", event_time(time.time()), {"seq": 0}, {"chunk": "c-message"}]),
        # Forward mode.
        msgpack.packb(["web", entries(1, 199), {"chunk": "c-forward", "size": 199}]),
        # PackedForward.
        msgpack.packb(["web", packed, {"chunk": "c-packed", "size": 1000}], use_bin_type=True),
        # CompressedPackedForward.
        msgpack.packb(
            [
                "web",
                gzip.compress(b"".join(msgpack.packb(e) for e in entries(1200, 800))),
                {"chunk": "c-gzip", "size": 800, "compressed": "gzip"},
            ],
            use_bin_type=True,
        ),
    ]
    with receiving(
        tmp_path, f"forward://127.0.0.1:{port}", output=f"http://127.0.0.1:{nobody}/", state=state
    ) as rx:
        acks = send(port, b"".join(messages), want_acks=4)
        assert acks == [{"ack": c} for c in ("c-message", "c-forward", "c-packed", "c-gzip")]
        assert rx.proc.proc is not None
        os.kill(rx.proc.pid, signal.SIGKILL)
        rx.proc.proc.wait(10)
    with receiving(tmp_path, f"forward://127.0.0.1:{port}", state=state) as rx:
        got = rx.wait_records(2000)
    assert sorted({r["seq"] for r in got}) == list(range(2000))
    rec = next(r for r in got if r["seq"] == 5)
    assert (rec["fluent.tag"], rec["message"]) == ("web", "line 5\n")


def test_bad_input_closes_that_connection_counted_and_others_go_on(tmp_path: Path) -> None:
    port = free_port()
    name = f"forward://127.0.0.1:{port}"
    extra = ("--ingest-max-body-bytes", "64KiB", "--ingest-body-timeout", "1s")
    with receiving(tmp_path, name, extra=extra) as rx:
        # Not msgpack at all (0xc1 is never used), a mode that is none of the four, a record
        # that is not a map, an oversize message, gzip that is not gzip.
        for bad in (
            b"\xc1\xc1\xc1",
            msgpack.packb(["tag"]),
            msgpack.packb(["tag", 1, "not a map"]),
            msgpack.packb(["tag", 1, {"x": "y" * 100_000}]),
            msgpack.packb(["tag", b"nope", {"compressed": "gzip"}], use_bin_type=True),
        ):
            assert (
                send(port, bad + msgpack.packb(["t", 1, {"m": 1}, {"chunk": "x"}]), want_acks=1)
                == []
            )
        # A slow sender: half a message, then nothing.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(msgpack.packb(["tag", 1, {"k": "v"}])[:5])
            assert slow.recv(10) == b""  # closed at the body timeout
        # The receiver still serves.
        assert send(port, msgpack.packb(["ok", 1, {"seq": 1}, {"chunk": "good"}]), want_acks=1) == [
            {"ack": "good"}
        ]
        assert len(rx.wait_records(1)) == 1
        assert (
            rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="malformed") == 4
        )
        assert (
            rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="oversize") == 1
        )
        assert rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="slow") == 1
        assert "Traceback" not in rx.proc.log()


def test_a_full_spool_holds_the_sender_back_without_an_ack(tmp_path: Path) -> None:
    port, nobody = free_port(), free_port()
    with receiving(
        tmp_path,
        f"forward://127.0.0.1:{port}",
        output=f"http://127.0.0.1:{nobody}/",
        extra=("--spool-max-bytes", "64KiB"),
    ):
        first = msgpack.packb(["t", entries(0, 500), {"chunk": "one"}])
        assert send(port, first, want_acks=1) == [{"ack": "one"}]
        more = msgpack.packb(["t", entries(500, 300), {"chunk": "two"}])
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(more)
            s.settimeout(2)
            try:
                answer = s.recv(100)
            except TimeoutError:
                answer = None
        assert answer is None  # no ack while the records cannot be stored


def test_decode_keeps_non_string_keys_as_text_and_rejects_bad_times() -> None:
    records, chunk = decode_message(["t", 1700000000, {1: "a"}], 1000, Stamps())
    assert records[0]["1"] == "a" and records[0]["@timestamp"] == "2023-11-14T22:13:20.000000000Z"
    assert chunk is None
    from sidekick.ship.sources.forward import Malformed

    with pytest.raises(Malformed):
        decode_message(["t", [["x", {}]]], 1000, Stamps())


def test_packed_forward_with_a_size_decodes_as_the_stream_does_whatever_the_size_says() -> None:
    # A PackedForward stream with option.size is decoded as one array; a size that does not
    # fit, text that is not UTF-8 or a key msgspec refuses go back to the stream decoder.
    good = [
        [event_time(1700000000.25), {"seq": 0, "log": "a\n", 7: "seven"}],
        [1700000001, {"seq": 1, "message": "b", "nested": {"k": [1, 2.5, None, b"\x00"]}}],
        [1700000001.5, {"seq": 2, "message": "c", "ext": msgpack.ExtType(5, b"xy")}],
    ]
    stream = b"".join(msgpack.packb(e, use_bin_type=True) for e in good)
    bad_utf8 = msgpack.packb([1700000002, {"message": "x"}])[:-2] + b"\xa2\xff\xfe"

    def decode(data: bytes, option: dict[str, object]) -> list[dict[str, object]]:
        records, _ = decode_message(["t", data, option], 1 << 20, Stamps())
        return records

    expected = decode(stream, {})  # no size: the stream decoder alone
    assert [r["seq"] for r in expected] == [0, 1, 2]
    assert expected[0]["message"] == "a\n" and expected[0]["7"] == "seven"
    assert expected[0]["@timestamp"] == "2023-11-14T22:13:20.250000000Z"
    assert expected[2]["@timestamp"] == "2023-11-14T22:13:21.500000000Z"
    assert expected[2]["ext"] == msgpack.ExtType(5, b"xy")
    # The one-call path is taken with the right size...
    fast = forward._packed.decode(b"\xdd" + (3).to_bytes(4, "big") + stream)
    assert [e[1]["seq"] for e in fast] == [0, 1, 2]
    # ...and every size gives what the stream decoder gives.
    for size in (3, 1, 2, 4, 1000, 2**31, -1, "3"):
        assert decode(stream, {"size": size}) == expected, size
    broken = decode(bad_utf8, {"size": 1})
    assert broken[0]["message"] == "\ufffd\ufffd"


_KEYS = st.sampled_from(["message", "log", "@timestamp", "fluent.tag", "level", "seq"])
_VALUES = st.one_of(st.text(max_size=5), st.integers(-5, 5), st.none())
_RECORD = st.dictionaries(st.one_of(_KEYS, st.integers(0, 3)), _VALUES, max_size=4)
_SECONDS = st.integers(-3, 3).map(lambda d: 1_700_000_000 + d)
_TIME = st.one_of(
    _SECONDS,
    _SECONDS.map(lambda s: forward.EventTime(s * 1_000_000_000 + 123)),
    st.sampled_from([10**20, -(10**20), 1.5, True, "x", None]),
)
_ENTRY = st.one_of(
    st.tuples(_TIME, _RECORD).map(list),
    st.sampled_from([[1700000000], [1700000000, {}, 1], "e", [1700000000, [1]]]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.tuples(_SECONDS, _RECORD).map(list), _ENTRY), min_size=1, max_size=6))
def test_whole_message_pass_gives_what_the_entry_loop_gives(entries: list[Any]) -> None:
    """The C-level pass over a message's entries, where it answers, equals the entry loop."""
    fast_in, each_in = copy.deepcopy(entries), copy.deepcopy(entries)
    fast = forward._fast_records(fast_in, "t", Stamps())
    try:
        each = forward._each_record(each_in, "t", Stamps())
    except forward.Malformed:
        assert fast is None
        return
    if fast is not None:
        assert fast == each
        assert [list(r) for r in fast] == [list(r) for r in each]  # the same key order


def test_a_time_past_year_9999_is_malformed_not_a_crash() -> None:
    for t in (10**20, 253_402_300_800, 1e300, float("inf")):
        with pytest.raises(forward.Malformed):
            decode_message(["t", [[t, {"message": "x"}]]], 1000, Stamps())
    records, _ = decode_message(["t", [[253_402_300_799, {}]]], 1000, Stamps())
    assert records[0]["@timestamp"] == "9999-12-31T23:59:59.000000000Z"


_PACKED_TIME = st.one_of(
    _SECONDS,
    _SECONDS.map(lambda s: msgpack.ExtType(0, s.to_bytes(4, "big") + (123).to_bytes(4, "big"))),
    st.sampled_from([1.5, True, "x", None, 2**63, -(2**40)]),
)
_PACKED_ENTRY = st.one_of(
    st.tuples(_PACKED_TIME, _RECORD).map(list),
    st.sampled_from([[1700000000], [1700000000, {}, 1], "e", [1700000000, [1]]]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_SECONDS, _RECORD).map(list) | _PACKED_ENTRY, min_size=1, max_size=5))
def test_a_packed_stream_decodes_alike_with_and_without_its_size(entries: list[Any]) -> None:
    """With its size, a stream is decoded in one call (as (time, map) pairs checked as they are
    decoded, or as anything); without, by the Unpacker: the records, or the refusal, agree."""
    stream = b"".join(msgpack.packb(e, use_bin_type=True) for e in entries)

    def decode(option: dict[str, object]) -> object:
        try:
            return decode_message(["t", stream, option], 1 << 20, Stamps())[0]
        except forward.Malformed:
            return "malformed"

    assert decode({"size": len(entries)}) == decode({})


def test_a_clean_packed_stream_is_checked_as_it_is_decoded() -> None:
    stream = b"".join(msgpack.packb([1700000000, {"seq": i}]) for i in range(3))
    entries, checked = forward._packed_entries(stream, {"size": 3}, 1 << 20)
    assert checked and entries == [(1700000000, {"seq": i}) for i in range(3)]
    odd = msgpack.packb([1700000000, {7: "seven"}])  # a key that is no text: decoded as sent
    entries, checked = forward._packed_entries(odd, {"size": 1}, 1 << 20)
    assert not checked and entries == [[1700000000, {7: "seven"}]]
