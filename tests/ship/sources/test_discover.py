"""Finding the files of a ``file://`` input (``sources/_discover.py``): new files, ``**``,
excludes, compressed files, listing by identity; as units and through the real shipper."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import lzma
import os
import time
from pathlib import Path

import pytest

from sidekick.ship.sources._discover import (
    compressed_kind,
    regular_files_in,
    static_dir,
)
from tests.ship.helpers import ship_config, shipping, wait_for
from tests.ship.sources.tailing import cfg_for, messages, out, url_config


def test_compressed_kinds_are_told_by_their_magic_and_text_is_not() -> None:
    assert compressed_kind(gzip.compress(b"x")[:10]) == "gzip"
    assert compressed_kind(bz2.compress(b"x")[:10]) == "bzip2"
    assert compressed_kind(lzma.compress(b"x")[:10]) == "xz"
    assert compressed_kind(b"\x28\xb5\x2f\xfd\x24\x05\x29\x00\x00h") == "zstd"
    assert compressed_kind(b"BZh is text") is None
    assert compressed_kind(b"plain line") is None


def test_static_dir_is_the_deepest_directory_without_wildcards() -> None:
    assert static_dir("/var/log/pods/*/app/*.log") == "/var/log/pods"
    assert static_dir("/var/log/app.log") == "/var/log"
    assert static_dir("*.log") == "/"


def test_regular_files_are_listed_by_identity_without_links_or_directories(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.log").write_text("a\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.log").symlink_to(tmp_path / "a.log")
    found, errors = regular_files_in(
        [str(tmp_path), str(tmp_path / "missing"), str(tmp_path / "a.log")]
    )
    st = os.stat(tmp_path / "a.log")
    assert found == [((st.st_dev, st.st_ino), str(tmp_path / "a.log"))]
    assert errors == []


async def test_new_file_is_picked_up_within_one_second(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    async with shipping(cfg):
        await asyncio.sleep(0.2)
        (tmp_path / "logs" / "late.log").write_bytes(b"hello\n")
        start = time.monotonic()
        await wait_for(lambda: messages(tmp_path) == ["hello"], timeout=5)
        assert time.monotonic() - start < 1.0


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


async def test_double_star_matches_every_depth_but_not_hidden_or_linked_directories(
    tmp_path: Path,
) -> None:
    root = tmp_path / "logs"
    for rel in ["top.log", "a/one.log", "a/b/c/deep.log", ".hidden/no.log", "a/.h/no.log"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel + "\n")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    cfg = url_config(tmp_path, f"file://{root}/**/*.log")
    async with shipping(cfg) as sh:
        await wait_for(lambda: len(out(tmp_path)) == 3)
        (root / "a" / "b" / "new").mkdir()
        (root / "a" / "b" / "new" / "late.log").write_text("late\n")
        await wait_for(lambda: len(out(tmp_path)) == 4)
        assert sh.metric("sidekick_ship_files_watched", input=cfg.inputs[0]) == 4
    assert sorted(r["message"] for r in out(tmp_path)) == [
        "a/b/c/deep.log",
        "a/one.log",
        "late",
        "top.log",
    ]


async def test_compressed_rotations_are_skipped_once_and_counted_never_shipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("text line\n")
    (logs / "app.log.1.gz").write_bytes(gzip.compress(b"old line\n" * 100))
    (logs / "app.log.2.bz2").write_bytes(bz2.compress(b"older line\n"))
    (logs / "app.log.3.xz").write_bytes(lzma.compress(b"oldest\n"))
    # zstd's frame magic and header, as the kubelet's rotation would leave it.
    (logs / "app.log.4.zst").write_bytes(b"\x28\xb5\x2f\xfd\x24\x05\x29\x00\x00hello")
    (logs / "BZh.log").write_text("BZh is just text here\n")
    cfg = url_config(tmp_path, f"file://{logs}/*")
    async with shipping(cfg) as sh:
        name = cfg.inputs[0]
        await wait_for(lambda: len(out(tmp_path)) == 2)
        await wait_for(
            lambda: sh.metric("sidekick_ship_compressed_files_skipped_total", input=name) == 4
        )
        # Created empty, as a compressor does, and filled after the shipper opened it.
        late = logs / "app.log.5.gz"
        late.touch()
        await asyncio.sleep(0.6)
        late.write_bytes(gzip.compress(b"late line\n"))
        await wait_for(
            lambda: sh.metric("sidekick_ship_compressed_files_skipped_total", input=name) == 5
        )
        with (logs / "app.log").open("a") as f:
            f.write("after\n")
        await wait_for(lambda: len(out(tmp_path)) == 3)
        await asyncio.sleep(0.6)  # more scans: each file is reported once
        assert sh.metric("sidekick_ship_compressed_files_skipped_total", input=name) == 5
    assert sorted(r["message"] for r in out(tmp_path)) == [
        "BZh is just text here",
        "after",
        "text line",
    ]
    warnings = [r.getMessage() for r in caplog.records if "compressed data" in r.getMessage()]
    assert len(warnings) == 5 and "gzip-compressed" in warnings[0]


async def test_exclude_patterns_keep_matched_files_from_being_opened(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "skip").mkdir(parents=True)
    (logs / "app.log").write_text("kept\n")
    (logs / "app.log.1.gz").write_bytes(gzip.compress(b"x\n"))
    (logs / "debug.txt").write_text("excluded by name\n")
    (logs / "skip" / "a.log").write_text("excluded by path\n")
    cfg = ship_config(
        inputs=[{"url": f"file://{logs}/**/*", "exclude": ["*.gz", "*.txt", f"{logs}/skip/*"]}],
        outputs=[f"file://{tmp_path}/out.ndjson"],
        state_dir=str(tmp_path / "state"),
    )
    async with shipping(cfg) as sh:
        await wait_for(lambda: len(out(tmp_path)) == 1)
        await asyncio.sleep(0.5)
        name = f"file://{logs}/**/*"
        assert sh.metric("sidekick_ship_files_watched", input=name) == 1
        assert sh.metric("sidekick_ship_compressed_files_skipped_total", input=name) == 0
    assert [r["message"] for r in out(tmp_path)] == ["kept"]
