"""Syncing over HTTP with a user name and password, from ``git http-backend``.

The server is ``git http-backend`` run as CGI behind a small aiohttp wrapper that checks
HTTP Basic credentials, as a git host would.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from sidekick.sync.config import SyncConfig
from sidekick.sync.git import GitError, Redactor
from sidekick.sync.git_setup import build_git
from sidekick.sync.syncer import Syncer
from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, Upstream, git, make_syncer, metric, script
from tests.sync.test_loop import running_app, until

PASSWORD = "s3cret-Pa55word"


class GitHttpServer:
    def __init__(self, base: Path, user: str, password: str) -> None:
        self.base = base
        self.user = user
        self.password = password
        self.requests = 0
        self.url = ""
        self.cookie: str | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if self.cookie is not None:
            if request.cookies.get("session") != self.cookie:
                return web.Response(status=403)
        elif request.headers.get("Authorization") != expected:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'})
        body = await request.read()
        env = {
            "PATH": GIT_ENV["PATH"],
            "GIT_PROJECT_ROOT": str(self.base),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query_string,
            "REQUEST_METHOD": request.method,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": self.user,
            "REMOTE_ADDR": request.remote or "",
            "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
        }
        proc = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(body)
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers[name] = value.strip()
        return web.Response(status=status, body=payload, headers=headers)


@pytest.fixture
async def http_git(upstream: Upstream) -> AsyncIterator[GitHttpServer]:
    server = GitHttpServer(upstream.path.parent, "alice", PASSWORD)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/{upstream.path.name}"
    yield server
    await runner.cleanup()


def password_file(tmp_path: Path, password: str) -> str:
    path = tmp_path / "password"
    path.write_text(password + "\n")
    return str(path)


async def test_username_and_password_file_authenticate(
    http_git: GitHttpServer, tmp_path: Path, upstream: Upstream
) -> None:
    syncer = make_syncer(
        tmp_path / "root",
        http_git.url,
        username="alice",
        password_file=password_file(tmp_path, PASSWORD),
    )
    assert await syncer.sync_once() == "published"
    assert (tmp_path / "root" / "upstream" / "index.html").read_text() == "rev 0\n"
    assert http_git.requests > 0
    syncer.aclose()


async def test_password_file_is_read_again_on_every_sync(
    http_git: GitHttpServer, tmp_path: Path, upstream: Upstream
) -> None:
    pw = password_file(tmp_path, PASSWORD)
    syncer = make_syncer(tmp_path / "root", http_git.url, username="alice", password_file=pw)
    await syncer.sync_once()
    http_git.password = "rotated-Pa55word"
    password_file(tmp_path, "rotated-Pa55word")
    upstream.commit({"index.html": "rev 1\n"})
    assert await syncer.sync_once() == "published"
    syncer.aclose()


async def test_wrong_password_fails_without_revealing_it(
    http_git: GitHttpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-Pa55word"
    syncer = make_syncer(
        tmp_path / "root",
        http_git.url,
        username="alice",
        password_file=password_file(tmp_path, wrong),
    )
    with pytest.raises(GitError) as info:
        await syncer.sync_once()
    assert "Authentication failed" in str(info.value) or "401" in str(info.value)
    assert wrong not in str(info.value)
    assert wrong not in caplog.text
    assert wrong not in (syncer.last_error or "")
    assert wrong.encode() not in generate_latest(syncer.metrics.registry)
    syncer.aclose()


async def test_password_in_the_url_is_redacted_in_logs_and_errors(
    http_git: GitHttpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = http_git.url.replace("http://", f"http://alice:{PASSWORD}@")
    syncer = make_syncer(tmp_path / "root", url)
    assert await syncer.sync_once() == "published"
    http_git.password = "changed-Pa55word"
    with pytest.raises(GitError) as info:
        await syncer.sync_once()
    assert PASSWORD not in str(info.value)
    assert "alice:REDACTED@" in str(info.value)
    assert PASSWORD not in caplog.text
    syncer.aclose()


async def test_cli_never_prints_the_password(http_git: GitHttpServer, tmp_path: Path) -> None:
    wrong = "wrong-Pa55word"
    proc = await asyncio.create_subprocess_exec(
        *SIDEKICK,
        "sync",
        "--repo",
        http_git.url,
        "--root",
        str(tmp_path / "root"),
        "--username",
        "alice",
        "--password-file",
        password_file(tmp_path, wrong),
        "--one-time",
        "--log-level",
        "debug",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=GIT_ENV,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert b"cannot list refs" in err
    assert wrong.encode() not in out + err


async def test_gitsync_password_environment_variable_authenticates(
    http_git: GitHttpServer, tmp_path: Path
) -> None:
    env = {**GIT_ENV, "GITSYNC_USERNAME": "alice", "GITSYNC_PASSWORD": PASSWORD}
    proc = await asyncio.create_subprocess_exec(
        *SIDEKICK,
        "sync",
        "--repo",
        http_git.url,
        "--root",
        str(tmp_path / "root"),
        "--one-time",
        "--log-level",
        "debug",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert PASSWORD.encode() not in out + err


async def test_cookie_file_authenticates(http_git: GitHttpServer, tmp_path: Path) -> None:
    http_git.cookie = "c00kie-value"
    cookies = tmp_path / "cookies.txt"
    # Netscape cookie file format, as curl (and so git) reads it.
    cookies.write_text("127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tc00kie-value\n")
    cfg = SyncConfig(repo=http_git.url, root=str(tmp_path / "root"), cookie_file=str(cookies))
    syncer = Syncer(cfg, git=build_git(cfg, GIT_ENV, Redactor()))
    assert await syncer.sync_once() == "published"
    syncer.aclose()


async def test_askpass_url_is_asked_for_credentials_on_every_sync(
    http_git: GitHttpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    asked = 0

    async def credentials(request: web.Request) -> web.Response:
        nonlocal asked
        asked += 1
        return web.Response(text=f"username=alice\npassword={PASSWORD}\n")

    app = web.Application()
    app.router.add_get("/creds", credentials)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        syncer = make_syncer(
            tmp_path / "root", http_git.url, askpass_url=f"http://127.0.0.1:{port}/creds"
        )
        assert await syncer.sync_once() == "published"
        assert await syncer.sync_once() == "unchanged"
        assert asked == 2
        assert PASSWORD not in caplog.text
        syncer.aclose()
    finally:
        await runner.cleanup()


async def serve_askpass(
    answer: web.Response, elsewhere: str = "username=alice\npassword=" + PASSWORD
) -> tuple[web.AppRunner, str]:
    """An askpass service that gives ``answer`` to every GET of /creds, and ``elsewhere``
    to one of /elsewhere; its runner and the URL of /creds."""

    async def credentials(request: web.Request) -> web.Response:
        return answer

    async def other(request: web.Request) -> web.Response:
        return web.Response(text=elsewhere)

    app = web.Application()
    app.router.add_get("/creds", credentials)
    app.router.add_get("/elsewhere", other)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/creds"


async def test_an_askpass_answer_without_a_password_line_gives_an_empty_password(
    http_git: GitHttpServer, tmp_path: Path
) -> None:
    """git-sync's CallAskPassURL starts from empty values and takes whatever username= and
    password= lines come (CRLF line ends too), so a host that wants only a user name
    (a token in it) is served."""
    http_git.password = ""
    runner, url = await serve_askpass(web.Response(text="# token\r\nusername=alice\r\n"))
    try:
        syncer = make_syncer(tmp_path / "root", http_git.url, askpass_url=url)
        assert await syncer.sync_once() == "published"
        assert metric(syncer, "git_sync_askpass_calls", {"status": "success"}) == 1
        syncer.aclose()
    finally:
        await runner.cleanup()


async def test_an_askpass_answer_without_a_username_line_is_accepted(
    upstream: Upstream, tmp_path: Path
) -> None:
    """Nor is a missing username= an error in git-sync: the repository may need none."""
    runner, url = await serve_askpass(web.Response(text="password=tok3n\n"))
    try:
        syncer = make_syncer(tmp_path / "root", str(upstream.path), askpass_url=url)
        assert await syncer.sync_once() == "published"
        syncer.aclose()
    finally:
        await runner.cleanup()


async def test_an_askpass_redirect_is_not_followed(http_git: GitHttpServer, tmp_path: Path) -> None:
    """git-sync's client stops at a redirect (CheckRedirect returns ErrUseLastResponse), so
    a 3xx is a status other than 200 and an error, whatever the target would answer."""
    runner, url = await serve_askpass(web.Response(status=302, headers={"Location": "/elsewhere"}))
    try:
        syncer = make_syncer(tmp_path / "root", http_git.url, askpass_url=url)
        with pytest.raises(Exception, match="answered 302, expected 200"):
            await syncer.sync_once()
        syncer.aclose()
    finally:
        await runner.cleanup()


async def test_a_password_in_the_url_never_reaches_git_config_or_an_argv(
    http_git: GitHttpServer, tmp_path: Path
) -> None:
    """git-sync takes user and password out of an http(s) --repo and gives them to git as a
    credential, so the URL git sees, and keeps in .git/config on the shared volume, has
    none."""
    argv_log = tmp_path / "argv"
    wrapper = tmp_path / "git-wrapper"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {argv_log}\nexec git "$@"\n')
    wrapper.chmod(0o755)
    root = tmp_path / "root"
    url = http_git.url.replace("http://", f"http://alice:{PASSWORD}@")
    proc = await asyncio.create_subprocess_exec(
        *SIDEKICK,
        "sync",
        "--repo",
        url,
        "--root",
        str(root),
        "--one-time",
        "--git",
        str(wrapper),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=GIT_ENV,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert (root / "upstream" / "index.html").read_text() == "rev 0\n"
    assert PASSWORD not in (root / ".git" / "config").read_text()
    assert http_git.url in (root / ".git" / "config").read_text()
    assert PASSWORD not in argv_log.read_text()
    assert PASSWORD.encode() not in out + err


async def test_the_password_is_offered_only_to_the_repositorys_own_host(
    http_git: GitHttpServer, upstream: Upstream, tmp_path: Path
) -> None:
    """git-sync stores --username/--password-file as a git credential for --repo's URL, so
    git offers it to that host only. A submodule on another host that asks for a password
    (anyone who can commit a .gitmodules can point one there) must not get it."""
    lib = Upstream(tmp_path / "elsewhere" / "lib")
    lib_sha = lib.commit({"lib.txt": "lib\n"})
    other = GitHttpServer(lib.path.parent, "mallory", "other-Pa55word")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", other.handle)
    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        return await handler(request)  # type: ignore[no-any-return]

    app.middlewares.append(record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        (upstream.path / ".gitmodules").write_text(
            f'[submodule "lib"]\n\tpath = lib\n\turl = http://127.0.0.1:{port}/lib\n'
        )
        git(upstream.path, "add", ".gitmodules")
        git(upstream.path, "update-index", "--add", "--cacheinfo", f"160000,{lib_sha},lib")
        git(upstream.path, "commit", "-q", "-m", "a submodule on another host")
        proc = await asyncio.create_subprocess_exec(
            *SIDEKICK,
            "sync",
            "--repo",
            http_git.url,
            "--root",
            str(tmp_path / "root"),
            "--username",
            "alice",
            "--password-file",
            password_file(tmp_path, PASSWORD),
            "--one-time",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=GIT_ENV,
        )
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await runner.cleanup()
    assert seen, err.decode()
    leaked = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert all(leaked not in header for header in seen)


async def test_a_git_run_by_a_hook_authenticates_to_the_repository_as_the_sync(
    http_git: GitHttpServer, tmp_path: Path
) -> None:
    """git-sync stores --username/--password-file in git's credential cache, configured in
    the global config its hooks inherit, so a git run by a hook authenticates to --repo's
    host too; the password appears in no argument and no environment variable."""
    out = tmp_path / "hook.out"
    hook = script(
        tmp_path / "hook.sh",
        f'git ls-remote "{http_git.url}" HEAD > {out}.tmp 2>&1; env > {tmp_path}/env; '
        f"mv {out}.tmp {out}",
    )
    async with running_app(
        repo=http_git.url,
        root=str(tmp_path / "root"),
        username="alice",
        password_file=password_file(tmp_path, PASSWORD),
        exechook_command=hook,
    ):
        await until(out.exists)
    sha = git(tmp_path / "root" / "upstream", "rev-parse", "HEAD")
    assert out.read_text().split() == [sha, "HEAD"], out.read_text()
    assert PASSWORD not in (tmp_path / "env").read_text()


async def test_askpass_url_beside_username_and_password_file_is_used_with_a_warning(
    http_git: GitHttpServer, tmp_path: Path
) -> None:
    """git-sync accepts both: it stores the --username credential, then --askpass-url's
    answer for the same URL over it, so the answer is what git uses."""
    runner, url = await serve_askpass(web.Response(text=f"username=alice\npassword={PASSWORD}\n"))
    try:
        proc = await asyncio.create_subprocess_exec(
            *SIDEKICK, "sync", "--repo", http_git.url, "--root", str(tmp_path / "root"),
            "--one-time", "--username", "bob",
            "--password-file", password_file(tmp_path, "wrong-Pa55word"), "--askpass-url", url,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=GIT_ENV,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, err
    assert (tmp_path / "root" / "upstream" / "index.html").read_text() == "rev 0\n"
    assert b"--askpass-url is set beside --username/--password-file; its answer is used" in err
    assert PASSWORD.encode() not in out + err
