"""Stream connections of the forward and syslog receivers: a limit, timeouts and the drain.

A protocol handler reads with ``Stream.read(partial)``: a new connection that sends nothing
within ``header_timeout`` is closed (``header_timeout``), one idle between messages longer
than ``idle_timeout`` too (``idle_timeout``), and one that leaves a message unfinished longer
than ``frame_timeout`` is closed as a slow sender (``slow``); all counted in
``sidekick_ship_receiver_connections_closed_total{reason}``. At ``max_connections``, a new
connection closes the one that has waited longest between messages (``evicted``), as the HTTP
ingest does, so connections that send nothing cannot lock the clients out; only when every
connection is in a message is the new one closed at once
(``rejected{reason="connection_limit"}``). Closes other than on time are logged once a minute.
A handler marks the time it holds records not yet durable with ``async with stream.busy()``:
the drain (``stop``) closes idle connections at once and waits for busy ones, so an
acknowledgement is never cut off after its records were written.

A handler's unexpected failure closes that connection only; it is counted and logged once a
minute, without the bytes that caused it. When the process is out of descriptors, a new
connection is accepted and closed at once (``_connections.Listener``), counted
(``no_descriptors``) and logged once a minute; asyncio's own handling logged a traceback for
every failed ``accept``, thousands a second.

Left out: TLS, and per-address limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sidekick.core.ratelog import RateLimitedLog
from sidekick.ship.config import IngestConfig, seconds
from sidekick.ship.sources._connections import Listener, connection_cap
from sidekick.ship.sources.receiver import InputMetrics

log = logging.getLogger("sidekick.ship.receiver")

READ_BYTES = 256 * 1024


class Closed(Exception):
    """The connection ended (by the peer, a timeout or the drain); nothing more to read."""


@dataclass
class StreamLimits:
    max_connections: int = 512
    idle_timeout: float = 75.0
    frame_timeout: float = 30.0
    header_timeout: float = 10.0

    @classmethod
    def of(cls, ingest: IngestConfig, name: str = "A stream receiver") -> StreamLimits:
        """The limits the ``ingest`` section sets for every stream receiver (the connections
        capped at half the open-file limit, as for the HTTP ingest)."""
        return cls(
            max_connections=connection_cap(ingest.max_connections, name),
            idle_timeout=seconds(ingest.keepalive_timeout),
            frame_timeout=seconds(ingest.body_timeout),
            header_timeout=seconds(ingest.header_timeout),
        )


class Stream:
    """One client connection."""

    def __init__(self, owner: Streams, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.owner = owner
        self.reader = reader
        self.writer = writer
        self.holding = False
        self.fresh = True  # nothing received yet

    async def read(self, since: float | None = None) -> bytes:
        """The next bytes. ``since``: the loop time at which the message still unfinished
        began to arrive (it must be complete ``frame_timeout`` after); None between messages."""
        partial = since is not None
        if self.owner.draining and not partial:
            raise Closed
        owner = self.owner
        limits = owner.limits
        if since is not None:
            timeout = max(0.0, since + limits.frame_timeout - asyncio.get_running_loop().time())
        elif self.fresh:
            timeout = limits.header_timeout
        else:
            timeout = limits.idle_timeout
        # Between messages, holding nothing: the connection may be evicted meanwhile.
        waiting = not partial and not self.holding
        if waiting:
            owner.waiting[self] = None
        try:
            async with asyncio.timeout(timeout):
                data = await self.reader.read(READ_BYTES)
        except TimeoutError:
            reason = "slow" if partial else "header_timeout" if self.fresh else "idle_timeout"
            owner.metrics.connections_closed.labels(reason).inc()
            if partial:
                owner.metrics.reject("slow")
            elif self.fresh:
                owner._rate.warning(
                    "header_timeout",
                    "Closed a connection to %s that sent nothing within %gs "
                    "(ingest.header_timeout).",
                    owner.metrics.input,
                    limits.header_timeout,
                )
            raise Closed from None
        except (ConnectionError, OSError):
            raise Closed from None
        finally:
            if waiting:
                owner.waiting.pop(self, None)
        if not data:
            if partial:
                owner.metrics.reject("truncated")
            raise Closed
        self.fresh = False
        return data

    @contextlib.asynccontextmanager
    async def busy(self) -> AsyncIterator[None]:
        """Records read and not yet durable (and acknowledged): the drain waits."""
        self.holding = True
        self.owner.under_way += 1
        try:
            yield
        finally:
            self.holding = False
            self.owner.under_way -= 1
            if not self.owner.under_way:
                self.owner.idle.set()


class Streams:
    """The connections of one stream receiver (TCP or Unix stream socket)."""

    def __init__(
        self,
        metrics: InputMetrics,
        limits: StreamLimits,
        handle: Callable[[Stream], Awaitable[None]],
    ) -> None:
        self.metrics = metrics
        self.limits = limits
        self.handle = handle
        self.open: set[Stream] = set()
        # Connections waiting between messages, the one waiting longest first.
        self.waiting: dict[Stream, None] = {}
        self.draining = False
        self.under_way = 0
        self.idle = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._rate = RateLimitedLog(log)

    async def start(self, sock: socket.socket) -> None:
        listener = Listener(sock)
        listener.guard = self
        if sock.family == socket.AF_UNIX:
            self._server = await asyncio.start_unix_server(self._client, sock=listener)
        else:
            self._server = await asyncio.start_server(self._client, sock=listener)

    def shed(self) -> None:
        """A connection was closed at accept for want of descriptors (see ``Listener``)."""
        self.metrics.connections_closed.labels("no_descriptors").inc()
        self._rate.error(
            "no_descriptors",
            "The process is out of file descriptors: closed a new connection to %s at once; "
            "raise the open-file limit (ulimit -n) or lower ingest.max_connections.",
            self.metrics.input,
        )

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.draining:
            self.metrics.reject("draining")
            writer.transport.abort()
            return
        if len(self.open) >= self.limits.max_connections and not self._evict():
            self.metrics.reject("connection_limit")
            self._rate.warning(
                "connection_limit",
                "%s is at its limit of %d connections, each in a message: closed a new one at "
                "once; raise ingest.max_connections.",
                self.metrics.input,
                self.limits.max_connections,
            )
            writer.transport.abort()
            return
        stream = Stream(self, reader, writer)
        self.open.add(stream)
        self.metrics.connections.set(len(self.open))
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self.handle(stream)
        except Closed:
            pass
        except (ConnectionError, OSError):
            pass
        except Exception as exc:
            self.metrics.reject("internal")
            self._rate.error(
                "failed",
                "A connection to %s failed unexpectedly (a bug) and was closed: %s",
                self.metrics.input,
                "".join(traceback.format_exception(exc)),
            )
        finally:
            self.open.discard(stream)
            self.waiting.pop(stream, None)
            self.metrics.connections.set(len(self.open))
            if task is not None:
                self._tasks.discard(task)
            writer.transport.abort()

    def _evict(self) -> bool:
        """Close the connection waiting longest between messages, if any, to make room."""
        victim = next(iter(self.waiting), None)
        if victim is None:
            return False
        del self.waiting[victim]
        self.open.discard(victim)
        victim.writer.transport.abort()
        self.metrics.connections_closed.labels("evicted").inc()
        self._rate.warning(
            "evicted",
            "%s is at its limit of %d connections: closed the one idle longest to take a new "
            "one; raise ingest.max_connections if these clients are legitimate.",
            self.metrics.input,
            self.limits.max_connections,
        )
        return True

    async def stop(self) -> None:
        """Take no new connections, close the idle ones, wait for those holding records."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for stream in list(self.open):
            if not stream.holding:
                stream.writer.transport.abort()
        while self.under_way:
            self.idle.clear()
            await self.idle.wait()
        for stream in list(self.open):
            stream.writer.transport.abort()

    async def aclose(self) -> None:
        self.draining = True
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
