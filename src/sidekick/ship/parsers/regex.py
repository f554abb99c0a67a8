"""``--parser 'regex:PATTERN'``: the named groups of a Python regular expression become fields.

Python group names cannot contain dots, so ``__`` in a group name stands for a dot:
``(?P<http__response__status_code>\\d{3})`` fills ``http.response.status_code``. The pattern
is searched anywhere in the message (``re.search``; anchor it with ``^`` to match from the
start). Groups that did not take part in the match are omitted. Values are strings, except
for fields that are numbers by their OpenTelemetry definition (``INT_FIELDS``), which are
stored as ints when they are all digits. A group named ``timestamp`` (or ``time``) whose text
is an ISO 8601 or common-log-format time becomes ``@timestamp``; otherwise it stays a field.
A group named ``message`` replaces the message.

A line the pattern does not match passes through with ``log.parse_error`` set.
"""

from __future__ import annotations

import re
from typing import Any

from sidekick.core.errors import ConfigError
from sidekick.ship.parsers._time import ClfTime, iso8601
from sidekick.ship.parsers.base import BaseParser
from sidekick.ship.records import MESSAGE, PARSE_ERROR, TIMESTAMP, Record

NO_TEXT = "regex: the record has no text message"

INT_FIELDS = frozenset(
    {
        "http.response.status_code",
        "http.response.body.size",
        "http.request.body.size",
        "client.port",
        "server.port",
        "source.port",
        "destination.port",
        "process.pid",
        "thread.id",
    }
)
_TIME_GROUPS = ("timestamp", "time")


def compile_pattern(pattern: str, flag: str) -> re.Pattern[str]:
    """Compile a user's pattern or raise a ``ConfigError`` that says what is wrong."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{flag}: the regex does not compile ({exc}); fix the pattern") from None


class RegexParser(BaseParser):
    name = "regex"
    argument = "PATTERN"

    @classmethod
    def create(cls, argument: str) -> RegexParser:
        return cls(argument)

    def __init__(self, pattern: str) -> None:
        spec = f"--parser {'regex:' + pattern!r}"
        self._re = compile_pattern(pattern, spec)
        names = list(self._re.groupindex)
        if not names:
            raise ConfigError(
                f"{spec}: the regex has no named groups; name the parts you want as fields, "
                r"e.g. (?P<log__level>\w+)"
            )
        self._fields = [n.replace("__", ".") for n in names]
        self._ints = [f in INT_FIELDS for f in self._fields]
        self._time_index = next((i for i, n in enumerate(names) if n in _TIME_GROUPS), None)
        self._clf = ClfTime()
        self._no_match = "regex: the pattern did not match"

    def _timestamp(self, raw: str) -> str | None:
        if "/" in raw:
            return self._clf(raw)
        return iso8601(raw)

    def parse(self, records: list[Record]) -> None:
        fields = self._fields
        ints = self._ints
        time_index = self._time_index
        search = self._re.search
        messages: list[Any] = [r.get(MESSAGE) for r in records]
        try:
            matches = list(map(search, messages))
        except TypeError:  # a record without a text message (never from a tailed file)
            matches = [search(m) if isinstance(m, str) else None for m in messages]
        for rec, m, message in zip(records, matches, messages, strict=True):
            if m is None:
                rec[PARSE_ERROR] = self._no_match if isinstance(message, str) else NO_TEXT
                continue
            values = m.groupdict().values()  # in the order of groupindex, as fields are
            for i, (name, value, is_int) in enumerate(zip(fields, values, ints, strict=True)):
                if value is None:
                    continue
                if i == time_index:
                    t = self._timestamp(value)
                    if t is not None:
                        rec[TIMESTAMP] = t
                        continue
                # Bounded length: int() of thousands of digits raises (and costs); such text stays text.
                is_number = is_int and len(value) <= 18 and value.isascii() and value.isdigit()
                rec[name] = int(value) if is_number else value
