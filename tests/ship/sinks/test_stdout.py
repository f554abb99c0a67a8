"""``stdout:`` refuses options like every other output: one sentence, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.sinks import OutputSpec, create_sink
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
