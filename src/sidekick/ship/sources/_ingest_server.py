"""The HTTP ingest's server: the aiohttp application that checks a request and spools it.

Apart from the source (``sidekick.ship.sources.http``), which binds the socket, opens the
spool and builds this server from the config. ``IngestServer`` answers ``POST /v1/logs`` (and a
``GET`` with a query, ``logging.handlers.HTTPHandler``'s default) within ``IngestLimits``: the
bearer token, the content type and encoding, the declared and the read size, a body that
trickles in (408); it takes the two memory budgets in their fixed order, hands the body to
``_ingest_body`` and appends the lines to the spool, answering only after the fsync. A refusal
is answered in the client's terms (JSON, or a ``google.rpc.Status`` for OTLP) and counted
under its reason; a bug is answered 500 and logged with its traceback. Once the shipper
drains, every request is answered 503 with ``Retry-After`` and ``stop_accepting`` returns when
the requests under way have committed.

Left out: the socket and the connection limits (``_connections``), decoding a body
(``_ingest_body``), the budgets themselves (``_ingest_budget``), and reading ``--input``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from sidekick.core.ratelog import RateLimitedLog
from sidekick.ship.records import Record
from sidekick.ship.sources._connections import ConnectionLimits, Connections, IngestConnection
from sidekick.ship.sources._ingest_auth import TokenFile
from sidekick.ship.sources._ingest_body import (
    CONTENT_TYPES,
    OTLP_CONTENT_TYPES,
    Accepted,
    Kind,
    Rejected,
    Style,
    encode_request,
    form_record,
    inflate,
    parse_content_type,
)
from sidekick.ship.sources._ingest_budget import MemoryBudget
from sidekick.ship.sources._ingest_metrics import IngestMetrics
from sidekick.ship.sources._otlp_map import export_response, status_body
from sidekick.ship.sources.receiver import RETRY_AFTER_SECONDS, InputMetrics, encode_records
from sidekick.ship.sources.spool import Spool, SpoolFullError, SpoolWriteError

log = logging.getLogger("sidekick.ship.ingest")

PATH = "/v1/logs"
READ_CHUNK = 64 * 1024
# Worst case of Python objects per byte of JSON (an array of empty objects), for the budget.
DECODED_EXPANSION = 32


# -- limits --------------------------------------------------------------------------------


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


# -- the server ----------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
        self.app.router.add_post(PATH, self._post, expect_handler=_no_continue_yet)
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
                    counted="draining",
                )
            accepted = await self._accept(request, style)
            if accepted.count:
                self.on_accepted()
        except Rejected as exc:
            if exc.status not in (499,):
                self.on_reject(exc.counted or _REASONS.get(exc.status, "malformed"))
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
            await _continue(request)
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
                result = encode_request(kind, body, charset, style, self.limits.max_records)
                del body
                raw_held.release()
                payload, accepted = result
                if accepted.count == 0:
                    return accepted
                # Waiting for the group commit holds the encoded lines and the records they
                # encode (handed to the spool): at worst DECODED_EXPANSION times the lines.
                work_held.shrink(len(payload) * (1 + DECODED_EXPANSION))
                await self._append(payload, accepted.count, accepted.records)
                accepted.records = None
        return accepted

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
        records = [form_record(query, now)]
        await self._append(encode_records(records, now), 1, records)
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
                503,
                f"{exc}; retry later",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
                counted="spool_error",
            ) from None
        self.metrics.records.inc(count)
        self.metrics.bytes.inc(len(payload))

    def _full(self) -> Rejected:
        return Rejected(
            503,
            f"the spool is full ({self.spool.used_bytes} of {self.spool.max_bytes} bytes wait for "
            "delivery); retry later",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
            counted="spool_full",
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


async def _no_continue_yet(request: web.Request) -> None:
    """aiohttp answers ``Expect: 100-continue`` as soon as the headers are in, before any check:
    a client announcing 10 GB, a wrong token or content type was invited to send its body and
    refused after. Here ``100 Continue`` is sent (``_continue``) once the request passed every
    check made without the body, and got its room in the read budget; a request refused before
    is answered at once, without it. Other expectations are ignored (RFC 9110 allows it)."""


async def _continue(request: web.Request) -> None:
    if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # As aiohttp's own handler does: the response proper has not started.
        request.writer.output_size = 0
