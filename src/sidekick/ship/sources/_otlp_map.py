"""OTLP logs requests (protobuf or OTLP/JSON) to records, and OTLP's answers.

Shared by ``otlp://`` (OTLP/HTTP), ``otlp+grpc://`` and the ``http://`` ingest when it
recognises an OTLP body. Mapping of one ``LogRecord`` (docs/ingest.md has the table):

- ``body``: a string becomes ``message``; a number or boolean its JSON text in ``message``; a
  map (``kvlist``) is kept as fields (its ``message`` key, if any, is the message); an array
  becomes ``message`` as JSON text; bytes are base64.
- ``severity_text`` becomes ``log.level``; without it the level comes from
  ``severity_number`` (TRACE, DEBUG, INFO, WARN, ERROR, FATAL, as OpenTelemetry names the
  ranges); a set ``severity_number`` is also kept as ``log.severity_number``.
- ``time_unix_nano`` (else ``observed_time_unix_nano``, else the receive time) becomes
  ``@timestamp``.
- attributes, then the resource's attributes under them, become fields with their
  OpenTelemetry names (``service.name``, ``http.request.method`` ...); a log record's own
  attribute wins over a resource attribute of the same name.
- ``trace_id``/``span_id`` become ``trace.id``/``span.id`` in lowercase hex; the scope's name
  and version ``otel.scope.name``/``otel.scope.version``; ``event_name`` ``event.name``.

A record whose trace or span id has the wrong length (16 and 8 bytes) is rejected alone and
reported in ``partial_success``; a body that does not decode rejects the whole request.

OTLP/JSON differs from protobuf's canonical JSON mapping in its trace and span ids (hex, not
base64); those are rewritten before the document is read by protobuf's JSON parser, which
takes camelCase and snake_case names, 64-bit integers as strings or numbers and enums as
numbers or names, and ignores unknown fields, as the spec asks of receivers.

Left out: scope attributes, ``dropped_attributes_count``, ``flags`` and schema URLs.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from sidekick.ship.records import MESSAGE, TIMESTAMP, Record
from sidekick.ship.sources._otlp_wire import (
    Attributes,
    count_log_records,
    parse_request,
    string_body,
)
from sidekick.ship.sources.receiver import Stamps
from sidekick.ship.timefmt import rfc3339_ns

LEVEL = "log.level"
SEVERITY_NUMBER = "log.severity_number"
_SEVERITY = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
# google.rpc.Code of an HTTP status, for the Status body OTLP/HTTP errors carry.
_RPC_CODE = {400: 3, 401: 16, 404: 5, 405: 12, 408: 4, 413: 3, 415: 3, 429: 8, 499: 1, 503: 14}


class OtlpError(Exception):
    """The request cannot be decoded as OTLP; the message names the problem."""


def severity_name(number: int) -> str:
    """OpenTelemetry's short name of a severity number (1-24)."""
    return _SEVERITY[(min(max(number, 1), 24) - 1) // 4]


def decode_protobuf(body: bytes) -> Any:
    """A protobuf request, read with the light schema of ``_otlp_wire`` (``to_records``
    decodes its attributes and bodies)."""
    try:
        return parse_request(body)
    except (DecodeError, RecursionError) as exc:
        raise OtlpError(
            f"the body is not a valid ExportLogsServiceRequest protobuf ({exc or 'truncated'}); "
            "send OTLP logs encoded as protobuf"
        ) from None


def protobuf_records(body: bytes) -> int:
    """The number of log records of a protobuf request, counted without parsing them: checked
    before ``decode_protobuf``, so a request of millions of tiny records is refused before it
    is parsed (parsing takes about 150 bytes of memory a record)."""
    try:
        return count_log_records(body)
    except (DecodeError, RecursionError) as exc:
        raise OtlpError(
            f"the body is not a valid ExportLogsServiceRequest protobuf ({exc or 'truncated'}); "
            "send OTLP logs encoded as protobuf"
        ) from None


def decode_json(doc: Any) -> Any:
    """An OTLP/JSON document (already decoded from JSON) as a request message."""
    if not isinstance(doc, dict):
        raise OtlpError("the body is not a JSON object; send an OTLP/JSON ExportLogsServiceRequest")
    _hex_ids_to_base64(doc)
    req = ExportLogsServiceRequest()
    try:
        json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise OtlpError(
            f"the body is not a valid OTLP/JSON ExportLogsServiceRequest ({exc}); "
            "follow the OTLP/JSON encoding"
        ) from None
    # Read as protobuf from here: one mapping for both encodings.
    return decode_protobuf(req.SerializeToString())


def decode_json_bytes(body: bytes) -> Any:
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise OtlpError(f"the body is not valid JSON ({exc}); send OTLP/JSON") from None
    return decode_json(doc)


def _hex_ids_to_base64(doc: dict[str, Any]) -> None:
    for rl in _dicts(doc.get("resourceLogs", doc.get("resource_logs"))):
        for sl in _dicts(rl.get("scopeLogs", rl.get("scope_logs"))):
            for rec in _dicts(sl.get("logRecords", sl.get("log_records"))):
                for key in ("traceId", "trace_id", "spanId", "span_id"):
                    value = rec.get(key)
                    if isinstance(value, str) and value:
                        try:
                            raw = bytes.fromhex(value)
                        except ValueError:
                            raise OtlpError(
                                f"{key} {value[:40]!r} is not hex; OTLP/JSON gives trace and "
                                "span ids as hex digits"
                            ) from None
                        rec[key] = base64.b64encode(raw).decode()


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _value(v: Any) -> Any:
    """An ``AnyValue`` as a plain value (maps as dicts, arrays as lists, bytes as base64)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None


_ATTRIBUTES = Attributes(lambda raw: _pair(KeyValue.FromString(raw)))


def _pair(kv: Any) -> tuple[str, Any]:
    value = kv.value
    # Most attributes are non-empty strings, and a non-empty string_value means the oneof
    # holds a string (reading it is cheaper than asking WhichOneof); anything else, an empty
    # string included, goes through _value.
    text = value.string_value
    return kv.key, text if text else _value(value)


def to_records(req: Any, now_ns: int) -> tuple[list[Record], int, str]:
    """(records, rejected count, the first rejection's reason) of a request read by
    ``decode_protobuf`` (raises ``OtlpError`` for an attribute or body that does not decode)."""
    try:
        return _records(req, now_ns)
    except (DecodeError, RecursionError) as exc:
        raise OtlpError(
            f"the body is not a valid ExportLogsServiceRequest protobuf ({exc or 'truncated'}); "
            "send OTLP logs encoded as protobuf"
        ) from None


def _records(req: Any, now_ns: int) -> tuple[list[Record], int, str]:
    records: list[Record] = []
    rejected = 0
    reason = ""
    received = ""
    stamp = Stamps()
    known = _ATTRIBUTES.lookup
    learn = _ATTRIBUTES.add
    for rl in req.resource_logs:
        resource = dict(map(_pair, Resource.FromString(rl.resource).attributes))
        for sl in rl.scope_logs:
            base = dict(resource)
            scope = InstrumentationScope.FromString(sl.scope)
            if scope.name:
                base["otel.scope.name"] = scope.name
            if scope.version:
                base["otel.scope.version"] = scope.version
            for lr in sl.log_records:
                rec = dict(base)
                attributes = lr.attributes
                try:
                    rec.update(map(known, attributes))
                except KeyError:  # one not seen yet, or a list or map: in order again
                    rec.update(learn(attributes))
                raw_body = lr.body
                text = string_body(raw_body)
                if text is not None:
                    rec[MESSAGE] = text
                elif raw_body:
                    body = AnyValue.FromString(raw_body)
                    kind = body.WhichOneof("value")
                    if kind == "kvlist_value":
                        rec.update(_value(body))
                    elif kind is not None:
                        value = _value(body)
                        rec[MESSAGE] = (
                            value if isinstance(value, str) else msgspec.json.encode(value).decode()
                        )
                number = lr.severity_number
                if lr.severity_text:
                    rec[LEVEL] = lr.severity_text
                elif number:
                    rec[LEVEL] = severity_name(number)
                if number:
                    rec[SEVERITY_NUMBER] = number
                t = lr.time_unix_nano or lr.observed_time_unix_nano
                if t:
                    rec[TIMESTAMP] = stamp(t)
                elif TIMESTAMP not in rec:
                    received = received or rfc3339_ns(now_ns)
                    rec[TIMESTAMP] = received
                trace_id = lr.trace_id
                span_id = lr.span_id
                if trace_id or span_id:
                    if len(trace_id) not in (0, 16) or len(span_id) not in (0, 8):
                        rejected += 1
                        reason = reason or (
                            f"a log record has a trace id of {len(trace_id)} bytes or a span id "
                            f"of {len(span_id)} bytes; they take 16 and 8"
                        )
                        continue
                    if trace_id:
                        rec["trace.id"] = binascii.hexlify(trace_id).decode()
                    if span_id:
                        rec["span.id"] = binascii.hexlify(span_id).decode()
                if lr.event_name:
                    rec["event.name"] = lr.event_name
                records.append(rec)
    return records, rejected, reason


def count_records(req: Any) -> int:
    return sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)


def export_response(rejected: int, message: str, *, as_json: bool) -> bytes:
    """An ``ExportLogsServiceResponse``, with ``partial_success`` if records were rejected."""
    if as_json:
        if not rejected:
            return b"{}"
        return msgspec.json.encode(
            {"partialSuccess": {"rejectedLogRecords": str(rejected), "errorMessage": message}}
        )
    resp = ExportLogsServiceResponse()
    if rejected:
        resp.partial_success.rejected_log_records = rejected
        resp.partial_success.error_message = message
    return bytes(resp.SerializeToString())


def status_body(http_status: int, message: str, *, as_json: bool) -> bytes:
    """A ``google.rpc.Status`` for an OTLP/HTTP error answer (protobuf or JSON)."""
    code = _RPC_CODE.get(http_status, 2)
    if as_json:
        return msgspec.json.encode({"code": code, "message": message})
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
