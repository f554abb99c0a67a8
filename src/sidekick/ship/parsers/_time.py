"""Log timestamps to RFC 3339 UTC strings with nanosecond precision, cached.

Access logs repeat the same second on thousands of consecutive lines, so each converter
keeps a small dict from the raw text to the finished string: a hit costs one dict lookup,
and ``datetime`` runs only once per distinct second. The caches are cleared when they grow
past ``CACHE_LIMIT`` entries, which bounds memory on logs whose every line has a new time.

Left out: local-time logs without an offset (nginx and Apache error logs) are read as UTC;
there is no time-zone option yet.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

CACHE_LIMIT = 4096

MONTHS = {
    "Jan": 1,
    "Feb": 2,
    "Mar": 3,
    "Apr": 4,
    "May": 5,
    "Jun": 6,
    "Jul": 7,
    "Aug": 8,
    "Sep": 9,
    "Oct": 10,
    "Nov": 11,
    "Dec": 12,
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(dt: datetime, nanos: int = 0) -> str:
    """``dt`` (aware) as ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` in UTC; ``nanos`` below the second."""
    u = dt.astimezone(UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{nanos:09d}Z"
    )


def _offset(text: str) -> timezone:
    """``+0100`` / ``-05:30`` / ``Z`` as a fixed-offset zone; ``ValueError`` if malformed."""
    if text in ("Z", "z"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    if text[0] not in "+-":
        raise ValueError(text)
    digits = text[1:].replace(":", "")
    if len(digits) != 4 or not digits.isdigit():
        raise ValueError(text)
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


class ClfTime:
    """Common-log-format time ``02/Jan/2024:03:04:05 +0100`` (nginx ``$time_local``, Apache ``%t``)."""

    def __init__(self) -> None:
        self.cache: dict[str, str] = {}

    def __call__(self, raw: str) -> str | None:
        """The converted time, or ``None`` if ``raw`` is not a valid date."""
        hit = self.cache.get(raw)
        if hit is not None:
            return hit
        try:
            day, mon, rest = raw.split("/", 2)
            year, hh, mm, rest = rest.split(":", 3)
            ss, _, zone = rest.partition(" ")
            dt = datetime(
                int(year), MONTHS[mon], int(day), int(hh), int(mm), int(ss), tzinfo=_offset(zone)
            )
        except (ValueError, KeyError):
            return None
        out = rfc3339(dt)
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()
        self.cache[raw] = out
        return out


class CachedTime:
    """Any seconds-resolution layout whose caller splits out the fields, cached per raw text."""

    def __init__(self) -> None:
        self.cache: dict[str, str] = {}

    def lookup(self, raw: str, build: tuple[int, int, int, int, int, int]) -> str | None:
        """``build`` is (year, month, day, hour, minute, second) in UTC, used on a cache miss."""
        hit = self.cache.get(raw)
        if hit is not None:
            return hit
        try:
            dt = datetime(*build, tzinfo=UTC)
        except ValueError:
            return None
        out = rfc3339(dt)
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()
        self.cache[raw] = out
        return out


_ISO = re.compile(
    r"(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:[.,](\d{1,9})\d*)?\s*([Zz]|[+-]\d{2}:?\d{2})?$",
    re.ASCII,  # ASCII digits only: the fraction is copied into the output as written
)
# (date-time to the second, zone) -> "YYYY-MM-DDTHH:MM:SS." in UTC; bounded like the others.
_iso_cache: dict[tuple[str, str | None], str | None] = {}


def iso8601(text: str) -> str | None:
    """An ISO 8601 / RFC 3339 date-time string (no zone means UTC), or ``None``."""
    m = _ISO.match(text)
    if m is None:
        return None
    seconds, frac, zone = m.groups()
    key = (seconds, zone)
    try:
        prefix = _iso_cache[key]
    except KeyError:
        try:
            tz = _offset(zone) if zone else UTC
            dt = datetime(
                int(seconds[0:4]),
                int(seconds[5:7]),
                int(seconds[8:10]),
                int(seconds[11:13]),
                int(seconds[14:16]),
                int(seconds[17:19]),
                tzinfo=tz,
            )
            prefix = rfc3339(dt)[:20]
        except ValueError:
            prefix = None
        if len(_iso_cache) >= CACHE_LIMIT:
            _iso_cache.clear()
        _iso_cache[key] = prefix
    if prefix is None:
        return None
    return prefix + (frac.ljust(9, "0") if frac else "000000000") + "Z"


def epoch(value: float) -> str | None:
    """A Unix time in s, ms, µs or ns (guessed from its magnitude, as Vector and Loki do)."""
    if value != value or value < 0:  # NaN or before 1970: not a log time
        return None
    if isinstance(value, int):
        if value < 10**11:
            ns = value * 10**9
        elif value < 10**14:
            ns = value * 10**6
        elif value < 10**17:
            ns = value * 10**3
        else:
            ns = value
    elif value < 1e11:
        ns = round(value * 1e9)
    elif value < 1e14:
        ns = round(value * 1e6)
    elif value < 1e17:
        ns = round(value * 1e3)
    else:
        ns = round(value)
    secs, nanos = divmod(ns, 10**9)
    try:
        dt = _EPOCH + timedelta(seconds=secs)
    except OverflowError:
        return None
    return rfc3339(dt, nanos)
