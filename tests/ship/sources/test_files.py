"""The table of a tail input's files (``sources/_files.py``): where a file starts (its saved
offset, 0, or its end on the very first start), what its checkpoint entry holds, and a file
shorter than its saved offset; through the real shipper into a file output."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import msgspec
import pytest

from sidekick.ship.checkpoints import STATE_FILE
from tests.ship.helpers import shipping, wait_for
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
