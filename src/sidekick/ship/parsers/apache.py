"""``--parser apache``: Apache httpd access lines (combined and common) and error-log lines.

Access lines are handled by :mod:`sidekick.ship.parsers._access` (``common`` is ``combined``
without referer and user agent; ``%b`` of ``-`` means no body and is omitted). Error lines
in the 2.4 default format

    [Tue Jan 02 03:04:05.123456 2024] [core:error] [pid 123:tid 140000] [client 1.2.3.4:5678]
    AH00126: Invalid URI in request GET /x HTTP/1.1, referer: http://r/

give ``log.level``, ``log.logger`` (the module), ``process.pid``, ``thread.id``,
``client.address``/``client.port``, ``http.request.header.referer``, ``message`` (the text
alone) and ``@timestamp`` with the microseconds Apache writes. The 2.2 form (``[error]``,
``[client 1.2.3.4]``, no pid) parses too. Apache writes local time without an offset; it is
read as UTC.

Left out: custom ``ErrorLogFormat``/``LogFormat`` strings; use ``regex:`` for those.
"""

from __future__ import annotations

import re

from sidekick.ship.parsers._access import NO_TEXT, AccessLogParser
from sidekick.ship.parsers._time import MONTHS, CachedTime
from sidekick.ship.records import MESSAGE, PARSE_ERROR, TIMESTAMP, Record

ERROR = re.compile(
    r"\[\w{3} (\w{3}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))? (\d{4})\] "
    r"\[(?:([^:\]]*):)?(\w+)\]"
    r"(?: \[pid ([0-9]{1,18})(?::tid ([0-9]{1,18}))?\])?"
    r"(?: \[client ([^\]]+)\])? ?",
    re.ASCII,  # \d and \w match ASCII only: no other script's digits reach int() or output
)
# Found with str.rfind: a lazy ``(.*?)`` before an optional group made the pattern ~10x slower.
_REFERER = ", referer: "


class ApacheParser(AccessLogParser):
    name = "apache"

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
        (mon, d, hh, mi, ss, frac, y, module, level, pid, tid, client) = m.groups()
        text = message[m.end() :]
        referer = None
        cut = text.rfind(_REFERER)
        if cut >= 0 and " " not in text[cut + len(_REFERER) :]:
            referer = text[cut + len(_REFERER) :]
            text = text[:cut]
        key = f"{y}{mon}{d}{hh}{mi}{ss}"
        t = self._time.cache.get(key) or self._time.lookup(
            key, (int(y), MONTHS.get(mon, 0), int(d), int(hh), int(mi), int(ss))
        )
        if t is None:
            rec[PARSE_ERROR] = f"apache: time of {message[:32]!r} is not a valid date"
        else:
            if frac:
                # The cached string ends ".000000000Z"; put the sub-second digits in.
                t = t[:20] + frac.ljust(9, "0") + "Z"
            rec[TIMESTAMP] = t
        if module:
            rec["log.logger"] = module
        rec["log.level"] = level
        if pid is not None:
            rec["process.pid"] = int(pid)
            # 2.4 writes "[client ADDR:PORT]"; 2.2 (no pid block) writes the address alone.
            if tid is not None:
                rec["thread.id"] = int(tid)
            if client is not None:
                addr, sep, port = client.rpartition(":")
                if sep and port.isascii() and port.isdigit() and len(port) <= 5:
                    rec["client.address"] = addr
                    rec["client.port"] = int(port)
                else:
                    rec["client.address"] = client
        elif client is not None:
            rec["client.address"] = client
        if referer:
            rec["http.request.header.referer"] = referer
        rec[MESSAGE] = text
