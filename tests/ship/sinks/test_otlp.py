"""The OTLP output against a server speaking OTLP/HTTP for logs (protobuf and JSON).

No OpenTelemetry collector runs here: these are protocol tests. Request bodies are decoded
with the official ``opentelemetry-proto`` message classes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from sidekick.core.errors import ConfigError, PermanentError, TemporaryError
from sidekick.ship.records import Sink
from sidekick.ship.sinks.otlp import OtlpSink, rpc_status_message
from tests.conftest import free_port
from tests.ship.helpers import ship_config, shipping, wait_for
from tests.ship.sinks.conftest import (
    ProtocolServer,
    Seen,
    make_records,
    shipped_only_once_answered_properly,
)

MakeSink = Callable[..., Sink]


def decode(seen: Seen) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest.FromString(seen.body)


def attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind)
    return out


def rpc_status(code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` {code, message} encoded by hand (field 1 varint, field 2 string)."""
    msg = message.encode()
    assert code < 128 and len(msg) < 128
    return bytes([0x08, code, 0x12, len(msg)]) + msg


async def test_export_is_protobuf_posted_to_v1_logs(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    sink = make_sink(f"otlp://{server.hostport}")
    assert (await sink.send(make_records(2))).all_delivered
    [seen] = server.requests
    assert seen.method == "POST"
    assert seen.path == "/v1/logs"
    assert seen.headers["Content-Type"] == "application/x-protobuf"
    assert seen.headers["Content-Encoding"] == "gzip"
    request = decode(seen)
    [rl] = request.resource_logs
    [sl] = rl.scope_logs
    assert sl.scope.name == "sidekick"
    assert [lr.body.string_value for lr in sl.log_records] == ["line 0", "line 1"]


async def test_kubernetes_and_host_fields_become_resource_attributes(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    sink = make_sink(f"otlp://{server.hostport}")
    await sink.send(make_records(1, **{"http.response.status_code": 200}))
    [rl] = decode(server.requests[0]).resource_logs
    assert attrs(rl.resource.attributes) == {
        "host.name": "node-1",
        "k8s.pod.name": "web-0",
        "k8s.namespace.name": "shop",
        "k8s.container.name": "nginx",
    }
    [lr] = rl.scope_logs[0].log_records
    assert attrs(lr.attributes) == {
        "log.file.path": "/var/log/nginx/access.log",
        "log.offset": 0,
        "log.file.id": "2049:1234:9f86d081",
        "http.response.status_code": 200,
    }
    assert lr.attributes[1].value.WhichOneof("value") == "int_value"


async def test_records_are_grouped_by_resource(server: ProtocolServer, make_sink: MakeSink) -> None:
    records = make_records(3)
    records[1]["k8s.pod.name"] = "web-1"
    sink = make_sink(f"otlp://{server.hostport}")
    await sink.send(records)
    rls = decode(server.requests[0]).resource_logs
    by_pod = {
        attrs(rl.resource.attributes)["k8s.pod.name"]: [
            lr.body.string_value for lr in rl.scope_logs[0].log_records
        ]
        for rl in rls
    }
    assert by_pod == {"web-0": ["line 0", "line 2"], "web-1": ["line 1"]}


async def test_timestamp_severity_and_trace_context_are_mapped(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    record = make_records(
        1,
        **{
            "log.level": "WARN",
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b174",
        },
    )[0]
    record["@timestamp"] = "2026-11-22T10:15:00.123456789Z"
    sink = make_sink(f"otlp://{server.hostport}")
    await sink.send([record])
    [lr] = decode(server.requests[0]).resource_logs[0].scope_logs[0].log_records
    assert lr.time_unix_nano == 1795342500123456789
    assert lr.observed_time_unix_nano > 0
    assert lr.severity_text == "WARN"
    assert lr.severity_number == 13  # SEVERITY_NUMBER_WARN
    assert lr.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert lr.span_id.hex() == "eee19b7ec3c1b174"
    assert "trace_id" not in attrs(lr.attributes)


async def test_json_encoding_follows_otlp_json_rules(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    record = make_records(
        1, **{"log.level": "error", "trace_id": "5b8efff798038103d269b633813fc60c"}
    )[0]
    record["@timestamp"] = "2026-11-22T10:15:00Z"
    sink = make_sink(f"otlp://{server.hostport}?encoding=json&gzip=false")
    await sink.send([record])
    [seen] = server.requests
    assert seen.headers["Content-Type"] == "application/json"
    body = json.loads(seen.body)
    lr = body["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert lr["timeUnixNano"] == "1795342500000000000"  # int64 as a string
    assert lr["severityNumber"] == 17  # enum as a number
    assert lr["traceId"] == "5b8efff798038103d269b633813fc60c"  # hex, not base64
    assert {"key": "log.offset", "value": {"intValue": "0"}} in lr["attributes"]


async def test_json_encoding_is_a_valid_export_request(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    sink = make_sink(f"otlp://{server.hostport}?encoding=json")
    await sink.send(make_records(2, **{"tags": ["a", 1], "ctx": {"k": 2.5}}))
    # Without trace ids, OTLP JSON and protobuf's JSON mapping agree: parse it strictly.
    request = json_format.Parse(server.requests[0].body, ExportLogsServiceRequest())
    [lr0, _] = request.resource_logs[0].scope_logs[0].log_records
    values = {kv.key: kv.value for kv in lr0.attributes}
    assert [v.string_value or v.int_value for v in values["tags"].array_value.values] == ["a", 1]
    assert values["ctx"].kvlist_value.values[0].value.double_value == 2.5


async def test_partial_success_is_counted_and_logged(
    server: ProtocolServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    response = ExportLogsServiceResponse(
        partial_success=ExportLogsPartialSuccess(
            rejected_log_records=2, error_message="2 log records had an empty body"
        )
    )
    server.reply(200, response.SerializeToString(), content_type="application/x-protobuf")
    sink = make_sink(f"otlp://{server.hostport}")
    assert isinstance(sink, OtlpSink)
    with caplog.at_level(logging.WARNING, logger="sidekick.ship.sinks.otlp"):
        result = await sink.send(make_records(3))
    assert result.all_delivered
    assert sink.rejected_by_peer == 2
    assert "dropped 2 of them (2 log records had an empty body)" in caplog.text
    assert "not sent again" in caplog.text


async def test_partial_success_in_a_json_response_is_counted(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    server.reply(
        200,
        json.dumps({"partialSuccess": {"rejectedLogRecords": "1", "errorMessage": "too old"}}),
        content_type="application/json",
    )
    sink = make_sink(f"otlp://{server.hostport}?encoding=json")
    assert isinstance(sink, OtlpSink)
    await sink.send(make_records(2))
    assert sink.rejected_by_peer == 1


def partial(rejected: int) -> bytes:
    return ExportLogsServiceResponse(
        partial_success=ExportLogsPartialSuccess(rejected_log_records=rejected)
    ).SerializeToString()


@pytest.mark.parametrize(
    ("body", "content_type", "problem"),
    [
        (partial(4), "application/x-protobuf", "rejects 4 of 3 records"),
        (partial(-1), "application/x-protobuf", "rejects -1 of 3 records"),
        (b"\xff\xff\xff", "application/x-protobuf", "not a protobuf export response"),
        (b"<html><body>Sign in</body></html>", "text/html", "an HTML page"),
        (b"accepted", "text/plain", "a text/plain body"),
        (b'{"partialSuccess": {"rejectedLogRecords": "7"}}', "application/json", "rejects 7 of 3"),
        (b'{"partialSuccess": {"rejectedLogRecords": "x"}}', "application/json", "not a whole number"),
        (b"[1, 2]", "application/json", "not an object"),
        (b"not json", "application/json", "not JSON"),
    ],
)  # fmt: skip
async def test_2xx_that_does_not_account_for_the_batch_resends_it(
    server: ProtocolServer, make_sink: MakeSink, body: bytes, content_type: str, problem: str
) -> None:
    server.reply(200, body, content_type=content_type)
    sink = make_sink(f"otlp://{server.hostport}")
    assert isinstance(sink, OtlpSink)
    with pytest.raises(TemporaryError, match=problem):
        await sink.send(make_records(3))
    assert sink.counters() == {"bad_responses": 1, "rejected_by_peer": 0}


async def test_partial_success_rejecting_the_whole_batch_is_counted(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    server.reply(200, partial(3), content_type="application/x-protobuf")
    sink = make_sink(f"otlp://{server.hostport}")
    assert isinstance(sink, OtlpSink)
    assert (await sink.send(make_records(3))).all_delivered
    assert sink.counters() == {"bad_responses": 0, "rejected_by_peer": 3}


async def test_empty_2xx_body_is_an_empty_export_response(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    server.reply(200, b"", content_type="application/x-protobuf")
    sink = make_sink(f"otlp://{server.hostport}")
    assert (await sink.send(make_records(2))).all_delivered


async def test_503_is_temporary_with_retry_after(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    server.reply(
        503,
        rpc_status(14, "unavailable"),
        content_type="application/x-protobuf",
        headers={"Retry-After": "2"},
    )
    sink = make_sink(f"otlp://{server.hostport}")
    with pytest.raises(TemporaryError) as info:
        await sink.send(make_records(1))
    assert info.value.retry_after == 2.0


async def test_400_is_permanent_with_the_status_message(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    server.reply(400, rpc_status(3, "invalid log record"), content_type="application/x-protobuf")
    sink = make_sink(f"otlp://{server.hostport}")
    with pytest.raises(PermanentError, match="HTTP 400: invalid log record"):
        await sink.send(make_records(1))


def test_rpc_status_message_reads_field_two() -> None:
    assert rpc_status_message(rpc_status(3, "bad")) == "bad"
    assert rpc_status_message(b"\xff") is None


async def test_connection_refused_is_a_temporary_error(make_sink: MakeSink) -> None:
    sink = make_sink(f"otlp://127.0.0.1:{free_port()}")
    with pytest.raises(TemporaryError, match="cannot reach"):
        await sink.send(make_records(1))


async def test_custom_path_and_headers(server: ProtocolServer, make_sink: MakeSink) -> None:
    sink = make_sink(f"otlp://{server.hostport}/otlp/v1/logs?headers=X-Tenant=a")
    await sink.send(make_records(1))
    assert server.requests[0].path == "/otlp/v1/logs"
    assert server.requests[0].headers["X-Tenant"] == "a"


def test_unknown_encoding_is_a_config_error(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError, match="option 'encoding'"):
        make_sink("otlp://127.0.0.1:4318?encoding=xml")


async def test_shipper_exports_tailed_lines_as_otlp_log_records(
    server: ProtocolServer, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(f"line {i}\n" for i in range(50)))
    cfg = ship_config(
        inputs=[f"file://{logs}/*.log"],
        outputs=[f"otlp://{server.hostport}"],
        state_dir=str(tmp_path / "state"),
        pod_name="web-0",
    )

    def bodies() -> list[str]:
        return [
            lr.body.string_value
            for seen in server.requests
            for rl in decode(seen).resource_logs
            for sl in rl.scope_logs
            for lr in sl.log_records
        ]

    async with shipping(cfg):
        await wait_for(lambda: len(bodies()) >= 50)
    assert bodies() == [f"line {i}" for i in range(50)]
    rl = decode(server.requests[0]).resource_logs[0]
    assert attrs(rl.resource.attributes)["k8s.pod.name"] == "web-0"


async def test_resource_attribute_holding_a_list_is_kept_as_an_array(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    sink = make_sink(f"otlp://{server.hostport}")
    await sink.send(make_records(2, **{"host.ip": ["10.0.0.1", "10.0.0.2"]}))
    [rl] = decode(server.requests[0]).resource_logs
    ips = attrs(rl.resource.attributes)["host.ip"]
    assert [v.string_value for v in ips.values] == ["10.0.0.1", "10.0.0.2"]
    assert len(rl.scope_logs[0].log_records) == 2


async def test_shipper_resends_a_batch_whose_partial_success_exceeds_it(
    server: ProtocolServer, tmp_path: Path
) -> None:
    exported: list[str] = []

    def collector(seen: Seen) -> web.Response:
        request = decode(seen)
        exported.extend(
            lr.body.string_value
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for lr in sl.log_records
        )
        return web.Response(
            status=200,
            body=ExportLogsServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def too_many_rejected(seen: Seen) -> web.Response:
        return web.Response(
            status=200, body=partial(1_000_000), content_type="application/x-protobuf"
        )

    await shipped_only_once_answered_properly(
        server,
        tmp_path,
        url=f"otlp://{server.hostport}",
        output=f"otlp {server.hostport}",
        bad=too_many_rejected,
        good=collector,
        arrived=lambda: exported,
    )
