"""The admin HTTP server every long-running program serves.

``GET /healthz`` (liveness: 200 while every owned task is alive), ``GET /readyz`` (readiness:
200 once the program says it is ready), ``GET /metrics`` (Prometheus text format from the
program's own registry). Programs add their own routes (``POST /sync``, ``GET /status``).
It does not authenticate: bind it to 127.0.0.1 or protect it with a NetworkPolicy.
"""

from __future__ import annotations

import logging
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
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.addr.host, self.addr.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise UserError(
                f"admin address {self.addr} cannot be bound ({exc.strerror}); "
                "choose another with --admin-addr"
            ) from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
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
