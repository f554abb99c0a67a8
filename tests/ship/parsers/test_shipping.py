"""Parsers and multi-line joining inside the running shipper: real files in, NDJSON out."""

from __future__ import annotations

from pathlib import Path

from sidekick.ship.records import PARSE_ERROR
from tests.ship.helpers import read_ndjson, ship_config, shipping, wait_for

ACCESS = (
    '10.0.0.7 - - [22/Nov/2026:10:00:00 +0200] "GET /health?full=1 HTTP/1.1" 200 17 "-" '
    '"kube-probe/1.29"'
)
ERROR = (
    '2026/11/22 08:00:01 [error] 29#29: *3 open() "/srv/x" failed (2: No such file or '
    'directory), client: 10.0.0.8, server: _, request: "GET /x HTTP/1.1", host: "web"'
)
TRACEBACK = [
    "2026-11-22 08:00:02 ERROR handler failed",
    "Traceback (most recent call last):",
    '  File "/app/main.py", line 12, in handle',
    "    return int(raw)",
    "ValueError: invalid literal for int() with base 10: 'x'",
]


async def test_nginx_access_error_and_garbage_lines_all_arrive_parsed_or_marked(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "nginx.log").write_text(f"{ACCESS}\n{ERROR}\nnot nginx at all\n")
    out = tmp_path / "out.ndjson"
    cfg = ship_config(
        inputs=[f"file://{logs}/*.log"],
        outputs=[f"file://{out}"],
        parser="nginx",
        state_dir=str(tmp_path / "state"),
    )
    async with shipping(cfg):
        await wait_for(lambda: len(read_ndjson(out)) >= 3)
    access, error, garbage = read_ndjson(out)
    assert access["@timestamp"] == "2026-11-22T08:00:00.000000000Z"
    assert access["url.query"] == "full=1"
    assert access["http.response.status_code"] == 200
    assert access["log.offset"] == 0
    assert error["log.level"] == "error"
    assert error["client.address"] == "10.0.0.8"
    assert garbage["message"] == "not nginx at all"
    assert garbage[PARSE_ERROR] == "nginx: no format matched"


async def test_traceback_ships_as_one_record_at_its_first_line_offset(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    before = "2026-11-22 08:00:01 INFO started"
    after = "2026-11-22 08:00:03 INFO recovered"
    (logs / "app.log").write_text("\n".join([before, *TRACEBACK, after]) + "\n")
    out = tmp_path / "out.ndjson"
    cfg = ship_config(
        inputs=[f"file://{logs}/*.log"],
        outputs=[f"file://{out}"],
        multiline_start=r"^\d{4}-\d{2}-\d{2} ",
        multiline_timeout=0.2,
        state_dir=str(tmp_path / "state"),
    )
    async with shipping(cfg):
        # The last record has no successor: it is shipped after the multiline timeout.
        await wait_for(lambda: len(read_ndjson(out)) >= 3)
    records = read_ndjson(out)
    assert [r["message"] for r in records] == [before, "\n".join(TRACEBACK), after]
    assert records[1]["log.offset"] == len(before) + 1


async def test_a_traceback_pending_at_shutdown_is_shipped_and_its_rest_follows_after_restart(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    before = "2026-11-22 08:00:01 INFO started"
    after = "2026-11-22 08:00:03 INFO recovered"
    log.write_text("\n".join([before, *TRACEBACK[:2]]) + "\n")
    out = tmp_path / "out.ndjson"
    cfg = ship_config(
        inputs=[f"file://{logs}/*.log"],
        outputs=[f"file://{out}"],
        multiline_start=r"^\d{4}-\d{2}-\d{2} ",
        multiline_timeout=60,
        state_dir=str(tmp_path / "state"),
    )
    async with shipping(cfg):
        await wait_for(lambda: len(read_ndjson(out)) >= 1)
    # The drain ships the pending group although its timeout has not passed: in a Pod that
    # stops, the file goes away with its volume.
    assert [r["message"] for r in read_ndjson(out)] == [before, "\n".join(TRACEBACK[:2])]
    with log.open("a") as f:
        # A last start line completes `after`, which would otherwise wait for the timeout.
        f.write("\n".join([*TRACEBACK[2:], after, "2026-11-22 08:00:04 INFO tail"]) + "\n")
    async with shipping(cfg):
        await wait_for(lambda: any(r["message"] == after for r in read_ndjson(out)))
    messages = [r["message"] for r in read_ndjson(out)]
    assert messages == [
        before,
        "\n".join(TRACEBACK[:2]),
        "\n".join(TRACEBACK[2:]),
        after,
        "2026-11-22 08:00:04 INFO tail",
    ]
