"""git works inside published submodules: their records follow the worktree's final name."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.sync.conftest import GIT_ENV, Upstream, git, make_syncer

# file:// submodules are refused by default since git 2.38.1; allow them for these tests.
ALLOW = ["-c", "protocol.file.allow=always"]
ENV = {
    **GIT_ENV,
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "protocol.file.allow",
    "GIT_CONFIG_VALUE_0": "always",
}


def site_with_nested_submodules(tmp_path: Path) -> Upstream:
    """site -> vendor/lib (a submodule) -> deep (a submodule of the submodule)."""
    deep = Upstream(tmp_path / "deep")
    deep.commit({"deep.txt": "deep\n"})
    lib = Upstream(tmp_path / "lib")
    lib.commit({"lib.txt": "library\n"})
    git(lib.path, *ALLOW, "submodule", "add", "-q", deep.url, "deep")
    lib.commit({}, "add deep")
    site = Upstream(tmp_path / "site")
    git(site.path, *ALLOW, "submodule", "add", "-q", lib.url, "vendor/lib")
    site.commit({"index.html": "one\n"})
    return site


def status(path: Path) -> str:
    return git(path, "status", "--porcelain")


async def test_git_works_in_published_submodules_at_every_level(tmp_path: Path) -> None:
    site = site_with_nested_submodules(tmp_path)
    syncer = make_syncer(tmp_path / "root", site.url, git_env=ENV)
    await syncer.sync_once()
    link = tmp_path / "root" / "site"
    assert (link / "vendor" / "lib" / "deep" / "deep.txt").read_text() == "deep\n"
    assert status(link) == ""
    assert status(link / "vendor" / "lib") == ""
    assert status(link / "vendor" / "lib" / "deep") == ""
    assert git(link / "vendor" / "lib", "rev-parse", "--show-toplevel") == str(
        link.resolve() / "vendor" / "lib"
    )
    # And after the next revision is published into a new worktree.
    site.commit({"index.html": "two\n"})
    assert await syncer.sync_once() == "published"
    assert status(link / "vendor" / "lib") == ""
    assert status(link / "vendor" / "lib" / "deep") == ""
    syncer.aclose()


async def test_git_works_in_the_tree_wherever_the_volume_is_mounted(tmp_path: Path) -> None:
    site = site_with_nested_submodules(tmp_path)
    syncer = make_syncer(tmp_path / "root", site.url, git_env=ENV)
    await syncer.sync_once()
    syncer.aclose()
    # A consumer mounting the volume at another path: every git record must be relative.
    moved = tmp_path / "mounted-elsewhere"
    shutil.move(tmp_path / "root", moved)
    link = moved / "site"
    assert git(link, "rev-parse", "HEAD") == site.head()
    assert status(link / "vendor" / "lib") == ""
    assert status(link / "vendor" / "lib" / "deep") == ""
