"""Signal handling of core.runtime, exercised in a real child process."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
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
