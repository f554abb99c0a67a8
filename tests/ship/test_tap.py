"""Live tap: ``sidekick ship-tap COMPONENT`` prints the records leaving a component of a
running shipper; only localhost is served; a reader that does not read never holds the
pipeline back."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import SIDEKICK, free_port
from tests.ship.helpers import ShipperProcess, read_ndjson, wait_for_sync


def start(tmp_path: Path, *extra: str) -> ShipperProcess:
    logs = tmp_path / "logs"
    logs.mkdir()
    config = tmp_path / "ship.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "ship": {
                    "state_dir": str(tmp_path / "state"),
                    "inputs": {"web": {"url": f"file://{logs}/*.log", "parser": "json"}},
                    "transforms": {
                        "no-probes": {
                            "type": "filter",
                            "inputs": ["web"],
                            "drop": 'record["path"] == "/healthz"',
                        }
                    },
                    "outputs": {
                        "all": {"url": f"file://{tmp_path}/out.ndjson", "inputs": ["no-probes"]}
                    },
                }
            }
        )
    )
    shipper = ShipperProcess(["--config", str(config), *extra], tmp_path / "shipper.log")
    return shipper.start()


def write(tmp_path: Path, first: int, n: int) -> None:
    with open(tmp_path / "logs" / "app.log", "a") as f:
        for i in range(first, first + n):
            path = "/healthz" if i % 2 else "/x"
            f.write(json.dumps({"n": i, "path": path}) + "\n")


def tap(shipper: ShipperProcess, component: str, limit: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *SIDEKICK,
            "ship-tap",
            component,
            "--limit",
            str(limit),
            "--admin-addr",
            f"127.0.0.1:{shipper.port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_tapped(shipper: ShipperProcess, n: int) -> None:
    # The tap is open once the shipper logs it.
    wait_for_sync(lambda: shipper.log().count("Tap on") >= n, timeout=30)


def test_tap_prints_what_leaves_a_filter_and_what_enters_it(tmp_path: Path) -> None:
    shipper = start(tmp_path)
    try:
        shipper.wait_ready()
        after = tap(shipper, "no-probes", 5)
        before = tap(shipper, "web", 10)
        wait_tapped(shipper, 2)
        write(tmp_path, 0, 100)
        out_after, err = after.communicate(timeout=30)
        out_before, _ = before.communicate(timeout=30)
        assert after.returncode == 0, err
        got: list[dict[str, Any]] = [json.loads(line) for line in out_after.splitlines()]
        assert [r["n"] for r in got] == [0, 2, 4, 6, 8]
        assert [json.loads(line)["n"] for line in out_before.splitlines()] == list(range(10))
        assert shipper.terminate() == 0
    finally:
        shipper.stop_quietly()


def test_tap_of_an_unknown_component_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    shipper = start(tmp_path)
    try:
        shipper.wait_ready()
        result = tap(shipper, "nope", 1)
        _out, err = result.communicate(timeout=30)
        assert result.returncode == 2
        assert "no component 'nope'" in err and "Traceback" not in err
    finally:
        shipper.stop_quietly()


def test_tap_without_a_shipper_is_one_sentence_and_exit_2() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run(
        [*SIDEKICK, "ship-tap", "web", "--admin-addr", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "no shipper's admin server answers" in result.stderr


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address: str = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_tap_refuses_peers_other_than_localhost(tmp_path: Path) -> None:
    address = non_loopback_address()
    assert address is not None, "this machine needs a non-loopback IPv4 address"
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    # The admin server listens on every address, as it does by default.
    proc = subprocess.Popen(
        [*SIDEKICK, "ship", "--input", f"file://{logs}/*.log", "--output", "stdout:",
         "--state-dir", str(tmp_path / "state"), "--admin-addr", f"0.0.0.0:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def get(host: str) -> bytes:
            with socket.create_connection((host, port), timeout=10) as conn:
                conn.sendall(b"GET /tap/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                reply = b""
                while chunk := conn.recv(4096):
                    reply += chunk
            return reply

        def answers() -> bool:
            try:
                return get("127.0.0.1").startswith(b"HTTP/1.1 404")
            except OSError:
                return False

        wait_for_sync(answers, timeout=30)
        reply = get(address)
        assert reply.startswith(b"HTTP/1.1 403"), reply[:200]
        assert b"--tap-allow-remote" in reply
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_reader_that_does_not_read_never_holds_the_pipeline_back(tmp_path: Path) -> None:
    shipper = start(tmp_path)
    try:
        shipper.wait_ready()
        # A raw reader that asks for everything and never reads its socket.
        conn = socket.create_connection(("127.0.0.1", shipper.port))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.sendall(b"GET /tap/web HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            wait_tapped(shipper, 1)
            write(tmp_path, 0, 200_000)
            wait_for_sync(lambda: len(read_ndjson(tmp_path / "out.ndjson")) == 100_000, timeout=120)
            assert shipper.metric("sidekick_ship_tap_dropped_total") > 0
        finally:
            conn.close()
        time.sleep(0.2)
        assert shipper.terminate() == 0
    finally:
        shipper.stop_quietly()
