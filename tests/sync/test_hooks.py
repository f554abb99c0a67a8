"""Post-publish hooks, and the shared secret on POST /sync."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from sidekick.sync.app import verify_trigger
from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, Upstream, metric, script
from tests.sync.test_loop import running_app, until


async def test_exechook_runs_in_the_new_worktree_with_gitsync_hash(
    upstream: Upstream, tmp_path: Path
) -> None:
    out = tmp_path / "hook.out"
    command = script(tmp_path / "hook.sh", f'echo "$GITSYNC_HASH $PWD" > {out}')
    root = tmp_path / "root"
    async with running_app(repo=upstream.url, root=str(root), exechook_command=command) as app:
        await until(lambda: out.exists() and out.read_text().strip() != "")
        sha, cwd = out.read_text().split()
        assert sha == upstream.head()
        assert Path(cwd) == (root / "upstream").resolve()
        await until(
            lambda: (
                metric(
                    app.metrics,
                    "sidekick_sync_hook_runs_total",
                    {"hook": "exechook", "outcome": "success"},
                )
                == 1
            )
        )


async def test_failed_exechook_is_retried_after_its_backoff(
    upstream: Upstream, tmp_path: Path
) -> None:
    marker, done = tmp_path / "failed-once", tmp_path / "done"
    body = f"if [ -e {marker} ]; then touch {done}; else touch {marker}; exit 3; fi"
    command = script(tmp_path / "hook.sh", body)
    async with running_app(
        repo=upstream.url,
        root=str(tmp_path / "root"),
        exechook_command=command,
        exechook_backoff=1,
    ) as app:
        await until(done.exists)
        labels = {"hook": "exechook", "outcome": "error"}
        assert metric(app.metrics, "sidekick_sync_hook_runs_total", labels) == 1


async def test_exechook_that_hangs_is_killed_at_its_timeout(
    upstream: Upstream, tmp_path: Path
) -> None:
    async with running_app(
        repo=upstream.url,
        root=str(tmp_path / "root"),
        exechook_command=script(tmp_path / "hook.sh", "exec sleep 60"),
        exechook_timeout=1,
        exechook_backoff=30,
    ) as app:
        labels = {"hook": "exechook", "outcome": "error"}
        await until(lambda: metric(app.metrics, "sidekick_sync_hook_runs_total", labels) == 1, 5)


class Receiver:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[str, str | None]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((request.method, request.headers.get("Gitsync-Hash")))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver([500])
    app = web.Application()
    app.router.add_route("*", "/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


async def test_webhook_sends_gitsync_hash_and_retries_an_unexpected_status(
    upstream: Upstream, tmp_path: Path, receiver: Receiver
) -> None:
    async with running_app(
        repo=upstream.url,
        root=str(tmp_path / "root"),
        webhook_url=receiver.url,
        webhook_method="PUT",
        webhook_backoff=1,
    ) as app:
        await until(lambda: len(receiver.calls) == 2)
        assert receiver.calls == [("PUT", upstream.head())] * 2
        labels = {"hook": "webhook", "outcome": "success"}
        await until(lambda: metric(app.metrics, "sidekick_sync_hook_runs_total", labels) == 1)


def test_one_time_exits_1_when_the_exechook_fails(upstream: Upstream, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *SIDEKICK,
            "sync",
            "--repo",
            upstream.url,
            "--root",
            str(tmp_path / "root"),
            "--one-time",
            "--exechook-command",
            "false",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=GIT_ENV,
    )
    assert proc.returncode == 1
    assert "exechook 'false' exited with status 1" in proc.stderr


async def test_exechook_runs_git_as_the_sync_does(upstream: Upstream, tmp_path: Path) -> None:
    """git-sync's exechook inherits git-sync's environment, where it has set
    GIT_CONFIG_GLOBAL (its private config, --git-config included) and GIT_SSH_COMMAND, so
    a git the hook runs has the same set-up; sidekick's parsing locale stays out."""
    out = tmp_path / "hook.out"
    body = (
        f"{{ git config --get user.name; git config --get safe.directory; "
        f'echo "$GIT_SSH_COMMAND"; echo "${{LC_ALL-unset}}"; }} > {out}.tmp && mv {out}.tmp {out}'
    )
    async with running_app(
        repo=upstream.url,
        root=str(tmp_path / "root"),
        exechook_command=script(tmp_path / "hook.sh", body),
        git_config="user.name:Hook Tester,safe.directory:*",
        ssh_known_hosts=False,
    ):
        await until(out.exists)
    name, safe, ssh, lc_all = out.read_text().splitlines()
    assert (name, safe) == ("Hook Tester", "*")
    assert "StrictHostKeyChecking=no" in ssh
    assert lc_all == GIT_ENV.get("LC_ALL", "unset")


