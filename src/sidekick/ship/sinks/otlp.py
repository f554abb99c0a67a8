"""OpenTelemetry output: OTLP/HTTP logs, ``POST /v1/logs``, protobuf (default) or JSON.

``otlp://HOST:4318`` (``otlp+https://`` for TLS; a URL path other than ``/`` is used as the
full logs endpoint, as the OTLP exporter spec says for signal-specific URLs).

Mapping of a record to the OTLP log data model:

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

Outcomes, per the OTLP/HTTP spec: 2xx delivered. A 2xx may carry ``partial_success`` with
``rejected_log_records``: the collector accepted the request but dropped that many records;
the spec says not to retry them, and the response does not say which ones, so they are
counted (``rejected_by_peer``) and logged with the collector's message (once a minute, with
a count). A 2xx body that is not an ``ExportLogsServiceResponse`` (a proxy's HTML page, bytes
that do not decode, a JSON body of the wrong shape) or whose partial success rejects more
records than the batch held (or fewer than none) does not confirm the batch: it is counted as
a bad response and the batch is sent again. An empty body is an empty response message (no
partial success), as protobuf encodes it. 429, 502, 503, 504 and
connection errors are retried (honouring ``Retry-After``); 413 halves the batch; 401/403/404
are retried with an error log (see ``_http``); any other status rejects the batch for good
(``PermanentError`` with the ``google.rpc.Status`` message).

Left out: OTLP/gRPC, and ``resource``/``scope`` schema URLs.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import msgspec
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from sidekick import __version__
from sidekick.core.durations import parse_duration
from sidekick.core.errors import PermanentError
from sidekick.ship.records import DELIVERED, MESSAGE, TIMESTAMP, Record, SendResult
from sidekick.ship.sinks import OutputSpec
from sidekick.ship.sinks._http import (
    HttpClient,
    PushSink,
    Response,
    looks_like_html,
    raise_for_common_status,
    rate_log,
    rfc3339_to_ns,
)
from sidekick.ship.sinks._options import (
    Target,
    load_options,
    parse_pairs,
    parse_target,
    tls_context,
)

LOGS_PATH = "/v1/logs"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
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


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of an OTLP output (URL query or config file)."""

    encoding: Literal["protobuf", "json"] = "protobuf"
    # extra request headers; in a URL query write "name=value,name=value"
    headers: dict[str, str] | str | None = None
    ca_file: str | None = None
    gzip: bool = True
    timeout: str | float = 10.0  # the OTLP exporter default


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


# ---------------------------------------------------------------------------- responses


class BadResponse(ValueError):
    """A 2xx body that is not an ``ExportLogsServiceResponse``; says what is wrong with it."""


def _json_partial_success(body: bytes) -> tuple[int, str]:
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise BadResponse("a body that is not JSON") from None
    if not isinstance(obj, dict):
        raise BadResponse("a JSON body that is not an object")
    ps = obj.get("partialSuccess", obj.get("partial_success"))
    if ps is None:
        return 0, ""
    if not isinstance(ps, dict):
        raise BadResponse("a partialSuccess that is not an object")
    rejected = ps.get("rejectedLogRecords", ps.get("rejected_log_records", 0))
    message = ps.get("errorMessage", ps.get("error_message", ""))
    if rejected is None:
        rejected = 0
    # int64 travels as a decimal string in OTLP JSON; a number is accepted too.
    if isinstance(rejected, str) and rejected.lstrip("-").isdigit():
        rejected = int(rejected)
    if isinstance(rejected, bool) or not isinstance(rejected, int):
        raise BadResponse(f"rejectedLogRecords {rejected!r}, which is not a whole number")
    return rejected, message if isinstance(message, str) else str(message)


def _partial_success(resp: Response) -> tuple[int, str]:
    """(rejected_log_records, error_message) from a 2xx response body; (0, "") if none.

    Raises ``BadResponse`` when the body is not an export response.
    """
    if not resp.body:
        return 0, ""
    if looks_like_html(resp):
        raise BadResponse("an HTML page, not the collector's answer")
    ctype = resp.headers.get("Content-Type", "").lower()
    if "json" in ctype:
        return _json_partial_success(resp.body)
    if ctype and not any(t in ctype for t in ("protobuf", "octet-stream")):
        raise BadResponse(f"a {ctype.split(';')[0]} body, not an export response")
    try:
        msg = ExportLogsServiceResponse.FromString(resp.body)
    except Exception:  # protobuf raises its own DecodeError type
        raise BadResponse("a body that is not a protobuf export response") from None
    ps = msg.partial_success
    return int(ps.rejected_log_records), str(ps.error_message)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def rpc_status_message(body: bytes) -> str | None:
    """Field 2 (``message``) of a protobuf ``google.rpc.Status``, read without its classes."""
    pos = 0
    try:
        while pos < len(body):
            tag, pos = _varint(body, pos)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                _, pos = _varint(body, pos)
            elif wire == 2:
                size, pos = _varint(body, pos)
                chunk = body[pos : pos + size]
                pos += size
                if field == 2:
                    return chunk.decode("utf-8", "replace")
            else:
                return None
    except ValueError:
        return None
    return None


