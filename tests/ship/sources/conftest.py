"""Fixtures for the ingest tests: a real ingest source on 127.0.0.1 and a client for it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from sidekick.ship.checkpoints import CheckpointStore
from sidekick.ship.config import IngestConfig, ShipConfig
from sidekick.ship.metrics import ShipMetrics
from sidekick.ship.records import Record
from sidekick.ship.sources.base import SourceBatch, SourceContext
from sidekick.ship.sources.http import IngestSource


@dataclass
class Ingest:
    """A running ingest source whose emitted batches land in ``batches``."""

    source: IngestSource
    session: aiohttp.ClientSession
    store: CheckpointStore
    batches: list[SourceBatch] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    auto_ack: bool = True
    # When set, ``emit`` waits for it: the reader stalls as behind a slow pipeline.
    gate: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.source.port}/v1/logs"

    @property
    def records(self) -> list[Record]:
        return [r for b in self.batches for r in b.records]

    async def post(
        self, body: bytes, content_type: str = "application/x-ndjson", **headers: str
    ) -> tuple[int, Any, Any]:
        """POST ``body``; return (status, parsed JSON answer, headers)."""
        hdrs = {"Content-Type": content_type, **headers}
        async with self.session.post(self.url, data=body, headers=hdrs) as resp:
            answer = await resp.json(content_type=None)
            return resp.status, answer, resp.headers

    async def wait_records(self, n: int, timeout: float = 5.0) -> list[Record]:
        async with asyncio.timeout(timeout):
            while len(self.records) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.records

    def ack_all(self) -> None:
        for b in self.batches:
            if b.ack is not None:
                b.ack.delivered()


@contextlib.asynccontextmanager
async def run_ingest(
    state_dir: Path,
    *,
    auto_ack: bool = True,
    segment_bytes: int | None = None,
    fields: dict[str, str] | None = None,
    parser: str = "raw",
    **ingest: Any,
) -> AsyncIterator[Ingest]:
    """Run an ingest source on a free port of 127.0.0.1 until the block ends."""
    cfg = ShipConfig(
        inputs=["http://127.0.0.1:0"],
        outputs=["stdout:"],
        state_dir=str(state_dir),
        fields=fields or {},
        parser=parser,
        ingest=IngestConfig(**ingest),
    )
    os.makedirs(state_dir, exist_ok=True)
    store = CheckpointStore(state_dir)
    store.load()
    ctx = SourceContext(
        config=cfg,
        checkpoints=store,
        metrics=ShipMetrics(CollectorRegistry()),
        state_dir=state_dir,
        static_fields=cfg.static_fields(),
    )
    source = IngestSource("http://127.0.0.1:0", ctx, segment_bytes=segment_bytes)
    session = aiohttp.ClientSession()
    ing = Ingest(source=source, session=session, store=store, auto_ack=auto_ack)

    async def emit(batch: SourceBatch) -> None:
        if ing.gate is not None:
            await ing.gate.wait()
        ing.batches.append(batch)
        ing.arrived.set()
        if ing.auto_ack and batch.ack is not None:
            batch.ack.delivered()

    await source.start()
    task = asyncio.create_task(source.run(emit), name="ingest under test")
    try:
        yield ing
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, 10)
        await session.close()
        await source.aclose()
        store.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"
