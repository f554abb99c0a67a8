"""CRI tail benchmark: container logs in the kubelet's layout, partial lines joined.

Input: ``bench/.work/cri-v1-N-P/pods/<ns>_<pod>_<uid>/<container>/0.log``, ``--lines`` CRI
lines as containerd writes them (``<RFC 3339 time> <stream> <P|F> <text>``, the text an nginx
access line, about 190 bytes a line): every ``--partial-every``-th record of the app is a long
line cut into two ``P`` pieces and its ``F`` end, and every tenth line is on ``stderr``.

Cases, each reading the whole file from its start into a file, in the same run:

- ``sidekick cri``: ``--input 'file://…/pods/**/*.log?parser=cri'``: pieces joined, the
  prefix parsed into ``@timestamp`` and ``log.iostream``, the Kubernetes fields taken from the
  path; one NDJSON record per joined line.
- ``sidekick raw``: the same file with no parser, one NDJSON record per line: the reference
  for what parsing and joining cost.
- ``rsyslog``: ``imfile`` with ``endmsg.regex`` matching the ``F`` tag (the way rsyslog's
  documentation reads CRI-O logs): pieces joined, the raw text written, nothing parsed. Not the
  same work: it is what a user of rsyslog gets for this input.

The clock runs from process start until the last record is counted in the output; CPU time
(user + system) from /proc/PID/stat and peak RSS from VmHWM, read before the shipper stops.
Cases are interleaved over ``--repeat`` rounds, order rotated; medians are reported. Target:
``sidekick cri`` >= 300,000 lines/s (lines of the file, pieces included).

    .venv/bin/python bench/ship/cri.py [--lines N] [--quick] [--only sidekick,rsyslog]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MIB,
    RSYSLOGD,
    SIDEKICK,
    WORK,
    FileLines,
    Shipper,
    access_line,
    cpu_seconds,
    host_info,
    peak_rss_mib,
    start,
    stop,
    stop_all,
    table,
    wait_for,
    write_results,
)

UID = "7c1e9a52-3b4d-4f60-8a2e-91d0c5b7e3f4"
TARGET = 300_000


def cri_time(ns: int) -> str:
    """containerd's RFC3339Nano: UTC, trailing zeros of the fraction cut."""
    sec, frac = divmod(ns, 10**9)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def generate(lines: int, partial_every: int) -> tuple[Path, int]:
    """The log file and the number of records it holds once partial lines are joined."""
    folder = WORK / f"cri-v1-{lines}-{partial_every}"
    path = folder / "pods" / f"bench_web-0_{UID}" / "app" / "0.log"
    done = folder / ".complete"
    if done.exists() and path.exists():
        return path, int(done.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"Generating {lines:,} CRI lines in {path} ...", flush=True)
    t0 = 1_763_800_000 * 10**9
    records = 0
    written = 0
    with path.open("w", encoding="ascii") as f:
        batch: list[str] = []
        i = 0
        while written < lines:
            ts = cri_time(t0 + i * 487_123)  # ~2,000 lines per second of log time
            text = access_line(i, (t0 + i * 487_123) // 10**9)
            stream = "stderr" if i % 10 == 9 else "stdout"
            if partial_every and i % partial_every == partial_every - 1 and lines - written >= 3:
                third = len(text) // 3
                batch.append(f"{ts} {stream} P {text[:third]}")
                batch.append(f"{ts} {stream} P {text[third : 2 * third]}")
                batch.append(f"{ts} {stream} F {text[2 * third :]}")
                written += 3
            else:
                batch.append(f"{ts} {stream} F {text}")
                written += 1
            records += 1
            i += 1
            if len(batch) >= 20_000:
                f.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            f.write("\n".join(batch) + "\n")
    done.write_text(str(records))
    return path, records


def sidekick(workdir: Path, pods: Path, out: Path, parser: str) -> Shipper:
    state = workdir / "state"
    state.mkdir(parents=True, exist_ok=True)
    url = f"file://{pods}/**/*.log" + ("?parser=cri" if parser == "cri" else "")
    argv = [
        str(SIDEKICK), "ship", "--input", url, "--output", f"file://{out}",
        "--state-dir", str(state), "--admin-addr", "127.0.0.1:0", "--log-level", "warning",
    ]  # fmt: skip
    return Shipper(f"sidekick {parser}", argv)


def rsyslog(workdir: Path, log: Path, out: Path) -> Shipper:
    (workdir / "rsyslog").mkdir(parents=True, exist_ok=True)
    conf = workdir / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{workdir / "rsyslog"}")\n'
        'module(load="imfile" mode="inotify")\n'
        'template(name="raw" type="string" string="%msg%\\n")\n'
        f'ruleset(name="out") {{\n  action(type="omfile" file="{out}" template="raw" '
        'ioBufferSize="256k")\n}\n'
        f'input(type="imfile" file="{log}" tag="bench" ruleset="out" '
        'endmsg.regex="^[^ ]+ (stdout|stderr) F ")\n'
    )
    argv = [str(RSYSLOGD), "-n", "-f", str(conf), "-i", str(workdir / "rsyslog.pid")]
    return Shipper("rsyslog endmsg.regex", argv)


