"""What the shutdown drain says of tailed files it never opened, with the real ``sidekick ship``.

Files that wait for a descriptor (``--max-open-files``) are opened at a scan once the open
ones are read; the drain scans often enough for that to happen before it goes quiet. A drain
cut short by ``--shutdown-timeout`` counts those files in what it left undelivered, and one
that ends with files it could not open says so instead of "Read every file to its end".
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import SIDEKICK, free_port
from tests.ship.helpers import ShipperProcess, read_ndjson, wait_for_sync

NOBODY = 65534


def write_files(logs: Path, files: int, lines: int) -> int:
    logs.mkdir(exist_ok=True)
    total = 0
    for i in range(files):
        text = "".join(f"file {i} line {n:05d} {'x' * 60}\n" for n in range(lines))
        (logs / f"f{i}.log").write_text(text)
        total += len(text)
    return total


def test_files_waiting_for_a_descriptor_are_read_before_the_drain_ends(tmp_path: Path) -> None:
    # Scans every 5 s; the drain is quiet after 1 s. Four of the eight files wait for a
    # descriptor when SIGTERM comes: before, the drain ended without opening them (40,000 of
    # 80,000 lines unread) and logged "Read every file ... to its end".
    logs = tmp_path / "logs"
    write_files(logs, 8, 10_000)
    (tmp_path / "ship.yaml").write_text("poll_interval: 5s\n")
    ship = ShipperProcess(
        ["--config", str(tmp_path / "ship.yaml"), "--input", f"file://{logs}/*.log",
         "--output", f"file://{tmp_path}/out.ndjson", "--state-dir", str(tmp_path / "st"),
         "--max-open-files", "4", "--drain-quiet", "1s"],
        tmp_path / "ship.log",
    ).start()  # fmt: skip
    try:
        ship.wait_ready()
        wait_for_sync(lambda: "wait for a descriptor" in ship.log(), timeout=20)
        code = ship.terminate(timeout=60)
    finally:
        ship.stop_quietly()
    got = [r["message"] for r in read_ndjson(tmp_path / "out.ndjson")]
    assert code == 0, ship.log()
    assert (len(got), len(set(got))) == (80_000, 80_000)
    assert "Read every file of" in ship.log()


def test_a_cut_short_drain_counts_the_files_never_opened(tmp_path: Path) -> None:
    # The output is down: reading stops at the in-flight limit with four files open and four
    # waiting. Before, the summary named the four open files only (half the bytes).
    dead = free_port()
    logs = tmp_path / "logs"
    total = write_files(logs, 8, 3_000)
    ship = ShipperProcess(
        ["--input", f"file://{logs}/*.log", "--output", f"http://127.0.0.1:{dead}/",
         "--state-dir", str(tmp_path / "st"), "--max-open-files", "4",
         "--max-inflight-bytes", "64KiB", "--shutdown-timeout", "3s"],
        tmp_path / "ship.log",
    ).start()  # fmt: skip
    try:
        ship.wait_ready()
        wait_for_sync(lambda: "wait for a descriptor" in ship.log(), timeout=20)
        code = ship.terminate(timeout=30)
    finally:
        ship.stop_quietly()
    log = ship.log_path.read_text()
    assert code == 1, log[-3000:]
    for i in range(8):
        assert re.search(rf"{logs}/f{i}\.log has \d+ bytes not delivered", log), i
    m = re.search(r"The drain did not finish within \S+: (\d+) bytes undelivered", log)
    assert m is not None and int(m.group(1)) == total


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_a_drain_that_ends_with_a_file_it_could_not_open_says_so(tmp_path: Path) -> None:
    # secret.log is another user's with mode 0600 (an app that writes its log for itself
    # alone), and the shipper runs as root without the capabilities that would let it read
    # it anyway. Before, the drain logged "Read every file ... to its end".
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "ok.log").write_text("readable\n")
    (logs / "secret.log").write_text("private line\n" * 10)
    (logs / "secret.log").chmod(0o600)
    os.chown(logs / "secret.log", NOBODY, NOBODY)
    port = free_port()
    log_path = tmp_path / "ship.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
             *SIDEKICK, "ship", "--input", f"file://{logs}/*.log",
             "--output", f"file://{tmp_path}/out.ndjson", "--state-dir", str(tmp_path / "st"),
             "--admin-addr", f"127.0.0.1:{port}"],
            stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        wait_for_sync(lambda: "Cannot open" in log_path.read_text(), timeout=20)
        wait_for_sync(lambda: (tmp_path / "out.ndjson").exists(), timeout=20)
        time.sleep(0.3)
        proc.terminate()
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log_path.read_text()
    assert code == 0, text
    assert [r["message"] for r in read_ndjson(tmp_path / "out.ndjson")] == ["readable"]
    assert "Read every file of" not in text
    assert (
        f"Files of file://{logs}/*.log left unread at stop (1, 130 bytes): "
        f"{logs}/secret.log (130 bytes)."
    ) in text
