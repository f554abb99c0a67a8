"""Benchmark: the receivers (OTLP/HTTP, OTLP/gRPC, Fluent forward, syslog TCP) -> spool -> file.

Each case runs the real ``sidekick ship`` CLI with one input and a file output; load
generators in separate processes send for ``--duration`` seconds over ``--connections``
connections, each waiting for its answer before the next send (an answer means the records
are fsync'ed):

- ``ndjson``: 100-record NDJSON bodies to ``http://`` (the existing ingest, the baseline);
- ``otlp-http``: 100-record OTLP/HTTP protobuf bodies to ``otlp://``, encoded by the
  OpenTelemetry SDK's own encoder (``encode_logs``, what its OTLP exporters send);
- ``otlp-grpc``: the same request bodies as ``LogsService/Export`` calls to ``otlp+grpc://``;
- ``forward``: 1,000-record PackedForward chunks with a ``chunk`` option, each acknowledged;
- ``syslog-tcp``: RFC 5424 lines, octet-counted, written in 1,000-line batches (syslog has no
  acknowledgement, so accepted is what the shipper read; delivered is what reached the file).

Printed per case: records/s accepted, records/s delivered end to end (first send until the
last record is in the file), and CPU µs per record of the shipper (user + system, /proc). Each
case is also run against a bare server that only answers (aiohttp for HTTP, grpc.aio for gRPC,
asyncio for forward acks and syslog reads), the ceiling of the transport on this machine; that
run also prints the senders' own CPU µs per record (they share the machine's cores with the
shipper, so a target's records/s times their cost is CPU the shipper cannot have).

``--rate N`` paces the senders to N records/s in all (each connection sends its share at even
intervals) instead of as fast as they are answered: the sustained rate a receiver delivers
while its records still reach the output from memory, not from its spool's files.

Usage: ``.venv/bin/python bench/ship/receivers.py [--duration 8] [--connections 8] [--rate N]``.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "ship"))
from _common import FileLines  # noqa: E402
from ingest import cpu_seconds, free_port, make_body, wait_listening  # noqa: E402

METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


# -- bodies ----------------------------------------------------------------------------------


def otlp_body(n: int = 100) -> bytes:
    """``n`` log records as the SDK's OTLP exporters encode them."""
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import InMemoryLogExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    exporter = InMemoryLogExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(logger_provider=provider)
    log = logging.getLogger("bench")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    for i in range(n):
        log.info(
            "GET /api/v1/items/%d completed",
            i,
            extra={"http.request.method": "GET", "http.response.status_code": 200},
        )
    log.removeHandler(handler)
    body = encode_logs(exporter.get_finished_logs()).SerializeToString()
    provider.shutdown()
    return bytes(body)


def forward_chunk(n: int = 1000) -> bytes:
    import msgpack

    now = int(time.time())
    entries = b"".join(
        msgpack.packb([now, {"message": f"GET /api/v1/items/{i} completed", "status": 200}])
        for i in range(n)
    )
    return msgpack.packb(["bench.app", entries, {"chunk": "c", "size": n}], use_bin_type=True)


def syslog_batch(n: int = 1000) -> bytes:
    out = []
    for i in range(n):
        msg = (
            f"<134>1 2026-01-01T00:00:00.000Z host app 42 ID7 - GET /api/v1/items/{i} completed"
        ).encode()
        out.append(b"%d %s" % (len(msg), msg))
    return b"".join(out)


# -- load generators (each in its own process) -----------------------------------------------


def _pace(sent: int, start: float, interval: float) -> None:
    """With ``--rate``, wait until the next send is due (``interval`` seconds apart)."""
    if interval > 0:
        delay = start + sent * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _http_worker(
    port: int, body: bytes, ctype: str, seconds: float, interval: float, q: Any
) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ok = 0
    start = time.monotonic()
    stop = start + seconds
    while time.monotonic() < stop:
        conn.request("POST", "/v1/logs", body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        resp.read()
        ok += resp.status in (200, 202)
        _pace(ok, start, interval)
    q.put(ok)


def _grpc_worker(port: int, body: bytes, seconds: float, interval: float, q: Any) -> None:
    import grpc

    ok = 0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)
        start = time.monotonic()
        stop = start + seconds
        while time.monotonic() < stop:
            call(body, timeout=30)
            ok += 1
            _pace(ok, start, interval)
    q.put(ok)


def _forward_worker(port: int, body: bytes, seconds: float, interval: float, q: Any) -> None:
    ok = 0
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.monotonic()
        stop = start + seconds
        while time.monotonic() < stop:
            s.sendall(body)
            got = b""
            while not got.endswith(b"c"):
                piece = s.recv(64)
                if not piece:
                    raise SystemExit("forward connection closed")
                got += piece
            ok += 1
            _pace(ok, start, interval)
    q.put(ok)


def _syslog_worker(port: int, body: bytes, seconds: float, interval: float, q: Any) -> None:
    ok = 0
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.monotonic()
        stop = start + seconds
        while time.monotonic() < stop:
            s.sendall(body)
            ok += 1
            _pace(ok, start, interval)
    q.put(ok)


def load(worker: Callable[..., None], args: tuple[Any, ...], connections: int) -> tuple[int, float]:
    """Run ``connections`` workers; (answered sends, seconds)."""
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(*args, q)) for _ in range(connections)]
    start = time.monotonic()
    for p in procs:
        p.start()
    total = sum(q.get(timeout=300) for _ in procs)
    for p in procs:
        p.join()
    return total, time.monotonic() - start


# -- cases -----------------------------------------------------------------------------------

