"""Metrics of the HTTP ingest: ``sidekick_ship_ingest_*``, one set per registry.

A registry takes each metric name once, so every ``http://`` input of a shipper counts into
the same set, the spool gauge showing the sum of their spools. ``otlp://`` counts only under
the receivers' ``sidekick_ship_receiver_*`` (``InputMetrics`` in
``sidekick.ship.sources.receiver``), whose attributes have the same names so the server takes
either.

Left out: a label per input (the receiver metrics have it).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    """``sidekick_ship_ingest_*``: one set per registry, summed over the ``http://`` inputs."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        p = "sidekick_ship_ingest_"
        r = registry
        self.requests = Counter(
            p + "requests",
            "Ingest requests answered, by status code (499: the client left before its body "
            "arrived; 503 also for a connection refused at the limit).",
            ["code"],
            registry=r,
        )
        self.connections = Gauge(p + "connections", "Open ingest connections.", registry=r)
        self.connections_closed = Counter(
            p + "connections_closed",
            "Ingest connections closed by the server, by reason: header_timeout, "
            "idle_timeout (keep-alive), evicted (the longest-idle one, at the connection "
            "limit), refused (beyond the limit, every connection busy).",
            ["reason"],
            registry=r,
        )
        self.records = Counter(
            p + "records_accepted", "Records accepted (durably spooled).", registry=r
        )
        self.bytes = Counter(
            p + "bytes_accepted", "Spool bytes written for accepted records.", registry=r
        )
        self.spool_bytes = Gauge(
            p + "spool_bytes", "Bytes in the spool not yet fully delivered.", registry=r
        )
        self.spool_limit = Gauge(
            p + "spool_limit_bytes", "Requests get 503 beyond this spool size.", registry=r
        )
        self.fsync = Histogram(
            p + "fsync_seconds",
            "Time of one spool write + fsync (shared by the requests of a group commit).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        # Bytes of each http:// input's spool; the gauge shows their sum.
        self._spools: dict[int, int] = {}

    def spool_bytes_hook(self, owner: object) -> Callable[[int], None]:
        key = id(owner)

        def on_bytes(total: int) -> None:
            self._spools[key] = total
            self.spool_bytes.set(sum(self._spools.values()))

        return on_bytes


_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, IngestMetrics] = weakref.WeakKeyDictionary()


def ingest_metrics(registry: CollectorRegistry) -> IngestMetrics:
    metrics = _SHARED.get(registry)
    if metrics is None:
        metrics = _SHARED[registry] = IngestMetrics(registry)
    return metrics
