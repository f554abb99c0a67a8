"""regex:PATTERN — named groups become fields."""

from __future__ import annotations

import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.parsers import create_parser
from sidekick.ship.records import PARSE_ERROR, Record

PATTERN = r"regex:^(?P<log__level>[A-Z]+) (?P<http__response__status_code>\d+) (?P<rest>.*)"


def parse(spec: str, *lines: str) -> list[Record]:
    records: list[Record] = [{"message": line} for line in lines]
    create_parser(spec).parse(records)
    return records


def test_named_groups_become_fields_with_double_underscore_as_dot() -> None:
    [rec] = parse(PATTERN, "WARN 503 upstream slow")
    assert rec == {
        "message": "WARN 503 upstream slow",
        "log.level": "WARN",
        "http.response.status_code": 503,
        "rest": "upstream slow",
    }


def test_unmatched_optional_group_is_omitted() -> None:
    [rec] = parse(r"regex:(?P<a>x)(?P<b>y)?", "x")
    assert rec == {"message": "x", "a": "x"}


def test_timestamp_group_becomes_timestamp() -> None:
    [rec] = parse(r"regex:^(?P<timestamp>\S+) (?P<msg>.*)", "2024-01-02T03:04:05Z hello")
    assert rec["@timestamp"] == "2024-01-02T03:04:05.000000000Z"
    assert "timestamp" not in rec


def test_unmatched_line_passes_through_marked() -> None:
    [rec] = parse(PATTERN, "nothing here")
    assert rec == {"message": "nothing here", PARSE_ERROR: "regex: the pattern did not match"}


def test_bad_regex_is_a_config_error_naming_value_and_fix() -> None:
    with pytest.raises(ConfigError) as info:
        create_parser("regex:(?P<x>a")
    assert str(info.value) == (
        "--parser 'regex:(?P<x>a': the regex does not compile "
        "(missing ), unterminated subpattern at position 0); fix the pattern"
    )


def test_regex_without_named_groups_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="has no named groups"):
        create_parser(r"regex:\d+")


def test_unknown_parser_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown parser; use one of raw, json"):
        create_parser("xml")
