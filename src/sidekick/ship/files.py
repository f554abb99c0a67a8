"""Small helpers for the local files ship reads and writes: ``file:`` URLs and whole writes.

Kept apart from sources and sinks because both need them (a tailed glob and a ``file:``
output are written the same way; the dead-letter file, the spool and ``stdout:`` all write
whole buffers to a raw descriptor).
"""

from __future__ import annotations

import os

from sidekick.core.errors import ConfigError
from sidekick.core.redact import redact_url


def file_url_path(url: str, *, flag: str, example: str, names: str = "no file") -> str:
    """``file:///var/log/x`` or ``file:/var/log/x`` -> ``/var/log/x``.

    Raises ConfigError, naming ``flag``, the URL and ``example``, for a remote host or an
    empty path / directory.
    """
    rest = url.split(":", 1)[1]
    if rest.startswith("//"):
        host, _sep, path = rest[2:].partition("/")
        if host not in ("", "localhost"):
            raise ConfigError(
                f"{flag} {redact_url(url)!r}: file URLs name a local path; write {example}"
            )
        path = "/" + path
    else:
        path = rest
    if not path or path.endswith("/"):
        raise ConfigError(f"{flag} {redact_url(url)!r} names {names}; write {example}")
    return path


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
