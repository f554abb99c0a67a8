"""The floor: the least CPU a record can cost in CPython on this machine, and the ceiling it sets.

For each throughput target of the ship benchmarks, this times only the work no design can
skip, each piece done by the cheapest C primitive there is, in a tight loop with no event
loop, no pipeline, no checkpoint, no metric and no I/O:

- ``graph`` (2,000,000 nginx lines -> parse -> filter -> redact -> route -> two files):
  split a read chunk into lines and decode them; one match of the validating nginx pattern
  (the parser's fastest, for lines without a backslash) and its groups (or ``findall`` over
  the chunk, whichever is cheaper); a record of the fields; the redact scan reduced to one
  JSON encoding of the values, one ``translate``, one ``find`` per folded needle and the
  access-key search; the filter's two comparisons by ``map``; the JSON encoding of the output
  records. The record is a msgspec ``Struct`` (the cheapest to make and to encode) in
  ``graph``, and a dict, the form ship's transforms take, in ``graph, records as dicts``;
- ``otlp-http`` (100-record OTLP/HTTP protobuf requests): parsing the request (upb, with the
  attributes and bodies left as bytes, as ``_otlp_wire`` reads it) and reading each field of
  each record once (attributes looked up in a table of their encodings, body, severity,
  time), a dict per record, JSON for the spool and for the output, plus a bare aiohttp
  server's CPU per request;
- ``forward`` (1,000-record PackedForward chunks): one msgspec decode of the chunk, the tag
  and time stored in each record, JSON for the spool and for the output;
- ``syslog-tcp`` (RFC 5424 lines): decoding each frame, one match of the RFC 5424 pattern and
  its groups, a dict of the fields, JSON for the spool and for the output;
- ``cri`` (CRI lines with partials joined): split and decode, one ``split(" ", 3)`` per line,
  the partial flag tested, a dict, JSON for the output;
- ``raw`` (the same nginx lines as they are, ``sidekick raw`` in graph.py): split and decode,
  a dict of the fields ship gives every tailed line, JSON for the output. It has no target;
  it measures the rest. With ``--raw-us`` (the CPU µs a line ``sidekick raw`` measured in
  graph.py, the same day), the machinery around that work (reading, offsets, batching,
  acknowledgements, writing, the event loop, freeing the records) is ``raw-us`` less this
  floor, and ``graph + machinery`` adds it to the graph's Struct floor: what the graph
  costs at least once it is read from a file and written to one, as every design must.

The sum is a floor per record. ``1 / floor`` is the most records a second one process can
reach (the interpreter lock keeps a process's Python work on one core), and ``2 / floor`` the
most if both cores did nothing else and the work split between them for free. The table
compares both with the target. A two-core ceiling under its target means the target is out
of reach of CPython on this machine for a design doing that work that way; a one-core
ceiling under it means
only a design running more than one process could reach it; above both, these pieces do not
rule it out.

    .venv/bin/python bench/ship/floor.py [--records N]

Results go to bench/results/floor-*.json.
"""

from __future__ import annotations

import argparse
import operator
import re
import sys
import time
from collections.abc import Callable
from itertools import repeat, starmap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec
from _common import access_line, host_info, table, write_results

CORES = 2
TARGETS = {
    "graph": 250_000,
    "graph, records as dicts": 250_000,
    "otlp-http": 150_000,
    "forward": 200_000,
    "syslog-tcp": 150_000,
    "cri": 300_000,
    "graph + machinery": 250_000,
}
# A bare aiohttp server's CPU per 100-record request, per record (bench/ship/receivers.py
# measures it in each run; this is read from that run, or from --aiohttp-us).
AIOHTTP_US = 1.7

_encode_lines = msgspec.json.Encoder().encode_lines


def best_us(fn: Callable[[], Any], per: int, repeat_: int = 5) -> float:
    """Least CPU µs per record over ``repeat_`` runs of ``fn`` (which handles ``per``)."""
    times = []
    for _ in range(repeat_):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times) / per * 1e6


