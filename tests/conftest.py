"""Fixtures shared by every test package."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SIDEKICK = [sys.executable, "-m", "sidekick"]


_GIVEN: set[int] = set()


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
