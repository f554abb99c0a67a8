"""The parse transform: a ship parser run on a field, its fields merged."""

from __future__ import annotations

import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.transforms import DEFAULT, build_transform

LINE = '10.0.0.1 - - [02/Jan/2024:03:04:05 +0000] "GET /api/x?q=1 HTTP/1.1" 503 12 "-" "curl/8"'


def test_parses_a_named_field_and_merges_its_fields() -> None:
    t = build_transform("web", "parse", {"field": "log", "parser": "nginx"})
    records = [{"log": LINE, "stream": "stdout"}, {"log": "garbage"}, {"other": 1}, {"log": 5}]
    out = t.process(records)[DEFAULT]
    assert len(out) == 4
    assert out[0]["url.path"] == "/api/x" and out[0]["http.response.status_code"] == 503
    assert out[0]["stream"] == "stdout"
    assert "log.parse_error" in out[1]
    assert out[2] == {"other": 1} and out[3] == {"log": 5}
    assert t.counters()["skipped"] == 2 and t.counters()["parse_errors"] == 1


def test_parses_message_in_place_by_default() -> None:
    t = build_transform("j", "parse", {"parser": "json"})
    out = t.process([{"message": '{"a": 1, "message": "inner"}'}])[DEFAULT]
    assert out == [{"message": "inner", "a": 1}]


def test_unknown_parser_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"transform .j. \(parse\): parser: .*unknown parser"):
        build_transform("j", "parse", {"parser": "yaml"})


@pytest.mark.parametrize(
    ("parser", "piece", "end"),
    [
        (
            "cri",
            "2024-01-02T03:04:05.000000001Z stdout P one ",
            "2024-01-02T03:04:05.2Z stdout F two",
        ),
        (
            "docker",
            '{"log":"one ","stream":"stdout","time":"2024-01-02T03:04:05Z"}',
            '{"log":"two\\n","stream":"stdout","time":"2024-01-02T03:04:05Z"}',
        ),
    ],
)
def test_runtime_partial_lines_in_a_field_are_marked_not_joined(
    parser: str, piece: str, end: str
) -> None:
    # The transform sees records, not a file's lines in order: a piece stays a record of its
    # own, marked, so nothing is held back or lost (docs/transforms.md says so).
    t = build_transform("p", "parse", {"field": "line", "parser": parser})
    out = t.process([{"line": piece}, {"line": end}])[DEFAULT]
    assert [r["message"] for r in out] == ["one ", "two"]
    assert out[0]["log.flags"] == ["partial"] and "log.flags" not in out[1]
    assert [r["log.iostream"] for r in out] == ["stdout", "stdout"]
