"""The shutdown drain, with the real ``sidekick ship`` process: SIGTERM reads every tailed file
to its end (and goes on while the app still writes), HTTP ingest keeps taking requests for the
quiet period, the process exits as soon as everything is delivered, and a drain cut short by
``--shutdown-timeout`` says what it left behind. SIGHUP does not end the process.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import free_port
from tests.ship.helpers import ShipperProcess, read_ndjson, wait_for_sync


def shipper(tmp_path: Path, *args: str, inputs: list[str] | None = None) -> ShipperProcess:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    given = inputs if inputs is not None else [f"file://{logs}/*.log"]
    argv = [a for i in given for a in ("--input", i)]
    argv += ["--output", f"file://{tmp_path / 'out.ndjson'}", "--state-dir", str(tmp_path / "st")]
    return ShipperProcess([*argv, *args], tmp_path / "ship.log").start()


def messages(tmp_path: Path) -> list[str]:
    return [r["message"] for r in read_ndjson(tmp_path / "out.ndjson")]


def test_lines_written_just_before_sigterm_all_arrive(tmp_path: Path) -> None:
    # The native-sidecar order: the app wrote its last lines and exited, then the shipper
    # gets SIGTERM with most of them still unread.
    ship = shipper(tmp_path)
    try:
        ship.wait_ready()
        lines = 300_000
        with open(tmp_path / "logs" / "app.log", "w") as f:
            f.writelines(
                f"line {i:07d} of the app's last burst before it exited\n" for i in range(lines)
            )
        code = ship.terminate(timeout=60)
    finally:
        ship.stop_quietly()
    got = messages(tmp_path)
    assert code == 0, ship.log()
    assert (len(got), len(set(got))) == (lines, lines)
    assert got[-1].startswith(f"line {lines - 1:07d} ")


def test_a_file_still_growing_after_sigterm_is_read_until_it_is_quiet(tmp_path: Path) -> None:
    # A classic sidecar gets SIGTERM while its app still writes: 5,000 lines/s for 2 s more.
    ship = shipper(tmp_path, "--drain-quiet", "1s")
    written = 0
    stop_at = 0.0

    def writer() -> None:
        nonlocal written
        with open(tmp_path / "logs" / "app.log", "a", buffering=1) as f:
            started = time.monotonic()
            while time.monotonic() < stop_at:
                due = int((time.monotonic() - started) * 5000)
                while written < due:
                    f.write(f"growing {written}\n")
                    written += 1
                time.sleep(0.01)

    try:
        ship.wait_ready()
        stop_at = time.monotonic() + 2.5
        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(0.5)
        ship.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        thread.join()
        code = ship.proc.wait(60)  # type: ignore[union-attr]
    finally:
        ship.stop_quietly()
    got = messages(tmp_path)
    assert code == 0, ship.log()
    assert written >= 9_000
    assert sorted(got, key=lambda m: int(m.split()[1])) == [f"growing {i}" for i in range(written)]


def test_an_idle_shipper_exits_within_the_quiet_period_after_sigterm(tmp_path: Path) -> None:
    ship = shipper(tmp_path, "--drain-quiet", "1s")
    try:
        ship.wait_ready()
        (tmp_path / "logs" / "app.log").write_text("one\ntwo\n")
        wait_for_sync(lambda: len(messages(tmp_path)) == 2, timeout=20)
        time.sleep(0.3)  # the checkpoint flusher and the reader settle
        started = time.monotonic()
        ship.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        code = ship.proc.wait(30)  # type: ignore[union-attr]
        took = time.monotonic() - started
    finally:
        ship.stop_quietly()
    assert code == 0, ship.log()
    assert took < 1.0 + 0.5, f"SIGTERM to exit took {took:.2f}s"
    assert "Everything read was delivered" in ship.log()


def test_a_drain_cut_short_by_the_timeout_says_what_it_left_per_file(tmp_path: Path) -> None:
    # The output is down: nothing can be delivered within --shutdown-timeout.
    dead = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("x" * 99 + "\n")
    ship = ShipperProcess(
        ["--input", f"file://{logs}/*.log", "--output", f"http://127.0.0.1:{dead}/",
         "--state-dir", str(tmp_path / "st"), "--shutdown-timeout", "3s"],
        tmp_path / "ship.log",
    ).start()  # fmt: skip
    try:
        ship.wait_ready()
        wait_for_sync(
            lambda: (
                ship.metric(
                    "sidekick_ship_records_failed_total", output=f"http://127.0.0.1:{dead}/"
                )
                > 0
            ),
            timeout=20,
        )
        started = time.monotonic()
        code = ship.terminate(timeout=30)
        took = time.monotonic() - started
    finally:
        ship.stop_quietly()
    log = ship.log()
    assert code == 1, log
    assert took < 3.0 + 1.5, f"took {took:.2f}s"
    assert f"{logs}/a.log has 100 bytes not delivered" in log
    assert "The drain did not finish within" in log


def test_sighup_reloads_and_the_shipper_goes_on(tmp_path: Path) -> None:
    ship = shipper(tmp_path)
    try:
        ship.wait_ready()
        ship.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_for_sync(lambda: "Reload: the configuration is unchanged." in ship.log(), timeout=10)
        assert ship.proc.poll() is None  # type: ignore[union-attr]
        (tmp_path / "logs" / "app.log").write_text("after the hangup\n")
        wait_for_sync(lambda: messages(tmp_path) == ["after the hangup"], timeout=20)
        code = ship.terminate()
    finally:
        ship.stop_quietly()
    assert code == 0, ship.log()


def post(port: int, body: bytes) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/logs", body, {"Content-Type": "application/x-ndjson"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_ingest_keeps_accepting_during_the_quiet_period_and_delivers_it(tmp_path: Path) -> None:
    port = free_port()
    ship = shipper(tmp_path, "--drain-quiet", "1s", inputs=[f"http://127.0.0.1:{port}"])
    sent: list[str] = []
    try:
        ship.wait_ready()
        ship.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        # Requests keep coming for 2 s after SIGTERM, each within the quiet period of the last.
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            text = f"after sigterm {len(sent)}"
            status, _ = post(port, json.dumps({"message": text}).encode() + b"\n")
            assert status == 202
            sent.append(text)
            time.sleep(0.2)
        code = ship.proc.wait(30)  # type: ignore[union-attr]
    finally:
        ship.stop_quietly()
    assert code == 0, ship.log()
    assert len(sent) >= 5
    assert messages(tmp_path) == sent


def test_ingest_answers_503_with_retry_after_once_the_quiet_period_is_over(tmp_path: Path) -> None:
    # The output is down, so the drain goes on delivering after the quiet period ends: the
    # server is still there, and must refuse new work rather than take it and lose it.
    port = free_port()
    dead = free_port()
    ship = ShipperProcess(
        ["--input", f"http://127.0.0.1:{port}", "--output", f"http://127.0.0.1:{dead}/",
         "--state-dir", str(tmp_path / "st"), "--drain-quiet", "500ms",
         "--shutdown-timeout", "20s"],
        tmp_path / "ship.log",
    ).start()  # fmt: skip
    try:
        ship.wait_ready()
        assert post(port, b'{"message": "before"}\n')[0] == 202
        ship.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        time.sleep(1.5)
        status, headers = post(port, b'{"message": "too late"}\n')
        assert status == 503
        assert int(headers["Retry-After"]) > 0
        assert ship.metric("sidekick_ship_ingest_requests_total", code="503") == 1
        ship.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        ship.proc.wait(10)  # type: ignore[union-attr]
    finally:
        ship.stop_quietly()
    # The refused request was not stored: the spool holds only what got 202.
    spool = b"".join(p.read_bytes() for p in (tmp_path / "st" / "spool").rglob("*.ndjson"))
    assert (b"before" in spool, b"too late" in spool) == (True, False)


def test_sigterm_never_waits_out_the_timeout_when_nothing_is_left(tmp_path: Path) -> None:
    # Ingest and a file input together, both idle: the drain ends at the quiet period, not at
    # --shutdown-timeout.
    port = free_port()
    ship = shipper(
        tmp_path,
        "--drain-quiet",
        "1s",
        "--shutdown-timeout",
        "60s",
        inputs=[f"file://{tmp_path / 'logs'}/*.log", f"http://127.0.0.1:{port}"],
    )
    try:
        ship.wait_ready()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        started = time.monotonic()
        code = ship.terminate(timeout=30)
        took = time.monotonic() - started
    finally:
        ship.stop_quietly()
    assert code == 0, ship.log()
    assert took < 1.5, f"took {took:.2f}s"
