"""``sidekick up``: time from start to a Ready 3-container Pod, and the supervisor's idle CPU.

    .venv/bin/python bench/up/bench.py [--quick] [--runs N] [--idle SECONDS]
        [--isolation on,off] [--baseline-src DIR] [--no-idle] [--no-bytecode-cache]

* **Cases**: ``sidekick up --isolation=on`` and ``--isolation=off`` of this tree and, with
  ``--baseline-src DIR``, the same CLI from another tree's ``src`` (``python -m sidekick``
  with ``PYTHONPATH=DIR``, e.g. ``git archive REV src | tar -x -C DIR``), which is given no
  ``--isolation`` flag when it has none. Runs are interleaved, one of each case per round,
  the order rotated every round, after one start of each case that is not counted;
  medians and the ratios to the baseline are printed.
* **Bytecode**: each case runs with a bytecode cache of its own under
  ``bench/.work/up-pycache/`` (``PYTHONPYCACHEPREFIX``, ``PYTHONDONTWRITEBYTECODE`` removed),
  as an installed sidekick has its modules compiled; the uncounted first start fills it.
  ``--no-bytecode-cache`` keeps the environment as it is (where ``PYTHONDONTWRITEBYTECODE=1``
  is set, every start compiles sidekick's own modules again, ~0.1 s).

* **Start to Ready**: ``sidekick up`` (the real CLI, a fresh Python process) on a Pod of three
  containers with readiness probes of each kind: ``exec`` (``true``) on a ``sleep``,
  ``httpGet`` on a Python ``http.server``, ``tcpSocket`` on a Python listener. Timed from
  spawning ``sidekick up`` until its ``/readyz`` answers 200 (polled every 10 ms), median and
  max of N runs. Probes run at ``initialDelaySeconds: 0``, ``periodSeconds: 1``: a server that
  is not yet listening at the first probe is seen at the next tick of the Pod's probe clock,
  which starts with the Pod, as on a kubelet.
  Also printed: the time until the manifest is read and every container runs (first
  ``Running`` status), which is the supervisor's own start-up cost.
* **Idle CPU**: the same kind of Pod (three ``sleep`` containers with readiness ``exec`` and
  liveness ``tcpSocket``/``httpGet`` probes at the default 10 s period, and the same with no
  probes) left alone for ``--idle`` seconds; user+system CPU of the ``sidekick up`` process
  from ``/proc/PID/stat``, reported per container per minute. Probe commands' own CPU (their
  processes) is reported separately (children's time), with the supervisor's resident memory.

There is no peer in this run: podman needs images (none can be pulled here) and does not run
readiness probes, and a kubelet needs a cluster. The numbers are absolute; compare runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where the cases' bytecode is cached (None: as the environment says; see --no-bytecode-cache).
BYTECODE: Path | None = ROOT / "bench" / ".work" / "up-pycache"
SIDEKICK = [sys.executable, "-m", "sidekick"]
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready_pod(http_port: int, tcp_port: int) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: bench}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
    - name: exec
      command: [sleep, "3600"]
      readinessProbe: {{exec: {{command: ["true"]}}, periodSeconds: 1}}
    - name: http
      command: [python3, -m, http.server, --bind, 127.0.0.1, "{http_port}"]
      readinessProbe: {{httpGet: {{path: /, port: {http_port}}}, periodSeconds: 1}}
    - name: tcp
      command: [python3, -c, "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {tcp_port})); s.listen(); time.sleep(3600)"]
      readinessProbe: {{tcpSocket: {{port: {tcp_port}}}, periodSeconds: 1}}
"""


def idle_pod(http_port: int, probes: bool) -> str:
    server = f"""
    - name: http
      command: [python3, -m, http.server, --bind, 127.0.0.1, "{http_port}"]"""
    if probes:
        server += f"""
      readinessProbe: {{exec: {{command: ["true"]}}}}
      livenessProbe: {{httpGet: {{path: /, port: {http_port}}}}}"""
    sleeper = """
    - name: {name}
      command: [sleep, "3600"]"""
    if probes:
        sleeper += """
      readinessProbe: {{exec: {{command: ["true"]}}}}
      livenessProbe: {{tcpSocket: {{port: {port}}}}}"""
    return (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: idle}\nspec:\n"
        "  terminationGracePeriodSeconds: 2\n  containers:"
        + server
        + sleeper.format(name="a", port=http_port)
        + sleeper.format(name="b", port=http_port)
        + "\n"
    )


