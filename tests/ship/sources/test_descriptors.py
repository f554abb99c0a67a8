"""The descriptor budget (``sources/_descriptors.py``): how many files an input holds open,
parking idle files to make room and reopening them only at the same inode."""

from __future__ import annotations

import os
from pathlib import Path

from sidekick.ship.sources._descriptors import Descriptors, open_budget
from sidekick.ship.sources._reader import TailFile
from tests.ship.helpers import ship_config


def test_open_budget_is_shared_by_the_file_inputs(tmp_path: Path) -> None:
    cfg = ship_config(
        inputs=[f"file://{tmp_path}/a/*.log", f"file://{tmp_path}/b/*.log", "http://127.0.0.1:0"],
        outputs=["stdout:"],
        max_open_files=100,
    )
    assert open_budget(cfg) == 50
    assert open_budget(ship_config(inputs=cfg.inputs, outputs=["stdout:"], max_open_files=5)) == 4


def open_files(tmp_path: Path, n: int) -> tuple[dict[tuple[int, int], TailFile], Descriptors]:
    files: dict[tuple[int, int], TailFile] = {}
    errors: list[tuple[str, str, OSError]] = []
    fds = Descriptors(
        files, 2, lambda fd: True, lambda op, path, exc: errors.append((op, path, exc))
    )
    for i in range(n):
        path = tmp_path / f"{i}.log"
        path.write_bytes(b"line\n")
        fd = os.open(path, os.O_RDONLY)
        st = os.fstat(fd)
        f = TailFile(fd, str(path), st.st_dev, st.st_ino, f"k/{i}")
        f.read_pos, f.at_end, f.last_growth = 5, True, float(i)
        files[f.ident] = f
        fds.count += 1
    return files, fds


def test_descriptors_park_the_least_recently_grown_idle_file_to_make_room(
    tmp_path: Path,
) -> None:
    files, fds = open_files(tmp_path, 2)
    a, b = files.values()
    try:
        assert fds.room()  # full: a, idle the longest, is parked
        assert a.fd == -1 and b.fd >= 0 and fds.count == 1
        assert (a.size, a.mtime) == (5, os.stat(a.path).st_mtime_ns)
        assert fds.reopen(a) and a.fd >= 0 and fds.count == 2
        # A file at a's path that is another inode is not taken for it.
        assert fds.park(a)
        (tmp_path / "new").write_bytes(b"line\n")  # made while a's inode is still in use
        os.replace(tmp_path / "new", a.path)
        assert not fds.reopen(a) and a.fd == -1 and fds.count == 1
    finally:
        for f in files.values():
            fds.close(f)
    assert fds.count == 0


def test_descriptors_shed_busy_files_when_the_budget_is_lowered(tmp_path: Path) -> None:
    files, fds = open_files(tmp_path, 3)
    try:
        for f in files.values():
            f.at_end = False  # unread data: no idle file to park
            f.read_pos = 0
        fds.max_open = 1
        fds.shed()
        assert fds.count == 1
        parked = [f for f in files.values() if f.fd < 0]
        assert [f.key for f in parked] == ["k/0", "k/1"]  # least recently grown first
        assert all(f.size == -1 for f in parked)  # reopened as soon as there is room
    finally:
        for f in files.values():
            fds.close(f)
