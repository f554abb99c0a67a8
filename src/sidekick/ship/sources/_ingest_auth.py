"""Bearer tokens of the network inputs, read from ``--ingest-token-file``.

One reader for every input that takes a token (``http://``, ``otlp://``, ``otlp+grpc://``) and
for ``sidekick ship --check``, so all of them accept the same tokens by the same rules: one
token per line, the file re-read when it changes so tokens rotate without a restart, a given
token compared with every token in constant time.

Left out: other schemes than ``Bearer`` (basic auth, client certificates), and tokens per
input or per client.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

from sidekick.core.errors import ConfigError
from sidekick.core.ratelog import RateLimitedLog

log = logging.getLogger("sidekick.ship.ingest")


class TokenFile:
    """Bearer tokens, one per line; re-read when the file's mtime or size changes.

    Several lines allow rotation without downtime: add the new token, move clients, remove
    the old one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self.tokens: list[bytes] = []
        # Re-read on every request: a file that stays unreadable is logged once a minute.
        self._rate = RateLimitedLog(log)
        self.reload(initial=True)

    def reload(self, *, initial: bool = False) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            text = self.path.read_bytes()
        except OSError as exc:
            if initial:
                raise ConfigError(
                    f"--ingest-token-file {str(self.path)!r} cannot be read ({exc.strerror}); "
                    "give a readable file holding the token"
                ) from None
            self._rate.warning(
                "unreadable",
                "Cannot re-read token file %s (%s); keeping the tokens read before.",
                self.path,
                exc.strerror,
            )
            return
        tokens = [t.strip() for t in text.splitlines() if t.strip()]
        if not tokens:
            if initial:
                raise ConfigError(
                    f"--ingest-token-file {str(self.path)!r} is empty; write the token into it"
                )
            log.warning("Token file %s is empty now; every request will get 401.", self.path)
        elif not initial:
            log.info("Token file %s changed; %d token(s) now valid.", self.path, len(tokens))
        self.tokens = tokens
        self._stamp = stamp

    def check(self, header: str | None) -> bool:
        self.reload()
        if not header:
            return False
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # aiohttp decodes header bytes that are not UTF-8 as surrogates: keep them as bytes.
        candidate = given.strip().encode("utf-8", "surrogateescape")
        ok = False
        for token in self.tokens:
            # Compare with every token, always: the time taken reveals nothing about which.
            ok |= hmac.compare_digest(candidate, token)
        return ok
