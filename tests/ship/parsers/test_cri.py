"""``--parser cri``: containerd / CRI-O lines parsed, and partial (P) lines joined per stream."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add

from hypothesis import given, settings
from hypothesis import strategies as st

from sidekick.ship.parsers import create_parser
from sidekick.ship.parsers._container import PartialJoiner
from sidekick.ship.parsers.cri import (
    CriParser,
    _classify,
    _columns_fixed,
    _columns_split,
    _render,
)
from sidekick.ship.records import FLAGS, PARSE_ERROR, Record

T1 = "2024-05-01T10:00:00.123456789Z"
T2 = "2024-05-01T10:00:01.5Z"


def parse(*messages: str) -> list[Record]:
    records: list[Record] = [{"message": m, "log.offset": i} for i, m in enumerate(messages)]
    create_parser("cri").parse(records)
    return records


def feed(joiner: object, lines: list[str], start: int = 0) -> tuple[list[str], list[int]]:
    offsets = []
    o = start
    for line in lines:
        offsets.append(o)
        o += len(line) + 1
    return joiner.feed(lines, offsets)  # type: ignore[attr-defined,no-any-return]


def test_full_line_gives_time_stream_and_message() -> None:
    (rec,) = parse(f"{T1} stdout F GET / 200")
    assert (rec["@timestamp"], rec["log.iostream"], rec["message"]) == (T1, "stdout", "GET / 200")
    assert FLAGS not in rec and PARSE_ERROR not in rec


def test_trimmed_fraction_is_padded_to_nanoseconds_and_offsets_become_utc() -> None:
    short, whole, offset = parse(
        f"{T2} stderr F x",
        "2024-05-01T10:00:02Z stdout F y",
        "2024-05-01T12:00:00.25+02:00 stdout F z",
    )
    assert short["@timestamp"] == "2024-05-01T10:00:01.500000000Z"
    assert short["log.iostream"] == "stderr"
    assert whole["@timestamp"] == "2024-05-01T10:00:02.000000000Z"
    assert offset["@timestamp"] == "2024-05-01T10:00:00.250000000Z"


def test_empty_message_and_extra_tags() -> None:
    empty, tagged = parse(f"{T1} stdout F ", f"{T1} stdout F:x spaced  text ")
    assert empty["message"] == ""
    assert tagged["message"] == "spaced  text "


def test_unjoined_partial_line_is_marked_partial() -> None:
    (rec,) = parse(f"{T1} stdout P first half")
    assert rec["message"] == "first half" and rec[FLAGS] == ["partial"]


def test_lines_in_other_formats_keep_their_message_with_a_parse_error() -> None:
    bad_stream, bad_tag, bad_time, short = parse(
        f"{T1} stdin F x", f"{T1} stdout Q x", "yesterday stdout F x", "only two"
    )
    assert bad_stream["message"] == f"{T1} stdin F x"
    assert "not a CRI log line" in bad_stream[PARSE_ERROR]
    assert "neither P nor F" in bad_tag[PARSE_ERROR]
    assert "not RFC 3339" in bad_time[PARSE_ERROR]
    assert "@timestamp" not in bad_time
    assert PARSE_ERROR in short


def test_partial_lines_join_with_their_full_line_at_the_first_pieces_offset() -> None:
    j = CriParser().joiner(1 << 20)
    lines = [
        f"{T1} stdout F before",
        f"{T1} stdout P abc",
        f"{T2} stdout P def",
        f"{T2} stdout F ghi",
    ]
    messages, offsets = feed(j, lines)
    assert messages == [lines[0], f"{T1} stdout F abcdefghi"]
    assert offsets == [0, len(lines[0]) + 1]
    assert j.pending_offset is None and j.flags is None


def test_streams_join_separately_and_lines_of_the_other_stream_pass_through() -> None:
    j = CriParser().joiner(1 << 20)
    lines = [
        f"{T1} stdout P out-1 ",
        f"{T1} stderr F an error",
        f"{T1} stderr P err-1 ",
        f"{T2} stdout F out-2",
        f"{T2} stderr F err-2",
    ]
    messages, offsets = feed(j, lines)
    assert messages == [lines[1], f"{T1} stdout F out-1 out-2", f"{T1} stderr F err-1 err-2"]
    starts = [sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines))]
    assert offsets == [starts[1], starts[0], starts[2]]


def test_pending_group_holds_the_checkpoint_at_its_first_byte_across_feeds() -> None:
    j = CriParser().joiner(1 << 20)
    first = [f"{T1} stdout F done", f"{T1} stdout P pending "]
    messages, _ = feed(j, first)
    assert messages == [first[0]]
    start = len(first[0]) + 1
    assert j.pending_offset == start
    more = [f"{T1} stderr F other stream", f"{T1} stdout P still "]
    messages, _ = feed(j, more, start=100)
    assert messages == [more[0]] and j.pending_offset == start
    messages, offsets = feed(j, [f"{T1} stdout F end"], start=200)
    assert messages == [f"{T1} stdout F pending still end"] and offsets == [start]
    assert j.pending_offset is None


def test_group_longer_than_max_bytes_ships_in_marked_pieces_of_that_size() -> None:
    j = CriParser().joiner(10)
    lines = [f"{T1} stdout P {'a' * 8}", f"{T1} stdout P {'b' * 8}", f"{T1} stdout F {'c' * 8}"]
    messages, offsets = feed(j, lines)
    # The final line's text counts too: before, the last record was 14 characters long.
    assert [m.split(" ", 3)[3] for m in messages] == ["aaaaaaaabb", "bbbbbbcccc", "cccc"]
    assert [m.split(" ", 3)[2] for m in messages] == ["P", "P", "F"]
    assert j.flags == [["partial"], ["partial"], ["partial", "partial_end"]]
    # A piece that starts inside a line has that line's offset.
    assert offsets == [0, len(lines[0]) + 1, 2 * (len(lines[0]) + 1)]


def test_a_single_line_longer_than_max_bytes_ships_in_pieces_with_its_time_and_stream() -> None:
    # Before, a full line passed whole however long (no group to cut), and the same went for
    # a P and F pair each within max_bytes but longer together (the usual run).
    j = CriParser().joiner(10)
    messages, offsets = feed(j, [f"{T1} stdout F short", f"{T2} stderr F {'x' * 25}"])
    assert [m.split(" ", 3)[1:] for m in messages] == [
        ["stdout", "F", "short"],
        ["stderr", "P", "x" * 10],
        ["stderr", "P", "x" * 10],
        ["stderr", "F", "x" * 5],
    ]
    assert all(m.startswith(T1 if i == 0 else T2) for i, m in enumerate(messages))
    assert j.flags == [None, ["partial"], ["partial"], ["partial", "partial_end"]]
    second = len(f"{T1} stdout F short") + 1
    assert offsets == [0, second, second, second] and j.pending_offset is None
    messages, _ = feed(j, [f"{T1} stdout P {'a' * 8}", f"{T1} stdout F {'b' * 8}"])
    assert [m.split(" ", 3)[3] for m in messages] == ["aaaaaaaabb", "bbbbbb"]


def test_pending_offset_moves_to_the_first_line_whose_text_is_not_shipped() -> None:
    j = CriParser().joiner(10)
    lines = [f"{T1} stdout P {'a' * 8}", f"{T1} stdout P {'b' * 8}"]
    messages, _ = feed(j, lines)
    assert messages == [f"{T1} stdout P aaaaaaaabb"]
    assert j.pending_offset == len(lines[0]) + 1


def test_flush_ships_pending_groups_partial_and_their_rest_is_partial_end() -> None:
    j = CriParser().joiner(1 << 20)
    feed(j, [f"{T1} stdout P slow ", f"{T1} stderr P also "])
    messages, offsets = j.flush()
    assert messages == [f"{T1} stdout P slow ", f"{T1} stderr P also "]
    assert offsets == [0, len(f"{T1} stdout P slow ") + 1]
    assert j.flags == [["partial"], ["partial"]] and j.pending_offset is None
    messages, _ = feed(j, [f"{T2} stdout F line", f"{T2} stdout F next"], start=500)
    assert messages == [f"{T2} stdout F line", f"{T2} stdout F next"]
    assert j.flags == [["partial", "partial_end"], None]


def test_lines_without_partials_pass_through_as_the_same_list() -> None:
    j = CriParser().joiner(1 << 20)
    lines = [f"{T1} stdout F a P b", f"{T1} stdout F c"]
    messages, offsets = feed(j, lines)
    assert messages == lines and offsets == [0, len(lines[0]) + 1]


stream = st.sampled_from(["stdout", "stderr"])
text = st.text(alphabet=st.sampled_from("ab PF\u00e9"), max_size=12)
line = st.tuples(stream, st.booleans(), text)


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.lists(line, max_size=6), max_size=6), limit=st.integers(3, 40))
def test_joining_keeps_every_streams_text_in_order_and_never_passes_a_pending_group(
    chunks: list[list[tuple[str, bool, str]]], limit: int
) -> None:
    j = CriParser().joiner(limit)
    got: dict[str, str] = {"stdout": "", "stderr": ""}
    want: dict[str, str] = {"stdout": "", "stderr": ""}
    # (offset of the line, stream, where its text ends in that stream's text)
    fed: list[tuple[int, str, int]] = []
    offset = 0
    for chunk in chunks:
        lines = [f"{T1} {s} {'P' if p else 'F'} {t}" for s, p, t in chunk]
        start = offset
        for (s, _p, t), raw in zip(chunk, lines, strict=True):
            want[s] += t
            fed.append((offset, s, len(want[s])))
            offset += len(raw) + 1
        messages, _offsets = feed(j, lines, start=start)
        records: list[Record] = [{"message": m} for m in messages]
        CriParser().parse(records)
        for rec in records:
            got[rec["log.iostream"]] += rec["message"]
            assert len(rec["message"]) <= limit
        # At least once: the checkpoint never passes a line whose text is not all shipped.
        unshipped = [o for o, s, end in fed if end > len(got[s])]
        if unshipped:
            assert j.pending_offset is not None and j.pending_offset <= min(unshipped)
    messages, _ = j.flush()
    records = [{"message": m} for m in messages]
    CriParser().parse(records)
    for rec in records:
        got[rec["log.iostream"]] += rec["message"]
    assert got == want


def test_columns_of_a_batch_match_what_parse_gives_each_record() -> None:
    batch = [f"{T1} stdout F a b", f"{T2} stderr F ", "2024-05-01T10:00:02Z stdout F c"]
    columns = CriParser().columns(batch)
    assert columns is not None
    records = parse(*batch)
    assert [list(c) for c in columns] == [
        [r["@timestamp"] for r in records],
        [r["log.iostream"] for r in records],
        [r["message"] for r in records],
    ]


def test_columns_leave_batches_with_other_lines_to_parse() -> None:
    p = CriParser()
    assert p.columns([f"{T1} stdout F ok", f"{T1} stdout P piece"]) is None
    assert p.columns([f"{T1} stdout F ok", "2024-13-01T10:00:00Z stdout F bad month"]) is None
    assert p.columns([f"{T1} stdout F ok", "2024-05-01T10:00:00+02:00 stdout F offset"]) is None
    assert p.columns([f"{T1} stdout F ok", f"{T1} stdin F x"]) is None
    assert p.columns([f"{T1} stdout F ok", "2024-05-01T10:00:00.1234567890Z stdout F x"]) is None


# -- the batch paths against the line-by-line ones ----------------------------------------------


def old_candidates(lines: list[str]) -> list[int]:
    """How the joiner found its candidate lines before: line starts summed from lengths."""
    text = "\n".join(lines)
    hits = [m.start() for m in re.finditer(r" P[ :]", text)]
    starts = list(accumulate(map(add, map(len, lines), repeat(1)), initial=0))
    return sorted({bisect_right(starts, h) - 1 for h in hits})


class LineByLine(PartialJoiner):
    """The joiner without its shortcut for a partial line's run of pieces: every line that
    may be partial, and every line while a group is pending, goes through the groups."""

    def _run(self, lines: list[str], i: int) -> None:
        return None


def each(messages: list[str]) -> list[Record]:
    records: list[Record] = [{"message": m} for m in messages]
    CriParser()._parse_each(records)
    return records


def as_lists(columns: tuple[Sequence[str], ...] | None) -> list[list[str]] | None:
    return None if columns is None else [list(c) for c in columns]


FRACTION = st.integers(0, 10**9 - 1).map(lambda n: f".{n:09d}".rstrip("0").rstrip("."))
TEXT = st.text(alphabet=st.sampled_from("ab PF:\t\u00e9Z0"), max_size=12)
# Each part of a line: (what containerd writes, what it does not). A line with a defect has
# one part of the second kind, so it is near the format (often just one character off).
PARTS = {
    "date": (
        st.sampled_from(["2024-05-01", "2024-02-29", "2023-12-31"]),
        st.sampled_from(["2023-02-29", "2024-04-31", "0000-01-01", "2024-13-01", "2024-5-01"]),
    ),
    "clock": (
        st.sampled_from(["10:00:00", "10:00:59", "10:01:00", "23:59:59", "00:00:01"]),
        st.sampled_from(["24:00:00", "10:60:00", "10:00:60", "10:00:99", "10:0:00"]),
    ),
    "fraction": (
        st.one_of(FRACTION, FRACTION, FRACTION, st.sampled_from(["", "."])),
        st.sampled_from([".1234567890", "x5", ".12345678\uff15", ",5", ".12345678 "]),
    ),
    "zone": (st.just("Z"), st.sampled_from(["z", "", "+02:00", "-05:30", "+", "ZZ"])),
    "stream": (st.sampled_from(["stdout", "stderr"]), st.sampled_from(["stdin", "", "STDOUT"])),
    "tag": (st.just("F"), st.sampled_from(["P", "F:x", "P:", "Q", "", "f"])),
    "text": (TEXT.map(" {}".format), st.sampled_from(["", "\t"])),
}


@st.composite
def cri_line(draw: st.DrawFn, defect: bool) -> str:
    values = {name: draw(good) for name, (good, _bad) in PARTS.items()}
    if defect:
        name = draw(st.sampled_from(sorted(PARTS)))
        values[name] = draw(PARTS[name][1])
    return "{date}T{clock}{fraction}{zone} {stream} {tag}{text}".format(**values)


GOOD_LINE = cri_line(defect=False)
BATCH = st.one_of(
    st.lists(GOOD_LINE, min_size=1, max_size=20),
    # One defect among good lines: the batch paths must notice it, wherever it is.
    st.builds(
        lambda good, bad, at: [*good[:at], bad, *good[at:]],
        st.lists(GOOD_LINE, max_size=20),
        cri_line(defect=True),
        st.integers(0, 20),
    ),
    st.lists(st.one_of(GOOD_LINE, cri_line(defect=True)), min_size=1, max_size=20),
    st.lists(st.sampled_from(["yesterday", "", " stdout F x", "P"]) | GOOD_LINE, min_size=1),
)


@settings(max_examples=1000, deadline=None)
@given(batch=BATCH)
def test_columns_cut_at_fixed_places_equal_the_lines_split_and_parsed_one_by_one(
    batch: list[str],
) -> None:
    fixed = as_lists(_columns_fixed(batch))
    split = as_lists(_columns_split(batch))
    assert fixed is None or fixed == split
    assert as_lists(CriParser().columns(batch)) == split
    if split is not None:
        records = each(batch)
        assert split == [[r[k] for r in records] for k in CriParser.column_names]
        if all(len(m.split(" ", 1)[0]) == 30 for m in batch):
            assert fixed is not None


@settings(max_examples=500, deadline=None)
@given(batch=BATCH)
def test_parse_of_a_batch_equals_parsing_each_line(batch: list[str]) -> None:
    assert parse(*batch) == [{**r, "log.offset": i} for i, r in enumerate(each(batch))]


def test_columns_cut_at_fixed_places_take_trimmed_fractions_and_both_streams() -> None:
    batch = [
        f"{T1} stdout F a b",
        f"{T2} stderr F ",
        "2024-05-01T10:00:02Z stdout F c",
        "2024-05-01T10:00:02.12345678Z stdout F d",
    ] + [f"{T1} stderr F line {i}" for i in range(12)]
    fixed = _columns_fixed(batch)
    assert fixed is not None
    assert as_lists(fixed) == as_lists(_columns_split(batch))
    assert fixed[0][:4] == [
        T1,
        "2024-05-01T10:00:01.500000000Z",
        "2024-05-01T10:00:02.000000000Z",
        "2024-05-01T10:00:02.123456780Z",
    ]


def test_columns_check_every_second_within_a_minute_and_across_minutes() -> None:
    p = CriParser()
    in_minute = [f"{T1} stdout F ok", "2024-05-01T10:00:61.000000000Z stdout F bad second"]
    assert p.columns(in_minute) is None
    across = [f"{T1} stdout F ok", "2023-02-29T10:00:00.000000000Z stdout F no such day"]
    assert p.columns(across) is None
    assert "not RFC 3339" in parse(*in_minute)[1][PARSE_ERROR]
    assert "not RFC 3339" in parse(*across)[1][PARSE_ERROR]
    good = [f"{T1} stdout F a", "2024-02-29T23:59:59.000000001Z stderr F leap day"]
    assert as_lists(p.columns(good)) == [
        [T1, "2024-02-29T23:59:59.000000001Z"],
        ["stdout", "stderr"],
        ["a", "leap day"],
    ]


def test_a_time_with_something_else_where_the_fraction_starts_is_a_parse_error() -> None:
    batch = [f"{T1} stdout F ok", "2024-05-01T10:00:00x5Z stdout F odd"]
    assert CriParser().columns(batch) is None
    assert PARSE_ERROR in parse(*batch)[1]


# Characters of two and four bytes move byte offsets away from the places in the text.
JOIN_TEXT = st.text(alphabet=st.sampled_from("ab PF:\u00e9\U0001f600"), max_size=20)
JOIN_LINE = st.builds(
    "{} {} {}{}".format,
    st.sampled_from([T1, T2, "2024-05-01T10:00:02Z", "t\u00e9"]),
    st.sampled_from(["stdout", "stderr", "stdout", "stderr", "stdin"]),
    st.sampled_from(["F", "P", "F", "P", "P:x", "F:y", "Q"]),
    st.one_of(JOIN_TEXT.map(" {}".format), JOIN_TEXT.map(" {}".format), st.just("")),
)


@settings(max_examples=500, deadline=None)
@given(chunks=st.lists(st.lists(JOIN_LINE, max_size=8), max_size=6), limit=st.integers(3, 60))
def test_joiner_equals_the_line_by_line_joiner_that_sums_line_lengths(
    chunks: list[list[str]], limit: int
) -> None:
    new = CriParser().joiner(limit)
    old = LineByLine(candidates=old_candidates, classify=_classify, render=_render, max_bytes=limit)
    offset = 0
    for chunk in chunks:
        # As the tail gives them: each line starts its length in bytes and a newline later.
        offsets = []
        for line in chunk:
            offsets.append(offset)
            offset += len(line.encode()) + 1
        assert new.feed(chunk, offsets) == old.feed(chunk, offsets)
        assert (new.flags, new.pending_offset) == (old.flags, old.pending_offset)
    assert new.flush() == old.flush()
    assert new.flags == old.flags


def test_partial_lines_after_text_of_several_bytes_a_character_are_joined() -> None:
    j = CriParser().joiner(1 << 20)
    lines = [f"{T1} stdout F " + "\u00e9" * 50, f"{T1} stdout P ab", f"{T2} stdout F cd"]
    offsets = [0, len(lines[0].encode()) + 1, len(lines[0].encode()) + len(lines[1]) + 2]
    messages, got = j.feed(lines, offsets)
    assert messages == [lines[0], f"{T1} stdout F abcd"] and got == offsets[:2]
