"""git-sync's ``--credential``: several URL-scoped user names and passwords, over real HTTP.

The server is ``git http-backend`` run as CGI by a threaded HTTP server that checks Basic
credentials per repository path, as a git host would; it can also serve extra routes (the
GitHub App tests add a token endpoint to it).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sidekick.sync.config import Credential, SyncConfig
from sidekick.sync.credentials import FileRedactor
from sidekick.sync.git_setup import build_git
from sidekick.sync.metrics import SyncMetrics
from sidekick.sync.syncer import Syncer
from tests.conftest import SIDEKICK
from tests.sync.conftest import GIT_ENV, Upstream

Auth = Callable[[str, str, str], bool]  # (request path, user, password) -> allowed
Route = Callable[[BaseHTTPRequestHandler, bytes], tuple[int, dict[str, str], bytes]]


class GitBackend:
    """``git http-backend`` behind Basic auth on 127.0.0.1, in a thread."""

    def __init__(self, base: Path, auth: Auth) -> None:
        self.base = base
        self.auth = auth
        self.routes: dict[str, Route] = {}
        self.denied = 0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                backend.serve(self)

            def do_POST(self) -> None:
                backend.serve(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        path, _, query = h.path.partition("?")
        if path in self.routes:
            status, headers, payload = self.routes[path](h, body)
            self.respond(h, status, headers, payload)
            return
        user, password = "", ""
        auth = h.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        if not self.auth(path, user, password):
            self.denied += 1
            self.respond(h, 401, {"WWW-Authenticate": 'Basic realm="git"'}, b"")
            return
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.base),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": h.command,
            "CONTENT_TYPE": h.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user,
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": h.headers.get("Git-Protocol", ""),
        }
        out = subprocess.run(
            ["git", "http-backend"], env=env, input=body, capture_output=True, check=False
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers[name] = value.strip()
        self.respond(h, status, headers, payload)

    @staticmethod
    def respond(
        h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], payload: bytes
    ) -> None:
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend_factory() -> Iterator[Callable[[Path, Auth], GitBackend]]:
    made: list[GitBackend] = []

    def make(base: Path, auth: Auth) -> GitBackend:
        b = GitBackend(base, auth)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


PASSWORDS = {"/site-a": ("alice", "pw-A-1234"), "/site-b": ("bob", "pw-B-5678")}


def per_repo_auth(path: str, user: str, password: str) -> bool:
    for prefix, expected in PASSWORDS.items():
        if path.startswith(prefix + "/"):
            return (user, password) == expected
    return False


@pytest.fixture
def two_sites(tmp_path: Path, backend_factory: Callable[[Path, Auth], GitBackend]) -> GitBackend:
    base = tmp_path / "srv"
    for name in ("site-a", "site-b"):
        Upstream(base / name).commit({"index.html": f"{name}\n"})
    return backend_factory(base, per_repo_auth)


def secret(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n")
    return str(path)


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIDEKICK, "sync", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**GIT_ENV, **(env or {})},
        cwd=cwd,
    )


def both_credentials(tmp_path: Path, backend: GitBackend) -> str:
    return json.dumps(
        [
            {
                "url": backend.url("/site-a"),
                "username": "alice",
                "password-file": secret(tmp_path, "a", PASSWORDS["/site-a"][1]),
            },
            {"url": backend.url("/site-b"), "username": "bob", "password": PASSWORDS["/site-b"][1]},
        ]
    )


def test_each_credential_applies_to_its_own_url(two_sites: GitBackend, tmp_path: Path) -> None:
    creds = both_credentials(tmp_path, two_sites)
    for name in ("site-a", "site-b"):
        root = tmp_path / f"root-{name}"
        proc = run_cli(
            "--repo", two_sites.url(f"/{name}"), "--root", str(root), "--one-time",
            "--credential", creds,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert (root / name / "index.html").read_text() == f"{name}\n"
        assert PASSWORDS["/site-b"][1] not in proc.stderr


def test_gitsync_credential_variable_acts_as_the_flag(
    two_sites: GitBackend, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    proc = run_cli(
        "--repo", two_sites.url("/site-b"), "--root", str(root), "--one-time",
        env={"GITSYNC_CREDENTIAL": both_credentials(tmp_path, two_sites)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (root / "site-b" / "index.html").read_text() == "site-b\n"


def test_a_credential_for_another_url_is_not_offered(two_sites: GitBackend, tmp_path: Path) -> None:
    only_b = json.dumps(
        {"url": two_sites.url("/site-b"), "username": "bob", "password": PASSWORDS["/site-b"][1]}
    )
    proc = run_cli(
        "--repo", two_sites.url("/site-a"), "--root", str(tmp_path / "root"), "--one-time",
        "--credential", only_b,
    )  # fmt: skip
    assert proc.returncode == 1
    assert not (tmp_path / "root" / "site-a").exists()
    assert PASSWORDS["/site-b"][1] not in proc.stderr


def test_the_most_specific_credential_wins(
    tmp_path: Path, backend_factory: Callable[[Path, Auth], GitBackend]
) -> None:
    base = tmp_path / "srv"
    Upstream(base / "site-a").commit({"index.html": "a\n"})
    backend = backend_factory(base, per_repo_auth)
    # A host-wide credential with the wrong user, and the repository's own, listed after it.
    creds = [
        {"url": backend.url(""), "username": "mallory", "password": "nope-nope"},
        {"url": backend.url("/site-a"), "username": "alice", "password": PASSWORDS["/site-a"][1]},
    ]
    proc = run_cli(
        "--repo", backend.url("/site-a"), "--root", str(tmp_path / "root"), "--one-time",
        "--credential", json.dumps(creds[0]), "--credential", json.dumps(creds[1]),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


async def test_a_rotated_password_file_is_used_on_the_next_sync(
    tmp_path: Path, backend_factory: Callable[[Path, Auth], GitBackend]
) -> None:
    base = tmp_path / "srv"
    up = Upstream(base / "site-a")
    up.commit({"index.html": "one\n"})
    current = {"password": "first-pass"}
    backend = backend_factory(
        base, lambda path, user, pw: (user, pw) == ("alice", current["password"])
    )
    pw_file = secret(tmp_path, "pw", "first-pass")
    cred = Credential(url=backend.url("/site-a"), username="alice", password_file=pw_file)
    cfg = SyncConfig(
        repo=backend.url("/site-a"),
        root=str(tmp_path / "root"),
        credentials=[cred],
        max_failures=-1,
    )
    redact = FileRedactor(files=[pw_file])
    syncer = Syncer(cfg, git=build_git(cfg, GIT_ENV, redact), metrics=SyncMetrics())
    try:
        assert await syncer.sync_once() == "published"
        current["password"] = "second-pass"
        up.commit({"index.html": "two\n"})
        with pytest.raises(Exception, match=r"REDACTED|401|Authentication") as failed:
            await syncer.sync_once()
        assert "first-pass" not in str(failed.value)
        secret(tmp_path, "pw", "second-pass")
        assert await syncer.sync_once() == "published"
        assert (tmp_path / "root" / "site-a" / "index.html").read_text() == "two\n"
    finally:
        syncer.aclose()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{url: x}", "--credential is not valid JSON"),
        ('{"url": "https://h/x", "username": "u"}', "needs exactly one of password and"),
        ('{"url": "https://h/x", "user": "u", "password": "p"}', "unknown field 'user'"),
        ('{"username": "u", "password": "p"}', "--credential has no url"),
        ('[{"url": "https://h/x", "password": "p"}]', "has no username"),
    ],
)
def test_a_malformed_credential_is_one_sentence_and_exit_2(
    tmp_path: Path, value: str, message: str
) -> None:
    base = ["--repo", "file:///nowhere", "--root", str(tmp_path / "root"), "--one-time"]
    for proc in (
        run_cli(*base, "--credential", value),
        run_cli(*base, env={"GITSYNC_CREDENTIAL": value}),
    ):
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_a_credential_for_a_non_http_url_is_refused(tmp_path: Path) -> None:
    cred = json.dumps({"url": "ssh://host/x", "username": "u", "password": "p"})
    proc = run_cli(
        "--repo", "file:///nowhere", "--root", str(tmp_path / "root"), "--credential", cred
    )
    assert proc.returncode == 2
    assert "is not an http(s) URL" in proc.stderr
