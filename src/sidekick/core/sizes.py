"""Parse byte sizes like ``64MiB``, ``1Mi``, ``512k``, ``100`` (Kubernetes quantities included)."""

from __future__ import annotations

import re

from sidekick.core.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKMGT]?i?)[bB]?\s*$")
_MULT = {
    "": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "ki": 1024,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def parse_size(text: str | int, *, name: str = "size") -> int:
    """Return a byte count; raise ConfigError naming ``name`` if ``text`` is not a size."""
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"{name} {text!r} is negative; give a size like 64MiB")
        return text
    m = _SIZE.match(text)
    if not m or m.group(2) not in _MULT:
        raise ConfigError(
            f"{name} {text!r} is not a size; use bytes or a unit, like 512KiB or 64MiB"
        )
    return int(float(m.group(1)) * _MULT[m.group(2)])
