"""Graph benchmark: nginx lines through parse -> filter -> redact -> route -> two file outputs.

Runs the real ``sidekick ship`` twice over the same pre-written nginx access log (``--lines``,
default 2,000,000):

- **raw**: ``--input file://... --output file://...`` with the raw parser: lines to a file;
- **graph**: a ``--config`` file with one tailed input parsed as nginx, a ``filter`` dropping
  the ``/login`` requests and the 301s (~22% of the lines), a ``redact`` with the five
  built-in patterns, a ``route`` sending 5xx to a second output, and two file outputs (every
  kept record, and the 5xx ones).

The clock runs from process start until both outputs hold every line expected (computed from
the generator, not measured); CPU from /proc/PID/stat and peak RSS (VmHWM) are read just
before the shipper is stopped. It then measures, in this process on nginx-parsed records, the
per-record cost of each transform of the graph, and of a simple ``filter`` alone (the fast
path) next to the same condition in the CEL interpreter.

Targets (2 cores): graph >= 250,000 lines/s, simple filter <= 0.3 µs/record, RSS <= 80 MiB.

    .venv/bin/python bench/ship/graph.py [--lines N] [--skip-cli]

Results go to bench/results/graph-*.json; scratch files to bench/.work/graph/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    _PATHS,
    _STATUSES,
    SIDEKICK,
    WORK,
    FileLines,
    Shipper,
    access_line,
    cpu_seconds,
    generate_access_log,
    host_info,
    peak_rss_mib,
    sidekick,
    start,
    stop,
    stop_all,
    table,
    wait_for,
    write_results,
)

DROP = 'record["url.path"] == "/login" || record["http.response.status_code"] == 301'
PATTERNS = ["bearer_token", "aws_access_key", "jwt", "credit_card", "email"]
SERVER_ERRORS = 'record["http.response.status_code"] >= 500'

CONFIG = """\
ship:
  inputs:
    web: {{url: "file://{input_dir}/*.log", parser: nginx}}
  transforms:
    no-noise:
      type: filter
      inputs: [web]
      drop: '{drop}'
    clean:
      type: redact
      inputs: [no-noise]
      patterns: [{patterns}]
    split:
      type: route
      inputs: [clean]
      routes:
        server_errors: '{server_errors}'
  outputs:
    everything: {{url: "file://{all}", inputs: [clean]}}
    errors: {{url: "file://{errors}", inputs: [split.server_errors]}}
"""


def expected(lines: int) -> tuple[int, int]:
    """(kept, kept 5xx) for the generator's first ``lines`` lines, from its own formula."""
    kept = errors = 0
    login = _PATHS.index("/login")
    for i in range(lines):
        h = (i * 2654435761) & 0xFFFFFFFF
        status = _STATUSES[h % len(_STATUSES)]
        if h % len(_PATHS) == login or status == 301:
            continue
        kept += 1
        errors += status >= 500
    return kept, errors


def run(shipper: Shipper, workdir: Path, outputs: dict[Path, int], size: int) -> dict[str, Any]:
    counters = {path: FileLines(path) for path in outputs}
    total = sum(outputs.values())

    def count() -> int:
        return sum(min(c.count(), outputs[p]) for p, c in counters.items())

    t0 = time.monotonic()
    proc = start(shipper, workdir / "shipper.log")
    status = wait_for(count, total, proc, timeout=120 + total / 10_000)
    elapsed = time.monotonic() - t0
    cpu = rss = float("nan")
    if proc.poll() is None:
        cpu = cpu_seconds(proc.pid)
        rss = peak_rss_mib(proc.pid)
    stop(proc)
    delivered = {str(p.name): c.count() for p, c in counters.items()}
    for c in counters.values():
        c.close()
    if status != "ok":
        tail = (workdir / "shipper.log").read_text(errors="replace")[-1200:]
        print(f"  {shipper.name}: {status}, delivered {delivered}\n{tail}")
    return {
        "shipper": shipper.name,
        "status": status,
        "seconds": elapsed,
        "delivered": delivered,
        "expected": {str(p.name): n for p, n in outputs.items()},
        "cpu_seconds": cpu,
        "peak_rss_mib": rss,
        "input_mib": size / 2**20,
    }


