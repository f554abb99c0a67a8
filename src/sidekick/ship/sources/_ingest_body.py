"""Request bodies of the HTTP ingest, validated whole and turned into NDJSON lines for the spool.

Apart from the server so that the decoding can be tested directly and shared: a body (JSON
object or array, NDJSON, text lines in a charset, a form, or an OTLP request as protobuf or
JSON) becomes the lines the spool stores and a record count, or ``Rejected`` with the status
(400, 413, 415) and the one-sentence reason the client is answered; nothing partial is ever
returned, so a refused request stores nothing. Floods are refused before they cost memory:
lines are counted before the body is split, nesting is measured on the bytes before
``MAX_DEPTH`` could be hit by a recursive decoder downstream, and ``inflate`` stops at its
cap. The forward input inflates its compressed messages with the same ``inflate``.

Left out: HTTP itself (reading the body, tokens, budgets, answers:
``sidekick.ship.sources._ingest_server``) and OTLP's mapping to records
(``sidekick.ship.sources._otlp_map``).
"""

from __future__ import annotations

import contextlib
import re
import time
import zlib
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import msgspec

from sidekick.ship.records import MESSAGE, TIMESTAMP, Record
from sidekick.ship.sources._otlp_map import (
    OtlpError,
    count_records,
    decode_json,
    decode_json_bytes,
    decode_protobuf,
    protobuf_records,
    to_records,
)
from sidekick.ship.sources.receiver import encode_records
from sidekick.ship.timefmt import rfc3339_ns

# Deeper records are refused: every later stage (spool reader, outputs) decodes or encodes
# them again, recursively, and must never hit Python's recursion limit on an accepted one.
MAX_DEPTH = 64

Kind = Literal["json", "ndjson", "text", "form", "otlp-proto", "otlp-json"]
CONTENT_TYPES: dict[str, Kind] = {
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/x-jsonlines": "ndjson",
    "text/plain": "text",
    "application/x-www-form-urlencoded": "form",
    "application/x-protobuf": "otlp-proto",
}
# What ``otlp://`` takes: OTLP/HTTP's two encodings.
OTLP_CONTENT_TYPES: dict[str, Kind] = {
    "application/x-protobuf": "otlp-proto",
    "application/json": "otlp-json",
}
# Fields of one form record (logging.LogRecord has about 25).
MAX_FORM_FIELDS = 1000


# -- errors --------------------------------------------------------------------------------


class Rejected(Exception):
    """A request is refused with ``status`` and a one-sentence ``reason`` for the client."""

    def __init__(
        self,
        status: int,
        reason: str,
        headers: dict[str, str] | None = None,
        *,
        counted: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}
        # The ``reason`` label it is counted under when the status alone does not say it (a
        # 503: a full spool, a failed write, the drain), as the other receivers count them.
        self.counted = counted


# -- body decoding (pure functions, tested directly) ---------------------------------------

# A Decoder instance: twice as fast per call as ``msgspec.json.decode`` on short lines.
_decode = msgspec.json.Decoder().decode
_encode_lines = msgspec.json.Encoder().encode_lines


def _type_name(obj: Any) -> str:
    if obj is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
    }.get(type(obj), type(obj).__name__)


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_INNERMOST = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _deeper_than(text: bytes, depth: int) -> bool:
    """Whether valid JSON ``text`` nests more than ``depth`` arrays/objects.

    Whole-chunk byte operations, no per-character Python: strings are cut out, only the
    brackets kept, and each pass removes the innermost pairs.
    """
    if text.count(b"[") + text.count(b"{") <= depth:
        return False
    brackets = _STRING.sub(b"", text).translate(None, _NOT_BRACKETS)
    for _ in range(depth):
        if not brackets:
            return False
        brackets = _INNERMOST.sub(b"", brackets)
    return bool(brackets)


def _too_deep(where: str) -> Rejected:
    return Rejected(400, f"{where}: nested deeper than {MAX_DEPTH} levels; flatten the record")


def _line_of(body: bytes, pos: int) -> int:
    return body.count(b"\n", 0, pos) + 1


