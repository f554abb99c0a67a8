"""``--input syslog+udp://HOST:PORT``, ``syslog+tcp://HOST:PORT``, ``syslog+unix:///PATH``.

Syslog as applications, ``logger``, rsyslog and Python's ``SysLogHandler`` send it: RFC 5424
and RFC 3164 messages (parsed by ``sidekick.ship.sources._syslog_parse``, which lists the
fields), default port 514.

- ``syslog+tcp``: RFC 6587 framing per message, octet-counting or LF/NUL-terminated. A frame
  over ``--max-line-bytes`` is skipped and counted (``rejected{reason="oversize"}``); an
  octet count that is not a number closes the connection (``malformed``), as does a frame
  left unfinished for ``--ingest-body-timeout`` (``slow``). When the spool is full, or its
  disk refuses writes (full, failing), reading pauses and TCP holds the sender back; the
  lines already read are written once the disk takes them.
- ``syslog+udp``: one message per datagram. UDP cannot hold a sender back: datagrams that
  arrive while the spool is full are dropped and counted (``rejected{reason="spool_full"}``),
  and the datagrams the kernel itself dropped (a full socket buffer) are read from the
  ``drops`` column of ``/proc/net/udp`` (and ``udp6``) for this socket's inode every second,
  counted in ``sidekick_ship_receiver_udp_drops_total`` and logged once a minute. Nothing is
  lost silently, but UDP loses: use TCP where it matters.
- ``syslog+unix``: a Unix datagram socket at PATH, like ``/dev/log`` (``logger -u PATH``,
  ``SysLogHandler(address=PATH)``); an existing socket file there is replaced. A full spool,
  or a disk that refuses writes, pauses reading, so senders block rather than lose.

Records are spooled (fsync'ed) in groups: every datagram or read that arrives while one
group is being written joins the next. On SIGTERM, after the quiet period, the sockets are
closed: TCP connections are closed once what they sent is durable.

Left out: TLS (RFC 5425), Unix stream sockets, and RFC 3195.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sidekick.core.errors import ConfigError
from sidekick.core.ratelog import RateLimitedLog
from sidekick.core.redact import redact_url
from sidekick.ship.config import size
from sidekick.ship.records import PARSE_ERROR, Record
from sidekick.ship.sources._streams import Closed, Stream, StreamLimits, Streams
from sidekick.ship.sources._syslog_frame import FrameError, Framer
from sidekick.ship.sources._syslog_parse import parse, parse_frames
from sidekick.ship.sources.base import InputSpec, SourceContext
from sidekick.ship.sources.otlp_grpc import parse_address
from sidekick.ship.sources.receiver import Receiver, encode_records, spool_name
from sidekick.ship.sources.spool import SpoolFullError, SpoolWriteError

log = logging.getLogger("sidekick.ship.syslog")

DEFAULT_PORT = 514
DATAGRAM_BYTES = 65536
# Datagrams held while the previous group is written; beyond it they are dropped (counted).
MAX_PENDING = 100_000
# How long a sender held back by a failing spool write waits before the write is tried again.
WRITE_RETRY_SECONDS = 1.0


def udp_drops(inode: int) -> int | None:
    """The kernel's drop count of the UDP socket with ``inode`` (None if not found)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] == str(inode):
                        return int(cols[-1])
        except OSError:
            continue
    return None


