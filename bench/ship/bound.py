"""The bound: the least server that does a receiver's required work, in one process and in N.

``floor.py`` times a record's required work in a tight loop, with no transport at all;
``split.py`` runs N whole shippers side by side. This sits between them: a real server on a
real socket, loaded by ``receivers.py``'s senders (the OpenTelemetry SDK's encoding for
OTLP/HTTP, octet-counted RFC 5424 for syslog), doing only what any receiver must do with
each request or read and nothing a durable shipper adds:

- ``otlp-http``: aiohttp reads the request; sidekick's own OTLP reading (``_otlp_wire``,
  ``_otlp_map.to_records``: the cheapest mapping it has) makes the records; ``host.name`` is
  added; the records are written to a file as NDJSON with one ``os.write``; the answer is
  the ``ExportLogsServiceResponse``;
- ``syslog-tcp``: an asyncio protocol gives each read to sidekick's ``Framer`` and
  ``parse_frames``; ``host.name`` is added; NDJSON to a file with one ``os.write``.

Left out, so that the figure is an upper bound for any design that keeps the issue's
promises: the spool and its fsync before the answer, writing the records twice (spool and
output), acknowledgements, checkpoints, metrics, back-pressure, the output's own queue. With
``--servers N`` (default: one per CPU, and always one) the servers share one port through
``SO_REUSEPORT``, each with its own output file: the kernel deals the senders' connections
among them, and nothing is shared.

Printed: records/s answered (OTLP) or read (syslog) and written, CPU µs a record of the
servers, and of the senders, which share the machine's cores. If N servers stay under a
target, no design doing this work over this transport in CPython reaches it on this machine.

    .venv/bin/python bench/ship/bound.py [--duration 8] [--connections 8] [--only otlp-http]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import FileLines, host_info, stop, table, wait_for_lines, write_results
from ingest import cpu_seconds, free_port, wait_listening
from receivers import (
    _http_worker,
    _syslog_worker,
    children_cpu_seconds,
    load,
    otlp_body,
    syslog_batch,
)

TARGETS = {"otlp-http": 150_000, "otlp-http-bare": 150_000, "syslog-tcp": 150_000}

SERVERS = {
    "otlp-http": """
import os, socket, sys, time
import msgspec
from aiohttp import web
from sidekick.ship.sources._otlp_map import decode_protobuf, export_response, to_records
out = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
encode_lines = msgspec.json.Encoder().encode_lines
host = socket.gethostname()
async def logs(request):
    req = decode_protobuf(await request.read())
    records, rejected, reason = to_records(req, time.time_ns())
    for rec in records:
        rec["host.name"] = host
    os.write(out, encode_lines(records))
    return web.Response(body=export_response(rejected, reason, as_json=False),
                        content_type="application/x-protobuf")
app = web.Application(client_max_size=64 << 20)
app.router.add_post("/v1/logs", logs)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
            reuse_port=True)
""",
    # The same work with the least HTTP there can be: no framework, no request object, one
    # search for the end of the headers and one for Content-Length, a fixed answer. It speaks
    # only what http.client sends here (keep-alive, a Content-Length body); it is a bound, not
    # a server.
    "otlp-http-bare": r"""
import asyncio, os, re, socket, sys, time
import msgspec
from sidekick.ship.sources._otlp_map import decode_protobuf, export_response, to_records
out = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
encode_lines = msgspec.json.Encoder().encode_lines
host = socket.gethostname()
length = re.compile(rb"\r\ncontent-length: *(\d+)", re.I)
class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""
    def data_received(self, data):
        buf = self.buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            n = int(length.search(buf, 0, end + 2).group(1))
            if len(buf) < end + 4 + n:
                break
            body = buf[end + 4 : end + 4 + n]
            buf = buf[end + 4 + n :]
            records, rejected, reason = to_records(decode_protobuf(body), time.time_ns())
            for rec in records:
                rec["host.name"] = host
            os.write(out, encode_lines(records))
            answer = export_response(rejected, reason, as_json=False)
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
            )
        self.buf = buf
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", int(sys.argv[1]), reuse_port=True)
    await server.serve_forever()
asyncio.run(main())
""",
    "syslog-tcp": """
