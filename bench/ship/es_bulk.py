"""Tail → Elasticsearch bulk: records/s of ``sidekick ship`` into a fake ``_bulk`` endpoint.

The real CLI tails a generated nginx access log (``bench/.work``) and ships it with the
``elasticsearch://`` output to an in-process aiohttp server on 127.0.0.1 that speaks the bulk
protocol (NDJSON ``create`` actions in, a filter_path-shaped all-created response out) and
counts documents. No Elasticsearch runs: this measures our side — tailing, parsing, bulk
encoding, gzip, HTTP — not an indexer. The server shares the machine's two cores with the
shipper, so the numbers are a lower bound.

In the same run, for the ratio, the same input is shipped with the plain ``http:`` NDJSON
output to a minimal counting endpoint (the cheapest output we have), and every aggregator
output's batch encoding (+gzip) is timed in-process, without the pipeline.

    .venv/bin/python bench/ship/es_bulk.py [--lines 500000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "src"))

from _common import (
    WORK,
    CountingSink,
    cpu_seconds,
    generate_access_log,
    host_info,
    peak_rss_mib,
    sidekick,
    start,
    stop,
    table,
    wait_for,
    write_results,
)

from sidekick.ship.sinks import OutputSpec, create_sink
from sidekick.ship.sinks._http import gzip_bytes

_CREATED = b'{"create":{"status":201}}'


class FakeBulk:
    """``POST /_bulk`` on 127.0.0.1 in a thread: counts documents, answers all created."""

    def __init__(self) -> None:
        self.docs = 0
        self.requests = 0
        self.bad = 0  # action lines that are not create-with-_id
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake bulk", daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> FakeBulk:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def reset(self) -> None:
        self.docs = self.requests = self.bad = 0

    async def _bulk(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp undoes Content-Encoding: gzip
        # Whole-body counts (C loops), so the fake server costs as little CPU as possible.
        n = body.count(b"\n") // 2
        self.bad += n - min(body.count(b'{"create":{"_index":'), body.count(b',"_id":"'))
        self.docs += n
        self.requests += 1
        items = b",".join([_CREATED] * n)
        return web.Response(
            body=b'{"errors":false,"items":[' + items + b"]}", content_type="application/json"
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=512 * 1024 * 1024)
        app.router.add_post("/_bulk", self._bulk)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._ready.set()
        self._loop.run_forever()


def ship(
    name: str, output: str, parser: str, input_path: Path, lines: int, count: Any
) -> dict[str, Any]:
    workdir = WORK / "es_bulk" / name.replace(" ", "-")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    shipper = sidekick(workdir, input_path, output, parser)
    t0 = time.monotonic()
    proc = start(shipper, workdir / "shipper.log")
    status = wait_for(count, lines, proc, timeout=120 + lines / 5_000)
    elapsed = time.monotonic() - t0
    cpu = rss = float("nan")
    if proc.poll() is None:
        cpu = cpu_seconds(proc.pid)
        rss = peak_rss_mib(proc.pid)
    stop(proc)
    delivered = count()
    if status != "ok":
        log = (workdir / "shipper.log").read_text(errors="replace")[-1500:]
        print(f"  {name}: {status} after {delivered:,} records\n{log}", flush=True)
    return {
        "name": name,
        "parser": parser,
        "status": status,
        "records": lines,
        "delivered": delivered,
        "seconds": elapsed,
        "records_per_s": delivered / elapsed,
        "cpu_us_per_record": cpu / max(delivered, 1) * 1e6,
        "peak_rss_mib": rss,
    }


def tail_records(input_path: Path, n: int) -> list[dict[str, Any]]:
    """Records shaped like the tail source's, with the Kubernetes fields set."""
    with input_path.open(encoding="ascii") as f:
        messages = [next(f).rstrip("\n") for _ in range(n)]
    return [
        {
            "@timestamp": f"2026-11-22T10:15:{i % 60:02d}.{i % 1_000_000_000:09d}Z",
            "message": m,
            "log.file.path": str(input_path),
            "log.offset": i * 150,
            "log.file.id": "2049:1234:9f86d081",
            "host.name": "node-1",
            "k8s.pod.name": "web-0",
            "k8s.namespace.name": "shop",
            "k8s.container.name": "nginx",
        }
        for i, m in enumerate(messages)
    ]


