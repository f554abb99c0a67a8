"""Connection limits of the HTTP ingest server: how long a client may wait, and how many at once.

aiohttp keeps a connection open for as long as the client does (its own idle timer is about an
hour) and accepts until the process runs out of descriptors, after which asyncio logs every
failed ``accept`` with a traceback. A client that connects and sends nothing, or sends its
headers a byte a second, would hold a descriptor for good. Here every connection has a deadline
for what the server is waiting for, and the number of connections is bounded:

- header timeout: from the start of the connection, or from the first byte after a keep-alive
  pause, to the end of the request headers; sending slowly does not extend it.
- keep-alive timeout: from the end of one request to the first byte of the next.
- the body has its own timeout in the request handler (answered 408, see ``_ingest_server``).
- at most ``max_connections`` at once. At the limit, a new connection closes the one that has
  been idle longest (no request under way: waiting for headers, or between requests), so the
  clients that send requests keep being served while idle connections are recycled. Only when
  every connection is in a request is the new one answered 503 with ``Retry-After`` and closed.

Each close is counted (``sidekick_ship_ingest_connections_closed_total{reason}``) and logged at
most once per interval with a count; nothing is logged per connection. The HTTP errors that
aiohttp answers by itself, before any middleware runs (a request its parser refuses), are
counted and logged the same way, without the traceback and request bytes aiohttp would log.

Left out: limits per client address, and a minimum transfer rate for bodies.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import msgspec
from aiohttp import web
from prometheus_client import Counter, Gauge

from sidekick.core.limits import open_files_limit
from sidekick.core.ratelog import RateLimitedLog

log = logging.getLogger("sidekick.ship.ingest")

Reason = Literal["header_timeout", "idle_timeout", "evicted", "refused", "no_descriptors"]
Phase = Literal["new", "headers", "busy", "idle"]


def connection_cap(configured: int, what: str) -> int:
    """``configured``, or less if the open-file limit cannot hold it.

    Past that limit ``accept`` fails (asyncio logs each failure with a traceback, gRPC once a
    second) and every other socket and file of the process fails with it; tailed files may
    take the other half of the limit, and the spool, outputs and admin server a few.
    """
    soft = open_files_limit()
    cap = max(1, soft // 2 - 32)
    if configured <= cap:
        return configured
    log.info(
        "%s takes at most %d connections, not %d: half the open-file limit of %d, less 32 "
        "for files and outputs; raise the limit (ulimit -n) for more.",
        what,
        cap,
        configured,
        soft,
    )
    return cap


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 512
    # Seconds; see the module docstring for when each one runs.
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    # The Retry-After of the 503 answered to a connection beyond the limit.
    retry_after: int = 5


class Connections:
    """The open connections of one ingest server: the limit, the eviction order and the log."""

    def __init__(
        self,
        limits: ConnectionLimits,
        *,
        requests: Counter,
        open_gauge: Gauge,
        closed: Counter,
        log_interval: float = 60.0,
    ) -> None:
        self.limits = limits
        self._requests = requests
        self._open_gauge = open_gauge
        self._closed = closed
        self._open: set[IngestConnection] = set()
        # Connections without a request under way, oldest first: the first is evicted first.
        self._idle: dict[IngestConnection, None] = {}
        self.rate = RateLimitedLog(log, log_interval)
        body = msgspec.json.encode(
            {
                "error": f"the server is at its limit of {limits.max_connections} connections; "
                "retry later"
            }
        )
        self.refusal = (
            b"HTTP/1.1 503 Service Unavailable\r\n"
            b"Content-Type: application/json; charset=utf-8\r\n"
            b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (limits.retry_after, len(body), body)
        )

    @property
    def open(self) -> int:
        return len(self._open)

    def is_open(self, conn: IngestConnection) -> bool:
        return conn in self._open

    def site(self, runner: web.BaseRunner, sock: socket.socket) -> IngestSite:
        """The aiohttp site that serves ``runner``'s application on ``sock`` through these limits."""
        return IngestSite(runner, sock, self)

    def admit(self, conn: IngestConnection) -> bool:
        """Take ``conn`` in (closing the longest-idle connection at the limit), or refuse it."""
        if len(self._open) >= self.limits.max_connections:
            if not self._idle:
                self._requests.labels("503").inc()
                self._count_close("refused")
                return False
            self.close(next(iter(self._idle)), "evicted")
        self._open.add(conn)
        self._idle[conn] = None
        self._open_gauge.set(len(self._open))
        return True

    def shed(self) -> None:
        """A connection was closed at accept for want of descriptors (see ``Listener``)."""
        self._count_close("no_descriptors")

    def close(self, conn: IngestConnection, reason: Reason) -> None:
        self.forget(conn)
        conn.force_close()
        self._count_close(reason)

    def forget(self, conn: IngestConnection) -> None:
        self._open.discard(conn)
        self._idle.pop(conn, None)
        self._open_gauge.set(len(self._open))

    def busy(self, conn: IngestConnection) -> None:
        self._idle.pop(conn, None)

    def idle(self, conn: IngestConnection) -> None:
        if conn in self._open:
            self._idle[conn] = None

    def _count_close(self, reason: Reason) -> None:
        self._closed.labels(reason).inc()
        lim = self.limits
        if reason == "header_timeout":
            self.rate.warning(
                reason,
                "Closed an ingest connection that sent no complete request headers within "
                "%gs (ingest.header_timeout).",
                lim.header_timeout,
            )
        elif reason == "evicted":
            self.rate.warning(
                reason,
                "Ingest is at its limit of %d connections: closed the one idle longest to take "
                "a new one; raise ingest.max_connections if these clients are legitimate.",
                lim.max_connections,
            )
        elif reason == "no_descriptors":
            self.rate.error(
                reason,
                "The process is out of file descriptors: closed a new ingest connection at "
                "once; raise the open-file limit (ulimit -n) or lower ingest.max_connections.",
            )
        elif reason == "refused":
            self.rate.warning(
                reason,
                "Ingest is at its limit of %d connections, each with a request under way: "
                "answered a new one 503; raise ingest.max_connections.",
                lim.max_connections,
            )
        # An idle keep-alive connection closed on time is routine: counted, not logged.
        self.rate.flush()

    def answered_by_aiohttp(self, status: int, exc: BaseException | None) -> str:
        """Count an answer aiohttp gives by itself and log it (rate-limited); the reason sent."""
        self._requests.labels(str(status)).inc()
        if status >= 500:
            detail = "".join(traceback.format_exception(exc)) if exc is not None else "no detail"
            self.rate.error(
                ("aiohttp", status),
                "Answered %d to an ingest request that failed unexpectedly (a bug): %s",
                status,
                detail,
            )
            return "the request failed unexpectedly; retry later"
        # Only the first line of the parser's message: the rest quotes the request's bytes,
        # which may hold a token.
        what = str(getattr(exc, "message", "") or "").strip().splitlines()
        problem = what[0].rstrip(":. ") if what else "unreadable"
        self.rate.warning(
            ("aiohttp", status),
            "Answered %d to a request that is not valid HTTP (%s).",
            status,
            problem,
        )
        return f"the request is not valid HTTP ({problem}); send a well-formed HTTP/1.1 request"


