"""OTLP/HTTP into ``otlp://`` and into the ``http://`` ingest, from the real OpenTelemetry SDK
exporter and from OTLP/JSON as the spec writes it; the standard library's HTTPHandler."""

from __future__ import annotations

import gzip
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import msgspec
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from sidekick.ship.sources._otlp_map import decode_protobuf, severity_name, to_records
from tests.conftest import free_port
from tests.ship.sources.receivers import invalid_utf8, receiving

SDK_DEPRECATION = "ignore:`LoggingHandler`:DeprecationWarning"


def post(
    url: str, body: bytes, content_type: str, **headers: str
) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, body, {"Content-Type": content_type, **headers})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def sdk_send(endpoint: str, n: int) -> None:
    """Log ``n`` records through the SDK's LoggingHandler and OTLP/HTTP exporter (protobuf)."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, timeout=10))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(logger_provider=provider)
    logger = logging.getLogger(f"shop.{os.getpid()}.{endpoint}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        for i in range(n):
            logger.warning("order %d paid", i, extra={"order.id": i})
        assert provider.force_flush(20000)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()


def check_sdk_records(records: list[dict[str, Any]], n: int) -> None:
    assert sorted(r["order.id"] for r in records) == list(range(n))
    rec = next(r for r in records if r["order.id"] == 7)
    assert rec["message"] == "order 7 paid"
    assert rec["log.level"] == "WARN"
    assert rec["log.severity_number"] == 13
    assert rec["service.name"] == "shop"
    assert rec["telemetry.sdk.language"] == "python"
    assert rec["otel.scope.name"].startswith("shop.")
    assert rec["@timestamp"].endswith("Z")


def test_sdk_exporter_to_otlp_input_delivers_every_record_with_its_fields(
    tmp_path: Path,
) -> None:
    port = free_port()
    with receiving(tmp_path, f"otlp://127.0.0.1:{port}") as rx:
        sdk_send(f"http://127.0.0.1:{port}/v1/logs", 300)
        check_sdk_records(rx.wait_records(300), 300)
        assert (
            rx.metric(
                "sidekick_ship_receiver_answers_total", input=f"otlp://127.0.0.1:{port}", code="200"
            )
            >= 1
        )


def test_sdk_exporter_to_the_http_ingest_is_decoded_as_otlp(tmp_path: Path) -> None:
    port = free_port()
    with receiving(tmp_path, f"http://127.0.0.1:{port}") as rx:
        sdk_send(f"http://127.0.0.1:{port}/v1/logs", 50)
        check_sdk_records(rx.wait_records(50), 50)


# An OTLP/JSON request as the spec writes one: camelCase names, 64-bit integers as strings,
# enums as numbers, trace and span ids in hex.
SPEC_JSON = b"""{
  "resourceLogs": [{
    "resource": {"attributes": [
      {"key": "service.name", "value": {"stringValue": "checkout"}},
      {"key": "k8s.pod.name", "value": {"stringValue": "checkout-7d9f"}}]},
    "scopeLogs": [{
      "scope": {"name": "checkout.payments", "version": "1.2.0"},
      "logRecords": [
        {"timeUnixNano": "1544712660300000000", "observedTimeUnixNano": "1544712660300000000",
         "severityNumber": 10, "severityText": "Information",
         "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174",
         "body": {"stringValue": "payment accepted"},
         "attributes": [
           {"key": "string.attribute", "value": {"stringValue": "some string"}},
           {"key": "boolean.attribute", "value": {"boolValue": true}},
           {"key": "int.attribute", "value": {"intValue": "10"}},
           {"key": "double.attribute", "value": {"doubleValue": 637.704}},
           {"key": "array.attribute", "value": {"arrayValue": {"values": [
             {"stringValue": "many"}, {"stringValue": "values"}]}}},
           {"key": "map.attribute", "value": {"kvlistValue": {"values": [
             {"key": "some.map.key", "value": {"stringValue": "some value"}}]}}}]},
        {"timeUnixNano": "1544712660400000000", "severityNumber": 17,
         "body": {"kvlistValue": {"values": [
           {"key": "event", "value": {"stringValue": "refund"}},
           {"key": "amount", "value": {"doubleValue": 12.5}}]}}},
        {"observedTimeUnixNano": "1544712660500000000", "body": {"intValue": "42"}}
      ]}]}]}"""


def check_spec_records(records: list[dict[str, Any]]) -> None:
    assert len(records) == 3
    first, second, third = sorted(records, key=lambda r: r["@timestamp"])
    assert first["message"] == "payment accepted"
    assert first["log.level"] == "Information"
    assert first["trace.id"] == "5b8efff798038103d269b633813fc60c"
    assert first["span.id"] == "eee19b7ec3c1b174"
    assert first["@timestamp"] == "2018-12-13T14:51:00.300000000Z"
    assert first["service.name"] == "checkout"
    assert first["k8s.pod.name"] == "checkout-7d9f"
    assert first["otel.scope.name"] == "checkout.payments"
    assert first["otel.scope.version"] == "1.2.0"
    assert first["boolean.attribute"] is True
    assert first["int.attribute"] == 10
    assert first["double.attribute"] == 637.704
    assert first["array.attribute"] == ["many", "values"]
    assert first["map.attribute"] == {"some.map.key": "some value"}
    # A structured body is kept as fields; the level comes from the severity number.
    assert (second["event"], second["amount"], second["log.level"]) == ("refund", 12.5, "ERROR")
    assert "message" not in second
    assert third["message"] == "42"
    assert third["@timestamp"] == "2018-12-13T14:51:00.500000000Z"


@pytest.mark.parametrize("scheme", ["otlp", "http"])
def test_otlp_json_as_the_spec_gives_it_becomes_one_record_per_log_record(
    tmp_path: Path, scheme: str
) -> None:
    port = free_port()
    with receiving(tmp_path, f"{scheme}://127.0.0.1:{port}") as rx:
        status, body, headers = post(
            f"http://127.0.0.1:{port}/v1/logs", SPEC_JSON, "application/json"
        )
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        assert msgspec.json.decode(body) == {}
        check_spec_records(rx.wait_records(3))


def request(n: int, start: int = 0, trace_id: bytes = b"") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i in range(start, start + n):
        lr: LogRecord = sl.log_records.add()
        lr.body.string_value = f"line {i}"
        lr.attributes.append(KeyValue(key="seq", value=AnyValue(int_value=i)))
        if trace_id:
            lr.trace_id = trace_id
    return req


def test_records_with_a_wrong_trace_id_are_rejected_alone_in_partial_success(
    tmp_path: Path,
) -> None:
    port = free_port()
    req = request(3)
    bad = request(2, start=3, trace_id=b"\x01\x02\x03")
    req.resource_logs[0].scope_logs[0].log_records.extend(
        bad.resource_logs[0].scope_logs[0].log_records
    )
    with receiving(tmp_path, f"otlp://127.0.0.1:{port}") as rx:
        status, body, _ = post(
            f"http://127.0.0.1:{port}/v1/logs", req.SerializeToString(), "application/x-protobuf"
        )
        assert status == 200
        resp = ExportLogsServiceResponse.FromString(body)
        assert resp.partial_success.rejected_log_records == 2
        assert "trace id" in resp.partial_success.error_message
        assert sorted(r["seq"] for r in rx.wait_records(3)) == [0, 1, 2]
        name = f"otlp://127.0.0.1:{port}"
        assert (
            rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="invalid_record")
            == 1
        )


def test_bad_bodies_are_400_with_a_status_and_counted_never_5xx(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/logs"
    name = f"otlp://127.0.0.1:{port}"
    with receiving(tmp_path, name, extra=("--ingest-max-body-bytes", "64KiB")) as rx:
        status, body, headers = post(url, b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf")
        assert status == 400
        assert headers["Content-Type"] == "application/x-protobuf"
        assert b"ExportLogsServiceRequest" in body  # a google.rpc.Status: code 3, message
        assert body.startswith(b"\x08\x03\x12")
        # A valid envelope whose attribute value is not UTF-8: refused as OTLP's classes do.
        status, body, _ = post(url, invalid_utf8("value"), "application/x-protobuf")
        assert (status, body[:3]) == (400, b"\x08\x03\x12")
        status, body, _ = post(url, b'{"resourceLogs": [{"scopeLogs": 5}]}', "application/json")
        assert (status, msgspec.json.decode(body)["code"]) == (400, 3)
        status, body, _ = post(url, b'{"resourceLogs": [], "x": ', "application/json")
        assert status == 400
        status, _, _ = post(url, b"x", "application/x-ndjson")
        assert status == 415
        status, _, _ = post(url, b"\x00" * 100_000, "application/x-protobuf")
        assert status == 413
        # gzip is fine.
        status, _, _ = post(
            url,
            gzip.compress(request(4).SerializeToString()),
            "application/x-protobuf",
            **{"Content-Encoding": "gzip"},
        )
        assert status == 200
        assert len(rx.wait_records(4)) == 4
        assert (
            rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="malformed") == 4
        )
        assert (
            rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="unsupported")
            == 1
        )
        assert (
            rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="oversize") == 1
        )
        assert rx.metric("sidekick_ship_receiver_answers_total", input=name, code="500") == 0
        assert "Traceback" not in rx.proc.log()


def test_a_full_spool_is_503_with_retry_after(tmp_path: Path) -> None:
    port, nobody = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/v1/logs"
    with receiving(
        tmp_path,
        f"otlp://127.0.0.1:{port}",
        output=f"http://127.0.0.1:{nobody}/",
        extra=("--spool-max-bytes", "8KiB"),
    ):
        answers = [
            post(url, request(20, start=i * 20).SerializeToString(), "application/x-protobuf")
            for i in range(10)
        ]
    statuses = [a[0] for a in answers]
    assert statuses[0] == 200
    assert 503 in statuses
    refused = next(a for a in answers if a[0] == 503)
    assert refused[2]["Retry-After"] == "5"


def test_kill_9_right_after_200_loses_nothing(tmp_path: Path) -> None:
    port, nobody = free_port(), free_port()
    state = tmp_path / "state"
    url = f"http://127.0.0.1:{port}/v1/logs"
    with receiving(
        tmp_path, f"otlp://127.0.0.1:{port}", output=f"http://127.0.0.1:{nobody}/", state=state
    ) as rx:
        for i in range(5):
            status, _, _ = post(
                url, request(100, start=i * 100).SerializeToString(), "application/x-protobuf"
            )
            assert status == 200
        assert rx.proc.proc is not None
        os.kill(rx.proc.pid, signal.SIGKILL)
        rx.proc.proc.wait(10)
    with receiving(tmp_path, f"otlp://127.0.0.1:{port}", state=state) as rx:
        got = rx.wait_records(500)
    assert sorted({r["seq"] for r in got}) == list(range(500))


# An application that logs through the standard library's HTTPHandler, as it would in a Pod.
HTTP_HANDLER_APP = """
import logging, logging.handlers, sys
port = sys.argv[1]
for method in ("POST", "GET"):
    logger = logging.getLogger("app." + method.lower())
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.handlers.HTTPHandler("127.0.0.1:" + port, "/v1/logs", method=method))
    logger.error("payment %s failed", method)
    logger.info("second via %s", method)
