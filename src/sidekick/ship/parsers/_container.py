"""What the ``cri`` and ``docker`` parsers share: container-runtime times and partial lines.

Container runtimes cut a long line of the app into several log lines (containerd and CRI-O
at 16 KiB by default, Docker at 16 KiB): all but the last are marked partial (the CRI ``P``
tag; a Docker ``log`` without its trailing newline). ``PartialJoiner`` puts them back
together, per stream (``stdout`` and ``stderr`` share one file and their lines interleave),
before the tail emits them, because joining decides which bytes form a record and so where a
file's checkpoint may stop. It has the interface of ``MultilineJoiner``, which the tail
source already drives:

``feed(lines, offsets) -> (messages, offsets)``
    ``offsets`` are where the lines start in the file, as the tail gives them: each line
    its length in bytes and a newline after the one before. Lines that are not partial
    pass through unchanged (the common case costs one scan of the batch in C, and the
    same lists come back when no line may be partial and nothing is pending). A partial
    line starts or continues its stream's group; the stream's final line ends it, and one
    line in the runtime's own format, holding the joined text and the time of the first
    piece, takes the group's place at the offset of its first line. So the parser, which
    runs later in the pipeline, reads joined lines like any other.
``pending_offset``
    The first byte of the earliest group still waiting for its final line; a file's
    checkpoint never passes it (after a restart the group is read again, whole).
``flush()``
    Ships pending groups as they are (after ``multiline_timeout`` without growth, at the end
    of a rotated file, in the shutdown drain), marked ``log.flags: ["partial"]``; the rest of
    such a line, when it comes, is marked ``["partial", "partial_end"]``, after a restart too
    (``resume_after``: the lines before the saved position show which streams were cut).
``flags``
    After ``feed`` or ``flush``: ``None`` if no record is marked, else a list beside the
    messages (``None`` or the record's ``log.flags``).

A group longer than ``max_bytes`` characters (``--max-line-bytes``), its final line's text
included, is shipped in pieces of exactly that size (the last one shorter), marked as the
tail marks the pieces of a long line, and so is a single runtime line that long; a pending
group's offset moves to the first line whose text is not yet shipped. Memory per stream
stays bounded by ``max_bytes`` plus one runtime line.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, compress, repeat
from operator import add, gt, sub

from sidekick.ship.parsers._time import iso8601

PARTIAL = ["partial"]
PARTIAL_END = ["partial", "partial_end"]
IOSTREAM = "log.iostream"  # OpenTelemetry's name for stdout / stderr

# One line as the joiner needs it: (time, stream, partial?, text); None if it is no such line.
Classified = tuple[str, str, bool, str] | None


@dataclass(slots=True)
class _Group:
    time: str
    # The offsets of the lines the texts came from, beside the texts; the first is pending.
    offsets: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    size: int = 0


class PartialJoiner:
    """Joins one file's partial runtime lines; see the module docstring."""

    def __init__(
        self,
        *,
        candidates: Callable[[list[str]], list[int]] | None = None,
        marker: re.Pattern[str] | None = None,
        classify: Callable[[str], Classified],
        render: Callable[[str, str, str, bool], str],
        max_bytes: int,
    ) -> None:
        """``candidates`` gives the indices of a batch's lines that may be partial (a
        superset; ``classify`` decides); or ``marker`` is found in every partial line."""
        if (candidates is None) == (marker is None):
            raise ValueError("a partial joiner takes either candidates or a marker")
        self._candidates = candidates
        self._marker = marker
        self._classify = classify
        self._render = render
        self.max_bytes = max_bytes
        self._groups: dict[str, _Group] = {}
        self._continuing: set[str] = set()  # streams whose line has pieces shipped already
        self.flags: list[list[str] | None] | None = None

    @property
    def pending_offset(self) -> int | None:
        groups = self._groups
        if not groups:
            return None
        return min(g.offsets[0] for g in groups.values())

    def feed(self, lines: list[str], offsets: list[int]) -> tuple[list[str], list[int]]:
        self.flags = None
        if self._candidates is not None:
            cands = self._candidates(lines)
        else:
            assert self._marker is not None
            cands = _marked(self._marker, lines, offsets)
        limit = self.max_bytes
        if lines and max(map(len, lines)) > limit:
            # A final line whose text alone is longer than max_bytes is cut too.
            longer = compress(range(len(lines)), map(gt, map(len, lines), repeat(limit)))
            cands = sorted(set(cands).union(longer))
        groups = self._groups
        continuing = self._continuing  # the same set that _cut adds to
        if not cands and not groups and not continuing:
            return lines, offsets
        out: list[str] = []
        out_offsets: list[int] = []
        marks: list[tuple[int, list[str]]] = []  # (index in out, log.flags), rarely any
        classify = self._classify
        n = len(lines)
        i = 0
        k = 0  # cands[k] is the first candidate not before line i
        while i < n:
            if not groups and not continuing:
                # Nothing pending: copy the lines up to the next candidate in one slice.
                k = bisect_left(cands, i, k)
                nxt = cands[k] if k < len(cands) else n
                if nxt > i:
                    out += lines[i:nxt]
                    out_offsets += offsets[i:nxt]
                    i = nxt
                    continue
                run = self._run(lines, i)
                if run is not None:
                    out.append(run[0])
                    out_offsets.append(offsets[i])
                    i = run[1]
                    continue
            line = lines[i]
            offset = offsets[i]
            i += 1
            parsed = classify(line)
            if parsed is None:
                out.append(line)
                out_offsets.append(offset)
                continue
            time, stream, partial, text = parsed
            g = groups.get(stream)
            if partial:
                if g is None:
                    g = groups[stream] = _Group(time)
                g.offsets.append(offset)
                g.texts.append(text)
                g.size += len(text)
                if g.size > limit:
                    self._cut(stream, g, out, out_offsets, marks)
                    if not g.texts:
                        del groups[stream]
                continue
            if g is None and len(text) <= limit:
                first_offset = offset
                joined = line
            else:
                # The line's end: longer than max_bytes with the pieces before it (or alone),
                # its first max_bytes go as pieces, as those of a long group do.
                if g is None:
                    g = groups[stream] = _Group(time)
                g.offsets.append(offset)
                g.texts.append(text)
                g.size += len(text)
                if g.size > limit:
                    self._cut(stream, g, out, out_offsets, marks)
                first_offset = g.offsets[0]
                joined = self._render(g.time, stream, "".join(g.texts), True)
                del groups[stream]
            if stream in continuing:
                continuing.discard(stream)
                marks.append((len(out), PARTIAL_END))
            out.append(joined)
            out_offsets.append(first_offset)
        if marks:
            flags: list[list[str] | None] = [None] * len(out)
            for index, mark in marks:
                flags[index] = mark
            self.flags = flags
        return out, out_offsets

    def _run(self, lines: list[str], i: int) -> tuple[str, int] | None:
        """The usual partial line at ``i``: its pieces and final line follow it, with no line
        of another stream between and no cut. Its joined line and the index after its final
        line; ``None`` for anything else, which goes line by line."""
        classify = self._classify
        first = classify(lines[i])
        if first is None or not first[2]:
            return None
        time, stream, _partial, text = first
        texts = [text]
        size = len(text)
        limit = self.max_bytes
        for j in range(i + 1, len(lines)):
            if size > limit:
                return None
            piece = classify(lines[j])
            if piece is None or piece[1] != stream:
                return None
            texts.append(piece[3])
            size += len(piece[3])
            if not piece[2]:
                if size > limit:
                    return None
                return self._render(time, stream, "".join(texts), True), j + 1
        return None

    def _cut(
        self,
        stream: str,
        g: _Group,
        out: list[str],
        out_offsets: list[int],
        marks: list[tuple[int, list[str]]],
    ) -> None:
        """Ship ``max_bytes``-long pieces of ``g`` while it holds more than that."""
        limit = self.max_bytes
        while g.size > limit:
            first = g.offsets[0]
            taken: list[str] = []
            need = limit
            while need:
                text = g.texts[0]
                if len(text) <= need:
                    taken.append(text)
                    need -= len(text)
                    del g.texts[0], g.offsets[0]
                else:
                    taken.append(text[:need])
                    g.texts[0] = text[need:]
                    need = 0
            g.size -= limit
            marks.append((len(out), PARTIAL))
            out.append(self._render(g.time, stream, "".join(taken), False))
            out_offsets.append(first)
            self._continuing.add(stream)

    def follow(self, before: PartialJoiner) -> None:
        """This file took the name of the file ``before`` joined (a rotation: the runtime
        writes on here), which was read to its end: a line it cut goes on here, and its end
        is marked ``partial_end``. ``before``'s pending groups were flushed already."""
        self._continuing |= before._continuing
        before._continuing.clear()

    def takes(self, line: str) -> bool:
        """Whether ``line`` is a runtime line, which ``feed`` cuts at ``max_bytes`` itself
        (each piece keeps the runtime's time and stream); the tail cuts other long lines."""
        return self._classify(line) is not None

    def resume_after(self, lines: list[str]) -> None:
        """The file is read again from a saved position; ``lines`` are the last ones before it
        (oldest first). A stream whose last line there is partial had its line shipped in
        part (flushed at a stop, or cut at ``max_bytes``), since a checkpoint never passes a
        pending group: the rest of that line, read from here, is marked ``partial_end``."""
        seen: set[str] = set()
        for line in reversed(lines):
            parsed = self._classify(line)
            if parsed is None or parsed[1] in seen:
                continue
            seen.add(parsed[1])
            if parsed[2]:
                self._continuing.add(parsed[1])
            if len(seen) == 2:
                break  # stdout and stderr: the runtimes write no other stream

    def flush(self) -> tuple[list[str], list[int]]:
        groups = sorted(self._groups.items(), key=lambda kv: kv[1].offsets[0])
        self._groups = {}
        out = [self._render(g.time, s, "".join(g.texts), False) for s, g in groups]
        offsets = [g.offsets[0] for _s, g in groups]
        self._continuing.update(s for s, _g in groups)
        self.flags = [PARTIAL] * len(out) if out else None
        return out, offsets