BARE = {
    "http": """
import sys
from aiohttp import web
async def logs(request):
    await request.read()
    return web.Response(status=200)
app = web.Application()
app.router.add_post("/v1/logs", logs)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
""",
    "grpc": """
import asyncio, sys, grpc
async def export(request, context):
    return b""
async def main():
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(export)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.logs.v1.LogsService", {"Export": handler}),))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
""",
    "forward": """
import asyncio, sys, msgpack
async def client(reader, writer):
    unpacker = msgpack.Unpacker(raw=False)
    while data := await reader.read(262144):
        unpacker.feed(data)
        for obj in unpacker:
            writer.write(msgpack.packb({"ack": obj[2]["chunk"]}))
async def main():
    server = await asyncio.start_server(client, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
""",
    "syslog": """
import asyncio, sys
async def client(reader, writer):
    while data := await reader.read(262144):
        pass
async def main():
    server = await asyncio.start_server(client, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
""",
}


class Case:
    def __init__(
        self,
        name: str,
        scheme: str,
        worker: Callable[..., None],
        body: bytes,
        records_per_send: int,
        bare: str,
        extra: tuple[Any, ...] = (),
    ) -> None:
        self.name = name
        self.scheme = scheme
        self.worker = worker
        self.body = body
        self.per_send = records_per_send
        self.bare = bare
        self.extra = extra

    def args(self, port: int, seconds: float, interval: float = 0.0) -> tuple[Any, ...]:
        return (port, self.body, *self.extra, seconds, interval)


def run_sidekick(
    case: Case, tmp: Path, seconds: float, connections: int, rate: float = 0.0
) -> dict[str, float]:
    port, admin = free_port(), free_port()
    out = tmp / f"{case.name}.ndjson"
    proc = subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "sidekick"),
            "ship",
            "--input",
            f"{case.scheme}://127.0.0.1:{port}",
            "--output",
            f"file://{out}",
            "--state-dir",
            str(tmp / f"state-{case.name}"),
            "--admin-addr",
            f"127.0.0.1:{admin}",
            "--log-level",
            "warning",
        ]
    )
    try:
        wait_listening(port)
        cpu0 = cpu_seconds(proc.pid)
        start = time.monotonic()
        # --rate: records/s over all connections, each connection sending its share evenly.
        interval = connections * case.per_send / rate if rate else 0.0
        sends, took = load(case.worker, case.args(port, seconds, interval), connections)
        accepted = sends * case.per_send
        deadline = time.monotonic() + 180
        lines = FileLines(out)
        while lines.count() < accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        delivered = lines.count()
        lines.close()
        e2e = time.monotonic() - start
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    if delivered < accepted:
        print(f"  WARNING {case.name}: only {delivered} of {accepted} records arrived")
    return {
        "accepted_rec_s": accepted / took,
        "delivered_rec_s": delivered / e2e,
        "cpu_us_per_rec": cpu / max(1, delivered) * 1e6,
    }


def run_bare(case: Case, seconds: float, connections: int) -> dict[str, float]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE[case.bare], str(port)])
    try:
        wait_listening(port)
        cpu0 = cpu_seconds(proc.pid)
        senders0 = children_cpu_seconds()
        sends, took = load(case.worker, case.args(port, seconds), connections)
        senders = children_cpu_seconds() - senders0
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    records = sends * case.per_send
    return {
        "rec_s": records / took,
        "cpu_us_per_rec": cpu / max(1, records) * 1e6,
        "senders_us_per_rec": senders / max(1, records) * 1e6,
    }


def children_cpu_seconds() -> float:
    """User + system CPU of this process's children that have been waited for (the senders)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of load per run")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="3 s runs")
    ap.add_argument("--only", default="", help="comma-separated case names")
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="records/s offered in total (paced senders; default: as fast as answered)",
    )
    args = ap.parse_args()
    seconds = 3.0 if args.quick else args.duration
    otlp = otlp_body()
    cases = [
        Case("ndjson", "http", _http_worker, make_body(), 100, "http", ("application/x-ndjson",)),
        Case("otlp-http", "otlp", _http_worker, otlp, 100, "http", ("application/x-protobuf",)),
        Case("otlp-grpc", "otlp+grpc", _grpc_worker, otlp, 100, "grpc"),
        Case("forward", "forward", _forward_worker, forward_chunk(), 1000, "forward"),
        Case("syslog-tcp", "syslog+tcp", _syslog_worker, syslog_batch(), 1000, "syslog"),
    ]
    if args.only:
        cases = [c for c in cases if c.name in args.only.split(",")]
    print(
        f"receivers -> file: {args.connections} connections, {seconds:.0f}s per run, "
        f"{os.cpu_count()} CPUs" + (f", {args.rate:,.0f} records/s offered" if args.rate else "")
    )
    header = f"  {'case':<11} {'accepted/s':>12} {'delivered/s':>12} {'CPU µs/rec':>11}   bare server: {'records/s':>10} {'CPU µs/rec':>10}   senders: {'CPU µs/rec':>10}"
    print(header)
    with tempfile.TemporaryDirectory(prefix="sidekick-bench-receivers-") as d:
        for case in cases:
            ours = run_sidekick(case, Path(d), seconds, args.connections, args.rate)
            bare = run_bare(case, seconds, args.connections)
            print(
                f"  {case.name:<11} {ours['accepted_rec_s']:>12,.0f} {ours['delivered_rec_s']:>12,.0f} "
                f"{ours['cpu_us_per_rec']:>11.2f}   {'':>12} {bare['rec_s']:>10,.0f} "
                f"{bare['cpu_us_per_rec']:>10.2f}   {'':>9}{bare['senders_us_per_rec']:>10.2f}"
            )


if __name__ == "__main__":
    main()
