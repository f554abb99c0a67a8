"""The sync loop: triggers, failures, back-off, readiness, exit codes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidekick.core.addr import HostPort
from sidekick.core.runtime import Shutdown
from sidekick.sync.app import SyncApp
from sidekick.sync.config import SyncConfig
from sidekick.sync.remote import RefNotFound
from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, CliSync, Upstream, make_syncer, metric, read, wait_for


@asynccontextmanager
async def running_app(**kw: Any) -> AsyncIterator[SyncApp]:
    app = SyncApp(SyncConfig(**kw), HostPort("127.0.0.1", 0), env=GIT_ENV)
    shutdown = Shutdown()
    task = asyncio.create_task(app.main(shutdown))
    try:
        await until(lambda: app.admin.port != 0)
        yield app
    finally:
        shutdown.request("test")
        await asyncio.wait_for(task, 10)


async def until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def get(app: SyncApp, path: str) -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{app.admin.port}{path}") as r,
    ):
        return r.status


async def test_unreachable_repo_keeps_serving_stays_ready_and_backs_off(
    upstream: Upstream, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    async with running_app(
        repo=upstream.url, root=str(root), period=0.1, backoff_initial=0.1, backoff_max=10
    ) as app:
        await until(lambda: app.syncer.published is not None)
        assert await get(app, "/readyz") == 200
        upstream.path.rename(tmp_path / "gone")
        delays = []
        for n in range(1, 5):
            await until(lambda n=n: app.syncer.consecutive_failures >= n)
            await until(lambda: metric(app.metrics, "sidekick_sync_retry_delay_seconds") > 0)
            delays.append(metric(app.metrics, "sidekick_sync_retry_delay_seconds"))
        assert delays[-1] > delays[0]
        assert await get(app, "/readyz") == 200
        assert await get(app, "/healthz") == 200
        assert read(root / "upstream" / "index.html") == "rev 0\n"
        assert metric(app.metrics, "sidekick_sync_syncs_total", {"outcome": "error"}) >= 4
        assert metric(app.metrics, "sidekick_sync_consecutive_failures") >= 4
        (tmp_path / "gone").rename(upstream.path)
        await until(lambda: app.syncer.consecutive_failures == 0)
        assert metric(app.metrics, "sidekick_sync_retry_delay_seconds") == 0


async def test_not_ready_before_the_first_publish(tmp_path: Path) -> None:
    async with running_app(
        repo=(tmp_path / "missing").as_uri(), root=str(tmp_path / "root"), max_failures=-1
    ) as app:
        await until(lambda: app.syncer.consecutive_failures >= 1)
        assert await get(app, "/readyz") == 503


async def test_metrics_show_the_published_revision(upstream: Upstream, tmp_path: Path) -> None:
    async with running_app(repo=upstream.url, root=str(tmp_path / "root")) as app:
        await until(lambda: app.syncer.published is not None)
        labels = {"revision": upstream.head()}
        assert metric(app.metrics, "sidekick_sync_revision_info", labels) == 1
        assert metric(app.metrics, "sidekick_sync_syncs_total", {"outcome": "published"}) == 1
        assert metric(app.metrics, "sidekick_sync_last_success_timestamp_seconds") > 0
        assert (
            metric(app.metrics, "sidekick_sync_duration_seconds_count", {"outcome": "published"})
            == 1
        )


async def test_bad_ref_error_names_the_ref_the_repo_and_the_fix(
    upstream: Upstream, tmp_path: Path
) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url, ref="no-such-branch")
    with pytest.raises(RefNotFound) as info:
        await syncer.sync_once()
    message = str(info.value)
    assert "'no-such-branch'" in message and upstream.url in message and "set --ref" in message
    syncer.aclose()


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIDEKICK, "sync", *args], capture_output=True, text=True, timeout=timeout, env=GIT_ENV
    )


def test_one_time_exits_0_after_publishing(upstream: Upstream, tmp_path: Path) -> None:
    proc = run_cli("--repo", upstream.url, "--root", str(tmp_path / "root"), "--one-time")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "root" / "upstream" / "index.html").read_text() == "rev 0\n"


def test_one_time_exits_1_with_a_clear_error_on_a_bad_ref(
    upstream: Upstream, tmp_path: Path
) -> None:
    proc = run_cli(
        "--repo", upstream.url, "--root", str(tmp_path / "root"), "--one-time", "--ref", "nope"
    )
    assert proc.returncode == 1
    assert "ref 'nope' does not exist in" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_one_time_exits_1_when_the_repo_is_unreachable(tmp_path: Path) -> None:
    proc = run_cli(
        "--repo", (tmp_path / "missing").as_uri(), "--root", str(tmp_path / "root"), "--one-time"
    )
    assert proc.returncode == 1
    assert "cannot list refs of" in proc.stderr


def test_max_failures_0_exits_on_the_first_failure(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = run_cli(
        "--repo",
        (tmp_path / "missing").as_uri(),
        "--root",
        str(tmp_path / "root"),
        "--max-failures",
        "0",
        "--admin-addr",
        "127.0.0.1:0",
    )
    assert proc.returncode == 1
    assert "Giving up after 1 failed sync(s)" in proc.stderr
    assert time.monotonic() - started < 30


def test_max_failures_2_exits_at_the_second_failure_as_git_sync(tmp_path: Path) -> None:
    proc = run_cli(
        "--repo",
        (tmp_path / "missing").as_uri(),
        "--root",
        str(tmp_path / "root"),
        "--max-failures",
        "2",
        "--period",
        "10ms",
        "--admin-addr",
        "127.0.0.1:0",
    )
    assert proc.returncode == 1
    assert "Giving up after 2 failed sync(s)" in proc.stderr


def test_post_sync_publishes_a_new_commit_within_a_second(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    root = tmp_path / "root"
    app = cli_sync(["--repo", upstream.url, "--root", str(root), "--period", "1h"])
    app.wait_ready()
    upstream.commit({"index.html": "rev 1\n"})
    started = time.monotonic()
    assert app.request("/sync", "POST")[0] == 202
    wait_for(lambda: read(root / "upstream" / "index.html") == "rev 1\n", timeout=5)
    assert time.monotonic() - started < 1.0
    app.stop()


def test_sighup_triggers_a_sync(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    root = tmp_path / "root"
    app = cli_sync(["--repo", upstream.url, "--root", str(root), "--period", "1h"])
    app.wait_ready()
    upstream.commit({"index.html": "rev 1\n"})
    app.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: read(root / "upstream" / "index.html") == "rev 1\n", timeout=10)
    assert "Received SIGHUP" in app.stop()


def test_gitsync_environment_variables_configure_the_sync(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    root = tmp_path / "root"
    env = {
        "GITSYNC_REPO": upstream.url,
        "GITSYNC_ROOT": str(root),
        "GITSYNC_LINK": "html",
        "GITSYNC_ONE_TIME": "true",
    }
    proc = subprocess.run(
        [*SIDEKICK, "sync"], capture_output=True, text=True, timeout=60, env={**GIT_ENV, **env}
    )
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(root / "html").startswith(".worktrees/")


def test_http_bind_is_an_alias_of_admin_addr(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [*SIDEKICK, "sync", "--repo", upstream.url, "--root", str(tmp_path / "r")],
        env={**GIT_ENV, "GITSYNC_HTTP_BIND": f"127.0.0.1:{port}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    probe = CliSync.__new__(CliSync)
    probe.port, probe.proc = port, proc
    try:
        probe.wait_ready()
    finally:
        probe.stop()


def test_http_bind_with_only_a_port_listens_on_ipv6_too(upstream: Upstream, tmp_path: Path) -> None:
    """git-sync's --http-bind=:PORT is Go's net.Listen(":PORT"): every interface, IPv4 and
    IPv6, so probes in an IPv6 cluster reach it."""
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [*SIDEKICK, "sync", "--repo", upstream.url, "--root", str(tmp_path / "r")],
        env={**GIT_ENV, "GITSYNC_HTTP_BIND": f":{port}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    probe = CliSync.__new__(CliSync)
    probe.port, probe.proc = port, proc
    try:
        probe.wait_ready()
        with urllib.request.urlopen(f"http://[::1]:{port}/readyz", timeout=5) as resp:
            assert resp.status == 200
    finally:
        probe.stop()


def test_missing_repo_flag_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_cli("--root", str(tmp_path))
    assert proc.returncode == 2
    assert "repo" in proc.stderr and "Traceback" not in proc.stderr


async def test_triggers_during_a_sync_coalesce_into_one_more_sync(
    upstream: Upstream, tmp_path: Path
) -> None:
    def total(app: SyncApp) -> float:
        return sum(
            metric(app.metrics, "sidekick_sync_syncs_total", {"outcome": o})
            for o in ("published", "unchanged", "error")
        )

    async with running_app(repo=upstream.url, root=str(tmp_path / "root"), period=3600) as app:
        await until(lambda: app.syncer.published is not None)
        base = total(app)
        plain = app.syncer._sync
        calls = 0

        async def sync_with_triggers(deadline: float) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                for _ in range(5):  # requests arriving while this sync runs
                    app.syncer.trigger("http")
            return await plain(deadline)

        app.syncer._sync = sync_with_triggers  # type: ignore[method-assign]
        app.syncer.trigger("http")
        await until(lambda: total(app) >= base + 2)
        await asyncio.sleep(0.5)
        assert total(app) == base + 2


def test_config_file_sync_section_with_durations_is_used(
    upstream: Upstream, tmp_path: Path
) -> None:
    config = tmp_path / "sidekick.yaml"
    root = tmp_path / "root"
    config.write_text(
        f"sync:\n  repo: {upstream.url}\n  root: {root}\n  link: www\n"
        "  period: 1m30s\n  one_time: true\n"
    )
    proc = run_cli("--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert (root / "www" / "index.html").read_text() == "rev 0\n"


def test_bad_duration_in_the_config_file_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "sidekick.yaml"
    config.write_text(f"sync:\n  repo: file:///x\n  root: {tmp_path}/r\n  period: soon\n")
    proc = run_cli("--config", str(config))
    assert proc.returncode == 2
    assert "sync.period" in proc.stderr and "'soon' is not a duration" in proc.stderr


def test_boolean_flags_take_git_sync_style_values(upstream: Upstream, tmp_path: Path) -> None:
    proc = run_cli(
        "--repo", upstream.url, "--root", str(tmp_path / "root"), "--one-time=true", "--ssh=false"
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "root" / "upstream" / "index.html").exists()


async def test_a_commit_hash_ref_is_not_polled_once_published(
    upstream: Upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """git-sync stops its loop after publishing a --ref that is the commit hash itself ("ref
    appears to be a git hash, no further sync needed"): it cannot change upstream. POST
    /sync still syncs on request."""
    caplog.set_level(logging.INFO)
    sha = upstream.head()
    upstream.commit({"index.html": "later\n"})
    async with running_app(
        repo=upstream.url, root=str(tmp_path / "root"), ref=sha, period=0.05
    ) as app:

        def syncs() -> float:
            return sum(
                metric(app.metrics, "sidekick_sync_syncs_total", {"outcome": o})
                for o in ("published", "unchanged", "error")
            )

        await until(lambda: syncs() == 1)
        await asyncio.sleep(0.5)  # ten periods
        assert syncs() == 1
        assert (tmp_path / "root" / "upstream").resolve().name == sha
        assert "--ref is a commit hash; no further periodic syncs" in caplog.text
        app.syncer.trigger("http")
        await until(lambda: syncs() == 2)
