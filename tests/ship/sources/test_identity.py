"""Which file a tailed file is: fingerprints, generations and checkpoint entries
(``sources/_identity.py``), as units and through the real shipper."""

from __future__ import annotations

import os
from pathlib import Path

from sidekick.ship.sources._identity import (
    FP_BYTES,
    FileIdentity,
    checkpoint_key,
    fingerprint,
    saved_ident,
)
from tests.ship.helpers import shipping, wait_for
from tests.ship.sources.tailing import cfg_for, messages, out


def test_fingerprint_depends_on_the_bytes_only() -> None:
    assert fingerprint(b"abc") == fingerprint(b"abc")
    assert fingerprint(b"abc") != fingerprint(b"abd")
    assert len(fingerprint(b"")) == 16


def test_checkpoint_key_and_saved_ident_round_trip() -> None:
    assert checkpoint_key("file:///x/*.log/", 8, 42) == "file:///x/*.log/8:42"
    assert saved_ident({"dev": 8, "ino": "42"}) == (8, 42)
    assert saved_ident(None) is None
    assert saved_ident({"dev": 8}) is None
    assert saved_ident({"dev": "x", "ino": 1}) is None


def opened(path: Path, data: bytes) -> int:
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


def identity_of(fd: int) -> FileIdentity:
    st = os.fstat(fd)
    ident = FileIdentity(st.st_dev, st.st_ino, checkpoint_key("in/", st.st_dev, st.st_ino))
    ident.take_fingerprint(fd)
    ident.new_id()
    return ident


def test_a_saved_entry_resumes_only_the_file_with_the_same_first_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    fd = opened(path, b"first line\nsecond\n")
    try:
        first = identity_of(fd)
        first.gen = 2
        first.new_id()
        entry = first.entry(str(path), 11)
        again = FileIdentity(first.dev, first.ino, first.key)
        assert again.resume(fd, entry) == 11
        assert (again.gen, again.fp, again.file_id) == (2, first.fp, first.file_id)
        # Same inode, other first bytes: another file, whose offset this is not.
        with path.open("r+b") as f:
            f.write(b"F")
        stranger = FileIdentity(first.dev, first.ino, first.key)
        assert stranger.resume(fd, entry) is None
        assert stranger.file_id == ""
    finally:
        os.close(fd)


def test_truncation_is_a_size_below_the_offset_or_first_bytes_that_changed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.log"
    fd = opened(path, b"0123456789\n")
    try:
        ident = identity_of(fd)
        assert not ident.truncated(fd, 11, 11)
        with path.open("ab") as f:
            f.write(b"more\n")
        assert not ident.truncated(fd, 16, 11)  # grown: the same file
        assert ident.truncated(fd, 5, 11)  # shorter than what was read
        with path.open("r+b") as f:
            f.write(b"X")  # refilled past the offset: same size, other first bytes
        assert ident.truncated(fd, 16, 11)
        old = ident.file_id
        ident.next_generation(fd)
        assert ident.gen == 1 and ident.file_id != old and not ident.truncated(fd, 16, 0)
    finally:
        os.close(fd)


def test_the_fingerprint_grows_with_the_file_up_to_its_length(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    fd = opened(path, b"short\n")
    try:
        ident = identity_of(fd)
        assert ident.fp_len == 6 and ident.grows_past_fingerprint(7)
        path.write_bytes(b"short\n" + b"x" * 2 * FP_BYTES)
        ident.take_fingerprint(fd)
        assert ident.fp_len == FP_BYTES and not ident.grows_past_fingerprint(3 * FP_BYTES)
    finally:
        os.close(fd)


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
