"""Fixtures for the aggregator-output tests: a protocol test server, sinks, a real rsyslogd.

No Elasticsearch, Loki or OpenTelemetry collector runs here. ``ProtocolServer`` is a real
aiohttp server on 127.0.0.1 that records every request byte for byte and answers with what
the test queues, modelled on the official documentation's examples of each API.
"""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from sidekick.ship.checkpoints import STATE_FILE
from sidekick.ship.deadletter import DEAD_LETTER_FILE
from sidekick.ship.records import Record, Sink
from sidekick.ship.sinks import OutputSpec, create_sink
from tests.conftest import free_port
from tests.ship.helpers import ship_config, shipping, wait_for


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    raw: bytes  # the body as sent, possibly gzip-compressed
    peer_port: int

    @property
    def body(self) -> bytes:
        """The body after undoing ``Content-Encoding: gzip``."""
        if self.headers.get("Content-Encoding") == "gzip":
            return gzip.decompress(self.raw)
        return self.raw


Responder = Callable[[Seen], web.Response | Awaitable[web.Response]]


class ProtocolServer:
    """Records requests; answers each with the next queued reply, else with ``default``."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.queue: list[Responder] = []
        self.default: Responder = lambda seen: web.Response(status=204)
        self.port = 0

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reply(
        self,
        status: int,
        body: bytes | str = b"",
        *,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body

        def respond(seen: Seen) -> web.Response:
            return web.Response(
                status=status, body=data, content_type=content_type, headers=headers
            )

        self.queue.append(respond)

    def reply_with(self, responder: Responder) -> None:
        self.queue.append(responder)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen = Seen(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=request.headers,
            raw=raw,
            peer_port=peer[1] if peer else 0,
        )
        self.requests.append(seen)
        responder = self.queue.pop(0) if self.queue else self.default
        response = responder(seen)
        if inspect.isawaitable(response):
            response = await response
        return response


@asynccontextmanager
async def serve(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[ProtocolServer]:
    """Run a ``ProtocolServer`` on 127.0.0.1 (over TLS when ``ssl_context`` is given)."""
    srv = ProtocolServer()
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    # auto_decompress=False: the test sees the body bytes exactly as the sink sent them.
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    srv.port = sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[ProtocolServer]:
    async with serve() as srv:
        yield srv


@dataclass
class TlsFiles:
    cert: Path  # self-signed for IP 127.0.0.1; also the CA bundle a client must trust
    key: Path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A certificate for 127.0.0.1 made by the real openssl CLI."""
    d = tmp_path_factory.mktemp("tls")
    files = TlsFiles(cert=d / "cert.pem", key=d / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(files.key), "-out", str(files.cert),
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return files


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[..., Sink]]:
    """``make_sink(url, **options)`` through the real registry; closed after the test."""
    sinks: list[Sink] = []

    def make(url: str, **options: Any) -> Sink:
        sink = create_sink(OutputSpec(url=url, options=options))
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.aclose()


def make_records(n: int, **extra: Any) -> list[Record]:
    """Records shaped like the ones the tail source produces."""
    return [
        {
            "@timestamp": f"2026-11-22T10:15:{i % 60:02d}.{i:09d}Z",
            "message": f"line {i}",
            "log.file.path": "/var/log/nginx/access.log",
            "log.offset": i * 100,
            "log.file.id": "2049:1234:9f86d081",
            "host.name": "node-1",
            "k8s.pod.name": "web-0",
            "k8s.namespace.name": "shop",
            "k8s.container.name": "nginx",
            **extra,
        }
        for i in range(n)
    ]


# ---------------------------------------------------------------------------- in the shipper


