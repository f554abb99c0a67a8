"""Parse and print durations like ``500ms``, ``10s``, ``1m30s``, ``2h`` (Go/Kubernetes style).

A bare number is seconds. Used for every duration flag so they all read the same way.
"""

from __future__ import annotations

import re

from sidekick.core.errors import ConfigError

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str | float | int, *, name: str = "duration") -> float:
    """Return seconds for ``text``; raise ConfigError naming ``name`` if it is not a duration."""
    if isinstance(text, int | float):
        if text < 0:
            raise ConfigError(f"{name} {text!r} is negative; give a duration like 10s")
        return float(text)
    s = text.strip()
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if value < 0:
            raise ConfigError(f"{name} {text!r} is negative; give a duration like 10s")
        return value
    pos = 0
    total = 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ConfigError(
            f"{name} {text!r} is not a duration; use a number with a unit, like 500ms, 10s, 1m30s or 2h"
        )
    return total


def format_duration(seconds: float) -> str:
    """Short human form: ``0.5s``, ``30s``, ``5m``, ``1h30m``."""
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if sec:
        out += f"{sec}s"
    return out
