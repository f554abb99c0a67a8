"""A --root that is not a repository is emptied and used, as git-sync documents."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, Upstream, git, make_syncer


def one_time(repo: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIDEKICK, "sync", "--repo", repo, "--root", str(root), "--link", "link", "--one-time"],
        capture_output=True,
        text=True,
        timeout=60,
        env=GIT_ENV,
    )


def test_a_volume_root_holding_lost_and_found_and_files_is_emptied_and_used(
    upstream: Upstream, tmp_path: Path
) -> None:
    root = tmp_path / "volume"
    (root / "lost+found").mkdir(parents=True)
    (root / "lost+found" / "#1234").write_text("orphan\n")
    (root / "leftover.txt").write_text("old\n")
    os.symlink("/nowhere", root / "dangling")
    proc = one_time(upstream.url, root)
    assert proc.returncode == 0, proc.stderr
    assert "removing the 3 entries" in proc.stderr
    assert (root / "link" / "index.html").read_text() == "rev 0\n"
    assert sorted(os.listdir(root)) == [".git", ".worktrees", "link"]


def test_a_root_inside_another_repository_gets_its_own(upstream: Upstream, tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    root = outer / "sub" / "root"
    root.mkdir(parents=True)
    (root / "file").write_text("not ours\n")
    git(outer, "init", "-q")
    proc = one_time(upstream.url, root)
    assert proc.returncode == 0, proc.stderr
    assert (root / "link" / "index.html").read_text() == "rev 0\n"
    assert not (root / "file").exists()
    assert git(root / "link", "rev-parse", "--show-toplevel") == str(
        root / ".worktrees" / upstream.head()
    )
    # The outer repository is left as it was.
    assert git(outer, "rev-parse", "--show-toplevel") == str(outer)
    assert (outer / ".git" / "HEAD").is_file()


async def test_a_published_root_keeps_its_files_across_restarts(
    upstream: Upstream, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    first = make_syncer(root, upstream.url, touch_file="touch", error_file="errors/last.json")
    await first.sync_once()
    first.aclose()
    (root / "touch").write_text("")
    again = make_syncer(root, upstream.url, touch_file="touch", error_file="errors/last.json")
    assert await again.sync_once() == "unchanged"
    assert (root / "touch").exists()
    again.aclose()
