"""The Loki output against a server speaking Loki's documented push API (JSON).

No Loki runs here: these are protocol tests of ``POST /loki/api/v1/push``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sidekick.core.errors import ConfigError, TemporaryError
from sidekick.ship.deadletter import DEAD_LETTER_FILE
from sidekick.ship.records import Sink
from sidekick.ship.sinks.loki import BISECT_REQUESTS, sanitize_label
from tests.conftest import free_port
from tests.ship.helpers import read_ndjson, ship_config, shipping, wait_for
from tests.ship.sinks.conftest import (
    ProtocolServer,
    Seen,
    make_records,
    shipped_only_once_answered_properly,
)

MakeSink = Callable[..., Sink]

# The text Loki answers when an entry is older than its out-of-order window allows.
TOO_FAR_BEHIND = (
    "entry with timestamp 2026-11-22 08:00:00 +0000 UTC ignored, reason: 'entry too far behind, "
    "oldest acceptable timestamp is: 2026-11-22T09:15:00Z' for stream: "
    '{container="nginx", filename="/var/log/nginx/access.log", job="sidekick", namespace="shop", '
    'pod="web-0"},\ntotal ignored: 1 out of 2\n'
)


def push(seen: Seen) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(seen.body)
    return body


async def test_push_request_is_json_on_the_push_path(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    sink = make_sink(f"loki://{server.hostport}")
    assert (await sink.send(make_records(2))).all_delivered
    [seen] = server.requests
    assert seen.method == "POST"
    assert seen.path == "/loki/api/v1/push"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Content-Encoding"] == "gzip"


async def test_default_labels_come_from_kubernetes_fields_and_file_path(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    sink = make_sink(f"loki://{server.hostport}")
    await sink.send(make_records(1))
    [stream] = push(server.requests[0])["streams"]
    assert stream["stream"] == {
        "job": "sidekick",
        "namespace": "shop",
        "pod": "web-0",
        "container": "nginx",
        "filename": "/var/log/nginx/access.log",
    }


async def test_values_are_ns_timestamp_strings_lines_and_string_metadata(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    record = make_records(1, **{"http.response.status_code": 404, "tls": False})[0]
    record["@timestamp"] = "2026-11-22T10:15:00.123456789Z"
    sink = make_sink(f"loki://{server.hostport}")
    await sink.send([record])
    [stream] = push(server.requests[0])["streams"]
    [[ts, line, meta]] = stream["values"]
    assert ts == "1795342500123456789"
    assert line == "line 0"
    assert meta == {
        "log.offset": "0",
        "log.file.id": "2049:1234:9f86d081",
        "host.name": "node-1",
        "http.response.status_code": "404",
        "tls": "false",
    }


async def test_records_are_grouped_into_one_stream_per_label_set(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    records = make_records(4)
    records[1]["k8s.pod.name"] = records[3]["k8s.pod.name"] = "web-1"
    sink = make_sink(f"loki://{server.hostport}")
    await sink.send(records)
    streams = push(server.requests[0])["streams"]
    by_pod = {s["stream"]["pod"]: [v[1] for v in s["values"]] for s in streams}
    assert by_pod == {"web-0": ["line 0", "line 2"], "web-1": ["line 1", "line 3"]}


async def test_values_are_sorted_by_time_within_a_stream(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    records = make_records(3)
    records[0]["@timestamp"] = "2026-11-22T10:00:03Z"
    records[1]["@timestamp"] = "2026-11-22T10:00:01Z"
    records[2]["@timestamp"] = "2026-11-22T10:00:02Z"
    sink = make_sink(f"loki://{server.hostport}")
    await sink.send(records)
    [stream] = push(server.requests[0])["streams"]
    assert [v[1] for v in stream["values"]] == ["line 1", "line 2", "line 0"]


async def test_configured_labels_are_sanitised_to_loki_rules(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    sink = make_sink(
        f"loki://{server.hostport}",
        labels={"k8s.app-name": "k8s.pod.name", "9lives": "host.name"},
        job="",
    )
    await sink.send(make_records(1))
    [stream] = push(server.requests[0])["streams"]
    assert stream["stream"] == {"k8s_app_name": "web-0", "_9lives": "node-1"}


def test_sanitize_label_replaces_invalid_characters() -> None:
    assert sanitize_label("http.status-code") == "http_status_code"
    assert sanitize_label("1st") == "_1st"


async def test_labels_from_the_url_query(server: ProtocolServer, make_sink: MakeSink) -> None:
    sink = make_sink(f"loki://{server.hostport}?labels=ns=k8s.namespace.name&job=web")
    await sink.send(make_records(1))
    [stream] = push(server.requests[0])["streams"]
    assert stream["stream"] == {"job": "web", "ns": "shop"}


async def test_line_format_json_sends_the_whole_record_as_the_line(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    record = make_records(1)[0]
    sink = make_sink(f"loki://{server.hostport}", line_format="json")
    await sink.send([record])
    [stream] = push(server.requests[0])["streams"]
    [value] = stream["values"]
    assert len(value) == 2
    assert json.loads(value[1]) == record


async def test_tenant_is_sent_as_x_scope_orgid(server: ProtocolServer, make_sink: MakeSink) -> None:
    sink = make_sink(f"loki://{server.hostport}?tenant=team-a")
    await sink.send(make_records(1))
    assert server.requests[0].headers["X-Scope-OrgID"] == "team-a"


class FakeLoki:
    """Answers pushes like Loki: stores valid entries (ignoring exact duplicates) and refuses
    entries older than ``oldest_ns`` with 400 and Loki's text for the last one refused."""

    def __init__(self, oldest_ns: int) -> None:
        self.oldest_ns = oldest_ns
        self.stored: list[tuple[str, str]] = []

    def __call__(self, seen: Seen) -> web.Response:
        ignored: list[str] = []
        total = 0
        for stream in push(seen)["streams"]:
            for ts, line, *_ in stream["values"]:
                total += 1
                if int(ts) < self.oldest_ns:
                    ignored.append(
                        f"entry with timestamp {ts} ignored, reason: 'entry too far behind, "
                        "oldest acceptable timestamp is: 2026-11-22T10:15:00Z' for stream: "
                        '{job="sidekick"}'
                    )
                elif (ts, line) not in self.stored:
                    self.stored.append((ts, line))
        if ignored:
            text = f"{ignored[-1]},\ntotal ignored: {len(ignored)} out of {total}\n"
            return web.Response(status=400, text=text)
        return web.Response(status=204)


