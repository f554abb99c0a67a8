"""The light reading of OTLP protobuf requests gives what reading OTLP's own classes gives.

The reference below maps a request parsed by OTLP's generated classes, field by field, as
docs/ingest.md's table says; requests of every shape hypothesis can build (every kind of
attribute value and body, long texts, ids of wrong lengths, several resources and scopes) are
mapped both ways and must give the same records, in the same field order. Bytes that do not
decode as OTLP are refused by both.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from sidekick.ship.sources import _otlp_wire as wire
from sidekick.ship.sources._otlp_map import OtlpError, decode_protobuf, severity_name, to_records
from sidekick.ship.timefmt import rfc3339_ns
from tests.ship.sources.receivers import invalid_utf8

NOW = 1_700_000_000_123_456_789


def reference_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: reference_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [reference_value(x) for x in v.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None if kind is None else getattr(v, kind)


def reference(req: ExportLogsServiceRequest) -> tuple[list[dict[str, Any]], int, str]:
    records: list[dict[str, Any]] = []
    rejected, reason = 0, ""
    for rl in req.resource_logs:
        resource = {kv.key: reference_value(kv.value) for kv in rl.resource.attributes}
        for sl in rl.scope_logs:
            base = dict(resource)
            if sl.scope.name:
                base["otel.scope.name"] = sl.scope.name
            if sl.scope.version:
                base["otel.scope.version"] = sl.scope.version
            for lr in sl.log_records:
                rec = dict(base)
                for kv in lr.attributes:
                    rec[kv.key] = reference_value(kv.value)
                kind = lr.body.WhichOneof("value")
                body = reference_value(lr.body)
                if kind == "kvlist_value":
                    rec.update(body)
                elif kind is not None:
                    rec["message"] = (
                        body if type(body) is str else msgspec.json.encode(body).decode()
                    )
                if lr.severity_text:
                    rec["log.level"] = lr.severity_text
                elif lr.severity_number:
                    rec["log.level"] = severity_name(lr.severity_number)
                if lr.severity_number:
                    rec["log.severity_number"] = lr.severity_number
                t = lr.time_unix_nano or lr.observed_time_unix_nano
                if t:
                    rec["@timestamp"] = rfc3339_ns(t)
                elif "@timestamp" not in rec:
                    rec["@timestamp"] = rfc3339_ns(NOW)
                if len(lr.trace_id) not in (0, 16) or len(lr.span_id) not in (0, 8):
                    rejected += 1
                    reason = reason or (
                        f"a log record has a trace id of {len(lr.trace_id)} bytes or a span id "
                        f"of {len(lr.span_id)} bytes; they take 16 and 8"
                    )
                    continue
                if lr.trace_id:
                    rec["trace.id"] = binascii.hexlify(lr.trace_id).decode()
                if lr.span_id:
                    rec["span.id"] = binascii.hexlify(lr.span_id).decode()
                if lr.event_name:
                    rec["event.name"] = lr.event_name
                records.append(rec)
    return records, rejected, reason


# -- requests of every shape --------------------------------------------------------------

texts = st.one_of(
    st.sampled_from(["", "GET", "service.name", "http.request.method", "é✓ text"]),
    st.text(max_size=20),
    st.text(min_size=120, max_size=200),  # lengths around 128: one or two bytes
    st.builds(lambda n: "x" * n, st.sampled_from([16_383, 16_384, 20_000])),
)
scalars = st.one_of(
    st.builds(lambda s: AnyValue(string_value=s), texts),
    st.builds(lambda i: AnyValue(int_value=i), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda f: AnyValue(double_value=f), st.floats(allow_nan=False)),
    st.builds(lambda b: AnyValue(bool_value=b), st.booleans()),
    st.builds(lambda b: AnyValue(bytes_value=b), st.binary(max_size=20)),
    st.just(AnyValue()),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.builds(
            lambda xs: AnyValue(array_value=ArrayValue(values=xs)), st.lists(inner, max_size=3)
        ),
        st.builds(
            lambda kvs: AnyValue(
                kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs])
            ),
            st.lists(st.tuples(texts, inner), max_size=3),
        ),
    ),
    max_leaves=6,
)
# A few keys and values, so that a batch repeats encodings (the table's hits) and overrides.
attributes = st.lists(
    st.builds(
        lambda k, v: KeyValue(key=k, value=v),
        st.sampled_from(["a", "b", "service.name", "message", "@timestamp", "log.level"]) | texts,
        st.sampled_from([AnyValue(string_value="GET"), AnyValue(int_value=200)]) | values,
    ),
    max_size=5,
)
ids = st.sampled_from([b"", bytes(range(16)), bytes(range(8)), b"\x01" * 5])
log_records = st.builds(
    LogRecord,
    time_unix_nano=st.sampled_from([0, NOW - 5, 2**63]),
    observed_time_unix_nano=st.sampled_from([0, NOW - 9]),
    severity_number=st.integers(0, 24),
    severity_text=st.sampled_from(["", "INFO", "warn"]),
    body=values,
    attributes=attributes,
    trace_id=ids,
    span_id=ids,
    event_name=st.sampled_from(["", "login"]),
)
scope_logs = st.builds(
    ScopeLogs,
    scope=st.builds(
        InstrumentationScope,
        name=st.sampled_from(["", "app"]),
        version=st.sampled_from(["", "1.2"]),
    ),
    log_records=st.lists(log_records, max_size=4),
)
requests = st.builds(
    ExportLogsServiceRequest,
    resource_logs=st.lists(
        st.builds(
            ResourceLogs,
            resource=st.builds(Resource, attributes=attributes),
            scope_logs=st.lists(scope_logs, max_size=3),
        ),
        max_size=3,
    ),
)


def same(a: Any, b: Any) -> bool:
    """Equal, field order included (a NaN never occurs: doubles are drawn without it)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_a_request_maps_as_read_with_otlps_own_classes(req: ExportLogsServiceRequest) -> None:
    body = req.SerializeToString()
    records, rejected, reason = to_records(decode_protobuf(body), NOW)
    expected, expected_rejected, expected_reason = reference(
        ExportLogsServiceRequest.FromString(body)
    )
    assert (rejected, reason) == (expected_rejected, expected_reason)
    assert same(records, expected)
    # Twice: the second reading finds the attributes among those already decoded.
    assert same(to_records(decode_protobuf(body), NOW)[0], expected)


