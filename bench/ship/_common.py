"""Pieces the ship benchmarks share: input generation, the peers' configs, process statistics,
output counters and a counting network sink.

Peers run from Debian's packages with their own temporary configs, pid files and work
directories, never as the system daemons: rsyslog from /usr/sbin/rsyslogd, and syslog-ng
unpacked privately from ``apt-get download syslog-ng-core`` (Debian's syslog-ng-core
conflicts with rsyslog, so it is not installed). Everything lives under ``bench/.work/``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
WORK = BENCH / ".work"
RESULTS = BENCH / "results"
PYTHON_BIN = REPO / ".venv" / "bin"
SIDEKICK = PYTHON_BIN / "sidekick"
RSYSLOGD = Path("/usr/sbin/rsyslogd")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

# ---------------------------------------------------------------------------------------------
# Input


_PATHS = ("/", "/index.html", "/api/v1/items", "/api/v1/items/{n}", "/static/app.{n}.js", "/login")
_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 Safari/605.1",
    "curl/8.5.0",
    "kube-probe/1.29",
)
_REFERERS = ("-", "-", "https://www.example.com/", "https://www.example.com/shop/cart")
_STATUSES = (200, 200, 200, 200, 200, 301, 304, 404, 500)


def access_line(i: int, second: int, extra: str = "") -> str:
    """One nginx ``combined`` line (~150 bytes), varied deterministically by ``i``."""
    h = (i * 2654435761) & 0xFFFFFFFF
    path = _PATHS[h % len(_PATHS)].format(n=h % 9973)
    query = f"?page={h % 50}" if h & 1 else ""
    ts = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
    return (
        f"10.{h >> 24}.{(h >> 16) & 255}.{(h >> 8) & 255} - - [{ts}] "
        f'"GET {path}{query} HTTP/1.1" {_STATUSES[h % len(_STATUSES)]} {h % 65536} '
        f'"{_REFERERS[(h >> 8) % len(_REFERERS)]}" "{_AGENTS[(h >> 4) % len(_AGENTS)]}{extra}"'
    )


def generate_access_log(lines: int) -> Path:
    """``bench/.work/input-N/access.log`` with ``lines`` lines, reused when already there."""
    folder = WORK / f"input-v2-{lines}"  # bump when access_line changes
    path = folder / "access.log"
    done = folder / ".complete"
    if done.exists() and path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    print(f"Generating {lines:,} nginx access lines in {path} ...", flush=True)
    start = 1_763_800_000  # a fixed day, 2,000 requests per second
    with path.open("w", encoding="ascii") as f:
        batch: list[str] = []
        for i in range(lines):
            batch.append(access_line(i, start + i // 2000))
            if len(batch) == 20_000:
                f.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            f.write("\n".join(batch) + "\n")
    done.touch()
    return path


# ---------------------------------------------------------------------------------------------
# Process statistics


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its reaped children, from /proc/PID/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14-17.
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set size) of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in RUNNING:
        RUNNING.remove(proc)


# ---------------------------------------------------------------------------------------------
# Counting what was delivered


class FileLines:
    """Counts the newline-terminated lines in a growing file, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._f: Any = None

    def count(self) -> int:
        if self._f is None:
            try:
                self._f = self.path.open("rb")
            except FileNotFoundError:
                return 0
        while chunk := self._f.read(8 * MIB):
            self.lines += chunk.count(b"\n")
        return self.lines

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def wait_for_lines(counters: list[FileLines], want: int, timeout: float = 180.0) -> int:
    """Wait until the files hold ``want`` lines in all, or ``timeout`` seconds pass; the count."""
    deadline = time.monotonic() + timeout
    while sum(c.count() for c in counters) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    return sum(c.count() for c in counters)