async def test_entries_too_far_behind_are_isolated_and_rejected_with_lokis_text(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    records = make_records(8)
    for i in range(8):
        records[i]["@timestamp"] = f"2026-11-22T10:15:{10 + i:02d}Z"
    records[2]["@timestamp"] = "2026-11-22T08:00:00Z"
    records[5]["@timestamp"] = "2026-11-22T08:00:01Z"
    loki = FakeLoki(oldest_ns=1795342500_000000000)  # 2026-11-22T10:15:00Z
    server.default = loki
    sink = make_sink(f"loki://{server.hostport}")
    result = await sink.send(records)
    assert [i for i, _ in result.rejected] == [2, 5]
    assert result.retry == []
    reason = dict(result.rejected)[2]
    assert reason.startswith("Loki HTTP 400: entry with timestamp 1795334400000000000 ignored")
    assert "'entry too far behind" in reason
    assert "total ignored: 1 out of 1" in reason
    # Every other line is stored exactly once although some were pushed more than once.
    assert sorted(line for _, line in loki.stored) == [f"line {i}" for i in (0, 1, 3, 4, 6, 7)]


async def test_search_for_refused_entries_is_bounded(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    records = make_records(200)
    for record in records:
        record["@timestamp"] = "2026-11-22T08:00:00Z"
    server.default = FakeLoki(oldest_ns=1795342500_000000000)
    sink = make_sink(f"loki://{server.hostport}")
    result = await sink.send(records)
    assert sorted(i for i, _ in result.rejected) == list(range(200))
    assert len(server.requests) <= 1 + BISECT_REQUESTS


async def test_429_is_temporary_with_retry_after(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    server.reply(
        429,
        "Ingestion rate limit exceeded for user team-a (limit: 4194304 bytes/sec) while attempting "
        "to ingest '2' lines totaling '200' bytes, reduce log volume or contact your Loki "
        "administrator to see if the limit can be increased\n",
        headers={"Retry-After": "3"},
    )
    sink = make_sink(f"loki://{server.hostport}")
    with pytest.raises(TemporaryError, match="Ingestion rate limit exceeded") as info:
        await sink.send(make_records(2))
    assert info.value.retry_after == 3.0


async def test_500_is_temporary(server: ProtocolServer, make_sink: MakeSink) -> None:
    server.reply(500, "rpc error: code = Unavailable desc = no ingesters\n")
    sink = make_sink(f"loki://{server.hostport}")
    with pytest.raises(TemporaryError, match="HTTP 500"):
        await sink.send(make_records(1))


async def test_2xx_other_than_204_is_delivered_and_logged_with_its_code(
    server: ProtocolServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    server.reply(260, "")
    sink = make_sink(f"loki://{server.hostport}")
    with caplog.at_level(logging.WARNING, logger="sidekick.ship.sinks.loki"):
        result = await sink.send(make_records(1))
    assert result.all_delivered
    assert "HTTP 260" in caplog.text


async def test_204_logs_nothing(
    server: ProtocolServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink(f"loki://{server.hostport}")
    with caplog.at_level(logging.WARNING, logger="sidekick.ship.sinks.loki"):
        await sink.send(make_records(1))
    assert caplog.records == []


async def test_connection_refused_is_a_temporary_error(make_sink: MakeSink) -> None:
    sink = make_sink(f"loki://127.0.0.1:{free_port()}")
    with pytest.raises(TemporaryError, match="cannot reach"):
        await sink.send(make_records(1))


async def test_bearer_token_file_is_sent(
    server: ProtocolServer, make_sink: MakeSink, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("glc_abc\n")
    sink = make_sink(f"loki://{server.hostport}", bearer_token_file=str(token))
    await sink.send(make_records(1))
    assert server.requests[0].headers["Authorization"] == "Bearer glc_abc"


def test_malformed_labels_query_is_a_config_error(make_sink: MakeSink) -> None:
    with pytest.raises(
        ConfigError, match="option 'labels' has 'namespace', which is not NAME=FIELD"
    ):
        make_sink("loki://127.0.0.1:3100?labels=namespace")


def test_labels_colliding_after_sanitising_are_a_config_error(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError, match="same label name twice"):
        make_sink("loki://127.0.0.1:3100", labels={"a.b": "x", "a_b": "y"})


def test_unknown_line_format_is_a_config_error(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError, match="option 'line_format'"):
        make_sink("loki://127.0.0.1:3100?line_format=logfmt")


async def test_shipper_dead_letters_a_push_loki_refuses_and_moves_on(
    server: ProtocolServer, tmp_path: Path
) -> None:
    server.reply(400, TOO_FAR_BEHIND, content_type="text/plain")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("old line\n")
    cfg = ship_config(
        inputs=[f"file://{logs}/*.log"],
        outputs=[f"loki://{server.hostport}?gzip=false"],
        state_dir=str(tmp_path / "state"),
    )
    dead_file = tmp_path / "state" / DEAD_LETTER_FILE
    async with shipping(cfg):
        await wait_for(lambda: bool(read_ndjson(dead_file)))
        with (logs / "app.log").open("a") as f:
            f.write("new line\n")
        await wait_for(lambda: len(server.requests) == 2)
    [dead] = read_ndjson(dead_file)
    assert dead["record"]["message"] == "old line"
    assert "entry too far behind" in dead["reason"]
    [stream] = push(server.requests[1])["streams"]
    assert [v[1] for v in stream["values"]] == ["new line"]


async def test_label_field_holding_a_list_becomes_its_json_text(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    sink = make_sink(f"loki://{server.hostport}", labels={"tags": "tags"}, job="")
    await sink.send(make_records(2, tags=["a", "b"]))
    [stream] = push(server.requests[0])["streams"]
    assert stream["stream"] == {"tags": '["a","b"]'}
    assert len(stream["values"]) == 2


async def test_2xx_html_page_is_not_delivery(server: ProtocolServer, make_sink: MakeSink) -> None:
    # A proxy in front of Loki answering with its sign-in page.
    server.reply(200, "<!DOCTYPE html><html><body>Sign in</body></html>", content_type="text/html")
    sink = make_sink(f"loki://{server.hostport}")
    with pytest.raises(TemporaryError, match="an HTML page"):
        await sink.send(make_records(2))
    assert sink.counters() == {"bad_responses": 1}  # type: ignore[attr-defined]


async def test_shipper_holds_the_checkpoint_while_a_proxy_answers_with_a_page(
    server: ProtocolServer, tmp_path: Path
) -> None:
    stored: list[str] = []

    def loki(seen: Seen) -> web.Response:
        stored.extend(v[1] for stream in push(seen)["streams"] for v in stream["values"])
        return web.Response(status=204)

    await shipped_only_once_answered_properly(
        server,
        tmp_path,
        url=f"loki://{server.hostport}",
        output=f"loki {server.hostport}",
        bad=lambda seen: web.Response(
            status=200, text="<html><body>Please sign in</body></html>", content_type="text/html"
        ),
        good=loki,
        arrived=lambda: stored,
    )


async def test_a_loki_that_flaps_during_the_search_still_isolates_the_refused_entries(
    server: ProtocolServer, tmp_path: Path
) -> None:
    # Every third push answers 503. The search for 4 refused entries among 1,000 takes some
    # 60 pushes; when a failed push threw the whole batch's progress away, no attempt could
    # finish and nothing was ever delivered, dead-lettered or checkpointed.
    loki = FakeLoki(oldest_ns=1795342500_000000000)  # 2026-11-22T10:15:00Z
    pushes = [0]

    def flapping(seen: Seen) -> web.Response:
        pushes[0] += 1
        if pushes[0] % 3 == 0:
            return web.Response(status=503, text="ingester busy", headers={"Retry-After": "0"})
        return loki(seen)

    server.default = flapping
    logs = tmp_path / "logs"
    logs.mkdir()
    old = {100, 101, 500, 999}
    lines = [
        json.dumps(
            {"@timestamp": "2026-11-22T08:00:00Z" if i in old else "2026-11-22T11:00:00Z"}
            | {"message": f"line {i}"}
        )
        for i in range(1000)
    ]
    (logs / "app.log").write_text("\n".join(lines) + "\n")
    cfg = ship_config(
        inputs=[f"file://{logs}/*.log?parser=json"],
        outputs=[f"loki://{server.hostport}?gzip=false"],
        state_dir=str(tmp_path / "state"),
        retry={"initial": "50ms", "max": "200ms"},
    )
    dead_file = tmp_path / "state" / DEAD_LETTER_FILE
    async with shipping(cfg):
        await wait_for(
            lambda: (
                len({line for _, line in loki.stored}) == 996 and len(read_ndjson(dead_file)) == 4
            ),
            timeout=30,
        )
    assert sorted(int(d["record"]["message"][5:]) for d in read_ndjson(dead_file)) == sorted(old)
    assert {line for _, line in loki.stored} == {f"line {i}" for i in range(1000) if i not in old}