class SyslogSource(Receiver):
    def __init__(self, spec: InputSpec, ctx: SourceContext) -> None:
        super().__init__(spec, ctx)
        scheme = urlsplit(spec.url).scheme.lower()
        self.transport = scheme.removeprefix("syslog+")
        ingest = ctx.config.ingest
        self.metrics = self.input_metrics()
        self.metrics.spool_limit.set(size(ingest.spool_max_bytes))
        self.max_bytes = size(ctx.config.max_line_bytes)
        self._rate = RateLimitedLog(log)
        self._tasks: list[asyncio.Task[None]] = []
        self._dgram: asyncio.DatagramTransport | None = None
        self._pending: list[Record] = []
        self._pending_wake = asyncio.Event()
        self._accepting = True
        self._writing = False
        self._idle = asyncio.Event()
        self._path: Path | None = None
        shown = redact_url(spec.url)
        if self.transport == "unix":
            parts = urlsplit(spec.url)
            if parts.netloc or not parts.path.startswith("/"):
                raise ConfigError(
                    f"--input {shown!r}: give an absolute socket path, like "
                    "syslog+unix:///run/sidekick/log.sock"
                )
            self._path = Path(unquote(parts.path))
            self._sock = self._bind_unix(self._path, shown)
            where = str(self._path)
        else:
            addr = parse_address(spec.url, scheme, DEFAULT_PORT)
            self.addr = addr
            kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
            family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
            try:
                if kind == socket.SOCK_STREAM:
                    self._sock = socket.create_server(
                        (addr.host, addr.port), family=family, backlog=1024
                    )
                else:
                    self._sock = socket.socket(family, kind)
                    self._sock.bind((addr.host, addr.port))
            except OSError as exc:
                raise ConfigError(
                    f"--input {shown!r}: {addr} cannot be bound ({exc.strerror or exc}); "
                    "choose another address or port"
                ) from None
            where = f"{addr.host}:{self._sock.getsockname()[1]}"
        self.port: int = self._sock.getsockname()[1] if self._path is None else 0
        self.where = where
        self.streams = Streams(
            self.metrics,
            StreamLimits.of(ingest, f"Syslog input {redact_url(spec.url)}"),
            self._handle,
        )
        try:
            self.open_spool(
                spool_name(scheme, where),
            )
        except BaseException:
            self._sock.close()
            raise

    @staticmethod
    def _bind_unix(path: Path, shown: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    path.unlink()
            sock.bind(str(path))
            os.chmod(path, 0o666)  # like /dev/log: any local user may write
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"--input {shown!r}: cannot create the socket {str(path)!r} "
                f"({exc.strerror or exc}); choose a writable directory"
            ) from None
        return sock

    # -- serving ---------------------------------------------------------------------------

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        if self.transport == "tcp":
            await self.streams.start(self._sock)
        else:
            self._sock.setblocking(False)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), sock=self._sock
            )
            self._dgram = transport
            self._tasks.append(asyncio.create_task(self._writer(), name=f"syslog {self.where}"))
            if self.transport == "udp":
                self._tasks.append(
                    asyncio.create_task(self._watch_drops(), name=f"udp drops {self.where}")
                )
        log.info("Receiving syslog over %s on %s.", self.transport, self.where)

    async def stop_accepting(self) -> None:
        if self.transport == "tcp":
            await self.streams.stop()
            return
        self._accepting = False
        if self._dgram is not None:
            self._dgram.close()
        # Let the writer store what arrived before the close.
        while self._pending or self._writing:
            self._idle.clear()
            self._pending_wake.set()
            await self._idle.wait()

    async def close_server(self) -> None:
        if self.transport == "tcp":
            await self.streams.aclose()
        if self._dgram is not None:
            self._dgram.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sock.close()
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()

    # -- datagrams -------------------------------------------------------------------------

    def datagram(self, data: bytes) -> None:
        if not self._accepting:
            return
        if len(self._pending) >= MAX_PENDING:
            self._dropped("overflow")
            return
        if len(data) > self.max_bytes:
            self.metrics.reject("oversize")
            return
        if not data.strip(b"\r\n\0 "):
            return
        self._pending.append(parse(data, time.time()))
        if self.transport == "unix" and len(self._pending) >= MAX_PENDING // 2 and self._dgram:
            # Senders on a Unix socket block when it is not read: hold them back.
            with contextlib.suppress(AttributeError, RuntimeError):
                self._dgram.pause_reading()  # type: ignore[attr-defined]
        self._pending_wake.set()

    def _dropped(self, reason: str) -> None:
        self.metrics.reject(reason)
        self._rate.warning(
            reason,
            "Dropped a syslog datagram on %s: %s (UDP cannot hold senders back; use "
            "syslog+tcp where loss matters).",
            redact_url(self.name),
            "the spool is full" if reason == "spool_full" else "too many wait to be written",
        )

    async def _writer(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                self._pending_wake.clear()
                await self._pending_wake.wait()
                continue
            records, self._pending = self._pending, []
            self._writing = True
            try:
                await self._store_datagrams(records)
            finally:
                self._writing = False
            if self._dgram is not None and self._accepting:
                with contextlib.suppress(AttributeError, RuntimeError):
                    self._dgram.resume_reading()  # type: ignore[attr-defined]

    async def _store_datagrams(self, records: list[Record]) -> None:
        payload = encode_records(records)
        try:
            if self.transport == "unix":
                await self._append_holding(payload, records)
            else:
                await self.spool.append(payload, records)
        except (SpoolFullError, SpoolWriteError) as exc:
            for _ in records:
                self.metrics.reject(
                    "spool_full" if isinstance(exc, SpoolFullError) else "spool_error"
                )
            self._rate.warning(
                "lost",
                "Dropped %d syslog message(s) on %s: %s.",
                len(records),
                redact_url(self.name),
                exc,
            )
            return
        self._accepted(records, payload)

    async def _append_holding(self, payload: bytes, records: list[Record]) -> None:
        """Append once there is room, trying again while the disk refuses the write (a
        Unix socket's senders block meanwhile); the last error once the input stops."""
        while True:
            with contextlib.suppress(SpoolFullError):
                await self.spool.wait_for_room(len(payload))
            try:
                await self.spool.append(payload, records)
                return
            except SpoolWriteError:
                if not self._accepting:
                    raise
            await asyncio.sleep(WRITE_RETRY_SECONDS)

    def _accepted(self, records: list[Record], payload: bytes) -> None:
        self.metrics.records.inc(len(records))
        self.metrics.bytes.inc(len(payload))
        unparsed = sum(1 for r in records if PARSE_ERROR in r)
        if unparsed:
            self.metrics.reject("unparsed", unparsed)
        self.on_accepted()

    async def _watch_drops(self) -> None:
        inode = os.fstat(self._sock.fileno()).st_ino
        seen = udp_drops(inode) or 0
        while True:
            await asyncio.sleep(1.0)
            now = udp_drops(inode)
            if now is None or now <= seen:
                continue
            self.metrics.udp_drops.inc(now - seen)
            self._rate.warning(
                "udp_drops",
                "The kernel dropped %d syslog datagram(s) on %s (the socket buffer was full); "
                "raise net.core.rmem_default or send over syslog+tcp.",
                now - seen,
                redact_url(self.name),
            )
            seen = now

    # -- streams ---------------------------------------------------------------------------

    async def _handle(self, stream: Stream) -> None:
        framer = Framer(self.max_bytes)
        loop = asyncio.get_running_loop()
        since: float | None = None
        while True:
            data = await stream.read(since)
            if since is None:
                since = loop.time()
            try:
                frames, oversize = framer.feed(data)
            except FrameError as exc:
                self.metrics.reject("malformed")
                self._rate.warning(
                    "malformed",
                    "Closed a syslog connection to %s: %s.",
                    redact_url(self.name),
                    exc,
                )
                raise Closed from None
            if oversize:
                self.metrics.reject("oversize", oversize)
            if not frames:
                continue
            # Progress: a frame still under way is timed from now.
            since = loop.time() if framer.partial else None
            records = parse_frames(frames, time.time())
            async with stream.busy():
                await self._store_stream(records)

    async def _store_stream(self, records: list[Record]) -> None:
        payload = encode_records(records)
        while True:
            try:
                await self.spool.wait_for_room(len(payload))
                await self.spool.append(payload, records)
                break
            except SpoolFullError:
                if len(payload) > self.spool.max_bytes:
                    self.metrics.reject("oversize", len(records))
                    return
                continue
            except SpoolWriteError:
                # Syslog has no answer to refuse with: the lines are read, so keep them and
                # hold the sender back (reading has stopped) until the disk takes them.
                if self.streams.draining:
                    self.metrics.reject("spool_error", len(records))
                    self._rate.warning(
                        "lost",
                        "Dropped %d syslog message(s) on %s: the disk refuses the spool's "
                        "writes and the shipper is stopping.",
                        len(records),
                        redact_url(self.name),
                    )
                    raise Closed from None
                await asyncio.sleep(WRITE_RETRY_SECONDS)
        self._accepted(records, payload)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, source: SyslogSource) -> None:
        self.source = source

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.source.datagram(data)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors of earlier sends; a receiver sends nothing


def create(spec: InputSpec, ctx: SourceContext) -> SyslogSource:
    return SyslogSource(spec, ctx)
