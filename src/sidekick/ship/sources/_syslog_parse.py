"""Syslog messages (RFC 5424 and RFC 3164) to records (the framing of streams is in
:mod:`sidekick.ship.sources._syslog_frame`).

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

A stream's frames are parsed a read at a time by ``parse_frames``, which gives what ``parse``
gives frame by frame: the usual RFC 5424 frames in bulk, the rest through ``parse``.
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
_DIGITS = re.compile(r"\d+")
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
    if not dot:
        return _utc_seconds(text)
    digits = _DIGITS.match(rest)
    if digits is None:
        return None
    frac = digits.group()
    whole = _utc_seconds(head + rest[len(frac) :])
    if whole is None:
        return None
    nanos = (frac + "000000000")[:9]
    if not nanos.isascii():
        nanos = f"{int(nanos):09d}"
    return f"{whole[:-10]}{nanos}Z"


@functools.lru_cache(maxsize=4096)
def _utc_seconds(text: str) -> str | None:
    """(Cached: times with distinct fractions of the same second share one entry.) An RFC
    3339 time without its fraction as UTC, ``….000000000Z``."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return rfc3339_ns(int(dt.timestamp()) * 1_000_000_000)


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


# A batch's frames, one a line. An RFC 5424 message without structured data is matched by
# the first branch: its priority and version, time, four header fields and message. Any
# other line is matched by the last branch, which captures nothing.
_BATCH_5424 = re.compile(
    r"^(?:(<\d{1,3}>\d{1,2}) (\S+) (\S+ \S+ \S+ \S+) -(?: (.*))?$|.*)",
    re.M,
)
# The same, for a batch with a BOM, a CR or a NUL in it: the message is taken as ``parse``
# takes it, without a BOM at its start or CRs and NULs at its end.
_BATCH_5424_STRIP = re.compile(
    r"^(?:(<\d{1,3}>\d{1,2}) (\S+) (\S+ \S+ \S+ \S+) -(?: \ufeff?+(.*[^\r\n\0]))?[\r\0]*$|.*)",
    re.M,
)
_PRI_VERSION = re.compile(r"<(\d{1,3})>(\d{1,2})")
_HEADER_FIELDS = (
    "log.syslog.hostname",
    "log.syslog.appname",
    "log.syslog.procid",
    "log.syslog.msgid",
)
# Records as far as their header makes them, by "<PRI>VERSION" and then by hostname, appname,
# procid and msgid: each is made once and copied into every record of that header (its time
# and message in place of the "" held for them).
_TEMPLATES: dict[str, dict[str, Record]] = {}
_TEMPLATES_MAX = 4096  # headers held before the table starts over
_NO_TEMPLATES: dict[str, Record] = {}


def _template(pri_version: str, header: str) -> Record | None:
    """The record of a header, or None if ``parse`` does not read it as RFC 5424."""
    m = _PRI_VERSION.fullmatch(pri_version)
    if m is None or int(m.group(1)) > 191 or m.group(2) == "0":
        return None
    rec = _PRIORITIES[int(m.group(1))].copy()
    rec["log.syslog.version"] = int(m.group(2))
    rec[TIMESTAMP] = ""
    for name, value in zip(_HEADER_FIELDS, header.split(" "), strict=True):
        if value != "-":
            rec[name] = value
    rec[MESSAGE] = ""
    if sum(map(len, _TEMPLATES.values())) >= _TEMPLATES_MAX:
        _TEMPLATES.clear()
    _TEMPLATES.setdefault(pri_version, {})[header] = rec
    return rec


def parse_frames(frames: list[bytes], now: float) -> list[Record]:
    """Syslog messages as records: ``[parse(f, now) for f in frames]``, made in bulk.

    The frames are decoded together, one a line, and matched by one ``findall``; an RFC 5424
    message without structured data (the usual one) is a copy of its header's record with
    its time and message set, any other frame goes through ``parse``. A batch with a frame
    that holds an LF (which would break the lines) goes through ``parse`` whole.
    """
    joined = b"\n".join(frames)
    if joined.count(b"\n") != len(frames) - 1:
        return [parse(frame, now) for frame in frames]
    # UTF-8 decoding starts afresh at every ASCII byte, so decoding the joined frames gives
    # each frame's decoding.
    text = joined.decode("utf-8", "replace")
    # (Any CR or NUL at all, found by memchr, sooner than looking for one at a line's end.)
    batch = _BATCH_5424
    if b"\r" in joined or b"\0" in joined or "\ufeff" in text:
        batch = _BATCH_5424_STRIP
    templates, utc = _TEMPLATES, _utc
    records: list[Record] = []
    append = records.append
    for frame, (pri_version, stamp, header, message) in zip(
        frames, batch.findall(text), strict=True
    ):
        template = templates.get(pri_version, _NO_TEMPLATES).get(header)
        if template is None:
            template = _template(pri_version, header)
            if template is None:
                append(parse(frame, now))
                continue
        rec = template.copy()
        when = utc(stamp)  # None for "-", as for a time that is not one
        if when is None:
            del rec[TIMESTAMP]
        else:
            rec[TIMESTAMP] = when
        rec[MESSAGE] = message
        append(rec)
    return records
