"""``--parser json``: a message that is one JSON object becomes fields of the record.

Nested objects are flattened with dots (``{"http": {"method": "GET"}}`` ->
``http.method``), so records stay the flat dicts every sink encodes; arrays are kept as
values. A ``message`` (or, failing that, ``msg``) string replaces the record's message. The
first of ``@timestamp``, ``timestamp``, ``time`` that parses as an RFC 3339 / ISO 8601 string
(no zone means UTC) or a Unix time in s/ms/µs/ns becomes ``@timestamp`` and is removed;
one that does not parse stays as an ordinary field.

The shipper's own fields (``log.file.path``, ``log.offset``, and ``@timestamp``/``message``
when the JSON's value for them is not usable) are never overwritten by other JSON values; a
clashing key is kept under ``json.<key>``. Messages that are not
JSON, or JSON that is not an object, or JSON nested deeper than 32 levels, pass through with
``log.parse_error`` set.

msgspec decodes each line (the fastest JSON decoder available to Python); lines are decoded
one at a time because one bad line must not spoil its batch.
"""

from __future__ import annotations

from typing import Any

import msgspec

from sidekick.ship.parsers._time import epoch, iso8601
from sidekick.ship.parsers.base import BaseParser
from sidekick.ship.records import FILE_PATH, MESSAGE, OFFSET, PARSE_ERROR, TIMESTAMP, Record

_TIME_KEYS = ("@timestamp", "timestamp", "time")
_PROTECTED = frozenset({FILE_PATH, OFFSET, TIMESTAMP, MESSAGE})


# Deeper JSON is kept as text: flattening recurses, and a value nested hundreds deep would
# make the output's encoder hit Python's recursion limit.
MAX_DEPTH = 32


def _too_deep(obj: Any) -> bool:
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return False


def _flatten(obj: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in obj.items():
        name = prefix + key
        if isinstance(value, dict):
            if value:
                _flatten(value, name + ".", out)
            else:
                out[name] = value
        else:
            out[name] = value


def to_timestamp(value: Any) -> str | None:
    """A JSON time value as RFC 3339 UTC, or ``None`` if it is not one."""
    if isinstance(value, str):
        return iso8601(value.strip())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return epoch(value)
    return None


class JsonParser(BaseParser):
    name = "json"

    def __init__(self) -> None:
        self._decode = msgspec.json.Decoder().decode

    def parse(self, records: list[Record]) -> None:
        decode = self._decode
        for rec in records:
            message = rec.get(MESSAGE)
            if not isinstance(message, str):
                rec[PARSE_ERROR] = "json: the record has no text message"
                continue
            try:
                obj = decode(message)
            except (msgspec.DecodeError, TypeError) as exc:
                rec[PARSE_ERROR] = f"json: {exc}"
                continue
            except RecursionError:
                rec[PARSE_ERROR] = f"json: nested deeper than {MAX_DEPTH} levels; kept as text"
                continue
            except UnicodeEncodeError:
                rec[PARSE_ERROR] = "json: the message holds a lone surrogate, which is not UTF-8"
                continue
            if not isinstance(obj, dict):
                rec[PARSE_ERROR] = (
                    f"json: the message is a JSON {type(obj).__name__}, not an object"
                )
                continue
            # Counting brackets is cheap; only a message with many walks the decoded tree.
            if message.count("{") + message.count("[") > MAX_DEPTH and _too_deep(obj):
                rec[PARSE_ERROR] = f"json: nested deeper than {MAX_DEPTH} levels; kept as text"
                continue
            self._merge(rec, obj)

    def _merge(self, rec: Record, obj: dict[str, Any]) -> None:
        for key in _TIME_KEYS:
            if key in obj:
                t = to_timestamp(obj[key])
                if t is not None:
                    del obj[key]
                    rec[TIMESTAMP] = t
                    break
        text = obj.pop("message", None)
        if not isinstance(text, str):
            if text is not None:
                obj["message"] = text  # not text: kept as a field, not as the message
            text = obj.pop("msg", None)
            if not isinstance(text, str) and text is not None:
                obj["msg"] = text
                text = None
        flat: dict[str, Any] = {}
        _flatten(obj, "", flat)
        for key, value in flat.items():
            if key in _PROTECTED:
                rec["json." + key] = value
            else:
                rec[key] = value
        if text is not None:
            rec[MESSAGE] = text
