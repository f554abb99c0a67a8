"""The contract every entry of the parser table (``parsers.PARSERS``) keeps.

Each parser inherits ``BaseParser`` and has the ``Parser`` protocol's members with their
declared types; it parses an empty batch; it leaves a line it cannot read with its message
and ``log.parse_error``; it never raises, drops or reorders on odd input (non-ASCII, empty,
1 MiB, not a string); and its joiner, if it has one, keeps every line it is fed.

A new parser gets its sample lines (and, if it takes one, an argument) below; the tests fail
until it has them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, get_type_hints

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidekick.core.errors import ConfigError
from sidekick.ship.parsers import PARSER_NAMES, PARSERS, create_parser, parser_class
from sidekick.ship.parsers.base import BaseParser
from sidekick.ship.parsers.multiline import MultilineJoiner
from sidekick.ship.records import MESSAGE, PARSE_ERROR, Joiner, Parser, Record

T1 = "2024-05-01T10:00:00.123456789Z"
T2 = "2024-05-01T10:00:01.5Z"
ACCESS = '1.2.3.4 - bob [02/Jan/2024:03:04:05 +0100] "GET /a?b=1 HTTP/1.1" 200 512 "-" "curl/8"'


def docker(log: str, stream: str = "stdout", time: str = T1) -> str:
    return json.dumps({"log": log, "stream": stream, "time": time}, separators=(",", ":"))


# What follows "name:" for the parsers that take an argument.
ARGUMENTS = {"regex": r"^(?P<log__level>[A-Z]+): (?P<message>.*)"}

# Lines each parser reads without a parse error.
SAMPLES: dict[str, list[str]] = {
    "raw": ["anything at all", ""],
    "json": ['{"message": "hi", "level": "info", "http": {"method": "GET"}}'],
    "nginx": [
        ACCESS,
        '2024/01/02 03:04:05 [error] 12#0: *5 open() "/x" failed, client: 1.2.3.4, '
        'server: web, request: "GET /x HTTP/1.1", host: "y"',
    ],
    "apache": [
        ACCESS,
        "[Tue Jan 02 03:04:05.123456 2024] [core:error] [pid 123:tid 140000] "
        "[client 1.2.3.4:5678] AH00126: Invalid URI in request GET /x HTTP/1.1",
    ],
    "cri": [
        f"{T1} stdout F whole line",
        f"{T2} stderr P first piece, ",
        f"{T2} stderr F last piece",
        f"{T1} stdout F",
    ],
    "docker": [
        docker("whole line\n"),
        docker("first piece, ", "stderr"),
        docker("end\n", "stderr"),
    ],
    "regex": ["INFO: started", "ERROR: failed é"],
}

# No table parser reads this line (but ``raw``, which reads every line as it is).
UNREADABLE = "\x00 this is no log line of any format {"
READS_EVERYTHING = {"raw"}

MIB = 1 << 20
ODD_MESSAGES: list[Any] = [
    "é ü 中文 🙂 \u200b",
    "",
    " ",
    "\udcff lone surrogate",
    "x" * MIB,
    '{"log":"' + "y" * MIB,
    ACCESS + " " + "z" * MIB,
    "[" * 100_000,
    '{"a":' * 10_000,
]
NOT_TEXT: list[Any] = [None, 42, 4.2, True, b"bytes", ["a"], {"a": 1}]


def build(name: str) -> BaseParser:
    argument = PARSERS[name][2]
    return create_parser(f"{name}:{ARGUMENTS[name]}" if argument else name)


def parse(name: str, messages: list[Any]) -> list[Record]:
    records: list[Record] = [{MESSAGE: m, "log.offset": i} for i, m in enumerate(messages)]
    build(name).parse(records)
    return records


names = pytest.mark.parametrize("name", sorted(PARSERS))


def test_every_parser_has_samples_and_arguments() -> None:
    assert set(SAMPLES) == set(PARSERS)
    assert set(ARGUMENTS) == {n for n, (_m, _c, arg) in PARSERS.items() if arg is not None}


@names
def test_parser_has_the_protocols_members_with_their_declared_types(name: str) -> None:
    parser = build(name)
    assert isinstance(parser, BaseParser)
    assert type(parser) is parser_class(name)
    hints = get_type_hints(Parser)
    assert set(hints) == {"name", "column_names"}
    assert isinstance(parser.name, str) and parser.name == name
    assert isinstance(parser.column_names, tuple)
    assert all(isinstance(c, str) for c in parser.column_names)
    for method in ("joiner", "columns", "parse"):
        declared = inspect.signature(getattr(Parser, method))
        actual = inspect.signature(getattr(type(parser), method))
        assert list(actual.parameters) == list(declared.parameters), method
    joiner = parser.joiner(1024)
    if joiner is not None:
        check_joiner(joiner)
    # Columns are given only by a parser that names them, one per name.
    columns = parser.columns(SAMPLES[name][:1])
    if not parser.column_names:
        assert columns is None
    elif columns is not None:
        assert len(columns) == len(parser.column_names)
        assert all(len(c) == 1 for c in columns)


def check_joiner(joiner: Joiner) -> None:
    assert joiner.flags is None or isinstance(joiner.flags, list)
    assert joiner.pending_offset is None
    for method in ("feed", "flush"):
        declared = inspect.signature(getattr(Joiner, method))
        actual = inspect.signature(getattr(type(joiner), method))
        assert list(actual.parameters) == list(declared.parameters), method
    assert joiner.feed([], []) == ([], [])
    assert joiner.flush() == ([], [])


def test_multiline_joiner_has_the_joiner_protocols_members() -> None:
    check_joiner(MultilineJoiner(r"^\d"))


@names
def test_parser_parses_an_empty_batch(name: str) -> None:
    parser = build(name)
    records: list[Record] = []
    parser.parse(records)
    assert records == []
    columns = parser.columns([])
    assert columns is None or all(len(c) == 0 for c in columns)


@names
def test_samples_parse_without_error(name: str) -> None:
    records = parse(name, SAMPLES[name])
    assert [PARSE_ERROR in r for r in records] == [False] * len(records)
    assert all(isinstance(r[MESSAGE], str) for r in records)


@names
def test_unreadable_line_keeps_its_message_and_gets_a_parse_error(name: str) -> None:
    (rec,) = parse(name, [UNREADABLE])
    assert rec[MESSAGE] == UNREADABLE
    if name in READS_EVERYTHING:
        assert rec == {MESSAGE: UNREADABLE, "log.offset": 0}
    else:
        assert isinstance(rec[PARSE_ERROR], str) and rec[PARSE_ERROR].startswith(name + ": ")


@names
def test_odd_text_never_raises_drops_or_reorders(name: str) -> None:
    messages = [*ODD_MESSAGES, *SAMPLES[name], UNREADABLE]
    records = parse(name, messages)
    assert [r["log.offset"] for r in records] == list(range(len(messages)))
    for rec, original in zip(records, messages, strict=True):
        assert isinstance(rec.get(MESSAGE), str)
        if PARSE_ERROR in rec:
            assert rec[MESSAGE] == original


@names
def test_message_that_is_not_text_is_marked_not_fatal(name: str) -> None:
    records: list[Record] = [{MESSAGE: m, "log.offset": i} for i, m in enumerate(NOT_TEXT)]
    records.append({"log.offset": len(NOT_TEXT)})  # no message at all
    build(name).parse(records)
    assert [r["log.offset"] for r in records] == list(range(len(NOT_TEXT) + 1))
    for rec, original in zip(records, [*NOT_TEXT, None], strict=True):
        assert rec.get(MESSAGE) == original
        if name in READS_EVERYTHING:
            assert PARSE_ERROR not in rec
        else:
            assert rec[PARSE_ERROR] == f"{name}: the record has no text message"


@names
def test_a_mixed_batch_parses_like_its_lines_one_by_one(name: str) -> None:
    """Batch fast paths (one pattern over the batch, columns) give what lines alone give."""
    messages = [*SAMPLES[name], UNREADABLE, 7, *SAMPLES[name]]
    together = parse(name, messages)
    alone = [parse(name, [m])[0] | {"log.offset": i} for i, m in enumerate(messages)]
    assert together == alone


# -- joiners: nothing lost ---------------------------------------------------------------------

JOINING = sorted(n for n in PARSERS if build(n).joiner(64) is not None)
# Text without a newline (the runtimes split lines at newlines, so a piece holds none).
text = st.text(alphabet=st.sampled_from('ab é中 {}"\\:'), max_size=40)
ODD_LINES = ["", "no log line", "{", "é ü 中文", "2024 stdout X bad tag"]


def runtime_line(name: str) -> st.SearchStrategy[str]:
    """One line of the runtime's format: a piece or a whole line of stdout or stderr."""
    stream = st.sampled_from(["stdout", "stderr"])
    time = st.sampled_from([T1, T2])
    if name == "cri":
        tag = st.sampled_from(["P", "F"])
        return st.builds(lambda t, s, g, x: f"{t} {s} {g} {x}", time, stream, tag, text)
    if name == "docker":
        end = st.sampled_from(["", "\n"])
        return st.builds(lambda t, s, e, x: docker(x + e, s, t), time, stream, end, text)
    raise AssertionError(f"{name} joins lines: give it a line strategy here")