def _error_text(resp: Response) -> str:
    ctype = resp.headers.get("Content-Type", "")
    if "protobuf" in ctype:
        message = rpc_status_message(resp.body)
        if message:
            return message
    elif "json" in ctype:
        try:
            obj = msgspec.json.decode(resp.body)
            if isinstance(obj, dict) and obj.get("message"):
                return str(obj["message"])
        except msgspec.DecodeError:
            pass
    return resp.text(300) or "no body"


# ---------------------------------------------------------------------------- the sink


class OtlpSink(PushSink):
    """Sends batches as OTLP/HTTP log export requests."""

    def __init__(self, spec: OutputSpec) -> None:
        target = parse_target(spec.url, default_port=4318)
        opts = load_options(Options, target, spec.options)
        self.name = f"otlp {target.hostport}"
        path = target.path if target.path not in ("", "/") else LOGS_PATH
        self.url = target.base_url() + path
        self.encoding = opts.encoding
        headers = self._extra_headers(target, opts.headers)
        headers["Content-Type"] = (
            "application/x-protobuf" if opts.encoding == "protobuf" else "application/json"
        )
        if opts.gzip:
            headers["Content-Encoding"] = "gzip"
        self._gzip = opts.gzip
        self._headers = headers
        timeout = parse_duration(opts.timeout, name=f"output {target.url!r}: option 'timeout'")
        self._client = HttpClient(
            self.name, ssl_context=tls_context(target, opts.ca_file), timeout=timeout
        )
        # Records the collector accepted and then dropped (partial success); not retryable.
        self.rejected_by_peer = 0

    def counters(self) -> dict[str, int]:
        """Output-specific counts for ``/metrics`` (see ship.metrics.OutputEventsCollector)."""
        return {**super().counters(), "rejected_by_peer": self.rejected_by_peer}

    @staticmethod
    def _extra_headers(target: Target, headers: dict[str, str] | str | None) -> dict[str, str]:
        if headers is None:
            return {}
        if isinstance(headers, dict):
            return {str(k): str(v) for k, v in headers.items()}
        return parse_pairs(
            target,
            "headers",
            headers,
            value_required=False,
            example="headers=X-Tenant=a,X-Env=prod",
        )

    def encode(self, records: list[Record]) -> bytes:
        now = time.time_ns()
        if self.encoding == "json":
            return encode_json(records, now)
        return encode_protobuf(records, now)

    async def _send_once(self, records: list[Record]) -> SendResult | None:
        resp = await self.post_batch(records)
        status = resp.status
        if 200 <= status < 300:
            try:
                rejected, message = _partial_success(resp)
            except BadResponse as exc:
                raise self.unconfirmed(resp, len(records), str(exc)) from None
            if not 0 <= rejected <= len(records):
                raise self.unconfirmed(
                    resp,
                    len(records),
                    f"its partial success rejects {rejected} of {len(records)} records",
                )
            if rejected:
                self.rejected_by_peer += rejected
                rate_log.warning(
                    (self.name, "partial success"),
                    "%s: the collector accepted a batch of %d records but dropped %d of them "
                    "(%s); OTLP says not to retry these and does not say which, so they are "
                    "counted here and not sent again",
                    self.name,
                    len(records),
                    rejected,
                    message or "no message",
                )
            elif message:
                rate_log.warning(
                    (self.name, "collector message"),
                    "%s: the collector says: %s",
                    self.name,
                    message,
                )
            return DELIVERED
        if status == 413:
            rate_log.warning(
                (self.name, 413),
                "%s: HTTP 413 for %d records; sending them in halves",
                self.name,
                len(records),
            )
            return None
        raise_for_common_status(self.name, resp, retry_statuses=RETRY_STATUSES)
        raise PermanentError(f"{self.name}: HTTP {status}: {_error_text(resp)}")


def create(spec: OutputSpec) -> OtlpSink:
    return OtlpSink(spec)