def _bad_utf8(body: bytes, first_line: int = 1) -> str:
    """``line N: ...`` naming the first byte of ``body`` that is not UTF-8.

    msgspec raises ``UnicodeDecodeError`` for such a byte inside a JSON string, with a
    position inside that string only; decoding the body again finds the byte's offset.
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = _line_of(body, exc.start) + first_line - 1
        column = exc.start - body.rfind(b"\n", 0, exc.start)
        return f"line {line}: byte 0x{body[exc.start]:02x} at column {column} is not UTF-8"
    return f"line {first_line}: a string is not valid UTF-8"


def _json_error(body: bytes, exc: msgspec.DecodeError, first_line: int = 1) -> str:
    """``line N: <reason>`` from msgspec's message, which ends in ``(byte N)`` if known."""
    msg = str(exc).removeprefix("JSON is malformed: ")
    line = None
    if msg.endswith(")") and "(byte " in msg:
        head, _, tail = msg.rpartition(" (byte ")
        with contextlib.suppress(ValueError):
            line = _line_of(body, int(tail[:-1])) + first_line - 1
            msg = head
    if line is None:
        line = body.count(b"\n") + first_line  # "truncated": the body ended early
    return f"line {line}: {msg}"


def encode_body(
    kind: Kind, body: bytes, *, max_records: int, now_ns: int, charset: str = "utf-8"
) -> tuple[bytes, list[Record]]:
    """Validate a whole request body and return (NDJSON lines for the spool, the records
    they encode, one a line: what decoding the lines gives, for the spool to hand over).

    Raises ``Rejected`` (400 or 413) without returning anything partial.
    """
    stamp = rfc3339_ns(now_ns)
    if kind == "ndjson":
        return _encode_ndjson(body, max_records, stamp)
    if kind == "json":
        return _encode_json(body, max_records, stamp)
    return _encode_text(body, max_records, stamp, charset)


def _too_many(max_records: int) -> Rejected:
    return Rejected(
        413,
        f"more than {max_records} records in one request; send at most {max_records} "
        "records per request",
    )


def _check_lines(body: bytes, max_records: int) -> None:
    """Refuse more lines than records allowed before splitting: a body of 10 MiB of
    newlines would otherwise become millions of Python objects."""
    if body.count(b"\n", 0, len(body) - 1) >= max_records:
        raise Rejected(
            413,
            f"more than {max_records} lines in one request; send at most {max_records} "
            "records (lines) per request",
        )


def _encode_ndjson(body: bytes, max_records: int, stamp: str) -> tuple[bytes, list[Record]]:
    _check_lines(body, max_records)
    lines = [line for line in body.split(b"\n") if line]
    try:
        objs = [_decode(line) for line in lines]
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # A malformed line, or only a blank one ("\r", spaces): sort it out line by line.
        objs = _ndjson_slow(body)
    # Few lines hold more than MAX_DEPTH brackets at all; only those are measured.
    crowded = [ln for ln in lines if ln.count(b"{") + ln.count(b"[") > MAX_DEPTH]
    if crowded and any(_deeper_than(ln, MAX_DEPTH) for ln in crowded):
        for number, line in enumerate(body.split(b"\n"), 1):
            if _deeper_than(line, MAX_DEPTH):
                raise _too_deep(f"line {number}")
    if not _stamp_objects(objs, stamp):
        _ndjson_slow(body)  # raises, naming the line that is not an object
    return _encode_lines(objs) if objs else b"", objs


def _ndjson_slow(body: bytes) -> list[Any]:
    """Decode line by line, skipping blank lines; Rejected naming the first bad line."""
    objs = []
    for number, raw in enumerate(body.split(b"\n"), 1):
        line = raw.strip()
        if not line:
            continue
        try:
            obj = _decode(line)
        except msgspec.DecodeError as exc:
            raise Rejected(400, f"malformed NDJSON at {_json_error(line, exc, number)}") from None
        except UnicodeDecodeError:
            raise Rejected(
                400, f"malformed NDJSON at {_bad_utf8(line, number)}; send the body as UTF-8"
            ) from None
        except RecursionError:
            raise _too_deep(f"line {number}") from None
        if not isinstance(obj, dict):
            raise Rejected(400, f"line {number}: expected a JSON object, got {_type_name(obj)}")
        objs.append(obj)
    return objs


