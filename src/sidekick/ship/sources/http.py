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

Here is the source (``IngestSource``): the socket, the spool and the server built from the
config. The server itself (``IngestServer``: limits, answers, the drain) is in
``_ingest_server``, a body's decoding in ``_ingest_body``, the budgets in ``_ingest_budget``,
the token file in ``_ingest_auth`` and the ``sidekick_ship_ingest_*`` metrics in
``_ingest_metrics``.

Left out: TLS (terminate it in front, or keep ingest on the Pod's localhost), and other
endpoints (health and metrics are on the admin server).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from sidekick.core.addr import HostPort, parse_hostport
from sidekick.core.errors import ConfigError
from sidekick.core.redact import redact_url
from sidekick.ship.config import seconds, size
from sidekick.ship.sources._connections import ConnectionLimits, Listener, connection_cap
from sidekick.ship.sources._ingest_auth import TokenFile
from sidekick.ship.sources._ingest_metrics import IngestMetrics, ingest_metrics
from sidekick.ship.sources._ingest_server import PATH, IngestLimits, IngestServer
from sidekick.ship.sources.base import InputSpec, SourceContext
from sidekick.ship.sources.receiver import RETRY_AFTER_SECONDS, InputMetrics, Receiver, spool_name
from sidekick.ship.sources.spool import SpoolStats

log = logging.getLogger("sidekick.ship.ingest")


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
                max_connections=connection_cap(ingest.max_connections, "Ingest"),
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
