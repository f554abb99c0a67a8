"""Joining continuation lines into records, and where the checkpoint may stop."""

from __future__ import annotations

import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.parsers.multiline import MultilineJoiner

START = r"^\d{4}-\d{2}-\d{2}"
TRACEBACK = [
    "2024-01-02 03:04:05 ERROR request failed",
    "Traceback (most recent call last):",
    '  File "app.py", line 10, in handle',
    "    int(value)",
    "ValueError: invalid literal for int() with base 10: 'x'",
]


def offsets_of(lines: list[str], start: int = 0) -> list[int]:
    out = []
    for line in lines:
        out.append(start)
        start += len(line) + 1
    return out


def test_traceback_joins_into_one_record() -> None:
    j = MultilineJoiner(START)
    lines = [*TRACEBACK, "2024-01-02 03:04:06 INFO next"]
    messages, offsets = j.feed(lines, offsets_of(lines))
    assert messages == ["\n".join(TRACEBACK)]
    assert offsets == [0]


def test_last_group_stays_pending_at_its_first_line_offset() -> None:
    j = MultilineJoiner(START)
    lines = [*TRACEBACK, "2024-01-02 03:04:06 INFO next", "  continued"]
    offs = offsets_of(lines)
    j.feed(lines, offs)
    assert j.pending_offset == offs[5]


def test_group_continues_across_feeds() -> None:
    j = MultilineJoiner(START)
    first = j.feed(TRACEBACK[:2], [0, 41])
    assert first == ([], [])
    assert j.pending_offset == 0
    messages, _ = j.feed([*TRACEBACK[2:], "2024-01-02 03:04:06 INFO next"], [80, 120, 135, 200])
    assert messages == ["\n".join(TRACEBACK)]


def test_flush_emits_the_pending_group_and_clears_the_offset() -> None:
    j = MultilineJoiner(START)
    j.feed(TRACEBACK, offsets_of(TRACEBACK, 500))
    assert j.flush() == (["\n".join(TRACEBACK)], [500])
    assert j.pending_offset is None
    assert j.flush() == ([], [])


def test_lines_before_any_start_line_form_their_own_record() -> None:
    j = MultilineJoiner(START)
    messages, offsets = j.feed(["  orphan", "2024-01-02 x"], [0, 9])
    assert messages == ["  orphan"]
    assert offsets == [0]


def test_max_lines_ends_a_group() -> None:
    j = MultilineJoiner(START, max_lines=2)
    messages, offsets = j.feed(["2024-01-02 a", "b", "c", "d"], [0, 13, 15, 17])
    assert messages == ["2024-01-02 a\nb"]
    assert offsets == [0]
    assert j.pending_offset == 15


def test_max_bytes_ends_a_group() -> None:
    j = MultilineJoiner(START, max_bytes=20)
    messages, _ = j.feed(["2024-01-02 a", "0123456789"], [0, 13])
    assert messages == ["2024-01-02 a"]
    assert j.pending_offset == 13


def test_bad_start_regex_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"--multiline-start '\[': the regex does not compile"):
        MultilineJoiner("[")
