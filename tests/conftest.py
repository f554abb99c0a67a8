"""Fixtures shared by every test package."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SIDEKICK = [sys.executable, "-m", "sidekick"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def port() -> int:
    return free_port()
