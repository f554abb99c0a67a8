"""Rotation while writing: a real ``sidekick ship`` process, a writer thread, 200,000 lines."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import msgspec

from tests.ship.helpers import ShipperProcess, wait_for_sync

TOTAL = 200_000
BLOCK = 500
RENAMES = 20
TRUNCATES = 5


class Output:
    """Reads the shipper's NDJSON output incrementally; counts each sequence number."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.seen: Counter[int] = Counter()
        self.last = -1
        self.torn = 0

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self.pos += end
        for line in data[:end].splitlines():
            try:
                seq = int(msgspec.json.decode(line)["message"])
            except msgspec.DecodeError:
                self.torn += 1  # a write cut short by kill -9; its records are re-sent
                continue
            self.seen[seq] += 1
            self.last = max(self.last, seq)


def test_every_line_arrives_once_through_20_renames_and_5_copytruncates(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    out = Output(tmp_path / "out.ndjson")
    shipper = ShipperProcess(
        [
            "--input",
            f"file://{logs}/*.log",
            "--output",
            f"file://{out.path}",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        tmp_path / "shipper.log",
    )
    blocks = TOTAL // BLOCK
    rename_at = {blocks * (i + 1) // (RENAMES + 1) for i in range(RENAMES)}
    truncate_at = {blocks * (i + 1) // (TRUNCATES + 1) + 3 for i in range(TRUNCATES)}
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            for b in range(blocks):
                os.write(fd, b"".join(b"%08d\n" % s for s in range(b * BLOCK, (b + 1) * BLOCK)))
                if b in rename_at:
                    # logrotate's "create" mode, with the app still writing to the old file
                    # for a moment, and the rotated file renamed a second time.
                    os.rename(log, logs / f"app.log.{b}.tmp")
                    os.rename(logs / f"app.log.{b}.tmp", logs / f"app.log.{b}.old")
                    time.sleep(0.01)
                    os.close(fd)
                    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                if b in truncate_at:
                    # copytruncate loses what was not read before the truncate in every
                    # shipper; like logrotate's delaycompress users we wait for delivery.
                    last = (b + 1) * BLOCK - 1

                    def caught_up(last: int = last) -> bool:
                        out.poll()
                        return out.last >= last

                    wait_for_sync(caught_up, timeout=30)
                    shutil.copy(log, logs / f"app.log.copy{b}")
                    os.truncate(log, 0)
                time.sleep(0.005)
            os.close(fd)
        except BaseException as exc:
            errors.append(exc)

    shipper.start()
    try:
        shipper.wait_ready()
        t = threading.Thread(target=writer)
        t.start()
        t.join(120)
        assert not errors, errors

        def all_arrived() -> bool:
            out.poll()
            return len(out.seen) == TOTAL

        wait_for_sync(all_arrived, timeout=60)
        time.sleep(1.5)  # anything sent twice would show up now
        out.poll()
        spec = f"file://{logs}/*.log"
        truncations = shipper.metric("sidekick_ship_truncations_total", input=spec)
        rotations = shipper.metric("sidekick_ship_rotations_total", input=spec)
        assert shipper.terminate() == 0
    finally:
        shipper.stop_quietly()
    assert set(out.seen) == set(range(TOTAL))
    assert [s for s, n in out.seen.items() if n > 1] == []
    assert out.torn == 0
    assert (truncations, rotations) == (TRUNCATES, RENAMES)
