"""Prometheus metrics of ``sidekick ship`` (prefix ``sidekick_ship_``).

One object owns them all so sources, the pipeline and sinks share one registry and the
names are listed in one place (docs/ship.md repeats this list). Label values are inputs
(the ``--input`` spec), outputs (the sink's name) and file paths.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from sidekick.ship.records import Sink


class Counted(Protocol):
    def counters(self) -> dict[str, int]: ...


class ShipMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "sidekick_ship_"
        r = registry
        self.lines_read = Counter(
            p + "lines_read", "Lines (records) read per input.", ["input"], registry=r
        )
        self.bytes_read = Counter(p + "bytes_read", "Bytes read per input.", ["input"], registry=r)
        self.records_delivered = Counter(
            p + "records_delivered", "Records an output accepted.", ["output"], registry=r
        )
        self.records_failed = Counter(
            p + "records_failed",
            "Records in send attempts that failed (they are retried).",
            ["output"],
            registry=r,
        )
        self.records_retried = Counter(
            p + "records_retried", "Records sent again after a failure.", ["output"], registry=r
        )
        self.records_dead_lettered = Counter(
            p + "records_dead_lettered",
            "Records an output rejected for good, written to the dead-letter file.",
            ["output"],
            registry=r,
        )
        self.batches_sent = Counter(
            p + "batches_sent", "Send attempts per output.", ["output"], registry=r
        )
        self.inflight_bytes = Gauge(
            p + "inflight_bytes", "Bytes read but not yet delivered by every output.", registry=r
        )
        self.inflight_limit_bytes = Gauge(
            p + "inflight_limit_bytes", "Reading pauses at this many bytes in flight.", registry=r
        )
        self.backpressure_waits = Counter(
            p + "backpressure_waits",
            "Times reading paused because the in-flight or an output's queue limit was reached.",
            registry=r,
        )
        self.checkpoint_lag_bytes = Gauge(
            p + "checkpoint_lag_bytes",
            "Bytes of a file not yet covered by its checkpoint (size - committed offset).",
            ["file"],
            registry=r,
        )
        self.files_watched = Gauge(
            p + "files_watched",
            "Files currently tailed (held open, or closed while idle and fully read).",
            ["input"],
            registry=r,
        )
        self.files_open = Gauge(
            p + "files_open",
            "Tailed files holding a descriptor (at most max_open_files over all inputs).",
            ["input"],
            registry=r,
        )
        self.symlinks_refused = Counter(
            p + "symlinks_refused",
            "Matched paths not followed: symlinks resolving outside the glob's base directory.",
            ["input"],
            registry=r,
        )
        self.compressed_skipped = Counter(
            p + "compressed_files_skipped",
            "Matched files not tailed because they start like gzip, zstd, bzip2 or xz data.",
            ["input"],
            registry=r,
        )
        self.non_regular_skipped = Counter(
            p + "non_regular_files_skipped",
            "Matched paths not tailed because they are named pipes, sockets or devices.",
            ["input"],
            registry=r,
        )
        self.shared_skipped = Counter(
            p + "shared_files_skipped",
            "Matched files not tailed because another file input tails the same file "
            "(a symlink to it, or overlapping globs).",
            ["input"],
            registry=r,
        )
        self.tail_errors = Counter(
            p + "tail_errors",
            "Failed listings, stats, opens and reads of tailed files, by errno name "
            "(the file is kept as it was and tried again).",
            ["input", "error"],
            registry=r,
        )
        self.rotations = Counter(
            p + "rotations",
            "Files renamed or deleted away from their path (rotations).",
            ["input"],
            registry=r,
        )
        self.truncations = Counter(
            p + "truncations",
            "Files found truncated (shorter than their read offset, or with new first bytes).",
            ["input"],
            registry=r,
        )
        self.lines_split = Counter(
            p + "lines_split",
            "Lines longer than --max-line-bytes, shipped in pieces.",
            ["input"],
            registry=r,
        )
        self.drain_seconds = Gauge(
            p + "drain_seconds",
            "How long the shutdown drain took (from the stop signal until everything read "
            "was delivered, or the timeout).",
            registry=r,
        )
        self.drain_unshipped_bytes = Gauge(
            p + "drain_unshipped_bytes",
            "Bytes left undelivered per input when --shutdown-timeout ended the drain.",
            ["input"],
            registry=r,
        )
        self.drain_timeouts = Counter(
            p + "drain_timeouts",
            "Shutdown drains ended by --shutdown-timeout before everything was delivered.",
            registry=r,
        )
        self.checkpoint_writes = Counter(p + "checkpoint_writes", "State file writes.", registry=r)
        self.checkpoint_write_errors = Counter(
            p + "checkpoint_write_errors",
            "State file writes that failed (a full disk); the previous file is kept.",
            registry=r,
        )
        self.state_fallbacks = Counter(
            p + "state_fallbacks",
            "Starts that found the state file damaged and used its previous copy.",
            registry=r,
        )
        self.tap_dropped = Counter(
            p + "tap_dropped",
            "Records a live tap reader did not get because it read slower than they passed.",
            registry=r,
        )
        self.config_reloads = Counter(
            p + "config_reloads",
            "Configuration reloads (SIGHUP, --watch-config) by result: applied, refused (the "
            "new configuration failed the check; the running one goes on), unchanged.",
            ["result"],
            registry=r,
        )
        self.config_info = Gauge(
            p + "config_info",
            "1, labelled with a hash of the configuration running now.",
            ["hash"],
            registry=r,
        )
        self.state_entries_dropped = Counter(
            p + "state_entries_dropped",
            "Damaged state file entries dropped at start (their files are read again).",
            registry=r,
        )


class OutputEventsCollector(Collector):
    """``sidekick_ship_output_events_total{output,event}`` from sinks' own counters.

    Some outcomes are known only inside one kind of output: an OTLP collector's partial
    success (``rejected_by_peer``), syslog datagrams cut to size (``truncated``) or reported
    lost (``udp_errors``). A sink exposes them with ``counters()`` (part of the ``Sink``
    protocol; empty for most outputs); they are read when ``/metrics`` is scraped, so sinks
    stay free of Prometheus.
    """

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "sidekick_ship_output_events",
            "Output-specific events (partial rejections, truncations, socket errors).",
            labels=["output", "event"],
        )
        for sink in self.sinks:
            for event, value in sorted(sink.counters().items()):
                family.add_metric([sink.name, event], value)
        yield family


class ComponentsCollector(Collector):
    """Per-transform counters, read from each transform's ``counters()`` when scraped.

    ``sidekick_ship_component_records_total{component,type,direction}`` with ``in``, ``out``
    and ``dropped``; any other counter a transform keeps (``redacted.jwt``) is
    ``sidekick_ship_component_events_total{component,type,event}``. ``transforms`` is
    replaced as a whole when the graph is (a reload).
    """

    DIRECTIONS = ("in", "out", "dropped")

    def __init__(self, transforms: Sequence[tuple[str, str, Counted]]) -> None:
        self.transforms = list(transforms)

    def collect(self) -> Iterator[Metric]:
        records = CounterMetricFamily(
            "sidekick_ship_component_records",
            "Records into, out of and dropped by each transform (out counts a record once "
            "per output it leaves by).",
            labels=["component", "type", "direction"],
        )
        events = CounterMetricFamily(
            "sidekick_ship_component_events",
            "Transform-specific counts (matches per redaction pattern, records over a limit).",
            labels=["component", "type", "event"],
        )
        for name, kind, transform in self.transforms:
            counts = transform.counters()
            for direction in self.DIRECTIONS:
                records.add_metric([name, kind, direction], counts.get(direction, 0))
            for event, value in sorted(counts.items()):
                if event not in self.DIRECTIONS:
                    events.add_metric([name, kind, event], value)
        yield records
        yield events
