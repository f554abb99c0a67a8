"""Output prefixes: a stable colour per container, none without a terminal."""

from __future__ import annotations

import io

from sidekick.pod.output import Printer


def test_prefix_colour_is_stable_per_name() -> None:
    a = Printer(io.BytesIO(), colour=True)
    b = Printer(io.BytesIO(), colour=True)
    assert a.prefix("web/nginx") == b.prefix("web/nginx")
    assert a.prefix("web/nginx").startswith(b"\x1b[")


def test_no_colour_means_plain_prefix_padded_to_width() -> None:
    p = Printer(io.BytesIO(), colour=False)
    p.width = 12
    assert p.prefix("web/nginx") == b"web/nginx    | "


def test_closed_reader_stops_terminal_copy_only() -> None:
    class Broken(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            raise BrokenPipeError

    p = Printer(Broken(), colour=False)
    p.write_lines(b"x | ", [b"line"])
    assert p.closed
    p.write_lines(b"x | ", [b"more"])  # no error once closed
