"""RFC 6587 framing of syslog streams: a frame that starts with a digit is octet-counted
(``LEN SP MSG``); any other ends at LF or NUL (``SysLogHandler`` over TCP ends messages with
NUL). The frames go to :func:`sidekick.ship.sources._syslog_parse.parse_frames`.
"""

from __future__ import annotations

# Octet counts seen (digits to their value): a lookup costs less than ``int`` of bytes.
_SIZES: dict[bytes, int] = {}


def _size(digits: bytes) -> int:
    if len(_SIZES) >= 4096:
        _SIZES.clear()
    size = _SIZES[digits] = int(digits)
    return size


class FrameError(Exception):
    """An octet count that is not one: the stream cannot be followed any further."""


class Framer:
    """Splits a stream into syslog frames (RFC 6587), at most ``max_bytes`` each.

    A frame over the limit is skipped to its end (an octet-counted one by its count, another
    to its LF or NUL) and counted by ``feed``; the stream goes on after it. Empty frames
    (an octet count of 0, separators in a row) give nothing.

    Frames are taken in bulk where that is certain to give the same frames: octet-counted
    ones by a loop that only finds, looks up and slices; LF- or NUL-terminated ones by one
    ``split`` of all the complete ones in the buffer, if none of them is empty, starts with a
    separator or a digit, or is over the limit. Whatever the bulk steps leave is taken
    frame by frame.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buf = b""  # the start of a frame still under way
        self._skip = 0  # bytes of an oversize octet-counted frame still to come
        self._skip_line = False  # an oversize frame runs to the next LF or NUL

    @property
    def partial(self) -> bool:
        """Whether a frame is under way (its end has not arrived)."""
        return bool(self.buf) or bool(self._skip) or self._skip_line

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """(complete frames, frames skipped for their size); FrameError if unframeable."""
        view = self.buf + data if self.buf else bytes(data)
        n = len(view)
        max_bytes = self.max_bytes
        find = view.find
        sizes = _SIZES
        pos = 0
        frames: list[bytes] = []
        append = frames.append
        oversize = 0
        bulk_from = 0
        if self._skip:
            pos = min(self._skip, n)
            self._skip -= pos
        if self._skip_line and pos < n:
            ends = [i for i in (find(b"\n", pos), find(b"\0", pos)) if i >= 0]
            if ends:
                pos = min(ends) + 1
                self._skip_line = False
            else:
                pos = n
        while pos < n:
            c = view[pos]
            if c in (10, 0, 13, 32):  # empty frames and stray separators
                pos += 1
                continue
            if 48 <= c <= 57:
                # Octet-counted frames in a row; the first one this loop leaves (a partial,
                # oversize or malformed one, or another framing) goes frame by frame below.
                while True:
                    sp = find(b" ", pos, pos + 11)
                    if sp < 0:
                        break
                    digits = view[pos:sp]
                    size = sizes.get(digits)
                    if size is None:
                        if not digits.isdigit():
                            break
                        size = _size(digits)
                    start = sp + 1
                    end = start + size
                    if end > n or size > max_bytes:
                        break
                    if size:  # an empty frame (RFC 6587 has no count 0) is skipped
                        append(view[start:end])
                    pos = end
                if pos >= n or not 48 <= view[pos] <= 57:
                    continue
                sp = find(b" ", pos, pos + 11)
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
                if end - sp - 1 > max_bytes:
                    oversize += 1
                    if end > n:
                        self._skip = end - n
                        pos = n
                        break
                    pos = end
                    continue
                if end > n:
                    break
                if end > sp + 1:
                    append(view[sp + 1 : end])
                pos = end
                continue
            if pos >= bulk_from:
                last = max(view.rfind(b"\n", pos), view.rfind(b"\0", pos))
                if last > pos:
                    run = view[pos:last]
                    lines = None
                    if b"\0" not in run:
                        lines = run.split(b"\n")
                    elif b"\n" not in run:
                        lines = run.split(b"\0")
                    # Each frame's first byte sorts above "9" (no empty frame, separator or
                    # octet count), so each is what the frame-by-frame step would take.
                    if lines and min(lines)[:1] > b"9" and max(map(len, lines)) <= max_bytes:
                        frames += lines
                        pos = last + 1
                        continue
                    bulk_from = last + 1  # frame by frame up to there
            nl = find(b"\n", pos)
            nul = find(b"\0", pos, nl if nl >= 0 else n)
            end = nul if nul >= 0 else nl
            if end < 0:
                if n - pos > max_bytes:
                    oversize += 1
                    self._skip_line = True
                    pos = n
                break
            if end - pos > max_bytes:
                oversize += 1
            else:
                append(view[pos:end])
            pos = end + 1
        self.buf = view[pos:]
        return frames, oversize
