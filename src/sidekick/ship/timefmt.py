"""RFC 3339 timestamps in UTC with nanosecond precision, the form every record carries.

Tailed lines get the time they were read; one string is built per read chunk and shared by
its records, so formatting costs nothing per line.
"""

from __future__ import annotations

import time


def rfc3339_ns(ns: int) -> str:
    """``2026-11-22T11:23:07.123456789Z`` for nanoseconds since the epoch."""
    sec, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


def now_rfc3339() -> str:
    return rfc3339_ns(time.time_ns())