async def test_exechook_is_one_program_whose_path_may_hold_spaces(
    upstream: Upstream, tmp_path: Path
) -> None:
    """git-sync runs the value as one program with no arguments (exec.Command(command)),
    so a path with a space in it is a path, not a command line."""
    out = tmp_path / "hook.out"
    command = script(tmp_path / "my hooks" / "on publish.sh", f'echo "$GITSYNC_HASH" > {out}')
    async with running_app(
        repo=upstream.url, root=str(tmp_path / "root"), exechook_command=command
    ):
        await until(lambda: out.exists() and out.read_text() != "")
    assert out.read_text().strip() == upstream.head()


@pytest.mark.parametrize("flag", ["--exechook-command", "--pre-publish-exechook-command"])
def test_a_command_line_with_arguments_is_refused_at_start(
    upstream: Upstream, tmp_path: Path, flag: str
) -> None:
    """Earlier versions split the value into words; git-sync takes it as one program, so
    "sh -c 'touch x'" names no program there and would fail on every run. It is refused
    with the fix rather than run differently."""
    marker = tmp_path / "ran"
    proc = subprocess.run(
        [*SIDEKICK, "sync", "--repo", upstream.url, "--root", str(tmp_path / "root"),
         "--one-time", flag, f"sh -c 'touch {marker}'"],
        capture_output=True, text=True, timeout=60, env=GIT_ENV,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"{flag} \"sh -c 'touch {marker}'\" names no program" in proc.stderr
    assert "put the command line in a script and give the script's path" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


SECRET = b"webhook-secret"


def test_github_signature_over_the_body_is_accepted() -> None:
    body = b'{"ref": "refs/heads/main"}'
    sig = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert verify_trigger(SECRET, {"X-Hub-Signature-256": sig}, body)


def test_github_signature_over_another_body_is_refused() -> None:
    sig = "sha256=" + hmac.new(SECRET, b"other", hashlib.sha256).hexdigest()
    assert not verify_trigger(SECRET, {"X-Hub-Signature-256": sig}, b"body")


async def test_post_sync_without_a_valid_signature_gets_401(
    upstream: Upstream, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    body = b'{"zen": "hi"}'
    good = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    async with running_app(
        repo=upstream.url, root=str(tmp_path / "root"), trigger_secret_file=str(secret_file)
    ) as app:
        url = f"http://127.0.0.1:{app.admin.port}/sync"
        cases = [
            ({}, 401),
            ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 401),
            ({"Authorization": "Bearer nope"}, 401),
            ({"X-Hub-Signature-256": good}, 202),
            ({"X-Gitlab-Token": SECRET.decode()}, 202),
            ({"Authorization": "Bearer " + SECRET.decode()}, 202),
        ]
        async with aiohttp.ClientSession() as s:
            for headers, expected in cases:
                async with s.post(url, data=body, headers=headers) as r:
                    assert r.status == expected, headers
        assert metric(app.metrics, "sidekick_sync_triggers_total", {"source": "refused"}) == 3
        assert metric(app.metrics, "sidekick_sync_triggers_total", {"source": "http"}) == 3


async def test_webhook_success_status_minus_1_accepts_any_answer_as_git_sync(
    upstream: Upstream, tmp_path: Path, receiver: Receiver
) -> None:
    """git-sync v3's 'fire and forget' value: git-sync v4 reads -1 as 0."""
    receiver.statuses = [500]
    proc = await asyncio.create_subprocess_exec(
        *SIDEKICK,
        "sync",
        "--repo",
        upstream.url,
        "--root",
        str(tmp_path / "root"),
        "--one-time",
        "--webhook-url",
        receiver.url,
        "--webhook-success-status=-1",
        stderr=asyncio.subprocess.PIPE,
        env=GIT_ENV,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert receiver.calls == [("POST", upstream.head())]
