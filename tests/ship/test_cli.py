"""``sidekick ship`` user mistakes: one sentence on stderr, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SIDEKICK
from tests.ship.helpers import first_stdout_record


def ship(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIDEKICK, "ship", "--admin-addr", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def assert_one_sentence(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sidekick: error: ")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture
def base(tmp_path: Path) -> list[str]:
    return ["--input", f"file://{tmp_path}/*.log", "--state-dir", str(tmp_path / "state")]


def test_unknown_output_scheme_is_one_sentence_and_exit_2(base: list[str]) -> None:
    assert_one_sentence(ship(*base, "--output", "ftp://x/y"), "ftp://x/y", "unknown scheme")


def test_unknown_input_scheme_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    result = ship(
        "--input", "s3://bucket/x", "--output", "stdout:", "--state-dir", str(tmp_path / "s")
    )
    assert_one_sentence(result, "s3://bucket/x")


def test_state_dir_that_cannot_be_created_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = ship(
        "--input",
        f"file://{tmp_path}/*.log",
        "--output",
        "stdout:",
        "--state-dir",
        str(blocker / "state"),
    )
    assert_one_sentence(result, "--state-dir", str(blocker / "state"))


def test_state_dir_that_is_a_file_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = ship(
        "--input", f"file://{tmp_path}/*.log", "--output", "stdout:", "--state-dir", str(blocker)
    )
    assert_one_sentence(result, "--state-dir", "not a directory")


def test_bad_multiline_regex_is_one_sentence_and_exit_2(base: list[str]) -> None:
    assert_one_sentence(
        ship(*base, "--output", "stdout:", "--multiline-start", "(unclosed"), "(unclosed"
    )


def test_bad_parser_regex_is_one_sentence_and_exit_2(base: list[str]) -> None:
    assert_one_sentence(ship(*base, "--output", "stdout:", "--parser", "regex:(?P<x"), "regex")


def test_bad_field_is_one_sentence_and_exit_2(base: list[str]) -> None:
    assert_one_sentence(ship(*base, "--output", "stdout:", "--field", "novalue"), "--field")


def test_missing_output_is_one_sentence_and_exit_2(base: list[str]) -> None:
    assert_one_sentence(ship(*base), "--output")


def test_bad_size_is_one_sentence_and_exit_2(base: list[str]) -> None:
    assert_one_sentence(ship(*base, "--output", "stdout:", "--max-inflight-bytes", "lots"), "lots")


def test_state_dir_from_environment_is_used(tmp_path: Path) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("")
    env = {**os.environ, "SIDEKICK_SHIP_STATE_DIR": str(blocker)}
    result = ship("--input", f"file://{tmp_path}/*.log", "--output", "stdout:", env=env)
    assert_one_sentence(result, str(blocker))


def test_downward_api_environment_becomes_k8s_fields(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "POD_NAME": "web-7f9c",
        "POD_NAMESPACE": "shop",
        "CONTAINER_NAME": "nginx",
    }
    record = first_stdout_record(tmp_path, "--field", "env=prod", env=env)
    assert record["k8s.pod.name"] == "web-7f9c"
    assert record["k8s.namespace.name"] == "shop"
    assert record["k8s.container.name"] == "nginx"
    assert record["env"] == "prod"
    assert record["host.name"]


def test_field_flags_add_to_the_config_files_fields(tmp_path: Path) -> None:
    config = tmp_path / "ship.yaml"
    config.write_text("ship:\n  fields: {team: shop, env: dev}\n")
    record = first_stdout_record(tmp_path, "--config", str(config), "--field", "env=prod")
    assert (record["team"], record["env"]) == ("shop", "prod")
