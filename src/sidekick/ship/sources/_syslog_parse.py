"""Syslog messages (RFC 5424 and RFC 3164) to records, and RFC 6587 framing over streams.

Fields (ECS's ``log.syslog.*`` names, which OpenTelemetry's syslog mapping follows):
``log.syslog.priority``, ``log.syslog.facility.code``/``.name``,
``log.syslog.severity.code``/``.name`` (also as ``log.level``), ``log.syslog.hostname``,
``log.syslog.appname``, ``log.syslog.procid``, ``log.syslog.msgid``, ``log.syslog.version``
(5424), ``log.syslog.structured_data`` (``{"id@pen": {"param": "value"}}``), ``message`` and
``@timestamp`` (the message's time in UTC; RFC 3164's year-less local time is taken in the
shipper's time zone, this year; without one, the receive time). RFC 5424's NILVALUE ``-``
leaves a field out.

RFC 3164 is loose: the hostname is optional (a local sender such as ``logger -u`` or
Python's ``SysLogHandler`` leaves it out, the latter also the timestamp), so a first word
that looks like a tag (``app:`` or ``app[42]:``) is the tag. A message without ``<PRI>`` is
kept whole as ``message`` with ``log.parse_error``, never dropped.

Stream framing (RFC 6587): a frame that starts with a digit is octet-counted (``LEN SP MSG``);
any other ends at LF or NUL (``SysLogHandler`` over TCP ends messages with NUL).
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime
from typing import Any

from sidekick.ship.records import MESSAGE, PARSE_ERROR, TIMESTAMP, Record
from sidekick.ship.timefmt import rfc3339_ns

FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

_PRI = re.compile(r"<(\d{1,3})>")
_SD_ELEMENT = r'\[[^\]"\s]+(?:\s+[^=\]\s]+="(?:[^"\\]|\\.)*")*\s*\]'
_RFC5424 = re.compile(
    r"(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) (-|(?:" + _SD_ELEMENT + r")+)(?: (.*))?",
    re.S,
)
_SD_SPLIT = re.compile(r"\[([^\]\"\s]+)((?:\s+[^=\]\s]+=\"(?:[^\"\\]|\\.)*\")*)\s*\]")
_SD_PARAM = re.compile(r'([^=\]\s]+)="((?:[^"\\]|\\.)*)"')
_SD_UNESCAPE = re.compile(r"\\([\"\\\]])")
_BSD_TIME = re.compile(r"([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d) ")
_ISO_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) ")
_TAG = re.compile(r"([^\s\[\]:]{1,48})(?:\[([^\]]{1,128})\])?: ?")
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}


@functools.lru_cache(maxsize=4096)
def _utc(text: str) -> str | None:
    """(Cached: a burst of messages shares few distinct times.) An RFC 3339 time (any offset, up to nanoseconds) as UTC with nanoseconds."""
    head, dot, rest = text.partition(".")
    frac = ""
    if dot:
        digits = re.match(r"\d+", rest)
        if digits is None:
            return None
        frac = digits.group()
        text = head + rest[len(frac) :]
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ns = int(dt.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    return rfc3339_ns(ns)


def _bsd_time(m: re.Match[str], now: float) -> str | None:
    month = _MONTHS.get(m.group(1))
    if month is None:
        return None
    year = time.localtime(now).tm_year
    fields = (int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)))
    try:
        t = time.mktime((year, month, *fields, 0, 0, -1))
        if t > now + 86400:  # December's messages read in January
            t = time.mktime((year - 1, month, *fields, 0, 0, -1))
    except (OverflowError, ValueError):
        return None
    return rfc3339_ns(int(t) * 1_000_000_000)


def _priority(rec: Record, pri: int) -> None:
    facility, severity = divmod(pri, 8)
    rec["log.syslog.priority"] = pri
    rec["log.syslog.facility.code"] = facility
    if facility < len(FACILITIES):
        rec["log.syslog.facility.name"] = FACILITIES[facility]
    rec["log.syslog.severity.code"] = severity
    rec["log.syslog.severity.name"] = rec["log.level"] = SEVERITIES[severity]


def _priority_fields(pri: int) -> Record:
    rec: Record = {}
    _priority(rec, pri)
    return rec


# The fields of each priority, made once: a record starts as a copy of its priority's.
_PRIORITIES = [_priority_fields(pri) for pri in range(192)]
# An RFC 5424 message whole, <PRI> included: the common case in one match.
_PRI_RFC5424 = re.compile(_PRI.pattern + _RFC5424.pattern, re.S)


def _structured(sd: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sd_id, params in _SD_SPLIT.findall(sd):
        out[sd_id] = {k: _SD_UNESCAPE.sub(r"\1", v) for k, v in _SD_PARAM.findall(params)}
    return out


def parse(frame: bytes, now: float) -> Record:
    """One syslog message as a record."""
    text = frame.decode("utf-8", "replace").rstrip("\r\n\0")
    whole = _PRI_RFC5424.fullmatch(text)
    if whole is not None:
        pri_text, version, stamp, host, app, procid, msgid, sd, msg = whole.groups()
        pri = int(pri_text)
        if pri <= 191 and version != "0":
            rec = _PRIORITIES[pri].copy()
            rec["log.syslog.version"] = int(version)
            if stamp != "-":
                utc = _utc(stamp)
                if utc is not None:
                    rec[TIMESTAMP] = utc
            if host != "-":
                rec["log.syslog.hostname"] = host
            if app != "-":
                rec["log.syslog.appname"] = app
            if procid != "-":
                rec["log.syslog.procid"] = procid
            if msgid != "-":
                rec["log.syslog.msgid"] = msgid
            if sd != "-":
                rec["log.syslog.structured_data"] = _structured(sd)
            rec[MESSAGE] = (msg or "").removeprefix("\ufeff")
            return rec
    rec = {}
    m = _PRI.match(text)
    if m is None or int(m.group(1)) > 191:
        rec[MESSAGE] = text
        rec[PARSE_ERROR] = "no syslog <PRI> header"
        return rec
    _priority(rec, int(m.group(1)))
    rest = text[m.end() :]
    m5 = _RFC5424.fullmatch(rest) if rest[:1].isdigit() else None
    if m5 is not None and m5.group(1) != "0":
        version, stamp, host, app, procid, msgid, sd, msg = m5.groups()
        rec["log.syslog.version"] = int(version)
        if stamp != "-":
            utc = _utc(stamp)
            if utc is not None:
                rec[TIMESTAMP] = utc
        for name, value in (
            ("log.syslog.hostname", host),
            ("log.syslog.appname", app),
            ("log.syslog.procid", procid),
            ("log.syslog.msgid", msgid),
        ):
            if value != "-":
                rec[name] = value
        if sd != "-":
            rec["log.syslog.structured_data"] = _structured(sd)
        rec[MESSAGE] = (msg or "").removeprefix("\ufeff")
        return rec
    # RFC 3164: [TIMESTAMP SP] [HOSTNAME SP] [TAG[PID]: ] MSG
    bsd = _BSD_TIME.match(rest)
    if bsd is not None:
        stamp = _bsd_time(bsd, now)
        if stamp is not None:
            rec[TIMESTAMP] = stamp
        rest = rest[bsd.end() :]
    else:
        iso = _ISO_TIME.match(rest)
        if iso is not None:
            utc = _utc(iso.group(1))
            if utc is not None:
                rec[TIMESTAMP] = utc
            rest = rest[iso.end() :]
    if bsd is not None or TIMESTAMP in rec:
        tag = _TAG.match(rest)
        if tag is None:
            host, sep, after = rest.partition(" ")
            if sep and host:
                rec["log.syslog.hostname"] = host
                rest = after
    tag = _TAG.match(rest)
    if tag is not None:
        rec["log.syslog.appname"] = tag.group(1)
        if tag.group(2) is not None:
            rec["log.syslog.procid"] = tag.group(2)
        rest = rest[tag.end() :]
    rec[MESSAGE] = rest
    return rec


class FrameError(Exception):
    """An octet count that is not one: the stream cannot be followed any further."""


class Framer:
    """Splits a stream into syslog frames (RFC 6587), at most ``max_bytes`` each.

    A frame over the limit is skipped to its end (an octet-counted one by its count, another
    to its LF or NUL) and counted by ``feed``; the stream goes on after it.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self._skip = 0  # bytes of an oversize octet-counted frame still to come
        self._skip_line = False  # an oversize frame runs to the next LF or NUL

    @property
    def partial(self) -> bool:
        """Whether a frame is under way (its end has not arrived)."""
        return bool(self.buf) or bool(self._skip) or self._skip_line

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """(complete frames, frames skipped for their size); FrameError if unframeable."""
        self.buf += data
        view = bytes(self.buf)
        n = len(view)
        pos = 0
        frames: list[bytes] = []
        oversize = 0
        if self._skip:
            pos = min(self._skip, n)
            self._skip -= pos
        if self._skip_line and pos < n:
            ends = [i for i in (view.find(b"\n", pos), view.find(b"\0", pos)) if i >= 0]
            if ends:
                pos = min(ends) + 1
                self._skip_line = False
            else:
                pos = n
        while pos < n:
            c = view[pos]
            if c in (10, 0, 13, 32):  # empty frames and stray separators
                pos += 1
                continue
            if 48 <= c <= 57:
                sp = view.find(b" ", pos, pos + 11)
                if sp < 0:
                    if n - pos >= 11:
                        raise FrameError("an octet count longer than 10 digits")
                    break
                digits = view[pos:sp]
                if not digits.isdigit():
                    raise FrameError(
                        f"octet count {digits.decode(errors='replace')!r} is not a number"
                    )
                end = sp + 1 + int(digits)
                if end - sp - 1 > self.max_bytes:
                    oversize += 1
                    if end > n:
                        self._skip = end - n
                        pos = n
                        break
                    pos = end
                    continue
                if end > n:
                    break
                frames.append(view[sp + 1 : end])
                pos = end
                continue
            nl = view.find(b"\n", pos)
            nul = view.find(b"\0", pos, nl if nl >= 0 else n)
            end = nul if nul >= 0 else nl
            if end < 0:
                if n - pos > self.max_bytes:
                    oversize += 1
                    self._skip_line = True
                    pos = n
                break
            if end - pos > self.max_bytes:
                oversize += 1
            else:
                frames.append(view[pos:end])
            pos = end + 1
        del self.buf[:pos]
        return frames, oversize
