"""The durable receiver behind every network input: one spool, one reader, one drain.

Each network input (``http://``, ``otlp://``, ``otlp+grpc://``, ``forward://``,
``syslog+udp://``, ``syslog+tcp://``, ``syslog+unix://``) speaks its own protocol but hands its
records to a ``Receiver``: they are appended to the input's own spool
(``<state-dir>/spool/<scheme>-<host>-<port>/``, fsync'ed before the client hears yes), and
the spool is shipped by a ``SpoolReader`` with acks and a checkpoint entry of its own
(``receiver/<same name>``). So several receivers run in one process, each with its own
directory, position and metrics series (``input`` label).

The drain on SIGTERM is the same for every protocol (``Receiver.run``): keep accepting during
the quiet period of ``ctx.drain``, then refuse with the protocol's retryable error
(``stop_accepting``), wait for the appends under way, and hand the whole spool to the
pipeline.

Earlier versions kept the one ``http://`` input's spool in ``<state-dir>/spool`` itself, with
the checkpoint key ``ingest/spool``; the first ``http://`` input takes such segments and that
position over (``adopt_legacy_spool``), so an upgrade loses nothing.

Left out: moving a spool when an input changes address (the old directory keeps what it
holds until the input is given again), and sharing one spool between inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sidekick.core.redact import redact_url
from sidekick.ship.config import size
from sidekick.ship.records import TIMESTAMP, Record
from sidekick.ship.sources.base import Emit, InputSpec, SourceContext
from sidekick.ship.sources.spool import (
    DEFAULT_SEGMENT_BYTES,
    SUFFIX,
    Spool,
    SpoolStats,
)
from sidekick.ship.sources.spool_reader import SpoolReader
from sidekick.ship.timefmt import rfc3339_ns

log = logging.getLogger("sidekick.ship.receiver")

SPOOL_DIR = "spool"
LEGACY_KEY = "ingest/spool"
RETRY_AFTER_SECONDS = 5

_encode_lines = msgspec.json.Encoder().encode_lines
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def spool_name(scheme: str, where: str) -> str:
    """The directory and checkpoint name of an input: ``otlp-127.0.0.1-4318``.

    ``where`` is ``HOST:PORT`` (the bound port, so port 0 gets a name of its own) or a socket
    path; characters unsafe in a file name become ``_``.
    """
    return _UNSAFE.sub("_", f"{scheme}-{where.replace(':', '-')}").strip("_")


class Stamps:
    """``@timestamp`` strings for nanosecond times, the date part formatted once per second:
    records of one request mostly share their second, and ``strftime`` per record costs more
    than the rest of a syslog line's mapping. The second and the fraction are read off the
    time's decimal digits (its last nine are the fraction), which costs less than dividing
    and formatting the fraction with zeros."""

    __slots__ = ("_head", "_prefix")

    def __init__(self) -> None:
        self._head = "-"  # the digits of no time: the first call formats its second
        self._prefix = ""

    def __call__(self, ns: int) -> str:
        digits = str(ns)
        head = digits[:-9]
        if head != self._head:
            if ns < 1_000_000_000:  # the first second of 1970: fewer than ten digits
                return rfc3339_ns(ns)
            self._head = head
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(int(head)))
        return self._prefix + digits[-9:] + "Z"


def encode_records(records: list[Record], now_ns: int | None = None) -> bytes:
    """NDJSON lines for the spool; records without ``@timestamp`` get the receive time."""
    stamp = rfc3339_ns(time.time_ns() if now_ns is None else now_ns)
    for rec in records:
        if TIMESTAMP not in rec:
            rec[TIMESTAMP] = stamp
    return _encode_lines(records) if records else b""


# -- metrics -------------------------------------------------------------------------------


class ReceiverMetrics:
    """``sidekick_ship_receiver_*{input}``: one set per registry, shared by all receivers."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "sidekick_ship_receiver_"
        r = registry
        self.records = Counter(
            p + "records_accepted",
            "Records durably spooled before the client was answered or acked.",
            ["input"],
            registry=r,
        )
        self.bytes = Counter(
            p + "bytes_accepted", "Spool bytes written for accepted records.", ["input"], registry=r
        )
        self.rejected = Counter(
            p + "rejected",
            "Requests, frames or records refused, by reason (malformed, oversize, unsupported, "
            "unauthorized, invalid_record, spool_full, draining, slow, connection_limit, ...).",
            ["input", "reason"],
            registry=r,
        )
        self.answers = Counter(
            p + "answers",
            "Answers to requests: HTTP status codes, gRPC status names, forward acks.",
            ["input", "code"],
            registry=r,
        )
        self.connections = Gauge(p + "connections", "Open connections.", ["input"], registry=r)
        self.connections_closed = Counter(
            p + "connections_closed",
            "Connections closed by the server, by reason.",
            ["input", "reason"],
            registry=r,
        )
        self.spool_bytes = Gauge(
            p + "spool_bytes", "Bytes in the spool not yet fully delivered.", ["input"], registry=r
        )
        self.spool_limit = Gauge(
            p + "spool_limit_bytes",
            "The spool refuses records beyond this size.",
            ["input"],
            registry=r,
        )
        self.fsync = Histogram(
            p + "fsync_seconds",
            "Time of one spool write + fsync (shared by the appends of a group commit).",
            ["input"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.udp_drops = Counter(
            p + "udp_drops",
            "Datagrams the kernel dropped on the input's socket (/proc/net/udp drops).",
            ["input"],
            registry=r,
        )


_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, ReceiverMetrics] = weakref.WeakKeyDictionary()


def receiver_metrics(registry: CollectorRegistry) -> ReceiverMetrics:
    metrics = _SHARED.get(registry)
    if metrics is None:
        metrics = _SHARED[registry] = ReceiverMetrics(registry)
    return metrics


class Labelled:
    """A labelled metric with its ``input`` label filled in: ``labels(code)`` gives the child."""

    __slots__ = ("_input", "_metric")

    def __init__(self, metric: Any, input_name: str) -> None:
        self._metric = metric
        self._input = input_name

    def labels(self, *values: str) -> Any:
        return self._metric.labels(self._input, *values)


class InputMetrics:
    """The metrics of one input; the shape the HTTP server and connection guard use."""

    def __init__(self, shared: ReceiverMetrics, input_name: str) -> None:
        self.shared = shared
        self.input = input_name
        self.requests: Any = Labelled(shared.answers, input_name)
        self.rejections: Any = Labelled(shared.rejected, input_name)
        self.connections: Any = shared.connections.labels(input_name)
        self.connections_closed: Any = Labelled(shared.connections_closed, input_name)
        self.records: Any = shared.records.labels(input_name)
        self.bytes: Any = shared.bytes.labels(input_name)
        self.spool_bytes: Any = shared.spool_bytes.labels(input_name)
        self.spool_limit: Any = shared.spool_limit.labels(input_name)
        self.fsync: Any = shared.fsync.labels(input_name)
        self.udp_drops: Any = shared.udp_drops.labels(input_name)

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejections.labels(reason).inc(n)


# -- the receiver --------------------------------------------------------------------------


class Receiver:
    """A network input's spool, reader, checkpoint and drain; subclasses serve the protocol.

    A subclass binds its socket(s) first (a taken port is reported before anything starts),
    then calls ``open_spool``; it implements ``serve`` (start answering), ``stop_accepting``
    (refuse with the protocol's retryable error from now on; return once the appends under
    way are durable) and ``close_server``.
    """

    name: str

    def __init__(self, spec: InputSpec, ctx: SourceContext) -> None:
        self.name = spec.url
        self.spec = spec
        self.ctx = ctx
        # Set by ``run``; a receiver calls it for every durable append.
        self.on_accepted: Callable[[], None] = lambda: None
        self._serving = False

    def input_metrics(self) -> InputMetrics:
        return InputMetrics(receiver_metrics(self.ctx.metrics.registry), redact_url(self.name))

    def open_spool(
        self,
        dirname: str,
        *,
        stats: SpoolStats | None = None,
        segment_bytes: int | None = None,
        adopt_legacy: bool = False,
    ) -> None:
        """Create the spool under ``<state-dir>/spool/<dirname>`` and its reader, and take over
        what a previous run left (the checkpoint store is loaded by now)."""
        ctx = self.ctx
        if stats is None:
            metrics = self.input_metrics()
            stats = SpoolStats(on_fsync=metrics.fsync.observe, on_bytes=metrics.spool_bytes.set)
        max_bytes = size(ctx.config.ingest.spool_max_bytes)
        if segment_bytes is None:
            # Only sealed segments are deleted, so a segment must be small next to the limit:
            # a spool full of one delivered but unsealed segment would refuse records forever.
            segment_bytes = max(1, min(DEFAULT_SEGMENT_BYTES, max_bytes // 8))
        self.spool_dir = (ctx.state_dir / SPOOL_DIR / dirname).resolve()
        self._key = f"receiver/{dirname}"
        if adopt_legacy:
            adopt_legacy_spool(ctx, self.spool_dir, self._key)
        self.spool = Spool(
            self.spool_dir, max_bytes=max_bytes, stats=stats, segment_bytes=segment_bytes
        )
        lines = ctx.metrics.lines_read.labels(self.name)
        nbytes = ctx.metrics.bytes_read.labels(self.name)

        def on_read(records: int, n: int) -> None:
            lines.inc(records)
            nbytes.inc(n)

        self.reader = SpoolReader(
            self.spool,
            static_fields=ctx.static_fields,
            parser=self.spec.parser,
            text_messages=self.spec.parser is not None,
            load_position=self._load_position,
            save_position=self._save_position,
            on_read=on_read,
        )
        self.spool.open()
        self.reader.start()

    def _load_position(self) -> tuple[int, int] | None:
        entry = self.ctx.checkpoints.get(self._key)
        if not entry:
            return None
        try:
            return int(entry["segment"]), int(entry["offset"])
        except (KeyError, TypeError, ValueError):
            log.warning("Ignoring a damaged spool checkpoint entry %r.", entry)
            return None

    def _save_position(self, segment: int, offset: int) -> None:
        entry = self.ctx.checkpoints.get(self._key)
        if entry is None or entry.get("segment") != segment or entry.get("offset") != offset:
            self.ctx.checkpoints.put(self._key, {"segment": segment, "offset": offset})

    # -- the protocol's part ---------------------------------------------------------------

    async def serve(self) -> None:
        raise NotImplementedError

    async def stop_accepting(self) -> None:
        raise NotImplementedError

    async def close_server(self) -> None:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start answering on the socket bound at creation (once)."""
        if not self._serving:
            self._serving = True
            await self.serve()

    async def run(self, emit: Emit) -> None:
        await self.start()
        drain = self.ctx.drain
        self.on_accepted = drain.activity
        closed = asyncio.Event()
        reader = asyncio.create_task(self.reader.run(emit, closed), name=f"spool {self.name}")
        try:
            # After SIGTERM records are still taken (an app that stops at the same moment
            # sends its last ones now) until no input has seen new data for --drain-quiet;
            # then the protocol's retryable refusal.
            stop = asyncio.ensure_future(self.ctx.stopping.wait())
            try:
                await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
            if reader.done():
                reader.result()  # the reader failed: raise its error (it ends only when closed)
            while not drain.quiet:  # noqa: ASYNC110 (the quiet end is a time, set by no one)
                await asyncio.sleep(min(drain.remaining(), 0.1))
            await self.stop_accepting()
            closed.set()
            await reader
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        # Hand the pipeline everything accepted: in a Pod the state directory is often an
        # emptyDir that goes away with it. If the outputs cannot take it within the shutdown
        # timeout, it stays in the spool for the next start.
        await self.reader.drain(emit)
        log.info("Stopped taking records on %s; the spool is handed over.", redact_url(self.name))

    def unshipped(self) -> dict[str, int]:
        left = 0
        for seg in self.spool.segments.values():
            committed = seg.tracker.committed if seg.tracker is not None else seg.read_pos
            left += max(0, seg.size - committed)
        return {f"spool {self.spool_dir}": left} if left else {}

    async def aclose(self) -> None:
        await self.close_server()
        await self.spool.aclose()
        # The active segment is sealed now; delete it if everything in it was delivered.
        self.reader.sweep()


def adopt_legacy_spool(ctx: SourceContext, spool_dir: Path, key: str) -> None:
    """Move segments of the single-ingest layout (``<state-dir>/spool/*.ndjson``) and their
    checkpoint entry (``ingest/spool``) to ``spool_dir`` and ``key``.

    Segment ids are kept, so the saved position still names the right segment. A crash part
    way leaves segments in both places; the next start moves the rest.
    """
    legacy = ctx.state_dir / SPOOL_DIR
    found = sorted(p for p in legacy.glob("*" + SUFFIX) if p.is_file())
    entry = ctx.checkpoints.get(LEGACY_KEY)
    if not found and entry is None:
        return
    spool_dir.mkdir(parents=True, exist_ok=True)
    if entry is not None and ctx.checkpoints.get(key) is None:
        ctx.checkpoints.put(key, dict(entry))
    for path in found:
        os.replace(path, spool_dir / path.name)
    if found:
        for directory in (spool_dir, legacy):
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        log.info(
            "Moved %d spool segment(s) of an earlier version from %s to %s.",
            len(found),
            legacy,
            spool_dir,
        )
    ctx.checkpoints.drop(LEGACY_KEY)
