"""git-sync's observable behaviour: --git wrappers' argv and when --touch-file is touched."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, Upstream, make_syncer

# A --git wrapper like the ones git-sync's own tests use: it looks at "$1" and greps the URL
# out of its arguments, and records every argv (one per line) before running git.
WRAPPER = """#!/bin/sh
printf '%s\\n' "$*" >> "$ARGV_LOG"
case "$1" in
  ls-remote|fetch)
    echo "$@" | grep -q "file://" || { echo "wrapper: no URL in argv" >&2; exit 1; } ;;
esac
exec git "$@"
"""


def test_git_wrapper_sees_git_syncs_argv(upstream: Upstream, tmp_path: Path) -> None:
    wrapper = tmp_path / "git-wrapper"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    argv_log = tmp_path / "argv"
    proc = subprocess.run(
        [
            *SIDEKICK,
            "sync",
            "--repo",
            upstream.url,
            "--root",
            str(tmp_path / "root"),
            "--git",
            str(wrapper),
            "--one-time",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**GIT_ENV, "ARGV_LOG": str(argv_log)},
    )
    assert proc.returncode == 0, proc.stderr
    calls = argv_log.read_text().splitlines()
    assert not [c for c in calls if c.startswith("-")], calls
    ls_remote = [c for c in calls if c.startswith("ls-remote ")]
    assert ls_remote == [f"ls-remote -q {upstream.url} HEAD HEAD^{{}}"]
    fetch = [c for c in calls if c.startswith("fetch ")]
    assert len(fetch) == 1
    assert fetch[0].startswith(f"fetch {upstream.url} {upstream.head()} ")
    assert "--depth 1" in fetch[0]
    assert (tmp_path / "root" / "upstream" / "index.html").read_text() == "rev 0\n"


async def test_git_settings_still_reach_git_without_dash_c(
    upstream: Upstream, tmp_path: Path
) -> None:
    # credential.helper is reset for every call; it now travels in the environment.
    syncer = make_syncer(tmp_path / "root", upstream.url)
    result = await syncer.git.run(
        "config", "--get-all", "credential.helper", cwd=tmp_path, timeout=10, check=False
    )
    assert result.stdout == "\n"
    gc = await syncer.git.run(
        "config", "gc.pruneExpire", cwd=tmp_path, timeout=10, config=[("gc.pruneExpire", "now")]
    )
    assert gc.stdout.strip() == "now"
    syncer.aclose()


async def test_touch_file_is_touched_only_when_a_revision_is_published(
    upstream: Upstream, tmp_path: Path
) -> None:
    touch = tmp_path / "root" / "touch.file"
    syncer = make_syncer(tmp_path / "root", upstream.url, touch_file="touch.file")
    assert await syncer.sync_once() == "published"
    assert touch.exists()
    touch.unlink()
    for _ in range(3):
        assert await syncer.sync_once() == "unchanged"
    assert not touch.exists()
    upstream.commit({"index.html": "rev 1\n"})
    assert await syncer.sync_once() == "published"
    assert touch.exists()
    syncer.aclose()


async def test_touch_file_is_touched_on_the_first_sync_after_a_restart(
    upstream: Upstream, tmp_path: Path
) -> None:
    touch = tmp_path / "touched"
    first = make_syncer(tmp_path / "root", upstream.url, touch_file=str(touch))
    await first.sync_once()
    first.aclose()
    touch.unlink()
    again = make_syncer(tmp_path / "root", upstream.url, touch_file=str(touch))
    assert await again.sync_once() == "unchanged"
    assert touch.exists()
    touch.unlink()
    assert await again.sync_once() == "unchanged"
    assert not touch.exists()
    again.aclose()


async def test_touch_file_mtime_is_refreshed_on_each_publish(
    upstream: Upstream, tmp_path: Path
) -> None:
    touch = tmp_path / "root" / "t"
    syncer = make_syncer(tmp_path / "root", upstream.url, touch_file="t")
    await syncer.sync_once()
    os.utime(touch, (1_000_000, 1_000_000))
    await syncer.sync_once()
    assert touch.stat().st_mtime == 1_000_000
    upstream.commit({"index.html": "rev 1\n"})
    await syncer.sync_once()
    assert touch.stat().st_mtime > 1_000_000
    syncer.aclose()
