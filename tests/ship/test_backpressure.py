"""An aggregator that is down, then answers 503, then 200: nothing lost, memory stays flat."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

from aiohttp import web

from tests.conftest import free_port
from tests.ship.helpers import ShipperProcess

LINE = 4096  # bytes per line, newline included
TOTAL_BYTES = 1 << 30
LINES = TOTAL_BYTES // LINE
RSS_LIMIT_KIB = 150 * 1024
SEQ = re.compile(rb'"message":"(\d{10}) ')


def write_big_log(path: Path) -> None:
    pad = b"x" * (LINE - 12)
    per_block = 4096
    with path.open("wb") as f:
        for start in range(0, LINES, per_block):
            f.write(b"".join(b"%010d %s\n" % (s, pad) for s in range(start, start + per_block)))


class Aggregator:
    def __init__(self, port: int) -> None:
        self.port = port
        self.mode = "503"
        self.seen = bytearray(LINES)
        self.statuses: list[int] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.mode == "503":
            self.statuses.append(503)
            return web.Response(status=503, headers={"Retry-After": "1"})
        for m in SEQ.finditer(body):
            self.seen[int(m.group(1))] = 1
        self.statuses.append(200)
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/ingest", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_down_then_503_then_200_delivers_everything_with_flat_memory(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    await asyncio.to_thread(write_big_log, logs / "big.log")
    port = free_port()
    agg = Aggregator(port)
    spec = f"file://{logs}/*.log"
    shipper = ShipperProcess(
        [
            "--input",
            spec,
            "--output",
            f"http://127.0.0.1:{port}/ingest",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        tmp_path / "shipper.log",
    ).start()
    peak = 0

    async def watch_rss(seconds: float) -> None:
        nonlocal peak
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            peak = max(peak, shipper.rss_kib())
            await asyncio.sleep(0.1)

    try:
        await asyncio.to_thread(shipper.wait_ready)
        # Phase 1: nothing listens on the port. Reading must stop at the in-flight limit.
        await watch_rss(4.0)
        read_while_down = shipper.metric("sidekick_ship_bytes_read_total", input=spec)
        assert 0 < read_while_down < 256 << 20
        assert (
            shipper.metric(
                "sidekick_ship_records_failed_total", output=f"http://127.0.0.1:{port}/ingest"
            )
            > 0
        )
        # Phase 2: the aggregator is up but overloaded.
        await agg.start()
        # The shipper's back-off has grown while the port was closed (up to a few seconds).
        deadline = time.monotonic() + 60
        while 503 not in agg.statuses:
            assert time.monotonic() < deadline, "the shipper never retried against the 503s"
            await watch_rss(0.5)
        await watch_rss(2.0)
        # Phase 3: it accepts; everything must arrive.
        agg.mode = "200"
        deadline = time.monotonic() + 150
        while agg.seen.count(1) < LINES:
            assert time.monotonic() < deadline, f"{agg.seen.count(1)} of {LINES} arrived"
            await watch_rss(0.5)
        assert shipper.terminate() == 0
    finally:
        shipper.stop_quietly()
        await agg.stop()
        os.unlink(logs / "big.log")
    print(f"peak RSS {peak} KiB while 1 GiB was pending")
    assert peak < RSS_LIMIT_KIB, f"peak RSS {peak} KiB"