import asyncio, os, socket, sys, time
import msgspec
from sidekick.ship.sources._syslog_frame import Framer
from sidekick.ship.sources._syslog_parse import parse_frames
out = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
encode_lines = msgspec.json.Encoder().encode_lines
host = socket.gethostname()
class Reader(asyncio.Protocol):
    def connection_made(self, transport):
        self.framer = Framer(64 * 1024)
    def data_received(self, data):
        frames, _oversize = self.framer.feed(data)
        if frames:
            records = parse_frames(frames, time.time())
            for rec in records:
                rec["host.name"] = host
            os.write(out, encode_lines(records))
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Reader, "127.0.0.1", int(sys.argv[1]), reuse_port=True)
    await server.serve_forever()
asyncio.run(main())
""",
}


class Case:
    def __init__(self, name: str, worker: Any, body: bytes, per_send: int, ctype: str = "") -> None:
        self.name = name
        self.worker = worker
        self.body = body
        self.per_send = per_send
        self.extra = (ctype,) if ctype else ()

    def args(self, port: int, seconds: float) -> tuple[Any, ...]:
        return (port, self.body, *self.extra, seconds, 0.0)


def run(case: Case, servers: int, tmp: Path, seconds: float, connections: int) -> dict[str, float]:
    port = free_port()
    outs = [tmp / f"{case.name}-{servers}-{i}.ndjson" for i in range(servers)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    procs = [
        subprocess.Popen([sys.executable, "-c", SERVERS[case.name], str(port), str(out)], env=env)
        for out in outs
    ]
    try:
        wait_listening(port)
        time.sleep(1.0)  # every server listening before the first connection is dealt
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        senders0 = children_cpu_seconds()
        start = time.monotonic()
        sends, took = load(case.worker, case.args(port, seconds), connections)
        sent = sends * case.per_send
        # Syslog has no answer: wait for the servers to write what was sent.
        readers = [FileLines(out) for out in outs]
        written = wait_for_lines(readers, sent, 120)
        elapsed = time.monotonic() - start
        for r in readers:
            r.close()
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
        senders = children_cpu_seconds() - senders0
    finally:
        for p in procs:
            stop(p, 30)
        for out in outs:
            out.unlink(missing_ok=True)
    if written < sent:
        print(f"  WARNING {case.name}: {written} of {sent} records written")
    return {
        "rec_s": written / max(took, elapsed),
        "cpu_us_per_rec": cpu / max(1, written) * 1e6,
        "senders_us_per_rec": senders / max(1, written) * 1e6,
        "sent_s": sent / took,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of load per run")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--servers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds (medians shown)")
    ap.add_argument("--quick", action="store_true", help="3 s runs, one round")
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.repeat = 3.0, 1
    cases = [
        Case("otlp-http", _http_worker, otlp_body(100), 100, "application/x-protobuf"),
        Case("otlp-http-bare", _http_worker, otlp_body(100), 100, "application/x-protobuf"),
        Case("syslog-tcp", _syslog_worker, syslog_batch(1000), 1000),
    ]
    only = set(filter(None, args.only.split(",")))
    cases = [c for c in cases if not only or c.name in only]
    counts = sorted({1, args.servers})
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="sidekick-bench-bound-") as tmp:
        for round_ in range(args.repeat):
            for case in cases:
                order = counts if round_ % 2 == 0 else counts[::-1]
                for n in order:
                    got = run(case, n, Path(tmp), args.duration, args.connections)
                    runs.setdefault((case.name, n), []).append(got)
                    print(
                        f"  round {round_ + 1}: {case.name} x{n}: {got['rec_s']:,.0f} records/s, "
                        f"{got['cpu_us_per_rec']:.2f} µs/rec",
                        flush=True,
                    )
    rows = []
    results: dict[str, Any] = {}
    for (name, n), got in runs.items():
        med = {k: sorted(r[k] for r in got)[len(got) // 2] for k in got[0]}
        results[f"{name} x{n}"] = {"median": med, "rounds": got}
        rows.append(
            [
                name,
                str(n),
                f"{med['rec_s']:,.0f}",
                f"{med['cpu_us_per_rec']:.2f}",
                f"{med['senders_us_per_rec']:.2f}",
                f"{TARGETS[name]:,}",
                f"{med['rec_s'] / TARGETS[name]:.2f}x",
            ]
        )
    print(
        f"bound: least servers, {args.connections} connections, {args.duration:g} s a run, "
        f"{args.repeat} rounds (medians), {os.cpu_count()} CPUs"
    )
    print(
        table(
            rows,
            ["case", "servers", "records/s", "CPU µs/rec", "senders µs/rec", "target", "of target"],
        )
    )
    write_results("bound", {"host": host_info(), "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
