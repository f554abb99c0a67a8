"""Building a shipper from its configuration, before anything runs: ``prepare`` and ``check``.

``prepare(cfg)`` checks everything a user can get wrong (inputs with their options, outputs,
parsers, multi-line regexes, the graph, the state directory) and builds the outputs, raising
``ConfigError`` so the CLI prints one sentence and exits 2. ``check(cfg)`` (``--check``)
builds the same and prints the graph without reading, sending or locking anything; a reload
runs ``prepare`` on the new configuration before it replaces the running one.

Left out: starting anything (``app``), and the inputs' sources, which are built when they
start (``_running``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from sidekick.core.errors import ConfigError
from sidekick.core.redact import redact_url
from sidekick.ship.checkpoints import prepare_state_dir
from sidekick.ship.config import ShipConfig, seconds, size
from sidekick.ship.graph import Graph, build_graph
from sidekick.ship.pipeline import PipelineSettings
from sidekick.ship.records import Sink
from sidekick.ship.sinks import OutputSpec, create_sink
from sidekick.ship.sources import check_multiline
from sidekick.ship.sources.base import InputSpec


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
