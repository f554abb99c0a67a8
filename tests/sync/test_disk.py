"""Disk use as git-sync's: one worktree kept, stale ones timed from the swap, gc always."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import tmpfs
from tests.sync.conftest import CliSync, Upstream, git, make_syncer, wait_for

MIB = 1024 * 1024


def disk_use(path: Path) -> int:
    """Bytes allocated under ``path`` (like ``du``), hard links counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def commit_random(up: Upstream, name: str) -> str:
    (up.path / name).write_bytes(os.urandom(2 * MIB))
    git(up.path, "add", name)
    git(up.path, "commit", "-q", "-m", name)
    return up.head()


async def test_going_back_a_revision_leaves_only_its_tree_and_objects(
    upstream: Upstream, tmp_path: Path
) -> None:
    # git-sync's gc_default case, with 2 MiB files: full history first, then depth 1 on the
    # previous commit. Only that commit's 2 MiB (worktree + pack) may stay.
    commit_random(upstream, "big1")
    sha2 = upstream.head()
    sha3 = commit_random(upstream, "big2")
    root = tmp_path / "root"
    full = make_syncer(root, upstream.url, ref=sha3, depth=0, one_time=True)
    await full.sync_once()
    full.aclose()
    assert disk_use(root) > 6 * MIB
    # --one-time, as in git-sync's steps: its gc runs before the process exits.
    back = make_syncer(root, upstream.url, ref=sha2, depth=1, one_time=True)
    assert await back.sync_once() == "published"
    back.aclose()
    assert (root / "upstream" / "big1").exists()
    assert not (root / "upstream" / "big2").exists()
    assert os.listdir(root / ".worktrees") == [sha2]
    assert disk_use(root) < 5 * MIB


async def test_stray_entries_in_worktrees_are_removed(upstream: Upstream, tmp_path: Path) -> None:
    root = tmp_path / "root"
    syncer = make_syncer(root, upstream.url)
    await syncer.sync_once()
    (root / ".worktrees" / "not_a_hash" / "subdir").mkdir(parents=True)
    (root / ".worktrees" / "not_a_directory").write_text("x")
    os.symlink("/nowhere", root / ".worktrees" / "a_link")
    assert await syncer.sync_once() == "unchanged"
    assert os.listdir(root / ".worktrees") == [upstream.head()]
    syncer.aclose()


async def test_stale_timeout_counts_from_the_swap_and_survives_restarts(
    upstream: Upstream, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    wt1 = upstream.head()
    first = make_syncer(root, upstream.url)
    await first.sync_once()
    first.aclose()
    # Published long ago: the timer must still start only when it stops being current.
    os.utime(root / ".worktrees" / wt1, (time.time() - 3600, time.time() - 3600))
    wt2 = upstream.commit({"index.html": "rev 1\n"})
    second = make_syncer(root, upstream.url, stale_worktree_timeout=3)
    assert await second.sync_once() == "published"
    second.aclose()
    assert sorted(os.listdir(root / ".worktrees")) == sorted([wt1, wt2])
    await asyncio.sleep(3.2)
    # A new process (a restart) removes it: the timer is the directory's mtime.
    third = make_syncer(root, upstream.url, stale_worktree_timeout=3)
    assert await third.sync_once() == "unchanged"
    third.aclose()
    assert os.listdir(root / ".worktrees") == [wt2]
    assert len(os.listdir(root / ".git" / "worktrees")) == 1


def history_depth(link: Path) -> int:
    return len(git(link, "rev-list", "HEAD").split())


async def test_a_new_depth_applies_at_start_without_a_new_commit(
    upstream: Upstream, tmp_path: Path
) -> None:
    for n in range(1, 4):
        upstream.commit({"index.html": f"rev {n}\n"})
    root = tmp_path / "root"
    link = root / "upstream"
    for depth, expected in ((1, 1), (2, 2), (1, 1), (0, 4)):
        syncer = make_syncer(root, upstream.url, depth=depth)
        await syncer.sync_once()
        syncer.aclose()
        assert history_depth(link) == expected, f"--depth {depth}"


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: writes there really fail with ENOSPC."""
    with tmpfs(tmp_path / "volume", "size=2m") as mnt:
        yield mnt


def test_a_fetch_that_filled_the_disk_does_not_keep_it_full(
    upstream: Upstream, tmp_path: Path, small_volume: Path, cli_sync: Callable[..., CliSync]
) -> None:
    """git killed by ENOSPC mid-fetch leaves its temporary object files behind; left there,
    they keep the volume full and every later fetch fails, even once the commit that did not
    fit is gone."""
    root = small_volume / "root"
    proc = cli_sync(["--repo", upstream.url, "--root", str(root), "--period", "200ms"])
    proc.wait_ready()
    good = upstream.head()
    (upstream.path / "big.bin").write_bytes(os.urandom(3 * MIB))
    git(upstream.path, "add", "big.bin")
    git(upstream.path, "commit", "-q", "-m", "too big for the volume")
    wait_for(lambda: 'git_sync_count_total{status="error"}' in proc.request("/metrics")[1], 30)
    assert os.readlink(root / "upstream") == f".worktrees/{good}"
    # The upstream drops the big commit (a force push) and moves on.
    git(upstream.path, "reset", "-q", "--hard", good)
    fixed = upstream.commit({"index.html": "rev 1\n"})
    wait_for(lambda: os.readlink(root / "upstream") == f".worktrees/{fixed}", 30)
    assert (root / "upstream" / "index.html").read_text() == "rev 1\n"
    metrics = proc.request("/metrics")[1]
    assert 'sidekick_sync_recoveries_total{kind="partial"}' in metrics
