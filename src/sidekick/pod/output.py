"""Container output: to the terminal with a ``pod/container`` prefix, and to log files.

Each container's stdout and stderr (one stream, as one pipe) is read in large chunks and split
into lines; complete lines go to ``<run-dir>/<pod>/logs/<container>.log`` unchanged (what
``sidekick logs`` prints) and to our stdout behind a prefix in a colour chosen from the name,
so the same container has the same colour in every run. No colour when stdout is not a
terminal or ``NO_COLOR`` is set. A last line without a newline is written when the stream ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path
from typing import BinaryIO

_COLOURS = [31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96]


class Printer:
    def __init__(self, stream: BinaryIO | None = None, colour: bool | None = None) -> None:
        self.stream = stream or sys.stdout.buffer
        if colour is None:
            colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        self.colour = colour
        self.width = 0
        self.closed = False

    def prefix(self, name: str) -> bytes:
        pad = name.ljust(self.width)
        if not self.colour:
            return f"{pad} | ".encode()
        code = _COLOURS[hashlib.sha1(name.encode()).digest()[0] % len(_COLOURS)]
        return f"\x1b[{code}m{pad} |\x1b[0m ".encode()

    def write_lines(self, prefix: bytes, lines: list[bytes]) -> None:
        if self.closed:
            return
        try:
            self.stream.write(b"".join(prefix + line + b"\n" for line in lines))
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            # `sidekick up | head`: the reader went away. Containers keep running and their
            # log files keep growing; only the terminal copy stops.
            self.closed = True


async def pump(reader: asyncio.StreamReader, log_file: Path, printer: Printer, name: str) -> None:
    """Copy ``reader`` to ``log_file`` and the terminal until EOF."""
    prefix = printer.prefix(name)
    partial = b""
    # Log files are local and small writes; a blocking write is cheaper than a thread hop.
    with open(log_file, "ab") as f:  # noqa: ASYNC230
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data = partial + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                partial = data
                if len(partial) < 1 << 20:
                    continue
                data = partial + b"\n"  # a 1 MiB line without newline is written as is
                cut = len(data) - 1
            partial = data[cut + 1 :]
            complete = data[: cut + 1]
            f.write(complete)
            f.flush()
            printer.write_lines(prefix, complete.rstrip(b"\n").split(b"\n"))
        if partial:
            f.write(partial + b"\n")
            printer.write_lines(prefix, [partial])