class IngestConnection(web.RequestHandler):
    """aiohttp's protocol for one connection, with the deadlines and the limit of ``Connections``.

    A subclass, not a protocol wrapped around aiohttp's: ``connection_made`` and
    ``connection_lost`` always pair, so the count of open connections cannot drift; the
    middleware can tell which connection a request arrived on (``request.protocol``); and
    ``handle_error`` sees the answers aiohttp's parser gives before any middleware runs.
    """

    __slots__ = ("_admitted", "_guard", "_phase", "_timer")

    def __init__(self, server: web.Server, guard: Connections) -> None:
        # What aiohttp's own factory (``Server.__call__``) passes: the runner's options.
        super().__init__(server, loop=asyncio.get_running_loop(), **server._kwargs)
        self._guard = guard
        self._timer: asyncio.TimerHandle | None = None
        self._phase: Phase = "new"
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit(self):
            tr = cast(asyncio.Transport, transport)
            tr.write(self._guard.refusal)
            tr.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm("headers", self._guard.limits.header_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._cancel_timer()
        self._guard.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == "idle":
            # The first bytes of the next request on a kept-alive connection.
            self._arm("headers", self._guard.limits.header_timeout)
        super().data_received(data)

    def request_started(self) -> None:
        """The headers are in and the application has the request: no deadline here."""
        self._cancel_timer()
        self._phase = "busy"
        self._guard.busy(self)

    def request_finished(self) -> None:
        if not self._guard.is_open(self):
            return  # closed while the request was under way
        self._guard.idle(self)
        self._arm("idle", self._guard.limits.keepalive_timeout)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        reason = self._guard.answered_by_aiohttp(status, exc)
        if request.writer.output_size > 0:
            # As aiohttp does: part of a response is out, another cannot follow.
            raise ConnectionError("a response was sent already; the connection is broken")
        resp = web.json_response({"error": reason}, status=status)
        resp.force_close()
        return resp

    def _arm(self, phase: Phase, after: float) -> None:
        self._phase = phase
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(after, self._expired)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if not self._guard.is_open(self):
            return
        if self._phase == "headers":
            self._guard.close(self, "header_timeout")
        elif self._phase == "idle":
            self._guard.close(self, "idle_timeout")


class Shedding(Protocol):
    def shed(self) -> None:
        """A connection was closed at accept for want of descriptors: count it, log it."""


class Listener(socket.socket):
    """The listening socket, which sheds connections when the process is out of descriptors.

    asyncio logs a failed ``accept`` (EMFILE) with a traceback and, for each further
    connection waiting in the backlog, does it again: thousands of lines a second while the
    descriptors are gone. Here one descriptor is kept spare; when ``accept`` fails for want
    of descriptors, the spare is given back for a moment to take each waiting connection and
    close it at once, so the client learns right away and the log gets one line per interval.
    The connection limit itself (``Connections``) is checked in the protocol, which sees the
    whole life of a connection; this only covers descriptors used up elsewhere.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())
        # Told of each connection closed at accept: the ingest's ``Connections``, or the
        # forward and syslog receivers' ``Streams``.
        self.guard: Shedding | None = None
        self._spare: int | None = _spare()
        self._failed_at = -1.0

    def accept(self) -> tuple[socket.socket, Any]:
        if self._spare is None:
            # Lost when another thread (gRPC's acceptor) took the descriptor given back.
            self._spare = _spare()
        now = time.monotonic()
        if now - self._failed_at < _BATCH:
            raise BlockingIOError(errno.EAGAIN, "accepting again in a second")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE) or self._spare is None:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    # asyncio reports it and waits a second; but (3.11) it goes on calling
                    # accept for the rest of its batch, each failure reported and scheduling
                    # another try: the rest of the batch is told there is nothing to accept.
                    self._failed_at = now
                raise
        os.close(self._spare)
        try:
            for _ in range(1024):
                try:
                    conn, _addr = super().accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    break
                conn.close()
                if self.guard is not None:
                    self.guard.shed()
        finally:
            self._spare = _spare()
        raise BlockingIOError(errno.EAGAIN, "no descriptor for a new connection")

    def close(self) -> None:
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
        super().close()


# Well within the second asyncio waits after a failed ``accept``, well above one batch.
_BATCH = 0.5


def _spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


class IngestSite(web.BaseSite):
    """Like ``web.SockSite``, but each connection gets an ``IngestConnection``.

    The limit is applied where a connection's protocol is made rather than by refusing to
    ``accept``: a connection beyond it is still accepted and closed at once (or, at the limit,
    takes the place of the longest-idle one), so the listen backlog drains and clients learn
    at once instead of hanging; and the count follows the protocol's own lifetime
    (``connection_made``/``connection_lost``) instead of guessing when a socket was closed.
    """

    __slots__ = ("_guard", "_http", "_sock")

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, guard: Connections) -> None:
        # asyncio accepts up to ``backlog`` connections per wake-up before any protocol sees
        # them: a small batch keeps the descriptors used beyond the limit small.
        super().__init__(runner, backlog=128)
        self._sock = sock
        self._guard = guard
        self._http = runner.server
        if isinstance(sock, Listener):
            sock.guard = guard

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        http, guard = self._http, self._guard
        assert http is not None

        def protocol() -> IngestConnection:
            return IngestConnection(http, guard)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, sock=self._sock, backlog=self._backlog)
