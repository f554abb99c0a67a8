"""At-least-once across crashes: ``kill -9`` the shipper 10 times while lines are written."""

from __future__ import annotations

import bisect
import os
import random
import threading
import time
from pathlib import Path

from tests.ship.helpers import ShipperProcess, wait_for_sync
from tests.ship.test_rotation import Output

KILLS = 10
RATE = 4000  # lines per second
CHECKPOINT_INTERVAL = 1.0  # the shipper's default


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
    kill_times: list[float] = []
    t = threading.Thread(target=writer)
    t.start()
    shipper = ShipperProcess(args, tmp_path / "shipper.log")
    try:
        for _ in range(KILLS):
            shipper = ShipperProcess(args, tmp_path / "shipper.log").start()
            shipper.wait_ready()
            time.sleep(rng.uniform(0.2, 1.5))
            kill_times.append(time.monotonic())
            shipper.kill()
        stop.set()
        t.join(10)
        total = len(written_at)
        shipper = ShipperProcess(args, tmp_path / "shipper.log").start()

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
    # What a crash can repeat: lines read after the last saved checkpoint, i.e. at most those
    # written in the checkpoint interval (plus one for the write itself) before the kill.
    window = CHECKPOINT_INTERVAL + 1.0
    bound = sum(
        bisect.bisect_right(written_at, k) - bisect.bisect_left(written_at, k - window)
        for k in kill_times
    )
    assert duplicates <= bound, (duplicates, bound)
    assert out.torn <= KILLS
