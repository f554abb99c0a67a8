"""Helpers for ship tests: run the shipper in-process or as a real ``sidekick ship`` process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from sidekick.core.runtime import Shutdown
from sidekick.ship.app import run_shipper
from sidekick.ship.config import ShipConfig
from tests.conftest import SIDEKICK, free_port


def ship_config(**fields: Any) -> ShipConfig:
    fields.setdefault("host_name", "testhost")
    return msgspec.convert(fields, ShipConfig, strict=False)


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    return [msgspec.json.decode(line) for line in data[:end].splitlines()]


async def wait_for(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def wait_for_sync(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class InProcess:
    def __init__(self, cfg: ShipConfig) -> None:
        self.cfg = cfg
        self.shutdown = Shutdown()
        self.registry = CollectorRegistry()
        self.task: asyncio.Task[None] | None = None

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def stop(self, timeout: float = 10.0) -> None:
        assert self.task is not None
        self.shutdown.request("test")
        await asyncio.wait_for(self.task, timeout)


@contextlib.asynccontextmanager
async def shipping(cfg: ShipConfig) -> AsyncIterator[InProcess]:
    """Run ``run_shipper`` in this event loop; stop it (SIGTERM-like) on exit."""
    sh = InProcess(cfg)
    sh.task = asyncio.create_task(run_shipper(cfg, sh.shutdown, sh.registry))
    try:
        yield sh
    finally:
        if not sh.task.done():
            await sh.stop()
        else:
            sh.task.result()


class ShipperProcess:
    """A real ``sidekick ship`` process with its admin server on a free port."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ShipperProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*SIDEKICK, "ship", *self.args, "--admin-addr", f"127.0.0.1:{self.port}"],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"shipper exited with {self.proc.returncode}: {self.log()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("shipper did not become ready")

    def metric(self, name: str, **labels: str) -> float:
        _status, text = self.get("/metrics")
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:]+)(\{[^}]*\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            got = (m.group(2) or "{}")[1:-1]
            if ",".join(sorted(got.split(","))) == want or (not labels and not got):
                return float(m.group(3))
        return 0.0

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def first_stdout_record(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, line: str = "hello"
) -> dict[str, Any]:
    """Run the real shipper with a stdout: output on a one-line log; return the record."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text(line + "\n")
    proc = subprocess.Popen(
        [
            *SIDEKICK,
            "ship",
            "--input",
            f"file://{logs}/*.log",
            "--output",
            "stdout:",
            "--state-dir",
            str(tmp_path / "state"),
            "--admin-addr",
            "127.0.0.1:0",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdout is not None
        record: dict[str, Any] = msgspec.json.decode(proc.stdout.readline())
        proc.terminate()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    return record
