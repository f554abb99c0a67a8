"""The tail source, run in-process through the real pipeline into a real file output: records
and their fields, start positions, restarts, rotation and checkpoints. Identity, reading and
discovery have test files of their own (test_identity, test_reader, test_discover)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec

from sidekick.ship.checkpoints import STATE_FILE
from tests.ship.helpers import shipping, wait_for
from tests.ship.sources.tailing import cfg_for, messages, out


async def test_records_carry_message_path_offset_host_and_fields(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, fields={"env": "test"}, pod_name="web-0", pod_namespace="shop")
    log = tmp_path / "logs" / "a.log"
    log.write_bytes(b"first\nsecond line\n")
    async with shipping(cfg):
        await wait_for(lambda: len(out(tmp_path)) == 2)
    first, second = out(tmp_path)
    assert first["message"] == "first" and second["message"] == "second line"
    assert (first["log.offset"], second["log.offset"]) == (0, 6)
    assert first["log.file.path"] == str(log)
    assert first["host.name"] == "testhost" and first["env"] == "test"
    assert first["k8s.pod.name"] == "web-0" and first["k8s.namespace.name"] == "shop"
    assert first["@timestamp"].endswith("Z") and len(first["@timestamp"]) == 30
    assert first["log.file.id"] == second["log.file.id"]


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


async def test_checkpoint_file_is_versioned_and_holds_the_delivered_offset(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    (tmp_path / "logs" / "a.log").write_bytes(b"abc\ndef\n")
    async with shipping(cfg):
        await wait_for(lambda: len(messages(tmp_path)) == 2)
    state = msgspec.json.decode((tmp_path / "state" / STATE_FILE).read_bytes())
    assert state["version"] == 1
    (entry,) = [e for k, e in state["streams"].items() if not k.endswith("#started")]
    assert entry["offset"] == 8 and entry["path"] == str(tmp_path / "logs" / "a.log")


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


async def test_start_at_end_applies_only_to_the_very_first_start(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, start_at="end")
    async with shipping(cfg):
        await asyncio.sleep(0.3)  # no files yet
    (tmp_path / "logs" / "a.log").write_bytes(b"written while stopped\n")
    async with shipping(cfg):
        await wait_for(lambda: messages(tmp_path) == ["written while stopped"])
