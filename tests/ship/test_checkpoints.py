"""The state file: versioned, atomic, rate-limited, and refused when it cannot be trusted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from sidekick.core.errors import UserError
from sidekick.ship.checkpoints import STATE_FILE, CheckpointStore
from tests.ship.helpers import ship_config, shipping, wait_for


def test_saved_entries_load_back(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.put("in/1:2", {"offset": 42})
    store.save()
    again = CheckpointStore(tmp_path)
    again.load()
    assert again.get("in/1:2") == {"offset": 42}
    assert not (tmp_path / (STATE_FILE + ".tmp")).exists()


def test_older_snapshot_never_replaces_a_newer_one(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.put("k", {"offset": 1})
    old = store._snapshot()
    store.update("k", {"offset": 2})
    new = store._snapshot()
    store._write(*new)
    store._write(*old)  # a slow earlier write finishing late
    assert msgspec.json.decode((tmp_path / STATE_FILE).read_bytes())["streams"]["k"] == {
        "offset": 2
    }


def test_state_file_of_another_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text('{"version": 99, "streams": {}}')
    with pytest.raises(UserError, match="version 99"):
        CheckpointStore(tmp_path).load()


def test_corrupt_state_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text('{"version": 1, "str')
    with pytest.raises(UserError, match="corrupt; move it away"):
        CheckpointStore(tmp_path).load()


def test_second_shipper_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    first = CheckpointStore(tmp_path)
    first.lock()
    try:
        with pytest.raises(UserError, match="in use by another"):
            CheckpointStore(tmp_path).lock()
    finally:
        first.unlock()


async def test_state_file_is_written_at_most_once_a_second_under_load(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "a.log"
    log.write_text("")
    cfg = ship_config(
        inputs=[f"file://{tmp_path}/logs/*.log"],
        outputs=[f"file://{tmp_path}/out.ndjson"],
        state_dir=str(tmp_path / "state"),
    )
    async with shipping(cfg) as sh:
        with log.open("a") as f:
            for i in range(300):  # 3 s of steady writing
                f.write(f"line {i}\n")
                f.flush()
                await asyncio.sleep(0.01)
        await asyncio.sleep(1.1)  # the write counter is sampled once a second
        await wait_for(lambda: sh.metric("sidekick_ship_checkpoint_writes_total") > 0)
        writes = sh.metric("sidekick_ship_checkpoint_writes_total")
    assert 2 <= writes <= 6
