"""``sidekick ship`` as a program: build the pipeline from the config and run it.

``prepare(cfg)`` checks everything a user can get wrong (inputs with their options, outputs,
parsers, multiline regexes, state directory) before anything starts, raising ``ConfigError``
so the CLI prints one sentence and exits 2. ``run_shipper(cfg, shutdown, registry)`` then runs until SIGTERM:

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
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry

from sidekick.core.addr import HostPort
from sidekick.core.admin import AdminServer
from sidekick.core.durations import format_duration
from sidekick.core.errors import ConfigError
from sidekick.core.redact import redact_url
from sidekick.core.runtime import Shutdown, TaskOwner
from sidekick.ship.checkpoints import CheckpointStore, prepare_state_dir
from sidekick.ship.config import ShipConfig, seconds, size
from sidekick.ship.deadletter import DeadLetter
from sidekick.ship.graph import Graph, build_graph
from sidekick.ship.metrics import ComponentsCollector, OutputEventsCollector, ShipMetrics
from sidekick.ship.pipeline import Pipeline, PipelineSettings
from sidekick.ship.records import Sink
from sidekick.ship.sinks import OutputSpec, create_sink
from sidekick.ship.sources import check_multiline, create_source
from sidekick.ship.sources.base import DrainClock, InputSpec, Source, SourceContext

log = logging.getLogger("sidekick.ship")


@dataclass
class Prepared:
    """What ``prepare`` built and checked; ``run_shipper`` uses it."""

    state_dir: Path
    sinks: list[Sink]
    # Each input with its own parser (built once here) and multi-line start.
    inputs: list[InputSpec]
    outputs: list[str] = field(default_factory=list)
    # Inputs, transforms and outputs by name; sinks are in the order of graph.outputs.
    graph: Graph | None = None


def prepare(cfg: ShipConfig) -> Prepared:
    """Check the whole config, build outputs and each input's parser; ConfigError on a mistake."""
    if not cfg.input_entries:
        raise ConfigError("no --input given; add one, like --input 'file:///var/log/app/*.log'")
    if not cfg.output_configs:
        raise ConfigError(
            "no --output given; add one, like --output stdout: or --output file:///tmp/out.ndjson"
        )
    # The global defaults are checked even if every input overrides them: a typo in them
    # would otherwise surface only when an input is added later.
    check_multiline(cfg.multiline_start)
    if cfg.parser != "raw":
        from sidekick.ship.parsers import create_parser

        create_parser(cfg.parser)
    graph = build_graph(cfg)
    if size(cfg.max_line_bytes) < 16:
        raise ConfigError(
            f"--max-line-bytes {cfg.max_line_bytes} is too small; use at least 16 bytes"
        )
    state_dir = prepare_state_dir(cfg.state_dir)
    sinks: list[Sink] = []
    names: list[str] = []
    for out in graph.outputs.values():
        sink = create_sink(OutputSpec(out.config.url, dict(out.config.options)))
        if sink.name in names:
            raise ConfigError(
                f"--output {redact_url(out.config.url)!r} is given twice; give each output once"
            )
        names.append(sink.name)
        sinks.append(sink)
    inputs = [node.spec for node in graph.inputs.values()]
    return Prepared(state_dir=state_dir, sinks=sinks, inputs=inputs, outputs=names, graph=graph)


def check(cfg: ShipConfig) -> list[str]:
    """Build everything a start would (``prepare``, the ingest token file) without reading,
    sending or locking; the graph as lines of text. ConfigError on a mistake."""
    parts = prepare(cfg)
    try:
        token_file = cfg.ingest.token_file
        if token_file and any(i.url.partition(":")[0] != "file" for i in parts.inputs):
            from sidekick.ship.sources.http import TokenFile

            TokenFile(Path(token_file))
        assert parts.graph is not None
        return parts.graph.describe()
    finally:

        async def close() -> None:
            for sink in parts.sinks:
                with contextlib.suppress(Exception):
                    await sink.aclose()

        asyncio.run(close())


def pipeline_settings(cfg: ShipConfig) -> PipelineSettings:
    return PipelineSettings(
        max_inflight_bytes=size(cfg.max_inflight_bytes),
        batch_max_bytes=size(cfg.batch.max_bytes),
        batch_max_records=cfg.batch.max_records,
        batch_timeout=seconds(cfg.batch.timeout),
        retry_initial=seconds(cfg.retry.initial),
        retry_max=seconds(cfg.retry.max),
        max_queued_batches=cfg.batch.max_queued,
    )


async def run_shipper(
    cfg: ShipConfig,
    shutdown: Shutdown,
    registry: CollectorRegistry,
    *,
    admin_addr: HostPort | None = None,
    prepared: Prepared | None = None,
    shutdown_timeout: float = 30.0,
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
    sources: list[Source] = []
    ctx: SourceContext | None = None
    complete = True
    try:
        store.load()
        if admin_addr is not None:
            admin = AdminServer(
                admin_addr,
                registry,
                healthy=owner.alive,
                ready=lambda: (True, "ok") if ready else (False, "starting"),
            )
            await admin.start()
        pipeline = Pipeline(
            parts.sinks,
            settings=pipeline_settings(cfg),
            metrics=metrics,
            dead_letter=DeadLetter(parts.state_dir),
            plans=None if graph.shorthand else graph.plans,
        )
        ctx = SourceContext(
            config=cfg,
            checkpoints=store,
            metrics=metrics,
            state_dir=parts.state_dir,
            static_fields=cfg.static_fields(),
            drain=DrainClock(seconds(cfg.drain_quiet)),
        )
        source_tasks = []
        for name, node in graph.inputs.items():
            src = create_source(node.spec, ctx)
            sources.append(src)
            source_tasks.append(owner.spawn(f"source {src.name}", src.run(pipeline.emitter(name))))
        for out in pipeline.outputs:
            owner.spawn(f"output {out.name}", out.run())
        owner.spawn("checkpoint", store.run_flusher(seconds(cfg.checkpoint_interval)))
        owner.spawn("checkpoint metrics", _count_checkpoint_writes(store, metrics))
        ready = True
        log.info(
            "Shipping %s to %s.",
            ", ".join(_described(i) for i in parts.inputs),
            ", ".join(parts.outputs),
        )
        while not shutdown.is_requested:
            await owner.wait_until(shutdown)
        ready = False
        complete = await _drain(ctx, sources, source_tasks, pipeline, shutdown_timeout)
    finally:
        ready = False
        await owner.cancel_all(5.0)
        for src in sources:
            with contextlib.suppress(Exception):
                await src.aclose()
        for sink in parts.sinks:
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