@dataclass
class Case:
    """One way of running ``sidekick up``: this tree's with an isolation setting, or another
    tree's (``src``) as the baseline."""

    label: str
    isolation: str | None = None  # "on" | "off"; None: the CLI's default
    src: Path | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src)
        if BYTECODE is not None:
            # Each tree's compiled modules in a cache of its own, as an installed program
            # has them, instead of compiling every module at each start.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(BYTECODE / self.label.replace(" ", "-"))
        return env


def has_isolation_flag(src: Path) -> bool:
    return "--isolation" in (src / "sidekick" / "cli" / "pod.py").read_text()


def start(work: Path, manifest: str, case: Case) -> subprocess.Popen[bytes]:
    path = work / "pod.yaml"
    path.write_text(manifest)
    flags = [] if case.isolation is None else [f"--isolation={case.isolation}"]
    return subprocess.Popen(
        [
            *SIDEKICK,
            "up",
            str(path),
            "--run-dir",
            str(work / "run"),
            "--admin-addr",
            "127.0.0.1:0",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "up.err", "wb"),
        cwd=ROOT,
        env=case.env(),
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_ready(work: Path, proc: subprocess.Popen[bytes], t0: float) -> tuple[float, float]:
    """Seconds until every container ran, and until /readyz said 200."""
    port_file = work / "run" / "admin-port"
    running_at = ready_at = 0.0
    while time.monotonic() - t0 < 30:
        if proc.poll() is not None:
            raise SystemExit(f"sidekick up exited: {(work / 'up.err').read_text()}")
        if port_file.exists() and port_file.read_text().strip():
            port = port_file.read_text().strip()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1) as r:
                    status = json.loads(r.read())
                containers = status["pods"][0]["containerStatuses"]
                if not running_at and all(c["state"] == "Running" for c in containers):
                    running_at = time.monotonic() - t0
                if all(c["ready"] for c in containers):
                    ready_at = time.monotonic() - t0
                    return running_at or ready_at, ready_at
            except OSError:
                pass
        time.sleep(0.01)
    raise SystemExit("pod did not become ready within 30 s")


