"""git-sync flags kept for drop-in compatibility: --git-config, --group-write, --touch-file,
--error-file, --sync-on-signal."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, Upstream, make_syncer


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # A fixed umask, so that group-writable files can only come from --group-write.
    return subprocess.run(
        [*SIDEKICK, "sync", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=GIT_ENV,
        umask=0o022,
    )


def test_git_config_reaches_git(upstream: Upstream, tmp_path: Path) -> None:
    # insteadOf rewrites an unreachable URL to the real one: the sync only works if the
    # setting was passed to git.
    repo = "https://git.example.invalid/site"
    proc = run_cli(
        "--repo",
        repo,
        "--root",
        str(tmp_path / "root"),
        "--link",
        "site",
        "--one-time",
        "--git-config",
        f'"url.{upstream.url}.insteadOf":{repo}',
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "root" / "site" / "index.html").read_text() == "rev 0\n"


def test_group_write_makes_the_checkout_group_writable(upstream: Upstream, tmp_path: Path) -> None:
    proc = run_cli(
        "--repo", upstream.url, "--root", str(tmp_path / "root"), "--one-time", "--group-write"
    )
    assert proc.returncode == 0, proc.stderr
    page = tmp_path / "root" / "upstream" / "index.html"
    assert page.stat().st_mode & stat.S_IWGRP


def test_a_restrictive_umask_still_publishes_a_tree_others_can_read(
    upstream: Upstream, tmp_path: Path
) -> None:
    """git-sync sets its umask to 022 (002 with --group-write) whatever it inherited, so a
    consumer running as another user can read the tree."""
    root = tmp_path / "root"
    proc = subprocess.run(
        [*SIDEKICK, "sync", "--repo", upstream.url, "--root", str(root), "--one-time"],
        capture_output=True,
        text=True,
        timeout=60,
        env=GIT_ENV,
        umask=0o077,
    )
    assert proc.returncode == 0, proc.stderr
    for path in (root, root / ".worktrees", root / "upstream"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o055 == 0o055, path
    assert stat.S_IMODE((root / "upstream" / "index.html").stat().st_mode) == 0o644


async def test_touch_file_is_touched_and_error_file_holds_the_last_error(
    upstream: Upstream, tmp_path: Path
) -> None:
    syncer = make_syncer(
        tmp_path / "root", upstream.url, touch_file="synced", error_file="state/error"
    )
    await syncer.sync_once()
    touched = (tmp_path / "root" / "synced").stat().st_mtime
    error_file = tmp_path / "root" / "state" / "error"
    assert not error_file.exists()
    upstream.path.rename(tmp_path / "gone")
    with pytest.raises(Exception, match="cannot list refs"):
        await syncer.sync_once()
    assert "cannot list refs" in error_file.read_text()
    (tmp_path / "gone").rename(upstream.path)
    await syncer.sync_once()
    assert not error_file.exists()
    assert (tmp_path / "root" / "synced").stat().st_mtime >= touched
    syncer.aclose()


def test_sync_on_signal_that_stops_the_program_is_refused(tmp_path: Path) -> None:
    proc = run_cli("--repo", "file:///r", "--root", str(tmp_path), "--sync-on-signal", "SIGTERM")
    assert proc.returncode == 2
    assert "--sync-on-signal 'SIGTERM' cannot trigger syncs" in proc.stderr
