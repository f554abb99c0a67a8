"""``sidekick ship --check``: builds what a start would, prints the graph, exits 0 or 2, and
reads, sends and locks nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from tests.conftest import SIDEKICK
from tests.ship.helpers import ShipperProcess, read_ndjson, wait_for_sync


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIDEKICK, "ship", "--check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def one_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sidekick: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_check_prints_the_shorthand_graph_and_reads_nothing(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("one\ntwo\n")
    out = tmp_path / "out.ndjson"
    result = run(
        "--input",
        f"file://{logs}/*.log?parser=json",
        "--output",
        f"file://{out}",
        "--output",
        "stdout:",
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"  file://{logs}/*.log (parser json)" in lines
    assert f"  file://{logs}/*.log -> file://{out}" in lines
    assert f"  file://{logs}/*.log -> stdout:" in lines
    assert lines[-1] == "The configuration is valid."
    # Nothing was read or sent: no output file, no checkpoint.
    assert not out.exists()
    assert os.listdir(tmp_path / "state") == []


def test_check_prints_a_graph_from_the_config_file_with_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "ship.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "ship": {
                    "inputs": {"web": f"file://{tmp_path}/*.log"},
                    "transforms": {"quiet": {"type": "filter", "inputs": ["web"], "drop": "false"}},
                    "outputs": {"all": {"url": "stdout:", "inputs": ["quiet"]}},
                }
            }
        )
    )
    env = {**os.environ, "SIDEKICK_SHIP_STATE_DIR": str(tmp_path / "state")}
    result = run("--config", str(config), env=env)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "  quiet filter" in text
    assert "  web -> quiet" in text and "  quiet -> all" in text
    assert (tmp_path / "state").is_dir()


def test_check_refuses_what_a_start_would(tmp_path: Path) -> None:
    base = ["--input", f"file://{tmp_path}/*.log", "--state-dir", str(tmp_path / "state")]
    one_error(run(*base, "--output", "ftp://x"), "unknown scheme")
    one_error(run(*base, "--output", "stdout:", "--parser", "regex:(("), "regex")
    one_error(run(*base, "--output", "stdout:", "--multiline-start", "(("))


def test_check_refuses_an_unusable_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run(
        "--input", f"file://{tmp_path}/*.log", "--output", "stdout:", "--state-dir", str(blocker)
    )
    one_error(result, "--state-dir", "not a directory")


def test_check_refuses_an_unreadable_ingest_token_file(tmp_path: Path) -> None:
    result = run(
        "--input",
        "http://127.0.0.1:0",
        "--output",
        "stdout:",
        "--state-dir",
        str(tmp_path / "state"),
        "--ingest-token-file",
        str(tmp_path / "missing-token"),
    )
    one_error(result, "--ingest-token-file", "missing-token")


def test_check_refuses_an_unreadable_output_credential_file(tmp_path: Path) -> None:
    config = tmp_path / "ship.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "ship": {
                    "outputs": [
                        {
                            "url": "http://127.0.0.1:9/ingest",
                            "options": {"bearer_token_file": str(tmp_path / "no-token")},
                        }
                    ]
                }
            }
        )
    )
    result = run(
        "--config",
        str(config),
        "--input",
        f"file://{tmp_path}/*.log",
        "--state-dir",
        str(tmp_path / "state"),
    )
    one_error(result, "bearer_token_file")


def test_check_does_not_take_the_state_dir_lock_of_a_running_shipper(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("one\n")
    out = tmp_path / "out.ndjson"
    args = ["--input", f"file://{logs}/*.log", "--output", f"file://{out}"]
    args += ["--state-dir", str(tmp_path / "state")]
    shipper = ShipperProcess(args, tmp_path / "shipper.log").start()
    try:
        shipper.wait_ready()
        wait_for_sync(lambda: len(read_ndjson(out)) == 1)
        result = run(*args)
        assert result.returncode == 0, result.stderr
        # The running shipper still works.
        with open(logs / "a.log", "a") as f:
            f.write("two\n")
        wait_for_sync(lambda: len(read_ndjson(out)) == 2)
        assert shipper.terminate() == 0
    finally:
        shipper.stop_quietly()


def test_output_urls_in_the_config_expand_environment_variables(tmp_path: Path) -> None:
    config = tmp_path / "ship.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "ship": {
                    "inputs": {"web": f"file://{tmp_path}/*.log"},
                    "outputs": {
                        "everything": {"url": "$(LOG_OUTPUT)", "inputs": ["web"]},
                        "unset": {
                            "url": f"file://{tmp_path}/$(NOT_SET_ANYWHERE)$$x",
                            "inputs": ["web"],
                        },
                        "again": {"url": "stdout:", "inputs": ["web"]},
                    },
                }
            }
        )
    )
    env = {**os.environ, "LOG_OUTPUT": "stdout:", "SIDEKICK_SHIP_STATE_DIR": str(tmp_path / "s")}
    env.pop("NOT_SET_ANYWHERE", None)
    result = run("--config", str(config), env=env)
    assert result.returncode == 0, result.stderr
    # Two named outputs share stdout:; an unset variable stays as written, $$ is one $.
    assert "  everything stdout:" in result.stdout
    assert "  again stdout:" in result.stdout
    assert f"  unset file://{tmp_path}/$(NOT_SET_ANYWHERE)$x" in result.stdout
