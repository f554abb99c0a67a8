"""``--parser cri``: container logs as containerd and CRI-O write them for the kubelet.

Each line is ``<time> <stream> <tag> <text>``::

    2024-05-01T10:00:00.123456789Z stdout F GET / 200
    2024-05-01T10:00:00.2Z stderr P first 16 KiB of a long line...
    2024-05-01T10:00:00.2Z stderr F ...and its end

``time`` (RFC 3339 with nanoseconds; containerd writes UTC and cuts trailing zeros, CRI-O may
write an offset) becomes ``@timestamp``, ``stream`` becomes ``log.iostream`` and ``text``
becomes ``message``. The tag is ``P`` for a piece of a longer line and ``F`` for a full line
or a line's last piece (further ``:``-separated tags are ignored, as the kubelet does).

A tailed file's ``P`` pieces are joined with their ``F`` line before they are emitted
(``joiner``, see :mod:`sidekick.ship.parsers._container`), so a record is the app's whole
line. A ``P`` line that reaches the parser unjoined (from an ingest input, or shipped by a
flush) keeps or gets ``log.flags: ["partial"]``. A line that is not in this format keeps its
message and gets ``log.parse_error``; the later pieces of a line longer than
``--max-line-bytes``, which the tail cut before any parser saw it, are left as they are.

Records get the file's Kubernetes metadata from its path (``sidekick.ship.k8s_path``), added
by the tail source once per file.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import repeat
from operator import add, itemgetter, setitem
from typing import Any

from sidekick.ship.parsers._container import PartialJoiner, rfc3339nano
from sidekick.ship.parsers._time import iso8601
from sidekick.ship.parsers.base import BaseParser
from sidekick.ship.records import FLAGS, MESSAGE, PARSE_ERROR, TIMESTAMP, Record

IOSTREAM = "log.iostream"
STREAMS = frozenset({"stdout", "stderr"})
_PARTIAL = ["partial"]
_TAGS = frozenset({"F", "P"})
_0, _1, _2, _3 = (itemgetter(i) for i in range(4))


def consume(it: Iterable[Any]) -> None:
    """Run an iterator to its end in C (``map(setitem, ...)`` stores a field per record)."""
    deque(it, maxlen=0)


def _classify(line: str) -> tuple[str, str, bool, str] | None:
    parts = line.split(" ", 3)
    if len(parts) < 3 or parts[1] not in STREAMS:
        return None
    tag = parts[2]
    if tag != "P" and tag != "F":
        tag = tag.partition(":")[0]
        if tag != "P" and tag != "F":
            return None
    return parts[0], parts[1], tag == "P", parts[3] if len(parts) == 4 else ""


def _render(time: str, stream: str, text: str, final: bool) -> str:
    return f"{time} {stream} {'F' if final else 'P'} {text}"


# A batch whose times all have Go's RFC 3339 layout in UTC is converted without a per-line
# call: the layout is checked for the whole batch at once (every digit mapped to "0" by one
# ``bytes.translate``), and the seconds by ``iso8601`` (which checks the ranges) once each.
_LAYOUT = b"0000-00-00T00:00:00.000000000Z"
_ZEROS = bytes.maketrans(b"123456789", b"000000000")
# In every P line (and in some others): " P " or " P:". The pattern starts with the "P": the
# regex engine skips quickly to a leading literal, and a P is far rarer in text than a space.
_MAYBE_P = re.compile(r"P(?<= P)(?=[ :])")
_second = itemgetter(slice(0, 19))
_BAD_SECOND = re.compile(rb":[6-9]")  # in a minute's times: a second's tens digit over 5
_valid_seconds: set[str] = set()

# A line whose time has all nine fraction digits (nine in ten of containerd's) has its fields
# at fixed places: ``<30-char time> stdout F <text>``; slices taken by ``map`` in C cut them.
_HEAD = itemgetter(slice(0, 30))
_TAIL = itemgetter(slice(30, 40))
_TEXT = itemgetter(slice(40, None))
_FULL_STREAM = {" stdout F ": "stdout", " stderr F ": "stderr"}
_STREAM = {"stdout": "stdout", "stderr": "stderr"}
# A time of n < 30 characters (its fraction's trailing zeros cut, or no fraction) becomes 30
# with its final Z cut, _FILL[n] and a Z: what _pad gives when its layout is right.
_FILL = {20: ".000000000", **{n: "0" * (30 - n) for n in range(21, 31)}}
_CUT_Z = itemgetter(slice(0, -1))


def _pad(t: str) -> str:
    """Go cuts trailing zeros of the fraction; put them back (``...:05.5Z`` -> nine digits)."""
    if len(t) == 30 or len(t) < 20 or t[-1] != "Z" or (len(t) > 20 and t[19] != "."):
        return t
    return f"{t[:19]}.{t[20:-1]:0<9}Z"


def _seconds_ok(times: list[str], raw: bytes) -> bool:
    """Whether every time's seconds is a real date and time; ``times`` are all in ``_LAYOUT``
    and ``raw`` is them joined.

    A batch within one minute (the usual case) is checked without a per-line step: one count
    finds every time in the first one's minute (a match can only start at a time's start,
    where the layout puts its digits and ``T``), one search finds a second of 60 or more.
    """
    first = times[0][:17]
    if raw.count(first.encode()) == len(times):
        if _BAD_SECOND.search(raw) is not None:
            return False
        seconds = {first + "00"}
    else:
        seconds = set(map(_second, times))
    for second in seconds - _valid_seconds:
        if iso8601(second) is None:
            return False
        if len(_valid_seconds) >= 4096:
            _valid_seconds.clear()
        _valid_seconds.add(second)
    return True


def _std_times(times: list[str]) -> list[str] | None:
    """``times`` as ship's ``@timestamp``s if all are Go's UTC layout; else ``None``."""
    if min(map(len, times)) < 30:
        times = [t if len(t) == 30 else _pad(t) for t in times]
    return times if _layout_ok(times) else None


def _layout_ok(times: list[str]) -> bool:
    """Whether every one of ``times`` has Go's RFC 3339 layout in UTC, with valid seconds."""
    try:
        raw = "".join(times).encode("ascii")
    except UnicodeEncodeError:
        return False
    return raw.translate(_ZEROS) == _LAYOUT * len(times) and _seconds_ok(times, raw)


