"""What a container runs when it leaves part of its command to the image: Kubernetes' rules for
``command``/``args`` over ENTRYPOINT/CMD, from the official images' table or from podman."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidekick.core.errors import ConfigError
from sidekick.pod.manifest import read_manifests
from tests.conftest import SIDEKICK
from tests.pod.conftest import Up


def argv_of(tmp_path: Path, container: str, **flags: str) -> list[str]:
    """The argv ``up`` would run for one container given as a YAML flow mapping."""
    path = tmp_path / "pod.yaml"
    path.write_text(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers: [{container}]\n"
    )
    c = read_manifests([str(path)], set_image=flags or None).pods[0].containers[0]
    return [*c.command, *c.args]


def refusal(tmp_path: Path, container: str) -> str:
    with pytest.raises(ConfigError) as exc:
        argv_of(tmp_path, container)
    return str(exc.value)


# --- the rules, with the official images' table ----------------------------------------------


def test_args_without_command_are_the_command_on_an_image_without_entrypoint(
    tmp_path: Path,
) -> None:
    c = "{name: c, image: 'busybox:1.36', args: [/bin/sh, -c, 'echo hi']}"
    assert argv_of(tmp_path, c) == ["/bin/sh", "-c", "echo hi"]


def test_neither_command_nor_args_runs_the_images_cmd(tmp_path: Path) -> None:
    assert argv_of(tmp_path, "{name: c, image: python:3.12-slim}") == ["python3"]
    assert argv_of(tmp_path, "{name: c, image: docker.io/library/ubuntu:24.04}") == ["/bin/bash"]
    assert argv_of(tmp_path, "{name: c, image: alpine}") == ["/bin/sh"]
    assert argv_of(tmp_path, "{name: c, image: debian:bookworm}") == ["bash"]
    assert argv_of(tmp_path, "{name: c, image: registry.k8s.io/busybox}") == ["sh"]


def test_command_without_args_drops_the_images_cmd(tmp_path: Path) -> None:
    assert argv_of(tmp_path, "{name: c, image: python, command: [python3, -V]}") == [
        "python3",
        "-V",
    ]


def test_golang_alpine_tags_inherit_alpines_cmd(tmp_path: Path) -> None:
    assert argv_of(tmp_path, "{name: c, image: golang:1.22}") == ["bash"]
    assert argv_of(tmp_path, "{name: c, image: golang:1.22-alpine}") == ["/bin/sh"]


def test_entrypoint_script_puts_its_server_before_options_and_runs_programs(
    tmp_path: Path,
) -> None:
    # node's docker-entrypoint.sh: an option or a file that is not a program goes to node.
    assert argv_of(tmp_path, "{name: c, image: node:22, args: [--version]}") == [
        "node",
        "--version",
    ]
    assert argv_of(tmp_path, "{name: c, image: node:22, args: [server.js]}") == [
        "node",
        "server.js",
    ]
    assert argv_of(tmp_path, "{name: c, image: node:22, args: [sh, -c, 'echo x']}") == [
        "sh",
        "-c",
        "echo x",
    ]
    assert argv_of(tmp_path, "{name: c, image: node:22}") == ["node"]
    # nginx's runs its arguments as they are.
    assert argv_of(tmp_path, "{name: c, image: nginx, args: [sh, -c, 'echo x']}") == [
        "sh",
        "-c",
        "echo x",
    ]


def test_a_program_the_image_names_that_this_machine_lacks_is_refused(tmp_path: Path) -> None:
    text = refusal(tmp_path, "{name: web, image: 'httpd:2.4'}")
    assert (
        "container 'web' has no command, and image 'httpd:2.4' runs httpd-foreground (from the "
        "official image's CMD), but 'httpd-foreground' is not on this machine" in text
    )
    text = refusal(tmp_path, "{name: cache, image: redis, args: [--port, '7000']}")
    assert "runs redis-server --port 7000 (from the official image's ENTRYPOINT)" in text


def test_another_publishers_image_of_the_same_name_is_not_assumed(tmp_path: Path) -> None:
    text = refusal(tmp_path, "{name: c, image: example/python, args: [-c, 'print(1)']}")
    assert "does not know the ENTRYPOINT of image 'example/python'" in text


# --- the refusal's fix, followed literally ------------------------------------------------------

UNKNOWN = """
apiVersion: v1
kind: Pod
metadata: {name: tools}
spec:
  restartPolicy: Never
  containers:
    - name: run
      image: registry.example/team/tools:2.1
      args: [/bin/sh, -c, "echo args ran as the command"]
