"""Named pipes (and other files that are not regular) where a ``file://`` glob matches.

A pipe has no position to resume from and its lines belong to whoever reads it, so the tail
never opens one: it is logged once and counted. A pipe that takes a file's name between the
scan's ``stat`` and the ``open`` must not block the open, which would freeze the event loop
(no /healthz, no other file, no drain) until some process opened the pipe for writing.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from sidekick.ship.sources._descriptors import Descriptors
from sidekick.ship.sources._discover import Finder
from tests.ship.helpers import ShipperProcess, read_ndjson, wait_for_sync

SKIPPED = "sidekick_ship_non_regular_files_skipped_total"


def shipper(tmp_path: Path, pattern: str) -> ShipperProcess:
    args = [
        "--input",
        f"file://{pattern}",
        "--output",
        f"file://{tmp_path}/out.ndjson",
        "--state-dir",
        str(tmp_path / "state"),
    ]
    return ShipperProcess(args, tmp_path / "ship.log")


def messages(tmp_path: Path) -> list[str]:
    return [r["message"] for r in read_ndjson(tmp_path / "out.ndjson")]


def test_opening_a_named_pipe_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "a.log"
    os.mkfifo(fifo)
    fds = Descriptors({}, 8, lambda _fd: True, lambda *_a: None)

    def unblock() -> None:
        # Without O_NONBLOCK the open below waits for a writer: give it one, so a failing
        # test ends instead of hanging.
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    timer = threading.Timer(3.0, unblock)
    timer.start()
    started = time.monotonic()
    try:
        fd = fds.open(str(fifo))
        os.close(fd)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 1.0


def test_the_scan_reports_each_pipe_socket_once_and_not_directories(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.log")
    (tmp_path / "dir.log").mkdir()
    (tmp_path / "a.log").write_text("a\n")
    finder = Finder([f"{tmp_path}/*.log"], follow_symlinks=False)
    first = finder.scan()
    assert first.special == [(f"{tmp_path}/pipe.log", "a named pipe (FIFO)")]
    assert [m.path for m in first.files.values()] == [f"{tmp_path}/a.log"]
    assert finder.scan().special == []
    # Another pipe at the same name is another file: reported again.
    os.unlink(tmp_path / "pipe.log")
    assert finder.scan().special == []
    os.mkfifo(tmp_path / "pipe.log")
    assert len(finder.scan().special) == 1


def test_a_matched_pipe_is_skipped_logged_once_and_counted(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    os.mkfifo(logs / "pipe.log")
    (logs / "a.log").write_text("first\n")
    sh = shipper(tmp_path, f"{logs}/*.log").start()
    try:
        sh.wait_ready()
        name = f"file://{logs}/*.log"
        wait_for_sync(lambda: messages(tmp_path) == ["first"], timeout=10)
        wait_for_sync(lambda: sh.metric(SKIPPED, input=name) == 1, timeout=10)
        with open(logs / "a.log", "a") as f:
            f.write("second\n")
        os.mkfifo(logs / "other.log")
        wait_for_sync(lambda: messages(tmp_path) == ["first", "second"], timeout=10)
        wait_for_sync(lambda: sh.metric(SKIPPED, input=name) == 2, timeout=10)
        assert sh.get("/healthz")[0] == 200
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    text = (tmp_path / "ship.log").read_text()
    assert text.count("pipe.log: it is a named pipe (FIFO), not a regular file") == 1
    assert text.count("other.log: it is a named pipe (FIFO)") == 1
    assert "Traceback" not in text


def test_a_pipe_swapped_in_for_a_file_does_not_freeze_the_shipper(tmp_path: Path) -> None:
    """A regular file and a pipe take turns at one name, thousands of times: some open finds
    the pipe where the scan saw the file. Before, that open waited for a writer forever:
    /healthz stopped answering within half a second and SIGTERM was never acted on."""
    logs = tmp_path / "logs"
    logs.mkdir()
    sh = shipper(tmp_path, f"{logs}/*.log").start()
    try:
        sh.wait_ready()
        end = time.monotonic() + 2.0
        i = 0
        while time.monotonic() < end:
            i += 1
            tmp = logs / f".r{i}"
            tmp.write_text(f"line {i}\n")
            os.rename(tmp, logs / "a.log")
            os.mkfifo(logs / f".f{i}")
            os.rename(logs / f".f{i}", logs / "a.log")
        (logs / "b.log").write_text("after\n")
        wait_for_sync(lambda: "after" in messages(tmp_path), timeout=10)
        assert sh.get("/healthz")[0] == 200
        assert sh.terminate(timeout=15) == 0
    finally:
        sh.stop_quietly()
    assert "Traceback" not in (tmp_path / "ship.log").read_text()
