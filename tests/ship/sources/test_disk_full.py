"""Every receiver on a spool whose disk is full: real clients get their protocol's retryable
answer and never a yes for records not stored, the error is logged once, failed writes leave
no files behind, syslog senders are held back, and everything flows again once there is room."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import msgpack
import pytest

from tests.conftest import free_port, tmpfs
from tests.ship.sources.receivers import Receiving, receiving
from tests.ship.sources.test_forward import event_time, send
from tests.ship.sources.test_otlp import request
from tests.ship.sources.test_otlp_grpc import export

PAD = "x" * 300  # a request of 50 records needs pages of its own, never a page's slack


@pytest.fixture
def small_spool(tmp_path: Path) -> Iterator[Path]:
    """``state/spool`` on a 1 MiB tmpfs: the spool's writes really fail with ENOSPC, the
    state file beside it does not."""
    with tmpfs(tmp_path / "state" / "spool", "size=1m") as mnt:
        yield mnt


def fill(disk: Path) -> Path:
    """Write to a file on ``disk`` until the disk is full (again: the shipper deletes the
    segments it delivered)."""
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError:
            pass
    return filler


def post_ndjson(port: int, first: int, n: int = 50) -> tuple[int, dict[str, str]]:
    body = "".join(json.dumps({"seq": i, "pad": PAD}) + "\n" for i in range(first, first + n))
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/logs", body.encode(), {"Content-Type": "application/x-ndjson"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def otlp_body(first: int, n: int = 50) -> bytes:
    req = request(n, start=first)
    for lr in req.resource_logs[0].scope_logs[0].log_records:
        lr.body.string_value = PAD
    return req.SerializeToString()


def post_otlp(port: int, first: int) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/logs",
        otlp_body(first),
        {"Content-Type": "application/x-protobuf"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def forward_message(first: int, chunk: str) -> bytes:
    now = event_time(time.time())
    batch = [[now, {"seq": i, "pad": PAD}] for i in range(first, first + 50)]
    packed: bytes = msgpack.packb(["t", batch, {"chunk": chunk}])
    return packed


def files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def seqs(rx: Receiving) -> set[int]:
    return {r["seq"] for r in rx.records() if "seq" in r}


def test_a_full_disk_is_retryable_for_every_receiver_logged_once_and_leaves_no_files(
    tmp_path: Path, small_spool: Path
) -> None:
    hp, op, gp, fp, sp = (free_port() for _ in range(5))
    inputs = (
        f"http://127.0.0.1:{hp}",
        f"otlp://127.0.0.1:{op}",
        f"otlp+grpc://127.0.0.1:{gp}",
        f"forward://127.0.0.1:{fp}",
        f"syslog+tcp://127.0.0.1:{sp}",
        f"syslog+unix://{tmp_path / 'log.sock'}",
    )
    with receiving(tmp_path, *inputs) as rx:
        assert post_ndjson(hp, 0)[0] == 202
        rx.wait_records(50)
        filler = fill(small_spool)
        # The refused write seals the segment, which is then delivered and deleted: room for
        # a write or two, taken back here.
        assert post_ndjson(hp, 500)[0] == 503
        time.sleep(1.0)
        fill(small_spool)

        answers: dict[str, int] = {}
        for n in range(30):
            status, headers = post_ndjson(hp, 1000 + 50 * n)
            assert (status, headers.get("Retry-After")) == (503, "5")
            fill(small_spool)
            status, headers = post_otlp(op, 2000 + 50 * n)
            assert (status, headers.get("Retry-After")) == (503, "5")
            fill(small_spool)
            code, _ = export(gp, otlp_body(3000 + 50 * n))
            assert code == grpc.StatusCode.UNAVAILABLE
            fill(small_spool)
            assert send(fp, forward_message(5000 + 50 * n, f"c{n}"), want_acks=1) == []
            answers["refused"] = answers.get("refused", 0) + 4
            fill(small_spool)
        # Syslog cannot be refused: its senders are held back, the lines read are kept.
        tcp = ["-n", "127.0.0.1", "-P", str(sp), "--tcp", "--rfc5424", "--octet-count"]
        for where, first in ((tcp, 0), (["-u", str(tmp_path / "log.sock")], 200)):
            lines = "".join(f"seq={i} {PAD}\n" for i in range(first, first + 200))
            subprocess.run(["logger", *where], input=lines.encode(), check=True, timeout=30)
        time.sleep(1.0)
        assert answers == {"refused": 120}
        # Counted alike by every receiver (HTTP counted them as "unavailable").
        refused = {
            name: rx.metric(
                "sidekick_ship_receiver_rejected_total", input=name, reason="spool_error"
            )
            for name in inputs[:4]
        }
        assert list(refused.values()) == [31, 30, 30, 30], refused
        log = rx.proc.log_path.read_text()
        # One line a minute per spool, not one per refused write.
        assert 1 <= log.count("Spool write failed") <= len(inputs), log[-3000:]
        assert "Traceback" not in log
        # Each refused write left its segment file empty; none of them may stay.
        assert [p.name for p in files_under(small_spool) if p.stat().st_size == 0] == []

        filler.unlink()
        deadline = time.monotonic() + 30
        while len([r for r in rx.records() if "seq=" in r.get("message", "")]) < 400:
            assert time.monotonic() < deadline, rx.proc.log()
            time.sleep(0.1)
        assert post_ndjson(hp, 100_000)[0] == 202
        assert post_otlp(op, 300_000)[0] == 200
        assert export(gp, otlp_body(400_000))[0] == grpc.StatusCode.OK
        assert send(fp, forward_message(200_000, "after"), want_acks=1) == [{"ack": "after"}]
        got = rx.wait_records(50 + 400 + 4 * 50)
    # Nothing refused arrived; everything acknowledged did.
    assert {r["seq"] for r in got if "seq" in r} == {
        i for first in (0, 100_000, 200_000, 300_000, 400_000) for i in range(first, first + 50)
    }
    syslog = sorted(int(r["message"].split()[0][4:]) for r in got if "seq=" in r.get("message", ""))
    assert syslog == list(range(400))


def test_refused_writes_leave_no_segment_files_while_the_output_is_down(
    tmp_path: Path, small_spool: Path
) -> None:
    port, nobody = free_port(), free_port()
    with receiving(
        tmp_path,
        f"http://127.0.0.1:{port}",
        output=f"http://127.0.0.1:{nobody}/",
        # The reader stops at the first batch: it waits for the output, as a busy one does.
        extra=("--max-inflight-bytes", "1KiB"),
    ) as rx:
        assert post_ndjson(port, 0)[0] == 202
        assert post_ndjson(port, 50)[0] == 202
        fill(small_spool)
        for n in range(100):
            assert post_ndjson(port, 1000 + 50 * n)[0] == 503
        # The segment holding the accepted records waits for the output; nothing else is
        # left (each refused write used to leave an empty segment file, and the reader,
        # stuck behind the output, never reached them).
        spooled = [p for p in files_under(small_spool) if p.name != "filler"]
        assert len(spooled) == 1, [p.name for p in spooled]
        assert spooled[0].read_bytes().count(b"\n") == 100
        assert "Traceback" not in rx.proc.log()


def test_a_held_syslog_sender_does_not_keep_the_shipper_from_stopping(
    tmp_path: Path, small_spool: Path
) -> None:
    port = free_port()
    name = f"syslog+tcp://127.0.0.1:{port}"
    with receiving(tmp_path, name) as rx:
        fill(small_spool)
        lines = "".join(f"seq={i} {PAD}\n" for i in range(100))
        tcp = ["-n", "127.0.0.1", "-P", str(port), "--tcp", "--rfc5424", "--octet-count"]
        subprocess.run(["logger", *tcp], input=lines.encode(), check=True, timeout=30)
        time.sleep(1.0)
        started = time.monotonic()
        assert rx.proc.terminate(30) == 0
        took = time.monotonic() - started
    # The lines it held are counted and logged as lost once the drain gives up on the disk.
    assert took < 10, took
    log = rx.proc.log_path.read_text()
    assert "the disk refuses the spool's writes and the shipper is stopping" in log, log[-2000:]
    assert "Traceback" not in log
