"""``--parser nginx``: nginx ``combined`` access lines and error-log lines, told apart per line.

Access lines are handled by :mod:`sidekick.ship.parsers._access`. Error lines look like

    2024/01/02 03:04:05 [error] 123#0: *5 open() "/x" failed (2: No such file), client: 1.2.3.4,
    server: x, request: "GET /x HTTP/1.1", host: "y"

and give ``log.level``, ``process.pid``, ``thread.id`` (nginx's worker thread number),
``nginx.connection.id``, ``message`` (the error text alone), and from the trailing context
``client.address``, ``server.address``, the request fields, ``http.request.header.host``,
``http.request.header.referer`` and ``nginx.upstream``. nginx writes error times in the
server's local zone without an offset; they are read as UTC (containers run in UTC).

Left out: custom ``log_format``s other than ``combined`` (with extra trailing fields allowed);
use ``regex:`` for those.
"""

from __future__ import annotations

import re

from sidekick.ship.parsers._access import NO_TEXT, AccessLogParser, request_fields
from sidekick.ship.parsers._time import CachedTime
from sidekick.ship.records import MESSAGE, PARSE_ERROR, TIMESTAMP, Record

ERROR = re.compile(
    r"((\d{4})/(\d{2})/(\d{2}) (\d{2}):(\d{2}):(\d{2})) \[(\w+)\] ([0-9]{1,18})#([0-9]{1,18}): (?:\*([0-9]{1,18}) )?",
    re.ASCII,  # \d and \w match ASCII only: no other script's digits reach int() or output
)
# The text ends where nginx's context begins; found with str.find, since a lazy ``(.*?)``
# followed by an optional group made the pattern ~10x slower.
_CLIENT = ", client: "
_CLIENT_SERVER = re.compile(r", client: ([^,]*), server: ([^,]*)")
_CONTEXT = re.compile(r', ([a-z_]+): "([^"\\]*(?:\\.[^"\\]*)*)"')
_CONTEXT_FIELDS = {
    "host": "http.request.header.host",
    "referrer": "http.request.header.referer",
    "upstream": "nginx.upstream",
}


class NginxParser(AccessLogParser):
    name = "nginx"

    def __init__(self) -> None:
        super().__init__()
        self._time = CachedTime()

    def parse_other(self, rec: Record) -> None:
        message = rec.get(MESSAGE)
        if not isinstance(message, str):
            rec[PARSE_ERROR] = f"{self.name}: {NO_TEXT}"
            return
        m = ERROR.match(message)
        if m is None:
            rec[PARSE_ERROR] = self._no_match
            return
        (ts, y, mo, d, hh, mi, ss, level, pid, tid, conn) = m.groups()
        text = message[m.end() :]
        t = self._time.cache.get(ts) or self._time.lookup(
            ts, (int(y), int(mo), int(d), int(hh), int(mi), int(ss))
        )
        if t is None:
            rec[PARSE_ERROR] = f"nginx: time {ts!r} is not a valid date"
        else:
            rec[TIMESTAMP] = t
        rec["log.level"] = level
        rec["process.pid"] = int(pid)
        rec["thread.id"] = int(tid)
        if conn is not None:
            rec["nginx.connection.id"] = int(conn)
        cut = text.find(_CLIENT)
        cm = _CLIENT_SERVER.match(text, cut) if cut >= 0 else None
        if cm is None:
            rec[MESSAGE] = text
            return
        rec[MESSAGE] = text[:cut]
        client, server = cm.groups()
        rec["client.address"] = client
        if server:
            rec["server.address"] = server
        for key, value in _CONTEXT.findall(text, cm.end()):
            if key == "request":
                request_fields(rec, value)
            else:
                rec[_CONTEXT_FIELDS.get(key, "nginx." + key)] = value