def encode_only(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CPU time per batch encode of every aggregator output (and gzip), in this process."""
    outputs = {
        "elasticsearch": "elasticsearch://127.0.0.1:9/logs-%Y.%m.%d",
        "loki": "loki://127.0.0.1:9",
        "otlp protobuf": "otlp://127.0.0.1:9",
        "otlp json": "otlp://127.0.0.1:9?encoding=json",
        "syslog": "syslog+tcp://127.0.0.1:9",
    }
    n = len(records)
    batch = 2000
    out = []
    for label, url in outputs.items():
        sink: Any = create_sink(OutputSpec(url=url))
        encode = (
            sink.encode if hasattr(sink, "encode") else (lambda b, s=sink: [s.format(r) for r in b])
        )
        t0 = time.process_time()
        for i in range(0, n, batch):
            encode(records[i : i + batch])
        t_enc = time.process_time() - t0
        row: dict[str, Any] = {
            "output": label,
            "encode_records_per_s": n / t_enc,
        }
        if not url.startswith("syslog"):
            t0 = time.process_time()
            for i in range(0, n, batch):
                gzip_bytes(encode(records[i : i + batch]))
            row["encode_gzip_records_per_s"] = n / (time.process_time() - t0)
        out.append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=500_000)
    ap.add_argument("--quick", action="store_true", help="100,000 lines")
    ap.add_argument("--parsers", default="raw,nginx", help="comma-separated")
    args = ap.parse_args()
    lines = 100_000 if args.quick else args.lines
    input_path = generate_access_log(lines)

    results: dict[str, Any] = {"host": host_info(), "lines": lines, "runs": []}
    encodes = encode_only(tail_records(input_path, min(lines, 100_000)))
    results["encode"] = encodes
    print("Batch encoding in-process (CPU time, 2,000-record batches):")
    print(
        table(
            [
                [
                    e["output"],
                    f"{e['encode_records_per_s']:,.0f}",
                    f"{e['encode_gzip_records_per_s']:,.0f}"
                    if "encode_gzip_records_per_s" in e
                    else "-",
                ]
                for e in encodes
            ],
            ["output", "encode records/s", "encode+gzip records/s"],
        ),
        flush=True,
    )
    rows = []
    with FakeBulk() as es, CountingSink() as http:
        for parser in args.parsers.split(","):
            es.reset()
            run = ship(
                f"sidekick {parser} -> elasticsearch",
                f"elasticsearch://127.0.0.1:{es.port}/logs-%Y.%m.%d",
                parser,
                input_path,
                lines,
                lambda es=es: es.docs,
            )
            run["bulk_requests"] = es.requests
            run["bad_actions"] = es.bad
            http.reset()
            peer = ship(
                f"sidekick {parser} -> http ndjson",
                f"http://127.0.0.1:{http.http_port}/ingest",
                parser,
                input_path,
                lines,
                lambda http=http: http.lines,
            )
            results["runs"] += [run, peer]
            for r in (run, peer):
                rows.append(
                    [
                        r["name"],
                        r["status"],
                        f"{r['records_per_s']:,.0f}",
                        f"{r['cpu_us_per_record']:.1f}",
                        f"{r['peak_rss_mib']:.0f}",
                    ]
                )
            runs = [run, peer]
            if parser == "raw":
                # gzip costs CPU on our side and saves ~7x on the wire; show both.
                es.reset()
                plain = ship(
                    f"sidekick {parser} -> elasticsearch gzip=false",
                    f"elasticsearch://127.0.0.1:{es.port}/logs-%Y.%m.%d?gzip=false",
                    parser,
                    input_path,
                    lines,
                    lambda es=es: es.docs,
                )
                results["runs"].append(plain)
                runs.append(plain)
            for r in runs[2:]:
                rows.append(
                    [
                        r["name"],
                        r["status"],
                        f"{r['records_per_s']:,.0f}",
                        f"{r['cpu_us_per_record']:.1f}",
                        f"{r['peak_rss_mib']:.0f}",
                    ]
                )
            ratio = run["records_per_s"] / max(peer["records_per_s"], 1e-9)
            rows.append([f"  ratio elasticsearch/http ({parser})", "", f"{ratio:.2f}x", "", ""])
            if es.bad:
                print(f"  warning: {es.bad} bulk action lines were not create-with-_id")
    print()
    print(table(rows, ["run", "status", "records/s", "CPU µs/record", "peak RSS MiB"]))
    path = write_results("es_bulk", results)
    print(f"\nResults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
