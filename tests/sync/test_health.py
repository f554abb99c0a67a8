"""git-sync's health endpoint: ``GET /`` is 503 until the first successful sync, then 200."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.sync.conftest import CliSync, Upstream, git, wait_for
from tests.sync.test_metrics_compat import metric_text


def test_root_is_503_until_the_first_sync_and_200_for_good(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    proc = cli_sync(
        ["--repo", upstream.url, "--root", str(tmp_path / "root"), "--ref", "release",
         "--period", "100ms", "--max-failures", "-1"]
    )  # fmt: skip
    wait_for(lambda: proc.request("/healthz")[0] == 200, 60)
    # The ref does not exist yet: syncs fail, and git-sync's probe path says not ready.
    wait_for(lambda: "does not exist" in proc.request("/readyz")[1], 60)
    assert proc.request("/") == (503, "repo is not ready\n")
    # Probes copied from git-sync may use any path; git-sync answers them all the same way.
    assert proc.request("/probe")[0] == 503
    git(upstream.path, "branch", "release")
    wait_for(lambda: proc.request("/")[0] == 200, 60)
    assert proc.request("/") == (200, "")
    assert proc.request("/readyz")[0] == 200
    # A failure after the first success leaves the last revision served: still healthy.
    git(upstream.path, "branch", "-D", "release")
    errors = metric_text(proc, "git_sync_count_total", status="error")
    wait_for(lambda: metric_text(proc, "git_sync_count_total", status="error") >= errors + 2, 60)
    assert proc.request("/")[0] == 200
    assert proc.request("/healthz")[0] == 200
    proc.stop()
