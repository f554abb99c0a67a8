"""``--input otlp+grpc://HOST:PORT``: OTLP/gRPC logs (``LogsService/Export``), default port 4317.

A ``grpc.aio`` server with one generic method handler that takes the request as bytes, so a
malformed protobuf is ours to answer (``INVALID_ARGUMENT``, counted) instead of gRPC's own
deserialisation error with a logged traceback. Records are mapped as for OTLP/HTTP
(``sidekick.ship.sources._otlp_map``) and durably spooled before ``OK`` is answered.

Status codes, as the OTLP spec gives them: ``OK`` with an ``ExportLogsServiceResponse``
(``partial_success`` counting records rejected alone); ``INVALID_ARGUMENT`` for a request
that does not decode or holds more than ``--ingest-max-records`` records (not retryable);
``UNAVAILABLE`` (retryable) when the spool is full, a write failed, or the shipper is
stopping; ``UNAUTHENTICATED`` without the bearer token of ``--ingest-token-file`` (metadata
``authorization: Bearer <token>``). A message over ``--ingest-max-body-bytes`` is refused by
gRPC itself with ``RESOURCE_EXHAUSTED``; the handler sees a call without a message and counts
it ``oversize``; gzip (``grpc-encoding``) is inflated by gRPC under the same limit.

Slow and idle clients, as for the other receivers: a call's message must arrive within
``--ingest-body-timeout`` (else ``DEADLINE_EXCEEDED``, counted ``slow``), and at most
``--ingest-max-connections`` calls are under way (beyond, ``UNAVAILABLE``, counted
``connection_limit``). gRPC itself closes a connection that has not sent its HTTP/2 preface
and SETTINGS within ``--ingest-header-timeout`` (with a ``GOAWAY`` that says so), one without
a call for ``--ingest-keepalive-timeout``, and one beyond ``--ingest-max-connections`` (capped
at half the open-file limit) at once. It does not tell the handler; the first two are
counted through channelz (``_grpc_watch``), with the open connections.

Left out: TLS, traces and metrics services, and gRPC health checking.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc

from sidekick.core.addr import HostPort, parse_hostport
from sidekick.core.errors import ConfigError
from sidekick.core.ratelog import RateLimitedLog
from sidekick.core.redact import redact_url
from sidekick.ship.config import seconds, size
from sidekick.ship.sources._connections import connection_cap
from sidekick.ship.sources._grpc_watch import INTERVAL, ConnectionWatch, server_ids
from sidekick.ship.sources._ingest_auth import TokenFile
from sidekick.ship.sources._otlp_map import (
    OtlpError,
    count_records,
    decode_protobuf,
    export_response,
    protobuf_records,
    to_records,
)
from sidekick.ship.sources.base import InputSpec, SourceContext
from sidekick.ship.sources.receiver import Receiver, encode_records, spool_name
from sidekick.ship.sources.spool import SpoolFullError, SpoolWriteError

log = logging.getLogger("sidekick.ship.otlp_grpc")

DEFAULT_PORT = 4317
# Calls open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); an exporter
# makes one at a time.
MAX_STREAMS = 100
SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def parse_address(spec: str, scheme: str, default_port: int) -> HostPort:
    """``HOST[:PORT]`` of a ``scheme://`` input URL that takes no path, user or query."""
    shown = redact_url(spec)
    parts = urlsplit(spec)
    if "@" in parts.netloc or parts.path not in ("", "/") or parts.query:
        raise ConfigError(
            f"--input {shown!r}: give only HOST:PORT, like {scheme}://0.0.0.0:{default_port}"
        )
    netloc = parts.netloc
    if not netloc.rpartition("]")[2].rpartition(":")[1]:
        netloc = f"{netloc}:{default_port}"
    return parse_hostport(netloc, name=f"--input {shown!r}")


