"""``sidekick ship`` as a program: build the pipeline from the config and run it.

``prepare(cfg)`` (``prepare.py``) checks everything a user can get wrong (inputs with their
options, outputs, parsers, multiline regexes, state directory) before anything starts, raising
``ConfigError`` so the CLI prints one sentence and exits 2. ``run_shipper(cfg, shutdown,
registry)`` then runs until SIGTERM, reloading on SIGHUP (``reload.py``); what runs at a given
moment is a ``_running.Running``:

Root tasks (all owned by one ``TaskOwner``; if one dies, ``/healthz`` fails and the program
exits with its error):

- ``source <input>``: one per ``--input``; reads and awaits ``pipeline.emit``.
- ``output <url>``: one per ``--output``; batches, sends, retries, dead-letters.
- ``checkpoint``: writes the state file at most once per ``checkpoint_interval``.

Shutdown (the drain): inputs keep reading (files to their end, HTTP ingest keeps accepting)
until none has seen new data for ``--drain-quiet``, then everything read is delivered, outputs
are closed and the state file is written. The drain may take ``--shutdown-timeout`` less a
margin for closing; if it runs out, what is left is logged per file, shown on
``sidekick_ship_drain_unshipped_bytes`` and the exit code is 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry

from sidekick.core.addr import HostPort
from sidekick.core.admin import AdminServer
from sidekick.core.durations import format_duration
from sidekick.core.redact import redact_url
from sidekick.core.runtime import Shutdown, TaskOwner
from sidekick.ship._running import Running, start_inputs, start_pipeline
from sidekick.ship.checkpoints import CheckpointStore
from sidekick.ship.config import ShipConfig, seconds
from sidekick.ship.graph import build_graph
from sidekick.ship.metrics import ComponentsCollector, OutputEventsCollector, ShipMetrics
from sidekick.ship.pipeline import Pipeline
from sidekick.ship.prepare import Prepared, prepare
from sidekick.ship.records import Sink
from sidekick.ship.reload import Reloader, Reloading, config_hash
from sidekick.ship.sources.base import InputSpec, Source, SourceContext
from sidekick.ship.tap import Taps, tap_handler

log = logging.getLogger("sidekick.ship")


async def run_shipper(
    cfg: ShipConfig,
    shutdown: Shutdown,
    registry: CollectorRegistry,
    *,
    admin_addr: HostPort | None = None,
    prepared: Prepared | None = None,
    shutdown_timeout: float = 30.0,
    reloading: Reloading | None = None,
    tap_allow_remote: bool = False,
) -> bool:
    """Run the shipper until ``shutdown`` is requested, then drain and save the state.

    Returns whether the drain delivered everything; False when ``shutdown_timeout`` cut it
    short (what was left is logged per file and stays on disk for the next start).
    """
    parts = prepared or prepare(cfg)
    graph = parts.graph or build_graph(cfg)
    metrics = ShipMetrics(registry)
    output_events = OutputEventsCollector(parts.sinks)
    registry.register(output_events)
    components = ComponentsCollector(
        [(t.name, t.kind, t.transform) for t in graph.transforms.values()]
    )
    registry.register(components)
    store = CheckpointStore(parts.state_dir, metrics)
    store.lock()
    owner = TaskOwner()
    ready = False
    admin: AdminServer | None = None
    run = Running(cfg, parts, graph)
    run.taps = Taps(on_drop=metrics.tap_dropped.inc)
    complete = True
    closing: list[Sink] = []
    try:
        store.load()
        if admin_addr is not None:
            admin = AdminServer(
                admin_addr,
                registry,
                healthy=owner.alive,
                ready=lambda: (True, "ok") if ready else (False, "starting"),
            )
            admin.add_route(
                "GET",
                "/tap/{component}",
                tap_handler(
                    run.taps, lambda c: run.graph.refs_of(c), allow_remote=tap_allow_remote
                ),
            )
            await admin.start()
        start_pipeline(run, owner, metrics)
        start_inputs(run, owner, store, metrics)
        owner.spawn("checkpoint", store.run_flusher(seconds(cfg.checkpoint_interval)))
        owner.spawn("checkpoint metrics", _count_checkpoint_writes(store, metrics))
        metrics.config_info.labels(config_hash(cfg)).set(1)
        if reloading is not None:
            reloader = Reloader(reloading, run, owner, store, metrics, output_events, components)
            owner.spawn("reload", reloader.run())
        ready = True
        log.info(
            "Shipping %s to %s.",
            ", ".join(_described(n.spec) for n in graph.inputs.values()),
            ", ".join(parts.outputs),
        )
        while not shutdown.is_requested:
            await owner.wait_until(shutdown)
        ready = False
        async with run.lock:  # a reload under way finishes first
            assert run.ctx is not None and run.pipeline is not None
            complete = await _drain(
                run.ctx, run.sources, run.source_tasks, run.pipeline, shutdown_timeout
            )
    finally:
        ready = False
        await owner.cancel_all(5.0)
        for src in run.sources:
            with contextlib.suppress(Exception):
                await src.aclose()
        closing = run.parts.sinks
        for sink in closing:
            try:
                await sink.aclose()
            except Exception as exc:
                log.warning("Closing output %s failed: %s", sink.name, exc)
        store.close()
        registry.unregister(output_events)
        registry.unregister(components)
        if admin is not None:
            await admin.aclose()
    return complete


def drain_budget(shutdown_timeout: float) -> float:
    """The part of --shutdown-timeout the drain may use: the rest closes outputs and saves
    the checkpoint before the runtime would cancel everything."""
    return max(0.0, shutdown_timeout - min(2.0, shutdown_timeout * 0.1))


async def _drain(
    ctx: SourceContext,
    sources: list[Source],
    source_tasks: list[asyncio.Task[None]],
    pipeline: Pipeline,
    shutdown_timeout: float,
) -> bool:
    """Read every input to its quiet end and deliver it; False if the timeout came first."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    budget = drain_budget(shutdown_timeout)
    metrics = ctx.metrics
    log.info(
        "Draining: reading every input until none has new data for %s, then delivering "
        "(%d bytes in flight, timeout %s).",
        format_duration(ctx.drain.quiet_seconds),
        pipeline.inflight_bytes,
        format_duration(shutdown_timeout),
    )
    ctx.drain.begin()
    ctx.stopping.set()
    try:
        async with asyncio.timeout(budget):
            await asyncio.wait(source_tasks)
            for task in source_tasks:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
            await pipeline.drained()
    except TimeoutError:
        metrics.drain_timeouts.inc()
        metrics.drain_seconds.set(loop.time() - started)
        total = 0
        for src in sources:
            left = src.unshipped()
            metrics.drain_unshipped_bytes.labels(src.name).set(sum(left.values()))
            for stream, nbytes in sorted(left.items()):
                total += nbytes
                log.error(
                    "Shutdown timeout: %s has %d bytes not delivered; they stay for the next "
                    "start (raise --shutdown-timeout, within the Pod's "
                    "terminationGracePeriodSeconds, to ship them before exit).",
                    stream,
                    nbytes,
                )
        log.error(
            "The drain did not finish within %s: %d bytes undelivered.",
            format_duration(budget),
            total,
        )
        return False
    metrics.drain_seconds.set(loop.time() - started)
    log.info(
        "Everything read was delivered in %.2fs; saving the checkpoint.", loop.time() - started
    )
    return True


def _described(spec: InputSpec) -> str:
    out = f"{redact_url(spec.url)} ({spec.parser_spec}"
    if spec.multiline_start is not None:
        out += f", multi-line start {spec.multiline_start!r}"
    return out + ")"


async def _count_checkpoint_writes(store: CheckpointStore, metrics: ShipMetrics) -> None:
    seen = 0
    while True:
        await asyncio.sleep(1.0)
        metrics.checkpoint_writes.inc(store.writes - seen)
        seen = store.writes
