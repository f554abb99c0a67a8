"""The connections of the OTLP/gRPC receiver, seen through gRPC's channelz.

gRPC accepts, times out and closes connections in its core, out of the handler's sight: a
connection that never sends its HTTP/2 preface and SETTINGS is closed at the handshake timeout
(``--ingest-header-timeout``) with a ``GOAWAY``, one that makes no call at the idle timeout
(``--ingest-keepalive-timeout``). channelz, which gRPC keeps by default, lists the server's
open connections and how many calls each has started. Polled once a second, that gives
``sidekick_ship_receiver_connections{input}`` and, for a connection gone without a call,
``connections_closed{reason}``: ``idle_timeout`` when it lasted the idle timeout,
``header_timeout`` when it lasted the handshake timeout (less the polling interval, which
is how late a connection may be first seen), nothing when it was shorter (the client left
on its own: a TCP probe). Closes by the header timeout are logged once a minute.

Left out: connections gRPC closes at once beyond ``grpc.max_allowed_incoming_connections``
(never listed), and connections that come and go between two polls.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from grpc._cython import cygrpc  # type: ignore[attr-defined]

from sidekick.core.ratelog import RateLimitedLog
from sidekick.ship.sources.receiver import InputMetrics

log = logging.getLogger("sidekick.ship.otlp_grpc")

INTERVAL = 1.0
_PAGE = 500


def server_ids() -> set[int]:
    """The channelz ids of this process's gRPC servers."""
    ids: set[int] = set()
    start = 0
    while True:
        page = json.loads(cygrpc.channelz_get_servers(start))
        servers = page.get("server", [])
        for server in servers:
            ids.add(int(server["ref"]["serverId"]))
        if page.get("end", True) or not servers:
            return ids
        start = max(ids) + 1


class ConnectionWatch:
    """Polls one server's connections (``poll``, from a timer in the event loop)."""

    def __init__(
        self,
        server_id: int,
        metrics: InputMetrics,
        *,
        header_timeout: float,
        idle_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server_id = server_id
        self.metrics = metrics
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self._clock = clock
        # Socket id -> (loop time first seen, whether it started a call).
        self._seen: dict[int, tuple[float, bool]] = {}
        self._rate = RateLimitedLog(log)

    def poll(self) -> None:
        now = self._clock()
        open_ids = self._sockets()
        for sid in open_ids:
            first, called = self._seen.get(sid, (now, False))
            if not called:
                called = self._calls(sid) > 0
            self._seen[sid] = (first, called)
        for sid in self._seen.keys() - open_ids:
            first, called = self._seen.pop(sid)
            if not called:
                self._closed(now - first)
        self.metrics.connections.set(len(open_ids))

    def _closed(self, lasted: float) -> None:
        # ``lasted`` is short of the connection's life by up to one interval.
        if lasted >= self.idle_timeout - INTERVAL:
            self.metrics.connections_closed.labels("idle_timeout").inc()
        elif lasted >= self.header_timeout - INTERVAL:
            self.metrics.connections_closed.labels("header_timeout").inc()
            self._rate.warning(
                "header_timeout",
                "Closed an OTLP/gRPC connection to %s that sent no HTTP/2 preface and settings "
                "within %gs (ingest.header_timeout).",
                self.metrics.input,
                self.header_timeout,
            )
        self._rate.flush()

    def _sockets(self) -> set[int]:
        ids: set[int] = set()
        start = 0
        while True:
            page = json.loads(cygrpc.channelz_get_server_sockets(self.server_id, start, _PAGE))
            refs = page.get("socketRef", [])
            for ref in refs:
                ids.add(int(ref["socketId"]))
            if page.get("end", True) or not refs:
                return ids
            start = max(ids) + 1

    def _calls(self, socket_id: int) -> int:
        try:
            found: Any = json.loads(cygrpc.channelz_get_socket(socket_id))
        except ValueError:  # closed since it was listed
            return 0
        return int(found.get("socket", {}).get("data", {}).get("streamsStarted", 0))
