"""``--pre-publish-exechook-command``: checked before the link moves, and only then published."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, CliSync, Upstream, script, wait_for
from tests.sync.test_metrics_compat import metric_text


def recorder(path: Path, link: Path, log: Path) -> str:
    """A hook recording the hash, the working directory and whether ``link`` existed."""
    body = f'echo "$GITSYNC_HASH $(pwd) $(test -e {link} && echo linked || echo unlinked)" >> {log}'
    return script(path, body)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIDEKICK, "sync", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**GIT_ENV, **(env or {})},
    )


@pytest.mark.parametrize("form", ["flag", "variable"])
def test_a_failing_hook_keeps_the_revision_unpublished(
    upstream: Upstream, tmp_path: Path, form: str
) -> None:
    root = tmp_path / "root"
    args = ["--repo", upstream.url, "--root", str(root), "--one-time"]
    if form == "flag":
        proc = run_cli(*args, "--pre-publish-exechook-command", "/bin/false")
    else:
        proc = run_cli(*args, env={"GITSYNC_PRE_PUBLISH_EXECHOOK_COMMAND": "/bin/false"})
    assert proc.returncode == 1
    assert not (root / "upstream").exists()
    assert "pre-publish-exechook '/bin/false' exited with status 1" in proc.stderr
    assert "is not published" in proc.stderr


def test_the_hook_runs_in_the_new_worktree_before_the_link_moves(
    upstream: Upstream, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    log = tmp_path / "runs"
    link = root / "upstream"
    command = recorder(tmp_path / "record.sh", link, log)
    proc = run_cli(
        "--repo", upstream.url, "--root", str(root), "--one-time",
        "--pre-publish-exechook-command", command,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sha, cwd, state = log.read_text().split()
    assert sha == upstream.head()
    assert state == "unlinked"
    assert Path(cwd) == link.resolve()
    # Nothing to publish: the hook does not run again.
    again = run_cli(
        "--repo", upstream.url, "--root", str(root), "--one-time",
        "--pre-publish-exechook-command", command,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert len(log.read_text().splitlines()) == 1


def test_a_hook_that_starts_passing_publishes_after_its_backoff(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    root = tmp_path / "root"
    gate = tmp_path / "gate"
    proc = cli_sync(
        ["--repo", upstream.url, "--root", str(root), "--period", "1h",
         "--max-failures", "-1", "--pre-publish-exechook-backoff", "1s",
         "--pre-publish-exechook-command", script(tmp_path / "gate.sh", f"test -e {gate}")]
    )  # fmt: skip
    wait_for(
        lambda: (
            metric_text(
                proc, "git_sync_hook_run_count_total", name="pre-publish-exechook", status="error"
            )
            >= 2
        ),
        60,
    )
    # Retried after the hook's 1s back-off, not the 1h period.
    assert not (root / "upstream").exists()
    assert proc.request("/")[0] == 503
    gate.touch()
    wait_for(lambda: (root / "upstream" / "index.html").exists(), 60)
    assert (
        metric_text(
            proc, "git_sync_hook_run_count_total", name="pre-publish-exechook", status="success"
        )
        == 1
    )
    proc.stop()


def test_a_tree_checked_out_again_at_a_restart_is_not_a_new_publish(
    upstream: Upstream, tmp_path: Path
) -> None:
    """git-sync configures its current tree in place on the first sync after a start (here:
    tracked files edited in it are put back); the link keeps its revision, so the
    pre-publish hook does not run for it."""
    root = tmp_path / "root"
    log = tmp_path / "runs"
    link = root / "upstream"
    command = recorder(tmp_path / "record.sh", link, log)
    args = ["--repo", upstream.url, "--root", str(root), "--one-time"]
    first = run_cli(*args, "--pre-publish-exechook-command", command)
    assert first.returncode == 0, first.stderr
    (link / "index.html").write_text("edited\n")
    again = run_cli(*args, "--pre-publish-exechook-command", command)
    assert again.returncode == 0, again.stderr
    assert (link / "index.html").read_text() != "edited\n"
    assert len(log.read_text().splitlines()) == 1
