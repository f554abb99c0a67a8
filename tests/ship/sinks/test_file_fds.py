"""The file output on a full disk: no descriptor per failed write, no torn or doubled line.

A real ``sidekick ship`` writes to a small tmpfs that fills up; its descriptors are counted
in /proc while it retries, then space is freed and every line must arrive exactly once.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import tmpfs
from tests.ship.helpers import ShipperProcess, read_ndjson, wait_for_sync


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "size=256k") as disk:
        yield disk


def fill(path: Path) -> None:
    """Write ``path`` until the filesystem is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        block = b"\0" * 4096
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0"):  # the last partial page too
                pass
    finally:
        os.close(fd)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_full_disk_leaks_no_descriptor_and_loses_no_line(tmp_path: Path, small_disk: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    out = small_disk / "out.ndjson"
    output = f"file://{out}"
    config = tmp_path / "ship.yaml"
    config.write_text("ship:\n  retry: {initial: 20ms, max: 100ms}\n")
    sh = ShipperProcess(
        [
            "--config",
            str(config),
            "--input",
            f"file://{logs}/*.log",
            "--output",
            output,
            "--state-dir",
            str(tmp_path / "state"),
        ],
        tmp_path / "ship.log",
    ).start()
    want = [f"before {i}" for i in range(5)]
    try:
        sh.wait_ready()
        app.write_text("".join(m + "\n" for m in want))
        wait_for_sync(lambda: [r["message"] for r in read_ndjson(out)] == want, timeout=20)
        before = fds(sh.pid)

        fill(small_disk / "filler")
        more = [f"while full {i} " + "x" * 200 for i in range(300)]
        with app.open("a") as f:
            f.write("".join(m + "\n" for m in more))
        want += more
        attempts = sh.metric("sidekick_ship_batches_sent_total", output=output)
        wait_for_sync(
            lambda: sh.metric("sidekick_ship_batches_sent_total", output=output) >= attempts + 40,
            timeout=60,
        )
        assert sh.metric("sidekick_ship_records_failed_total", output=output) > 0
        during = fds(sh.pid)
        # One socket of the /metrics request just made may still be closing.
        assert during <= before + 1, f"{before} descriptors before, {during} after 40 failures"

        (small_disk / "filler").unlink()
        wait_for_sync(lambda: len(read_ndjson(out)) >= len(want), timeout=30)
        after = fds(sh.pid)
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    got = [r["message"] for r in read_ndjson(out)]  # every line is whole JSON
    doubled = [m for m, n in collections.Counter(got).items() if n > 1]
    assert not doubled
    assert got == want
    assert out.read_bytes().endswith(b"\n")
    print(f"descriptors: {before} before, {during} after 40 failed writes, {after} after")
