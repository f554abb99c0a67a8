"""Benchmark: HTTP ingest -> spool -> file output, with the real ``sidekick ship`` CLI.

A load generator on 127.0.0.1 (``wrk`` with a Lua script, or an aiohttp client with
``--client aiohttp``) POSTs 100-record NDJSON bodies to ``/v1/logs`` for ``--duration``
seconds with ``--connections`` concurrent connections. Every request must be answered 202
(records durably in the spool); then the run waits until every accepted record is in the
output file. Printed:

- requests/s and records/s accepted (each 202 means written + fsync'ed),
- records/s delivered end to end (first request until the last record is in the file),
- requests per fsync (how well group commit shares the disk flushes),
- the same load against a bare aiohttp server that answers 202 and does nothing, measured in
  the same run: the ceiling of the HTTP stack on this machine, and our ratio to it.

No other log shipper with an HTTP input is installed here, so the bare server is the peer.
Usage: ``.venv/bin/python bench/ship/ingest.py [--duration 10] [--connections 32]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "ship"))
from _common import FileLines  # noqa: E402

RECORDS_PER_BODY = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_body() -> bytes:
    lines = []
    for i in range(RECORDS_PER_BODY):
        rec = {
            "level": "info",
            "message": f"GET /api/v1/items/{i} completed",
            "http.request.method": "GET",
            "http.response.status_code": 200,
            "url.path": f"/api/v1/items/{i}",
            "duration_ms": 12.5,
            "trace_id": f"{i:032x}",
        }
        lines.append(json.dumps(rec, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# -- load generators -------------------------------------------------------------------------

WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-ndjson"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
"""


def run_wrk(
    url: str, body_file: Path, duration: float, connections: int, threads: int
) -> tuple[int, int, float]:
    """Return (requests, non-2xx responses, seconds)."""
    script = body_file.with_suffix(".lua")
    script.write_text(WRK_LUA.replace("{body}", str(body_file)))
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{int(duration)}s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if not m:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    requests = int(m.group(1))
    seconds = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        print(f"  wrk socket errors: {errors.group(1)}")
    return requests, int(bad.group(1)) if bad else 0, seconds


async def _aiohttp_load(
    url: str, body: bytes, duration: float, connections: int
) -> tuple[int, int, float]:
    import aiohttp

    ok = bad = 0
    stop = time.monotonic() + duration
    conn = aiohttp.TCPConnector(limit=connections)
    headers = {"Content-Type": "application/x-ndjson"}
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            nonlocal ok, bad
            while time.monotonic() < stop:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 202:
                        ok += 1
                    else:
                        bad += 1

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return ok + bad, bad, time.monotonic() - start


def run_load(args: argparse.Namespace, url: str, body_file: Path) -> tuple[int, int, float]:
    if args.client == "wrk":
        return run_wrk(url, body_file, args.duration, args.connections, args.threads)
    return asyncio.run(_aiohttp_load(url, body_file.read_bytes(), args.duration, args.connections))


# -- the systems under test --------------------------------------------------------------------

BARE_SERVER = """
import sys
from aiohttp import web

async def logs(request):
    await request.read()
    return web.json_response({"accepted": 100}, status=202)

app = web.Application()
app.router.add_post("/v1/logs", logs)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc), robust to a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_sidekick(args: argparse.Namespace, tmp: Path, body_file: Path) -> dict[str, float]:
    port, admin = free_port(), free_port()
    out = tmp / "out.ndjson"
    cmd = [
        str(REPO / ".venv" / "bin" / "sidekick"),
        "ship",
        "--input",
        f"http://127.0.0.1:{port}",
        "--output",
        f"file://{out}",
        "--state-dir",
        str(tmp / "state"),
        "--admin-addr",
        f"127.0.0.1:{admin}",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd)
    try:
        wait_listening(port)
        cpu0 = cpu_seconds(proc.pid)
        start = time.monotonic()
        requests, bad, seconds = run_load(args, f"http://127.0.0.1:{port}/v1/logs", body_file)
        accepted = (requests - bad) * RECORDS_PER_BODY
        deadline = time.monotonic() + 120
        lines = FileLines(out)
        while lines.count() < accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        delivered = lines.count()
        lines.close()
        e2e = time.monotonic() - start
        cpu = cpu_seconds(proc.pid) - cpu0
        try:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
                text = r.read().decode()
            fsyncs = metric(text, "sidekick_ship_ingest_fsync_seconds_count")
        except OSError:
            fsyncs = 0.0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    if bad:
        print(f"  WARNING: {bad} requests were not answered 202")
    if delivered < accepted:
        print(f"  WARNING: only {delivered} of {accepted} accepted records arrived")
    return {
        "requests": requests,
        "seconds": seconds,
        "req_s": (requests - bad) / seconds,
        "rec_s": accepted / seconds,
        "delivered_rec_s": delivered / e2e,
        "fsyncs": fsyncs,
        "cpu_us_per_req": cpu / max(1, requests - bad) * 1e6,
        "mib_s": (requests - bad) * body_file.stat().st_size / seconds / 2**20,
    }


def bench_bare(args: argparse.Namespace, body_file: Path) -> dict[str, float]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)])
    try:
        wait_listening(port)
        cpu0 = cpu_seconds(proc.pid)
        requests, bad, seconds = run_load(args, f"http://127.0.0.1:{port}/v1/logs", body_file)
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return {"req_s": (requests - bad) / seconds, "cpu_us_per_req": cpu / max(1, requests) * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per system")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument(
        "--client", choices=["wrk", "aiohttp"], default="wrk" if shutil.which("wrk") else "aiohttp"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sidekick-bench-ingest-") as d:
        tmp = Path(d)
        body_file = tmp / "body.ndjson"
        body_file.write_bytes(make_body())
        size = body_file.stat().st_size
        print(
            f"HTTP ingest -> file: {RECORDS_PER_BODY}-record NDJSON bodies ({size} B), "
            f"{args.connections} connections, {args.duration:.0f}s, client {args.client}, "
            f"{os.cpu_count()} CPUs"
        )
        ours = bench_sidekick(args, tmp, body_file)
        bare = bench_bare(args, body_file)
    per_fsync = ours["requests"] / ours["fsyncs"] if ours["fsyncs"] else float("nan")
    print(
        f"  sidekick ship   {ours['req_s']:>9,.0f} req/s  {ours['rec_s']:>10,.0f} records/s accepted  "
        f"{ours['mib_s']:6.1f} MiB/s"
    )
    print(f"                  {ours['delivered_rec_s']:>27,.0f} records/s delivered end to end")
    print(f"                  {per_fsync:>9.1f} requests per fsync (group commit)")
    print(
        f"                  {ours['cpu_us_per_req']:>9,.0f} CPU µs per request "
        f"({ours['cpu_us_per_req'] / RECORDS_PER_BODY:.1f} per record, ingest to file), i.e. "
        f"{1e6 / ours['cpu_us_per_req']:,.0f} req/s per core"
    )
    print(
        f"  bare aiohttp    {bare['req_s']:>9,.0f} req/s  (202 without parsing or storing), "
        f"{bare['cpu_us_per_req']:,.0f} CPU µs per request"
    )
    print(
        f"  ratio           {ours['req_s'] / bare['req_s']:>9.2f} x the bare server's req/s, "
        f"{ours['cpu_us_per_req'] / bare['cpu_us_per_req']:.1f} x its CPU per request"
    )


if __name__ == "__main__":
    main()
