"""Credentials of the HTTP outputs: the ``Authorization`` header, read from secret files.

An output names the file of its password, API key or token (a mounted Kubernetes Secret), not
the secret itself. ``Credentials`` reads it at start-up (a missing, unreadable or empty file is
a ``ConfigError``), again before a request when the file changed on disk, and again after the
server refused it, so a rotated Secret is picked up without a restart; a file that cannot be
read then keeps the value read before, with a warning.

Left out: other schemes (digest, request signing such as AWS SigV4) and tokens fetched from a
server (OAuth).
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

from sidekick.core.errors import ConfigError
from sidekick.ship.sinks._options import CONTROL_CHARS, Target, option_error

log = logging.getLogger("sidekick.ship.sinks")


def read_secret(target: Target, option: str, path: str) -> str:
    """The content of a secret file (a mounted Kubernetes Secret), without its final newline."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise option_error(
            target, option, f"names {path!r}, which does not exist", "check the path"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8"
        raise option_error(
            target, option, f"names {path!r}, which cannot be read ({reason})", "fix the file"
        ) from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise option_error(target, option, f"names {path!r}, which is empty", "fill the file")
    if option != "password_file" and CONTROL_CHARS.search(secret):
        # Sent as it is in a header, where a line break would inject another one: aiohttp
        # refuses every request. A password is base64-encoded, so it may hold anything.
        raise option_error(
            target,
            option,
            f"names {path!r}, which holds a line break or another control character inside",
            "write the secret on one line",
        )
    return secret


class Credentials:
    """The ``Authorization`` header from secret files, re-read after a 401/403.

    At most one scheme: basic (``username`` + ``password_file``), an Elasticsearch API key
    (``api_key_file``) or a bearer token (``bearer_token_file``). Files are read at start-up
    (a missing file is a ``ConfigError``), again before a request when the file changed on
    disk (one ``stat`` per request), and again after the server refused them, so a rotated
    Kubernetes Secret is picked up without a restart.
    """

    def __init__(
        self,
        target: Target,
        *,
        username: str | None = None,
        password_file: str | None = None,
        api_key_file: str | None = None,
        bearer_token_file: str | None = None,
    ) -> None:
        self.target = target
        basic = bool(username or password_file)
        chosen = [
            name
            for name, on in (
                ("username/password_file", basic),
                ("api_key_file", bool(api_key_file)),
                ("bearer_token_file", bool(bearer_token_file)),
            )
            if on
        ]
        if len(chosen) > 1:
            raise option_error(
                target,
                chosen[1],
                f"is set together with {chosen[0]}",
                "use only one way to authenticate",
            )
        if basic and not (username and password_file):
            missing = "password_file" if username else "username"
            raise option_error(
                target, missing, "is not set", "basic auth needs both username and password_file"
            )
        self._username = username
        self._file: tuple[str, str] | None = None
        if password_file:
            self._file = ("password_file", password_file)
        elif api_key_file:
            self._file = ("api_key_file", api_key_file)
        elif bearer_token_file:
            self._file = ("bearer_token_file", bearer_token_file)
        self._stamp: tuple[int, int] | None = None
        self._stale = False
        self._secret: str | None = None  # the file's content behind ``header``
        self.header: str | None = self._read() if self._file else None

    def _stat(self) -> tuple[int, int] | None:
        assert self._file is not None
        try:
            st = os.stat(self._file[1])
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def _read(self) -> str:
        assert self._file is not None
        option, path = self._file
        self._stamp = self._stat()
        secret = read_secret(self.target, option, path)
        self._secret = secret
        if option == "password_file":
            token = base64.b64encode(f"{self._username}:{secret}".encode()).decode("ascii")
            return f"Basic {token}"
        if option == "api_key_file":
            return f"ApiKey {secret}"
        return f"Bearer {secret}"

    def secrets(self) -> tuple[str, ...]:
        """What must not be shown: the secret and the header built from it (its base64 too)."""
        if self.header is None or self._secret is None:
            return ()
        return (self._secret, self.header, self.header.partition(" ")[2])

    def refused(self) -> None:
        """The server answered 401/403: read the file again before the next request."""
        self._stale = True

    def current(self) -> str | None:
        """The header value to send now, re-reading the file if it changed or was refused."""
        if self._file is not None and (self._stale or self._stat() != self._stamp):
            self._stale = False
            self.reload()
        return self.header

    def reload(self) -> None:
        """Read the secret file again; keep the old value if it cannot be read now."""
        if self._file is None:
            return
        try:
            header = self._read()
        except ConfigError as exc:
            log.warning("%s; keeping the credentials read before", exc)
            return
        if header != self.header:
            log.info("output %r: credentials changed on disk; using the new ones", self.target.url)
            self.header = header
