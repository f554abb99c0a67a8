"""The state file: versioned, atomic, rate-limited, and refused when it cannot be trusted."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sidekick.core.errors import UserError
from sidekick.ship.checkpoints import PREV_SUFFIX, STATE_FILE, CheckpointStore
from sidekick.ship.sources._identity import fingerprint
from tests.conftest import SIDEKICK, tmpfs
from tests.ship.helpers import (
    ShipperProcess,
    read_ndjson,
    ship_config,
    shipping,
    wait_for,
    wait_for_sync,
)


def test_saved_entries_load_back(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.put("in/1:2", {"offset": 42, "fp": "ab", "fp_len": 2})
    store.save()
    again = CheckpointStore(tmp_path)
    again.load()
    assert again.get("in/1:2") == {"offset": 42, "fp": "ab", "fp_len": 2}
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


def test_corrupt_state_file_without_a_previous_copy_is_refused_with_the_fix(
    tmp_path: Path,
) -> None:
    (tmp_path / STATE_FILE).write_text('{"version": 1, "str')
    with pytest.raises(UserError, match="is corrupt and there is no previous copy; move it away"):
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


# -- a full disk: short writes never replace the state file ---------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: writes on it really come up short and then fail with ENOSPC."""
    with tmpfs(tmp_path / "small", "size=64k") as mnt:
        yield mnt


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until only about ``leave`` bytes are free."""
    filler = disk / "filler"
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler.write_bytes(b"x" * max(0, free - leave))
    return filler


def state_streams(path: Path) -> dict[str, Any]:
    streams: dict[str, Any] = msgspec.json.decode(path.read_bytes())["streams"]
    return streams


def tail_offsets(path: Path) -> dict[str, int]:
    """``{file path: saved offset}`` of the tailed files in the state file at ``path``
    (empty while there is none, or while it is the damaged one a test made)."""
    try:
        streams = state_streams(path)
    except (FileNotFoundError, msgspec.DecodeError):
        return {}
    return {
        e.get("path"): e.get("offset")
        for k, e in streams.items()
        if isinstance(e, dict) and not k.endswith("#started")
    }


def shipper(tmp_path: Path, state: Path, name: str = "ship.log") -> ShipperProcess:
    logs = tmp_path / "logs"
    args = ["--input", f"file://{logs}/*.log", "--output", f"file://{tmp_path / 'out.ndjson'}"]
    return ShipperProcess([*args, "--state-dir", str(state)], tmp_path / name)


def test_full_disk_keeps_the_old_state_file_and_the_shipper_running(
    tmp_path: Path, small_disk: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "first.log").write_text("one\n")
    state = small_disk / "state"
    out = tmp_path / "out.ndjson"
    sh = shipper(tmp_path, state).start()
    try:
        sh.wait_ready()
        wait_for_sync(
            lambda: (
                (state / STATE_FILE).exists()
                and tail_offsets(state / STATE_FILE) == {str(logs / "first.log"): 4}
            )
        )
        good = (state / STATE_FILE).read_bytes()
        filler = fill(small_disk, leave=8192)
        # 150 more files make the state about 40 KB: more than the disk has left.
        for i in range(150):
            (logs / f"more-{i:03d}.log").write_text(f"line {i}\n")
        wait_for_sync(lambda: len(read_ndjson(out)) == 151, timeout=30)
        wait_for_sync(lambda: sh.metric("sidekick_ship_checkpoint_write_errors_total") >= 3)
        assert (state / STATE_FILE).read_bytes() == good
        assert not (state / (STATE_FILE + ".tmp")).exists()
        assert sh.proc is not None and sh.proc.poll() is None
        assert sh.log().count("Cannot write state file") == 1
        assert "No space left on device" in sh.log()
        sh.kill()  # a crash while the disk is full: the old state is still whole

        sh = shipper(tmp_path, state, "ship2.log").start()
        sh.wait_ready()
        wait_for_sync(lambda: sh.metric("sidekick_ship_checkpoint_write_errors_total") >= 1)
        filler.unlink()  # space again: the next retry writes every file's position
        wait_for_sync(lambda: len(tail_offsets(state / STATE_FILE)) == 151, timeout=20)
        assert "written again after" in sh.log()
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    assert "Traceback" not in (tmp_path / "ship.log").read_text()
    assert "Traceback" not in (tmp_path / "ship2.log").read_text()
    # Nothing lost: the lines of the first run are read again at most, never skipped.
    messages = [r["message"] for r in read_ndjson(out)]
    assert set(messages) == {"one"} | {f"line {i}" for i in range(150)}


def test_a_state_file_the_shutdown_cannot_write_is_said_after_the_drain(
    tmp_path: Path, small_disk: Path
) -> None:
    # The failures while running are logged once a minute; the shutdown's write is the last
    # one and has no retry, so its failure is logged whatever the rate limit said before.
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "first.log").write_text("one\n")
    state = small_disk / "state"
    sh = shipper(tmp_path, state).start()
    try:
        sh.wait_ready()
        wait_for_sync(lambda: tail_offsets(state / STATE_FILE) == {str(logs / "first.log"): 4})
        fill(small_disk, leave=8192)
        for i in range(150):
            (logs / f"more-{i:03d}.log").write_text(f"line {i}\n")
        wait_for_sync(lambda: len(read_ndjson(tmp_path / "out.ndjson")) == 151, timeout=30)
        wait_for_sync(lambda: sh.metric("sidekick_ship_checkpoint_write_errors_total") >= 1)
        assert sh.terminate() == 0  # everything was delivered
    finally:
        sh.stop_quietly()
    text = (tmp_path / "ship.log").read_text()
    after = text.split("saving the checkpoint", 1)[1]
    assert "Cannot write state file" in after and "at shutdown (No space left on device)" in after
    assert "sends the lines delivered since it was written again" in after
    assert "Traceback" not in text
    assert tail_offsets(state / STATE_FILE) == {str(logs / "first.log"): 4}


def test_failed_write_leaves_no_temporary_file_and_is_retried(
    tmp_path: Path, small_disk: Path
) -> None:
    store = CheckpointStore(small_disk)
    store.put("in/1:2", {"offset": 1, "fp": "ab", "fp_len": 2})
    store.save()
    filler = fill(small_disk, leave=4096)
    for i in range(200):
        store.put(f"in/1:{i + 3}", {"offset": i, "fp": "x" * 64, "fp_len": 64, "path": "p" * 64})
    store.save_if_dirty()
    assert store.write_errors == 1 and store.dirty
    assert not (small_disk / (STATE_FILE + ".tmp")).exists()
    assert list(state_streams(small_disk / STATE_FILE)) == ["in/1:2"]
    filler.unlink()
    store.save_if_dirty()
    assert len(state_streams(small_disk / STATE_FILE)) == 201
    # The file replaced by that write became the previous copy.
    assert list(state_streams(small_disk / (STATE_FILE + PREV_SUFFIX))) == ["in/1:2"]


# -- a damaged state file: the previous copy takes over ------------------------------------


def test_damaged_state_file_falls_back_to_the_previous_copy(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    state = tmp_path / "state"
    out = tmp_path / "out.ndjson"
    first = b"".join(b"first %03d\n" % i for i in range(100))
    second = b"".join(b"second %03d\n" % i for i in range(50))
    log.write_bytes(first)
    sh = shipper(tmp_path, state).start()
    try:
        sh.wait_ready()
        wait_for_sync(lambda: tail_offsets(state / STATE_FILE) == {str(log): len(first)})
        assert sh.terminate() == 0

        sh = shipper(tmp_path, state, "ship2.log").start()
        sh.wait_ready()
        with log.open("ab") as f:
            f.write(second)  # one write: one batch, one checkpoint move
        size = len(first) + len(second)
        wait_for_sync(lambda: tail_offsets(state / STATE_FILE) == {str(log): size})
        sh.kill()
        prev = tail_offsets(state / (STATE_FILE + PREV_SUFFIX))[str(log)]
        assert prev == len(first)
        shipped = len(read_ndjson(out))
        assert shipped == 150

        damaged = (state / STATE_FILE).read_bytes()
        (state / STATE_FILE).write_bytes(damaged[: len(damaged) // 2])
        sh = shipper(tmp_path, state, "ship3.log").start()
        sh.wait_ready()
        assert sh.metric("sidekick_ship_state_fallbacks_total") == 1
        wait_for_sync(lambda: len(read_ndjson(out)) == shipped + 50)
        wait_for_sync(lambda: tail_offsets(state / STATE_FILE) == {str(log): size})
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    warning = [line for line in sh.log().splitlines() if "previous copy" in line]
    assert len(warning) == 1
    assert "WARNING" in warning[0]
    assert str(state / STATE_FILE) in warning[0]
    assert str(state / (STATE_FILE + PREV_SUFFIX)) in warning[0]
    # Only what came after the previous good checkpoint is sent again.
    again = [r["message"] for r in read_ndjson(out)[shipped:]]
    assert again == [f"second {i:03d}" for i in range(50)]
    # The damaged file never became the previous copy (later good ones may have).
    assert tail_offsets(state / (STATE_FILE + PREV_SUFFIX)) in ({str(log): n} for n in (1000, size))


def run_ship_expecting_exit(tmp_path: Path, state: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return subprocess.run(
        [
            *SIDEKICK,
            "ship",
            "--input",
            f"file://{tmp_path}/logs/*.log",
            "--output",
            "stdout:",
            "--state-dir",
            str(state),
            "--admin-addr",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_damaged_state_file_and_previous_copy_stop_the_start_with_the_fix(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_FILE).write_text('{"version": 1, "str')
    (state / (STATE_FILE + PREV_SUFFIX)).write_text('{"version": 1, "streams": [1]}')
    done = run_ship_expecting_exit(tmp_path, state)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if STATE_FILE in x]
    assert str(state / STATE_FILE) in line and str(state / (STATE_FILE + PREV_SUFFIX)) in line
    assert "move both away to start over" in line


def test_previous_copy_of_an_earlier_state_is_not_used_after_a_fresh_start(
    tmp_path: Path,
) -> None:
    (tmp_path / (STATE_FILE + PREV_SUFFIX)).write_text('{"version": 1, "streams": {}}')
    store = CheckpointStore(tmp_path)
    store.load()  # no current file: the user moved it away to start over
    assert not (tmp_path / (STATE_FILE + PREV_SUFFIX)).exists()


# -- damaged entries: dropped with a warning, the file read again from its start ------------


BAD_ENTRIES: dict[str, Any] = {
    "nothing wrong": {},  # the control: the saved offset is used
    "offset is a string": {"offset": "abc"},
    "fp_len is null": {"fp_len": None},
    "offset is negative": {"offset": -5},
    "fp_len is huge": {"fp_len": 10**12},
    "fp is missing": {"fp": ...},
    "entry is a string": "abc",
    "entry is a list": [1, 2],
}


@pytest.mark.parametrize("damage", list(BAD_ENTRIES))
def test_damaged_entry_is_dropped_and_its_file_shipped_from_the_start(
    tmp_path: Path, damage: str
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text("alpha\nbeta\n")
    st = log.stat()
    entry: Any = {
        "path": str(log),
        "dev": st.st_dev,
        "ino": st.st_ino,
        "fp": fingerprint(b"alpha\nbeta\n"),
        "fp_len": 11,
        "id": "x",
        "gen": 0,
        "offset": 6,
    }
    bad = BAD_ENTRIES[damage]
    if isinstance(bad, dict):
        entry.update({k: v for k, v in bad.items() if v is not ...})
        for k in [k for k, v in bad.items() if v is ...]:
            del entry[k]
    else:
        entry = bad
    url = f"file://{logs}/*.log"
    state = tmp_path / "state"
    state.mkdir()
    streams = {f"{url}#started": {"version": 1}, f"{url}/{st.st_dev}:{st.st_ino}": entry}
    (state / STATE_FILE).write_bytes(msgspec.json.encode({"version": 1, "streams": streams}))
    sh = shipper(tmp_path, state).start()
    try:
        sh.wait_ready()
        wait_for_sync(lambda: tail_offsets(state / STATE_FILE) == {str(log): 11})
        dropped = sh.metric("sidekick_ship_state_entries_dropped_total")
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    text = (tmp_path / "ship.log").read_text()
    assert "Traceback" not in text
    messages = [r["message"] for r in read_ndjson(tmp_path / "out.ndjson")]
    if damage == "nothing wrong":
        assert (messages, dropped) == (["beta"], 0)
    else:
        assert (messages, dropped) == (["alpha", "beta"], 1)
        assert text.count("Dropped 1 damaged entry") == 1
    assert tail_offsets(state / STATE_FILE) == {str(log): 11}


def test_a_state_directory_without_free_inodes_stops_the_start_with_one_sentence(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "few-inodes", "size=1m,nr_inodes=8") as mnt:
        state = mnt / "state"
        state.mkdir()
        n = 0
        with pytest.raises(OSError):  # every inode taken
            while True:
                (mnt / f"f{n}").touch()
                n += 1
        done = run_ship_expecting_exit(tmp_path, state)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if "ship.lock" in x]
    assert str(state) in line and "No space left on device" in line
    assert "writable state directory with free space" in line
