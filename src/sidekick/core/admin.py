"""The admin HTTP server every long-running program serves.

``GET /healthz`` (liveness: 200 while every owned task is alive), ``GET /readyz`` (readiness:
200 once the program says it is ready), ``GET /metrics`` (Prometheus text format from the
program's own registry). Programs add their own routes (``POST /sync``, ``GET /status``).
It does not authenticate: bind it to 127.0.0.1 or protect it with a NetworkPolicy.

Connections are limited, as the receivers' are, because the admin port is usually open to
the whole cluster (the kubelet must reach it): a request's headers must be in within
``HEADER_TIMEOUT`` of connecting (or of its first byte after a keep-alive pause), and at most
``MAX_CONNECTIONS`` are open; at the limit a new connection closes the one idle longest, or,
when every one has a request under way, is answered 503 and closed. Each close is logged once
a minute with a count. Without this, 1,100 connections that sent nothing held every descriptor
of a shipper limited to 1,024 for as long as they liked, and its receivers reset their clients.

It still answers when the process is out of file descriptors (a flood of connections to a
receiver, a leak): each listening socket keeps one descriptor spare and serves a connection
on it when ``accept`` fails with EMFILE, so a liveness probe sees the truth instead of a
timeout. Without it the probe's connection waited in the backlog until descriptors came back.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sidekick.core.addr import HostPort
from sidekick.core.errors import UserError
from sidekick.core.ratelog import RateLimitedLog

log = logging.getLogger("sidekick.admin")

Check = Callable[[], tuple[bool, str]]


class AdminServer:
    """Serve health, readiness and metrics; ``checks`` return ``(ok, reason)``."""

    def __init__(
        self,
        addr: HostPort,
        registry: CollectorRegistry,
        *,
        healthy: Check | None = None,
        ready: Check | None = None,
    ) -> None:
        self.addr = addr
        self.registry = registry
        self.healthy: Check = healthy or (lambda: (True, "ok"))
        self.ready: Check = ready or (lambda: (True, "ok"))
        self.app = web.Application(middlewares=[_track])
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None
        self._guard = _Guard()
        self.port: int = addr.port

    def add_route(self, method: str, path: str, handler: Any) -> None:
        """Add a program-specific route; call before ``start``."""
        self.app.router.add_route(method, path, handler)

    async def start(self) -> None:
        try:
            listeners = _bind(self.addr)
        except OSError as exc:
            raise UserError(
                f"admin address {self.addr} cannot be bound ({exc.strerror or exc}); "
                "choose another with --admin-addr"
            ) from None
        self.port = listeners[0].getsockname()[1]
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        for sock in listeners:
            await _Site(self._runner, sock, self._guard).start()
        log.info("Admin server listening on http://%s:%d", self.addr.host, self.port)

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, reason = self.healthy()
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, reason = self.ready()
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# Connections open at once: probes, scrapes and a few clients of the program's own routes.
MAX_CONNECTIONS = 64
# Seconds from connecting (or from the first byte after a keep-alive pause) to the end of
# the request headers.
HEADER_TIMEOUT = 10.0


@web.middleware
async def _track(request: web.Request, handler: Any) -> web.StreamResponse:
    conn = request.protocol
    if not isinstance(conn, _Connection):
        return cast(web.StreamResponse, await handler(request))
    conn.request_started()
    try:
        return cast(web.StreamResponse, await handler(request))
    finally:
        conn.request_finished()


class _Guard:
    """The open connections of the admin server: the limit, the eviction order, the log."""

    def __init__(self) -> None:
        self.open: set[_Connection] = set()
        # Without a request under way, the one idle longest first.
        self.idle: dict[_Connection, None] = {}
        self.rate = RateLimitedLog(log)

    def admit(self, conn: _Connection) -> bool:
        if len(self.open) >= MAX_CONNECTIONS:
            if not self.idle:
                self.rate.warning(
                    "refused",
                    "The admin server has %d connections, each with a request under way: "
                    "answered a new one 503.",
                    MAX_CONNECTIONS,
                )
                return False
            self.rate.warning(
                "evicted",
                "The admin server is at its limit of %d connections: closed the one idle "
                "longest to take a new one.",
                MAX_CONNECTIONS,
            )
            self.close(next(iter(self.idle)))
        self.open.add(conn)
        self.idle[conn] = None
        return True

    def close(self, conn: _Connection) -> None:
        self.forget(conn)
        conn.force_close()

    def forget(self, conn: _Connection) -> None:
        self.open.discard(conn)
        self.idle.pop(conn, None)


_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\nContent-Length: 28\r\n\r\ntoo many connections; retry\n"
)


class _Connection(web.RequestHandler):
    """aiohttp's protocol for one admin connection, with the header timeout and the limit."""

    __slots__ = ("_admitted", "_busy", "_guard", "_timer")

    def __init__(self, server: web.Server, guard: _Guard) -> None:
        # What aiohttp's own factory (``Server.__call__``) passes: the runner's options.
        super().__init__(server, loop=asyncio.get_running_loop(), **server._kwargs)
        self._guard = guard
        self._timer: asyncio.TimerHandle | None = None
        self._admitted = False
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit(self):
            tr = cast(asyncio.Transport, transport)
            tr.write(_REFUSAL)
            tr.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._cancel()
        self._guard.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._busy and self._timer is None:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)

    def request_started(self) -> None:
        self._cancel()
        self._busy = True
        self._guard.idle.pop(self, None)

    def request_finished(self) -> None:
        self._busy = False
        if self in self._guard.open:
            self._guard.idle[self] = None

    def _arm(self) -> None:
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(HEADER_TIMEOUT, self._expired)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._busy or self not in self._guard.open:
            return
        self._guard.rate.warning(
            "header_timeout",
            "Closed an admin connection that sent no complete request within %gs.",
            HEADER_TIMEOUT,
        )
        self._guard.close(self)


