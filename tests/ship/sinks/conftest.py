"""Fixtures for the aggregator-output tests: a protocol test server and sink factories.

No Elasticsearch, Loki or OpenTelemetry collector runs here. ``ProtocolServer`` is a real
aiohttp server on 127.0.0.1 that records every request byte for byte and answers with what
the test queues, modelled on the official documentation's examples of each API.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from sidekick.ship.records import Record, Sink
from sidekick.ship.sinks import OutputSpec, create_sink


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    raw: bytes  # the body as sent, possibly gzip-compressed
    peer_port: int

    @property
    def body(self) -> bytes:
        """The body after undoing ``Content-Encoding: gzip``."""
        if self.headers.get("Content-Encoding") == "gzip":
            return gzip.decompress(self.raw)
        return self.raw


Responder = Callable[[Seen], web.Response]


class ProtocolServer:
    """Records requests; answers each with the next queued reply, else with ``default``."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.queue: list[Responder] = []
        self.default: Responder = lambda seen: web.Response(status=204)
        self.port = 0

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reply(
        self,
        status: int,
        body: bytes | str = b"",
        *,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body

        def respond(seen: Seen) -> web.Response:
            return web.Response(
                status=status, body=data, content_type=content_type, headers=headers
            )

        self.queue.append(respond)

    def reply_with(self, responder: Responder) -> None:
        self.queue.append(responder)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen = Seen(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=request.headers,
            raw=raw,
            peer_port=peer[1] if peer else 0,
        )
        self.requests.append(seen)
        responder = self.queue.pop(0) if self.queue else self.default
        return responder(seen)


@pytest.fixture
async def server() -> AsyncIterator[ProtocolServer]:
    srv = ProtocolServer()
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    # auto_decompress=False: the test sees the body bytes exactly as the sink sent them.
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    srv.port = sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        await runner.cleanup()


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[..., Sink]]:
    """``make_sink(url, **options)`` through the real registry; closed after the test."""
    sinks: list[Sink] = []

    def make(url: str, **options: Any) -> Sink:
        sink = create_sink(OutputSpec(url=url, options=options))
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.aclose()


def make_records(n: int, **extra: Any) -> list[Record]:
    """Records shaped like the ones the tail source produces."""
    return [
        {
            "@timestamp": f"2026-11-22T10:15:{i % 60:02d}.{i:09d}Z",
            "message": f"line {i}",
            "log.file.path": "/var/log/nginx/access.log",
            "log.offset": i * 100,
            "log.file.id": "2049:1234:9f86d081",
            "host.name": "node-1",
            "k8s.pod.name": "web-0",
            "k8s.namespace.name": "shop",
            "k8s.container.name": "nginx",
            **extra,
        }
        for i in range(n)
    ]
