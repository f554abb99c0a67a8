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

from itertools import compress, repeat
from operator import contains

from sidekick.ship.parsers._container import PartialJoiner, rfc3339nano
from sidekick.ship.records import FLAGS, MESSAGE, PARSE_ERROR, TIMESTAMP, Record

IOSTREAM = "log.iostream"
STREAMS = frozenset({"stdout", "stderr"})
_PARTIAL = ["partial"]


def _classify(line: str) -> tuple[str, str, bool, str] | None:
    parts = line.split(" ", 3)
    if len(parts) < 3 or parts[1] not in STREAMS:
        return None
    tag = parts[2].partition(":")[0]
    if tag == "P":
        partial = True
    elif tag == "F":
        partial = False
    else:
        return None
    return parts[0], parts[1], partial, parts[3] if len(parts) == 4 else ""


def _render(time: str, stream: str, text: str, final: bool) -> str:
    return f"{time} {stream} {'F' if final else 'P'} {text}"


def _candidates(lines: list[str]) -> list[int]:
    """Indices of lines that may be ``P`` lines (a superset; ``_classify`` decides)."""
    n = len(lines)
    found = list(compress(range(n), map(contains, lines, repeat(" P "))))
    tagged = list(compress(range(n), map(contains, lines, repeat(" P:"))))
    if tagged:
        found = sorted(set(found).union(tagged))
    return found


class CriParser:
    name = "cri"

    def joiner(self, max_bytes: int) -> PartialJoiner:
        """A joiner for one tailed file; ``max_bytes`` is ``--max-line-bytes``."""
        return PartialJoiner(
            candidates=_candidates, classify=_classify, render=_render, max_bytes=max_bytes
        )

    def parse(self, records: list[Record]) -> None:
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