def graph(n: int) -> dict[str, float]:
    from sidekick.ship.parsers._access import PLAIN

    lines = [access_line(i, 1_763_800_000 + i // 2000) for i in range(n)]
    chunk = ("\n".join(lines) + "\n").encode()
    keys = (
        "client.address", "user.name", "@timestamp", "http.request.method", "url.original",
        "url.path", "url.query", "network.protocol.version", "_", "http.response.status_code",
        "http.response.body.size", "http.request.header.referer", "user_agent.original",
    )  # fmt: skip
    texts = chunk.split(b"\n")[:-1]
    decoded = list(map(bytes.decode, texts))
    matches = map(PLAIN.match, decoded)
    groups = [(*m.groups(), line) for m, line in zip(matches, decoded, strict=True)]
    names = (*keys, "message")
    records = [dict(zip(names, g, strict=True)) for g in groups]
    # The same fields as a msgspec Struct: cheaper to make and to encode than a dict, though
    # not what ship's transforms take (they add, rename and remove fields of any name).
    Record = msgspec.defstruct(
        "Record",
        [(f"f{i}", object) for i in range(len(names))],
        rename={f"f{i}": name for i, name in enumerate(names)},
    )
    structs = [Record(*g) for g in groups]
    fold = bytes.maketrans(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -", b"abcdefghijklmnopqrstuvwxyz" + b"0" * 12
    )
    needles = (b"@", b"bearer", b"eyj", b"0" * 13)
    access_key = re.compile(rb"A(?:KIA|SIA|BIA|CCA)")  # case-sensitive: in the unfolded text

    def scan() -> None:
        raw = _encode_lines(groups)  # the values alone, whatever holds them
        folded = raw.translate(fold)
        for needle in needles:
            folded.find(needle)
        access_key.search(raw)

    path, status = operator.itemgetter(5), operator.itemgetter(9)

    def filter_() -> None:
        list(map(operator.eq, map(path, groups), repeat("/login")))
        list(map(operator.eq, map(status, groups), repeat("301")))

    text = chunk.decode()
    parse = min(
        best_us(lambda: [m.groups() for m in map(PLAIN.match, decoded)], n),
        best_us(lambda: PLAIN.findall(text), n),  # no anchors: an upper bound of its own
    )
    return {
        "split and decode lines": best_us(lambda: list(map(bytes.decode, chunk.split(b"\n"))), n),
        "nginx pattern: match and groups": parse,
        "a record of the fields (Struct)": best_us(lambda: list(starmap(Record, groups)), n),
        "redact scan (encode, translate, find)": best_us(scan, n),
        "filter: two comparisons": best_us(filter_, n),
        "JSON of the output records (Struct)": best_us(lambda: _encode_lines(structs), n),
    }, {
        "a record of the fields (dict)": best_us(
            lambda: [dict(zip(names, g, strict=True)) for g in groups], n
        ),
        "JSON of the output records (dict)": best_us(lambda: _encode_lines(records), n),
    }


def otlp(requests: int) -> dict[str, float]:
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue
    from receivers import otlp_body

    from sidekick.ship.sources._otlp_wire import parse_request as parse_light

    body = otlp_body(100)
    n = requests * 100
    parsed: list[Any] = []

    def parse() -> None:
        parsed.clear()
        for _ in range(requests):
            parsed.append(parse_light(body))

    parse()
    log_records = [
        lr for req in parsed for rl in req.resource_logs for sl in rl.scope_logs for lr in sl.log_records
    ]  # fmt: skip
    # Each distinct attribute encoding decoded once, as the receiver does.
    table: dict[bytes, tuple[str, Any]] = {}
    for lr in log_records:
        for raw in lr.attributes:
            kv = KeyValue.FromString(raw)
            table[raw] = (kv.key, kv.value.string_value or kv.value.int_value)

    def read() -> list[dict[str, Any]]:
        out = []
        lookup = table.__getitem__
        for lr in log_records:
            rec = dict(map(lookup, lr.attributes))
            rec["message"] = lr.body[2:].decode()  # a string body under 128 bytes
            rec["n"] = lr.severity_number
            rec["t"] = lr.time_unix_nano
            out.append(rec)
        return out

    records = read()
    return {
        "protobuf parse, attributes and bodies as bytes (upb)": best_us(parse, n),
        "read every field once (attributes from a table), a dict each": best_us(read, n),
        "JSON for the spool and the output": 2 * best_us(lambda: _encode_lines(records), n),
        "bare aiohttp server, per record": AIOHTTP_US,
    }


def forward(chunks: int) -> dict[str, float]:
    from receivers import forward_chunk

    chunk = forward_chunk(1000)
    n = chunks * 1000
    decoder = msgspec.msgpack.Decoder()
    outer = decoder.decode(chunk)
    inner = b"\xdd" + (1000).to_bytes(4, "big") + outer[1]
    entries: list[Any] = []

    def decode() -> None:
        entries.clear()
        for _ in range(chunks):
            entries.extend(decoder.decode(inner))

    decode()

    def store() -> None:
        for _t, rec in entries:
            rec["fluent.tag"] = "bench.app"
            rec["@timestamp"] = "2026-01-01T00:00:00.000000000Z"

    store()
    records = [rec for _t, rec in entries]
    return {
        "msgpack decode (msgspec)": best_us(decode, n),
        "tag and time into each record": best_us(store, n),
        "JSON for the spool and the output": 2 * best_us(lambda: _encode_lines(records), n),
    }


def syslog(n: int) -> dict[str, float]:
    from sidekick.ship.sources._syslog_parse import _PRI_RFC5424

    frames = [
        f"<134>1 2026-01-01T00:00:00.000Z host app 42 ID7 - GET /api/v1/items/{i} completed".encode()
        for i in range(n)
    ]
    keys = ("pri", "version", "@timestamp", "host", "app", "procid", "msgid", "sd", "message")
    texts = list(map(bytes.decode, frames))
    groups = [m.groups() for m in map(_PRI_RFC5424.fullmatch, texts)]
    records = [dict(zip(keys, g, strict=True)) for g in groups]
    return {
        "decode frames": best_us(lambda: list(map(bytes.decode, frames)), n),
        "RFC 5424 pattern: match and groups": best_us(
            lambda: [m.groups() for m in map(_PRI_RFC5424.fullmatch, texts)], n
        ),
        "a dict of the fields": best_us(
            lambda: [dict(zip(keys, g, strict=True)) for g in groups], n
        ),
        "JSON for the spool and the output": 2 * best_us(lambda: _encode_lines(records), n),
    }


def cri(n: int) -> dict[str, float]:
    lines = [
        f"2026-01-01T00:00:00.{i % 1000:09d}Z stdout {'P' if i % 10 == 0 else 'F'} "
        f'level=info msg="request {i} handled" path=/api/v1/items/{i}'
        for i in range(n)
    ]
    chunk = ("\n".join(lines) + "\n").encode()
    decoded = chunk.decode().split("\n")[:-1]
    parts = [line.split(" ", 3) for line in decoded]
    records = [{"@timestamp": t, "log.iostream": s, "message": m} for t, s, _f, m in parts]
    return {
        "split and decode lines": best_us(lambda: chunk.decode().split("\n"), n),
        "split each line in four": best_us(lambda: [line.split(" ", 3) for line in decoded], n),
        "flag test and a dict": best_us(
            lambda: [
                {"@timestamp": t, "log.iostream": s, "message": m} for t, s, f, m in parts if f
            ],
            n,
        ),
        "JSON of the output records": best_us(lambda: _encode_lines(records), n),
    }


def raw(n: int) -> dict[str, float]:
    lines = [access_line(i, 1_763_800_000 + i // 2000) for i in range(n)]
    chunk = ("\n".join(lines) + "\n").encode()
    messages = chunk.decode().split("\n")[:-1]
    path, fid, host = "/var/log/nginx/access.log", "fe00-526950-cd6aeb45c72a7b81-0", "vm"
    stamp = "2026-11-28T03:00:00.123456789Z"

    def build() -> list[dict[str, Any]]:
        return [
            {
                "@timestamp": stamp,
                "message": m,
                "log.file.path": path,
                "log.file.id": fid,
                "log.offset": i,
                "host.name": host,
            }
            for i, m in enumerate(messages)
        ]

    records = build()
    return {
        "split and decode lines": best_us(lambda: chunk.decode().split("\n"), n),
        "a dict of the file's fields": best_us(build, n),
        "JSON of the output records": best_us(lambda: _encode_lines(records), n),
    }


def main() -> None:
    global AIOHTTP_US
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--aiohttp-us", type=float, default=AIOHTTP_US)
    parser.add_argument(
        "--raw-us",
        type=float,
        help="CPU µs a line of `sidekick raw` (bench/ship/graph.py, the same day): adds the "
        "'graph + machinery' case",
    )
    args = parser.parse_args()
    AIOHTTP_US = args.aiohttp_us
    n = args.records
    cheapest, as_dicts = graph(n)
    with_dicts = {
        k.replace("(Struct)", "(dict)"): as_dicts.get(k.replace("(Struct)", "(dict)"), v)
        for k, v in cheapest.items()
    }
    cases = {
        "graph": cheapest,
        "graph, records as dicts": with_dicts,
        "otlp-http": otlp(max(1, n // 100)),
        "forward": forward(max(1, n // 1000)),
        "syslog-tcp": syslog(n),
        "cri": cri(n),
        "raw": raw(n),
    }
    if args.raw_us is not None:
        machinery = args.raw_us - sum(cases["raw"].values())
        cases["graph + machinery"] = {
            **cheapest,
            f"the raw path around its work ({args.raw_us:.2f} measured less its floor)": (
                machinery
            ),
        }
    rows = []
    data: dict[str, Any] = {"host": host_info(), "records": n, "cases": {}}
    for name, pieces in cases.items():
        floor = sum(pieces.values())
        one_core = 1e6 / floor
        ceiling = CORES * one_core
        target = TARGETS.get(name)
        for piece, us in pieces.items():
            rows.append([f"  {piece}", f"{us:.3f}", "", "", "", ""])
        if target is None:
            verdict = "(no target: the reference)"
        elif ceiling < target:
            verdict = "out of reach"
        elif one_core < target:
            verdict = "needs both cores: more than one process"
        else:
            verdict = "not ruled out in one process"
        rows.append(
            [
                name,
                f"{floor:.3f}",
                f"{one_core:,.0f}",
                f"{ceiling:,.0f}",
                "—" if target is None else f"{target:,}",
                verdict,
            ]
        )
        data["cases"][name] = {
            "pieces_us": pieces,
            "floor_us": floor,
            "one_core_per_s": one_core,
            "ceiling_per_s": ceiling,
            "target_per_s": target,
        }
    print(
        table(
            rows,
            [
                "case / piece",
                "CPU µs/record",
                "1 core/s",
                f"{CORES} cores/s",
                "target/s",
                "verdict",
            ],
        )
    )
    print(f"results: {write_results('floor', data)}")


if __name__ == "__main__":
    main()
