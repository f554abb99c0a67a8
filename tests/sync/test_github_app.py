"""GitHub App authentication against a local stand-in for GitHub's token endpoint.

The stand-in checks the JWT the way GitHub does (RS256 signature with the app's public key,
issuer, at most ten minutes of validity) and answers with an installation token in GitHub's
documented format; ``git http-backend`` behind it accepts only that token as the password.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.sync.conftest import CliSync, Upstream, wait_for
from tests.sync.test_credentials import Auth, GitBackend, backend_factory, run_cli
from tests.sync.test_metrics_compat import metric_text

INSTALLATION = 42
__all__ = ["backend_factory"]  # the fixture, shared with the --credential tests
TOKEN_PATH = f"/api/app/installations/{INSTALLATION}/access_tokens"


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class FakeGitHub:
    """The token endpoint: verifies the JWT, mints ``ghs_<n>`` tokens valid ``lifetime`` s."""

    def __init__(self, key: rsa.RSAPrivateKey, lifetime: float = 3600, status: int = 201) -> None:
        self.public = key.public_key()
        self.lifetime = lifetime
        self.status = status
        self.issued: list[str] = []
        self.issuers: list[object] = []

    @property
    def token(self) -> str:
        return self.issued[-1] if self.issued else "(none issued)"

    def allow(self, path: str, user: str, password: str) -> bool:
        return bool(self.issued) and password == self.issued[-1]

    def handle(self, h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert h.command == "POST"
        assert h.headers["Accept"] == "application/vnd.github+json"
        auth = h.headers.get("Authorization", "")
        assert auth.startswith("Bearer ")
        header, claims, signature = auth[7:].split(".")
        self.public.verify(
            b64decode(signature),
            f"{header}.{claims}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        assert json.loads(b64decode(header)) == {"alg": "RS256", "typ": "JWT"}
        payload = json.loads(b64decode(claims))
        assert 0 < payload["exp"] - payload["iat"] <= 600
        assert payload["iat"] <= time.time() <= payload["exp"]
        self.issuers.append(payload["iss"])
        if self.status != 201:
            return self.status, {}, b'{"message": "A JSON web token could not be decoded"}'
        token = f"ghs_token{len(self.issued)}x"
        self.issued.append(token)
        expires = datetime.fromtimestamp(time.time() + self.lifetime, UTC)
        answer = {"token": token, "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
        return 201, {"Content-Type": "application/json"}, json.dumps(answer).encode()


@pytest.fixture
def app_key(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path = tmp_path / "app.pem"
    path.write_bytes(pem)
    return key, str(path)


def serve(
    tmp_path: Path, factory: Callable[[Path, Auth], GitBackend], github: FakeGitHub
) -> GitBackend:
    base = tmp_path / "srv"
    Upstream(base / "site").commit({"index.html": "from the app\n"})
    backend = factory(base, github.allow)
    backend.routes[TOKEN_PATH] = github.handle
    return backend


def test_client_id_key_file_and_installation_authenticate_git(
    tmp_path: Path,
    backend_factory: Callable[[Path, Auth], GitBackend],
    app_key: tuple[rsa.RSAPrivateKey, str],
) -> None:
    key, key_file = app_key
    github = FakeGitHub(key)
    backend = serve(tmp_path, backend_factory, github)
    root = tmp_path / "root"
    proc = run_cli(
        "--repo", backend.url("/site"), "--root", str(root), "--one-time",
        "--github-base-url", backend.url("/api/"),
        "--github-app-private-key-file", key_file,
        "--github-app-client-id", "Iv1.client",
        "--github-app-installation-id", str(INSTALLATION),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (root / "site" / "index.html").read_text() == "from the app\n"
    assert github.issuers == ["Iv1.client"]
    assert github.token not in proc.stderr


def test_the_variables_and_an_inline_key_act_as_the_flags(
    tmp_path: Path,
    backend_factory: Callable[[Path, Auth], GitBackend],
    app_key: tuple[rsa.RSAPrivateKey, str],
) -> None:
    key, key_file = app_key
    github = FakeGitHub(key)
    backend = serve(tmp_path, backend_factory, github)
    root = tmp_path / "root"
    proc = run_cli(
        env={
            "GITSYNC_REPO": backend.url("/site"),
            "GITSYNC_ROOT": str(root),
            "GITSYNC_ONE_TIME": "true",
            "GITSYNC_GITHUB_BASE_URL": backend.url("/api"),
            "GITSYNC_GITHUB_APP_PRIVATE_KEY": Path(key_file).read_text(),
            "GITSYNC_GITHUB_APP_APPLICATION_ID": "123",
            "GITSYNC_GITHUB_APP_INSTALLATION_ID": str(INSTALLATION),
        }
    )
    assert proc.returncode == 0, proc.stderr
    assert (root / "site" / "index.html").read_text() == "from the app\n"
    assert github.issuers == ["123"]


def test_a_token_is_renewed_only_when_it_nears_expiry(
    tmp_path: Path,
    backend_factory: Callable[[Path, Auth], GitBackend],
    app_key: tuple[rsa.RSAPrivateKey, str],
    cli_sync: Callable[..., CliSync],
) -> None:
    key, key_file = app_key
    github = FakeGitHub(key, lifetime=3600)
    backend = serve(tmp_path, backend_factory, github)
    args = [
        "--repo", backend.url("/site"), "--period", "100ms",
        "--github-base-url", backend.url("/api/"),
        "--github-app-private-key-file", key_file,
        "--github-app-client-id", "Iv1.client",
        "--github-app-installation-id", str(INSTALLATION),
    ]  # fmt: skip
    # A token valid for an hour serves many syncs.
    lasting = cli_sync([*args, "--root", str(tmp_path / "root1")])
    lasting.wait_ready(60)
    wait_for(lambda: metric_text(lasting, "git_sync_count_total", status="noop") >= 3, 60)
    assert len(github.issued) == 1
    assert metric_text(lasting, "git_sync_refresh_github_app_token_count", status="success") == 1
    lasting.stop()
    # A token that expires within the 30 s margin is replaced before every sync.
    github.lifetime = 20
    short = cli_sync([*args, "--root", str(tmp_path / "root2")])
    short.wait_ready(60)
    wait_for(
        lambda: (
            metric_text(short, "git_sync_refresh_github_app_token_count", status="success") >= 3
        ),
        60,
    )
    assert len(github.issued) >= 4
    short.stop()


def test_a_refused_token_request_fails_the_sync_and_says_why(
    tmp_path: Path,
    backend_factory: Callable[[Path, Auth], GitBackend],
    app_key: tuple[rsa.RSAPrivateKey, str],
) -> None:
    key, key_file = app_key
    github = FakeGitHub(key, status=401)
    backend = serve(tmp_path, backend_factory, github)
    proc = run_cli(
        "--repo", backend.url("/site"), "--root", str(tmp_path / "root"), "--one-time",
        "--github-base-url", backend.url("/api/"),
        "--github-app-private-key-file", key_file,
        "--github-app-application-id", "7",
        "--github-app-installation-id", str(INSTALLATION),
    )  # fmt: skip
    assert proc.returncode == 1
    assert "answered 401" in proc.stderr
    assert not (tmp_path / "root" / "site").exists()
    assert "Bearer" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--github-app-client-id", "Iv1.x", "--github-app-application-id", "3",
             "--github-app-installation-id", "4"],
            "give only one of them",
        ),
        (["--github-app-client-id", "Iv1.x"], "needs --github-app-installation-id"),
        (["--github-app-installation-id", "4"], "needs the app"),
        (
            ["--github-app-client-id", "Iv1.x", "--github-app-installation-id", "4",
             "--username", "u", "--password", "p"],
            "drop --username",
        ),
    ],
)  # fmt: skip
def test_incomplete_app_settings_are_one_sentence_and_exit_2(
    tmp_path: Path, app_key: tuple[rsa.RSAPrivateKey, str], args: list[str], message: str
) -> None:
    _key, key_file = app_key
    proc = run_cli(
        "--repo", "https://github.com/org/site", "--root", str(tmp_path / "root"),
        "--github-app-private-key-file", key_file, *args,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_key_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "app.pem"
    bad.write_text("not a key\n")
    proc = run_cli(
        "--repo", "https://github.com/org/site", "--root", str(tmp_path / "root"),
        "--github-app-private-key-file", str(bad), "--github-app-client-id", "Iv1.x",
        "--github-app-installation-id", "4",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "does not hold an unencrypted PEM private key" in proc.stderr
