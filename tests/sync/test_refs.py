"""Resolving --ref as git-sync does: annotated tags publish their commit."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, Upstream, git, make_syncer, metric


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


@pytest.mark.parametrize("protocol", ["0", "2"])
def test_an_annotated_tag_syncs_from_a_server_that_serves_only_advertised_objects(
    upstream: Upstream, tmp_path: Path, protocol: str
) -> None:
    """A server speaking git's protocol v0 without uploadpack.allow*SHA1InWant (git's
    default) serves only what it advertises: the tag object, not the commit it peels to.
    git-sync fetches the tag by name, so it syncs there."""
    git(upstream.path, "config", "--unset", "uploadpack.allowAnySHA1InWant")
    commit = upstream.commit({"index.html": "tagged\n"})
    tag(upstream, "v1", "first release")
    upstream.commit({"index.html": "after the tag\n"})
    root = tmp_path / "root"
    proc = subprocess.run(
        [
            *SIDEKICK,
            "sync",
            "--one-time",
            "--repo",
            upstream.url,
            "--root",
            str(root),
            "--ref",
            "v1",
            "--git-config",
            f"protocol.version:{protocol}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=GIT_ENV,
    )
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(root / "upstream") == f".worktrees/{commit}"
    assert (root / "upstream" / "index.html").read_text() == "tagged\n"