def by_stream(name: str, lines: list[str]) -> dict[object, str]:
    """Each stream's text, parsed, in order (lines of no stream under ``None``)."""
    out: dict[object, list[str]] = {}
    for rec in parse(name, lines):
        out.setdefault(rec.get("log.iostream"), []).append(rec[MESSAGE])
    return {k: "".join(v) for k, v in out.items() if any(v)}


def feed_all(
    joiner: Joiner, chunks: list[list[str]], flush_after: Callable[[int], bool]
) -> tuple[list[str], list[int]]:
    out: list[str] = []
    out_offsets: list[int] = []
    offset = 0
    for i, chunk in enumerate(chunks):
        offsets = []
        for line in chunk:
            offsets.append(offset)
            offset += len(line) + 1
        got, got_offsets = joiner.feed(chunk, offsets)
        assert joiner.flags is None or len(joiner.flags) == len(got)
        assert len(got) == len(got_offsets)
        out += got
        out_offsets += got_offsets
        if flush_after(i):
            got, got_offsets = joiner.flush()
            assert joiner.flags is None or len(joiner.flags) == len(got)
            assert joiner.pending_offset is None
            out += got
            out_offsets += got_offsets
    got, got_offsets = joiner.flush()
    assert joiner.pending_offset is None
    return out + got, out_offsets + got_offsets


