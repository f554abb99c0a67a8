"""The ``http:`` output and shutdown, with a real ``sidekick ship`` process and aiohttp server."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from sidekick.ship.checkpoints import STATE_FILE
from sidekick.ship.deadletter import DEAD_LETTER_FILE
from tests.conftest import free_port
from tests.ship.helpers import ShipperProcess


class Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.status = 200
        self.delay = 0.0
        self.records: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        # What answers POST /ingest; a test may put a checking handler in front of handle.
        self.handler: Callable[[web.Request], Awaitable[web.Response]] = self.handle

    async def dispatch(self, request: web.Request) -> web.Response:
        return await self.handler(request)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.headers.append(dict(request.headers))
        # aiohttp has already undone a Content-Encoding: gzip here.
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status == 200:
            self.records.extend(msgspec.json.decode(x) for x in body.splitlines())
            return web.Response(status=200)
        return web.Response(status=self.status, text="mapping error: field [x] is bad")

    async def __aenter__(self) -> Server:
        app = web.Application()
        app.router.add_post("/ingest", self.dispatch)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"


def shipper_for(tmp_path: Path, url: str, *extra: str) -> ShipperProcess:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    return ShipperProcess(
        [
            "--input",
            f"file://{logs}/*.log",
            "--output",
            url,
            "--state-dir",
            str(tmp_path / "state"),
            *extra,
        ],
        tmp_path / "shipper.log",
    )


async def until(pred: Any, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_http_output_posts_ndjson_batches(tmp_path: Path) -> None:
    async with Server() as server:
        sh = shipper_for(tmp_path, server.url)

        (tmp_path / "logs" / "a.log").write_text("one\ntwo\n")
        sh.start()
        try:
            await until(lambda: len(server.records) == 2)
            assert await asyncio.to_thread(sh.terminate) == 0
        finally:
            sh.stop_quietly()
    assert [r["message"] for r in server.records] == ["one", "two"]
    assert server.headers[0]["Content-Type"] == "application/x-ndjson"


async def test_http_output_4xx_goes_to_the_dead_letter_file_and_is_counted(tmp_path: Path) -> None:
    async with Server() as server:
        server.status = 400
        sh = shipper_for(tmp_path, server.url)

        (tmp_path / "logs" / "a.log").write_text("rejected 1\nrejected 2\n")
        sh.start()
        try:
            await asyncio.to_thread(sh.wait_ready)
            dead = tmp_path / "state" / DEAD_LETTER_FILE
            await until(dead.exists)
            await until(
                lambda: (
                    sh.metric("sidekick_ship_records_dead_lettered_total", output=server.url) == 2
                )
            )
            assert await asyncio.to_thread(sh.terminate) == 0
        finally:
            sh.stop_quietly()
    lines = [msgspec.json.decode(x) for x in dead.read_bytes().splitlines()]
    assert [x["record"]["message"] for x in lines] == ["rejected 1", "rejected 2"]
    assert lines[0]["reason"].startswith("HTTP 400: mapping error")
    assert lines[0]["output"] == server.url
    # The checkpoint moved on: a dead-lettered batch is done, not retried forever.
    state = msgspec.json.decode((tmp_path / "state" / STATE_FILE).read_bytes())
    assert [e["offset"] for e in state["streams"].values() if "offset" in e] == [22]
    assert "rejected 2 record(s) for good" in sh.log()


async def test_http_output_gzip_option_compresses_bodies(tmp_path: Path) -> None:
    async with Server() as server:
        config = tmp_path / "ship.yaml"
        config.write_text(
            f"ship:\n  outputs:\n    - url: {server.url}\n      options: {{gzip: true}}\n"
        )
        logs = tmp_path / "logs"
        logs.mkdir()
        (logs / "a.log").write_text("zipped\n")
        sh = ShipperProcess(
            [
                "--config",
                str(config),
                "--input",
                f"file://{logs}/*.log",
                "--state-dir",
                str(tmp_path / "state"),
            ],
            tmp_path / "shipper.log",
        ).start()
        try:
            await until(lambda: len(server.records) == 1)
            assert await asyncio.to_thread(sh.terminate) == 0
        finally:
            sh.stop_quietly()
    assert server.headers[0]["Content-Encoding"] == "gzip"
    assert server.records[0]["message"] == "zipped"


async def test_sigterm_drains_in_flight_batches_and_writes_the_checkpoint(tmp_path: Path) -> None:
    async with Server() as server:
        server.delay = 1.5  # the batch is in flight when SIGTERM arrives
        sh = shipper_for(tmp_path, server.url)

        log = tmp_path / "logs" / "a.log"
        log.write_text("".join(f"line {i}\n" for i in range(1000)))
        sh.start()
        try:
            await until(lambda: len(server.headers) >= 1)
            assert server.records == []
            code = await asyncio.to_thread(sh.terminate)
        finally:
            sh.stop_quietly()
    assert code == 0
    assert len(server.records) == 1000
    state = msgspec.json.decode((tmp_path / "state" / STATE_FILE).read_bytes())
    assert [e["offset"] for e in state["streams"].values() if "offset" in e] == [log.stat().st_size]


async def test_readyz_and_metrics_are_served_while_shipping(tmp_path: Path) -> None:
    async with Server() as server:
        sh = shipper_for(tmp_path, server.url)

        (tmp_path / "logs" / "a.log").write_text("x\n")
        sh.start()
        try:
            await asyncio.to_thread(sh.wait_ready)
            await until(lambda: len(server.records) == 1)
            assert sh.get("/healthz")[0] == 200
            spec = f"file://{tmp_path}/logs/*.log"
            await until(lambda: sh.metric("sidekick_ship_lines_read_total", input=spec) == 1)
            assert sh.metric("sidekick_ship_bytes_read_total", input=spec) == 2
            assert sh.metric("sidekick_ship_records_delivered_total", output=server.url) == 1
            assert sh.metric("sidekick_ship_inflight_bytes") == 0
            assert sh.metric("sidekick_ship_files_watched", input=spec) == 1
            path = str(tmp_path / "logs" / "a.log")
            with (tmp_path / "logs" / "a.log").open("a") as f:
                f.write("y\n")
            await until(lambda: len(server.records) == 2)
            await until(lambda: sh.metric("sidekick_ship_checkpoint_lag_bytes", file=path) == 0)
            assert (
                f'sidekick_ship_checkpoint_lag_bytes{{file="{path}"}} 0.0' in sh.get("/metrics")[1]
            )
            assert await asyncio.to_thread(sh.terminate) == 0
        finally:
            sh.stop_quietly()


async def test_unwritable_dead_letter_file_stops_the_shipper_without_acking(
    tmp_path: Path,
) -> None:
    async with Server() as server:
        server.status = 400
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / DEAD_LETTER_FILE).mkdir()  # a directory: appending fails
        sh = shipper_for(tmp_path, server.url)
        (tmp_path / "logs" / "a.log").write_text("cannot be dead-lettered\n")
        sh.start()
        try:
            assert sh.proc is not None
            code = await asyncio.to_thread(sh.proc.wait, 20)
        finally:
            sh.stop_quietly()
    assert code != 0
    log = sh.log_path.read_text()
    assert "Task 'output " + server.url + "' failed" in log
    assert (
        log.rstrip()
        .splitlines()[-1]
        .endswith("Is a directory: " + repr(str(tmp_path / "state" / DEAD_LETTER_FILE)))
    )
    state_file = tmp_path / "state" / STATE_FILE
    if state_file.exists():
        state = msgspec.json.decode(state_file.read_bytes())
        assert [e["offset"] for e in state["streams"].values() if "offset" in e] == [0]


async def test_checkpoint_waits_for_the_slowest_of_two_outputs(tmp_path: Path) -> None:
    async with Server() as server:
        server.status = 503
        out = tmp_path / "out.ndjson"
        sh = shipper_for(tmp_path, server.url, "--output", f"file://{out}")
        (tmp_path / "logs" / "a.log").write_text("both\n")
        state_file = tmp_path / "state" / STATE_FILE

        def offsets() -> list[int]:
            if not state_file.exists():
                return []
            state = msgspec.json.decode(state_file.read_bytes())
            return [e["offset"] for e in state["streams"].values() if "offset" in e]

        sh.start()
        try:
            await until(lambda: out.exists() and out.read_bytes().count(b"\n") == 1)
            await asyncio.sleep(1.5)  # a checkpoint write would have happened by now
            assert offsets() in ([], [0])
            server.status = 200
            await until(lambda: len(server.records) == 1)
            await until(lambda: offsets() == [5])
            assert await asyncio.to_thread(sh.terminate) == 0
        finally:
            sh.stop_quietly()


async def test_401_after_a_token_rotation_is_retried_until_the_new_token_is_mounted(
    tmp_path: Path,
) -> None:
    async with Server() as server:
        token = tmp_path / "token"
        token.write_text("old-token\n")

        async def check_token(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != "Bearer new-token":
                server.headers.append(dict(request.headers))
                return web.Response(status=401, text="invalid token")
            return await server.handle(request)

        server.handler = check_token
        config = tmp_path / "ship.yaml"
        config.write_text(
            "ship:\n"
            "  retry: {initial: 50ms, max: 500ms}\n"
            "  outputs:\n"
            f"    - url: {server.url}\n"
            f"      options: {{bearer_token_file: {token}}}\n"
        )
        logs = tmp_path / "logs"
        logs.mkdir()
        lines = [f"line {i}" for i in range(500)]
        (logs / "a.log").write_text("".join(line + "\n" for line in lines))
        sh = ShipperProcess(
            ["--config", str(config), "--input", f"file://{logs}/*.log",
             "--state-dir", str(tmp_path / "state")],
            tmp_path / "shipper.log",
        ).start()  # fmt: skip
        dead = tmp_path / "state" / DEAD_LETTER_FILE
        try:
            await until(lambda: len(server.headers) >= 3, timeout=30)
            assert server.records == []
            assert not dead.exists()
            replacement = tmp_path / "token.new"
            replacement.write_text("new-token\n")
            replacement.rename(token)
            await until(lambda: len(server.records) == len(lines), timeout=30)
            assert await asyncio.to_thread(sh.terminate) == 0
        finally:
            sh.stop_quietly()
    assert [r["message"] for r in server.records] == lines
    assert not dead.exists()
    log = sh.log_path.read_text()
    assert "HTTP 401 (invalid token); check the output's credentials" in log
    assert "credentials changed on disk" in log
    assert "old-token" not in log and "new-token" not in log


async def test_retry_after_date_delays_the_next_attempt(tmp_path: Path) -> None:
    async with Server() as server:
        attempts: list[float] = []

        async def maintenance_first(request: web.Request) -> web.Response:
            attempts.append(time.monotonic())
            if len(attempts) == 1:
                when = email.utils.formatdate(time.time() + 3, usegmt=True)
                return web.Response(status=503, headers={"Retry-After": when})
            return await server.handle(request)

        server.handler = maintenance_first
        config = tmp_path / "ship.yaml"
        config.write_text("ship:\n  retry: {initial: 20ms, max: 30s}\n")
        sh = shipper_for(tmp_path, server.url, "--config", str(config))
        (tmp_path / "logs" / "a.log").write_text("after maintenance\n")
        sh.start()
        try:
            await until(lambda: len(server.records) == 1, timeout=30)
            assert await asyncio.to_thread(sh.terminate) == 0
        finally:
            sh.stop_quietly()
    # The date is rounded down to a whole second: at least 2 s of the 3 s remain.
    assert attempts[1] - attempts[0] >= 1.9
