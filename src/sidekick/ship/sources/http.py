"""HTTP ingest: applications POST their logs to the sidecar, which answers only once they are safe.

``--input http://HOST:PORT`` serves ``POST /v1/logs``. A request's body (JSON object or array,
NDJSON, or plain text lines; optionally gzip) is read with a hard size cap, validated as a
whole, turned into NDJSON lines and appended to the durable spool of its receiver
(``sidekick.ship.sources.receiver``); ``202 Accepted`` is sent after the fsync. The spool is
then shipped by the same pipeline, acks and checkpoints as a tailed file.

The same endpoint takes what applications send unchanged: an OTLP logs body
(``application/x-protobuf``, or JSON with a top-level ``resourceLogs``) is decoded as OTLP
and answered as OTLP/HTTP answers (``sidekick.ship.sources._otlp_map``), and a form
(``application/x-www-form-urlencoded`` POST, or a ``GET`` with a query string: the standard
library's ``logging.handlers.HTTPHandler``) is one record of its fields. ``--input
otlp://HOST:PORT`` serves the same server taking OTLP only.

Protection against a misbehaving client, each answered with a clear status and message:
bearer token (401), content type (415), body and decompressed size (413), records per
request (413), malformed JSON with its line number (400), spool full or unwritable (503 with
``Retry-After``). A request is validated completely before anything is written, so a
rejected request stores nothing. Memory stays bounded: bodies are read incrementally with a
cap, gzip is inflated with a cap, line floods are refused before splitting, and what requests
hold at once is limited by two budgets (bodies arriving; bodies being worked on), each request
counted at its worst case; a request waits for room, never fails for lack of it.

Left out: TLS (terminate it in front, or keep ingest on the Pod's localhost), and other
endpoints (health and metrics are on the admin server).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
import socket
import time
import traceback
import weakref
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sidekick.core.addr import HostPort, parse_hostport
from sidekick.core.errors import ConfigError
from sidekick.core.limits import open_files_limit
from sidekick.core.ratelog import RateLimitedLog
from sidekick.core.redact import redact_url
from sidekick.ship.config import seconds, size
from sidekick.ship.records import MESSAGE, TIMESTAMP, Record
from sidekick.ship.sources._connections import (
    ConnectionLimits,
    Connections,
    IngestConnection,
    Listener,
)
from sidekick.ship.sources._otlp_map import (
    OtlpError,
    count_records,
    decode_json,
    decode_json_bytes,
    decode_protobuf,
    export_response,
    status_body,
    to_records,
)
from sidekick.ship.sources.base import InputSpec, SourceContext
from sidekick.ship.sources.receiver import (
    RETRY_AFTER_SECONDS,
    InputMetrics,
    Receiver,
    encode_records,
    spool_name,
)
from sidekick.ship.sources.spool import (
    Spool,
    SpoolFullError,
    SpoolStats,
    SpoolWriteError,
)
from sidekick.ship.timefmt import rfc3339_ns

log = logging.getLogger("sidekick.ship.ingest")

PATH = "/v1/logs"
READ_CHUNK = 64 * 1024
# Worst case of Python objects per byte of JSON (an array of empty objects), for the budget.
DECODED_EXPANSION = 32
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


# -- limits and errors ---------------------------------------------------------------------


@dataclass(frozen=True)
class IngestLimits:
    max_body_bytes: int = 10 * 1024 * 1024
    max_records: int = 10000
    # Bytes of request bodies held while they arrive, and bytes held while bodies are worked
    # on (see ``IngestServer._accept``); together they bound ingest's memory.
    read_budget: int = 64 * 1024 * 1024
    work_budget: int = 256 * 1024 * 1024
    # A body that trickles in slower than this holds budget others need: 408.
    body_timeout: float = 30.0


class Rejected(Exception):
    """A request is refused with ``status`` and a one-sentence ``reason`` for the client."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


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
) -> tuple[bytes, int]:
    """Validate a whole request body and return (NDJSON lines for the spool, record count).

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


def _encode_ndjson(body: bytes, max_records: int, stamp: str) -> tuple[bytes, int]:
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
    return _encode_lines(objs) if objs else b"", len(objs)


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


def _encode_json(body: bytes, max_records: int, stamp: str, doc: Any = None) -> tuple[bytes, int]:
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
    return _encode_lines(items) if items else b"", len(items)


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


def _encode_text(body: bytes, max_records: int, stamp: str, charset: str) -> tuple[bytes, int]:
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
    objs = [{TIMESTAMP: stamp, MESSAGE: line.removesuffix("\r")} for line in lines]
    try:
        return (_encode_lines(objs) if objs else b""), len(objs)
    except UnicodeEncodeError:
        # Some codecs (unicode_escape, utf-7) decode to lone surrogates, which UTF-8 cannot
        # hold: they become U+FFFD like any other undecodable input.
        for obj in objs:
            obj[MESSAGE] = obj[MESSAGE].encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return _encode_lines(objs), len(objs)


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


# -- memory budget -------------------------------------------------------------------------


class MemoryBudget:
    """Bytes that requests may hold at once; ``reserve`` waits (first come, first served)
    until there is room. A reservation larger than the whole budget waits for an empty
    budget and then runs alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def reserve(self, n: int) -> AsyncIterator[Reservation]:
        res = Reservation(self, await self._acquire(min(n, self.limit)))
        try:
            yield res
        finally:
            res.release()

    async def _acquire(self, n: int) -> int:
        if not self._waiters and self.used + n <= self.limit:
            self.used += n
            return n
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(n)  # granted just as we were cancelled
            else:
                fut.cancel()
                self._wake()  # we may have been the head that blocked others
            raise
        return n

    def _release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if self.used + n > self.limit:
                return
            self._waiters.popleft()
            self.used += n
            fut.set_result(None)


