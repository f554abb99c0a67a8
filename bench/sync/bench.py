"""Benchmark of ``sidekick sync`` against the seeds' ``git clone`` + ``git pull`` loop.

    .venv/bin/python bench/sync/bench.py [--quick]

Measures, all with real git over file:// URLs in a temporary directory:

* publish latency (commit -> new content readable through the link) when polling with
  ``--period 1s`` and ``--period 100ms``, and with ``POST /sync`` (``--period 1h``);
  the naive baseline is ``while :; do git pull; sleep 1; done`` in a clone;
* CPU seconds per idle poll (nothing changed upstream), including every git child
  process: ``utime+stime+cutime+cstime`` of the sidekick process from ``/proc``, divided by
  the polls it counted in its own metrics; for the baseline, ``getrusage(RUSAGE_CHILDREN)``
  around a loop of ``git pull``;
* time to publish a large repository (20,000 files; 5,000 with ``--quick``) at depth 1,
  against ``git clone --depth 1``.

kubernetes/git-sync, the program ``sidekick sync`` replaces, is not installable here (it is
not packaged in Debian or on PyPI, and no prebuilt binaries are fetched), so the peer in the
same run is the seeds' naive loop. Results go to ``bench/results/sync-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
SIDEKICK = REPO / ".venv" / "bin" / "sidekick"
RESULTS = BENCH / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def git(cwd: Path, *args: str, quiet: bool = True) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=ENV, check=True, capture_output=quiet, text=True
    )
    return (out.stdout or "").strip()


def make_upstream(path: Path) -> str:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "index.html").write_text("v0\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "v0")
    return path.as_uri()


def commit(path: Path, text: str) -> None:
    (path / "index.html").write_text(text)
    git(path, "commit", "-q", "-a", "-m", text.strip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def wait_content(path: Path, text: str, timeout: float = 30) -> float:
    """Seconds until ``path`` reads ``text`` (polled every millisecond)."""
    t0 = time.monotonic()
    while read(path) != text:
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{path} did not show {text!r} within {timeout}s")
        time.sleep(0.001)
    return time.monotonic() - t0


class Sidekick:
    def __init__(self, repo: str, root: Path, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                str(SIDEKICK),
                "sync",
                "--repo",
                repo,
                "--root",
                str(root),
                "--link",
                "site",
                "--admin-addr",
                f"127.0.0.1:{self.port}",
                "--log-level",
                "warning",
                *args,
            ],
            env=ENV,
        )
        self.link = root / "site"
        deadline = time.monotonic() + 60
        while self.get("/readyz") != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("sidekick sync did not become ready")
            time.sleep(0.02)

    def get(self, path: str, method: str = "GET") -> int:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=b"" if method == "POST" else None,
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return int(r.status)
        except OSError:
            return 0

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def polls(self) -> float:
        total = 0.0
        for m in re.finditer(
            r'^sidekick_sync_syncs_total\{outcome="\w+"\} (\S+)$', self.metrics(), re.M
        ):
            total += float(m.group(1))
        return total

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime, stime, cutime, cstime are fields 14-17 (1-based); fields[0] is field 3.
        return sum(int(x) for x in fields[11:15]) / CLK_TCK

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def summary(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "median_ms": round(statistics.median(s) * 1000, 1),
        "p90_ms": round(s[min(len(s) - 1, int(len(s) * 0.9))] * 1000, 1),
        "max_ms": round(s[-1] * 1000, 1),
        "n": len(s),
    }


def latency_sidekick(
    work: Path, period: str, seconds: float, samples: int, post: bool
) -> dict[str, float]:
    up = work / f"up-{period}-{post}"
    url = make_upstream(up)
    sk = Sidekick(url, work / f"root-{period}-{post}", "--period", period)
    times = []
    try:
        for i in range(1, samples + 1):
            if not post:
                time.sleep(random.uniform(0, seconds))  # commit at a random phase of the period
            commit(up, f"v{i}\n")
            t0 = time.monotonic()
            if post:
                sk.get("/sync", "POST")
            wait_content(sk.link / "index.html", f"v{i}\n")
            times.append(time.monotonic() - t0)
    finally:
        sk.stop()
    return summary(times)


def latency_naive(work: Path, period: float, samples: int) -> dict[str, float]:
    up = work / "up-naive"
    url = make_upstream(up)
    clone = work / "naive-clone"
    git(work, "clone", "-q", url, str(clone))
    loop = subprocess.Popen(
        ["sh", "-c", f"while :; do git -C {clone} pull -q; sleep {period}; done"], env=ENV
    )
    times = []
    try:
        for i in range(1, samples + 1):
            time.sleep(random.uniform(0, period))
            commit(up, f"v{i}\n")
            times.append(wait_content(clone / "index.html", f"v{i}\n"))
    finally:
        loop.kill()
        loop.wait()
    return summary(times)


def idle_cpu_sidekick(work: Path, seconds: float) -> dict[str, float]:
    url = make_upstream(work / "up-idle")
    sk = Sidekick(url, work / "root-idle", "--period", "100ms")
    try:
        time.sleep(1)
        cpu0, polls0 = sk.cpu(), sk.polls()
        time.sleep(seconds)
        cpu1, polls1 = sk.cpu(), sk.polls()
    finally:
        sk.stop()
    polls = polls1 - polls0
    return {"cpu_ms_per_poll": round((cpu1 - cpu0) / polls * 1000, 2), "polls": polls}


def idle_cpu_naive(work: Path, polls: int) -> dict[str, float]:
    url = make_upstream(work / "up-idle-naive")
    clone = work / "naive-idle"
    git(work, "clone", "-q", url, str(clone))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        ["sh", "-c", f"i=0; while [ $i -lt {polls} ]; do git -C {clone} pull -q; i=$((i+1)); done"],
        env=ENV,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_ms_per_poll": round(cpu / polls * 1000, 2), "polls": polls}


def make_large(path: Path, files: int) -> str:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    stream = [
        "commit refs/heads/main\n",
        "committer B <b@example.com> 1700000000 +0000\n",
        "data 5\nlarge\n",
    ]
    for i in range(files):
        text = f"<p>page {i}</p>\n" * 8
        stream.append(f"M 100644 inline d{i % 200:03d}/page{i}.html\ndata {len(text)}\n{text}\n")
    subprocess.run(
        ["git", "fast-import", "--quiet"],
        cwd=path,
        input="".join(stream),
        text=True,
        check=True,
        env=ENV,
    )
    git(path, "gc", "-q")
    return path.as_uri()


def timed_child(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (the child and its children) of running ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(argv, env=ENV, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def settle(path: Path) -> None:
    """Delete a checkout and flush the filesystem, so the next round does not pay for it."""
    shutil.rmtree(path)
    os.sync()
    time.sleep(1)


def large_repo(work: Path, files: int, rounds: int) -> dict[str, Any]:
    """Alternate sidekick and ``git clone`` into fresh directories; report medians, since
    checking out 20,000 files on a shared machine varies a lot from run to run."""
    url = make_large(work / "large", files)
    sk_wall, sk_cpu, cl_wall, cl_cpu = [], [], [], []
    count = 0
    for r in range(rounds):
        root = work / f"large-root-{r}"
        wall, cpu = timed_child(
            [
                str(SIDEKICK),
                "sync",
                "--repo",
                url,
                "--root",
                str(root),
                "--one-time",
                "--log-level",
                "warning",
            ]
        )
        sk_wall.append(wall)
        sk_cpu.append(cpu)
        count = sum(len(f) for _, _, f in os.walk(root / "large")) - 1  # minus the .git file
        settle(root)
        clone = work / f"large-clone-{r}"
        wall, cpu = timed_child(["git", "clone", "-q", "--depth", "1", url, str(clone)])
        cl_wall.append(wall)
        cl_cpu.append(cpu)
        settle(clone)
    med = statistics.median
    return {
        "files": count,
        "rounds": rounds,
        "sidekick_s": round(med(sk_wall), 2),
        "sidekick_cpu_s": round(med(sk_cpu), 2),
        "git_clone_depth1_s": round(med(cl_wall), 2),
        "git_clone_cpu_s": round(med(cl_cpu), 2),
        "ratio_wall": round(med(sk_wall) / med(cl_wall), 2),
        "sidekick_all_s": [round(x, 2) for x in sk_wall],
        "git_clone_all_s": [round(x, 2) for x in cl_wall],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    samples = 5 if args.quick else 15
    results: dict[str, Any] = {
        "peer": "naive git clone + git pull loop (kubernetes/git-sync is not installable "
        "here: not in Debian or on PyPI, and prebuilt binaries are not fetched)",
        "git": git(REPO, "--version"),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="sidekick-bench-sync-") as tmp:
        work = Path(tmp)
        print(
            "sidekick sync benchmark (peer: the seeds' git clone + git pull loop; "
            "kubernetes/git-sync is not installable here)",
            flush=True,
        )
        lat = {
            "sidekick --period 1s": latency_sidekick(work, "1s", 1.0, samples, post=False),
            "sidekick --period 100ms": latency_sidekick(work, "100ms", 0.1, samples, post=False),
            "sidekick POST /sync": latency_sidekick(work, "1h", 0, samples, post=True),
            "naive git pull loop, sleep 1": latency_naive(work, 1.0, samples),
        }
        results["publish_latency"] = lat
        print("\nPublish latency (commit -> visible through the link)")
        print(f"  {'how':32} {'median ms':>10} {'p90 ms':>8} {'max ms':>8}")
        for name, s in lat.items():
            print(f"  {name:32} {s['median_ms']:>10} {s['p90_ms']:>8} {s['max_ms']:>8}")
        idle_s = 5.0 if args.quick else 15.0
        cpu = {
            "sidekick (ls-remote per poll)": idle_cpu_sidekick(work, idle_s),
            "naive git pull": idle_cpu_naive(work, 20 if args.quick else 60),
        }
        results["idle_cpu"] = cpu
        ratio = cpu["naive git pull"]["cpu_ms_per_poll"] / max(
            cpu["sidekick (ls-remote per poll)"]["cpu_ms_per_poll"], 1e-9
        )
        print("\nCPU per idle poll (including git child processes)")
        for name, c in cpu.items():
            print(f"  {name:32} {c['cpu_ms_per_poll']:>8} ms  ({c['polls']:.0f} polls)")
        print(f"  naive / sidekick: {ratio:.2f}x")
        large = large_repo(work, 5000 if args.quick else 20000, 1 if args.quick else 3)
        results["large_repo"] = large
        print(
            f"\nPublish a {large['files']:,}-file repository at depth 1 "
            f"(median of {large['rounds']})"
        )
        print(
            f"  sidekick sync --one-time   {large['sidekick_s']:>7} s wall, {large['sidekick_cpu_s']} s CPU"
        )
        print(
            f"  git clone --depth 1        {large['git_clone_depth1_s']:>7} s wall, {large['git_clone_cpu_s']} s CPU"
        )
        print(f"  sidekick / git clone: {large['ratio_wall']}x")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"sync-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nResults written to {out.relative_to(REPO)}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
