"""git-sync's ``--credential``: user names and passwords for several URLs, given to git on ask.

Each credential becomes a URL-scoped git credential helper
(``-c credential.<url>.helper=...``), so git itself decides which one applies: its URL
matching compares scheme, host and port, and the path as a prefix by whole components, and
the most specific credential is listed first. The helper is a few lines of ``sh`` that print
the user name and the first line of the password file at the moment git asks, so a rotated
secret is used on the next sync, and the password is never in an argv, an environment
variable, ``.git/config`` or a credential store.

git-sync stores the same credentials with ``git credential approve`` into git's in-memory
cache, keyed by scheme and host; the effect for the git commands is the same. It leaves out
SSH: credentials apply to HTTP(S) URLs, as in git-sync.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sidekick.core.errors import ConfigError
from sidekick.sync.config import Credential
from sidekick.sync.git import Redactor


def scope_url(url: str) -> str:
    """``url`` without user info, query or fragment: the key git matches credentials by."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def helper_command(username: str, password_file: str) -> str:
    """A credential helper answering ``get`` with ``username`` and the file's first line."""
    user = shlex.quote(username)
    path = shlex.quote(os.path.abspath(password_file))
    return (
        '!f() { test "$1" = get || exit 0; cat >/dev/null; '
        f"printf 'username=%s\\npassword=%s\\n' {user} \"$(head -n 1 {path})\"; }}; f"
    )


def helper_config(credentials: Iterable[Credential]) -> list[tuple[str, str]]:
    """git ``-c`` settings for the credentials, the most specific URL first."""
    ordered = sorted(credentials, key=lambda c: len(scope_url(c.url)), reverse=True)
    return [
        (f"credential.{scope_url(c.url)}.helper", helper_command(c.username, c.password_file))
        for c in ordered
    ]


def check_credentials(credentials: Iterable[Credential]) -> None:
    """git-sync's rules for ``--credential``, as errors that name the fix."""
    for cred in credentials:
        scheme = urlsplit(cred.url).scheme
        if scheme not in ("http", "https"):
            raise ConfigError(
                f"--credential url {scope_url(cred.url) or cred.url!r} is not an http(s) URL; "
                "credentials apply to http:// and https:// repositories"
            )
        if not os.access(cred.password_file, os.R_OK):
            raise ConfigError(
                f"--credential password-file {cred.password_file!r} for {scope_url(cred.url)} "
                "does not exist or cannot be read; check the path"
            )


@dataclass
class FileRedactor(Redactor):
    """A ``Redactor`` that also hides the current content of secret files.

    The files are read again whenever text is redacted (only for messages that leave the
    program, so rarely), so a rotated password is hidden as well as the old one.
    """

    files: list[str] = field(default_factory=list)

    def __call__(self, text: str) -> str:
        for path in self.files:
            with (
                contextlib.suppress(OSError, UnicodeDecodeError),
                open(path, encoding="utf-8") as f,
            ):
                self.add(f.readline().rstrip("\r\n"))
        return super().__call__(text)


class PrivateDir:
    """A 0700 directory for secrets this process writes (tokens); removed by ``aclose``."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="sidekick-sync-secrets-"))

    def write(self, name: str, secret: str) -> Path:
        target = self.path / name
        tmp = self.path / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret + "\n")
        os.replace(tmp, target)
        return target

    def aclose(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


__all__ = [
    "FileRedactor",
    "PrivateDir",
    "check_credentials",
    "helper_command",
    "helper_config",
    "scope_url",
]
