"""Records answered with 202 survive ``kill -9`` of the real ``sidekick ship`` process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sidekick.ship.sources.spool import SUFFIX
from tests.conftest import SIDEKICK, free_port


def post(port: int, body: bytes) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/logs",
        data=body,
        headers={"Content-Type": "application/x-ndjson"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        status: int = resp.status
        return status


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"sidekick ship did not listen on {port} within {timeout}s")


@contextmanager
def shipper(
    port: int, output: str, state_dir: Path, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [
        *SIDEKICK,
        "ship",
        "--input",
        f"http://127.0.0.1:{port}",
        "--output",
        output,
        "--state-dir",
        str(state_dir),
        "--admin-addr",
        "127.0.0.1:0",
        "--log-level",
        "warning",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def seqs_in(path: Path) -> list[int]:
    if not path.exists():
        return []
    data = path.read_bytes()
    # The output is being appended to while we read: a last line without its newline is
    # still being written.
    complete = data[: data.rfind(b"\n") + 1]
    seqs = []
    for line in complete.splitlines():
        try:
            seqs.append(json.loads(line)["seq"])
        except json.JSONDecodeError:
            # A line torn by the kill -9 of a writing shipper: the file output ends it with a
            # newline before appending again, and the record itself is sent again whole.
            assert not line.endswith(b"}"), line
    return seqs


def wait_for_seqs(path: Path, expected: set[int], timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = seqs_in(path)
        if expected <= set(got):
            return got
        time.sleep(0.05)
    missing = expected - set(seqs_in(path))
    raise AssertionError(
        f"{len(missing)} accepted records never arrived, e.g. {sorted(missing)[:5]}"
    )


def body(start: int, n: int = 100) -> bytes:
    return b"".join(b'{"seq":%d}\n' % i for i in range(start, start + n))


def test_records_accepted_while_the_output_is_down_arrive_after_kill_9(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "out.ndjson"
    port, nobody = free_port(), free_port()
    # First run: the output refuses connections, so the spool is the only copy.
    with shipper(port, f"http://127.0.0.1:{nobody}/ingest", state) as proc:
        for start in range(0, 300, 100):
            assert post(port, body(start)) == 202
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # Second run, same state directory, an output that works.
    with shipper(port, f"file://{out}", state) as proc:
        wait_for_seqs(out, set(range(300)))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert list((state / "spool").rglob("*" + SUFFIX)) == []


def test_records_accepted_right_before_kill_9_arrive_after_restart(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "out.ndjson"
    port = free_port()
    accepted: set[int] = set()
    for round_ in range(3):
        with shipper(port, f"file://{out}", state) as proc:
            start = round_ * 1000
            for i in range(start, start + 500, 100):
                assert post(port, body(i)) == 202
                accepted.update(range(i, i + 100))
            os.kill(proc.pid, signal.SIGKILL)
    with shipper(port, f"file://{out}", state) as proc:
        got = wait_for_seqs(out, accepted)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    # At least once: duplicates are possible (delivered, not yet checkpointed), loss is not.
    assert set(got) == accepted
    assert list((state / "spool").rglob("*" + SUFFIX)) == []


def test_delivered_segments_are_deleted_while_the_shipper_runs(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "out.ndjson"
    port = free_port()
    spool = state / "spool"
    # A 1 MiB spool seals its segments at 128 KiB; 60 requests (~340 KB spooled) fill several.
    with shipper(port, f"file://{out}", state, "--spool-max-bytes", "1MiB") as proc:
        for start in range(0, 6000, 100):
            assert post(port, body(start)) == 202
        wait_for_seqs(out, set(range(6000)))
        deadline = time.monotonic() + 10
        while len(list(spool.rglob("*" + SUFFIX))) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Only the segment still being written to remains.
        assert len(list(spool.rglob("*" + SUFFIX))) <= 1
        assert proc.poll() is None