class CountingSink:
    """A TCP line counter and a minimal HTTP/1.1 NDJSON endpoint, on 127.0.0.1, in a thread.

    The HTTP side answers every POST ``200`` after counting its lines (gzip bodies are
    decompressed), keeping the connection open, which is all a shipper's HTTP output needs.
    """

    def __init__(self) -> None:
        self.lines = 0
        self.tcp_port = 0
        self.http_port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="counting sink", daemon=True)

    def __enter__(self) -> CountingSink:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def reset(self) -> None:
        self.lines = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        tcp = self._loop.run_until_complete(asyncio.start_server(self._tcp, "127.0.0.1", 0))
        http = self._loop.run_until_complete(asyncio.start_server(self._http, "127.0.0.1", 0))
        self.tcp_port = tcp.sockets[0].getsockname()[1]
        self.http_port = http.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(4 * MIB):
                self.lines += chunk.count(b"\n")
        except ConnectionError:
            pass
        writer.close()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    parts = []
                    while size := int((await reader.readuntil(b"\r\n")).strip() or b"0", 16):
                        parts.append(await reader.readexactly(size))
                        await reader.readexactly(2)
                    await reader.readuntil(b"\r\n")
                    body = b"".join(parts)
                else:
                    body = await reader.readexactly(int(headers.get("content-length", "0")))
                if headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                self.lines += body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


# ---------------------------------------------------------------------------------------------
# The shippers under test


@dataclass
class Shipper:
    """How to start one shipper reading ``input_path`` and writing to ``output``."""

    name: str  # e.g. "sidekick raw", "rsyslog"
    argv: list[str]
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))


def sidekick(workdir: Path, input_path: Path, output: str, parser: str = "raw") -> Shipper:
    state = workdir / "state"
    state.mkdir(parents=True, exist_ok=True)
    argv = [
        str(SIDEKICK),
        "ship",
        "--input",
        f"file://{input_path.parent}/*.log",
        "--output",
        output,
        "--parser",
        parser,
        "--state-dir",
        str(state),
        "--admin-addr",
        "127.0.0.1:0",
        "--log-level",
        "warning",
    ]
    return Shipper(f"sidekick {parser}", argv)


def rsyslog(workdir: Path, input_path: Path, output: tuple[str, Any]) -> Shipper:
    """rsyslogd with imfile (inotify) and omfile or omfwd (TCP, one line per message)."""
    (workdir / "rsyslog").mkdir(parents=True, exist_ok=True)
    kind, target = output
    if kind == "file":
        action = f'action(type="omfile" file="{target}" template="raw" ioBufferSize="256k")'
    else:
        action = (
            f'action(type="omfwd" target="127.0.0.1" port="{target}" protocol="tcp" '
            'template="raw" TCP_Framing="traditional")'
        )
    conf = workdir / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{workdir / "rsyslog"}")\n'
        'module(load="imfile" mode="inotify")\n'
        'template(name="raw" type="string" string="%msg%\\n")\n'
        f'ruleset(name="out") {{\n  {action}\n}}\n'
        f'input(type="imfile" file="{input_path}" tag="bench" ruleset="out")\n'
    )
    argv = [str(RSYSLOGD), "-n", "-f", str(conf), "-i", str(workdir / "rsyslog.pid")]
    return Shipper("rsyslog", argv)


@dataclass
class SyslogNg:
    binary: Path
    module_path: Path
    env: dict[str, str]


