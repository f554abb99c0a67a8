"""Process logging: one plain line per event by default, one JSON object per line on request.

JSON lines use the same field names as the records ``sidekick ship`` produces
(``@timestamp``, ``log.level``, ``log.logger``, ``message``), so a sidecar's own logs can be
shipped by another sidecar without a parser. Extra structured fields passed with
``logger.info(..., extra={"fields": {...}})`` are merged into the JSON object.

Every URL in a message or traceback is passed through ``redact_text`` on its way out: the
code logging it should have masked it already, this catches text it did not write (an
exception message of a library).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Literal, TextIO

import msgspec

from sidekick.core.redact import redact_text

LogFormat = Literal["text", "json"]

_json = msgspec.json.Encoder()
# A lone surrogate: what Python makes of bytes that are not UTF-8 in a file name or an
# argument (os.fsdecode); JSON cannot hold it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact_text(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "@timestamp": _iso(record.created),
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            obj.update(fields)
        if record.exc_info:
            obj["error.stack_trace"] = redact_text(self.formatException(record.exc_info))
        try:
            return _json.encode(obj).decode()
        except UnicodeEncodeError:
            return _json.encode(_without_surrogates(obj)).decode()


def _without_surrogates(value: object) -> object:
    """``value`` with every lone surrogate in its text replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_surrogates(v) for v in value]
    return value


def setup_logging(
    fmt: LogFormat = "text", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure the root logger once for the whole process."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.Formatter.converter = time.gmtime
