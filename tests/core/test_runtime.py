"""Signal handling of core.runtime, exercised in a real child process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from sidekick.core.runtime import run, TaskOwner
    from sidekick.core.logs import setup_logging

    mode = sys.argv[1]
    setup_logging("text", "info")

    async def main(shutdown):
        owner = TaskOwner()
        owner.spawn("ticker", asyncio.sleep(3600))
        print("started", flush=True)
        await owner.wait_until(shutdown)
        if mode == "stubborn":
            await asyncio.sleep(3600)
        print("drained", flush=True)
        await owner.cancel_all(1)
        return 0

    sys.exit(run(main, shutdown_timeout=float(sys.argv[2])))
    """
)


def start(tmp_path: Path, mode: str, timeout: float) -> subprocess.Popen[str]:
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    return proc


def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    proc = start(tmp_path, "polite", 30)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "drained" in out
    assert "Received SIGTERM" in err


def test_drain_longer_than_shutdown_timeout_is_cancelled(tmp_path: Path) -> None:
    proc = start(tmp_path, "stubborn", 0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 1
    assert "drained" not in out
    assert "did not finish within 0.5s" in err


@pytest.mark.parametrize("timeout", [60.0])
def test_second_sigint_forces_exit(tmp_path: Path, timeout: float) -> None:
    proc = start(tmp_path, "stubborn", timeout)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert "second SIGINT" in err


ADMIN = textwrap.dedent(
    """
    import asyncio, sys
    from prometheus_client import CollectorRegistry
    from sidekick.core.addr import HostPort
    from sidekick.core.admin import AdminServer
    from sidekick.core.logs import setup_logging
    from sidekick.core.runtime import run

    setup_logging("text", "info")

    async def main(shutdown):
        admin = AdminServer(HostPort("127.0.0.1", 0), CollectorRegistry())
        await admin.start()
        print(admin.port, flush=True)
        await shutdown.requested.wait()
        await admin.aclose()
        return 0

    sys.exit(run(main, shutdown_timeout=5))
    """
)


def test_a_server_out_of_descriptors_logs_one_line_not_a_traceback_per_connection(
    tmp_path: Path,
) -> None:
    script = tmp_path / "admin.py"
    script.write_text(ADMIN)
    log = tmp_path / "admin.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=err, text=True
        )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        # Two descriptors above what the server holds: the third connection finds none left.
        limit = len(os.listdir(f"/proc/{proc.pid}/fd")) + 2
        subprocess.run(["prlimit", f"--pid={proc.pid}", f"--nofile={limit}:"], check=True)
        burst = [socket.create_connection(("127.0.0.1", port)) for _ in range(60)]
        time.sleep(2.5)
        for s in burst:
            s.close()
        subprocess.run(["prlimit", f"--pid={proc.pid}", "--nofile=1024:"], check=True)
        # Once descriptors are free again, the server answers.
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server never answered again"
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        if proc.stdout is not None:
            proc.stdout.close()
    text = log.read_text()
    assert "Traceback" not in text and "out of system resource" not in text, text[:2000]
    assert text.count("Out of file descriptors") == 1, text