def committed_offsets(state_dir: Path) -> list[int]:
    """The committed offset of every tailed file in the state file (none before its first write)."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return []
    state = json.loads(path.read_bytes())
    return [e["offset"] for e in state["streams"].values() if "offset" in e]


async def shipped_only_once_answered_properly(
    server: ProtocolServer,
    tmp_path: Path,
    *,
    url: str,
    output: str,
    bad: Responder,
    good: Responder,
    arrived: Callable[[], list[str]],
    lines: int = 3000,
) -> None:
    """Run the real shipper against ``server`` answering ``bad`` (a 2xx that does not confirm
    the batch), then ``good``; check nothing counted as delivered and the checkpoint held
    meanwhile, and that every line arrived afterwards. ``arrived`` lists the lines ``good``
    accepted; ``output`` is the output's name in metrics."""
    fixed = False

    def respond(seen: Seen) -> web.Response | Awaitable[web.Response]:
        return good(seen) if fixed else bad(seen)

    server.default = respond
    log_file = tmp_path / "logs" / "app.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    expected = [f"line {i}" for i in range(lines)]
    log_file.write_text("".join(line + "\n" for line in expected))
    size = log_file.stat().st_size
    state_dir = tmp_path / "state"
    cfg = ship_config(
        inputs=[f"file://{log_file.parent}/*.log"],
        outputs=[url],
        state_dir=str(state_dir),
        retry={"initial": "20ms", "max": "200ms"},
    )
    lag = "sidekick_ship_checkpoint_lag_bytes"
    async with shipping(cfg) as sh:
        # Several attempts were answered badly and the file's committed position was looked
        # at since: it is still at the start.
        await wait_for(
            lambda: len(server.requests) >= 3 and sh.metric(lag, file=str(log_file)) == size,
            timeout=60,
        )
        assert arrived() == []
        assert committed_offsets(state_dir) in ([], [0])
        assert sh.metric("sidekick_ship_records_delivered_total", output=output) == 0
        events = "sidekick_ship_output_events_total"
        assert sh.metric(events, output=output, event="bad_responses") >= 3
        fixed = True
        await wait_for(lambda: set(arrived()) == set(expected), timeout=60)
        await wait_for(lambda: committed_offsets(state_dir) == [size], timeout=60)
        await wait_for(lambda: sh.metric(lag, file=str(log_file)) == 0, timeout=60)
        assert sh.metric("sidekick_ship_records_dead_lettered_total", output=output) == 0
    assert not (state_dir / DEAD_LETTER_FILE).exists()


# ---------------------------------------------------------------------------- rsyslog

RSYSLOGD = "/usr/sbin/rsyslogd"

# One line per message: the fields the syslog tests check, separated by "|". UDP is lossy by
# design: the receive buffer is made large enough that a test burst is not dropped by the kernel.
RSYSLOG_CONF = """\
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imtcp")
module(load="imudp")
template(name="fields" type="string"
         string="%app-name%|%syslogseverity%|%syslogfacility%|%hostname%|%timereported:::date-rfc3339%|%structured-data%|%msg%\\n")
input(type="imtcp" address="127.0.0.1" port="{port}")
input(type="imudp" address="127.0.0.1" port="{port}" rcvbufSize="8m")
action(type="omfile" file="{out}" template="fields")
"""


@dataclass
class SyslogLine:
    app_name: str
    severity: int
    facility: int
    hostname: str
    timestamp: str
    structured_data: str
    msg: str


class Rsyslog:
    """A private rsyslogd (never the system daemon) listening on 127.0.0.1:port, TCP and UDP."""

    def __init__(self, directory: Path, port: int) -> None:
        self.dir = directory
        self.port = port
        self.out = directory / "out.log"
        self.conf = directory / "rsyslog.conf"
        self.pidfile = directory / "rsyslogd.pid"
        self.conf.write_text(RSYSLOG_CONF.format(work=directory, port=port, out=self.out))
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        with (self.dir / "rsyslogd.stderr").open("ab") as stderr:
            return subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    async def start(self) -> None:
        self.proc = self._spawn()
        deadline = time.monotonic() + 15
        while not (self._tcp_listening() and self._udp_bound()):
            if self.proc.poll() is not None:
                err = (self.dir / "rsyslogd.stderr").read_text()
                raise RuntimeError(f"rsyslogd exited with {self.proc.returncode}: {err}")
            if time.monotonic() > deadline:
                raise RuntimeError("rsyslogd did not start listening within 15s")
            await asyncio.sleep(0.05)

    def _tcp_listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def _udp_bound(self) -> bool:
        # Read the kernel's socket table rather than probing with bind(), which could steal
        # the port from rsyslogd in the instant before it binds.
        wanted = f"0100007F:{self.port:04X}"
        table = Path("/proc/net/udp").read_text().splitlines()[1:]
        return any(line.split()[1] == wanted for line in table)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    def lines(self) -> list[SyslogLine]:
        if not self.out.exists():
            return []
        out = []
        data = self.out.read_text(encoding="utf-8", errors="replace")
        # rsyslog may be mid-write: a last line without its newline is not complete yet.
        complete = data[: data.rfind("\n") + 1]
        for text in complete.splitlines():
            app, sev, fac, host, ts, sd, msg = text.split("|", 6)
            out.append(SyslogLine(app, int(sev), int(fac), host, ts, sd, msg))
        return out

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[SyslogLine]:
        """The output lines, once at least ``count`` have arrived (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            await asyncio.sleep(0.05)


@pytest.fixture
async def rsyslog(tmp_path: Path) -> AsyncIterator[Rsyslog]:
    directory = tmp_path / "rsyslog"
    directory.mkdir()
    daemon = Rsyslog(directory, free_port())
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()
