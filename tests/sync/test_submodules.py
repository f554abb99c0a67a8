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


async def test_a_restart_with_submodules_turned_on_checks_them_out(tmp_path: Path) -> None:
    """git-sync configures its current worktree again on the first sync after a start,
    running ``git submodule update --init`` (``--recursive`` for recursive) in it, so a
    new --submodules setting reaches the revision already published."""
    site = site_with_nested_submodules(tmp_path)
    root = tmp_path / "root"
    lib = root / "site" / "vendor" / "lib"
    syncer = make_syncer(root, site.url, git_env=ENV, submodules="off")
    await syncer.sync_once()
    syncer.aclose()
    assert not (lib / "lib.txt").exists()

    syncer = make_syncer(root, site.url, git_env=ENV, submodules="shallow")
    await syncer.sync_once()
    syncer.aclose()
    assert (lib / "lib.txt").read_text() == "library\n"
    assert not (lib / "deep" / "deep.txt").exists()

    syncer = make_syncer(root, site.url, git_env=ENV, submodules="recursive")
    await syncer.sync_once()
    assert (lib / "deep" / "deep.txt").read_text() == "deep\n"
    assert (root / "site").resolve().name == site.head()
    assert status(lib / "deep") == ""
    # Further polls keep that tree.
    published = (root / "site").resolve()
    assert await syncer.sync_once() == "unchanged"
    assert (root / "site").resolve() == published
    syncer.aclose()


async def test_a_restart_with_submodules_turned_off_leaves_them(tmp_path: Path) -> None:
    """Turning them off, or from recursive to shallow, removes nothing in git-sync: it only
    skips the update. The published tree is kept as it is."""
    site = site_with_nested_submodules(tmp_path)
    root = tmp_path / "root"
    syncer = make_syncer(root, site.url, git_env=ENV)
    await syncer.sync_once()
    syncer.aclose()
    published = (root / "site").resolve()
    for mode in ("shallow", "off"):
        syncer = make_syncer(root, site.url, git_env=ENV, submodules=mode)
        assert await syncer.sync_once() == "unchanged"
        syncer.aclose()
        assert (root / "site").resolve() == published
        assert (published / "vendor" / "lib" / "deep" / "deep.txt").read_text() == "deep\n"
