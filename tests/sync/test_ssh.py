"""The SSH transport settings reach ``ssh``.

No SSH server is installed on the test machines, so ``ssh`` here is a stand-in script (the
way git's own test suite checks its SSH transport): it records the arguments git gave it
and runs the remote command locally. What is checked is what sidekick controls: the keys,
the known_hosts file and batch mode on ssh's command line.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sidekick.sync.config import SyncConfig
from sidekick.sync.git import Redactor
from sidekick.sync.git_setup import build_git
from sidekick.sync.syncer import Syncer
from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, Upstream

FAKE_SSH = """#!/bin/sh
printf '%s\\n' "$@" > "{log}"
for last; do :; done
exec sh -c "$last"
"""


async def test_ssh_command_carries_the_keys_and_known_hosts(
    upstream: Upstream, tmp_path: Path
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "ssh-args"
    (bindir / "ssh").write_text(FAKE_SSH.format(log=log))
    (bindir / "ssh").chmod(0o755)
    for name in ("key1", "key2", "known_hosts"):
        (tmp_path / name).write_text("x\n")
    cfg = SyncConfig(
        repo=f"ssh://git@git.example.invalid{upstream.path}",
        root=str(tmp_path / "root"),
        link="site",
        ssh_key_files=[str(tmp_path / "key1"), str(tmp_path / "key2")],
        ssh_known_hosts_file=str(tmp_path / "known_hosts"),
    )
    env = {**GIT_ENV, "PATH": f"{bindir}{os.pathsep}{GIT_ENV['PATH']}"}
    syncer = Syncer(cfg, git=build_git(cfg, env, Redactor()))
    assert await syncer.sync_once() == "published"
    assert (tmp_path / "root" / "site" / "index.html").read_text() == "rev 0\n"
    args = log.read_text().splitlines()
    assert ["-i", str(tmp_path / "key1")] == args[args.index("-i") : args.index("-i") + 2]
    assert str(tmp_path / "key2") in args
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in args
    assert "StrictHostKeyChecking=yes" in args and "BatchMode=yes" in args
    assert "git@git.example.invalid" in args
    syncer.aclose()


async def test_ssh_known_hosts_false_turns_host_checking_off(
    upstream: Upstream, tmp_path: Path
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "ssh-args"
    (bindir / "ssh").write_text(FAKE_SSH.format(log=log))
    (bindir / "ssh").chmod(0o755)
    cfg = SyncConfig(
        repo=f"ssh://git@git.example.invalid{upstream.path}",
        root=str(tmp_path / "root"),
        ssh_known_hosts=False,
    )
    env = {**GIT_ENV, "PATH": f"{bindir}{os.pathsep}{GIT_ENV['PATH']}"}
    syncer = Syncer(cfg, git=build_git(cfg, env, Redactor()))
    assert await syncer.sync_once() == "published"
    args = log.read_text().splitlines()
    assert "StrictHostKeyChecking=no" in args and "UserKnownHostsFile=/dev/null" in args
    syncer.aclose()


def test_a_users_git_ssh_command_is_kept_and_given_the_keys(
    upstream: Upstream, tmp_path: Path
) -> None:
    """git-sync starts from $GIT_SSH_COMMAND when it is set (a port, a proxy, a config file)
    and appends its own options; it does not replace it."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "ssh-args"
    (bindir / "my-ssh").write_text(FAKE_SSH.format(log=log))
    (bindir / "my-ssh").chmod(0o755)
    (tmp_path / "key").write_text("x\n")
    proc = subprocess.run(
        [
            *SIDEKICK,
            "sync",
            "--one-time",
            "--repo",
            f"ssh://git@git.example.invalid{upstream.path}",
            "--root",
            str(tmp_path / "root"),
            "--ssh-key-file",
            str(tmp_path / "key"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**GIT_ENV, "GIT_SSH_COMMAND": f"{bindir / 'my-ssh'} -p 2222"},
    )
    assert proc.returncode == 0, proc.stderr
    args = log.read_text().splitlines()
    assert args[:2] == ["-p", "2222"]
    assert ["-i", str(tmp_path / "key")] == args[args.index("-i") : args.index("-i") + 2]
