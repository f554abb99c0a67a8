"""The syslog receiver's bulk steps give exactly what their one-at-a-time models give.

``parse_frames`` is checked against ``parse`` frame by frame (the model and the fallback),
``_utc`` against the plain conversion it caches by the second, and ``Framer`` fed any split of
a stream against the frame-by-frame framer it replaced (kept here as the model): the same
frames, the same oversize counts, the same error at the same point.
"""

from __future__ import annotations

import itertools
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidekick.ship.records import Record
from sidekick.ship.sources import _syslog_frame, _syslog_parse
from sidekick.ship.sources._syslog_frame import FrameError, Framer
from sidekick.ship.sources._syslog_parse import parse, parse_frames
from sidekick.ship.timefmt import rfc3339_ns

NOW = time.time()


def typed(records: list[Record]) -> list[list[tuple[str, type, Any]]]:
    """Records as ordered (key, type, value) lists: key order and ``1`` vs ``"1"`` count."""
    return [[(k, type(v), v) for k, v in rec.items()] for rec in records]


def assert_same_as_parse(frames: list[bytes]) -> None:
    assert typed(parse_frames(frames, NOW)) == typed([parse(f, NOW) for f in frames])


# -- parse_frames -----------------------------------------------------------------------------


def usual(values: list[str], odd: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Mostly ``values``, now and then ``odd`` (one_of picks evenly among its strategies)."""
    return st.one_of(*(st.sampled_from(values) for _ in range(6)), odd)


ODD = st.text(
    alphabet=st.sampled_from(list('a-1 \t\x1c\x85\u3000[]"\\=.:<>\ufeff\r\n\0é٣')),
    max_size=6,
)
pris = usual(
    ["<134>", "<13>", "<0>", "<191>", "<013>"], st.sampled_from(["<192>", "<٣>", "<>", "<1", ""])
)
versions = usual(["1", "2", "12"], st.sampled_from(["0", "00", "٢", "123", ""]))
stamps = usual(
    [
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.123456+02:00",
        "2026-01-01T12:34:56Z",
        "2003-10-11T22:14:15.003Z",
        "-",
    ],
    st.one_of(ODD, st.sampled_from(["2026-13-01T00:00:00Z", "2026-01-01T00:00:00.Z", "x.5"])),
)
fields = usual(["host", "app", "42", "ID7", "-", "my.host.example"], ODD)
sds = usual(
    ["-", "-", '[id@1 a="1"]', '[x@2 k="a \\"q\\" \\] \\\\ z"][y@3]'],
    st.sampled_from(["[", "-[a]", "[a b]"]),
)
messages = usual(
    ["GET /api/v1/items/1 completed", "", "\ufeffwith a BOM", "line\r", "nul\0", "trail\r\n\0"],
    st.text(max_size=12),
)


@st.composite
def rfc5424(draw: st.DrawFn) -> bytes:
    head = draw(pris) + draw(versions)
    parts = [head, draw(stamps), *(draw(fields) for _ in range(4)), draw(sds)]
    text = " ".join(parts)
    if draw(st.booleans()):
        text += " " + draw(messages)
    return text.encode()


rfc3164 = st.sampled_from(
    [
        b"<13>Jan  2 03:04:05 host app[42]: hello",
        b"<13>app: no time",
        b"<13>2026-01-01T00:00:00Z host app: iso time",
        b"<13>hello",
        b"no pri at all",
        b"<999>1 2026-01-01T00:00:00Z h a p m - high pri",
    ]
)
frame_bytes = st.one_of(
    rfc5424(),
    rfc5424(),
    rfc5424(),
    rfc3164,
    st.binary(max_size=20),
    st.sampled_from([b"", b"\r", b"\0", b"\n", b"\xff\xfe", b"<13>1 - h\xc3 a - - - x\xe2\x82"]),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(frame_bytes, max_size=12))
def test_parse_frames_gives_what_parse_gives_frame_by_frame(frames: list[bytes]) -> None:
    assert_same_as_parse(frames)


def test_the_usual_frames_take_the_bulk_path_and_others_fall_back() -> None:
    usual_frame = b"<134>1 2026-01-01T00:00:00.000Z host app 42 ID7 - GET /x"
    frames = [
        usual_frame,
        b'<165>1 2003-10-11T22:14:15.003Z h a - ID47 [exampleSDID@32473 iut="3"] sd',
        b"<13>Jan  2 03:04:05 host app[42]: bsd",
        b"<13>1 - - - - - - \xef\xbb\xbfbom\r",
        b"<13>0 - h a p m - version 0",
    ]
    assert_same_as_parse(frames)
    assert_same_as_parse([usual_frame, b"<13>1 - h a p m - two\nlines"])  # an LF: all by parse
    _syslog_parse._TEMPLATES.clear()
    parse_frames(frames, NOW)
    # Only the RFC 5424 header without structured data became a template.
    assert {k: list(v) for k, v in _syslog_parse._TEMPLATES.items()} == {
        "<134>1": ["host app 42 ID7"],
        "<13>1": ["- - - -"],
    }


def test_a_record_is_not_shared_with_the_template_or_another_record() -> None:
    frame = b"<134>1 2026-01-01T00:00:00.000Z host app 42 ID7 - a"
    first, second = parse_frames([frame, frame], NOW)
    first["message"] = "changed"
    first["extra"] = 1
    assert parse_frames([frame], NOW) == [second]
    assert second["message"] == "a" and "extra" not in second


def test_the_header_templates_are_bounded() -> None:
    _syslog_parse._TEMPLATES.clear()
    frames = [b"<134>1 - host%d app - - - m" % i for i in range(_syslog_parse._TEMPLATES_MAX + 10)]
    records = parse_frames(frames, NOW)
    assert [r["log.syslog.hostname"] for r in records] == [f"host{i}" for i in range(len(frames))]
    held = sum(map(len, _syslog_parse._TEMPLATES.values()))
    assert 0 < held <= _syslog_parse._TEMPLATES_MAX


# -- times ------------------------------------------------------------------------------------


def reference_utc(text: str) -> str | None:
    """The conversion ``_utc`` makes, in one piece, uncached."""
    head, dot, rest = text.partition(".")
    frac = ""
    if dot:
        digits = re.match(r"\d+", rest)
        if digits is None:
            return None
        frac = digits.group()
        text = head + rest[len(frac) :]
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ns = int(dt.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    return rfc3339_ns(ns)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    stamp = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if draw(st.booleans()):
        text += "." + draw(st.text(alphabet="0123456789٣", min_size=0, max_size=12))
    text += draw(st.sampled_from(["Z", "+00:00", "-05:30", "+14:00", "", ".5Z", "Zx"]))
    return text


@settings(max_examples=500, deadline=None)
@given(st.one_of(rfc3339(), st.text(max_size=30)))
def test_utc_gives_the_plain_conversion(text: str) -> None:
    assert _syslog_parse._utc(text) == reference_utc(text)


def test_times_of_one_second_share_its_conversion() -> None:
    _syslog_parse._utc_seconds.cache_clear()
    for i in range(50):
        assert _syslog_parse._utc(f"2031-05-06T07:08:09.{i:06d}+01:00") == (
            f"2031-05-06T06:08:09.{i:06d}000Z"
        )
    assert _syslog_parse._utc_seconds.cache_info().misses == 1


# -- Framer -----------------------------------------------------------------------------------


class ReferenceFramer:
    """The frame-by-frame framer: one frame a step, the buffer copied on every feed."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self._skip = 0
        self._skip_line = False

    @property
    def partial(self) -> bool:
        return bool(self.buf) or bool(self._skip) or self._skip_line

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        self.buf += data
        view = bytes(self.buf)
        n = len(view)
        pos = 0
        frames: list[bytes] = []
        oversize = 0
        if self._skip:
            pos = min(self._skip, n)
            self._skip -= pos
        if self._skip_line and pos < n:
            ends = [i for i in (view.find(b"\n", pos), view.find(b"\0", pos)) if i >= 0]
            if ends:
                pos = min(ends) + 1
                self._skip_line = False
            else:
                pos = n
        while pos < n:
            c = view[pos]
            if c in (10, 0, 13, 32):
                pos += 1
                continue
            if 48 <= c <= 57:
                sp = view.find(b" ", pos, pos + 11)
                if sp < 0:
                    if n - pos >= 11:
                        raise FrameError("an octet count longer than 10 digits")
                    break
                digits = view[pos:sp]
                if not digits.isdigit():
                    raise FrameError(
                        f"octet count {digits.decode(errors='replace')!r} is not a number"
                    )
                end = sp + 1 + int(digits)
                if end - sp - 1 > self.max_bytes:
                    oversize += 1
                    if end > n:
                        self._skip = end - n
                        pos = n
                        break
                    pos = end
                    continue
                if end > n:
                    break
                if end > sp + 1:  # a count of 0 gives no frame
                    frames.append(view[sp + 1 : end])
                pos = end
                continue
            nl = view.find(b"\n", pos)
            nul = view.find(b"\0", pos, nl if nl >= 0 else n)
            end = nul if nul >= 0 else nl
            if end < 0:
                if n - pos > self.max_bytes:
                    oversize += 1
                    self._skip_line = True
                    pos = n
                break
            if end - pos > self.max_bytes:
                oversize += 1
            else:
                frames.append(view[pos:end])
            pos = end + 1
        del self.buf[:pos]
        return frames, oversize


MAX = 40  # the frame limit of the framing tests: some frames drawn are over it

payloads = st.one_of(
    st.binary(max_size=MAX + 20),
    st.binary(min_size=MAX - 1, max_size=MAX + 2),  # about the limit
    st.sampled_from([b"<13>1 - h a p m - x", b"", b"12 <13>", b"a\nb", b"x\0y"]),
)
line_payloads = st.one_of(
    st.binary(max_size=MAX + 20).map(lambda b: b.replace(b"\n", b"").replace(b"\0", b"")),
    st.sampled_from([b"<%d>" % (10**i) + b"x" * (MAX - 6) for i in range(5)]),  # about the limit
    st.sampled_from([b"<13>hello", b"<13>1 - h a p m - x\r", b"!bang", b"~"]),
)


@st.composite
def pieces(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind <= 3:  # octet-counted, sometimes followed by a stray separator
        payload = draw(payloads)
        return b"%d %s%s" % (len(payload), payload, draw(st.sampled_from([b"", b"", b"\n"])))
    if kind <= 6:
        return draw(line_payloads) + draw(st.sampled_from([b"\n", b"\n", b"\0", b"\r\n"]))
    if kind == 7:  # separators and empty frames
        return draw(st.sampled_from([b"\n", b"\0", b" ", b"\r", b"\n\n"]))
    if kind == 8:  # an octet count that is not one
        return draw(st.sampled_from([b"12a <13>x", b"1_0 0123456789", b"12345678901 x"]))
    return draw(st.binary(max_size=30))


@st.composite
def split_stream(draw: st.DrawFn) -> list[bytes]:
    stream = b"".join(draw(st.lists(pieces(), max_size=25)))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def run(framer: Framer | ReferenceFramer, chunks: list[bytes]) -> tuple[Any, ...]:
    frames: list[bytes] = []
    oversize = 0
    for chunk in chunks:
        try:
            got, skipped = framer.feed(chunk)
        except FrameError as exc:
            return frames, oversize, "error", str(exc)
        frames += got
        oversize += skipped
    return frames, oversize, "partial" if framer.partial else "done"


@settings(max_examples=1000, deadline=None)
@given(split_stream())
def test_framer_gives_the_reference_frames_on_any_split(chunks: list[bytes]) -> None:
    assert run(Framer(MAX), chunks) == run(ReferenceFramer(MAX), chunks)


@pytest.mark.parametrize("terminator", [b"\n", b"\0"])
def test_terminated_frames_are_split_in_bulk_up_to_the_partial_one(terminator: bytes) -> None:
    framer = Framer(MAX)
    frames, oversize = framer.feed(b"<13>a" + terminator + b"<13>b" + terminator + b"<13>c")
    assert (frames, oversize, framer.partial) == ([b"<13>a", b"<13>b"], 0, True)
    assert framer.feed(terminator) == ([b"<13>c"], 0)
    assert not framer.partial


def test_a_run_with_an_odd_frame_goes_frame_by_frame() -> None:
    stream = b"<13>a\n\n 5 <13>b\r\n<13>c\n" + b"x" * (MAX + 1) + b"\n<13>d\n"
    assert run(Framer(MAX), [stream]) == run(ReferenceFramer(MAX), [stream])
    assert run(Framer(MAX), [stream]) == ([b"<13>a", b"<13>b", b"<13>c", b"<13>d"], 1, "done")


def test_the_octet_count_table_is_bounded() -> None:
    framer = Framer(1 << 20)
    stream = b"".join(b"%d %s" % (n, b"x" * n) for n in range(5000))
    frames, _ = framer.feed(stream)
    assert list(map(len, frames)) == list(range(1, 5000))  # a count of 0 gives no frame
    assert 0 < len(_syslog_frame._SIZES) <= 4096
