"""The syslog receiver's CPU per message, in process: framing (``Framer``) and parsing.

The stream is what ``receivers.py --only syslog-tcp`` sends (``syslog_batch()``: octet-counted
RFC 5424 lines), cut into 64 KiB chunks as a socket gives them; the same frames LF-terminated;
and a variant with a distinct microsecond time in every message (as rsyslog sends, where no
time repeats). Each batch of frames is parsed by ``parse_frames`` and, for comparison, by
``parse`` frame by frame. Best of N runs, CPU time of this process.

    .venv/bin/python bench/ship/syslog_parse.py [--messages 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from receivers import syslog_batch

from sidekick.ship.sources._syslog_frame import Framer
from sidekick.ship.sources._syslog_parse import parse, parse_frames

CHUNK = 64 * 1024


def varying_times(n: int) -> bytes:
    out = []
    for i in range(n):
        stamp = f"2026-01-01T00:{i // 60_000_000 % 60:02d}:{i // 1_000_000 % 60:02d}.{i % 1_000_000:06d}+00:00"
        msg = f"<134>1 {stamp} host app 42 ID7 - GET /api/v1/items/{i} completed".encode()
        out.append(b"%d %s" % (len(msg), msg))
    return b"".join(out)


def best(fn: Callable[[], Any], runs: int) -> float:
    seconds = float("inf")
    for _ in range(runs):
        gc.collect()
        start = time.process_time()
        fn()
        seconds = min(seconds, time.process_time() - start)
    return seconds


def frame_all(chunks: list[bytes]) -> list[list[bytes]]:
    framer = Framer(64 * 1024)
    return [framer.feed(chunk)[0] for chunk in chunks]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    n = args.messages
    octets = syslog_batch() * (n // 1000)
    lines = b"".join(f + b"\n" for f in Framer(1 << 20).feed(octets)[0])
    streams = {
        "octet-counted": octets,
        "LF-terminated": lines,
        "octet-counted, distinct times": varying_times(n),
    }
    now = time.time()
    for name, stream in streams.items():
        chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]
        batches = frame_all(chunks)
        count = sum(map(len, batches))
        framing = best(lambda c=chunks: frame_all(c), args.runs)
        bulk = best(lambda bs=batches: [parse_frames(b, now) for b in bs], args.runs)
        single = best(lambda bs=batches: [[parse(f, now) for f in b] for b in bs], args.runs)
        print(
            f"{name}: {count} messages; framing {framing / count * 1e6:.3f} µs, "
            f"parse_frames {bulk / count * 1e6:.3f} µs, parse one by one "
            f"{single / count * 1e6:.3f} µs a message"
        )


if __name__ == "__main__":
    main()