"""


def test_the_refusals_suggested_flag_works_when_followed_literally(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(UNKNOWN)
    base = [*SIDEKICK, "up", "pod.yaml", "--run-dir", "run", "--admin-addr", "off"]
    refused = subprocess.run(base, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode == 2
    line = refused.stderr.strip()
    assert line.startswith("sidekick: error: ") and "\n" not in line
    match = re.search(r"run with (--set-image '[^']*')", line)
    assert match, line
    assert match.group(1) == "--set-image 'registry.example/team/tools:2.1=[]'"
    ran = subprocess.run(
        [*base, *shlex.split(match.group(1))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert "tools/run | args ran as the command" in ran.stdout


def test_set_image_with_an_entrypoint_gets_the_args_appended(tmp_path: Path) -> None:
    c = "{name: c, image: 'registry.example/x:1', args: [one, two]}"
    assert argv_of(tmp_path, c, **{"registry.example/x:1": "echo"}) == ["echo", "one", "two"]


def test_set_image_without_entrypoint_and_without_args_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
        "spec: {containers: [{name: c, image: 'registry.example/x:1'}]}\n"
    )
    with pytest.raises(ConfigError) as exc:
        read_manifests([str(path)], set_image={"registry.example/x:1": "[]"})
    assert "container 'c' has neither command nor args" in str(exc.value)


def test_busybox_args_run_under_up(start_up: Callable[..., Up]) -> None:
    up = start_up(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: box}
        spec:
          restartPolicy: Never
          containers:
            - name: main
              image: busybox:1.36
              args: [/bin/sh, -c, "echo from busybox args"]
        """
    )
    assert up.wait_exit() == 0, up.err
    assert "box/main | from busybox args" in up.out


# --- podman's own record of an image --------------------------------------------------------------


@pytest.fixture
def podman_image(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Import a tiny image with the given config into podman (nothing is pulled)."""
    assert shutil.which("podman"), "podman is not installed; run scripts/system-deps.sh"
    made: list[str] = []
    rootfs = tmp_path / "rootfs.tar"
    marker = tmp_path / "marker"
    marker.write_text("a tiny image\n")
    with tarfile.open(rootfs, "w") as tar:
        tar.add(marker, arcname="marker")

    def make(tag: str, *changes: str) -> str:
        args = ["podman", "import"]
        for change in changes:
            args += ["--change", change]
        subprocess.run([*args, str(rootfs), tag], check=True, capture_output=True, timeout=120)
        made.append(tag)
        return tag

    yield make
    for tag in made:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, timeout=120)


def test_podmans_entrypoint_and_cmd_are_used_by_the_rules(
    podman_image: Callable[..., str], start_up: Callable[..., Up]
) -> None:
    tag = podman_image(
        f"localhost/sidekick-test-defaults:{os.getpid()}",
        'ENTRYPOINT ["echo", "from-entrypoint"]',
        'CMD ["from-cmd"]',
    )
    up = start_up(
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: inspected}}
        spec:
          restartPolicy: Never
          containers:
            - {{name: both, image: "{tag}"}}
            - {{name: args, image: "{tag}", args: [given-args]}}
            - {{name: cmd, image: "{tag}", command: [echo, own-command]}}
        """
    )
    assert up.wait_exit() == 0, up.err
    assert "inspected/both | from-entrypoint from-cmd" in up.out
    assert "inspected/args | from-entrypoint given-args" in up.out
    assert "inspected/cmd  | own-command" in up.out


def test_podmans_record_wins_over_the_table(
    podman_image: Callable[..., str], tmp_path: Path
) -> None:
    tag = podman_image(
        f"docker.io/library/busybox:sidekick-test-{os.getpid()}", 'CMD ["echo", "local busybox"]'
    )
    short = tag.removeprefix("docker.io/library/")
    assert argv_of(tmp_path, f"{{name: c, image: '{short}'}}") == ["echo", "local busybox"]


def test_an_image_podman_does_not_have_falls_back_to_the_table(tmp_path: Path) -> None:
    assert shutil.which("podman")
    assert argv_of(tmp_path, "{name: c, image: 'busybox:no-such-local-tag'}") == ["sh"]


def test_podman_image_whose_program_is_not_here_is_refused(
    podman_image: Callable[..., str], tmp_path: Path
) -> None:
    tag = podman_image(f"localhost/sidekick-test-app:{os.getpid()}", 'ENTRYPOINT ["/app/server"]')
    text = refusal(tmp_path, f"{{name: c, image: '{tag}'}}")
    assert (
        f"image '{tag}' runs /app/server (from podman image inspect's ENTRYPOINT), but "
        "'/app/server' is not on this machine" in text
    )
