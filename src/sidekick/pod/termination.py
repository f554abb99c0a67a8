"""Termination messages: what a container leaves in ``terminationMessagePath`` when it ends.

The kubelet gives each container instance an empty file at ``terminationMessagePath`` (default
``/dev/termination-log``) and, when the container has ended, reads at most 4096 bytes of it into
``state.terminated.message``. With ``terminationMessagePolicy: FallbackToLogsOnError`` an empty
file of a container that failed (non-zero exit code) is replaced by the end of its log: the last
80 lines, at most 2048 bytes.

Here the file is ``RUN_DIR/<pod>/state/<container>/termination-log``, emptied before each start,
and the path is translated to it like a mount path (so ``echo done > /dev/termination-log`` in
a ``sh -c`` writes there). The message is shown in the container's status line, in ``/status``
and ``status.json`` as the container's ``message`` (and in ``lastState``).

Left out: the kubelet's 12 KiB limit over all containers of a Pod (each container gets 4096
bytes here).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

MAX_MESSAGE_BYTES = 4096
LOG_LINES = 80
LOG_BYTES = 2048


def reset(path: Path) -> None:
    """An empty message file, writable by whatever user the container runs as."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666)


def _tail(log_file: Path, offset: int) -> bytes:
    try:
        with open(log_file, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            # Enough to hold 80 lines of the last 2048 bytes; only this instance's output.
            start = max(offset, size - LOG_BYTES)
            f.seek(start)
            data = f.read()
    except OSError:
        return b""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-LOG_LINES:])


def message(path: Path, policy: str, code: int, log_file: Path, log_offset: int) -> str:
    """The container's termination message, the kubelet's way (empty when there is none)."""
    data = b""
    with contextlib.suppress(OSError), open(path, "rb") as f:
        data = f.read(MAX_MESSAGE_BYTES)
    if not data and policy == "FallbackToLogsOnError" and code != 0:
        data = _tail(log_file, log_offset)
    return data.decode(errors="replace")
