"""JSON object messages merged into records."""

from __future__ import annotations

from sidekick.ship.parsers import create_parser
from sidekick.ship.records import PARSE_ERROR, Record


def parse(*lines: str, **extra: object) -> list[Record]:
    records: list[Record] = [{"message": line, **extra} for line in lines]
    create_parser("json").parse(records)
    return records


def test_keys_are_merged_and_nested_objects_flattened() -> None:
    [rec] = parse('{"level": "info", "http": {"request": {"method": "GET"}, "status": 200}}')
    assert rec["level"] == "info"
    assert rec["http.request.method"] == "GET"
    assert rec["http.status"] == 200


def test_arrays_are_kept_as_values() -> None:
    [rec] = parse('{"tags": ["a", "b"]}')
    assert rec["tags"] == ["a", "b"]


def test_message_field_replaces_the_message() -> None:
    [rec] = parse('{"message": "user logged in", "user": "bob"}')
    assert rec["message"] == "user logged in"


def test_msg_field_replaces_the_message() -> None:
    [rec] = parse('{"msg": "started", "pid": 1}')
    assert rec["message"] == "started"
    assert "msg" not in rec


def test_rfc3339_time_with_offset_becomes_timestamp() -> None:
    [rec] = parse('{"time": "2024-01-02T03:04:05.123456789+01:00", "msg": "x"}')
    assert rec["@timestamp"] == "2024-01-02T02:04:05.123456789Z"
    assert "time" not in rec


def test_epoch_milliseconds_become_timestamp() -> None:
    [rec] = parse('{"timestamp": 1700000000123}')
    assert rec["@timestamp"] == "2023-11-14T22:13:20.123000000Z"


def test_unparseable_time_stays_a_field_and_read_time_is_kept() -> None:
    [rec] = parse('{"time": "yesterday"}', **{"@timestamp": "2026-01-01T00:00:00.000000000Z"})
    assert rec["time"] == "yesterday"
    assert rec["@timestamp"] == "2026-01-01T00:00:00.000000000Z"


def test_shipper_position_fields_are_not_overwritten() -> None:
    [rec] = parse('{"log": {"offset": 5}}', **{"log.offset": 100})
    assert rec["log.offset"] == 100
    assert rec["json.log.offset"] == 5


def test_not_json_passes_through_marked() -> None:
    [rec] = parse("plain text")
    assert rec["message"] == "plain text"
    assert rec[PARSE_ERROR].startswith("json: ")


def test_json_that_is_not_an_object_passes_through_marked() -> None:
    [rec] = parse("[1, 2]")
    assert rec == {
        "message": "[1, 2]",
        PARSE_ERROR: "json: the message is a JSON list, not an object",
    }


def test_deeply_nested_json_is_kept_as_text_and_marked() -> None:
    for depth in (33, 5000):
        line = '{"a":' * depth + "1" + "}" * depth
        [rec] = parse(line)
        assert rec["message"] == line
        assert rec[PARSE_ERROR] == "json: nested deeper than 32 levels; kept as text"


def test_nesting_within_the_limit_is_flattened() -> None:
    [rec] = parse('{"a":' * 32 + "1" + "}" * 32)
    assert rec[".".join(["a"] * 32)] == 1
