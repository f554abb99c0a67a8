"""Records as OTLP log export requests, protobuf or JSON: the body the OTLP output sends.

Apart from the sink (``sidekick.ship.sinks.otlp``: the request, the collector's answers, the
counters) so that the mapping reads on its own. A record maps to the OTLP log data model so:

- ``k8s.*``, ``host.*``, ``service.*``, ``container.*`` and ``cloud.*`` fields are *resource*
  attributes; records are grouped by resource, one ``ResourceLogs`` per distinct set;
- ``@timestamp`` → ``time_unix_nano``; the send time → ``observed_time_unix_nano``;
- ``log.level`` → ``severity_text`` and ``severity_number`` (syslog and common level names);
- ``message`` → ``body`` (a string);
- ``trace_id``/``span_id`` (or ``trace.id``/``span.id``) holding 32/16 hex digits → the
  record's trace context;
- every other field → a log record attribute, typed (string, int, double, bool, array, map).

The JSON encoding follows OTLP's rules, which differ from protobuf's canonical JSON mapping:
camelCase field names, 64-bit integers as decimal strings, enums as numbers, and trace/span
ids as hex (not base64).

Where each field goes is decided once per field name and cached, and a batch is grouped by
resource in one pass over its records.

Left out: ``resource``/``scope`` schema URLs, and the other direction (OTLP requests to
records, for the inputs: ``sidekick.ship.sources._otlp_map``).
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from sidekick import __version__
from sidekick.ship.records import MESSAGE, TIMESTAMP, Record
from sidekick.ship.sinks._http import rfc3339_to_ns

RESOURCE_PREFIXES = ("k8s.", "host.", "service.", "container.", "cloud.")
LEVEL = "log.level"
SCOPE_NAME = "sidekick"

SEVERITY: dict[str, int] = {
    "trace": 1,
    "debug": 5,
    "info": 9,
    "informational": 9,
    "information": 9,
    "notice": 10,
    "warn": 13,
    "warning": 13,
    "error": 17,
    "err": 17,
    "crit": 18,
    "critical": 18,
    "alert": 19,
    "fatal": 21,
    "emerg": 21,
    "emergency": 21,
    "panic": 21,
}
_TRACE_FIELDS = (("trace_id", "trace.id"), ("span_id", "span.id"))
_INT64 = (-(2**63), 2**63 - 1)


# ---------------------------------------------------------------------------- the data model


def _hex_id(value: Any, length: int) -> bytes | None:
    if isinstance(value, str) and len(value) == length:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            return None
        return raw if any(raw) else None  # all-zero ids are invalid in OTLP
    return None


# Where each record field goes; decided once per field name and cached.
_ATTR, _RESOURCE, _SKIP, _LEVEL, _TRACE = range(5)
_TRACE_NAMES = {name for pair in _TRACE_FIELDS for name in pair}
_kinds: dict[str, int] = {}


def _kind(key: str) -> int:
    kind = _kinds.get(key)
    if kind is None:
        if key in (TIMESTAMP, MESSAGE):
            kind = _SKIP
        elif key == LEVEL:
            kind = _LEVEL
        elif key in _TRACE_NAMES:
            kind = _TRACE
        elif key.startswith(RESOURCE_PREFIXES):
            kind = _RESOURCE
        else:
            kind = _ATTR
        if len(_kinds) > 4096:
            _kinds.clear()
        _kinds[key] = kind
    return kind


class _Split:
    """One record split into the parts of an OTLP log record."""

    __slots__ = ("attributes", "body", "level", "span_id", "time", "trace_id")

    def __init__(self, record: Record, attrs: dict[str, Any], traced: bool, now: int) -> None:
        ts = rfc3339_to_ns(record.get(TIMESTAMP))
        self.time = ts if ts is not None else now
        self.body = record.get(MESSAGE)
        level = record.get(LEVEL)
        self.level = level if isinstance(level, str) else None
        self.trace_id = self.span_id = b""
        if traced:
            for (snake, dotted), length in zip(_TRACE_FIELDS, (32, 16), strict=True):
                for name in (snake, dotted):
                    raw = _hex_id(attrs.get(name), length)
                    if raw is not None:
                        if snake == "trace_id":
                            self.trace_id = raw
                        else:
                            self.span_id = raw
                        del attrs[name]
                        break
        self.attributes = attrs


def group_by_resource(records: list[Record], now: int) -> list[tuple[dict[str, Any], list[_Split]]]:
    """Records split into resource and log-record parts, grouped by resource."""
    groups: dict[tuple[Any, ...], tuple[dict[str, Any], list[_Split]]] = {}
    kinds = _kinds
    for record in records:
        resource: dict[str, Any] = {}
        attrs: dict[str, Any] = {}
        traced = False
        for k, v in record.items():
            if v is None:
                continue
            kind = kinds.get(k)
            if kind is None:
                kind = _kind(k)
            if kind == _ATTR:
                attrs[k] = v
            elif kind == _RESOURCE:
                resource[k] = v
            elif kind == _TRACE:
                attrs[k] = v
                traced = True
            elif kind == _LEVEL and not isinstance(v, str):
                attrs[k] = v  # a numeric level stays an attribute; text becomes the severity
        key = tuple(resource.items())
        try:
            group = groups.get(key)
        except TypeError:  # a list or map as a resource value: key on its text instead
            key = tuple((k, str(v)) for k, v in resource.items())
            group = groups.get(key)
        if group is None:
            group = (resource, [])
            groups[key] = group
        group[1].append(_Split(record, attrs, traced, now))
    return list(groups.values())


# ---------------------------------------------------------------------------- protobuf


def _set_any(av: AnyValue, value: Any) -> None:
    if isinstance(value, str):
        av.string_value = value
    elif isinstance(value, bool):
        av.bool_value = value
    elif isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
        av.int_value = value
    elif isinstance(value, float):
        av.double_value = value
    elif isinstance(value, list | tuple):
        arr = av.array_value
        arr.SetInParent()  # an empty list is still an (empty) array, not an unset value
        for item in value:
            _set_any(arr.values.add(), item)
    elif isinstance(value, dict):
        kv = av.kvlist_value
        kv.SetInParent()
        for k, v in value.items():
            entry = kv.values.add(key=str(k))
            _set_any(entry.value, v)
    elif isinstance(value, bytes):
        av.bytes_value = value
    else:
        av.string_value = str(value)


def _add_attributes(dest: Any, attrs: dict[str, Any]) -> None:
    for k, v in attrs.items():
        kv: KeyValue = dest.add(key=k)
        _set_any(kv.value, v)


def encode_protobuf(records: list[Record], now: int) -> bytes:
    req = ExportLogsServiceRequest()
    for resource, splits in group_by_resource(records, now):
        rl = req.resource_logs.add()
        _add_attributes(rl.resource.attributes, resource)
        sl = rl.scope_logs.add()
        sl.scope.name = SCOPE_NAME
        sl.scope.version = __version__
        for s in splits:
            lr: LogRecord = sl.log_records.add()
            lr.time_unix_nano = s.time
            lr.observed_time_unix_nano = now
            if s.level is not None:
                lr.severity_text = s.level
                lr.severity_number = SEVERITY.get(s.level.lower(), 0)  # type: ignore[assignment]
            if s.body is not None:
                _set_any(lr.body, s.body)
            _add_attributes(lr.attributes, s.attributes)
            if s.trace_id:
                lr.trace_id = s.trace_id
            if s.span_id:
                lr.span_id = s.span_id
    return req.SerializeToString()


# ---------------------------------------------------------------------------- JSON


def _json_any(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
        return {"intValue": str(value)}  # int64 travels as a string in OTLP JSON
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": value}
        return {
            "doubleValue": "NaN"
            if math.isnan(value)
            else ("Infinity" if value > 0 else "-Infinity")
        }
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_json_any(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": _json_attrs(value)}}
    return {"stringValue": str(value)}


def _json_attrs(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": str(k), "value": _json_any(v)} for k, v in attrs.items()]


_json_encoder = msgspec.json.Encoder()


def encode_json(records: list[Record], now: int) -> bytes:
    resource_logs = []
    observed = str(now)
    for resource, splits in group_by_resource(records, now):
        log_records = []
        for s in splits:
            lr: dict[str, Any] = {"timeUnixNano": str(s.time), "observedTimeUnixNano": observed}
            if s.level is not None:
                lr["severityNumber"] = SEVERITY.get(s.level.lower(), 0)
                lr["severityText"] = s.level
            if s.body is not None:
                lr["body"] = _json_any(s.body)
            lr["attributes"] = _json_attrs(s.attributes)
            if s.trace_id:
                lr["traceId"] = s.trace_id.hex()
            if s.span_id:
                lr["spanId"] = s.span_id.hex()
            log_records.append(lr)
        resource_logs.append(
            {
                "resource": {"attributes": _json_attrs(resource)},
                "scopeLogs": [
                    {
                        "scope": {"name": SCOPE_NAME, "version": __version__},
                        "logRecords": log_records,
                    }
                ],
            }
        )
    return _json_encoder.encode({"resourceLogs": resource_logs})
