"""File descriptors of the tail source, through the real ``sidekick ship`` process.

Thousands of files under a low open-file limit: idle files are closed and reopened, nothing
is taken for rotated, every line arrives exactly once, and the log stays small.
"""

from __future__ import annotations

import collections
import os
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from sidekick.ship.checkpoints import STATE_FILE
from tests.conftest import SIDEKICK
from tests.ship.helpers import ShipperProcess, wait_for_sync


def limit_open_files(n: int) -> Callable[[], None]:
    def apply() -> None:
        # Hard and soft alike, so raising the soft limit to the hard one cannot help.
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


class Shipper(ShipperProcess):
    """``ShipperProcess`` run under an open-file limit, watching its descriptor count."""

    def __init__(self, args: list[str], log_path: Path, nofile: int | None = None):
        super().__init__(args, log_path)
        self.nofile = nofile
        self.max_fds = 0

    def start(self) -> Shipper:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*SIDEKICK, "ship", *self.args, "--admin-addr", f"127.0.0.1:{self.port}"],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=limit_open_files(self.nofile) if self.nofile else None,
            )
        return self

    def fds(self) -> int:
        n = len(os.listdir(f"/proc/{self.pid}/fd"))
        self.max_fds = max(self.max_fds, n)
        return n

    def wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait for ``predicate``, sampling the descriptor count meanwhile."""

        def check() -> bool:
            self.fds()
            return predicate()

        wait_for_sync(check, timeout=timeout, interval=0.1)


def make_files(logs: Path, count: int, lines: int) -> set[str]:
    logs.mkdir(parents=True, exist_ok=True)
    want: set[str] = set()
    for i in range(count):
        body = [f"file {i} line {j}" for j in range(lines)]
        (logs / f"f{i:05d}.log").write_text("".join(x + "\n" for x in body))
        want.update(body)
    return want


def shipped(tmp_path: Path) -> list[str]:
    """The messages in the output file. A line torn by a kill -9 of a writing shipper is no
    JSON (the file output ends it at the restart and its records are sent again): skipped."""
    path = tmp_path / "out.ndjson"
    if not path.exists():
        return []
    data = path.read_bytes()
    out = []
    for line in data[: data.rfind(b"\n") + 1].splitlines():
        try:
            out.append(msgspec.json.decode(line)["message"])
        except msgspec.DecodeError:
            continue
    return out


def all_saved(tmp_path: Path, count: int) -> bool:
    """Whether the state file names small0.log ... small{count-1}.log (files waiting for a
    descriptor are saved there, without a position, once a scan has seen them)."""
    try:
        text = (tmp_path / "state" / STATE_FILE).read_text(errors="replace")
    except FileNotFoundError:
        return False
    return all(f"small{i}.log" in text for i in range(count))


def args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--input",
        f"file://{tmp_path}/logs/*.log",
        "--output",
        f"file://{tmp_path}/out.ndjson",
        "--state-dir",
        str(tmp_path / "state"),
        *extra,
    ]


def assert_exactly_once(got: list[str], want: set[str]) -> None:
    dupes = [m for m, n in collections.Counter(got).items() if n > 1]
    assert not dupes, f"{len(dupes)} lines shipped more than once, e.g. {dupes[:3]}"
    assert set(got) == want


def test_5000_files_under_1024_descriptors_ship_every_line_once(tmp_path: Path) -> None:
    want = make_files(tmp_path / "logs", 5000, 3)
    input_label = f"file://{tmp_path}/logs/*.log"
    sh = Shipper(args(tmp_path), tmp_path / "ship.log", nofile=1024).start()
    try:
        sh.wait_ready(timeout=30)
        start = time.monotonic()
        sh.wait(lambda: len(shipped(tmp_path)) >= len(want), timeout=90)
        took = time.monotonic() - start
        assert sh.metric("sidekick_ship_files_watched", input=input_label) == 5000
        assert sh.metric("sidekick_ship_files_open", input=input_label) <= 512
        assert sh.metric("sidekick_ship_rotations_total", input=input_label) == 0
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    assert_exactly_once(shipped(tmp_path), want)
    assert sh.max_fds < 1024
    log_size = (tmp_path / "ship.log").stat().st_size
    assert log_size < 100_000, sh.log()
    print(f"5000 files: {took:.1f}s, at most {sh.max_fds} descriptors, log {log_size} bytes")


def test_out_of_descriptors_is_no_rotation_and_the_budget_adapts(tmp_path: Path) -> None:
    # max_open_files above what the limit allows: opens and listings fail with EMFILE.
    want = make_files(tmp_path / "logs", 2000, 2)
    input_label = f"file://{tmp_path}/logs/*.log"
    sh = Shipper(
        args(tmp_path, "--max-open-files", "5000"), tmp_path / "ship.log", nofile=1024
    ).start()
    try:
        sh.wait_ready(timeout=30)
        sh.wait(lambda: len(shipped(tmp_path)) >= len(want), timeout=90)
        errors = sh.metric("sidekick_ship_tail_errors_total", input=input_label, error="EMFILE")
        assert errors > 0
        assert sh.metric("sidekick_ship_rotations_total", input=input_label) == 0
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    assert_exactly_once(shipped(tmp_path), want)
    log = (tmp_path / "ship.log").read_text()
    assert len(log) < 100_000, sh.log()
    assert "rotated" not in log
    assert "Traceback" not in log
    # Each kind of failure is one line per minute, with later ones counted, not listed.
    assert sum("Cannot open" in line for line in log.splitlines()) == 1, log[-3000:]


def test_parked_files_are_reopened_when_they_grow_or_are_renamed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    want = make_files(logs, 40, 1)
    input_label = f"file://{logs}/*.log"
    sh = Shipper(args(tmp_path, "--max-open-files", "8"), tmp_path / "ship.log").start()
    try:
        sh.wait_ready()
        sh.wait(lambda: set(shipped(tmp_path)) == want, timeout=30)
        assert sh.metric("sidekick_ship_files_open", input=input_label) <= 8
        # Every file grows; most of them are parked, so only a reopen finds the new line.
        for i in range(40):
            with open(logs / f"f{i:05d}.log", "a") as f:
                f.write(f"file {i} more\n")
            want.add(f"file {i} more")
        sh.wait(lambda: set(shipped(tmp_path)) == want, timeout=30)
        # A parked file grows and is renamed out of the glob before a scan sees it.
        with open(logs / "f00000.log", "a") as f:
            f.write("last words\n")
        os.rename(logs / "f00000.log", logs / "f00000.log.1")
        want.add("last words")
        sh.wait(lambda: set(shipped(tmp_path)) == want, timeout=30)
        assert sh.metric("sidekick_ship_rotations_total", input=input_label) == 1
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    assert_exactly_once(shipped(tmp_path), want)


def test_soft_open_file_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()

    def low_soft() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 2048))

    sh = Shipper(args(tmp_path, "--log-level", "debug"), tmp_path / "ship.log")
    with open(sh.log_path, "ab") as log:
        sh.proc = subprocess.Popen(
            [*SIDEKICK, "ship", *sh.args, "--admin-addr", f"127.0.0.1:{sh.port}"],
            stdout=log,
            stderr=log,
            preexec_fn=low_soft,
        )
    try:
        sh.wait_ready()
        limits = Path(f"/proc/{sh.pid}/limits").read_text()
        row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert row.split()[3:5] == ["2048", "2048"], row
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    assert "Raised the open-file limit from 256 to 2048" in sh.log()


def test_tailed_files_leave_descriptors_for_the_rest_of_the_shipper(tmp_path: Path) -> None:
    # max_open_files that fits the limit exactly: the tail source itself never runs out, but
    # it must not take the descriptors the admin server, the output and the state file need.
    (tmp_path / "logs").mkdir()
    probe = Shipper(args(tmp_path / "probe"), tmp_path / "probe.log", nofile=64)
    (tmp_path / "probe").mkdir()
    probe.start()
    try:
        probe.wait_ready()
        baseline = probe.fds()
        assert probe.terminate() == 0
    finally:
        probe.stop_quietly()
    want = make_files(tmp_path / "logs", 200, 2)
    budget = str(64 - baseline)
    sh = Shipper(args(tmp_path, "--max-open-files", budget), tmp_path / "ship.log", nofile=64)
    sh.start()
    try:
        sh.wait_ready()
        answered = 0
        deadline = time.monotonic() + 60
        while len(shipped(tmp_path)) < len(want) or answered < 20:
            assert time.monotonic() < deadline, sh.log()
            assert sh.get("/readyz")[0] == 200  # the admin server can still accept
            answered += 1
            time.sleep(0.1)
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    assert_exactly_once(shipped(tmp_path), want)
    log = (tmp_path / "ship.log").read_text()
    assert "Traceback" not in log and "out of system resource" not in log, log[-3000:]


def test_files_rotated_while_stopped_are_finished_when_descriptors_run_short(
    tmp_path: Path,
) -> None:
    # At start every saved file no longer matched is looked for and opened to be finished;
    # under a low limit most opens fail, and those files must be tried again, not forgotten.
    logs = tmp_path / "logs"
    want = make_files(logs, 300, 1)
    sh = Shipper(args(tmp_path), tmp_path / "ship.log").start()
    try:
        sh.wait_ready()
        sh.wait(lambda: set(shipped(tmp_path)) == want, timeout=30)
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    for i in range(300):
        with open(logs / f"f{i:05d}.log", "a") as f:
            f.write(f"file {i} last\n")
        want.add(f"file {i} last")
        os.rename(logs / f"f{i:05d}.log", logs / f"f{i:05d}.log.1")
    sh = Shipper(args(tmp_path), tmp_path / "ship2.log", nofile=64).start()
    try:
        sh.wait_ready()
        sh.wait(lambda: set(shipped(tmp_path)) == want, timeout=60)
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    assert_exactly_once(shipped(tmp_path), want)
    log = (tmp_path / "ship2.log").read_text()
    assert "is gone" not in log and "Traceback" not in log
    assert sum("Finishing" in line for line in log.splitlines()) == 300


def test_start_at_end_files_opened_late_start_where_they_ended_at_the_first_start(
    tmp_path: Path,
) -> None:
    # Under a low limit the first start cannot open every file at once; those opened at a
    # later scan must start where they ended when the shipper first saw them, not where they
    # end by then, or the lines written meanwhile are skipped.
    logs = tmp_path / "logs"
    make_files(logs, 200, 3)  # old content, skipped
    sh = Shipper(args(tmp_path, "--start-at", "end"), tmp_path / "ship.log", nofile=64)
    sh.start()
    want: set[str] = set()
    try:
        sh.wait(lambda: "Tailing" in (tmp_path / "ship.log").read_text(), timeout=15)
        for i in range(200):
            with open(logs / f"f{i:05d}.log", "a") as f:
                f.write(f"file {i} new\n")
            want.add(f"file {i} new")
        sh.wait(lambda: set(shipped(tmp_path)) >= want, timeout=60)
        time.sleep(1)
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    assert_exactly_once(shipped(tmp_path), want)


def test_files_waiting_for_a_descriptor_are_read_after_a_rename_rotation(
    tmp_path: Path,
) -> None:
    # Every descriptor is held by a file with unread data, so new files wait; renamed out of
    # the glob meanwhile they were never opened and their lines never shipped.
    logs = tmp_path / "logs"
    logs.mkdir()
    line = "x" * 99 + "\n"
    for i in range(4):
        (logs / f"big{i}.log").write_text(line * 80_000)  # 8 MB each
    input_label = f"file://{logs}/*.log"
    sh = Shipper(args(tmp_path, "--max-open-files", "4"), tmp_path / "ship.log").start()
    want: set[str] = set()
    try:
        sh.wait_ready()
        sh.wait(lambda: sh.metric("sidekick_ship_files_open", input=input_label) == 4, 15)
        for i in range(10):
            name = logs / f"small{i}.log"
            name.write_text(f"small {i}\n")
            want.add(f"small {i}")
        sh.wait(lambda: "wait for a descriptor" in sh.log(), timeout=15)
        # Every one seen by a scan: one created and renamed before any scan saw it was never
        # a file of this glob as far as any tailer can know.
        sh.wait(lambda: all_saved(tmp_path, 10), timeout=15)
        for i in range(10):
            os.rename(logs / f"small{i}.log", logs / f"small{i}.log.1")  # rotated
        sh.wait(lambda: want <= set(shipped(tmp_path)), timeout=60)
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    got = [m for m in shipped(tmp_path) if m.startswith("small")]
    assert sorted(got) == sorted(want)


def test_files_waiting_for_a_descriptor_at_a_kill_9_are_read_after_a_rotation(
    tmp_path: Path,
) -> None:
    # A waiting file has no position yet; it must still be in the state file, or a file
    # renamed out of the glob while the shipper is down is unknown to the restart.
    logs = tmp_path / "logs"
    logs.mkdir()
    line = "x" * 99 + "\n"
    for i in range(4):
        (logs / f"big{i}.log").write_text(line * 200_000)  # 20 MB each
    input_label = f"file://{logs}/*.log"
    argv = args(tmp_path, "--max-open-files", "4")
    sh = Shipper(argv, tmp_path / "ship.log").start()
    want: set[str] = set()
    try:
        sh.wait_ready()
        sh.wait(lambda: sh.metric("sidekick_ship_files_open", input=input_label) == 4, 15)
        for i in range(10):
            (logs / f"small{i}.log").write_text(f"small {i}\n")
            want.add(f"small {i}")
        sh.wait(lambda: "wait for a descriptor" in sh.log(), timeout=15)
        sh.wait(lambda: all_saved(tmp_path, 10), timeout=15)  # each in the state file
        sh.kill()
        for i in range(10):
            os.rename(logs / f"small{i}.log", logs / f"small{i}.log.1")  # rotated meanwhile
        sh = Shipper(argv, tmp_path / "ship2.log").start()
        sh.wait_ready()
        sh.wait(lambda: want <= set(shipped(tmp_path)), timeout=90)
        assert sh.terminate() == 0
    finally:
        sh.stop_quietly()
    got = [m for m in shipped(tmp_path) if m.startswith("small")]
    assert sorted(got) == sorted(want)
