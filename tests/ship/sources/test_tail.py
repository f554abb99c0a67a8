"""The tail source, run in-process through the real pipeline into a real file output."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import msgspec

from sidekick.ship.checkpoints import STATE_FILE
from tests.ship.helpers import read_ndjson, ship_config, shipping, wait_for


def cfg_for(tmp_path: Path, **extra: Any) -> Any:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return ship_config(
        inputs=[f"file://{tmp_path}/logs/*.log"],
        outputs=[f"file://{tmp_path}/out.ndjson"],
        state_dir=str(tmp_path / "state"),
        **extra,
    )


def out(tmp_path: Path) -> list[dict[str, Any]]:
    return read_ndjson(tmp_path / "out.ndjson")


def messages(tmp_path: Path) -> list[str]:
    return [r["message"] for r in out(tmp_path)]


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


async def test_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "a.log"
    cfg = cfg_for(tmp_path)
    log.write_bytes(b"one\ntw")
    async with shipping(cfg):
        await wait_for(lambda: messages(tmp_path) == ["one"])
        await asyncio.sleep(0.3)
        assert messages(tmp_path) == ["one"]
        with log.open("ab") as f:
            f.write(b"o\n")
        await wait_for(lambda: messages(tmp_path) == ["one", "two"])


async def test_new_file_is_picked_up_within_one_second(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    async with shipping(cfg):
        await asyncio.sleep(0.2)
        (tmp_path / "logs" / "late.log").write_bytes(b"hello\n")
        start = time.monotonic()
        await wait_for(lambda: messages(tmp_path) == ["hello"], timeout=5)
        assert time.monotonic() - start < 1.0


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


async def test_long_line_is_split_into_marked_pieces(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, max_line_bytes=100, read_bytes=64)
    line = "x" * 250
    (tmp_path / "logs" / "a.log").write_text(f"short\n{line}\nafter\n")
    async with shipping(cfg) as sh:
        await wait_for(lambda: messages(tmp_path)[-1:] == ["after"])
        assert sh.metric("sidekick_ship_lines_split_total", input=cfg.inputs[0]) == 1
    records = out(tmp_path)
    pieces = [r for r in records if "log.flags" in r]
    assert "".join(r["message"] for r in pieces) == line
    assert all(len(r["message"]) <= 100 for r in pieces)
    assert [r["log.flags"] for r in pieces][-1] == ["partial", "partial_end"]
    assert all(r["log.flags"] == ["partial"] for r in pieces[:-1])
    assert [r["log.offset"] for r in pieces] == [6, 106, 206]
    assert records[0]["message"] == "short" and records[-1]["message"] == "after"


async def test_split_never_cuts_a_utf8_character(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, max_line_bytes=16)
    line = "é" * 20  # 40 bytes; a cut at an odd byte would split a character
    (tmp_path / "logs" / "a.log").write_text(line + "\n")
    async with shipping(cfg):
        await wait_for(lambda: "".join(messages(tmp_path)) == line)
    assert all("\ufffd" not in m for m in messages(tmp_path))


async def test_invalid_utf8_is_replaced_and_nul_passes_through(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    (tmp_path / "logs" / "a.log").write_bytes(b"bad \xff\xfe byte\nnul \x00 here\n")
    async with shipping(cfg):
        await wait_for(lambda: len(messages(tmp_path)) == 2)
    assert messages(tmp_path) == ["bad \ufffd\ufffd byte", "nul \x00 here"]
    assert b"\\u0000" in (tmp_path / "out.ndjson").read_bytes()


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


async def test_same_inode_with_new_content_is_read_from_the_start(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    log = tmp_path / "logs" / "a.log"
    log.write_bytes(b"old content\n")
    async with shipping(cfg):
        await wait_for(lambda: messages(tmp_path) == ["old content"])
    ino = os.stat(log).st_ino
    # Rewrite in place (same device and inode) with different, longer content: only the
    # fingerprint can tell that this is not the file whose offset was saved.
    with log.open("r+b") as f:
        f.write(b"NEW first line\nNEW second\n")
    assert os.stat(log).st_ino == ino
    async with shipping(cfg):
        await wait_for(lambda: len(messages(tmp_path)) == 3)
    assert messages(tmp_path)[1:] == ["NEW first line", "NEW second"]


async def test_new_file_at_an_old_path_is_read_from_the_start(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, rotate_wait=0.2)
    log = tmp_path / "logs" / "a.log"
    log.write_bytes(b"first file\n")
    async with shipping(cfg):
        await wait_for(lambda: messages(tmp_path) == ["first file"])
        log.unlink()
        log.write_bytes(b"second file, longer than the first\n")
        await wait_for(lambda: len(messages(tmp_path)) == 2)
    records = out(tmp_path)
    assert records[1]["message"] == "second file, longer than the first"
    assert records[1]["log.offset"] == 0
    assert records[0]["log.file.id"] != records[1]["log.file.id"]


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


async def test_file_id_is_stable_across_restarts(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    log = tmp_path / "logs" / "a.log"
    log.write_bytes(b"x\n")
    async with shipping(cfg):
        await wait_for(lambda: len(messages(tmp_path)) == 1)
    with log.open("ab") as f:
        f.write(b"y\n")
    async with shipping(cfg):
        await wait_for(lambda: len(messages(tmp_path)) == 2)
    a, b = out(tmp_path)
    assert a["log.file.id"] == b["log.file.id"]


async def test_checkpoint_file_is_versioned_and_holds_the_delivered_offset(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    (tmp_path / "logs" / "a.log").write_bytes(b"abc\ndef\n")
    async with shipping(cfg):
        await wait_for(lambda: len(messages(tmp_path)) == 2)
    state = msgspec.json.decode((tmp_path / "state" / STATE_FILE).read_bytes())
    assert state["version"] == 1
    (entry,) = [e for k, e in state["streams"].items() if not k.endswith("#started")]
    assert entry["offset"] == 8 and entry["path"] == str(tmp_path / "logs" / "a.log")


async def test_multiline_groups_are_joined_into_one_record(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, multiline_start=r"^\d{4}-", multiline_timeout=0.2)
    text = (
        "2024-01-02 ERROR boom\n"
        "Traceback (most recent call last):\n"
        '  File "app.py", line 1\n'
        "ValueError: x\n"
        "2024-01-02 INFO next\n"
    )
    (tmp_path / "logs" / "a.log").write_text(text)
    async with shipping(cfg):
        await wait_for(lambda: len(messages(tmp_path)) == 2)
    first, second = out(tmp_path)
    assert first["message"].splitlines()[-1] == "ValueError: x"
    assert first["log.offset"] == 0
    assert second["message"] == "2024-01-02 INFO next"


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


async def test_polling_without_inotify_picks_up_new_files_and_growth(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, inotify=False)
    async with shipping(cfg):
        await asyncio.sleep(0.2)
        log = tmp_path / "logs" / "polled.log"
        log.write_bytes(b"first\n")
        start = time.monotonic()
        await wait_for(lambda: messages(tmp_path) == ["first"], timeout=5)
        assert time.monotonic() - start < 1.0
        with log.open("ab") as f:
            f.write(b"second\n")
        await wait_for(lambda: messages(tmp_path) == ["first", "second"], timeout=5)


async def test_a_long_line_pending_at_shutdown_is_shipped_and_its_rest_follows(
    tmp_path: Path,
) -> None:
    # The drain ships what only memory holds: in a Pod that stops, the file goes away with its
    # volume. If it does not, the rest of the line arrives after the restart as its own record.
    cfg = cfg_for(tmp_path, max_line_bytes=100, read_bytes=64)
    log = tmp_path / "logs" / "a.log"
    log.write_bytes(b"y" * 250)  # no newline yet: two pieces go out, 50 bytes wait
    async with shipping(cfg):
        await wait_for(lambda: len(messages(tmp_path)) == 2)
    assert len(messages(tmp_path)) == 3
    with log.open("ab") as f:
        f.write(b"z\n")
    async with shipping(cfg):
        await wait_for(lambda: len(messages(tmp_path)) == 4)
    records = out(tmp_path)
    assert [r["message"] for r in records] == ["y" * 100, "y" * 100, "y" * 50, "z"]
    assert [r.get("log.flags") for r in records] == [
        ["partial"],
        ["partial"],
        ["partial"],
        ["partial", "partial_end"],
    ]
