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
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from prometheus_client import CollectorRegistry

from sidekick.core.addr import HostPort
from sidekick.core.admin import AdminServer
from sidekick.core.durations import format_duration
from sidekick.core.errors import ConfigError, UserError
from sidekick.core.redact import redact_text, redact_url
from sidekick.core.runtime import Shutdown, TaskOwner
from sidekick.ship.checkpoints import CheckpointStore, prepare_state_dir
from sidekick.ship.config import BatchConfig, RetryConfig, ShipConfig, seconds, size
from sidekick.ship.deadletter import DeadLetter
from sidekick.ship.graph import Graph, build_graph
from sidekick.ship.metrics import ComponentsCollector, OutputEventsCollector, ShipMetrics
from sidekick.ship.pipeline import Pipeline, PipelineSettings
from sidekick.ship.records import Sink
from sidekick.ship.sinks import OutputSpec, create_sink
from sidekick.ship.sources import check_multiline, create_source
from sidekick.ship.sources.base import (
    DrainClock,
    Emit,
    InputSpec,
    Source,
    SourceBatch,
    SourceContext,
)
from sidekick.ship.tap import Taps, tap_handler

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
        if out.named:
            # Named outputs are known by their name (metrics, logs, the dead-letter file), so
            # two may share a URL (two stdout: outputs of different records).
            sink.name = out.name
        elif sink.name in names:
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
            from sidekick.ship.sources._ingest_auth import TokenFile

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


class _Running:
    """What runs now: the inputs' sources and tasks, the pipeline, its sinks and tasks."""

    def __init__(self, cfg: ShipConfig, parts: Prepared, graph: Graph) -> None:
        self.cfg = cfg
        self.parts = parts
        self.graph = graph
        self.sources: list[Source] = []
        self.source_tasks: list[asyncio.Task[None]] = []
        self.output_tasks: list[asyncio.Task[None]] = []
        self.pipeline: Pipeline | None = None
        self.ctx: SourceContext | None = None
        self.taps: Taps | None = None
        # Sources hand batches here; it forwards them to the pipeline of the moment, and
        # holds them back while the inputs are being replaced.
        self.open = asyncio.Event()
        self.open.set()
        self.lock = asyncio.Lock()

    def emitter(self, name: str) -> Emit:
        async def emit(batch: SourceBatch) -> None:
            if not self.open.is_set():
                await self.open.wait()
            assert self.pipeline is not None
            await self.pipeline.emit_for(name, batch)

        return emit


def config_hash(cfg: ShipConfig) -> str:
    """A short hash of the effective configuration (file, environment and flags)."""
    return hashlib.sha256(msgspec.json.encode(cfg)).hexdigest()[:16]


def _inputs_part(cfg: ShipConfig) -> ShipConfig:
    """``cfg`` without what a reload can swap without touching the inputs."""
    return msgspec.structs.replace(
        cfg, transforms={}, outputs=[], batch=BatchConfig(), retry=RetryConfig()
    )


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
    run = _Running(cfg, parts, graph)
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
        _start_pipeline(run, owner, metrics)
        _start_inputs(run, owner, store, metrics)
        owner.spawn("checkpoint", store.run_flusher(seconds(cfg.checkpoint_interval)))
        owner.spawn("checkpoint metrics", _count_checkpoint_writes(store, metrics))
        metrics.config_info.labels(config_hash(cfg)).set(1)
        if reloading is not None:
            reloader = _Reloader(reloading, run, owner, store, metrics, output_events, components)
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


def _start_pipeline(run: _Running, owner: TaskOwner, metrics: ShipMetrics) -> Pipeline:
    previous = run.pipeline
    graph = run.graph
    pipeline = Pipeline(
        run.parts.sinks,
        settings=pipeline_settings(run.cfg),
        metrics=metrics,
        dead_letter=DeadLetter(run.parts.state_dir),
        plans=None if graph.shorthand else graph.plans,
        previous=previous,
        taps=run.taps,
        output_names=list(graph.outputs),
    )
    run.pipeline = pipeline
    run.output_tasks = [owner.spawn(f"output {o.name}", o.run()) for o in pipeline.outputs]
    return pipeline


def _start_inputs(
    run: _Running, owner: TaskOwner, store: CheckpointStore, metrics: ShipMetrics
) -> None:
    cfg = run.cfg
    stopping = run.ctx.stopping if run.ctx is not None else asyncio.Event()
    drain = run.ctx.drain if run.ctx is not None else DrainClock(seconds(cfg.drain_quiet))
    run.ctx = ctx = SourceContext(
        config=cfg,
        checkpoints=store,
        metrics=metrics,
        state_dir=run.parts.state_dir,
        static_fields=cfg.static_fields(),
        stopping=stopping,
        drain=drain,
    )
    run.sources = []
    run.source_tasks = []
    for name, node in run.graph.inputs.items():
        src = create_source(node.spec, ctx)
        run.sources.append(src)
        run.source_tasks.append(owner.spawn(f"source {src.name}", src.run(run.emitter(name))))


class _Reloader:
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
        run: _Running,
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
        new = _start_pipeline(run, self.owner, self.metrics)
        old.retire(new)
        self.owner.spawn("retire outputs", self._close_when_drained(old, old_tasks, old_sinks))

    async def _close_when_drained(
        self, old: Pipeline, tasks: list[asyncio.Task[None]], sinks: list[Sink]
    ) -> None:
        await old.drained()
        await _stop(tasks, sinks)

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
            _start_pipeline(run, self.owner, self.metrics)
            _start_inputs(run, self.owner, self.store, self.metrics)
            await _stop(old_tasks, old_sinks)
        finally:
            run.open.set()


async def _stop(tasks: list[asyncio.Task[None]], sinks: list[Sink]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    for sink in sinks:
        try:
            await sink.aclose()
        except Exception as exc:
            log.warning("Closing output %s failed: %s", sink.name, exc)


def _file_stamp(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


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
