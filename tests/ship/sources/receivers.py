"""Helpers for the receiver tests: a real ``sidekick ship`` with network inputs and a file
output, and waiting for records there."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import SIDEKICK
from tests.ship.helpers import ShipperProcess, read_ndjson


class LimitedShipper(ShipperProcess):
    """A shipper started with an open-file limit of ``nofile`` (soft and hard)."""

    def __init__(self, args: list[str], log_path: Path, nofile: int) -> None:
        super().__init__(args, log_path)
        self.nofile = nofile

    def start(self) -> LimitedShipper:
        n = self.nofile

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*SIDEKICK, "ship", *self.args, "--admin-addr", f"127.0.0.1:{self.port}"],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=limit,
            )
        return self


class Receiving:
    """A running shipper whose records land in ``out``."""

    def __init__(self, proc: ShipperProcess, out: Path) -> None:
        self.proc = proc
        self.out = out

    def records(self) -> list[dict[str, Any]]:
        return read_ndjson(self.out)

    def wait_records(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.records()
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(got)} of {n} records arrived within {timeout}s; log:\n{self.proc.log()}"
                )
            if self.proc.proc is not None and self.proc.proc.poll() is not None:
                raise AssertionError(f"shipper exited: {self.proc.log()}")
            time.sleep(0.05)

    def metric(self, name: str, **labels: str) -> float:
        return self.proc.metric(name, **labels)


@contextlib.contextmanager
def receiving(
    tmp_path: Path,
    *inputs: str,
    output: str | None = None,
    state: Path | None = None,
    extra: tuple[str, ...] = (),
    nofile: int | None = None,
) -> Iterator[Receiving]:
    """Run ``sidekick ship`` with ``inputs`` until the block ends (SIGTERM, then kill);
    ``nofile``: its open-file limit."""
    out = tmp_path / "out.ndjson"
    args: list[str] = []
    for given in inputs:
        args += ["--input", given]
    args += ["--output", output or f"file://{out}"]
    args += ["--state-dir", str(state or tmp_path / "state"), *extra]
    if output is not None and "--shutdown-timeout" not in extra:
        # Tests with an output that is down would otherwise wait out the whole drain.
        args += ["--shutdown-timeout", "3s"]
    log_path = tmp_path / "shipper.log"
    proc = (
        ShipperProcess(args, log_path) if nofile is None else LimitedShipper(args, log_path, nofile)
    ).start()
    try:
        proc.wait_ready()
        yield Receiving(proc, out)
    finally:
        with contextlib.suppress(Exception):
            if proc.proc is not None and proc.proc.poll() is None:
                proc.terminate(30)
        proc.stop_quietly()


def invalid_utf8(field: str) -> bytes:
    """A request whose ``field`` (an attribute's key or value, or the body) holds bytes that
    are not UTF-8, encoded by hand: the generated classes refuse to build it."""
    bad = b"\xff\xfe"

    def ld(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    kv = ld(1, bad) + ld(2, ld(1, b"v")) if field == "key" else ld(1, b"k") + ld(2, ld(1, bad))
    record = ld(5, ld(1, bad)) if field == "body" else ld(6, kv)
    return ld(1, ld(2, ld(2, record)))
