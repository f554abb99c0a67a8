"""Resolving --ref as git-sync does: annotated tags publish their commit."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.sync.conftest import Upstream, git, make_syncer, metric


def tag(up: Upstream, name: str, message: str) -> None:
    git(up.path, "tag", "-a", "-f", "-m", message, name)


async def test_annotated_tag_publishes_its_commit_and_names_the_worktree_after_it(
    upstream: Upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    commit = upstream.commit({"index.html": "tagged\n"})
    tag(upstream, "v1", "first release")
    tag_object = git(upstream.path, "rev-parse", "v1")
    assert tag_object != commit
    syncer = make_syncer(tmp_path / "root", upstream.url, ref="v1")
    assert await syncer.sync_once() == "published"
    assert os.readlink(tmp_path / "root" / "upstream") == f".worktrees/{commit}"
    assert syncer.published is not None and syncer.published[0] == commit
    fetches = metric(syncer, "sidekick_sync_fetches_total")
    with caplog.at_level(logging.WARNING, logger="sidekick.sync"):
        for _ in range(3):
            assert await syncer.sync_once() == "unchanged"
    assert metric(syncer, "sidekick_sync_fetches_total") == fetches
    assert not [r for r in caplog.records if "rebuilding" in r.getMessage()]
    syncer.aclose()


async def test_moving_an_annotated_tag_publishes_the_new_commit(
    upstream: Upstream, tmp_path: Path
) -> None:
    first = upstream.commit({"index.html": "one\n"})
    tag(upstream, "release", "one")
    syncer = make_syncer(tmp_path / "root", upstream.url, ref="release")
    await syncer.sync_once()
    second = upstream.commit({"index.html": "two\n"})
    tag(upstream, "release", "two")
    assert await syncer.sync_once() == "published"
    assert os.readlink(tmp_path / "root" / "upstream") == f".worktrees/{second}"
    assert (tmp_path / "root" / "upstream" / "index.html").read_text() == "two\n"
    # Moving it back, as git-sync's suite does, publishes the first commit again.
    git(upstream.path, "tag", "-a", "-f", "-m", "back", "release", first)
    assert await syncer.sync_once() == "published"
    assert (tmp_path / "root" / "upstream" / "index.html").read_text() == "one\n"
    syncer.aclose()


async def test_a_tag_wins_over_a_branch_of_the_same_name_as_in_git(
    upstream: Upstream, tmp_path: Path
) -> None:
    tagged = upstream.commit({"index.html": "tagged\n"})
    tag(upstream, "stable", "tag")
    git(upstream.path, "branch", "stable")
    upstream.commit({"index.html": "branch moved on\n"})
    git(upstream.path, "branch", "-f", "stable", "main")
    syncer = make_syncer(tmp_path / "root", upstream.url, ref="stable")
    await syncer.sync_once()
    assert syncer.published is not None and syncer.published[0] == tagged
    syncer.aclose()


async def test_full_ref_names_resolve(upstream: Upstream, tmp_path: Path) -> None:
    commit = upstream.commit({"index.html": "x\n"})
    tag(upstream, "v2", "two")
    for ref in ("refs/tags/v2", "refs/heads/main"):
        syncer = make_syncer(tmp_path / ref.replace("/", "-"), upstream.url, ref=ref)
        await syncer.sync_once()
        assert syncer.published is not None and syncer.published[0] == commit
        syncer.aclose()