def cpu_of(pid: int) -> tuple[float, float]:
    """(own user+system seconds, waited-for children's user+system seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=0, help="rounds (default 7, --quick 3)")
    ap.add_argument("--idle", type=float, default=0.0)
    ap.add_argument("--no-idle", action="store_true", help="skip the idle CPU measurement")
    ap.add_argument(
        "--isolation", default="on,off", help="this tree's cases: on, off or on,off (default)"
    )
    ap.add_argument(
        "--baseline-src", type=Path, help="a tree's src directory to run as the baseline"
    )
    ap.add_argument(
        "--other",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="another tree's src directory to run too, with each --isolation setting when it "
        "has the flag (repeatable)",
    )
    ap.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="run with this environment's bytecode settings (PYTHONDONTWRITEBYTECODE=1 makes "
        "every start compile sidekick's modules again)",
    )
    args = ap.parse_args()
    global BYTECODE
    if args.no_bytecode_cache:
        BYTECODE = None
    runs = args.runs or (3 if args.quick else 7)
    idle = args.idle or (10.0 if args.quick else 30.0)
    cases: list[Case] = []
    if args.baseline_src is not None:
        src = args.baseline_src.resolve()
        if not (src / "sidekick").is_dir():
            raise SystemExit(f"--baseline-src {src}: no sidekick package there; give a src dir")
        cases.append(Case("baseline", "on" if has_isolation_flag(src) else None, src))
    for other in args.other:
        label, _, where = other.partition("=")
        src = Path(where).resolve()
        if not label or not (src / "sidekick").is_dir():
            raise SystemExit(f"--other {other!r}: give LABEL=DIR, DIR a src dir with sidekick")
        if has_isolation_flag(src):
            cases += [Case(f"{label} {m}", m, src) for m in args.isolation.split(",")]
        else:
            cases.append(Case(label, None, src))
    for mode in args.isolation.split(","):
        if mode not in ("on", "off"):
            raise SystemExit(f"--isolation {args.isolation!r}: use on, off or on,off")
        cases.append(Case(f"isolation {mode}", mode))
    per_case: dict[str, object] = {}
    results: dict[str, object] = {
        "cases": per_case,
        "rounds": runs,
        "bytecode_cache": BYTECODE is not None,
        "load_average_at_start": os.getloadavg(),
    }
    by_case: dict[str, dict[str, list[float]]] = {
        c.label: {"running_s": [], "ready_s": []} for c in cases
    }

    with tempfile.TemporaryDirectory(prefix="bench-up-") as tmp:
        # One start of each case first, not counted: it fills the bytecode cache and the
        # page cache.
        for case in cases:
            work = Path(tmp) / f"warm-{case.label.replace(' ', '-')}"
            work.mkdir()
            proc = start(work, ready_pod(free_port(), free_port()), case)
            try:
                wait_ready(work, proc, time.monotonic())
            finally:
                stop(proc)
        for i in range(runs):
            # Rotate the order each round: the machine's load drifts during a run.
            order = cases[i % len(cases) :] + cases[: i % len(cases)]
            for case in order:
                work = Path(tmp) / f"ready{i}-{case.label.replace(' ', '-')}"
                work.mkdir()
                t0 = time.monotonic()
                proc = start(work, ready_pod(free_port(), free_port()), case)
                try:
                    r, rd = wait_ready(work, proc, t0)
                finally:
                    stop(proc)
                by_case[case.label]["running_s"].append(r)
                by_case[case.label]["ready_s"].append(rd)
        print(
            f"Start to Ready, 3 containers with exec/httpGet/tcpSocket probes "
            f"({runs} interleaved rounds):"
        )
        base = by_case.get("baseline")
        width = max(len(c.label) for c in cases)
        for case in cases:
            got = by_case[case.label]
            med_run, med_ready = (
                statistics.median(got["running_s"]),
                statistics.median(got["ready_s"]),
            )
            ratio = ""
            if base is not None and case.label != "baseline":
                ratio = f", {med_ready / statistics.median(base['ready_s']):.3f}x baseline"
            print(
                f"  {case.label:<{width}} all Running: median {med_run:.3f} s, max "
                f"{max(got['running_s']):.3f} s; all Ready: median {med_ready:.3f} s, max "
                f"{max(got['ready_s']):.3f} s{ratio}"
            )
            per_case[case.label] = {
                **got,
                "src": str(case.src or ROOT / "src"),
                "isolation": case.isolation,
                "running_median_s": med_run,
                "ready_median_s": med_ready,
            }

        if not args.no_idle:
            idle_cpu(Path(tmp), idle, next(c for c in cases if c.src is None), results)
    out = ROOT / "bench" / "results" / f"up-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"Results written to {out.relative_to(ROOT)}")
    return 0


def idle_cpu(tmp: Path, idle: float, case: Case, results: dict[str, object]) -> None:
    print(f"Idle CPU of the supervisor ({idle:g} s idle, 3 containers, {case.label}):")
    for probes in (False, True):
        work = tmp / f"idle{int(probes)}"
        work.mkdir()
        proc = start(work, idle_pod(free_port(), probes), case)
        try:
            wait_ready(work, proc, time.monotonic())
            time.sleep(2.0)  # let start-up settle
            own0, kids0 = cpu_of(proc.pid)
            time.sleep(idle)
            own1, kids1 = cpu_of(proc.pid)
            rss = rss_kib(proc.pid)
        finally:
            stop(proc)
        per_min = (own1 - own0) / 3 / (idle / 60)
        kids_per_min = (kids1 - kids0) / 3 / (idle / 60)
        label = "probes every 10 s" if probes else "no probes"
        print(
            f"  {label:<18}: {per_min * 1000:.1f} ms CPU per container per minute "
            f"(supervisor), {kids_per_min * 1000:.1f} ms in probe commands; "
            f"supervisor RSS {rss / 1024:.1f} MiB"
        )
        key = "probes" if probes else "none"
        results[f"rss_mib_{key}"] = rss / 1024
        results[f"idle_cpu_ms_per_container_min_{key}"] = per_min * 1000
        results[f"idle_child_cpu_ms_per_container_min_{key}"] = kids_per_min * 1000


if __name__ == "__main__":
    sys.exit(main())
