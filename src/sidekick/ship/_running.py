"""What a running shipper runs now: its pipeline, its inputs' sources and their tasks.

``Running`` holds them for ``app.run_shipper`` and for the reloader, which replaces them
(``reload``); sources hand batches to ``Running.emitter``, which forwards them to the
pipeline of the moment and holds them back while the inputs are being replaced.
``start_pipeline`` and ``start_inputs`` start a pipeline's outputs and the inputs' sources
under the program's ``TaskOwner``; ``stop_outputs`` stops outputs and closes their sinks.

Left out: deciding when to replace what (``reload``) and the drain at shutdown (``app``).
"""

from __future__ import annotations

import asyncio
import logging

from sidekick.core.runtime import TaskOwner
from sidekick.ship.checkpoints import CheckpointStore
from sidekick.ship.config import ShipConfig, seconds
from sidekick.ship.deadletter import DeadLetter
from sidekick.ship.graph import Graph
from sidekick.ship.metrics import ShipMetrics
from sidekick.ship.pipeline import Pipeline
from sidekick.ship.prepare import Prepared, pipeline_settings
from sidekick.ship.records import Sink
from sidekick.ship.sources import create_source
from sidekick.ship.sources.base import DrainClock, Emit, Source, SourceBatch, SourceContext
from sidekick.ship.tap import Taps

log = logging.getLogger("sidekick.ship")


class Running:
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


def start_pipeline(run: Running, owner: TaskOwner, metrics: ShipMetrics) -> Pipeline:
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


def start_inputs(
    run: Running, owner: TaskOwner, store: CheckpointStore, metrics: ShipMetrics
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


async def stop_outputs(tasks: list[asyncio.Task[None]], sinks: list[Sink]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    for sink in sinks:
        try:
            await sink.aclose()
        except Exception as exc:
            log.warning("Closing output %s failed: %s", sink.name, exc)