def cli_runs(lines: int) -> list[dict[str, Any]]:
    input_path = generate_access_log(lines)
    size = input_path.stat().st_size
    kept, errors = expected(lines)
    print(f"{lines:,} lines; the filter keeps {kept:,} ({kept / lines:.1%}), 5xx {errors:,}")
    results = []

    work = WORK / "graph" / "raw"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    raw_out = work / "out.log"
    r = run(sidekick(work, input_path, f"file://{raw_out}", "raw"), work, {raw_out: lines}, size)
    r["lines"] = lines
    results.append(r)

    work = WORK / "graph" / "graph"
    shutil.rmtree(work, ignore_errors=True)
    (work / "state").mkdir(parents=True)
    all_out, err_out = work / "all.ndjson", work / "errors.ndjson"
    config = work / "ship.yaml"
    config.write_text(
        CONFIG.format(
            input_dir=input_path.parent,
            drop=DROP,
            patterns=", ".join(PATTERNS),
            server_errors=SERVER_ERRORS,
            all=all_out,
            errors=err_out,
        )
    )
    argv = [
        str(SIDEKICK),
        "ship",
        "--config",
        str(config),
        "--state-dir",
        str(work / "state"),
        "--admin-addr",
        "127.0.0.1:0",
        "--log-level",
        "warning",
    ]
    r = run(Shipper("sidekick graph", argv), work, {all_out: kept, err_out: errors}, size)
    r["lines"] = lines
    results.append(r)
    for r in results:
        r["lines_per_s"] = r["lines"] / r["seconds"]
        r["cpu_us_per_line"] = r["cpu_seconds"] / r["lines"] * 1e6
        if r["status"] == "ok":
            shutil.rmtree(WORK / "graph" / r["shipper"].split()[-1], ignore_errors=True)
    return results


def per_transform(n: int) -> dict[str, float]:
    """µs per record of each stage, in this process, on nginx-parsed records."""
    from sidekick.ship.parsers import create_parser
    from sidekick.ship.transforms import build_transform
    from sidekick.ship.transforms.filter import FilterTransform

    lines = [access_line(i, 1_763_800_000 + i // 2000) for i in range(n)]

    def parsed() -> list[dict[str, Any]]:
        records = [{"message": line} for line in lines]
        create_parser("nginx").parse(records)
        return records

    out: dict[str, float] = {}
    t0 = time.process_time()
    records = parsed()
    out["nginx parse"] = (time.process_time() - t0) / n * 1e6

    def best(fn: Any, make: Any, repeat: int = 5) -> float:
        """Least CPU µs per record over ``repeat`` runs of ``fn(make())`` (make not timed)."""
        times = []
        for _ in range(repeat):
            batch = make()
            t = time.process_time()
            fn(batch)
            times.append((time.process_time() - t) / len(batch))
        return min(times) * 1e6

    simple = build_transform("f", "filter", {"drop": 'record["url.path"] == "/login"'})
    out["filter, simple (fast path)"] = best(simple.process, lambda: records)

    def hot() -> float:
        """The simple filter as the shipper runs it: on each 1,000-line batch right after the
        batch is parsed (its records still in the cache); only the filter is timed."""
        parser = create_parser("nginx")
        spent = 0.0
        for i in range(0, n, 1000):
            batch = [{"message": line} for line in lines[i : i + 1000]]
            parser.parse(batch)
            t = time.process_time()
            simple.process(batch)
            spent += time.process_time() - t
        return spent / n * 1e6

    out["filter, simple, 1,000-record batches just parsed"] = min(hot() for _ in range(5))
    slow = build_transform("g", "filter", {"drop": 'record["url.path"] == "/login"'})
    assert isinstance(slow, FilterTransform)
    slow.condition._batch = None  # the same condition, forced through the CEL interpreter
    slow.condition.evaluate = slow.condition._evaluate_cel
    out["filter, same condition in CEL"] = best(slow.process, lambda: records[: n // 10], 2)
    graph_filter = build_transform("f2", "filter", {"drop": DROP})
    out["filter of the graph (||, fast path)"] = best(graph_filter.process, lambda: records)
    redact = build_transform("r", "redact", {"patterns": PATTERNS})
    out["redact, 5 patterns"] = best(redact.process, lambda: [dict(r) for r in records], 3)
    route = build_transform("s", "route", {"routes": {"server_errors": SERVER_ERRORS}})
    out["route, 1 branch"] = best(route.process, lambda: records)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--stage-records", type=int, default=200_000)
    parser.add_argument("--skip-cli", action="store_true", help="only the in-process stages")
    args = parser.parse_args()
    data: dict[str, Any] = {"host": host_info(), "lines": args.lines}
    try:
        if not args.skip_cli:
            runs = cli_runs(args.lines)
            data["runs"] = runs
            print(
                table(
                    [
                        [
                            r["shipper"],
                            r["status"],
                            f"{r['lines_per_s']:,.0f}",
                            f"{r['cpu_us_per_line']:.2f}",
                            f"{r['peak_rss_mib']:.1f}",
                        ]
                        for r in runs
                    ],
                    ["run", "status", "lines/s", "CPU µs/line", "peak RSS MiB"],
                )
            )
        stages = per_transform(args.stage_records)
        data["stages_us_per_record"] = stages
        print(
            table(
                [[k, f"{v:.3f}"] for k, v in stages.items()],
                ["stage (in process)", "µs/record"],
            )
        )
    finally:
        stop_all()
    print(f"results: {write_results('graph', data)}")


if __name__ == "__main__":
    main()