class Reservation:
    """Part of a ``MemoryBudget`` held by one request; it can give back what it no longer needs."""

    __slots__ = ("budget", "n")

    def __init__(self, budget: MemoryBudget, n: int) -> None:
        self.budget = budget
        self.n = n

    def shrink(self, n: int) -> None:
        if n < self.n:
            self.budget._release(self.n - n)
            self.n = n

    def release(self) -> None:
        self.shrink(0)


# -- tokens --------------------------------------------------------------------------------


class TokenFile:
    """Bearer tokens, one per line; re-read when the file's mtime or size changes.

    Several lines allow rotation without downtime: add the new token, move clients, remove
    the old one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self.tokens: list[bytes] = []
        # Re-read on every request: a file that stays unreadable is logged once a minute.
        self._rate = RateLimitedLog(log)
        self.reload(initial=True)

    def reload(self, *, initial: bool = False) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            text = self.path.read_bytes()
        except OSError as exc:
            if initial:
                raise ConfigError(
                    f"--ingest-token-file {str(self.path)!r} cannot be read ({exc.strerror}); "
                    "give a readable file holding the token"
                ) from None
            self._rate.warning(
                "unreadable",
                "Cannot re-read token file %s (%s); keeping the tokens read before.",
                self.path,
                exc.strerror,
            )
            return
        tokens = [t.strip() for t in text.splitlines() if t.strip()]
        if not tokens:
            if initial:
                raise ConfigError(
                    f"--ingest-token-file {str(self.path)!r} is empty; write the token into it"
                )
            log.warning("Token file %s is empty now; every request will get 401.", self.path)
        elif not initial:
            log.info("Token file %s changed; %d token(s) now valid.", self.path, len(tokens))
        self.tokens = tokens
        self._stamp = stamp

    def check(self, header: str | None) -> bool:
        self.reload()
        if not header:
            return False
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # aiohttp decodes header bytes that are not UTF-8 as surrogates: keep them as bytes.
        candidate = given.strip().encode("utf-8", "surrogateescape")
        ok = False
        for token in self.tokens:
            # Compare with every token, always: the time taken reveals nothing about which.
            ok |= hmac.compare_digest(candidate, token)
        return ok


# -- metrics -------------------------------------------------------------------------------


class IngestMetrics:
    """``sidekick_ship_ingest_*``: one set per registry, summed over the ``http://`` inputs."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        p = "sidekick_ship_ingest_"
        r = registry
        self.requests = Counter(
            p + "requests",
            "Ingest requests answered, by status code (499: the client left before its body "
            "arrived; 503 also for a connection refused at the limit).",
            ["code"],
            registry=r,
        )
        self.connections = Gauge(p + "connections", "Open ingest connections.", registry=r)
        self.connections_closed = Counter(
            p + "connections_closed",
            "Ingest connections closed by the server, by reason: header_timeout, "
            "idle_timeout (keep-alive), evicted (the longest-idle one, at the connection "
            "limit), refused (beyond the limit, every connection busy).",
            ["reason"],
            registry=r,
        )
        self.records = Counter(
            p + "records_accepted", "Records accepted (durably spooled).", registry=r
        )
        self.bytes = Counter(
            p + "bytes_accepted", "Spool bytes written for accepted records.", registry=r
        )
        self.spool_bytes = Gauge(
            p + "spool_bytes", "Bytes in the spool not yet fully delivered.", registry=r
        )
        self.spool_limit = Gauge(
            p + "spool_limit_bytes", "Requests get 503 beyond this spool size.", registry=r
        )
        self.fsync = Histogram(
            p + "fsync_seconds",
            "Time of one spool write + fsync (shared by the requests of a group commit).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        # Bytes of each http:// input's spool; the gauge shows their sum.
        self._spools: dict[int, int] = {}

    def spool_bytes_hook(self, owner: object) -> Callable[[int], None]:
        key = id(owner)

        def on_bytes(total: int) -> None:
            self._spools[key] = total
            self.spool_bytes.set(sum(self._spools.values()))

        return on_bytes


_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, IngestMetrics] = weakref.WeakKeyDictionary()