def _stamp_objects(objs: list[Any], stamp: str) -> bool:
    """Add the receive time where ``@timestamp`` is missing; False if one is not an object."""
    for obj in objs:
        if type(obj) is not dict:
            return False
        if TIMESTAMP not in obj:
            obj[TIMESTAMP] = stamp
    return True


def decode_json_body(body: bytes) -> Any:
    """The decoded JSON document of a body; Rejected (400) naming the line if it is not JSON."""
    try:
        return _decode(body)
    except msgspec.DecodeError as exc:
        raise Rejected(400, f"malformed JSON at {_json_error(body, exc)}") from None
    except UnicodeDecodeError:
        raise Rejected(
            400, f"malformed JSON at {_bad_utf8(body)}; send the body as UTF-8"
        ) from None
    except RecursionError:
        raise _too_deep("the body") from None


def is_otlp_json(doc: Any) -> bool:
    """Whether a JSON document is an OTLP/JSON logs request (a top-level ``resourceLogs``)."""
    return type(doc) is dict and ("resourceLogs" in doc or "resource_logs" in doc)


def _encode_json(
    body: bytes, max_records: int, stamp: str, doc: Any = None
) -> tuple[bytes, list[Record]]:
    if doc is None:
        doc = decode_json_body(body)
    # An array of records adds one level.
    if _deeper_than(body, MAX_DEPTH + isinstance(doc, list)):
        raise _too_deep("a record")
    items = doc if isinstance(doc, list) else [doc]
    if len(items) > max_records:
        raise _too_many(max_records)

    if not _stamp_objects(items, stamp):
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                where = f"item {index} of the array" if isinstance(doc, list) else "the body"
                raise Rejected(400, f"{where}: expected a JSON object, got {_type_name(item)}")
    # One encoder call for the whole request: validation is per record, encoding is not.
    return _encode_lines(items) if items else b"", items


