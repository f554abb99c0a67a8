"""A light reading of OTLP's ``ExportLogsServiceRequest``: the same bytes, a flatter schema.

Reading a parsed request field by field costs more than parsing it: every attribute of every
log record is a ``KeyValue`` message and its ``AnyValue`` another, and the protobuf runtime
makes a Python object for each as it is touched. This module declares, at import, a schema
that is wire-compatible with OTLP's for the parts the mapping reads (``_otlp_map``):

- the request, ``ResourceLogs``, ``ScopeLogs`` and ``LogRecord`` with their field numbers and
  types, so the runtime still parses the envelope and every log record's scalars in C;
- a log record's ``body`` and ``attributes``, and the ``resource`` and ``scope``, declared as
  ``bytes`` (a message is length-delimited on the wire, like bytes), so they arrive as the
  encoded message itself.

Then an attribute's bytes are a dictionary key: an application sends the same
``http.request.method=GET`` or ``service.instance.id`` in most of its records, and each distinct
encoding is decoded once, by OTLP's own ``KeyValue`` class, and remembered (``Attributes``).
A string body, the common case, is its tag, its length and its UTF-8 text, read directly; any
other body is decoded by OTLP's ``AnyValue``.

Nothing is validated less: a string is checked as UTF-8 where it is read (the runtime checks
the schema's own ``string`` fields), each attribute and body of the request is decoded or found
among the encodings already decoded, and a decoding error rejects the request as a parse error
does. Two differences with parsing OTLP's schema, both for encodings no OTLP exporter writes:
a singular message field given twice keeps its last occurrence (protobuf merges them), and the
nesting limit counts from the attribute or body, not from the request.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

_F = descriptor_pb2.FieldDescriptorProto
_ONE = _F.LABEL_OPTIONAL
_MANY = _F.LABEL_REPEATED
_PACKAGE = "sidekick.otlp_wire"

# (number, name, type, label, message type) per field, as opentelemetry/proto/logs/v1 and
# collector/logs/v1 number them.
_SCHEMA: dict[str, list[tuple[int, str, int, int, str]]] = {
    "Request": [(1, "resource_logs", _F.TYPE_MESSAGE, _MANY, "ResourceLogs")],
    "ResourceLogs": [
        (1, "resource", _F.TYPE_BYTES, _ONE, ""),
        (2, "scope_logs", _F.TYPE_MESSAGE, _MANY, "ScopeLogs"),
        (3, "schema_url", _F.TYPE_STRING, _ONE, ""),
    ],
    "ScopeLogs": [
        (1, "scope", _F.TYPE_BYTES, _ONE, ""),
        (2, "log_records", _F.TYPE_MESSAGE, _MANY, "LogRecord"),
        (3, "schema_url", _F.TYPE_STRING, _ONE, ""),
    ],
    "LogRecord": [
        (1, "time_unix_nano", _F.TYPE_FIXED64, _ONE, ""),
        (11, "observed_time_unix_nano", _F.TYPE_FIXED64, _ONE, ""),
        # An enum in OTLP; proto3 enums are open, so an int32 reads the same numbers.
        (2, "severity_number", _F.TYPE_INT32, _ONE, ""),
        (3, "severity_text", _F.TYPE_STRING, _ONE, ""),
        (5, "body", _F.TYPE_BYTES, _ONE, ""),
        (6, "attributes", _F.TYPE_BYTES, _MANY, ""),
        (7, "dropped_attributes_count", _F.TYPE_UINT32, _ONE, ""),
        (8, "flags", _F.TYPE_FIXED32, _ONE, ""),
        (9, "trace_id", _F.TYPE_BYTES, _ONE, ""),
        (10, "span_id", _F.TYPE_BYTES, _ONE, ""),
        (12, "event_name", _F.TYPE_STRING, _ONE, ""),
    ],
}


def _request_class(
    schema: dict[str, list[tuple[int, str, int, int, str]]] = _SCHEMA, package: str = _PACKAGE
) -> type[Message]:
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"{package.replace('.', '/')}.proto", package=package, syntax="proto3"
    )
    for name, fields in schema.items():
        message = proto.message_type.add(name=name)
        for number, field_name, kind, label, type_name in fields:
            field = message.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".{package}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Request"))


Request = _request_class()

# The same envelope with each log record as bytes: counting them costs a few bytes of memory
# each, where parsing them as messages costs about 150 (a 6 MB request of 3,000,000 empty
# records took 440 MB to parse before its count was refused).
_COUNT_SCHEMA: dict[str, list[tuple[int, str, int, int, str]]] = {
    "Request": [(1, "resource_logs", _F.TYPE_MESSAGE, _MANY, "ResourceLogs")],
    "ResourceLogs": [(2, "scope_logs", _F.TYPE_MESSAGE, _MANY, "ScopeLogs")],
    "ScopeLogs": [(2, "log_records", _F.TYPE_BYTES, _MANY, "")],
}
CountRequest = _request_class(_COUNT_SCHEMA, "sidekick.otlp_count")


def count_log_records(body: bytes) -> int:
    """The number of log records of an encoded request, without parsing them; raises
    ``DecodeError`` for an envelope that does not parse."""
    req: Any = CountRequest()
    req.ParseFromString(body)
    return sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)


def parse_request(body: bytes) -> Any:
    """The request in the light schema; raises ``DecodeError`` as OTLP's class would."""
    req = Request()
    req.ParseFromString(body)
    return req


def string_body(body: bytes) -> str | None:
    """The text of an ``AnyValue`` that holds only a ``string_value`` (field 1), read without
    a message (None for anything else); raises ``DecodeError`` for text that is not UTF-8."""
    if len(body) < 2 or body[0] != 0x0A:
        return None
    n = body[1]
    start = 2
    if n >= 0x80:  # a two-byte length (128 to 16,383 bytes); longer ones take the message
        if len(body) < 3 or body[2] >= 0x80:
            return None
        n = (n & 0x7F) | (body[2] << 7)
        start = 3
    if start + n != len(body):
        return None
    try:
        return body[start:].decode()
    except UnicodeDecodeError:
        raise DecodeError("a string body is not valid UTF-8") from None


class Attributes:
    """Encoded ``KeyValue`` -> (key, value), for attributes whose value is a scalar.

    At most ``limit`` encodings of at most ``longest`` bytes are kept (2 MiB of keys at most);
    when that many are, the table starts again, so an application whose attributes never
    repeat (a request id in each) costs a lookup and an insertion per attribute and no more
    memory, and a long value (a stack trace) is decoded each time. Lists and maps are decoded
    each time too: a record gets its own copy, which a transform may change.
    """

    __slots__ = ("_decode", "_table", "limit", "longest", "lookup")

    def __init__(self, decode: Any, limit: int = 4096, longest: int = 512) -> None:
        self._decode = decode  # encoded KeyValue -> (key, value); raises DecodeError
        self._table: dict[bytes, tuple[str, Any]] = {}
        self.limit = limit
        self.longest = longest
        self.lookup = self._table.__getitem__

    def add(self, encoded: list[bytes]) -> list[tuple[str, Any]]:
        """The (key, value) pairs of ``encoded``, learning those not yet known."""
        table = self._table
        pairs = []
        for raw in encoded:
            pair = table.get(raw)
            if pair is None:
                pair = self._decode(raw)
                if type(pair[1]) in _SCALARS and len(raw) <= self.longest:
                    if len(table) >= self.limit:
                        table.clear()
                    table[raw] = pair
            pairs.append(pair)
        return pairs


_SCALARS = frozenset({str, int, float, bool, type(None)})
