"""Damage to the local state is repaired on the next sync, logged once and counted."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, CliSync, Upstream, git, make_syncer, metric, wait_for


def warnings_matching(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(1 for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage())


async def test_stale_shallow_lock_is_removed_and_the_fetch_succeeds(
    upstream: Upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url)
    await syncer.sync_once()
    lock = tmp_path / "root" / ".git" / "shallow.lock"
    lock.write_text("")
    upstream.commit({"index.html": "rev 1\n"})
    assert await syncer.sync_once() == "published"
    await syncer.sync_once()
    assert not lock.exists()
    assert metric(syncer, "sidekick_sync_recoveries_total", {"kind": "lock"}) == 1
    assert warnings_matching(caplog, "stale git lock") == 1
    syncer.aclose()


async def test_stale_index_lock_is_removed(
    upstream: Upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url)
    await syncer.sync_once()
    lock = tmp_path / "root" / ".git" / "index.lock"
    lock.write_text("")
    await syncer.sync_once()
    await syncer.sync_once()
    assert not lock.exists()
    assert metric(syncer, "sidekick_sync_recoveries_total", {"kind": "lock"}) == 1
    assert warnings_matching(caplog, "stale git lock") == 1
    syncer.aclose()


async def test_damaged_worktree_is_rebuilt_while_the_old_files_stay_served(
    upstream: Upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url)
    await syncer.sync_once()
    link = tmp_path / "root" / "upstream"
    (link / ".git").unlink()
    assert (link / "index.html").read_text() == "rev 0\n"
    await syncer.sync_once()
    await syncer.sync_once()
    assert (link / ".git").is_file()
    assert (link / "index.html").read_text() == "rev 0\n"
    assert metric(syncer, "sidekick_sync_recoveries_total", {"kind": "worktree"}) == 1
    assert warnings_matching(caplog, "missing or damaged") == 1
    syncer.aclose()


async def test_missing_worktree_is_rebuilt(
    upstream: Upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url)
    await syncer.sync_once()
    shutil.rmtree(tmp_path / "root" / ".worktrees" / upstream.head())
    await syncer.sync_once()
    await syncer.sync_once()
    assert (tmp_path / "root" / "upstream" / "index.html").read_text() == "rev 0\n"
    assert metric(syncer, "sidekick_sync_recoveries_total", {"kind": "worktree"}) == 1
    assert warnings_matching(caplog, "missing or damaged") == 1
    syncer.aclose()


async def test_deleted_link_is_recreated(
    upstream: Upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url)
    await syncer.sync_once()
    link = tmp_path / "root" / "upstream"
    link.unlink()
    await syncer.sync_once()
    await syncer.sync_once()
    assert os.readlink(link) == f".worktrees/{upstream.head()}"
    assert metric(syncer, "sidekick_sync_recoveries_total", {"kind": "link"}) == 1
    assert warnings_matching(caplog, "is missing; recreating") == 1
    syncer.aclose()


async def test_root_that_lost_its_repository_is_reinitialised(
    upstream: Upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url)
    await syncer.sync_once()
    shutil.rmtree(tmp_path / "root" / ".git")
    link = tmp_path / "root" / "upstream"
    assert (link / "index.html").read_text() == "rev 0\n"
    upstream.commit({"index.html": "rev 1\n"})
    assert await syncer.sync_once() == "published"
    await syncer.sync_once()
    assert (link / "index.html").read_text() == "rev 1\n"
    assert metric(syncer, "sidekick_sync_recoveries_total", {"kind": "repository"}) == 1
    assert warnings_matching(caplog, "missing or corrupt; re-initialising") == 1
    syncer.aclose()


async def test_corrupt_repository_head_is_reinitialised(upstream: Upstream, tmp_path: Path) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url)
    await syncer.sync_once()
    (tmp_path / "root" / ".git" / "HEAD").write_text("garbage")
    upstream.commit({"index.html": "rev 1\n"})
    assert await syncer.sync_once() == "published"
    assert (tmp_path / "root" / "upstream" / "index.html").read_text() == "rev 1\n"
    assert metric(syncer, "sidekick_sync_recoveries_total", {"kind": "repository"}) == 1
    syncer.aclose()


def _one_time(upstream: Upstream, root: Path) -> None:
    proc = subprocess.run(
        [*SIDEKICK, "sync", "--one-time", "--repo", upstream.url, "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        env=GIT_ENV,
    )
    assert proc.returncode == 0, proc.stderr


def _as_v3_layout(root: Path) -> str:
    """Rearrange a synced root the way git-sync v3 left it: the worktree at ``<root>/<sha>``
    (added by git, so its ``.git`` file names the repository by absolute path) and the link
    pointing there."""
    link = root / "upstream"
    sha = os.path.basename(os.readlink(link))
    shutil.rmtree(root / ".worktrees")
    git(root, "worktree", "prune")
    git(root, "worktree", "add", "--quiet", "--detach", str(root / sha), sha)
    link.unlink()
    link.symlink_to(sha)
    return sha


@pytest.mark.parametrize("new_commit", [False, True], ids=["same-commit", "new-commit"])
def test_a_worktree_left_by_git_sync_v3_is_moved_into_worktrees_and_removed(
    upstream: Upstream, tmp_path: Path, new_commit: bool
) -> None:
    """git-sync v4 upgrades a v3 root in place: a link to a worktree outside .worktrees counts
    as a change, so the revision is checked out under .worktrees and the old tree removed."""
    root = tmp_path / "root"
    _one_time(upstream, root)
    old = _as_v3_layout(root)
    sha = upstream.commit({"index.html": "rev 1\n"}) if new_commit else old
    _one_time(upstream, root)
    assert os.readlink(root / "upstream") == f".worktrees/{sha}"
    assert (root / "upstream" / "index.html").read_text() == (
        "rev 1\n" if new_commit else "rev 0\n"
    )
    assert not (root / old).exists()
    assert str(root / old) not in git(root, "worktree", "list")


def test_a_repaired_worktree_keeps_the_hash_as_the_links_leaf(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    """git-sync's contract: basename "$(readlink <link>)" is the hash of the synced revision.
    A worktree damaged in place (here a commit made inside it, as in git-sync's
    sync_recover_wrong_worktree_hash) is rebuilt, and the link's leaf is still the hash."""
    root = tmp_path / "root"
    link = root / "upstream"
    sha = upstream.head()
    proc = cli_sync(["--repo", upstream.url, "--root", str(root), "--period", "100ms"])
    proc.wait_ready()
    (link / "index.html").write_text("unexpected\n")
    git(link, "commit", "-q", "-a", "-m", "corrupt it")
    wait_for(lambda: (link / "index.html").read_text() == "rev 0\n", 15)
    wait_for(lambda: os.path.basename(os.readlink(link)) == sha, 15)
    # The repair tree goes in the clean-up that follows the link's move.
    wait_for(lambda: os.listdir(root / ".worktrees") == [sha], 30)
    assert git(link, "rev-parse", "HEAD") == sha
