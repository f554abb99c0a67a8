"""At-least-once across crashes: ``kill -9`` the shipper 10 times while lines are written."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import msgspec

from sidekick.ship.checkpoints import STATE_FILE
from tests.ship.helpers import ShipperProcess, wait_for_sync
from tests.ship.test_rotation import Output

KILLS = 10
RATE = 4000  # lines per second


def saved_offset(path: Path) -> int:
    try:
        state = msgspec.json.decode(path.read_bytes())
    except FileNotFoundError:
        return 0
    return sum(int(e.get("offset", 0)) for e in state["streams"].values())


def test_kill_9_ten_times_loses_no_line_and_repeats_only_what_was_in_flight(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    out = Output(tmp_path / "out.ndjson")
    args = [
        "--input",
        f"file://{logs}/*.log",
        "--output",
        f"file://{out.path}",
        "--state-dir",
        str(tmp_path / "state"),
    ]
    stop = threading.Event()
    written_at: list[float] = []  # written_at[seq]: when line seq was written
    lock = threading.Lock()

    def writer() -> None:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        seq = 0
        try:
            while not stop.is_set():
                n = RATE // 100
                os.write(fd, b"".join(b"%08d\n" % s for s in range(seq, seq + n)))
                with lock:
                    written_at.extend([time.monotonic()] * n)
                seq += n
                time.sleep(0.01)
        finally:
            os.close(fd)

    rng = random.Random(4242)
    at_risk: list[int] = []
    t = threading.Thread(target=writer)
    t.start()
    shipper = ShipperProcess(args, tmp_path / "shipper.log")
    try:
        for _ in range(KILLS):
            shipper = ShipperProcess(args, tmp_path / "shipper.log").start()
            shipper.wait_ready()
            time.sleep(rng.uniform(0.2, 1.5))
            with lock:
                written = len(written_at)
            saved = saved_offset(tmp_path / "state" / STATE_FILE)
            shipper.kill()
            # What this crash may repeat: every line read but not covered by the checkpoint
            # a restart will find (lines are 9 bytes); at most what was written by now.
            at_risk.append(written - saved // 9)
        stop.set()
        t.join(10)
        total = len(written_at)
        shipper = ShipperProcess(args, tmp_path / "shipper.log").start()
        shipper.wait_ready()

        def all_arrived() -> bool:
            out.poll()
            return len(out.seen) == total

        wait_for_sync(all_arrived, timeout=60)
        assert shipper.terminate() == 0
    finally:
        stop.set()
        t.join(10)
        shipper.stop_quietly()
    out.poll()
    assert set(out.seen) == set(range(total))
    duplicates = sum(n - 1 for n in out.seen.values())
    bound = sum(at_risk)
    print(f"{total} lines, {duplicates} duplicates, bound {bound}, torn {out.torn}")
    assert duplicates <= bound, (duplicates, bound)
    assert out.torn <= KILLS
