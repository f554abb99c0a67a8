"""The access-log half shared by the nginx and Apache parsers.

nginx's ``combined`` and Apache's ``combined``/``common`` formats have one shape:

    1.2.3.4 - user [02/Jan/2024:03:04:05 +0100] "GET /a?b=1 HTTP/1.1" 200 512 "ref" "agent"

One compiled pattern splits every field, including ``url.path``/``url.query``, so a batch
costs one ``match`` per line plus dict stores; there is no per-line Python helper call on the
hot path. Text after the user agent (a custom format's extra fields) is allowed and left in
``message``. Quoted fields may contain backslash escapes (Apache writes ``\\"``, nginx
``\\x22``); they are kept as written, not unescaped.

``parse`` reads a line without a backslash with ``PLAIN``, the pattern that needs no escape
handling; a line with one goes through ``parse_by_regex``, the general path, which also
defines what every line gives: both produce the same records for every line.

Lines that do not match go to the subclass's error-log parser, so one parser reads a volume
holding both ``access.log`` and ``error.log``. A line neither format matches passes through
unchanged with ``log.parse_error`` set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from sidekick.ship.parsers._time import ClfTime
from sidekick.ship.parsers.base import BaseParser
from sidekick.ship.records import MESSAGE, PARSE_ERROR, TIMESTAMP, Record

# The fast pattern: character classes only (``[^ ]`` is quicker than ``\S`` in ``re``), no
# alternation per character, possessive quantifiers (nothing to backtrack into: each class
# excludes the character that follows it; ~10% faster). Quoted free text may not contain a
# backslash here, so a line with an escaped quote cannot be cut short at it; such lines fall
# through to ``ESCAPED``.
ACCESS = re.compile(
    r'([^ ]++) [^ ]++ ([^ ]++) \[([^]]++)\] "'
    r'(?:([A-Z][A-Z_-]*+) (([^ ?"]*+)(?:\?([^ "]*+))?+) HTTP/([0-9.]++)|([^"\\]*+))" '
    r'([0-9]{3}) ([0-9]{1,18}+|-)(?: "([^"\\]*+)" "([^"\\]*+)"|$)'
)

# ``ACCESS`` for a line without a backslash. There ``[^"]`` accepts exactly what ``[^"\\]``
# does, so this gives the same groups as ``ACCESS`` (and ``ESCAPED``) on such a line, and
# ``re`` scans a run that excludes one character much faster than one that excludes a set:
# ~0.4 µs less on a 150-byte combined line, most of it in the referer and user agent.
PLAIN = re.compile(ACCESS.pattern.replace('[^"\\\\]', '[^"]'))

# The same fields where quoted text may hold backslash escapes (Apache ``\"``, nginx ``\x22``).
_QUOTED = r'([^"\\]*+(?:\\.[^"\\]*+)*+)'
ESCAPED = re.compile(
    r'([^ ]++) [^ ]++ ([^ ]++) \[([^]]++)\] "'
    r'(?:([A-Z][A-Z_-]*+) (([^ ?"]*+)(?:\?([^ "]*+))?+) HTTP/([0-9.]++)|' + _QUOTED + r')" '
    r'([0-9]{3}) ([0-9]{1,18}+|-)(?: "' + _QUOTED + r'" "' + _QUOTED + r'"|$)'
)

NO_TEXT = "the record has no text message"
# A line's match; False marks a line left to ``parse_by_regex`` (it holds a backslash).
Matched = re.Match[str] | Literal[False] | None
SHARED_LIMIT = 10_000  # distinct shared values kept before the table starts over
# The status text the patterns accept (three ASCII digits) to its number: a dict lookup
# costs a fifth of int() on a short string.
STATUS_CODES = {f"{n:03d}": n for n in range(1000)}

# nginx error log ``request: "GET /x HTTP/1.1"`` and Apache's request text use this split.
REQUEST_LINE = re.compile(r"([A-Z][A-Z_-]*) (([^\s?]*)(?:\?(\S*))?) HTTP/([\d.]+)$", re.ASCII)


def request_fields(rec: Record, line: str) -> None:
    """Store method, URL and protocol version of a request line, if it is one."""
    m = REQUEST_LINE.match(line)
    if m is None:
        return
    method, url, path, query, version = m.groups()
    rec["http.request.method"] = method
    rec["url.original"] = url
    rec["url.path"] = path
    if query is not None:
        rec["url.query"] = query
    rec["network.protocol.version"] = version


class AccessLogParser(BaseParser):
    """Access lines by one pattern; everything else via ``parse_other`` (the error format)."""

    name = "access"

    def __init__(self) -> None:
        self._clf = ClfTime()
        # Values that repeat across lines (user agents, referers, methods, versions) are
        # stored once and shared by every record holding them: records wait in memory until
        # delivered, and a user agent is often the largest field.
        self._strings: dict[str, str] = {}
        self._no_match = f"{self.name}: no format matched"

    def parse(self, records: list[Record]) -> None:
        messages: list[Any] = [r.get(MESSAGE) for r in records]
        try:
            escapes = "\\" in "".join(messages)
        except TypeError:  # a record without a text message (never from a tailed file)
            self.parse_by_regex(records)
            return
        if escapes:
            # False marks a line with a backslash: ``parse_by_regex`` reads it.
            matches: list[Matched] = [False if "\\" in m else PLAIN.match(m) for m in messages]
        else:
            matches = list(map(PLAIN.match, messages))
        other = self.parse_other
        by_regex: list[Record] = []
        for rec, m in self._fill(zip(records, matches, strict=True)):
            if m is None:  # no backslash: ``ACCESS`` and ``ESCAPED`` do not match either
                other(rec)
            else:
                by_regex.append(rec)
        if by_regex:
            self.parse_by_regex(by_regex)

    def parse_by_regex(self, records: list[Record]) -> None:
        """Any records, by ``ACCESS``, then ``ESCAPED``, then ``parse_other``: the general path,
        which ``parse`` takes for lines with a backslash and whose records it reproduces."""
        messages: list[Any] = [r.get(MESSAGE) for r in records]
        try:
            matches = list(map(ACCESS.match, messages))
        except TypeError:  # a record without a text message (never from a tailed file)
            matches = [ACCESS.match(m) if isinstance(m, str) else None for m in messages]
        escaped: list[tuple[Record, re.Match[str] | None]] = []
        for rec, _ in self._fill(zip(records, matches, strict=True)):
            message = rec.get(MESSAGE)
            m = ESCAPED.match(message) if isinstance(message, str) else None
            if m is None:
                self.parse_other(rec)
            else:
                escaped.append((rec, m))
        self._fill(escaped)

    def _fill(self, pairs: Iterable[tuple[Record, Matched]]) -> list[tuple[Record, Matched]]:
        """Store the fields of each record's access-line match (any of the patterns: they share
        their groups); the pairs without a match are returned, in order, for the caller."""
        rest: list[tuple[Record, Matched]] = []
        clf = self._clf
        cache = clf.cache
        strings = self._strings
        shared = strings.setdefault
        codes = STATUS_CODES
        for rec, m in pairs:
            if not m:
                rest.append((rec, m))
                continue
            (addr, user, ts, method, url, path, query, version, _, status, size, referer, agent) = (
                m.groups()
            )
            rec["client.address"] = addr
            if user != "-":
                rec["user.name"] = user
            t = cache.get(ts) or clf(ts)
            if t is not None:
                rec[TIMESTAMP] = t
            else:
                rec[PARSE_ERROR] = f"{self.name}: time {ts!r} is not a valid date"
            if method is not None:
                rec["http.request.method"] = shared(method, method)
                rec["url.original"] = url
                rec["url.path"] = path
                if query is not None:
                    rec["url.query"] = query
                rec["network.protocol.version"] = shared(version, version)
            rec["http.response.status_code"] = codes[status]
            if size != "-":
                rec["http.response.body.size"] = int(size)
            if referer is not None:
                if referer != "-":
                    rec["http.request.header.referer"] = shared(referer, referer)
                if agent != "-":
                    rec["user_agent.original"] = shared(agent, agent)
        if len(strings) > SHARED_LIMIT:
            strings.clear()
        return rest

    def parse_other(self, rec: Record) -> None:
        rec[PARSE_ERROR] = self._no_match
