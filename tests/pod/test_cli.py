"""User mistakes on the command line of ``up``, ``logs`` and ``down``: one sentence, exit 2."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import SIDEKICK

QUICK = """\
apiVersion: v1
kind: Pod
metadata: {name: quick}
spec:
  restartPolicy: Never
  containers: [{name: a, command: ["true"]}]
"""


def sidekick(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIDEKICK, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``sidekick: error:`` line of a usage error (no traceback, no usage text)."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sidekick: error: "), result.stderr
    return lines[0]


def test_missing_manifest_file_is_named(tmp_path: Path) -> None:
    line = one_error(sidekick(tmp_path, "up", "nope.yaml", "--run-dir", "run"))
    assert "'nope.yaml' cannot be read (No such file or directory); check the path" in line


def test_directory_given_as_manifest_is_named(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    line = one_error(sidekick(tmp_path, "up", "manifests", "--run-dir", "run"))
    assert "'manifests' cannot be read (Is a directory)" in line


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x\n")
    line = one_error(sidekick(tmp_path, "up", "pod.yaml", "--run-dir", "run"))
    assert line == (
        "sidekick: error: pod.yaml: not valid YAML at line 4, column 1: expected ',' or '}', "
        "but got '<stream end>' (while parsing a flow mapping that starts at line 3, "
        "column 11); fix the YAML syntax there"
    )


def test_manifest_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_bytes(b"kind: Pod\n\xff\n")
    line = one_error(sidekick(tmp_path, "up", "pod.yaml", "--run-dir", "run"))
    assert "'pod.yaml' is not UTF-8 text (byte 0xff at offset 10); save it as UTF-8" in line


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("busybox", "--set-image 'busybox' is not IMAGE=COMMAND"),
        ("=sleep 1", "--set-image '=sleep 1' is not IMAGE=COMMAND"),
        ("busybox=", "--set-image 'busybox=' gives no command"),
        ("busybox=sh -c 'x", "cannot be split into words (No closing quotation); fix the quoting"),
    ],
)
def test_unusable_set_image_is_refused_before_anything_runs(
    tmp_path: Path, flag: str, says: str
) -> None:
    (tmp_path / "pod.yaml").write_text(QUICK)
    line = one_error(sidekick(tmp_path, "up", "pod.yaml", "--run-dir", "run", "--set-image", flag))
    assert says in line
    assert not (tmp_path / "run").exists()


def test_help_texts_name_arguments_exit_codes_and_defaults(tmp_path: Path) -> None:
    up = sidekick(tmp_path, "up", "--help").stdout
    assert "up [OPTIONS] FILE..." in up
    assert "Exit codes: 0 after a stop" in up
    assert "--set-image IMAGE=COMMAND" in up
    assert "--admin-addr HOST:PORT|off" in up
    assert "--shutdown-timeout DURATION" in up
    logs = sidekick(tmp_path, "logs", "--help").stdout
    assert "-c, --container CONTAINER" in logs
    assert "--tail N" in logs
    down = sidekick(tmp_path, "down", "--help").stdout
    assert "--timeout DURATION" in down


BOMB_LEVELS = 9  # 9**10 "lol"s once expanded


def alias_bomb() -> str:
    labels = ['    l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, BOMB_LEVELS + 1):
        labels.append(f"    l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]")
    return QUICK.replace(
        "metadata: {name: quick}\n", "metadata:\n  name: quick\n  labels:\n"
    ).replace("spec:", "\n".join(labels) + "\nspec:")


def limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_yaml_alias_bomb_is_refused_quickly_under_a_memory_limit(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    started = time.monotonic()
    result = subprocess.run(
        [*SIDEKICK, "up", "bomb.yaml", "--run-dir", "run"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        preexec_fn=limit_memory,
    )
    took = time.monotonic() - started
    line = one_error(result)
    assert line == (
        "sidekick: error: manifest 'bomb.yaml': document 1 has more than 1000000 values once "
        "its YAML aliases (*name) are expanded; write it out with fewer aliases"
    )
    assert took < 30, took


def test_manifest_over_the_size_limit_is_refused_from_a_file_and_from_stdin(
    tmp_path: Path,
) -> None:
    big = QUICK + "#" + "x" * (8 * 1024 * 1024) + "\n"
    (tmp_path / "big.yaml").write_text(big)
    line = one_error(sidekick(tmp_path, "up", "big.yaml", "--run-dir", "run"))
    assert line.endswith("manifest 'big.yaml' is larger than 8 MiB; split it into smaller files")
    result = subprocess.run(
        [*SIDEKICK, "up", "-", "--run-dir", "run"],
        input=big,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert one_error(result).endswith(
        "manifest '-' is larger than 8 MiB; split it into smaller files"
    )


def test_manifest_with_a_few_anchors_and_aliases_runs(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\n"
        "kind: Pod\n"
        "metadata: {name: anchors}\n"
        "spec:\n"
        "  restartPolicy: Never\n"
        "  containers:\n"
        "  - &base\n"
        "    name: first\n"
        '    command: ["sh", "-c", "echo $GREETING"]\n'
        "    env: &env\n"
        "    - {name: GREETING, value: hello}\n"
        "  - <<: *base\n"
        "    name: second\n"
        "    env: *env\n"
    )
    result = sidekick(tmp_path, "up", "pod.yaml", "--run-dir", "run", "--admin-addr", "off")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        "anchors/first  | hello",
        "anchors/second | hello",
    ]
