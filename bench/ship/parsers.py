"""Parser speed: lines per second of each ``--parser`` on one core, batches of 1,000 records.

Records start as the pipeline builds them (``@timestamp``, ``message``, ``log.file.path``,
``log.offset``, ``host.name``) so dict growth is part of the cost. The best of three runs is
reported, timed in CPU time of this process (less disturbed by other load on a shared
machine than wall time). Target (issue 2): nginx >= 250,000 lines/s.

    .venv/bin/python bench/ship/parsers.py [--lines N] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import access_line, host_info, table, write_results

from sidekick.ship.parsers import create_parser

BATCH = 1000


def inputs(n: int) -> dict[str, list[str]]:
    start = 1_763_800_000
    access = [access_line(i, start + i // 2000) for i in range(n)]
    nginx_error = [
        f"2026/11/22 03:04:{i % 60:02d} [error] 31#31: *{i} open() "
        f'"/usr/share/nginx/html/x{i % 97}.png" failed (2: No such file or directory), '
        f"client: 10.0.{i % 250}.{i % 200}, server: www.example.com, "
        f'request: "GET /x{i % 97}.png HTTP/1.1", host: "www.example.com"'
        for i in range(n)
    ]
    apache_error = [
        f"[Sun Nov 22 03:04:{i % 60:02d}.{i % 999999:06d} 2026] [core:error] [pid 7:tid {i % 8}] "
        f"[client 10.0.{i % 250}.{i % 200}:{40000 + i % 20000}] AH00126: Invalid URI in request "
        f"GET /x{i % 97} HTTP/1.1"
        for i in range(n)
    ]
    jsonl = [
        json.dumps(
            {
                "time": f"2026-11-22T03:04:{i % 60:02d}.{i % 999999:06d}Z",
                "level": "info",
                "msg": "request handled",
                "http": {"method": "GET", "path": f"/api/v1/items/{i % 9973}", "status": 200},
                "duration_ms": i % 500,
            }
        )
        for i in range(n)
    ]
    return {
        "access": access,
        "nginx-error": nginx_error,
        "apache-error": apache_error,
        "json": jsonl,
    }


REGEX = (
    r"regex:^(?P<client__address>[^ ]+) [^ ]+ [^ ]+ \[(?P<time>[^]]+)\] "
    r'"(?P<http__request__method>[A-Z]+) (?P<url__original>[^ ]+) [^"]*" '
    r"(?P<http__response__status_code>[0-9]+) (?P<http__response__body__size>[0-9]+)"
)

CASES = [
    ("nginx", "access"),
    ("nginx", "nginx-error"),
    ("apache", "access"),
    ("apache", "apache-error"),
    ("json", "json"),
    (REGEX, "access"),
]


def measure(spec: str, lines: list[str]) -> float:
    best = 0.0
    for _ in range(3):
        parser = create_parser(spec)
        records: list[dict[str, Any]] = [
            {
                "@timestamp": "2026-11-22T03:04:05.000000000Z",
                "message": line,
                "log.file.path": "/var/log/nginx/access.log",
                "log.offset": i * 150,
                "host.name": "web-0",
            }
            for i, line in enumerate(lines)
        ]
        batches = [records[k : k + BATCH] for k in range(0, len(records), BATCH)]
        gc.collect()
        t0 = time.process_time()
        for batch in batches:
            parser.parse(batch)
        best = max(best, len(lines) / (time.process_time() - t0))
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description="Parser speed in lines/s.")
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--quick", action="store_true", help="50,000 lines")
    args = ap.parse_args()
    n = min(args.lines, 50_000) if args.quick else args.lines
    data = inputs(n)
    rows = []
    results: dict[str, Any] = {"host": host_info(), "lines": n, "batch": BATCH, "parsers": []}
    for spec, kind in CASES:
        rate = measure(spec, data[kind])
        name = "regex:<combined>" if spec.startswith("regex:") else spec
        results["parsers"].append({"parser": name, "input": kind, "lines_per_s": rate})
        rows.append([name, kind, f"{rate:,.0f}", f"{1e6 / rate:.2f}"])
        print(f"  {name:<18} {kind:<13} {rate:>12,.0f} lines/s", flush=True)
    print()
    print(table(rows, ["parser", "input", "lines/s", "µs/line"]))
    print(f"\nResults: {write_results('parsers', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
