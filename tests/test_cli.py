"""The ``sidekick`` command group: every command is there, and each imports only its own module."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sidekick.cli import COMMANDS

# Run in a fresh interpreter: which modules a command imports is the behaviour under test.
PROBE = """
import sys
from sidekick.cli import main
try:
    main([*sys.argv[1:], "--help"])
except SystemExit:
    pass
print(" ".join(sorted(m for m in sys.modules if m.startswith("sidekick."))))
"""


def loaded(*argv: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60, check=True
    )
    return set(out.stdout.splitlines()[-1].split())


def test_up_does_not_import_the_shipper_or_the_syncer() -> None:
    modules = loaded("up")
    assert "sidekick.cli.pod" in modules
    assert not {m for m in modules if m.startswith(("sidekick.ship", "sidekick.cli.ship"))}
    assert not {m for m in modules if m.startswith(("sidekick.sync", "sidekick.cli.sync"))}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_runs_its_own_help(name: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sidekick", name, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Usage: python -m sidekick {name} ")


def test_group_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sidekick", "--help"], capture_output=True, text=True, timeout=60
    )
    listed = out.stdout.split("Commands:", 1)[1].split()
    assert set(COMMANDS) <= set(listed)


def test_unknown_command_is_a_usage_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sidekick", "nope"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "No such command 'nope'" in out.stderr
