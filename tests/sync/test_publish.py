"""Publishing: the link always shows one whole revision; disk use stays bounded."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, Upstream, git, make_syncer, metric

FILES = [f"page{i}.html" for i in range(8)]


def revision_files(n: int) -> dict[str, str]:
    # Each file is long enough that a partially written one would be visible as such.
    return {name: f"rev {n}\n" * 400 + f"end {n}\n" for name in FILES}


class Reader(threading.Thread):
    """Reads every file through one resolution of the link, as fast as it can."""

    def __init__(self, link: Path) -> None:
        super().__init__(daemon=True)
        self.link = link
        self.stop = threading.Event()
        self.checks = 0
        self.problems: list[str] = []
        self.seen: set[int] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                fd = os.open(self.link, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                self.problems.append("link missing")
                continue
            try:
                revs = set()
                for name in FILES:
                    file_fd = os.open(name, os.O_RDONLY, dir_fd=fd)
                    with os.fdopen(file_fd) as f:
                        text = f.read()
                    lines = text.splitlines()
                    head = lines[0].split()[1]
                    if len(lines) != 401 or lines[-1] != f"end {head}":
                        self.problems.append(f"{name} incomplete: {len(lines)} lines")
                    revs.add(int(head))
                if len(revs) != 1:
                    self.problems.append(f"mixed revisions {sorted(revs)}")
                self.seen |= revs
            except OSError as exc:
                self.problems.append(f"read failed: {exc}")
            finally:
                os.close(fd)
            self.checks += 1


async def test_reader_never_sees_a_missing_link_a_partial_file_or_mixed_revisions(
    tmp_path: Path,
) -> None:
    up = Upstream(tmp_path / "up")
    up.commit(revision_files(0))
    # Old worktrees kept for a minute, so a read that began before a swap can finish.
    syncer = make_syncer(tmp_path / "root", up.url, link="site", stale_worktree_timeout=60)
    await syncer.sync_once()
    shas = up.prepare([revision_files(n) for n in range(1, 301)])
    reader = Reader(tmp_path / "root" / "site")
    reader.start()
    try:
        for sha in shas:
            up.publish(sha)
            assert await syncer.sync_once() == "published"
            await asyncio.sleep(0.02)
    finally:
        reader.stop.set()
        reader.join(10)
        syncer.aclose()
    assert reader.problems == []
    assert reader.checks >= 1000
    assert 300 in reader.seen and len(reader.seen) > 100


async def test_link_is_relative_and_names_the_revision(upstream: Upstream, tmp_path: Path) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url)
    await syncer.sync_once()
    target = os.readlink(tmp_path / "root" / "upstream")
    assert target == f".worktrees/{upstream.head()}"
    assert (tmp_path / "root" / "upstream" / "index.html").read_text() == "rev 0\n"
    syncer.aclose()


async def test_previous_revision_is_removed_right_after_the_swap_by_default(
    upstream: Upstream, tmp_path: Path
) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url)
    await syncer.sync_once()
    second = upstream.commit({"index.html": "rev 1\n"})
    await syncer.sync_once()
    wt = tmp_path / "root" / ".worktrees"
    assert os.listdir(wt) == [second]
    assert len(os.listdir(tmp_path / "root" / ".git" / "worktrees")) == 1
    syncer.aclose()


async def test_stale_worktrees_wait_for_the_stale_timeout(
    upstream: Upstream, tmp_path: Path
) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url, stale_worktree_timeout=2)
    first = upstream.head()
    await syncer.sync_once()
    upstream.commit({"index.html": "rev 1\n"})
    await syncer.sync_once()
    wt = tmp_path / "root" / ".worktrees"
    # The timer starts at the swap, however long ago the first revision was published.
    assert first in os.listdir(wt)
    await asyncio.sleep(2.2)
    assert await syncer.sync_once() == "unchanged"
    assert first not in os.listdir(wt)
    syncer.aclose()


async def test_unchanged_remote_runs_no_fetch(upstream: Upstream, tmp_path: Path) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url)
    assert await syncer.sync_once() == "published"
    calls = syncer.git.calls
    assert await syncer.sync_once() == "unchanged"
    assert syncer.git.calls - calls == 1  # only ls-remote
    assert metric(syncer, "sidekick_sync_fetches_total") == 1
    syncer.aclose()


async def test_ref_can_be_a_tag_or_an_old_commit(upstream: Upstream, tmp_path: Path) -> None:
    from tests.sync.conftest import git

    old = upstream.head()
    git(upstream.path, "tag", "-a", "-m", "v1", "v1")
    upstream.commit({"index.html": "rev 1\n"})
    by_tag = make_syncer(tmp_path / "a", upstream.url, ref="v1")
    await by_tag.sync_once()
    assert (tmp_path / "a" / "upstream" / "index.html").read_text() == "rev 0\n"
    by_hash = make_syncer(tmp_path / "b", upstream.url, ref=old)
    await by_hash.sync_once()
    assert os.readlink(tmp_path / "b" / "upstream").endswith(old)
    by_tag.aclose()
    by_hash.aclose()


async def test_sparse_checkout_file_limits_the_files(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit({"docs/a.md": "a\n", "src/b.py": "b\n"})
    patterns = tmp_path / "sparse"
    patterns.write_text("/docs/\n")
    syncer = make_syncer(tmp_path / "root", upstream.url, sparse_checkout_file=str(patterns))
    await syncer.sync_once()
    link = tmp_path / "root" / "upstream"
    assert (link / "docs" / "a.md").exists()
    assert not (link / "src").exists()
    syncer.aclose()


async def test_a_thousand_syncs_leave_one_worktree(tmp_path: Path) -> None:
    up = Upstream(tmp_path / "up")
    up.commit({"index.html": "rev 0\n"})
    shas = up.prepare([{"index.html": f"rev {n}\n"} for n in range(1, 1001)])
    # gc is left out to keep this quick; test_gc_drops_the_objects_of_removed_revisions has it.
    syncer = make_syncer(tmp_path / "root", up.url, link="site", git_gc="off")
    root = tmp_path / "root"
    most = 0
    for sha in shas:
        up.publish(sha)
        assert await syncer.sync_once() == "published"
        most = max(most, len(os.listdir(root / ".worktrees")))
    assert most <= 1
    assert len(os.listdir(root / ".git" / "worktrees")) == 1
    assert (root / "site" / "index.html").read_text() == "rev 1000\n"
    syncer.aclose()


async def test_submodules_are_checked_out_recursively(tmp_path: Path) -> None:
    from tests.sync.conftest import GIT_ENV, git

    lib = Upstream(tmp_path / "lib")
    lib.commit({"lib.txt": "library\n"})
    site = Upstream(tmp_path / "site")
    # file:// submodules are refused by default since git 2.38.1; allow them for this test.
    allow = ["-c", "protocol.file.allow=always"]
    git(site.path, *allow, "submodule", "add", "-q", lib.url, "vendor/lib")
    site.commit({"index.html": "with submodule\n"})
    env = {
        **GIT_ENV,
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "protocol.file.allow",
        "GIT_CONFIG_VALUE_0": "always",
    }
    syncer = make_syncer(tmp_path / "root", site.url, git_env=env)
    await syncer.sync_once()
    assert (tmp_path / "root" / "site" / "vendor" / "lib" / "lib.txt").read_text() == "library\n"
    syncer.aclose()


async def test_partial_clone_filter_still_checks_out_every_file(
    upstream: Upstream, tmp_path: Path
) -> None:
    from tests.sync.conftest import git

    git(upstream.path, "config", "uploadpack.allowFilter", "true")
    upstream.commit({"big.bin": "x" * 100_000})
    syncer = make_syncer(tmp_path / "root", upstream.url, filter="blob:none")
    await syncer.sync_once()
    assert len((tmp_path / "root" / "upstream" / "big.bin").read_text()) == 100_000
    promisors = git(tmp_path / "root", "config", "--get-regexp", r"^remote\..*\.promisor$")
    assert promisors.endswith(" true")
    syncer.aclose()


async def test_gc_drops_the_objects_of_removed_revisions(tmp_path: Path) -> None:
    up = Upstream(tmp_path / "up")
    up.commit({"index.html": "rev 0\n"})
    shas = up.prepare([{"index.html": f"rev {n}\n"} for n in range(1, 11)])
    syncer = make_syncer(tmp_path / "root", up.url, git_gc="always")
    for sha in shas:
        up.publish(sha)
        await syncer.sync_once()
    git_dir = tmp_path / "root" / ".git"
    loose = sum(len(f) for _, _, f in os.walk(git_dir / "objects"))
    # gc waits for a poll that finds nothing new, so back-to-back publishes never wait for it.
    assert await syncer.sync_once() == "unchanged"
    files = sum(len(f) for _, _, f in os.walk(git_dir / "objects"))
    assert loose > 10
    # 10 revisions brought 3 objects each; what is left is one pack (and its index) of the
    # published revision.
    assert files <= 4, sorted(str(p) for p in (git_dir / "objects").rglob("*") if p.is_file())
    assert len((git_dir / "shallow").read_text().splitlines()) <= 2
    syncer.aclose()


def test_a_sparse_checkout_file_given_at_a_restart_applies_to_the_current_revision(
    upstream: Upstream, tmp_path: Path
) -> None:
    """git-sync configures the current worktree again on its first sync ('it might not have
    all the correct settings (e.g. sparse checkout)'), so a sparse-checkout file added or
    dropped at a restart applies without waiting for a new commit."""
    sha = upstream.commit({"docs/a.md": "a\n", "src/b.py": "b\n"})
    patterns = tmp_path / "sparse"
    patterns.write_text("/docs/\n")
    root = tmp_path / "root"
    link = root / "upstream"
    common = ["sync", "--one-time", "--repo", upstream.url, "--root", str(root)]
    for extra, src_expected in (([], True), (["--sparse-checkout-file", str(patterns)], False)):
        proc = subprocess.run(
            [*SIDEKICK, *common, *extra], capture_output=True, text=True, timeout=60, env=GIT_ENV
        )
        assert proc.returncode == 0, proc.stderr
        assert (link / "docs" / "a.md").exists()
        assert (link / "src").exists() == src_expected, extra
        assert os.path.basename(os.readlink(link)) == sha
    proc = subprocess.run(
        [*SIDEKICK, *common], capture_output=True, text=True, timeout=60, env=GIT_ENV
    )
    assert proc.returncode == 0, proc.stderr
    assert (link / "src" / "b.py").exists()


async def test_tracked_files_edited_in_the_tree_are_restored_at_a_restart(
    upstream: Upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """git-sync runs 'reset --hard' in its current worktree on the first sync after a
    start, which puts back tracked files changed or removed in it; here the revision is
    checked out anew, as for any damaged tree."""
    upstream.commit({"a.txt": "a\n"})
    root = tmp_path / "root"
    link = root / "upstream"
    syncer = make_syncer(root, upstream.url)
    await syncer.sync_once()
    syncer.aclose()
    (link / "index.html").write_text("edited\n")
    (link / "a.txt").unlink()
    (link / "added.txt").write_text("mine\n")
    restarted = make_syncer(root, upstream.url)
    assert await restarted.sync_once() == "published"
    restarted.aclose()
    assert caplog.text.count("were changed; checking it out again") == 1
    assert (link / "index.html").read_text() == git(upstream.path, "show", "HEAD:index.html") + "\n"
    assert (link / "a.txt").read_text() == "a\n"
    assert os.path.basename(os.readlink(link)) == upstream.head()
    # A restart over an untouched tree keeps it.
    kept = link.resolve()
    again = make_syncer(root, upstream.url)
    assert await again.sync_once() == "unchanged"
    again.aclose()
    assert link.resolve() == kept