@pytest.mark.parametrize("name", JOINING)
@settings(max_examples=200, deadline=None)
@given(data=st.data(), max_bytes=st.integers(min_value=1, max_value=80))
def test_joiner_keeps_every_line(name: str, data: st.DataObject, max_bytes: int) -> None:
    line = st.one_of(runtime_line(name), st.sampled_from(ODD_LINES))
    chunks = data.draw(st.lists(st.lists(line, max_size=8), max_size=6))
    flushes = data.draw(st.sets(st.integers(min_value=0, max_value=5)))
    joiner = build(name).joiner(max_bytes)
    assert joiner is not None
    out, offsets = feed_all(joiner, chunks, flushes.__contains__)
    fed = [x for chunk in chunks for x in chunk]
    # Every line's text is in the output, in its stream's order, and nothing else is.
    assert by_stream(name, out) == by_stream(name, fed)
    # Each record starts at the offset of a line fed.
    starts = set()
    o = 0
    for x in fed:
        starts.add(o)
        o += len(x) + 1
    assert set(offsets) <= starts


def test_joined_lines_are_marked_only_where_pieces_were_shipped_apart() -> None:
    joiner = build("cri").joiner(1 << 20)
    assert joiner is not None
    lines = [f"{T1} stdout P a", f"{T1} stdout F b", f"{T1} stderr P c"]
    out, _ = joiner.feed(lines, [0, 10, 20])
    assert out == [f"{T1} stdout F ab"] and joiner.flags is None
    out, _ = joiner.flush()
    assert out == [f"{T1} stderr P c"] and joiner.flags == [["partial"]]
    out, _ = joiner.feed([f"{T1} stderr F d"], [30])
    assert out == [f"{T1} stderr F d"] and joiner.flags == [["partial", "partial_end"]]


# -- the table ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", PARSER_NAMES)
def test_every_name_the_table_lists_builds(spec: str) -> None:
    name, _sep, _arg = spec.partition(":")
    parser = build(name)
    assert parser.name == name


@pytest.mark.parametrize("spec", ["", "nope", "json:x", "regex", "raw:", "JSON"])
def test_unknown_parser_is_one_sentence_listing_the_table(spec: str) -> None:
    with pytest.raises(ConfigError) as err:
        create_parser(spec)
    message = str(err.value)
    assert message.startswith(f"--parser {spec!r}: unknown parser; use one of ")
    assert all(n in message for n in PARSER_NAMES)
