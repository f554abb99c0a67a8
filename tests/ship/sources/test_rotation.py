"""Rotation and truncation (``sources/_rotation.py``): renamed files read to their end and
released, files rotated while the shipper was stopped finished, gone ones forgotten, and
copytruncate; through the real shipper into a file output."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import msgspec

from sidekick.ship.checkpoints import STATE_FILE
from tests.ship.helpers import read_ndjson, ship_config, shipping, wait_for
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


def take_inode(directory: Path, ino: int, name: str) -> bool:
    """Create files in ``directory`` until one gets inode ``ino`` (just freed; ext4 and xfs
    hand it out again), rename it to ``name``; False if none did."""
    tried: list[Path] = []
    try:
        for i in range(200):
            probe = directory / f"probe-{i}.tmp"
            probe.touch()
            if probe.stat().st_ino == ino:
                probe.rename(directory / name)
                return True
            tried.append(probe)
        return False
    finally:
        for p in tried:
            p.unlink()


async def test_a_released_file_whose_inode_a_new_file_takes_leaves_its_position_alone(
    tmp_path: Path,
) -> None:
    # A deleted file is read to its end and released (its descriptor closed) while an output
    # is down, so its position waits for its last batches. A new file that gets the freed
    # inode has the same checkpoint key: the old file's late acknowledgements must not write
    # its offset into the new file's entry, nor drop that entry once they are done.
    outdir = tmp_path / "out"
    outdir.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = ship_config(
        inputs=[f"file://{logs}/*.log"],
        outputs=[f"file://{outdir}/out.ndjson"],
        state_dir=str(tmp_path / "state"),
        rotate_wait=0.2,
        retry={"initial": "50ms", "max": "100ms"},
    )
    old = logs / "a.log"
    old.write_bytes(b"".join(b"old %04d\n" % i for i in range(1000)))
    new_lines = [f"new {i:04d}" for i in range(3000)]  # longer than the old file
    async with shipping(cfg) as sh:
        await wait_for(lambda: len(read_ndjson(outdir / "out.ndjson")) == 1000)
        shutil.rmtree(outdir)  # the output fails from now on
        output = f"file://{outdir}/out.ndjson"
        while sh.metric("sidekick_ship_records_failed_total", output=output) == 0:
            with old.open("ab") as f:
                f.write(b"old more\n")
            await asyncio.sleep(0.05)
        ino = old.stat().st_ino
        old.unlink()
        watched = "sidekick_ship_files_watched"
        await wait_for(lambda: sh.metric(watched, input=cfg.inputs[0]) == 0)  # released
        assert take_inode(logs, ino, "b.log"), "the file system did not reuse the inode"
        (logs / "b.log").write_text("".join(m + "\n" for m in new_lines))
        await wait_for(lambda: sh.metric(watched, input=cfg.inputs[0]) == 1)
        outdir.mkdir()  # the old file's last batches are delivered, then the new file's
        await wait_for(
            lambda: (
                [r["message"] for r in read_ndjson(outdir / "out.ndjson")][-1:] == new_lines[-1:]
            ),
            timeout=20,
        )
        await asyncio.sleep(1.5)  # its position is saved (checkpoint_interval)
    size = (logs / "b.log").stat().st_size
    assert saved_offsets(tmp_path) == {str(logs / "b.log"): size}
    async with shipping(cfg):  # nothing of the new file is read again
        await asyncio.sleep(1.5)
    got = [r["message"] for r in read_ndjson(outdir / "out.ndjson")]
    assert [m for m in got if m.startswith("new")] == new_lines


def saved_offsets(tmp_path: Path) -> dict[str, int]:
    state = msgspec.json.decode((tmp_path / "state" / STATE_FILE).read_bytes())
    return {e["path"]: e["offset"] for k, e in state["streams"].items() if "#" not in k}
