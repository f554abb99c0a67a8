"""``--git-config-add=safe.directory:*`` as git-sync users give it: a root owned by another
user (an emptyDir is root's, the sidecar runs as another UID) works only with it.

git (before 2.46) reads ``safe.directory`` from global or system configuration only, so sync
keeps such settings in a private global config file, as git-sync does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.sync.conftest import CliSync, Upstream, wait_for

OTHER_UID = 54321


def owned_by_someone_else(path: Path) -> Path:
    path.mkdir()
    os.chown(path, OTHER_UID, OTHER_UID)
    path.chmod(0o777)
    return path


def test_a_root_owned_by_another_user_syncs_with_safe_directory(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    root = owned_by_someone_else(tmp_path / "root")
    app = cli_sync(
        ["--repo", upstream.url, "--root", str(root), "--link", "current", "--one-time",
         "--git-config-add", "safe.directory:*"]
    )  # fmt: skip
    code = app.proc.wait(60)
    err = app.stop()
    assert code == 0, err
    wait_for(lambda: (root / "current").is_dir())
    assert upstream.head() in os.readlink(root / "current")


def test_without_it_git_refuses_the_root_and_says_why(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    # git-sync fails the same way: the setting is the documented way out.
    root = owned_by_someone_else(tmp_path / "root")
    app = cli_sync(["--repo", upstream.url, "--root", str(root), "--one-time"])
    code = app.proc.wait(60)
    err = app.stop()
    assert (code, "dubious ownership" in err) == (1, True), err


def test_the_private_global_config_keeps_the_users_own_settings(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    # The user's global config (here: a URL rewrite that makes the repo reachable at all)
    # still applies beside the private file.
    root = owned_by_someone_else(tmp_path / "root")
    own = tmp_path / "own.gitconfig"
    own.write_text(f'[url "{upstream.url}"]\n\tinsteadOf = file:///nowhere/repo\n')
    app = cli_sync(
        ["--repo", "file:///nowhere/repo", "--root", str(root), "--link", "current",
         "--one-time", "--git-config-add", "safe.directory:*"],
        env={"GIT_CONFIG_GLOBAL": str(own)},
    )  # fmt: skip
    code = app.proc.wait(60)
    err = app.stop()
    assert code == 0, err
    assert upstream.head() in os.readlink(root / "current")
