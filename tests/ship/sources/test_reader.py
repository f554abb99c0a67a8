"""Per-file reading (``sources/_reader.py``): chunks to lines to records, the partial last line,
long lines in pieces, UTF-8, joiners; as units and through the real shipper."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sidekick.ship.sources._reader import (
    column_builder,
    last_line_end,
    record_builder,
    utf8_cut,
)
from tests.ship.helpers import shipping, wait_for
from tests.ship.sources.tailing import cfg_for, messages, out


def test_utf8_cut_never_splits_a_character() -> None:
    data = "é".encode() * 10  # two bytes each
    assert utf8_cut(data, 5) == 4
    assert utf8_cut(data, 6) == 6
    assert utf8_cut(b"x" * 10, 5) == 5


def test_record_builder_writes_static_fields_last_with_any_name() -> None:
    build = record_builder({"env": "prod", "odd 'name\"": 1, "message": "static wins"})
    (record,) = build("ts", "/p", "id", ["hello"], [7])
    assert record == {
        "@timestamp": "ts",
        "message": "static wins",
        "log.file.path": "/p",
        "log.file.id": "id",
        "log.offset": 7,
        "env": "prod",
        "odd 'name\"": 1,
    }


def test_column_builder_stores_columns_and_static_fields_win() -> None:
    build = column_builder({"k8s.pod.name": "web-0"}, ("@timestamp", "message", "k8s.pod.name"))
    records = build("/p", "id", [0, 4], ["t1", "t2"], ["a", "b"], ["x", "y"])
    assert [(r["@timestamp"], r["message"], r["log.offset"]) for r in records] == [
        ("t1", "a", 0),
        ("t2", "b", 4),
    ]
    assert {r["k8s.pod.name"] for r in records} == {"web-0"}
    assert records[0] is not records[1]


def test_last_line_end_is_just_after_the_last_newline(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\npartial")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert last_line_end(fd, 17) == 8
        assert last_line_end(fd, 3) == 0
    finally:
        os.close(fd)


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
