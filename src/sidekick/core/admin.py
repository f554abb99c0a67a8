"""The admin HTTP server every long-running program serves.

``GET /healthz`` (liveness: 200 while every owned task is alive), ``GET /readyz`` (readiness:
200 once the program says it is ready), ``GET /metrics`` (Prometheus text format from the
program's own registry). Programs add their own routes (``POST /sync``, ``GET /status``).
It does not authenticate: bind it to 127.0.0.1 or protect it with a NetworkPolicy.

It still answers when the process is out of file descriptors (a flood of connections to a
receiver, a leak): each listening socket keeps one descriptor spare and serves a connection
on it when ``accept`` fails with EMFILE, so a liveness probe sees the truth instead of a
timeout. Without it the probe's connection waited in the backlog until descriptors came back.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sidekick.core.addr import HostPort
from sidekick.core.errors import UserError

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
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None
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
            await web.SockSite(self._runner, sock).start()
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
