"""GitHub App authentication, as git-sync v4's ``--github-app-*`` flags do it.

Before a sync, if the installation token is missing or expires within 30 seconds, a JWT is
signed with the app's RSA private key (RS256; issuer: the client ID, or else the
application ID; valid ten minutes) and exchanged with ``POST <base>/app/installations/<id>/
access_tokens`` for an installation token. The token is written to a private file that a
URL-scoped git credential helper (see ``credentials``) hands to git as the password for the
repository. A failed refresh fails the sync, which is retried like any other, and is counted
in ``git_sync_refresh_github_app_token_count{status}``.

The signature uses ``cryptography`` (constant-time RSA, PKCS#1 and PKCS#8 PEM parsing), which
the standard library lacks. The key file is read again on every refresh, so a rotated key
is picked up. It leaves out GitHub's other token kinds (user-to-server, OAuth).
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sidekick.core.errors import ConfigError, TemporaryError
from sidekick.sync.config import SyncConfig
from sidekick.sync.git import Redactor, remaining
from sidekick.sync.metrics import SyncMetrics

# GitHub ignores the user name for installation tokens; this is the one its docs show.
TOKEN_USER = "x-access-token"
REFRESH_MARGIN = 30.0  # seconds before expiry at which a new token is fetched, like git-sync
JWT_LIFETIME = 600  # GitHub accepts at most ten minutes
CLOCK_SKEW = 60  # iat is set this far in the past, so a server clock behind ours still accepts it


class GitHubAppError(TemporaryError):
    """The installation token could not be obtained; the sync fails and is retried."""


def enabled(cfg: SyncConfig) -> bool:
    return cfg.github_app_private_key_file is not None


def check(cfg: SyncConfig) -> None:
    """git-sync's rules for the ``--github-app-*`` flags, as errors that name the fix."""
    has_issuer = bool(cfg.github_app_application_id or cfg.github_app_client_id)
    if not enabled(cfg):
        for flag, value in (
            ("--github-app-application-id", cfg.github_app_application_id),
            ("--github-app-client-id", cfg.github_app_client_id),
            ("--github-app-installation-id", cfg.github_app_installation_id),
        ):
            if value:
                raise ConfigError(
                    f"{flag} is set but no private key is; give --github-app-private-key-file "
                    "(or GITSYNC_GITHUB_APP_PRIVATE_KEY) too, or drop it"
                )
        return
    if cfg.github_app_application_id and cfg.github_app_client_id:
        raise ConfigError(
            "--github-app-application-id and --github-app-client-id are both set; "
            "give only one of them"
        )
    if not has_issuer:
        raise ConfigError(
            "GitHub App authentication needs the app: give --github-app-client-id or "
            "--github-app-application-id"
        )
    if not cfg.github_app_installation_id:
        raise ConfigError(
            "GitHub App authentication needs --github-app-installation-id; give the "
            "installation's ID"
        )
    if cfg.username or cfg.password_file or cfg.askpass_url:
        raise ConfigError(
            "GitHub App authentication supplies the password; drop --username, "
            "--password-file, $GITSYNC_PASSWORD and --askpass-url"
        )
    if not cfg.github_base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"--github-base-url {Redactor()(cfg.github_base_url)!r} is not an http(s) URL; "
            "use the API's URL, like https://api.github.com/"
        )
    load_key(cfg.github_app_private_key_file or "", error=ConfigError)


def load_key(path: str, error: type[Exception] = GitHubAppError) -> rsa.RSAPrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise error(
            f"--github-app-private-key-file {path!r} cannot be read ({exc.strerror}); "
            "check the mounted secret"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise error(
            f"--github-app-private-key-file {path!r} does not hold an unencrypted PEM private "
            "key; download the app's private key from GitHub and mount it as is"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise error(
            f"--github-app-private-key-file {path!r} holds a non-RSA key; GitHub Apps sign "
            "with RSA keys, use the one GitHub generated"
        )
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(key: rsa.RSAPrivateKey, issuer: str, now: float) -> str:
    """An RS256 JWT for the GitHub App API."""
    header = {"alg": "RS256", "typ": "JWT"}
    iat = int(now) - CLOCK_SKEW
    claims = {"iss": issuer, "iat": iat, "exp": iat + JWT_LIFETIME}
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64(signature)


def token_url(base: str, installation_id: int) -> str:
    return base.rstrip("/") + f"/app/installations/{installation_id}/access_tokens"


class AppToken:
    """Keeps an installation token fresh in ``token_file`` (called before every sync)."""

    def __init__(
        self, cfg: SyncConfig, token_file: Path, metrics: SyncMetrics, redact: Redactor
    ) -> None:
        self.cfg = cfg
        self.token_file = token_file
        self.metrics = metrics
        self.redact = redact
        self.expires_at = 0.0  # unix time; 0 means no token yet

    async def refresh(self, deadline: float) -> None:
        if self.expires_at - REFRESH_MARGIN > time.time():
            return
        try:
            token, expires_at = await self._fetch(deadline)
        except GitHubAppError:
            self.metrics.gs_app_token.inc("error")
            raise
        self.redact.add(token)
        fd_path = self.token_file.with_name(self.token_file.name + ".tmp")
        fd_path.write_text(token + "\n", encoding="utf-8")
        fd_path.chmod(0o600)
        fd_path.replace(self.token_file)
        self.expires_at = expires_at
        self.metrics.gs_app_token.inc("success")

    async def _fetch(self, deadline: float) -> tuple[str, float]:
        cfg = self.cfg
        key = load_key(cfg.github_app_private_key_file or "")
        issuer = cfg.github_app_client_id or str(cfg.github_app_application_id)
        jwt = make_jwt(key, issuer, time.time())
        url = token_url(cfg.github_base_url, cfg.github_app_installation_id)
        shown = self.redact(url)
        headers = {"Authorization": f"Bearer {jwt}", "Accept": "application/vnd.github+json"}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    url,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=remaining(deadline)),
                ) as resp,
            ):
                status = resp.status
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GitHubAppError(
                f"GitHub App token request to {shown} failed: {self.redact(str(exc) or type(exc).__name__)}; "
                "check --github-base-url and the network"
            ) from None
        if status != 201:
            detail = self.redact(body[:200].decode("utf-8", "replace").strip())
            raise GitHubAppError(
                f"GitHub App token request to {shown} answered {status} ({detail}); check the "
                "app ID or client ID, the installation ID and the private key"
            )
        try:
            answer = json.loads(body)
            token = str(answer["token"])
            expires = datetime.fromisoformat(str(answer["expires_at"]).replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            raise GitHubAppError(
                f"GitHub App token answer from {shown} has no token and expires_at; check "
                "--github-base-url"
            ) from None
        return token, expires.timestamp()
