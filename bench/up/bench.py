"""``sidekick up``: time from start to a Ready 3-container Pod, and the supervisor's idle CPU.

    .venv/bin/python bench/up/bench.py [--quick] [--runs N] [--idle SECONDS]

* **Start to Ready**: ``sidekick up`` (the real CLI, a fresh Python process) on a Pod of three
  containers with readiness probes of each kind: ``exec`` (``true``) on a ``sleep``,
  ``httpGet`` on a Python ``http.server``, ``tcpSocket`` on a Python listener. Timed from
  spawning ``sidekick up`` until its ``/readyz`` answers 200 (polled every 10 ms), median and
  max of N runs. Probes run at ``initialDelaySeconds: 0``, ``periodSeconds: 1``: a server that
  is not yet listening at the first probe is seen a period later, exactly as on a kubelet.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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


def start(work: Path, manifest: str) -> subprocess.Popen[bytes]:
    path = work / "pod.yaml"
    path.write_text(manifest)
    return subprocess.Popen(
        [*SIDEKICK, "up", str(path), "--run-dir", str(work / "run"), "--admin-addr", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "up.err", "wb"),
        cwd=ROOT,
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
    ap.add_argument("--runs", type=int, default=0)
    ap.add_argument("--idle", type=float, default=0.0)
    args = ap.parse_args()
    runs = args.runs or (3 if args.quick else 7)
    idle = args.idle or (10.0 if args.quick else 30.0)
    results: dict[str, object] = {}

    running: list[float] = []
    ready: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-up-") as tmp:
        for i in range(runs):
            work = Path(tmp) / f"ready{i}"
            work.mkdir()
            t0 = time.monotonic()
            proc = start(work, ready_pod(free_port(), free_port()))
            try:
                r, rd = wait_ready(work, proc, t0)
            finally:
                stop(proc)
            running.append(r)
            ready.append(rd)
        print(f"Start to Ready, 3 containers with exec/httpGet/tcpSocket probes ({runs} runs):")
        print(
            f"  all Running : median {statistics.median(running):.3f} s, max {max(running):.3f} s"
        )
        print(f"  all Ready   : median {statistics.median(ready):.3f} s, max {max(ready):.3f} s")
        results["running_s"] = running
        results["ready_s"] = ready

        print(f"Idle CPU of the supervisor ({idle:g} s idle, 3 containers):")
        for probes in (False, True):
            work = Path(tmp) / f"idle{int(probes)}"
            work.mkdir()
            proc = start(work, idle_pod(free_port(), probes))
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
            results[f"rss_mib_{'probes' if probes else 'none'}"] = rss / 1024
            results[f"idle_cpu_ms_per_container_min_{'probes' if probes else 'none'}"] = (
                per_min * 1000
            )
            results[f"idle_child_cpu_ms_per_container_min_{'probes' if probes else 'none'}"] = (
                kids_per_min * 1000
            )
    out = ROOT / "bench" / "results" / f"up-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"Results written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
