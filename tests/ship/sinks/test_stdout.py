"""``stdout:`` refuses options like every other output (one sentence, exit code 2), and a\nstdout nobody reads blocks neither the admin server nor the drain."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.sinks import OutputSpec, create_sink
from tests.conftest import SIDEKICK, free_port
from tests.ship.helpers import wait_for_sync
from tests.ship.test_cli import assert_one_sentence, ship


def test_stdout_takes_no_options() -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) gzip; stdout: takes no options"):
        create_sink(OutputSpec("stdout:", {"gzip": True}))


@pytest.mark.parametrize("url", ["stdout:?gzip=true", "stdout:/dev/stderr", "stdout://x"])
def test_stdout_with_a_path_or_query_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="stdout: takes no path or options"):
        create_sink(OutputSpec(url))


@pytest.mark.parametrize("url", ["stdout:", "stdout://", "STDOUT:"])
def test_plain_stdout_is_accepted(url: str) -> None:
    assert create_sink(OutputSpec(url)).name == "stdout:"


def test_cli_refuses_a_stdout_option_in_one_sentence(tmp_path: Path) -> None:
    config = tmp_path / "ship.yaml"
    config.write_text("ship:\n  outputs:\n    - url: 'stdout:'\n      options: {fsync: true}\n")
    result = ship(
        "--config", str(config),
        "--input", f"file://{tmp_path}/*.log",
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    assert_one_sentence(result, "'stdout:'", "fsync", "takes no options")


def test_a_stdout_nobody_reads_leaves_health_and_the_drain_working(tmp_path: Path) -> None:
    # A full pipe blocks the write: done on the event loop it froze the admin server and
    # the SIGTERM drain until a reader came back.
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(b"".join(b"%09d\n" % i for i in range(100_000)))
    read_end, write_end = os.pipe()
    port = free_port()
    log_path = tmp_path / "ship.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*SIDEKICK, "ship", "--input", f"file://{logs}/*.log", "--output", "stdout:",
             "--state-dir", str(tmp_path / "state"), "--admin-addr", f"127.0.0.1:{port}",
             "--shutdown-timeout", "3s"],
            stdout=write_end,
            stderr=log,
        )  # fmt: skip
    os.close(write_end)
    try:
        wait_for_sync(lambda: "Tailing" in log_path.read_text(), timeout=15)
        time.sleep(1)  # the pipe (64 KiB) is full long before 100,000 records
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        wait_for_sync(lambda: "Shutdown timeout" in log_path.read_text(), timeout=8)
        received = 0
        with os.fdopen(read_end, "rb") as reader:  # a reader again: the process can end
            read_end = -1
            for _line in reader:
                received += 1
        assert proc.wait(10) == 1  # the drain ran out of time
    finally:
        if read_end >= 0:
            os.close(read_end)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert 0 < received <= 100_000
    assert "Traceback" not in log_path.read_text()