def find_syslog_ng() -> tuple[SyslogNg | None, str]:
    """syslog-ng unpacked privately under bench/.work, or ``None`` and the reason."""
    root = WORK / "syslog-ng" / "root"
    binary = root / "usr" / "sbin" / "syslog-ng"
    if not binary.exists():
        download = WORK / "syslog-ng"
        download.mkdir(parents=True, exist_ok=True)
        if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
            return None, "apt-get/dpkg are not available to fetch syslog-ng-core"
        got = subprocess.run(
            ["apt-get", "download", "syslog-ng-core"], cwd=download, capture_output=True, text=True
        )
        debs = sorted(download.glob("syslog-ng-core_*.deb"))
        if not debs:
            return None, f"apt-get download syslog-ng-core failed: {got.stderr.strip()[-300:]}"
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(root)], check=True)
    libdir = root / "usr" / "lib" / "syslog-ng"
    modules = sorted(p for p in libdir.iterdir() if p.is_dir() and p.name[0].isdigit())
    if not modules:
        return None, f"no module directory under {libdir}"
    env = dict(os.environ, LD_LIBRARY_PATH=str(libdir))
    ldd = subprocess.run(["ldd", str(binary)], env=env, capture_output=True, text=True)
    missing = [ln.split()[0] for ln in ldd.stdout.splitlines() if "not found" in ln]
    if missing:
        return None, (
            f"syslog-ng needs {', '.join(missing)}; install them with apt-get "
            "(e.g. apt-get install libivykis0 libnet1)"
        )
    return SyslogNg(binary, modules[-1], env), ""


def syslog_ng(ng: SyslogNg, workdir: Path, input_path: Path, output: tuple[str, Any]) -> Shipper:
    """syslog-ng with a file() source (no parsing) and file() or network() TCP."""
    workdir.mkdir(parents=True, exist_ok=True)
    kind, target = output
    if kind == "file":
        dest = f'file("{target}" template("${{MSG}}\\n"))'
    else:
        dest = f'network("127.0.0.1" port({target}) transport("tcp") template("${{MSG}}\\n"))'
    version = ng.module_path.name
    conf = workdir / "syslog-ng.conf"
    conf.write_text(
        f"@version: {version}\n"
        "options { stats-freq(0); keep-hostname(yes); time-reopen(1); };\n"
        # file() polling at 20 Hz at EOF: wildcard-file() with inotify delivered only ~30k
        # lines/s to a file destination here, file() ~250k lines/s.
        f'source s_in {{ file("{input_path}" follow-freq(0.05) flags(no-parse) '
        "log-iw-size(10000) log-fetch-limit(1000)); };\n"
        f"destination d_out {{ {dest}; }};\n"
        # Without flow-control syslog-ng drops what overflows the destination's queue (it lost
        # ~4% of the lines to the network here); with it, the source waits, as a shipper must.
        "log { source(s_in); destination(d_out); flags(flow-control); };\n"
    )
    argv = [
        str(ng.binary),
        "-F",
        "-e",  # internal messages (connection errors) to stderr, i.e. shipper.log
        "--no-caps",
        "-f",
        str(conf),
        f"--module-path={ng.module_path}",
        f"--persist-file={workdir / 'syslog-ng.persist'}",
        f"--pidfile={workdir / 'syslog-ng.pid'}",
        f"--control={workdir / 'syslog-ng.ctl'}",
    ]
    return Shipper("syslog-ng", argv, ng.env)


# ---------------------------------------------------------------------------------------------
# Running and reporting


# Shippers started and not yet stopped; stop_all() ends them if a benchmark is interrupted.
RUNNING: list[subprocess.Popen[bytes]] = []


def start(shipper: Shipper, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            shipper.argv, stdout=out, stderr=subprocess.STDOUT, env=shipper.env, cwd=log.parent
        )
    RUNNING.append(proc)
    return proc


def stop_all() -> None:
    for proc in list(RUNNING):
        stop(proc, timeout=10)


def wait_for(
    count: Callable[[], int], target: int, proc: subprocess.Popen[bytes], timeout: float
) -> str:
    """Poll ``count`` until it reaches ``target``; "ok", "exited N" or "timeout"."""
    deadline = time.monotonic() + timeout
    while count() < target:
        if proc.poll() is not None:
            return f"exited {proc.returncode}"
        if time.monotonic() > deadline:
            return "timeout"
        time.sleep(0.01)
    return "ok"


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def host_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "rsyslog": subprocess.run(
            [str(RSYSLOGD), "-v"], capture_output=True, text=True
        ).stdout.split("\n")[0],
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(
                (c.ljust(w) if i == 0 else c.rjust(w))
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)