def _marked(marker: re.Pattern[str], lines: list[str], offsets: list[int]) -> list[int]:
    """Indices of the lines in which ``marker`` is found, in order.

    One search of the joined batch in C. The tail's offsets say where each line starts in
    the batch: a line starts its length in bytes and a newline after the one before, and
    has at least as many bytes as characters, so when the batch spans as many bytes as
    characters, a line's place in the joined text is its offset less the first. Otherwise
    (characters of more than one byte) the places are summed from the lines' lengths.
    """
    text = "\n".join(lines)
    hits = [m.start() for m in marker.finditer(text)]
    if not hits:
        return []
    base = offsets[0]
    if offsets[-1] - base == len(text) - len(lines[-1]):
        after = set(map(bisect_right, repeat(offsets), map(add, repeat(base), hits)))
        return list(map(sub, sorted(after), repeat(1)))
    starts = list(accumulate(map(add, map(len, lines), repeat(1)), initial=0))
    return sorted({bisect_right(starts, h) - 1 for h in hits})


# --- times ------------------------------------------------------------------------------------

_second_ok: dict[str, bool] = {}


def rfc3339nano(text: str) -> str | None:
    """Go's RFC 3339 with nanoseconds (``2024-01-02T03:04:05.1234Z``, trailing zeros cut) as
    ship's ``@timestamp`` (UTC, nine digits); other zones and forms through ``iso8601``.

    Every line has a new time, so no cache of whole times would hit; the seconds part is
    checked once per distinct second and the fraction is padded by string operations.
    """
    n = len(text)
    if 20 <= n <= 30 and text[-1] == "Z" and (n == 20 or text[19] == "."):
        seconds = text[:19]
        ok = _second_ok.get(seconds)
        if ok is None:
            ok = iso8601(seconds) is not None and seconds[10] == "T"
            if len(_second_ok) >= 4096:
                _second_ok.clear()
            _second_ok[seconds] = ok
        frac = text[20:-1]
        if ok and (not frac or (frac.isascii() and frac.isdigit())):
            if n == 30:
                return text
            return f"{seconds}.{frac:0<9}Z"
    return iso8601(text)
