"""nginx access (combined) and error-log lines, told apart per line."""

from __future__ import annotations

from sidekick.ship.parsers import create_parser
from sidekick.ship.records import PARSE_ERROR, Record

COMBINED = (
    '203.0.113.9 - alice [02/Jan/2024:03:04:05 +0000] "GET /shop/cart?item=42&n=2 HTTP/1.1" '
    '200 5120 "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64)"'
)
ERROR = (
    '2024/01/02 03:04:05 [error] 123#0: *5 open() "/usr/share/nginx/html/x" failed '
    "(2: No such file or directory), client: 1.2.3.4, server: www.example.com, "
    'request: "GET /x HTTP/1.1", host: "www.example.com", referrer: "https://r.example/"'
)


def parse(*lines: str) -> list[Record]:
    records: list[Record] = [{"message": line} for line in lines]
    create_parser("nginx").parse(records)
    return records


def test_combined_line_gives_otel_fields() -> None:
    [rec] = parse(COMBINED)
    assert rec == {
        "message": COMBINED,
        "@timestamp": "2024-01-02T03:04:05.000000000Z",
        "client.address": "203.0.113.9",
        "user.name": "alice",
        "http.request.method": "GET",
        "url.original": "/shop/cart?item=42&n=2",
        "url.path": "/shop/cart",
        "url.query": "item=42&n=2",
        "network.protocol.version": "1.1",
        "http.response.status_code": 200,
        "http.response.body.size": 5120,
        "http.request.header.referer": "https://example.com/",
        "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64)",
    }


def test_positive_timezone_offset_is_subtracted() -> None:
    [rec] = parse(COMBINED.replace("+0000", "+0130"))
    assert rec["@timestamp"] == "2024-01-02T01:34:05.000000000Z"


def test_negative_timezone_offset_crosses_into_the_next_year() -> None:
    line = COMBINED.replace("02/Jan/2024:03:04:05 +0000", "31/Dec/2023:22:30:00 -0500")
    [rec] = parse(line)
    assert rec["@timestamp"] == "2024-01-01T03:30:00.000000000Z"


def test_dash_values_are_omitted() -> None:
    [rec] = parse('1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] "GET / HTTP/1.1" 304 0 "-" "-"')
    assert "user.name" not in rec
    assert "http.request.header.referer" not in rec
    assert "user_agent.original" not in rec
    assert "url.query" not in rec
    assert rec["http.response.body.size"] == 0


def test_request_that_is_not_method_url_protocol_keeps_the_other_fields() -> None:
    [rec] = parse('1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] "\\x16\\x03\\x01" 400 157 "-" "-"')
    assert "http.request.method" not in rec
    assert rec["http.response.status_code"] == 400
    assert PARSE_ERROR not in rec


def test_escaped_quote_in_user_agent_is_kept_whole() -> None:
    line = '1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] "GET / HTTP/1.1" 200 1 "-" "a \\"b\\" c"'
    [rec] = parse(line)
    assert rec["user_agent.original"] == 'a \\"b\\" c'


def test_extra_fields_after_the_user_agent_are_allowed() -> None:
    [rec] = parse(COMBINED + ' "10.0.0.1" rt=0.003')
    assert rec["user_agent.original"] == "Mozilla/5.0 (X11; Linux x86_64)"
    assert PARSE_ERROR not in rec


def test_error_line_gives_level_pid_thread_and_context() -> None:
    [rec] = parse(ERROR)
    assert rec == {
        "message": 'open() "/usr/share/nginx/html/x" failed (2: No such file or directory)',
        "@timestamp": "2024-01-02T03:04:05.000000000Z",
        "log.level": "error",
        "process.pid": 123,
        "thread.id": 0,
        "nginx.connection.id": 5,
        "client.address": "1.2.3.4",
        "server.address": "www.example.com",
        "http.request.method": "GET",
        "url.original": "/x",
        "url.path": "/x",
        "network.protocol.version": "1.1",
        "http.request.header.host": "www.example.com",
        "http.request.header.referer": "https://r.example/",
    }


def test_error_line_without_client_context() -> None:
    [rec] = parse("2024/01/02 03:04:05 [notice] 1#1: start worker processes")
    assert rec["message"] == "start worker processes"
    assert rec["log.level"] == "notice"
    assert "client.address" not in rec


def test_access_and_error_lines_in_one_batch() -> None:
    access, error = parse(COMBINED, ERROR)
    assert access["http.response.status_code"] == 200
    assert error["log.level"] == "error"


def test_malformed_line_passes_through_marked() -> None:
    records = parse("not an nginx line", COMBINED)
    assert records[0] == {"message": "not an nginx line", PARSE_ERROR: "nginx: no format matched"}
    assert records[1]["http.response.status_code"] == 200


def test_impossible_date_is_marked_and_the_read_time_kept() -> None:
    line = COMBINED.replace("02/Jan/2024", "31/Feb/2024")
    records: list[Record] = [{"message": line, "@timestamp": "2026-01-01T00:00:00.000000000Z"}]
    create_parser("nginx").parse(records)
    assert records[0]["@timestamp"] == "2026-01-01T00:00:00.000000000Z"
    assert "not a valid date" in records[0][PARSE_ERROR]
