"""git-sync v4's metrics: names, labels, types and counting rules, from real syncs."""

from __future__ import annotations

import asyncio
import contextlib
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from sidekick.sync.hooks import HookRunner, exechook
from sidekick.sync.syncer import Syncer
from tests.sync.conftest import GIT_ENV, CliSync, Upstream, make_syncer, metric, wait_for


def scrape(proc: CliSync) -> str:
    with urllib.request.urlopen(proc.url("/metrics"), timeout=5) as resp:
        return str(resp.read().decode())


def metric_text(proc: CliSync, name: str, /, **labels: str) -> float:
    """The value of one sample on a running program's /metrics (0 if absent)."""
    try:
        text = scrape(proc)
    except OSError:
        return 0.0
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{want}}}" if want else "")) + r" ([0-9.e+]+)$"
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


def counts(syncer: Syncer) -> dict[str, float]:
    out = {
        s: metric(syncer, "git_sync_count_total", {"status": s})
        for s in ("success", "noop", "error")
    }
    out["fetch"] = metric(syncer, "git_fetch_count_total")
    return out


async def test_sync_counts_follow_git_sync(upstream: Upstream, tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = upstream.head()
    syncer = make_syncer(root, upstream.url, stale_worktree_timeout=3600.0, max_failures=-1)
    try:
        assert await syncer.sync_once() == "published"
        assert counts(syncer) == {"success": 1, "noop": 0, "error": 0, "fetch": 1}
        assert await syncer.sync_once() == "unchanged"
        assert counts(syncer) == {"success": 1, "noop": 1, "error": 0, "fetch": 1}
        upstream.commit({"index.html": "rev 1\n"})
        assert await syncer.sync_once() == "published"
        assert counts(syncer) == {"success": 2, "noop": 1, "error": 0, "fetch": 2}
        # Back to the first revision, whose worktree is still on disk: no git fetch is
        # needed, but git-sync counts one for every sync that changes the link.
        fetches = metric(syncer, "sidekick_sync_fetches_total")
        upstream.publish(first)
        assert await syncer.sync_once() == "published"
        assert metric(syncer, "sidekick_sync_fetches_total") == fetches
        assert counts(syncer) == {"success": 3, "noop": 1, "error": 0, "fetch": 3}
        # A ref that does not exist fails before any fetch.
        syncer.cfg.ref = "missing"
        with contextlib.suppress(Exception):
            await syncer.sync_once()
        assert counts(syncer) == {"success": 3, "noop": 1, "error": 1, "fetch": 3}
        for status, n in (("success", 3), ("noop", 1), ("error", 1)):
            labels = {"status": status}
            assert metric(syncer, "git_sync_duration_seconds_count", labels) == n
            assert metric(syncer, "git_sync_duration_seconds_sum", labels) > 0
    finally:
        syncer.aclose()


async def test_the_first_sync_of_a_restart_is_a_success(upstream: Upstream, tmp_path: Path) -> None:
    root = tmp_path / "root"
    before = make_syncer(root, upstream.url)
    await before.sync_once()
    before.aclose()
    after = make_syncer(root, upstream.url)
    try:
        assert await after.sync_once() == "unchanged"
        assert counts(after) == {"success": 1, "noop": 0, "error": 0, "fetch": 1}
        assert await after.sync_once() == "unchanged"
        assert counts(after) == {"success": 1, "noop": 1, "error": 0, "fetch": 1}
    finally:
        after.aclose()


async def test_hook_runs_are_counted_by_git_sync_name(upstream: Upstream, tmp_path: Path) -> None:
    syncer = make_syncer(tmp_path / "root", upstream.url)
    runner = HookRunner("exechook", exechook("false", 10, GIT_ENV), 1, syncer.metrics)
    ok = HookRunner("exechook", exechook("true", 10, GIT_ENV), 1, syncer.metrics)
    try:
        await syncer.sync_once()
        assert syncer.published is not None
        assert not await runner.attempt(*syncer.published)
        assert await ok.attempt(*syncer.published)
        for status in ("success", "error"):
            labels = {"name": "exechook", "status": status}
            assert metric(syncer, "git_sync_hook_run_count_total", labels) == 1
    finally:
        syncer.aclose()


async def test_askpass_calls_are_counted_under_git_sync_exact_name(
    upstream: Upstream, tmp_path: Path, cli_sync: Callable[..., CliSync]
) -> None:
    answers = {"status": 200}

    async def credentials(request: web.Request) -> web.Response:
        return web.Response(status=answers["status"], text="username=u\npassword=p-secret\n")

    app = web.Application()
    app.router.add_get("/creds", credentials)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        proc = cli_sync(
            [
                "--repo", upstream.url, "--root", str(tmp_path / "root"), "--period", "100ms",
                "--max-failures", "-1", "--askpass-url", f"http://127.0.0.1:{port}/creds",
            ]
        )  # fmt: skip
        await wait_async(lambda: proc.request("/readyz")[0] == 200)
        await wait_async(lambda: metric_text(proc, "git_sync_askpass_calls", status="success") >= 2)
        answers["status"] = 500
        await wait_async(lambda: metric_text(proc, "git_sync_askpass_calls", status="error") >= 1)
        text = scrape(proc)
        # Exactly git-sync's sample names: no _total added to these two.
        assert re.search(r'^git_sync_askpass_calls\{status="success"\} ', text, re.M)
        assert re.search(r'^git_sync_count_total\{status="success"\} 1\.0$', text, re.M)
        assert "git_sync_askpass_calls_total" not in text
        assert "p-secret" not in text
        # sidekick's own names stay beside git-sync's.
        assert "sidekick_sync_syncs_total" in text
        proc.stop()
    finally:
        await runner.cleanup()


async def wait_async(predicate: Callable[[], bool], timeout: float = 60) -> None:
    """``wait_for`` off the event loop, so a server in this loop keeps answering."""
    await asyncio.to_thread(wait_for, predicate, timeout, 0.05)