class _Site(web.BaseSite):
    """Like ``web.SockSite``, but each connection gets a ``_Connection``."""

    __slots__ = ("_guard", "_sock")

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, guard: _Guard) -> None:
        super().__init__(runner, backlog=128)
        self._sock = sock
        self._guard = guard

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        http, guard = self._runner.server, self._guard
        assert http is not None

        def protocol() -> _Connection:
            return _Connection(http, guard)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, sock=self._sock, backlog=self._backlog)


class _Listener(socket.socket):
    """A listening socket that keeps one descriptor spare to serve a connection on when the
    process has no other (``accept`` fails with EMFILE or ENFILE).

    The spare is taken again before each ``accept``; while it cannot be (no descriptor came
    back yet) a failed ``accept`` is raised once, and asyncio waits a second before it tries
    again (logged once a minute, ``sidekick.core.runtime``). asyncio (3.11) goes on calling
    ``accept`` for the rest of its batch of up to ``backlog`` connections, though, each failure
    scheduling another wake-up: the rest of the batch is told there is nothing to accept.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self._spare: int | None = _spare()
        self._failed_at = -1.0

    def accept(self) -> tuple[socket.socket, Any]:
        if self._spare is None:
            self._spare = _spare()
        now = time.monotonic()
        if now - self._failed_at < _BATCH:
            raise BlockingIOError(errno.EAGAIN, "accepting again in a second")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE) or self._spare is None:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._failed_at = now
                raise
        os.close(self._spare)
        self._spare = None
        return super().accept()

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


def _bind(addr: HostPort) -> list[_Listener]:
    """Listening sockets for ``addr``, as ``loop.create_server`` makes them (an empty host is
    every address family); with port 0, every family gets the port the first one got."""
    infos = socket.getaddrinfo(
        addr.host or None, addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    unique = list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos))
    port = addr.port
    listeners: list[_Listener] = []
    try:
        for family, sockaddr in unique:
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError:
                continue  # a family this host does not have, as asyncio skips it
            listeners.append(_Listener(sock))
            lsock = listeners[-1]
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                lsock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            lsock.bind((sockaddr[0], port, *sockaddr[2:]))
            lsock.listen(128)
            lsock.setblocking(False)
            port = lsock.getsockname()[1]
        if not listeners:
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
    except OSError:
        for lsock in listeners:
            lsock.close()
        raise
    return listeners
