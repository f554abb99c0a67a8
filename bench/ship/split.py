"""Ideal split: the most any multi-process design of today's pipeline could deliver here.

Each unmet throughput target is run twice in the same run: by one ``sidekick ship``, and by
``--shippers N`` (default: one per CPU) complete, independent shippers, each given 1/N of the
input, with its own state directory and its own output. Nothing is shared between them:
no coordination, no hand-off between processes, no merged output. A real multi-process design
(``SO_REUSEPORT`` workers, files shared out among processes, a pipeline cut into stages)
would pay for some of these things, so the N-shipper figure is an upper bound of what it could
reach with today's cost per record on this machine.

Cases (the inputs and configurations of the benchmarks named, reused from them):

- ``graph`` (``graph.py``): the nginx lines cut into N files; each shipper runs the graph
  (filter, redact, route, two file outputs) over its own file. Target 250,000 lines/s.
- ``cri`` (``cri.py``): the CRI file cut into N files at record boundaries (no partial line
  is split); each shipper tails one with ``parser=cri``. Target 300,000 lines/s.
- ``syslog-tcp`` and ``otlp-http`` (``receivers.py``): the same senders (8 connections,
  ``--duration`` seconds), dealt round-robin over the N shippers' ports. Targets 150,000
  records/s delivered, each.

The clock runs from the first shipper's start (files) or the first send (receivers) until
every shipper's outputs hold all their records. CPU is the shippers' user + system time.

    .venv/bin/python bench/ship/split.py [--shippers N] [--only graph,cri] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import itertools

import cri
import graph
import receivers
from _common import (
    SIDEKICK,
    WORK,
    FileLines,
    Shipper,
    cpu_seconds,
    generate_access_log,
    host_info,
    start,
    stop,
    stop_all,
    table,
    wait_for_lines,
    write_results,
)
from ingest import free_port, wait_listening

TARGETS = {"graph": 250_000, "cri": 300_000, "syslog-tcp": 150_000, "otlp-http": 150_000}


def cut(lines: list[bytes], parts: int, boundary: Callable[[bytes], bool]) -> list[bytes]:
    """``lines`` in ``parts`` runs of about equal length, each ending where ``boundary`` holds."""
    cuts = [0]
    for k in range(1, parts):
        i = len(lines) * k // parts
        while i < len(lines) and not boundary(lines[i - 1]):
            i += 1
        cuts.append(i)
    cuts.append(len(lines))
    return [b"".join(lines[a:b]) for a, b in itertools.pairwise(cuts)]


def run_files(jobs: list[tuple[list[str], list[tuple[Path, int]]]], root: Path) -> dict[str, float]:
    """Start one shipper per job (argv, [(output, records expected)]) and wait for all."""
    counters = [(FileLines(out), want) for _argv, outs in jobs for out, want in outs]
    t0 = time.monotonic()
    procs = [
        start(Shipper(f"split {k}", argv), root / f"shipper-{k}.log")
        for k, (argv, _o) in enumerate(jobs)
    ]
    total = sum(want for _c, want in counters)
    deadline = t0 + 600
    while sum(min(c.count(), want) for c, want in counters) < total:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SystemExit(f"shippers did not deliver in time; see {root}/shipper-*.log")
        time.sleep(0.02)
    seconds = time.monotonic() - t0
    cpu = sum(cpu_seconds(p.pid) for p in procs)
    for p in procs:
        stop(p)
    for c, _want in counters:
        c.close()
    return {"seconds": seconds, "cpu": cpu}


def graph_case(lines: int, shippers: int, root: Path) -> dict[str, float]:
    data = generate_access_log(lines).read_bytes().splitlines(keepends=True)
    jobs = []
    first = 0
    for k, part in enumerate(cut(data, shippers, lambda _line: True)):
        n = part.count(b"\n")
        kept, errors = graph.expected(first + n)
        kept0, errors0 = graph.expected(first)
        first += n
        work = root / f"graph-{k}"
        (work / "in").mkdir(parents=True)
        (work / "state").mkdir()
        (work / "in" / "access.log").write_bytes(part)
        everything, server_errors = work / "all.ndjson", work / "errors.ndjson"
        config = work / "ship.yaml"
        config.write_text(
            graph.CONFIG.format(
                input_dir=work / "in",
                drop=graph.DROP,
                patterns=", ".join(graph.PATTERNS),
                server_errors=graph.SERVER_ERRORS,
                all=everything,
                errors=server_errors,
            )
        )
        argv = [str(SIDEKICK), "ship", "--config", str(config), "--state-dir", str(work / "state"),
                "--admin-addr", "127.0.0.1:0", "--log-level", "warning"]  # fmt: skip
        jobs.append((argv, [(everything, kept - kept0), (server_errors, errors - errors0)]))
    r = run_files(jobs, root)
    return {"per_s": lines / r["seconds"], "cpu_us": r["cpu"] / lines * 1e6}


def cri_case(lines: int, shippers: int, root: Path) -> dict[str, float]:
    log, _records = cri.generate(lines, 20)
    data = log.read_bytes().splitlines(keepends=True)
    jobs = []
    for k, part in enumerate(cut(data, shippers, lambda line: b" F " in line[:48])):
        work = root / f"cri-{k}"
        pods = work / "pods"
        path = pods / f"bench_web-{k}_{cri.UID}" / "app" / "0.log"
        path.parent.mkdir(parents=True)
        path.write_bytes(part)
        records = sum(1 for line in part.splitlines() if b" F " in line[:48])
        out = work / "out.log"
        jobs.append((cri.sidekick(work, pods, out, "cri").argv, [(out, records)]))
    r = run_files(jobs, root)
    return {"per_s": lines / r["seconds"], "cpu_us": r["cpu"] / lines * 1e6}


def receiver_case(
    case: receivers.Case, seconds: float, shippers: int, root: Path
) -> dict[str, float]:
    procs, outs, ports = [], [], []
    for k in range(shippers):
        port = free_port()
        out = root / f"{case.name}-{k}.ndjson"
        argv = [str(SIDEKICK), "ship", "--input", f"{case.scheme}://127.0.0.1:{port}",
                "--output", f"file://{out}", "--state-dir", str(root / f"state-{k}"),
                "--admin-addr", "127.0.0.1:0", "--log-level", "warning"]  # fmt: skip
        procs.append(subprocess.Popen(argv))
        outs.append(FileLines(out))
        ports.append(port)
    try:
        for port in ports:
            wait_listening(port)
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        senders = [
            ctx.Process(target=case.worker, args=(*case.args(ports[i % shippers], seconds), q))
            for i in range(8)
        ]
        t0 = time.monotonic()
        for s in senders:
            s.start()
        accepted = sum(q.get(timeout=300) for _ in senders) * case.per_send
        for s in senders:
            s.join()
        delivered = wait_for_lines(outs, accepted)
        elapsed = time.monotonic() - t0
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
    finally:
        for p in procs:
            stop(p, 60)
        for c in outs:
            c.close()
    if delivered < accepted:
        raise SystemExit(f"{case.name}: only {delivered} of {accepted} records arrived")
    return {"per_s": delivered / elapsed, "cpu_us": cpu / max(1, delivered) * 1e6}


def main() -> int:
    try:
        return run()
    finally:
        stop_all()


def run() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shippers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--only", default=",".join(TARGETS), help="comma-separated case names")
    ap.add_argument("--lines", type=int, default=2_000_000, help="lines of the file cases")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of load (receivers)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="300,000 lines, 3 s, one round")
    args = ap.parse_args()
    if args.quick:
        args.lines, args.duration, args.repeat = 300_000, 3.0, 1
    otlp = receivers.otlp_body()
    live = {
        "syslog-tcp": receivers.Case(
            "syslog-tcp",
            "syslog+tcp",
            receivers._syslog_worker,
            receivers.syslog_batch(),
            1000,
            "syslog",
        ),
        "otlp-http": receivers.Case(
            "otlp-http",
            "otlp",
            receivers._http_worker,
            otlp,
            100,
            "http",
            ("application/x-protobuf",),
        ),
    }
    cases: dict[str, Callable[[int, Path], dict[str, float]]] = {
        "graph": lambda n, root: graph_case(args.lines, n, root),
        "cri": lambda n, root: cri_case(args.lines, n, root),
        **{
            name: (lambda n, root, c=case: receiver_case(c, args.duration, n, root))
            for name, case in live.items()
        },
    }
    names = [name for name in args.only.split(",") if name in cases]
    counts = [1, args.shippers]
    print(f"ideal split: 1 and {args.shippers} independent shippers, {os.cpu_count()} CPUs")
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for round_ in range(max(1, args.repeat)):
        order = counts[round_ % 2 :] + counts[: round_ % 2]
        for name in names:
            for n in order:
                root = Path(tempfile.mkdtemp(prefix=f"split-{name}-", dir=WORK))
                try:
                    r = cases[name](n, root)
                finally:
                    shutil.rmtree(root, ignore_errors=True)
                runs.setdefault((name, n), []).append(r)
                print(
                    f"  {name:<11} {n} shipper(s): {r['per_s']:>10,.0f}/s {r['cpu_us']:6.2f} CPU µs",
                    flush=True,
                )
    rows: list[list[str]] = []
    results: dict[str, Any] = {}
    for name in names:
        one = statistics.median(r["per_s"] for r in runs[(name, 1)])
        many = statistics.median(r["per_s"] for r in runs[(name, args.shippers)])
        cpu = statistics.median(r["cpu_us"] for r in runs[(name, args.shippers)])
        target = TARGETS[name]
        rows.append([name, f"{one:,.0f}", f"{many:,.0f}", f"{many / one:.2f}x", f"{cpu:.2f}",
                     f"{target:,}", f"{many / target:.2f}x"])  # fmt: skip
        results[name] = {"one": one, "many": many, "cpu_us": cpu, "target": target}
    print(
        f"\nideal split (median of {max(1, args.repeat)} rounds; /s is lines for files, records delivered for receivers)"
    )
    print(table(rows, ["case", "1 shipper /s", f"{args.shippers} shippers /s", "scaling",
                       "CPU µs", "target /s", "of target"]))  # fmt: skip
    write_results("split", {"host": host_info(), "shippers": args.shippers, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
