"""The table of a tail input's files (``sources/_files.py``): where a file starts (its saved
offset, 0, or its end on the very first start), what its checkpoint entry holds, and a file
shorter than its saved offset; through the real shipper into a file output."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

import msgspec
import pytest

from sidekick.ship.checkpoints import STATE_FILE
from tests.ship.helpers import ShipperProcess, read_ndjson, shipping, wait_for, wait_for_sync
from tests.ship.sources.tailing import cfg_for, messages, out


async def test_start_at_end_skips_existing_content_on_first_start(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, start_at="end")
    log = tmp_path / "logs" / "a.log"
    log.write_bytes(b"old 1\nold 2\n")
    async with shipping(cfg) as sh:
        await wait_for(lambda: sh.metric("sidekick_ship_files_watched", input=cfg.inputs[0]) == 1)
        with log.open("ab") as f:
            f.write(b"new\n")
        await wait_for(lambda: messages(tmp_path) == ["new"])
        (tmp_path / "logs" / "b.log").write_bytes(b"b from start\n")
        await wait_for(lambda: messages(tmp_path) == ["new", "b from start"])


async def test_start_at_end_applies_only_to_the_very_first_start(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, start_at="end")
    async with shipping(cfg):
        await asyncio.sleep(0.3)  # no files yet
    (tmp_path / "logs" / "a.log").write_bytes(b"written while stopped\n")
    async with shipping(cfg):
        await wait_for(lambda: messages(tmp_path) == ["written while stopped"])


async def test_restart_resumes_at_the_checkpoint(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    log = tmp_path / "logs" / "a.log"
    log.write_bytes(b"1\n2\n")
    async with shipping(cfg):
        await wait_for(lambda: messages(tmp_path) == ["1", "2"])
    with log.open("ab") as f:
        f.write(b"3\n")
    async with shipping(cfg):
        await wait_for(lambda: messages(tmp_path) == ["1", "2", "3"])


async def test_checkpoint_file_is_versioned_and_holds_the_delivered_offset(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    (tmp_path / "logs" / "a.log").write_bytes(b"abc\ndef\n")
    async with shipping(cfg):
        await wait_for(lambda: len(messages(tmp_path)) == 2)
    state = msgspec.json.decode((tmp_path / "state" / STATE_FILE).read_bytes())
    assert state["version"] == 1
    (entry,) = [e for k, e in state["streams"].items() if not k.endswith("#started")]
    assert entry["offset"] == 8 and entry["path"] == str(tmp_path / "logs" / "a.log")


async def test_file_shorter_than_its_saved_offset_is_read_again_from_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sidekick.ship.tail")
    cfg = cfg_for(tmp_path)
    log = tmp_path / "logs" / "a.log"
    lines = [f"line {i:04d} " + "x" * 40 for i in range(40)]  # past the fingerprint's 1 KiB
    log.write_text("".join(m + "\n" for m in lines))
    async with shipping(cfg):
        await wait_for(lambda: messages(tmp_path) == lines)
    # Cut while stopped: the first bytes (the fingerprint) are the same, the size is below
    # the saved offset. The file is read again from 0 as a new generation.
    with log.open("r+b") as f:
        f.truncate((len(lines[0]) + 1) * 30)
    async with shipping(cfg) as sh:
        await wait_for(lambda: len(messages(tmp_path)) == len(lines) + 30)
        assert sh.metric("sidekick_ship_truncations_total", input=cfg.inputs[0]) == 1
    again = out(tmp_path)[len(lines) :]
    assert [r["message"] for r in again] == lines[:30]
    assert again[0]["log.offset"] == 0
    assert again[0]["log.file.id"] != out(tmp_path)[0]["log.file.id"]
    # Found when the file is opened, before anything of it is read.
    assert f"{log} is shorter than its saved offset; reading it again from 0." in caplog.messages


def test_start_at_end_positions_survive_a_kill_9_before_anything_was_delivered(
    tmp_path: Path,
) -> None:
    # The first start's end positions must be on disk before the shipper can crash: with the
    # output down nothing is delivered, and a restart without them was a "first start" again,
    # which skipped every line written since the real one.
    logs = tmp_path / "logs"
    logs.mkdir()
    outdir = tmp_path / "out"
    outdir.mkdir()
    log = logs / "app.log"
    log.write_text("before the first start\n")
    args = [
        "--input", f"file://{logs}/*.log", "--output", f"file://{outdir}/out.ndjson",
        "--state-dir", str(tmp_path / "state"), "--start-at", "end",
    ]  # fmt: skip
    sh = ShipperProcess(args, tmp_path / "ship.log").start()
    try:
        sh.wait_ready()
        wait_for_sync(lambda: sh.metric("sidekick_ship_files_watched", input=args[1]) == 1)
        shutil.rmtree(outdir)  # the output is down: nothing is delivered
        with log.open("a") as f:
            f.write("".join(f"after {i}\n" for i in range(1000)))
        wait_for_sync(lambda: sh.metric("sidekick_ship_lines_read_total", input=args[1]) == 1000)
        time.sleep(0.5)
        sh.kill()
        outdir.mkdir()
        sh = ShipperProcess(args, tmp_path / "ship.log").start()
        sh.wait_ready()
        wait_for_sync(lambda: len(read_ndjson(outdir / "out.ndjson")) >= 1000, timeout=20)
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    got = [r["message"] for r in read_ndjson(outdir / "out.ndjson")]
    assert got == [f"after {i}" for i in range(1000)]