def run_case(
    name: str, make: Any, log: Path, lines: int, records: int, slug: str
) -> dict[str, Any]:
    workdir = WORK / "cri" / slug
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    out = workdir / "out.log"
    shipper: Shipper = make(workdir, out)
    target = lines if name == "sidekick raw" else records
    counter = FileLines(out)
    t0 = time.monotonic()
    proc = start(shipper, workdir / "shipper.log")
    status = wait_for(counter.count, target, proc, timeout=60 + lines / 20_000)
    elapsed = time.monotonic() - t0
    cpu = rss = float("nan")
    if proc.poll() is None:
        cpu = cpu_seconds(proc.pid)
        rss = peak_rss_mib(proc.pid)
    stop(proc)
    delivered = counter.count()
    counter.close()
    if status != "ok":
        tail = (workdir / "shipper.log").read_text(errors="replace")[-800:]
        print(f"  {shipper.name}: {status} after {delivered:,} records\n{tail}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    done = delivered / target if target else 0.0  # the share of the file shipped
    return {
        "shipper": shipper.name,
        "status": status,
        "seconds": elapsed,
        "lines_per_s": lines * done / elapsed,
        "records_per_s": delivered / elapsed,
        "mib_per_s": log.stat().st_size * done / MIB / elapsed,
        "cpu_us_per_line": cpu / max(lines * done, 1) * 1e6,
        "peak_rss_mib": rss,
    }


def main() -> int:
    try:
        return run()
    finally:
        stop_all()


def run() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--partial-every", type=int, default=20, help="every Nth record is cut")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="300,000 lines, one round")
    ap.add_argument("--only", default="sidekick,rsyslog", help="comma-separated")
    args = ap.parse_args()
    if args.quick:
        args.lines = min(args.lines, 300_000)
        args.repeat = 1
    only = set(args.only.split(","))
    if "sidekick" in only and not SIDEKICK.exists():
        print(f"sidekick: {SIDEKICK} is missing; run `make install` first")
        return 2
    log, records = generate(args.lines, args.partial_every)
    pods = log.parents[2]
    size = log.stat().st_size
    print(
        f"Input: {args.lines:,} CRI lines, {records:,} records once joined, "
        f"{size / MIB:.0f} MiB ({size / args.lines:.0f} B/line)"
    )
    cases: list[tuple[str, Any]] = []
    if "sidekick" in only:
        cases.append(("sidekick cri", lambda w, o: sidekick(w, pods, o, "cri")))
        cases.append(("sidekick raw", lambda w, o: sidekick(w, pods, o, "raw")))
    if "rsyslog" in only:
        cases.append(("rsyslog endmsg.regex", lambda w, o: rsyslog(w, log, o)))
    runs: list[dict[str, Any]] = []
    for round_ in range(max(1, args.repeat)):
        k = round_ % len(cases)
        for i, (name, make) in (list(enumerate(cases)))[k:] + list(enumerate(cases))[:k]:
            r = run_case(name, make, log, args.lines, records, str(i))
            runs.append(r)
            print(
                f"  {r['shipper']:<21} {r['lines_per_s']:>10,.0f} lines/s "
                f"{r['records_per_s']:>10,.0f} records/s {r['cpu_us_per_line']:6.2f} µs CPU/line "
                f"{r['peak_rss_mib']:6.1f} MiB peak RSS  {r['status']}",
                flush=True,
            )
    rows: list[dict[str, Any]] = []
    for name, _make in cases:
        mine = [r for r in runs if r["shipper"] == name]
        row = dict(mine[0])
        for field in ("seconds", "lines_per_s", "records_per_s", "mib_per_s", "cpu_us_per_line"):
            row[field] = statistics.median(r[field] for r in mine)
        row["peak_rss_mib"] = max(r["peak_rss_mib"] for r in mine)
        bad = [r["status"] for r in mine if r["status"] != "ok"]
        row["status"] = bad[0] if bad else "ok"
        row["runs"] = len(mine)
        rows.append(row)
    print(f"\nCRI tail (whole file -> file; median of {max(1, args.repeat)} interleaved runs)")
    print(
        table(
            [
                [
                    r["shipper"],
                    f"{r['lines_per_s']:,.0f}",
                    f"{r['records_per_s']:,.0f}",
                    f"{r['mib_per_s']:.1f}",
                    f"{r['cpu_us_per_line']:.2f}",
                    f"{r['peak_rss_mib']:.1f}",
                    r["status"],
                ]
                for r in rows
            ],
            ["shipper", "lines/s", "records/s", "MiB/s", "CPU µs/line", "peak RSS MiB", "status"],
        )
    )
    by = {r["shipper"]: r for r in rows if r["status"] == "ok"}
    ratios: dict[str, float] = {}
    cri = by.get("sidekick cri")
    for ref in ("sidekick raw", "rsyslog endmsg.regex"):
        if cri and ref in by:
            ratios[f"sidekick cri / {ref} lines/s"] = cri["lines_per_s"] / by[ref]["lines_per_s"]
    if ratios:
        print("\nRatios")
        for k2, v in ratios.items():
            print(f"  {k2:<45} {v:.2f}x")
    if cri:
        met = cri["lines_per_s"] >= TARGET
        print(
            f"\nTarget: sidekick cri >= {TARGET:,} lines/s: {cri['lines_per_s']:,.0f} "
            f"{'met' if met else 'NOT met'}"
        )
    results = {
        "host": host_info(),
        "lines": args.lines,
        "records": records,
        "input_bytes": size,
        "partial_every": args.partial_every,
        "runs": runs,
        "throughput": rows,
        "ratios": ratios,
    }
    print(f"\nResults: {write_results('cri', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
