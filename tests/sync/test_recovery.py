"""Damage to the local state is repaired on the next sync, logged once and counted."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from tests.sync.conftest import Upstream, make_syncer, metric


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
