"""Fixtures shared by every test package."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SIDEKICK = [sys.executable, "-m", "sidekick"]


_GIVEN: set[int] = set()


@contextlib.contextmanager
def tmpfs(mnt: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at ``mnt`` (made if missing) with ``options`` (``size=1m``):
    writes there really fail with ENOSPC once it is full. Unmounted (lazily) afterwards."""
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def free_port() -> int:
    """A port free now that no earlier call returned: a port one part of a test was given,
    and that is free again while its process restarts (after a kill -9), is never handed to
    another part (say, the restarted shipper's admin server)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


@pytest.fixture
def port() -> int:
    return free_port()
