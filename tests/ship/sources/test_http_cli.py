"""User mistakes around the ingest input: one sentence on stderr, exit code 2, no traceback."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.conftest import SIDEKICK, free_port


def ship(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [*SIDEKICK, "ship", "--output", "stdout:", "--state-dir", str(tmp_path / "state")]
    cmd += ["--admin-addr", "127.0.0.1:0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def assert_clear_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("sidekick: error:")]
    for word in words:
        assert word in error


def test_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = ship(tmp_path, "--input", f"http://127.0.0.1:{port}")
    assert_clear_error(result, f"127.0.0.1:{port}", "Address already in use", "another")


def test_https_ingest_is_refused_with_the_alternative(tmp_path: Path) -> None:
    result = ship(tmp_path, "--input", f"https://127.0.0.1:{free_port()}")
    assert_clear_error(result, "https", "http://HOST:PORT")


def test_unreadable_token_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-token"
    result = ship(
        tmp_path,
        "--input",
        f"http://127.0.0.1:{free_port()}",
        "--ingest-token-file",
        str(missing),
    )
    assert_clear_error(result, "--ingest-token-file", str(missing))


def test_empty_token_file_is_a_clear_error(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("\n")
    result = ship(
        tmp_path, "--input", f"http://127.0.0.1:{free_port()}", "--ingest-token-file", str(token)
    )
    assert_clear_error(result, "empty")


def test_input_with_a_path_is_a_clear_error(tmp_path: Path) -> None:
    result = ship(tmp_path, "--input", f"http://127.0.0.1:{free_port()}/ingest")
    assert_clear_error(result, "HOST:PORT", "/v1/logs")
