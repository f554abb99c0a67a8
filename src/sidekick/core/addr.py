"""``HOST:PORT`` addresses for listening sockets."""

from __future__ import annotations

from typing import NamedTuple

from sidekick.core.errors import ConfigError


class HostPort(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_hostport(text: str, *, name: str = "address") -> HostPort:
    """Parse ``HOST:PORT``, ``:PORT`` (all interfaces) or ``[::1]:PORT``."""
    s = text.strip()
    host, sep, port_s = s.rpartition(":")
    if not sep:
        raise ConfigError(f"{name} {text!r} has no port; write HOST:PORT, like 127.0.0.1:8088")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(
            f"{name} {text!r}: port {port_s!r} is not a number; write HOST:PORT, like 127.0.0.1:8088"
        ) from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name} {text!r}: port {port} is out of range; use 0-65535")
    return HostPort(host, port)