"""


def test_http_handler_post_and_get_each_deliver_the_record_with_its_fields(
    tmp_path: Path,
) -> None:
    port = free_port()
    with receiving(tmp_path, f"http://127.0.0.1:{port}") as rx:
        subprocess.run([sys.executable, "-c", HTTP_HANDLER_APP, str(port)], check=True, timeout=30)
        records = rx.wait_records(4)
    assert len(records) == 4
    post_rec = next(r for r in records if r["name"] == "app.post" and r["levelname"] == "ERROR")
    assert post_rec["message"] == "payment %s failed"
    assert post_rec["args"] == "('POST',)"
    assert post_rec["log.level"] == "ERROR"
    assert post_rec["funcName"] == "<module>"
    get_rec = next(r for r in records if r["name"] == "app.get" and r["levelname"] == "INFO")
    assert get_rec["message"] == "second via %s"
    assert get_rec["lineno"].isdigit()
    assert get_rec["@timestamp"].startswith("20")


def test_severity_numbers_map_to_opentelemetry_short_names() -> None:
    assert [severity_name(n) for n in (1, 4, 5, 9, 12, 13, 17, 21, 24)] == [
        "TRACE",
        "TRACE",
        "DEBUG",
        "INFO",
        "INFO",
        "WARN",
        "ERROR",
        "FATAL",
        "FATAL",
    ]


def test_attribute_values_that_are_empty_zero_or_unset_keep_their_type() -> None:
    """The mapping reads a string attribute without asking which value is set; an empty
    string, a zero, a false and an unset value must still come out as what they are."""
    req = ExportLogsServiceRequest()
    lr = req.resource_logs.add().scope_logs.add().log_records.add()
    lr.body.string_value = "m"
    lr.attributes.extend(
        [
            KeyValue(key="empty", value=AnyValue(string_value="")),
            KeyValue(key="zero", value=AnyValue(int_value=0)),
            KeyValue(key="no", value=AnyValue(bool_value=False)),
            KeyValue(key="half", value=AnyValue(double_value=0.5)),
            KeyValue(key="unset", value=AnyValue()),
            KeyValue(key="text", value=AnyValue(string_value="yes")),
        ]
    )
    (record,), rejected, _ = to_records(
        decode_protobuf(req.SerializeToString()), 1_700_000_000_000_000_000
    )
    assert rejected == 0
    assert record["empty"] == ""
    assert record["zero"] == 0 and type(record["zero"]) is int
    assert record["no"] is False
    assert record["half"] == 0.5
    assert record["unset"] is None
    assert record["text"] == "yes"
