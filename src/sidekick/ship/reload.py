"""Reloading a running shipper's configuration: SIGHUP and ``--watch-config``.

The new configuration is built exactly as at start and must pass ``prepare``; one that fails is
refused, logged, counted (``sidekick_ship_config_reloads_total{result="refused"}``) and the
running one goes on. An unchanged one (same hash) changes nothing. When only transforms,
outputs, batching or retries changed, a new pipeline takes the next batches while the old one
delivers what it holds; anything else restarts the inputs from their checkpoints once
everything in flight is delivered. The config's hash is on ``/metrics``.

Left out: what runs (``_running``) and the drain at shutdown (``app``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from sidekick.core.errors import UserError
from sidekick.core.redact import redact_text
from sidekick.core.runtime import TaskOwner
from sidekick.ship._running import Running, start_inputs, start_pipeline, stop_outputs
from sidekick.ship.checkpoints import CheckpointStore
from sidekick.ship.config import BatchConfig, RetryConfig, ShipConfig
from sidekick.ship.graph import Graph
from sidekick.ship.metrics import ComponentsCollector, OutputEventsCollector, ShipMetrics
from sidekick.ship.pipeline import Pipeline
from sidekick.ship.prepare import Prepared, prepare
from sidekick.ship.records import Sink

log = logging.getLogger("sidekick.ship")


@dataclass
class Reloading:
    """How a running shipper reloads its configuration (SIGHUP, ``--watch-config``).

    ``load`` builds the configuration again exactly as at start (the file, the same flags and
    environment); ``requested`` is set by the SIGHUP handler; ``watch`` is the config file to
    poll once a second for a changed content.
    """

    load: Callable[[], ShipConfig]
    requested: asyncio.Event = field(default_factory=asyncio.Event)
    watch: Path | None = None


def config_hash(cfg: ShipConfig) -> str:
    """A short hash of the effective configuration (file, environment and flags)."""
    return hashlib.sha256(msgspec.json.encode(cfg)).hexdigest()[:16]


def _inputs_part(cfg: ShipConfig) -> ShipConfig:
    """``cfg`` without what a reload can swap without touching the inputs."""
    return msgspec.structs.replace(
        cfg, transforms={}, outputs=[], batch=BatchConfig(), retry=RetryConfig()
    )


class Reloader:
    """Reloads the configuration on request; a configuration that fails the check is refused
    and the running one goes on.

    Only transforms, outputs, batching and retries changed: a new pipeline takes the next
    batches at once while the previous one delivers what it holds (both count against one
    in-flight limit), then its outputs are closed. Anything else changed (inputs, parsers,
    fields, limits): the inputs are held at their next batch, stopped, everything in flight
    is delivered, and new inputs start from the checkpoints; nothing is read twice.
    """

    def __init__(
        self,
        reloading: Reloading,
        run: Running,
        owner: TaskOwner,
        store: CheckpointStore,
        metrics: ShipMetrics,
        output_events: OutputEventsCollector,
        components: ComponentsCollector,
    ) -> None:
        self.reloading = reloading
        self.run_state = run
        self.owner = owner
        self.store = store
        self.metrics = metrics
        self.output_events = output_events
        self.components = components
        self.hash = config_hash(run.cfg)

    async def run(self) -> None:
        watch = self.reloading.watch
        seen = _file_stamp(watch) if watch is not None else None
        requested = self.reloading.requested
        while True:
            if watch is None:
                await requested.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await requested.wait()
                if not requested.is_set():
                    stamp = _file_stamp(watch)
                    if stamp == seen:
                        continue
                    seen = stamp
                    log.info("The config file %s changed; reloading.", watch)
            requested.clear()
            await self.reload()

    async def reload(self) -> None:
        metrics = self.metrics
        try:
            cfg = self.reloading.load()
            new_hash = config_hash(cfg)
            if new_hash == self.hash:
                log.info("Reload: the configuration is unchanged.")
                metrics.config_reloads.labels("unchanged").inc()
                return
            parts = prepare(cfg)
        except UserError as exc:
            log.error(
                "Reload refused, the running configuration goes on: %s", redact_text(str(exc))
            )
            metrics.config_reloads.labels("refused").inc()
            return
        except Exception as exc:
            # Not a mistake in the configuration, but no reason to stop shipping either.
            log.exception(
                "Reload refused, the running configuration goes on: %s", redact_text(str(exc))
            )
            metrics.config_reloads.labels("refused").inc()
            return
        run = self.run_state
        assert parts.graph is not None
        async with run.lock:
            old_sinks = run.parts.sinks
            same_inputs = _inputs_part(cfg) == _inputs_part(run.cfg)
            if same_inputs:
                await self._swap(cfg, parts, parts.graph, old_sinks)
            else:
                await self._restart(cfg, parts, parts.graph, old_sinks)
        metrics.config_info.remove(self.hash)
        self.hash = new_hash
        metrics.config_info.labels(new_hash).set(1)
        metrics.config_reloads.labels("applied").inc()
        log.info(
            "Reloaded the configuration (%s): %s.",
            "transforms and outputs replaced" if same_inputs else "inputs restarted",
            "; ".join(f"{a} -> {b}" for a, b in parts.graph.edges()),
        )

    def _publish(self, cfg: ShipConfig, parts: Prepared, graph: Graph) -> None:
        run = self.run_state
        run.cfg, run.parts, run.graph = cfg, parts, graph
        self.output_events.sinks = list(parts.sinks)
        self.components.transforms = [
            (t.name, t.kind, t.transform) for t in graph.transforms.values()
        ]

    async def _swap(
        self, cfg: ShipConfig, parts: Prepared, graph: Graph, old_sinks: list[Sink]
    ) -> None:
        run = self.run_state
        old = run.pipeline
        old_tasks = run.output_tasks
        assert old is not None
        self._publish(cfg, parts, graph)
        new = start_pipeline(run, self.owner, self.metrics)
        old.retire(new)
        self.owner.spawn("retire outputs", self._close_when_drained(old, old_tasks, old_sinks))

    async def _close_when_drained(
        self, old: Pipeline, tasks: list[asyncio.Task[None]], sinks: list[Sink]
    ) -> None:
        await old.drained()
        await stop_outputs(tasks, sinks)

    async def _restart(
        self, cfg: ShipConfig, parts: Prepared, graph: Graph, old_sinks: list[Sink]
    ) -> None:
        run = self.run_state
        run.open.clear()  # every input stops at its next batch
        try:
            for task in run.source_tasks:
                task.cancel()
            await asyncio.wait(run.source_tasks)
            for src in run.sources:
                with contextlib.suppress(Exception):
                    await src.aclose()
            assert run.pipeline is not None
            await run.pipeline.drained()
            old_tasks = run.output_tasks
            self._publish(cfg, parts, graph)
            start_pipeline(run, self.owner, self.metrics)
            start_inputs(run, self.owner, self.store, self.metrics)
            await stop_outputs(old_tasks, old_sinks)
        finally:
            run.open.set()


def _file_stamp(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None
