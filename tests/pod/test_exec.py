"""``sidekick exec`` with the real CLI against a running ``sidekick up``."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from tests.conftest import SIDEKICK
from tests.pod.conftest import Up
from tests.pod.examples import example


def _exec(up: Up, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIDEKICK, "exec", "--run-dir", str(up.run_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=up.dir,
    )


@pytest.fixture
def running(start_up: Callable[..., Up]) -> Up:
    up = start_up(example("exec-target.yaml"))
    for name in ("main", "helper"):
        up.wait_for(
            lambda name=name: up.container(name)["state"] == "Running", what=f"{name} running"
        )
    return up


def test_default_container_environment_directory_and_exit_code(running: Up) -> None:
    result = _exec(running, "shell-demo", "--", "sh", "-c", 'echo "$GREETING"; pwd; exit 7')
    assert result.returncode == 7
    lines = result.stdout.splitlines()
    assert lines[0] == "hello from main"
    assert lines[1] == str(running.run_dir.resolve() / "shell-demo" / "volumes" / "shared-data")
    assert result.stderr.splitlines() == [
        'Defaulted container "main" out of: main, helper, init-data (init)'
    ]


def test_paths_are_translated_like_the_containers_own(running: Up) -> None:
    result = _exec(running, "shell-demo", "-c", "main", "--", "cat", "/pod-data/index.html")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from the init container\n"
    assert result.stderr == ""  # -c given: no note


def test_other_container_by_name(running: Up) -> None:
    result = _exec(running, "shell-demo", "-c", "helper", "--", "printenv", "GREETING", "HOSTNAME")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hello from helper", "shell-demo"]


def test_command_enters_the_containers_mount_namespace(running: Up) -> None:
    # The ConfigMap volume is read-only only inside main's own mount namespace.
    result = _exec(running, "shell-demo", "-c", "main", "--", "sh", "-c", "touch /etc/app/x")
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
    assert _exec(running, "shell-demo", "-c", "main", "--", "cat", "/etc/app/app.conf").stdout == (
        "level=info\n"
    )


def test_command_is_one_of_the_containers_processes(running: Up) -> None:
    result = _exec(running, "shell-demo", "-c", "helper", "--", "printenv", "SIDEKICK_CONTAINER")
    assert result.stdout == "shell-demo/helper\n"


def test_mistakes_are_one_line_with_exit_2(running: Up) -> None:
    cases = [
        (("shell-demo", "-c", "nope", "--", "true"), "container 'nope' is not in pod 'shell-demo'"),
        (
            ("shell-demo", "-c", "init-data", "--", "true"),
            "container 'init-data' of pod 'shell-demo' is not running (Terminated: Completed)",
        ),
        (("ghost", "--", "true"), "pod 'ghost' not found in run dir"),
        (("shell-demo", "-c", "main", "--", "no-such-program"), "'no-such-program' is not found"),
    ]
    for args, message in cases:
        result = _exec(running, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_no_exec_after_the_run_has_ended(running: Up) -> None:
    assert running.stop() == 0
    result = _exec(running, "shell-demo", "--", "true")
    assert result.returncode == 2
    assert "pod 'shell-demo' is not running (its sidekick up has ended)" in result.stderr
