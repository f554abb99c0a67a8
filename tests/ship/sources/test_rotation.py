"""Rotation and truncation (``sources/_rotation.py``): renamed files read to their end and
released, files rotated while the shipper was stopped finished, gone ones forgotten, and
copytruncate; through the real shipper into a file output."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec

from sidekick.ship.checkpoints import STATE_FILE
from tests.ship.helpers import shipping, wait_for
from tests.ship.sources.tailing import cfg_for, messages, out


def saved_paths(tmp_path: Path) -> list[str]:
    """The paths of the files the state file holds a position for."""
    state = msgspec.json.decode((tmp_path / "state" / STATE_FILE).read_bytes())
    return sorted(e["path"] for k, e in state["streams"].items() if not k.endswith("#started"))


async def test_renamed_file_is_read_to_its_end_before_release(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, rotate_wait=0.3)
    log = tmp_path / "logs" / "a.log"
    with log.open("ab", buffering=0) as f:
        f.write(b"before\n")
        async with shipping(cfg) as sh:
            await wait_for(lambda: messages(tmp_path) == ["before"])
            os.rename(log, tmp_path / "logs" / "a.log.1")
            os.rename(tmp_path / "logs" / "a.log.1", tmp_path / "logs" / "a.log.2")
            f.write(b"after two renames\n")
            await wait_for(lambda: messages(tmp_path) == ["before", "after two renames"])
            await wait_for(
                lambda: sh.metric("sidekick_ship_files_watched", input=cfg.inputs[0]) == 0
            )
            assert sh.metric("sidekick_ship_rotations_total", input=cfg.inputs[0]) == 1


async def test_file_rotated_while_stopped_is_finished_from_its_checkpoint(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, rotate_wait=0.2)
    log = tmp_path / "logs" / "a.log"
    log.write_bytes(b"shipped\n")
    async with shipping(cfg):
        await wait_for(lambda: messages(tmp_path) == ["shipped"])
    with log.open("ab") as f:
        f.write(b"written while stopped\n")
    os.rename(log, tmp_path / "logs" / "a.log.1")
    log.write_bytes(b"new file\n")
    async with shipping(cfg):
        await wait_for(lambda: len(messages(tmp_path)) == 3)
    assert sorted(messages(tmp_path)[1:]) == ["new file", "written while stopped"]


async def test_copytruncate_restarts_at_zero_with_a_new_file_id(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    log = tmp_path / "logs" / "a.log"
    log.write_bytes(b"a long first generation line\n")
    async with shipping(cfg) as sh:
        await wait_for(lambda: len(messages(tmp_path)) == 1)
        with log.open("r+b") as f:
            f.truncate(0)
        await asyncio.sleep(0.05)
        with log.open("ab") as f:
            f.write(b"gen 2\n")
        await wait_for(lambda: len(messages(tmp_path)) == 2)
        assert sh.metric("sidekick_ship_truncations_total", input=cfg.inputs[0]) == 1
    first, second = out(tmp_path)
    assert second["message"] == "gen 2" and second["log.offset"] == 0
    assert first["log.file.id"] != second["log.file.id"]


async def test_copytruncate_that_grows_back_past_the_offset_loses_no_line(
    tmp_path: Path,
) -> None:
    # Without inotify the reader looks every 100 ms; the file is truncated and refilled well
    # past the old offset between two looks, so the size never appears below the offset.
    cfg = cfg_for(tmp_path, inotify=False)
    log = tmp_path / "logs" / "a.log"
    old = [f"old {i:03d}" for i in range(20)]
    new = [f"new generation line {i:03d}" for i in range(100)]
    log.write_text("".join(m + "\n" for m in old))
    async with shipping(cfg) as sh:
        await wait_for(lambda: messages(tmp_path) == old)
        with log.open("r+b") as f:
            f.truncate(0)
            f.write("".join(m + "\n" for m in new).encode())
        await wait_for(lambda: set(new) <= set(messages(tmp_path)), timeout=5)
        assert sh.metric("sidekick_ship_truncations_total", input=cfg.inputs[0]) == 1
    records = out(tmp_path)
    regenerated = [r for r in records if r["log.file.id"] != records[0]["log.file.id"]]
    assert [r["message"] for r in regenerated] == new
    assert regenerated[0]["log.offset"] == 0


async def test_released_file_ships_its_unended_last_line_and_its_position_goes(
    tmp_path: Path,
) -> None:
    cfg = cfg_for(tmp_path, rotate_wait=0.2)
    log = tmp_path / "logs" / "a.log"
    log.write_bytes(b"whole\nno newline yet")
    async with shipping(cfg) as sh:
        await wait_for(lambda: messages(tmp_path) == ["whole"])
        os.rename(log, tmp_path / "a.log.1")  # out of the glob: rotated
        await wait_for(lambda: messages(tmp_path) == ["whole", "no newline yet"])
        await wait_for(lambda: sh.metric("sidekick_ship_files_watched", input=cfg.inputs[0]) == 0)
        (tmp_path / "logs" / "b.log").write_bytes(b"b\n")  # a later save shows a.log gone
        await wait_for(lambda: saved_paths(tmp_path) == [str(tmp_path / "logs" / "b.log")])
    assert "log.flags" not in out(tmp_path)[1]


async def test_a_saved_file_gone_while_stopped_is_forgotten(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    log = tmp_path / "logs" / "a.log"
    log.write_bytes(b"shipped\n")
    async with shipping(cfg):
        await wait_for(lambda: messages(tmp_path) == ["shipped"])
    assert saved_paths(tmp_path) == [str(log)]
    log.unlink()
    (tmp_path / "logs" / "b.log").write_bytes(b"b\n")
    async with shipping(cfg):
        await wait_for(lambda: messages(tmp_path) == ["shipped", "b"])
        await wait_for(lambda: saved_paths(tmp_path) == [str(tmp_path / "logs" / "b.log")])