def form_record(text: str, now_ns: int) -> Record:
    """One record of a form (``a=1&b=2``), as ``logging.handlers.HTTPHandler`` sends a
    ``LogRecord``: every field as posted (strings; the last of a repeated name), and
    ``message`` (from ``msg`` if the form has none), ``log.level`` (from ``levelname``) and
    ``@timestamp`` (from ``created``, seconds since the epoch) when the form has them."""
    try:
        pairs = parse_qsl(
            text, keep_blank_values=True, errors="replace", max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError:
        raise Rejected(
            413, f"the form has more than {MAX_FORM_FIELDS} fields; send fewer fields"
        ) from None
    if not pairs:
        raise Rejected(400, "the form has no fields; send the record's fields as name=value pairs")
    rec: Record = dict(pairs)
    if MESSAGE not in rec and "msg" in rec:
        rec[MESSAGE] = rec["msg"]
    if "levelname" in rec and "log.level" not in rec:
        rec["log.level"] = rec["levelname"]
    if TIMESTAMP not in rec:
        created = rec.get("created")
        ns = now_ns
        if created is not None:
            with contextlib.suppress(ValueError, OverflowError):
                value = float(created)
                if 0 < value < 1e11:
                    ns = int(value * 1e9)
        rec[TIMESTAMP] = rfc3339_ns(ns)
    return rec


def parse_content_type(raw: str) -> tuple[str, str]:
    """``(media type, charset)`` of a Content-Type header, never raising.

    aiohttp's ``request.content_type`` goes through the standard library's e-mail header
    parser, which raises ``IndexError`` on some malformed values (``;0*``): a client's bad
    header must get a 415, not a 500.
    """
    media, _, params = raw.partition(";")
    charset = "utf-8"
    for param in params.split(";"):
        name, sep, value = param.partition("=")
        if sep and name.strip().lower() == "charset":
            charset = value.strip().strip('"').strip() or "utf-8"
    return media.strip().lower() or "application/octet-stream", charset


def _encode_text(
    body: bytes, max_records: int, stamp: str, charset: str
) -> tuple[bytes, list[Record]]:
    try:
        text = body.decode(charset, "replace")
    except LookupError:
        raise Rejected(415, f"unknown charset {charset!r}; send UTF-8") from None
    except ValueError:
        # Codecs like idna or punycode fail even with errors="replace".
        raise Rejected(
            415, f"the body cannot be decoded as charset {charset!r}; send UTF-8"
        ) from None
    _check_lines(body, max_records)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    # Each line is one record, even an empty one: blank lines in a stack trace are data.
    objs: list[Record] = [{TIMESTAMP: stamp, MESSAGE: line.removesuffix("\r")} for line in lines]
    try:
        return (_encode_lines(objs) if objs else b""), objs
    except UnicodeEncodeError:
        # Some codecs (unicode_escape, utf-7) decode to lone surrogates, which UTF-8 cannot
        # hold: they become U+FFFD like any other undecodable input.
        for obj in objs:
            obj[MESSAGE] = obj[MESSAGE].encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return _encode_lines(objs), objs


def inflate(body: bytes, limit: int) -> bytes:
    """Gunzip ``body`` (several members allowed) to at most ``limit`` bytes; Rejected if not."""
    out: list[bytes] = []
    total = 0
    data = body
    while data:
        d = zlib.decompressobj(wbits=31)
        try:
            chunk = d.decompress(data, limit - total + 1)
        except zlib.error as exc:
            raise Rejected(400, f"the gzip body is corrupt ({exc}); send valid gzip") from None
        total += len(chunk)
        if total > limit or d.unconsumed_tail:
            raise Rejected(
                413,
                f"the body inflates to more than {limit} bytes; send smaller requests",
            )
        if not d.eof:
            raise Rejected(400, "the gzip body is truncated; send the whole gzip stream")
        out.append(chunk)
        data = d.unused_data
    return b"".join(out)


# -- a request's body, by kind -------------------------------------------------------------

# How a request is answered: the ingest contract's JSON, or OTLP/HTTP's (protobuf or JSON).
Style = Literal["ingest", "otlp-proto", "otlp-json"]


@dataclass
class Accepted:
    """What a request adds: records to spool, and those rejected alone (OTLP's partial success)."""

    count: int
    rejected: int = 0
    reason: str = ""
    records: list[Record] | None = None  # what the payload encodes, when built here


def encode_request(
    kind: Kind, body: bytes, charset: str, style: list[Style], max_records: int
) -> tuple[bytes, Accepted]:
    """The spool lines and ``Accepted`` of a whole body of ``kind``; Rejected if it is refused.

    A JSON body that is an OTLP request sets ``style[0]`` to ``"otlp-json"``: it is answered as
    OTLP/HTTP answers, refusals included.
    """
    now = time.time_ns()
    if kind == "json":
        doc = decode_json_body(body)
        if not is_otlp_json(doc):
            payload, records = _encode_json(
                body, max_records, rfc3339_ns(now), doc if doc is not None else None
            )
            return payload, Accepted(len(records), records=records)
        style[0] = "otlp-json"
        return _encode_otlp(doc, now, max_records, json_doc=True)
    if kind == "otlp-json":
        return _encode_otlp(body, now, max_records, json_doc=False)
    if kind == "otlp-proto":
        return _encode_otlp(body, now, max_records, json_doc=False, proto=True)
    if kind == "form":
        text = body.decode(charset if charset.lower() != "utf-8" else "utf-8", "replace")
        form = [form_record(text, now)]
        return encode_records(form, now), Accepted(1, records=form)
    payload, records = encode_body(kind, body, max_records=max_records, now_ns=now, charset=charset)
    return payload, Accepted(len(records), records=records)


def _encode_otlp(
    data: Any, now: int, max_records: int, *, json_doc: bool, proto: bool = False
) -> tuple[bytes, Accepted]:
    try:
        if json_doc:
            req = decode_json(data)
        elif proto:
            # Counted before they are parsed: a body of millions of tiny records would take
            # hundreds of MB to parse.
            if protobuf_records(data) > max_records:
                raise _too_many(max_records)
            req = decode_protobuf(data)
        else:
            if _deeper_than(data, 4 * MAX_DEPTH):
                raise _too_deep("the body")
            req = decode_json_bytes(data)
        if count_records(req) > max_records:
            raise _too_many(max_records)
        records, rejected, reason = to_records(req, now)
    except OtlpError as exc:
        raise Rejected(400, str(exc)) from None
    payload = encode_records(records, now)
    return payload, Accepted(len(records), rejected, reason, records)