def _columns_fixed(messages: list[str]) -> tuple[list[str], list[str], list[str]] | None:
    """``columns`` for a batch of F lines in Go's UTC layout, cut at fixed places; ``None``
    for any other batch (``_columns_split`` decides those).

    Lines whose time lacks fraction digits (its trailing zeros cut) are split and padded as
    a smaller batch and put in their places; every time is then exactly 30 characters, so
    one layout check covers the batch.
    """
    streams = list(map(_FULL_STREAM.get, map(_TAIL, messages), repeat("")))
    times = list(map(_HEAD, messages))
    texts = list(map(_TEXT, messages))
    if "" in streams:
        odd = []
        i = streams.index("")
        try:
            while True:
                odd.append(i)
                i = streams.index("", i + 1)
        except ValueError:
            pass
        # Mostly odd lines (another layout) are left to the split without a second look.
        if len(odd) > 16 and len(odd) * 4 > len(messages):
            return None
        if not _put_odd(messages, odd, times, streams, texts):
            return None
    if not _layout_ok(times):
        return None
    return times, streams, texts


def _put_odd(
    messages: list[str],
    odd: list[int],
    times: list[str],
    streams: list[str],
    texts: list[str],
) -> bool:
    """Split the lines at ``odd`` into the columns; ``False`` if one is no F line whose time
    can be padded to 30 characters. Steps run over the whole subset in C."""
    try:
        t, s, tags, x = zip(
            *map(str.split, map(messages.__getitem__, odd), repeat(" "), repeat(3)), strict=True
        )
    except ValueError:
        return False
    if tags.count("F") != len(tags) or s.count("stdout") + s.count("stderr") != len(s):
        return False
    if sum(map(str.endswith, t, repeat("Z"))) != len(t):
        return False
    try:
        padded = list(
            map(add, map(add, map(_CUT_Z, t), map(_FILL.__getitem__, map(len, t))), repeat("Z"))
        )
    except KeyError:
        return False
    consume(map(times.__setitem__, odd, padded))
    consume(map(streams.__setitem__, odd, map(_STREAM.__getitem__, s)))
    consume(map(texts.__setitem__, odd, x))
    return True