def test_a_list_or_map_attribute_is_a_records_own_copy() -> None:
    """Scalars are shared through the table; a list or map must not be, or a transform that
    changes one record's list would change the next record's."""
    req = ExportLogsServiceRequest()
    logs = req.resource_logs.add().scope_logs.add()
    for _ in range(2):
        lr = logs.log_records.add()
        lr.attributes.add(key="tags").value.array_value.values.add(string_value="a")
    first, second = to_records(decode_protobuf(req.SerializeToString()), NOW)[0]
    first["tags"].append("changed")
    assert second["tags"] == ["a"]


@pytest.mark.parametrize("field", ["key", "value", "body"])
def test_text_that_is_not_utf8_is_refused_as_otlps_classes_refuse_it(field: str) -> None:
    body = invalid_utf8(field)
    with pytest.raises(DecodeError, match="UTF-8"):
        ExportLogsServiceRequest.FromString(body)
    with pytest.raises(OtlpError, match="not a valid ExportLogsServiceRequest"):
        to_records(decode_protobuf(body), NOW)


def test_a_known_attribute_is_not_decoded_again_until_the_table_is_full() -> None:
    decoded: list[bytes] = []

    def decode(raw: bytes) -> tuple[str, Any]:
        decoded.append(raw)
        kv = KeyValue.FromString(raw)
        return kv.key, kv.value.string_value

    table = wire.Attributes(decode, limit=2)
    a, b, c = (KeyValue(key=k, value=AnyValue(string_value="v")).SerializeToString() for k in "abc")
    assert table.add([a, b, a]) == [("a", "v"), ("b", "v"), ("a", "v")]
    assert table.lookup(a) == ("a", "v") and decoded == [a, b]
    table.add([c])  # the table held two: it starts again with c
    with pytest.raises(KeyError):
        table.lookup(a)
    assert table.lookup(c) == ("c", "v")


def test_a_long_attribute_is_decoded_each_time_not_kept() -> None:
    decoded: list[bytes] = []

    def decode(raw: bytes) -> tuple[str, Any]:
        decoded.append(raw)
        return "k", KeyValue.FromString(raw).value.string_value

    table = wire.Attributes(decode, longest=64)
    short, long = (
        KeyValue(key="k", value=AnyValue(string_value="v" * n)).SerializeToString()
        for n in (10, 100)
    )
    table.add([short, long])
    table.add([short, long])
    assert decoded == [short, long, long]
    with pytest.raises(KeyError):
        table.lookup(long)


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16_383, 16_384])
def test_a_string_body_is_read_without_a_message_at_every_length(n: int) -> None:
    text = "é" * (n // 2) + "x" * (n % 2)
    encoded = AnyValue(string_value=text).SerializeToString()
    assert wire.string_body(encoded) == (text if n < 16_384 else None)
    assert wire.string_body(AnyValue(int_value=5).SerializeToString()) is None
    assert wire.string_body(encoded + AnyValue(int_value=5).SerializeToString()) is None
