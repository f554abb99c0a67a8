"""Apache access (combined, common) and error-log (2.4 and 2.2) lines."""

from __future__ import annotations

from sidekick.ship.parsers import create_parser
from sidekick.ship.records import PARSE_ERROR, Record


def parse(*lines: str) -> list[Record]:
    records: list[Record] = [{"message": line} for line in lines]
    create_parser("apache").parse(records)
    return records


def test_combined_line() -> None:
    line = (
        '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
        '"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'
    )
    [rec] = parse(line)
    assert rec["@timestamp"] == "2000-10-10T20:55:36.000000000Z"
    assert rec["client.address"] == "127.0.0.1"
    assert rec["user.name"] == "frank"
    assert rec["http.request.method"] == "GET"
    assert rec["url.original"] == "/apache_pb.gif"
    assert rec["network.protocol.version"] == "1.0"
    assert rec["http.response.status_code"] == 200
    assert rec["http.response.body.size"] == 2326
    assert rec["http.request.header.referer"] == "http://www.example.com/start.html"
    assert rec["user_agent.original"] == "Mozilla/4.08 [en] (Win98; I ;Nav)"


def test_common_line_with_dash_size() -> None:
    line = '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "HEAD / HTTP/1.1" 304 -'
    [rec] = parse(line)
    assert rec["http.request.method"] == "HEAD"
    assert rec["http.response.status_code"] == 304
    assert "http.response.body.size" not in rec
    assert "user_agent.original" not in rec
    assert PARSE_ERROR not in rec


def test_error_line_24_format() -> None:
    line = (
        "[Tue Jan 02 03:04:05.123456 2024] [core:error] [pid 123:tid 140000] "
        "[client 1.2.3.4:5678] AH00126: Invalid URI in request GET /x HTTP/1.1, "
        "referer: http://r.example/"
    )
    [rec] = parse(line)
    assert rec == {
        "message": "AH00126: Invalid URI in request GET /x HTTP/1.1",
        "@timestamp": "2024-01-02T03:04:05.123456000Z",
        "log.logger": "core",
        "log.level": "error",
        "process.pid": 123,
        "thread.id": 140000,
        "client.address": "1.2.3.4",
        "client.port": 5678,
        "http.request.header.referer": "http://r.example/",
    }


def test_error_line_without_client() -> None:
    line = (
        "[Sun Nov 22 11:00:00.000001 2026] [mpm_event:notice] [pid 7:tid 8] "
        "AH00489: Apache/2.4.62 (Debian) configured -- resuming normal operations"
    )
    [rec] = parse(line)
    assert rec["log.level"] == "notice"
    assert rec["log.logger"] == "mpm_event"
    assert rec["message"].startswith("AH00489: Apache/2.4.62")
    assert "client.address" not in rec


def test_error_line_22_format() -> None:
    line = (
        "[Wed Oct 11 14:32:52 2000] [error] [client 127.0.0.1] "
        "client denied by server configuration: /export/home/live/ap/htdocs/test"
    )
    [rec] = parse(line)
    assert rec["@timestamp"] == "2000-10-11T14:32:52.000000000Z"
    assert rec["log.level"] == "error"
    assert rec["client.address"] == "127.0.0.1"
    assert (
        rec["message"] == "client denied by server configuration: /export/home/live/ap/htdocs/test"
    )


def test_malformed_line_passes_through_marked() -> None:
    [rec] = parse("[not apache] at all")
    assert rec == {"message": "[not apache] at all", PARSE_ERROR: "apache: no format matched"}
