"""OpenTelemetry output: OTLP/HTTP logs, ``POST /v1/logs``, protobuf (default) or JSON.

``otlp://HOST:4318`` (``otlp+https://`` for TLS; a URL path other than ``/`` is used as the
full logs endpoint, as the OTLP exporter spec says for signal-specific URLs).

A record is mapped to the OTLP log data model (resource attributes, time, severity, body, trace
context, typed attributes) and encoded, as protobuf or OTLP's JSON, in ``_otlp_encode``.

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

import time
from typing import Literal

import msgspec
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from sidekick.core.durations import parse_duration
from sidekick.core.errors import PermanentError
from sidekick.ship.records import DELIVERED, Record, SendResult
from sidekick.ship.sinks import OutputSpec
from sidekick.ship.sinks._http import (
    HttpClient,
    PushSink,
    Response,
    looks_like_html,
    raise_for_common_status,
    rate_log,
)
from sidekick.ship.sinks._options import (
    Target,
    check_headers,
    load_options,
    parse_pairs,
    parse_target,
    tls_context,
)
from sidekick.ship.sinks._otlp_encode import encode_json, encode_protobuf

LOGS_PATH = "/v1/logs"
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of an OTLP output (URL query or config file)."""

    encoding: Literal["protobuf", "json"] = "protobuf"
    # extra request headers; in a URL query write "name=value,name=value"
    headers: dict[str, str] | str | None = None
    ca_file: str | None = None
    gzip: bool = True
    timeout: str | float = 10.0  # the OTLP exporter default


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
        rejected, message = _json_partial_success(resp.body)
        return rejected, resp.mask(message)
    if ctype and not any(t in ctype for t in ("protobuf", "octet-stream")):
        raise BadResponse(f"a {ctype.split(';')[0]} body, not an export response")
    try:
        msg = ExportLogsServiceResponse.FromString(resp.body)
    except Exception:  # protobuf raises its own DecodeError type
        raise BadResponse("a body that is not a protobuf export response") from None
    ps = msg.partial_success
    return int(ps.rejected_log_records), resp.mask(str(ps.error_message))


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
            return resp.mask(message)
    elif "json" in ctype:
        try:
            obj = msgspec.json.decode(resp.body)
            if isinstance(obj, dict) and obj.get("message"):
                return resp.mask(str(obj["message"]))
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
            return check_headers(target, {str(k): str(v) for k, v in headers.items()})
        pairs = parse_pairs(
            target,
            "headers",
            headers,
            value_required=False,
            example="headers=X-Tenant=a,X-Env=prod",
        )
        return check_headers(target, pairs)

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
