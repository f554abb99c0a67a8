"""Run the real ``sidekick up`` in a child process and watch it from outside."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SIDEKICK


def marked_pids(run_id: str) -> list[int]:
    """Pids of live processes whose environment carries ``SIDEKICK_RUN_ID=run_id``."""
    want = f"SIDEKICK_RUN_ID={run_id}".encode()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if want in env and state not in ("Z", "X"):
            out.append(int(name))
    return out


class Up:
    """One ``sidekick up`` process with its run dir, output files and admin address."""

    def __init__(self, tmp_path: Path, manifest: str, *args: str, name: str = "pod.yaml") -> None:
        self.dir = tmp_path
        self.run_dir = tmp_path / "run"
        self.manifest = tmp_path / name
        self.manifest.write_text(textwrap.dedent(manifest))
        self.out_path = tmp_path / "up.out"
        self.err_path = tmp_path / "up.err"
        self.started = time.monotonic()
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    *SIDEKICK,
                    "up",
                    str(self.manifest),
                    "--run-dir",
                    str(self.run_dir),
                    "--fast-backoff",
                    "--admin-addr",
                    "127.0.0.1:0",
                    "--no-color",
                    *args,
                ],
                stdout=out,
                stderr=err,
                cwd=tmp_path,
            )
        self._run_id: str | None = None

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            self.wait_for(lambda: (self.run_dir / "run-id").exists(), what="run-id file")
            self._run_id = (self.run_dir / "run-id").read_text().strip()
        return self._run_id

    def wait_for(self, check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            if self.proc.poll() is not None:
                value = check()
                if value:
                    return value
                raise AssertionError(
                    f"sidekick up exited ({self.proc.returncode}) before {what or check}:\n"
                    f"{self.err}\n{self.out}"
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or check}:\n{self.err}\n{self.out}")

    def status(self) -> dict[str, Any]:
        port_file = self.run_dir / "admin-port"
        self.wait_for(port_file.exists, what="admin port")
        port = port_file.read_text().strip()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def container(self, name: str, pod: int = 0) -> dict[str, Any]:
        p = self.status()["pods"][pod]
        for c in p["initContainerStatuses"] + p["containerStatuses"]:
            if c["name"] == name:
                return dict(c)
        raise KeyError(name)

    def wait_exit(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"sidekick up did not exit:\n{self.err}\n{self.out}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._run_id is None and (self.run_dir / "run-id").exists():
            self._run_id = (self.run_dir / "run-id").read_text().strip()
        if self._run_id:
            for pid in marked_pids(self._run_id):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    """Start ``sidekick up`` on a manifest; whatever happens, nothing is left running."""
    ups: list[Up] = []

    def start(manifest: str, *args: str, name: str = "pod.yaml") -> Up:
        up = Up(tmp_path, manifest, *args, name=name)
        ups.append(up)
        return up

    yield start
    for up in ups:
        up.kill()


def read_times(path: Path) -> dict[str, float]:
    """Lines ``event timestamp`` written by the test's containers."""
    out: dict[str, float] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            event, ts = line.split()
            out[event] = float(ts)
    return out