class OtlpGrpcSource(Receiver):
    def __init__(self, spec: InputSpec, ctx: SourceContext) -> None:
        super().__init__(spec, ctx)
        self.addr = parse_address(spec.url, "otlp+grpc", DEFAULT_PORT)
        ingest = ctx.config.ingest
        self.metrics = self.input_metrics()
        self.metrics.spool_limit.set(size(ingest.spool_max_bytes))
        self.max_records = ingest.max_records_per_request
        self.tokens = TokenFile(Path(ingest.token_file)) if ingest.token_file else None
        self.draining = False
        self.under_way = 0
        self.idle = asyncio.Event()
        # Calls from their headers to their answer, at most ``max_calls`` (the connection
        # limit, as before); ``under_way`` counts those past their message, which the drain
        # waits for.
        self.calls = 0
        self.max_calls = ingest.max_connections
        self.body_timeout = seconds(ingest.body_timeout)
        self._rate = RateLimitedLog(log)
        self.max_bytes = max_bytes = size(ingest.max_body_bytes)
        self.max_connections = connection_cap(ingest.max_connections, "OTLP/gRPC")
        self.header_timeout = seconds(ingest.header_timeout)
        known = _server_ids()
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.so_reuseport", 0),
                # A connection must send the HTTP/2 preface and its SETTINGS within the header
                # timeout (gRPC's default is 120 s), and is closed after the keep-alive timeout
                # without a call; at the limit, a new connection is closed at once. Without
                # these, connections that send nothing used up the descriptors: the listener
                # stopped accepting, and the admin server and the other inputs with it.
                ("grpc.server_handshake_timeout_ms", _ms(self.header_timeout)),
                ("grpc.max_connection_idle_ms", _ms(seconds(ingest.keepalive_timeout))),
                ("grpc.max_allowed_incoming_connections", self.max_connections),
                ("grpc.max_concurrent_streams", MAX_STREAMS),
            ],
        )
        ours = _server_ids() - known
        self._watch = (
            ConnectionWatch(
                ours.pop(),
                self.metrics,
                header_timeout=self.header_timeout,
                idle_timeout=seconds(ingest.keepalive_timeout),
            )
            if len(ours) == 1
            else None
        )
        self._watching: asyncio.Task[None] | None = None
        handler: Any = grpc.stream_unary_rpc_method_handler(self._export)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),)
        )
        host = f"[{self.addr.host}]" if ":" in self.addr.host else self.addr.host
        try:
            port = self._server.add_insecure_port(f"{host}:{self.addr.port}")
        except RuntimeError:
            port = 0
        if not port:
            raise ConfigError(
                f"--input {redact_url(spec.url)!r}: {self.addr} cannot be bound (in use, or "
                "not an address of this host); choose another address or port"
            )
        self.port = port
        self.open_spool(
            spool_name("otlp+grpc", f"{self.addr.host}:{port}"),
        )

    async def serve(self) -> None:
        await self._server.start()
        if self._watch is not None:
            self._watching = asyncio.create_task(self._watch_connections(self._watch))
        log.info("Receiving OTLP/gRPC logs on %s:%d.", self.addr.host, self.port)

    async def stop_accepting(self) -> None:
        self.draining = True
        while self.under_way:
            self.idle.clear()
            await self.idle.wait()

    async def close_server(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
        await self._server.stop(1.0)

    async def _watch_connections(self, watch: ConnectionWatch) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            try:
                watch.poll()
            except Exception as exc:  # channelz is gRPC's: do without it if it changes
                log.warning(
                    "Cannot follow the OTLP/gRPC connections through channelz (%s); "
                    "sidekick_ship_receiver_connections stays unset for %s.",
                    exc,
                    self.metrics.input,
                )
                return

    async def _export(self, messages: AsyncIterator[bytes], context: Any) -> bytes:
        # A stream handler, though clients call a unary method (the two are the same on the
        # wire): it runs once the call's headers are in, so the message has a deadline and
        # the limit on calls is ours. A unary handler runs only once the whole message has
        # arrived, and gRPC's own limit (``maximum_concurrent_rpcs``) answered
        # RESOURCE_EXHAUSTED, uncounted: 20 calls sending their message a byte at a time
        # held every place for good.
        self.calls += 1
        try:
            self._admit(context)
            request = await self._receive(messages)
            self.under_way += 1
            try:
                answer = await self._accept(request)
            finally:
                self.under_way -= 1
                if not self.under_way:
                    self.idle.set()
        except _Refused as exc:
            self.metrics.reject(exc.reason)
            self.metrics.requests.labels(exc.code.name).inc()
            context.set_code(exc.code)
            context.set_details(exc.message)
            return b""
        finally:
            self.calls -= 1
        self.metrics.requests.labels("OK").inc()
        return answer

    def _admit(self, context: Any) -> None:
        if self.draining:
            raise _Refused(
                grpc.StatusCode.UNAVAILABLE,
                "draining",
                "the shipper is shutting down; retry later (another instance takes over)",
            )
        if self.calls > self.max_calls:
            self._rate.warning(
                "connection_limit",
                "OTLP/gRPC is at its limit of %d calls under way: answered UNAVAILABLE to a "
                "new one; raise ingest.max_connections if these clients are legitimate.",
                self.max_calls,
            )
            raise _Refused(
                grpc.StatusCode.UNAVAILABLE,
                "connection_limit",
                f"the receiver is at its limit of {self.max_calls} calls under way; retry later",
            )
        if self.tokens is not None:
            header = dict(context.invocation_metadata() or ()).get("authorization")
            if not self.tokens.check(header if isinstance(header, str) else None):
                raise _Refused(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "unauthorized",
                    "missing or wrong bearer token; send metadata authorization: Bearer <token>",
                )

    async def _receive(self, messages: AsyncIterator[bytes]) -> bytes:
        try:
            async with asyncio.timeout(self.body_timeout):
                return await anext(messages)
        except TimeoutError:
            self._rate.warning(
                "slow",
                "Answered DEADLINE_EXCEEDED to an OTLP/gRPC call whose request message did not "
                "arrive within %gs (ingest.body_timeout).",
                self.body_timeout,
            )
            raise _Refused(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "slow",
                f"the request message did not arrive within {self.body_timeout:g}s; retry",
            ) from None
        except StopAsyncIteration:
            # gRPC refused the message (over --ingest-max-body-bytes, before or after gzip:
            # it answered RESOURCE_EXHAUSTED itself), or the client sent none; the handler
            # cannot tell which, and no exporter does the latter.
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "oversize",
                f"no request message of at most {self.max_bytes} bytes; send smaller requests",
            ) from None

    async def _accept(self, request: bytes) -> bytes:
        if self.draining:
            raise _Refused(
                grpc.StatusCode.UNAVAILABLE,
                "draining",
                "the shipper is shutting down; retry later (another instance takes over)",
            )
        if not self.spool.has_room(len(request)):
            raise self._full()
        try:
            # Counted before they are parsed: a request of millions of tiny records would
            # take hundreds of MB to parse.
            count = protobuf_records(request)
            req = decode_protobuf(request) if count <= self.max_records else None
        except OtlpError as exc:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed", str(exc)) from None
        if req is None or count_records(req) > self.max_records:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                "oversize",
                f"more than {self.max_records} log records in one request; send at most "
                f"{self.max_records}",
            )
        now = time.time_ns()
        try:
            records, rejected, reason = to_records(req, now)
        except OtlpError as exc:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed", str(exc)) from None
        payload = encode_records(records, now)
        if payload:
            try:
                await self.spool.append(payload, records)
            except SpoolFullError:
                raise self._full() from None
            except SpoolWriteError as exc:
                raise _Refused(
                    grpc.StatusCode.UNAVAILABLE, "spool_error", f"{exc}; retry later"
                ) from None
            self.metrics.records.inc(len(records))
            self.metrics.bytes.inc(len(payload))
            self.on_accepted()
        if rejected:
            self.metrics.reject("invalid_record")
        return export_response(rejected, reason, as_json=False)

    def _full(self) -> _Refused:
        return _Refused(
            grpc.StatusCode.UNAVAILABLE,
            "spool_full",
            f"the spool is full ({self.spool.used_bytes} of {self.spool.max_bytes} bytes wait "
            "for delivery); retry later",
        )


def _server_ids() -> set[int]:
    try:
        return server_ids()
    except Exception:  # channelz is gRPC's: do without it if it changes
        return set()


def _ms(value: float) -> int:
    return max(1, round(value * 1000))


def create(spec: InputSpec, ctx: SourceContext) -> OtlpGrpcSource:
    return OtlpGrpcSource(spec, ctx)
