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

Here are the server (``IngestServer``) and the source (``IngestSource``); a body's decoding is in
``_ingest_body``, the budgets in ``_ingest_budget``, the token file in ``_ingest_auth`` and the
``sidekick_ship_ingest_*`` metrics in ``_ingest_metrics``.

Left out: TLS (terminate it in front, or keep ingest on the Pod's localhost), and other
endpoints (health and metrics are on the admin server).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from sidekick.core.addr import HostPort, parse_hostport
from sidekick.core.errors import ConfigError
from sidekick.core.limits import open_files_limit
from sidekick.core.ratelog import RateLimitedLog
from sidekick.core.redact import redact_url
from sidekick.ship.config import seconds, size
from sidekick.ship.records import Record
from sidekick.ship.sources._connections import (
    ConnectionLimits,
    Connections,
    IngestConnection,
    Listener,
)
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
from sidekick.ship.sources._ingest_metrics import IngestMetrics, ingest_metrics
from sidekick.ship.sources._otlp_map import export_response, status_body
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
                result = encode_request(kind, body, charset, style, self.limits.max_records)
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
