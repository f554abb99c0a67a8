"""``--parser docker``: Docker's ``json-file`` logs (``/var/lib/docker/containers/*/*-json.log``).

Each line is one JSON object::

    {"log":"GET / 200\\n","stream":"stdout","time":"2024-05-01T10:00:00.123456789Z"}

``log`` becomes ``message`` without its trailing newline, ``stream`` becomes ``log.iostream``
and ``time`` (RFC 3339 with nanoseconds) becomes ``@timestamp``. Values of the optional
``attrs`` object (the labels and environment variables chosen with ``--log-opt``) become
``docker.attrs.<name>``.

Docker cuts a line longer than 16 KiB into several entries; all but the last have no newline
at the end of ``log``. A tailed file's pieces are joined before they are emitted (``joiner``,
see :mod:`sidekick.ship.parsers._container`). Telling a piece from a whole line needs no JSON
decoding in the common case: dockerd writes ``log`` first and ``stream`` right after it, so a
whole line contains ``\\n","stream":"``; only lines without it (and the rare ones where that
backslash is itself escaped) are decoded to decide. An entry that reaches the parser unjoined
keeps or gets ``log.flags: ["partial"]``.

A line that is not such an object, or an object without ``log``, keeps its message and gets
``log.parse_error``.
"""

from __future__ import annotations

from itertools import compress, repeat
from operator import contains
from typing import Any

import msgspec

from sidekick.ship.parsers._container import PartialJoiner, rfc3339nano
from sidekick.ship.parsers.base import BaseParser
from sidekick.ship.records import FLAGS, MESSAGE, PARSE_ERROR, TIMESTAMP, Record

IOSTREAM = "log.iostream"
_WHOLE = '\\n","stream":"'  # the end of a ``log`` with its newline, as dockerd writes it
_ESCAPED = '\\\\n","stream":"'  # ... unless that backslash is an escaped one
_PARTIAL = ["partial"]


class _Entry(msgspec.Struct):
    log: str | None = None
    stream: str = ""
    time: str = ""
    attrs: dict[str, Any] | None = None


_decode = msgspec.json.Decoder(_Entry).decode
_encode = msgspec.json.Encoder().encode


def _classify(line: str) -> tuple[str, str, bool, str] | None:
    try:
        entry = _decode(line)
    except (msgspec.DecodeError, RecursionError, UnicodeEncodeError):
        return None
    if not entry.stream or entry.log is None:
        return None  # no piece of a line: passes through, and the parser says what it lacks
    return entry.time, entry.stream, not entry.log.endswith("\n"), entry.log


def _render(time: str, stream: str, text: str, final: bool) -> str:
    return _encode({"log": text, "stream": stream, "time": time}).decode()


def _candidates(lines: list[str]) -> list[int]:
    n = len(lines)
    whole = map(contains, lines, repeat(_WHOLE))
    found = [i for i, w in zip(range(n), whole, strict=True) if not w]
    escaped = list(compress(range(n), map(contains, lines, repeat(_ESCAPED))))
    if escaped:
        found = sorted(set(found).union(escaped))
    return found


def _why(exc: Exception) -> str:
    if isinstance(exc, msgspec.DecodeError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "nested too deep"
    return "the message holds a lone surrogate, which is not UTF-8"  # UnicodeEncodeError


class DockerParser(BaseParser):
    name = "docker"

    def joiner(self, max_bytes: int) -> PartialJoiner:
        """A joiner for one tailed file; ``max_bytes`` is ``--max-line-bytes``."""
        return PartialJoiner(
            candidates=_candidates, classify=_classify, render=_render, max_bytes=max_bytes
        )

    def parse(self, records: list[Record]) -> None:
        decode = _decode
        to_time = rfc3339nano
        for rec in records:
            message = rec.get(MESSAGE)
            if not isinstance(message, str):
                rec[PARSE_ERROR] = "docker: the record has no text message"
                continue
            try:
                entry = decode(message)
            except (msgspec.DecodeError, RecursionError, UnicodeEncodeError) as exc:
                if FLAGS not in rec:  # later pieces of a line the tail cut are not JSON
                    why = _why(exc)
                    rec[PARSE_ERROR] = f"docker: {why}"
                continue
            text = entry.log
            if text is None:
                rec[PARSE_ERROR] = 'docker: the entry has no "log" field'
                continue
            if text.endswith("\n"):
                text = text[:-1]
            elif FLAGS not in rec:
                rec[FLAGS] = list(_PARTIAL)
            rec[MESSAGE] = text
            if entry.stream:
                rec[IOSTREAM] = entry.stream
            if entry.time:
                ts = to_time(entry.time)
                if ts is None:
                    rec[PARSE_ERROR] = f"docker: time {entry.time[:40]!r} is not RFC 3339"
                else:
                    rec[TIMESTAMP] = ts
            if entry.attrs:
                for key, value in entry.attrs.items():
                    rec["docker.attrs." + key] = value
