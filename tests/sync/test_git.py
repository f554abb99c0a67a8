"""The git runner: timeouts kill the whole process group; secrets are redacted."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from sidekick.sync.git import Git, GitError, Redactor
from sidekick.sync.syncer import default_link
from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, Upstream, git


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_timeout_kills_git_and_the_processes_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    fake = tmp_path / "fake-git"
    fake.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {pidfile}\nwait\n")
    fake.chmod(0o755)
    git = Git(str(fake))
    started = time.monotonic()
    with pytest.raises(GitError, match=r"did not finish within 0\.5s"):
        await git.run("fetch", cwd=tmp_path, timeout=0.5)
    assert time.monotonic() - started < 5
    child = int(pidfile.read_text())
    for _ in range(100):
        if not alive(child):
            break
        await asyncio.sleep(0.05)
    assert not alive(child)


async def test_failure_message_carries_git_stderr(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not a git repository"):
        await Git().run("rev-parse", "HEAD", cwd=tmp_path, timeout=10)


async def test_missing_git_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="point --git at it"):
        await Git(str(tmp_path / "no-git")).run("status", cwd=tmp_path, timeout=10)


def test_redactor_hides_a_password_in_a_url() -> None:
    text = "fatal: unable to access 'https://bob:hunter22@example.com/r.git/': 403"
    assert (
        Redactor()(text) == "fatal: unable to access 'https://bob:REDACTED@example.com/r.git/': 403"
    )


def test_redactor_hides_registered_secrets() -> None:
    r = Redactor()
    r.add("tok-123456")
    assert r("token tok-123456 refused") == "token REDACTED refused"


def test_default_link_is_the_leaf_of_the_repo_url() -> None:
    # git-sync's rule: the URL's last '/'-separated part, '.git' and all.
    assert default_link("https://github.com/org/site.git") == "site.git"
    assert default_link("git@github.com:org/site.git") == "site.git"
    assert default_link("git@github.com:site.git") == "git@github.com:site.git"
    assert default_link(Path("/srv/repos/docs").as_uri() + "/") == "docs"


def test_the_default_link_keeps_git_syncs_name_for_a_repo_ending_in_dot_git(
    upstream: Upstream, tmp_path: Path
) -> None:
    """A consumer written for git-sync reads <root>/site.git when --repo ends in site.git."""
    bare = tmp_path / "site.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream.path), str(bare))
    root = tmp_path / "root"
    proc = subprocess.run(
        [*SIDEKICK, "sync", "--one-time", "--repo", bare.as_uri(), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        env=GIT_ENV,
    )
    assert proc.returncode == 0, proc.stderr
    assert (root / "site.git" / "index.html").read_text() == "rev 0\n"


def test_git_never_prompts_on_a_terminal() -> None:
    assert Git(env={}).env["GIT_TERMINAL_PROMPT"] == "0"