def ingest_metrics(registry: CollectorRegistry) -> IngestMetrics:
    metrics = _SHARED.get(registry)
    if metrics is None:
        metrics = _SHARED[registry] = IngestMetrics(registry)
    return metrics


# -- the server ----------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# How a request is answered: the ingest contract's JSON, or OTLP/HTTP's (protobuf or JSON).
Style = Literal["ingest", "otlp-proto", "otlp-json"]


@dataclass
class Accepted:
    count: int
    rejected: int = 0
    reason: str = ""
    records: list[Record] | None = None  # what the payload encodes, when built here


class IngestServer:
    """The aiohttp application that validates requests and appends them to the spool.

    ``otlp_only`` serves ``otlp://``: OTLP bodies only, every answer as OTLP/HTTP gives it.
    ``metrics`` is an ``IngestMetrics`` or an ``InputMetrics`` (the same attributes).
    """

    def __init__(
        self,
        spool: Spool,
        *,
        limits: IngestLimits,
        metrics: IngestMetrics | InputMetrics,
        tokens: TokenFile | None = None,
        connection_limits: ConnectionLimits | None = None,
        otlp_only: bool = False,
        on_reject: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.spool = spool
        self.limits = limits
        self.metrics = metrics
        self.tokens = tokens
        self.otlp_only = otlp_only
        self.on_reject = on_reject
        self.connections = Connections(
            connection_limits or ConnectionLimits(retry_after=RETRY_AFTER_SECONDS),
            requests=metrics.requests,
            open_gauge=metrics.connections,
            closed=metrics.connections_closed,
        )
        self._rate = RateLimitedLog(log)
        self.read_budget = MemoryBudget(limits.read_budget)
        self.work_budget = MemoryBudget(limits.work_budget)
        # Drain state: after ``stop_accepting`` every POST is answered 503 with Retry-After.
        self.draining = False
        self.under_way = 0
        self.idle = asyncio.Event()
        self.on_accepted: Callable[[], None] = lambda: None
        self.app = web.Application(middlewares=[self._count])
        self.app.router.add_post(PATH, self._post)
        if not otlp_only:
            # logging.handlers.HTTPHandler sends GET by default, its record in the query.
            self.app.router.add_get(PATH, self._post, allow_head=False)

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        conn = request.protocol if isinstance(request.protocol, IngestConnection) else None
        if conn is not None:
            conn.request_started()
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            self.metrics.requests.labels(str(exc.status)).inc()
            raise
        except Exception as exc:
            # A bug, not the client's doing: answered and counted like any other answer, and
            # logged with its traceback at most once per interval.
            self._rate.error(
                "500",
                "Answered 500 to an ingest request that failed unexpectedly (a bug): %s",
                "".join(traceback.format_exception(exc)),
            )
            resp = web.json_response(
                {"error": "the request failed unexpectedly; retry later"}, status=500
            )
            resp.force_close()
        finally:
            if conn is not None:
                conn.request_finished()
        self.metrics.requests.labels(str(resp.status)).inc()
        return resp

    async def _post(self, request: web.Request) -> web.Response:
        self.under_way += 1
        # Decided as soon as the request shows it: errors are answered in the client's terms.
        style: list[Style] = ["otlp-proto" if self.otlp_only else "ingest"]
        try:
            if self.draining:
                raise Rejected(
                    503,
                    "the shipper is shutting down; retry later (another instance takes over)",
                    {"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            accepted = await self._accept(request, style)
            if accepted.count:
                self.on_accepted()
        except Rejected as exc:
            if exc.status not in (499,):
                self.on_reject(_REASONS.get(exc.status, "malformed"))
            if style[0] == "ingest":
                resp = web.json_response(
                    {"error": exc.reason}, status=exc.status, headers=exc.headers
                )
            else:
                as_json = style[0] == "otlp-json"
                resp = web.Response(
                    body=status_body(exc.status, exc.reason, as_json=as_json),
                    status=exc.status,
                    headers=exc.headers,
                    content_type="application/json" if as_json else "application/x-protobuf",
                )
            if not request.content.at_eof():
                # The unread rest of the body would otherwise be parsed as the next request.
                resp.force_close()
            return resp
        finally:
            self.under_way -= 1
            if not self.under_way:
                self.idle.set()
        if style[0] == "ingest":
            return web.json_response({"accepted": accepted.count}, status=202)
        if accepted.rejected:
            self.on_reject("invalid_record")
        as_json = style[0] == "otlp-json"
        return web.Response(
            body=export_response(accepted.rejected, accepted.reason, as_json=as_json),
            status=200,
            content_type="application/json" if as_json else "application/x-protobuf",
        )

    async def stop_accepting(self) -> None:
        """Answer 503 from now on; return once the requests under way have committed."""
        self.draining = True
        while self.under_way:
            self.idle.clear()
            await self.idle.wait()

    def _kind(self, request: web.Request, style: list[Style]) -> tuple[Kind, str]:
        media_type, charset = parse_content_type(request.headers.get("Content-Type", ""))
        table = OTLP_CONTENT_TYPES if self.otlp_only else CONTENT_TYPES
        kind = table.get(media_type)
        if kind == "otlp-json":
            style[0] = "otlp-json"
        elif kind == "otlp-proto":
            style[0] = "otlp-proto"
        if kind is None:
            known = ", ".join(table)
            raise Rejected(415, f"Content-Type {media_type!r} is not supported; use one of {known}")
        return kind, charset

    async def _accept(self, request: web.Request, style: list[Style]) -> Accepted:
        if self.tokens is not None and not self.tokens.check(request.headers.get("Authorization")):
            raise Rejected(
                401,
                "missing or wrong bearer token; send Authorization: Bearer <token>",
                {"WWW-Authenticate": 'Bearer realm="sidekick"'},
            )
        if request.method == "GET":
            return await self._accept_query(request)
        kind, charset = self._kind(request, style)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            raise Rejected(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")
        gzipped = encoding != "identity"
        if not self.spool.has_room(1):
            raise self._full()
        limit = self.limits.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise Rejected(
                413,
                f"the body has {declared} bytes, more than the limit of {limit}; send smaller requests",
            )
        raw_bound = declared if declared is not None else limit
        inflated_bound = limit if gzipped else raw_bound
        # Work on a body holds at worst: the inflated body, the decoded objects (Python objects
        # of JSON like [{},{},...] take up to ~32x its bytes) and the encoded lines (the
        # receive time added to each record is bounded by the record limit).
        work = (
            (inflated_bound if gzipped else 0)
            + inflated_bound * DECODED_EXPANSION
            + inflated_bound
            + self.limits.max_records * 48
        )
        # Two budgets, taken in this order only (so no request waits for the first while
        # holding the second): raw bodies while they arrive, which can take long; and the
        # work on a body (inflate, decode, encode), which is short and CPU-bound anyway.
        async with self.read_budget.reserve(raw_bound) as raw_held:
            try:
                async with asyncio.timeout(self.limits.body_timeout):
                    body = await self._read(request, limit)
            except TimeoutError:
                raise Rejected(
                    408,
                    f"the body did not arrive within {self.limits.body_timeout:g}s; "
                    "send it faster or in smaller requests",
                ) from None
            async with self.work_budget.reserve(work) as work_held:
                if gzipped:
                    body = inflate(body, limit)
                result = self._encode(kind, body, charset, style)
                del body
                raw_held.release()
                payload, accepted = result
                if accepted.count == 0:
                    return accepted
                # Waiting for the group commit holds only the encoded lines.
                work_held.shrink(len(payload))
                await self._append(payload, accepted.count, accepted.records)
                accepted.records = None
        return accepted

    def _encode(
        self, kind: Kind, body: bytes, charset: str, style: list[Style]
    ) -> tuple[bytes, Accepted]:
        now = time.time_ns()
        max_records = self.limits.max_records
        if kind == "json":
            doc = decode_json_body(body)
            if not is_otlp_json(doc):
                payload, count = _encode_json(
                    body, max_records, rfc3339_ns(now), doc if doc is not None else None
                )
                return payload, Accepted(count)
            style[0] = "otlp-json"
            return self._encode_otlp(doc, now, json_doc=True)
        if kind == "otlp-json":
            return self._encode_otlp(body, now, json_doc=False)
        if kind == "otlp-proto":
            return self._encode_otlp(body, now, json_doc=False, proto=True)
        if kind == "form":
            text = body.decode(charset if charset.lower() != "utf-8" else "utf-8", "replace")
            return encode_records([form_record(text, now)], now), Accepted(1)
        payload, count = encode_body(
            kind, body, max_records=max_records, now_ns=now, charset=charset
        )
        return payload, Accepted(count)

    def _encode_otlp(
        self, data: Any, now: int, *, json_doc: bool, proto: bool = False
    ) -> tuple[bytes, Accepted]:
        try:
            if json_doc:
                req = decode_json(data)
            elif proto:
                req = decode_protobuf(data)
            else:
                if _deeper_than(data, 4 * MAX_DEPTH):
                    raise _too_deep("the body")
                req = decode_json_bytes(data)
            if count_records(req) > self.limits.max_records:
                raise _too_many(self.limits.max_records)
            records, rejected, reason = to_records(req, now)
        except OtlpError as exc:
            raise Rejected(400, str(exc)) from None
        payload = encode_records(records, now)
        return payload, Accepted(len(records), rejected, reason, records)

    async def _accept_query(self, request: web.Request) -> Accepted:
        """``GET /v1/logs?name=value&...``: one record of the query (HTTPHandler's default)."""
        query = request.query_string
        if not query:
            raise Rejected(
                400,
                "a GET carries its record in the query string (name=value&...); "
                f"POST records to {PATH} otherwise",
            )
        if not self.spool.has_room(1):
            raise self._full()
        now = time.time_ns()
        payload = encode_records([form_record(query, now)], now)
        await self._append(payload, 1)
        return Accepted(1)

    async def _append(
        self, payload: bytes, count: int, records: list[Record] | None = None
    ) -> None:
        try:
            await self.spool.append(payload, records)
        except SpoolFullError:
            raise self._full() from None
        except SpoolWriteError as exc:
            raise Rejected(
                503, f"{exc}; retry later", {"Retry-After": str(RETRY_AFTER_SECONDS)}
            ) from None
        self.metrics.records.inc(count)
        self.metrics.bytes.inc(len(payload))

    def _full(self) -> Rejected:
        return Rejected(
            503,
            f"the spool is full ({self.spool.used_bytes} of {self.spool.max_bytes} bytes wait for "
            "delivery); retry later",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def _read(self, request: web.Request, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = await request.content.read(READ_CHUNK)
            except ConnectionResetError:
                # Nobody reads this answer; it is counted (as nginx logs it: 499) and not
                # logged, a client that gives up is no error of ours.
                raise Rejected(
                    499, "the client closed the connection before the body arrived"
                ) from None
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise Rejected(
                    413,
                    f"the body is larger than the limit of {limit} bytes; send smaller requests",
                )
            parts.append(chunk)
        return b"".join(parts)


# The reason a refusal is counted under (``sidekick_ship_receiver_rejected_total{reason}``).
_REASONS = {
    400: "malformed",
    401: "unauthorized",
    408: "slow",
    413: "oversize",
    415: "unsupported",
    503: "unavailable",
}


# -- the source ----------------------------------------------------------------------------


def parse_spec(spec: str, scheme: str = "http", default_port: int | None = None) -> HostPort:
    shown = redact_url(spec)
    parts = urlsplit(spec)
    if parts.scheme.lower() != scheme:
        raise ConfigError(
            f"--input {shown!r}: ingest over https is not supported; use http://HOST:PORT and "
            "terminate TLS in front of it (or keep it on the Pod's localhost)"
        )
    if "@" in parts.netloc:
        raise ConfigError(
            f"--input {shown!r}: an ingest input takes no user or password; give only "
            "HOST:PORT and require a token with --ingest-token-file"
        )
    if parts.path not in ("", "/", PATH) or parts.query:
        raise ConfigError(
            f"--input {shown!r}: give only HOST:PORT, like {scheme}://0.0.0.0:"
            f"{default_port or 8081} (logs are POSTed to {PATH})"
        )
    netloc = parts.netloc
    if default_port is not None and not re.search(r":\d*$", netloc.rpartition("]")[2]):
        netloc = f"{netloc}:{default_port}"
    return parse_hostport(netloc, name=f"--input {shown!r}")


class IngestSource(Receiver):
    """``--input http://HOST:PORT`` (or ``otlp://``): the HTTP server of a receiver."""

    scheme = "http"
    default_port: int | None = None
    otlp_only = False

    def __init__(
        self, spec: InputSpec | str, ctx: SourceContext, *, segment_bytes: int | None = None
    ) -> None:
        if isinstance(spec, str):
            from sidekick.ship.sources import resolve_input

            spec = resolve_input(spec, ctx.config)
        super().__init__(spec, ctx)
        self.addr = parse_spec(spec.url, self.scheme, self.default_port)
        ingest = ctx.config.ingest
        if ingest.max_records_per_request < 1:
            raise ConfigError("ingest.max_records_per_request must be at least 1; raise it")
        metrics: IngestMetrics | InputMetrics
        if self.otlp_only:
            metrics = self.input_metrics()
            on_bytes = metrics.spool_bytes.set
            on_reject = metrics.reject
        else:
            metrics = ingest_metrics(ctx.metrics.registry)
            on_bytes = metrics.spool_bytes_hook(self)
            on_reject = self.input_metrics().reject
        self.metrics = metrics
        metrics.spool_limit.set(size(ingest.spool_max_bytes))
        tokens = TokenFile(Path(ingest.token_file)) if ingest.token_file else None
        stats = SpoolStats(on_fsync=metrics.fsync.observe, on_bytes=on_bytes)
        self._runner: web.AppRunner | None = None
        # Bound now, not in ``run``: a taken port is a user mistake reported before start.
        self._sock = _bind(self.addr, spec.url)
        self.port: int = self._sock.getsockname()[1]
        try:
            self.open_spool(
                spool_name(self.scheme, f"{self.addr.host}:{self.port}"),
                stats=stats,
                segment_bytes=segment_bytes,
                adopt_legacy=self.scheme == "http",
            )
        except BaseException:
            self._sock.close()
            raise
        self.server = IngestServer(
            self.spool,
            limits=IngestLimits(
                max_body_bytes=size(ingest.max_body_bytes),
                max_records=ingest.max_records_per_request,
                body_timeout=seconds(ingest.body_timeout),
            ),
            metrics=metrics,
            tokens=tokens,
            connection_limits=ConnectionLimits(
                max_connections=_connection_cap(ingest.max_connections),
                header_timeout=seconds(ingest.header_timeout),
                keepalive_timeout=seconds(ingest.keepalive_timeout),
                retry_after=RETRY_AFTER_SECONDS,
            ),
            otlp_only=self.otlp_only,
            on_reject=on_reject,
        )
        self.server.on_accepted = lambda: self.on_accepted()

    async def serve(self) -> None:
        # The body is inflated by us, with a cap: aiohttp's own inflating is switched off.
        runner = web.AppRunner(
            self.server.app,
            access_log=None,
            handle_signals=False,
            auto_decompress=False,
            shutdown_timeout=RETRY_AFTER_SECONDS,
        )
        await runner.setup()
        await self.server.connections.site(runner, self._sock).start()
        self._runner = runner
        log.info("Receiving logs on %s://%s:%d%s.", self.scheme, self.addr.host, self.port, PATH)

    async def stop_accepting(self) -> None:
        await self.server.stop_accepting()

    async def close_server(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self._sock.close()


def _connection_cap(configured: int) -> int:
    """``configured``, or less if the open-file limit cannot hold it.

    Past that limit ``accept`` fails, and asyncio logs each failure with a traceback; tailed
    files may take the other half of the limit, and the spool, outputs and admin server a few.
    """
    soft = open_files_limit()
    cap = max(1, soft // 2 - 32)
    if configured <= cap:
        return configured
    log.info(
        "Ingest takes at most %d connections, not %d: half the open-file limit of %d, less 32 "
        "for files and outputs; raise the limit (ulimit -n) for more.",
        cap,
        configured,
        soft,
    )
    return cap


def _bind(addr: HostPort, spec: str) -> socket.socket:
    try:
        return Listener(
            socket.create_server((addr.host, addr.port), reuse_port=False, backlog=1024)
        )
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(
            f"--input {redact_url(spec)!r}: {addr} cannot be bound ({reason}); choose another "
            "address or port"
        ) from None


def create(spec: InputSpec, ctx: SourceContext) -> IngestSource:
    return IngestSource(spec, ctx)