def _columns_split(messages: list[str]) -> tuple[Sequence[str], ...] | None:
    """``columns`` by splitting every line: the reference for ``_columns_fixed``."""
    parts = [m.split(" ", 3) for m in messages]
    if set(map(len, parts)) != {4}:
        return None
    times, streams, tags, texts = zip(*parts, strict=True)
    if set(tags) != {"F"} or not set(streams) <= STREAMS:
        return None
    std = _std_times(list(times))
    if std is None:
        return None
    return std, streams, texts


class CriParser(BaseParser):
    name = "cri"
    # What ``columns`` gives, in order: the tail builds records with these fields at once.
    column_names: tuple[str, ...] = (TIMESTAMP, IOSTREAM, MESSAGE)

    def columns(self, messages: list[str]) -> tuple[Sequence[str], ...] | None:
        """``(times, streams, texts)`` of a batch of ``F`` lines in Go's UTC time layout (what
        containerd writes); ``None`` for any other batch, which ``parse`` then handles."""
        if not messages:
            return None
        return _columns_fixed(messages) or _columns_split(messages)

    def joiner(self, max_bytes: int) -> PartialJoiner:
        """A joiner for one tailed file; ``max_bytes`` is ``--max-line-bytes``."""
        return PartialJoiner(
            marker=_MAYBE_P, classify=_classify, render=_render, max_bytes=max_bytes
        )

    def parse(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            messages = list(map(itemgetter(MESSAGE), records))
            parts = list(map(str.split, messages, repeat(" "), repeat(3)))
        except (KeyError, TypeError):
            self._parse_each(records)
            return
        if set(map(len, parts)) != {4}:
            self._parse_each(records)
            return
        streams = list(map(_1, parts))
        tags = set(map(_2, parts))
        times = None
        if tags <= _TAGS and set(streams) <= STREAMS:
            times = _std_times(list(map(_0, parts)))
        if times is None:
            self._parse_each(records)
            return
        consume(map(setitem, records, repeat(TIMESTAMP), times))
        consume(map(setitem, records, repeat(IOSTREAM), streams))
        consume(map(setitem, records, repeat(MESSAGE), map(_3, parts)))
        if "P" in tags:
            for rec, p in zip(records, parts, strict=True):
                if p[2] == "P" and FLAGS not in rec:
                    rec[FLAGS] = list(_PARTIAL)

    def _parse_each(self, records: list[Record]) -> None:
        """One record at a time: a batch with a line in another format or time layout."""
        to_time = rfc3339nano
        streams = STREAMS
        for rec in records:
            message = rec.get(MESSAGE)
            if not isinstance(message, str):
                rec[PARSE_ERROR] = "cri: the record has no text message"
                continue
            parts = message.split(" ", 3)
            if len(parts) < 3 or parts[1] not in streams:
                self._bad(rec, "not a CRI log line (<time> <stdout|stderr> <P|F> <text>)")
                continue
            tag = parts[2]
            if tag != "F" and tag != "P":
                tag = tag.partition(":")[0]
                if tag != "F" and tag != "P":
                    self._bad(rec, f"tag {parts[2][:20]!r} is neither P nor F")
                    continue
            ts = to_time(parts[0])
            if ts is None:
                self._bad(rec, f"time {parts[0][:40]!r} is not RFC 3339")
                continue
            rec[TIMESTAMP] = ts
            rec[IOSTREAM] = parts[1]
            rec[MESSAGE] = parts[3] if len(parts) == 4 else ""
            if tag == "P" and FLAGS not in rec:
                rec[FLAGS] = list(_PARTIAL)

    @staticmethod
    def _bad(rec: Record, why: str) -> None:
        if FLAGS in rec:
            return  # a later piece of a line the tail cut: it has no prefix of its own
        rec[PARSE_ERROR] = f"cri: {why}"
