"""Ingest under abuse: idle and slow connections, floods, broken bytes; every answer counted.

The connection tests run the real ``sidekick ship`` CLI with short timeouts and talk to it
over real sockets on 127.0.0.1; body decoding is also checked in-process and fuzzed.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import resource
import selectors
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SIDEKICK, free_port
from tests.ship.helpers import ShipperProcess, read_ndjson, wait_for_sync
from tests.ship.sources.conftest import run_ingest
from tests.ship.sources.test_http_fuzz import ServerThread

NDJSON = {"Content-Type": "application/x-ndjson"}
# The shipper runs with the open-file limit of a common container default (soft and hard).
SHIPPER_NOFILE = 1024


class Shipper(ShipperProcess):
    """``sidekick ship`` with an ingest input, a file output and a limited descriptor table."""

    def __init__(self, tmp_path: Path, *flags: str, nofile: int = SHIPPER_NOFILE) -> None:
        self.nofile = nofile
        self.ingest_port = free_port()
        self.out = tmp_path / "out.ndjson"
        super().__init__(
            [
                "--input",
                f"http://127.0.0.1:{self.ingest_port}",
                "--output",
                f"file://{self.out}",
                "--state-dir",
                str(tmp_path / "state"),
                *flags,
            ],
            tmp_path / "shipper.log",
        )

    def start(self) -> Shipper:
        # Hard and soft: the shipper raises its soft limit to the hard one at start.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        n = self.nofile if hard == resource.RLIM_INFINITY else min(self.nofile, hard)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*SIDEKICK, "ship", *self.args, "--admin-addr", f"127.0.0.1:{self.port}"],
                stdout=log,
                stderr=log,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)),
            )
        self.wait_ready()
        return self

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.ingest_port), timeout=30)

    def post(self, body: bytes, headers: dict[str, str] = NDJSON) -> tuple[int, Any, float]:
        """POST with urllib; (status, answer, seconds taken)."""
        url = f"http://127.0.0.1:{self.ingest_port}/v1/logs"
        started = time.monotonic()
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, body, headers), timeout=30
            ) as r:
                return r.status, json.load(r), time.monotonic() - started
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc), time.monotonic() - started

    def closed(self, reason: str) -> float:
        return self.metric("sidekick_ship_ingest_connections_closed_total", reason=reason)

    def answered(self, code: int) -> float:
        return self.metric("sidekick_ship_ingest_requests_total", code=str(code))


@pytest.fixture
def shippers() -> Iterator[list[Shipper]]:
    started: list[Shipper] = []
    yield started
    for s in started:
        s.stop_quietly()


@pytest.fixture
def many_files() -> None:
    """Let this test process hold over a thousand sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_closed(sockets: list[socket.socket], deadline: float) -> dict[socket.socket, float]:
    """Wait until the server has closed each socket; return when each was seen closed."""
    closed: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as sel:
        for s in sockets:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        while len(closed) < len(sockets) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    data = s.recv(4096)
                except ConnectionError:
                    data = b""
                if not data:
                    closed[s] = time.monotonic()
                    sel.unregister(s)
    return closed


def is_open(sock: socket.socket) -> bool:
    """Whether the server still holds ``sock`` open (it has sent nothing and not closed it)."""
    readable, _, _ = selectors.select.select([sock], [], [], 0)
    if not readable:
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except ConnectionError:
        return False


def log_size(shipper: Shipper) -> int:
    return shipper.log_path.stat().st_size


def assert_quiet_log(shipper: Shipper) -> None:
    text = shipper.log_path.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert "sekrit" not in text


# -- idle and slow connections -------------------------------------------------------------


def test_a_thousand_idle_connections_neither_block_posts_nor_flood_the_log(
    tmp_path: Path, shippers: list[Shipper], many_files: None
) -> None:
    header_timeout = 6.0
    sh = Shipper(tmp_path, "--ingest-header-timeout", f"{header_timeout}s")
    shippers.append(sh.start())
    size_at_start = log_size(sh)

    idle: list[socket.socket] = []
    opened_at: dict[socket.socket, float] = {}
    try:
        for _ in range(1100):
            s = sh.connect()
            opened_at[s] = time.monotonic()
            idle.append(s)
        # The descriptor limit of 1024 holds 480 connections (half, less 32); all are taken.
        wait_for_sync(lambda: sh.metric("sidekick_ship_ingest_connections") == 480, 15)

        times = []
        for n in range(20):
            status, answer, took = sh.post(b'{"n":%d}\n' % n)
            assert (status, answer) == (202, {"accepted": 1})
            times.append(took)
        assert max(times) < 5.0, times

        closed = wait_closed(idle, time.monotonic() + header_timeout + 60)
        assert len(closed) == len(idle)
        early = [s for s in idle if closed[s] - opened_at[s] < header_timeout]
        late = [s for s in idle if closed[s] - opened_at[s] >= header_timeout]
    finally:
        for s in idle:
            s.close()

    evicted, timed_out = sh.closed("evicted"), sh.closed("header_timeout")
    # Each connection beyond the limit closed the one idle longest; the rest timed out.
    assert evicted + timed_out == 1100
    assert evicted >= 1100 - 480
    assert timed_out >= 1
    # None was closed before its header timeout except by eviction.
    assert len(early) <= evicted and len(late) >= timed_out
    wait_for_sync(lambda: len(read_ndjson(sh.out)) == 20, 30)
    grown = log_size(sh) - size_at_start
    assert grown < 50 * 1024, grown
    assert_quiet_log(sh)
    print(
        f"\n1100 idle connections: POSTs {min(times):.3f}-{max(times):.3f}s, "
        f"{evicted:.0f} evicted, {timed_out:.0f} closed by the header timeout, "
        f"log grew {grown} bytes"
    )


def test_out_of_descriptors_new_connections_are_closed_at_once_and_logged_once(
    tmp_path: Path, shippers: list[Shipper], many_files: None
) -> None:
    # 64 descriptors: the shipper itself uses a few dozen, so a burst of connections runs
    # the process out of them before any reaches the connection limit.
    sh = Shipper(tmp_path, nofile=64)
    shippers.append(sh.start())
    burst = []
    try:
        for _ in range(300):
            burst.append(sh.connect())
        closed = wait_closed(burst, time.monotonic() + 60)
        assert len(closed) == len(burst)
    finally:
        for s in burst:
            s.close()
    assert sh.closed("no_descriptors") >= 1
    status, answer, _took = sh.post(b'{"after":"burst"}\n')
    assert (status, answer) == (202, {"accepted": 1})
    text = sh.log_path.read_text()
    assert "out of system resource" not in text
    assert text.count("out of file descriptors") == 1
    assert_quiet_log(sh)
    print(f"\n300 connections on 64 descriptors: {sh.closed('no_descriptors'):.0f} shed at accept")


def test_slowloris_headers_are_cut_at_the_header_timeout(
    tmp_path: Path, shippers: list[Shipper]
) -> None:
    header_timeout = 3.0
    sh = Shipper(tmp_path, "--ingest-header-timeout", f"{header_timeout}s")
    shippers.append(sh.start())
    request = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
    with sh.connect() as s:
        started = time.monotonic()
        sent = 0
        while is_open(s) and time.monotonic() - started < header_timeout + 60:
            try:
                s.sendall(request[sent % len(request) :][:1])
            except ConnectionError:
                break
            sent += 1
            time.sleep(1.0)
        took = time.monotonic() - started
    assert header_timeout <= took < header_timeout + 30, took
    assert sent < header_timeout + 30
    assert sh.closed("header_timeout") == 1
    print(f"\nslowloris: closed after {took:.1f}s and {sent} bytes")
    assert_quiet_log(sh)


def test_idle_keepalive_connection_is_closed_at_the_keepalive_timeout_not_before(
    tmp_path: Path, shippers: list[Shipper]
) -> None:
    sh = Shipper(tmp_path, "--ingest-header-timeout", "1s", "--ingest-keepalive-timeout", "6s")
    shippers.append(sh.start())
    conn = http.client.HTTPConnection("127.0.0.1", sh.ingest_port, timeout=30)
    conn.request("POST", "/v1/logs", body=b'{"a":1}\n', headers=NDJSON)
    resp = conn.getresponse()
    assert resp.status == 202
    resp.read()
    answered = time.monotonic()
    assert conn.sock is not None
    sock: socket.socket = conn.sock
    # Past the header timeout: an idle kept-alive connection is under the keep-alive one.
    time.sleep(2.5)
    assert is_open(sock)
    closed = wait_closed([sock], answered + 60)
    assert sock in closed
    # The server arms the timer as it answers, a moment before the client has read it.
    assert 5.5 <= closed[sock] - answered < 40
    conn.close()
    assert sh.closed("idle_timeout") == 1
    assert sh.closed("header_timeout") == 0


def test_body_that_stalls_gets_408_after_the_configured_body_timeout(
    tmp_path: Path, shippers: list[Shipper]
) -> None:
    sh = Shipper(tmp_path, "--ingest-body-timeout", "2s")
    shippers.append(sh.start())
    with sh.connect() as s:
        s.sendall(
            b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            b'Content-Length: 100\r\n\r\n{"a":'
        )
        started = time.monotonic()
        answer = s.makefile("rb").read()
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert 2.0 <= took < 30
    assert sh.answered(408) == 1


def test_beyond_the_limit_a_new_connection_evicts_the_longest_idle(
    tmp_path: Path, shippers: list[Shipper]
) -> None:
    sh = Shipper(tmp_path, "--ingest-max-connections", "2", "--ingest-header-timeout", "60s")
    shippers.append(sh.start())
    with sh.connect() as first, sh.connect() as second:
        wait_for_sync(lambda: sh.metric("sidekick_ship_ingest_connections") == 2)
        status, answer, _took = sh.post(b'{"a":1}\n')
        assert (status, answer) == (202, {"accepted": 1})
        assert first in wait_closed([first], time.monotonic() + 30)
        assert is_open(second)
    assert sh.closed("evicted") == 1


def test_beyond_the_limit_with_every_connection_busy_is_503_with_retry_after(
    tmp_path: Path, shippers: list[Shipper]
) -> None:
    sh = Shipper(tmp_path, "--ingest-max-connections", "2")
    shippers.append(sh.start())
    head = (
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
        b"Connection: close\r\nContent-Length: 8\r\n\r\n"
    )
    busy = [sh.connect(), sh.connect()]
    try:
        for s in busy:
            s.sendall(head + b'{"a"')  # half a body: the request is under way
        wait_for_sync(lambda: sh.metric("sidekick_ship_ingest_connections") == 2)
        time.sleep(1.5)  # let both requests reach the handler (0.5 s fell short once, loaded)
        status, answer, _took = sh.post(b'{"b":2}\n')
        assert status == 503
        assert "limit of 2 connections" in answer["error"]
        with sh.connect() as s:
            refusal = s.makefile("rb").read()
        assert b"Retry-After: 5" in refusal
        for s in busy:
            s.sendall(b":1}\n")
            assert s.makefile("rb").read().startswith(b"HTTP/1.1 202")
    finally:
        for s in busy:
            s.close()
    assert sh.closed("refused") == 2
    assert sh.answered(503) == 2
    assert sh.answered(202) == 2
    assert_quiet_log(sh)


def test_connection_limits_are_checked_at_start(tmp_path: Path) -> None:
    for flags, words in [
        (["--ingest-max-connections", "0"], ["ingest.max_connections", "0", "at least 1"]),
        (["--ingest-header-timeout", "0s"], ["ingest.header_timeout", "above 0"]),
        (["--ingest-keepalive-timeout", "soon"], ["ingest.keepalive_timeout", "soon"]),
    ]:
        result = subprocess.run(
            [
                *SIDEKICK,
                "ship",
                "--input",
                f"http://127.0.0.1:{free_port()}",
                "--output",
                "stdout:",
                "--state-dir",
                str(tmp_path / "state"),
                "--admin-addr",
                "127.0.0.1:0",
                *flags,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        [error] = [ln for ln in result.stderr.splitlines() if ln.startswith("sidekick: error:")]
        for word in words:
            assert word in error, error


# -- answers aiohttp gives by itself ---------------------------------------------------------


def test_malformed_http_is_a_counted_400_without_traceback_or_request_bytes_in_the_log(
    tmp_path: Path, shippers: list[Shipper]
) -> None:
    sh = Shipper(tmp_path)
    shippers.append(sh.start())
    bad = [
        b"POST /v1/logs HTTP/1.1\r\nAuthorization: Bearer sekrit\x01\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS to the plain-HTTP port
        b"POST /v1/logs HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]
    for raw in bad:
        with sh.connect() as s:
            s.sendall(raw)
            answer = s.makefile("rb").read()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 400") or head.startswith(b"HTTP/1.1 400"), answer
        assert "send a well-formed HTTP/1.1 request" in msgspec.json.decode(body)["error"]
        assert b"sekrit" not in body
    assert sh.answered(400) == 3
    assert_quiet_log(sh)
    assert sh.log().count("not valid HTTP") == 1  # once per interval, with a count later


def test_client_leaving_mid_body_is_counted_499_and_not_logged(
    tmp_path: Path, shippers: list[Shipper]
) -> None:
    sh = Shipper(tmp_path)
    shippers.append(sh.start())
    size_before = log_size(sh)
    for _ in range(20):
        with sh.connect() as s:
            s.sendall(
                b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                b'Content-Length: 100\r\n\r\n{"a":'
            )
            wait_for_sync(lambda: sh.metric("sidekick_ship_ingest_connections") == 1)
    wait_for_sync(lambda: sh.answered(499) == 20, 30)
    assert log_size(sh) == size_before
    assert sh.answered(500) == 0


def test_expect_100_continue_is_answered_only_for_a_body_that_is_wanted(
    tmp_path: Path, shippers: list[Shipper]
) -> None:
    # aiohttp answered 100 Continue as soon as the headers were in: a client announcing 10 GB
    # (or a content type that is refused) was invited to send the body, then refused.
    sh = Shipper(tmp_path, "--ingest-max-body-bytes", "1MiB")
    shippers.append(sh.start())
    head = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
    refused = [
        (b"Content-Type: application/x-ndjson\r\nContent-Length: 10000000000\r\n", b" 413 "),
        (b"Content-Type: image/png\r\nContent-Length: 10\r\n", b" 415 "),
    ]
    for headers, status in refused:
        with sh.connect() as s:
            s.sendall(head + headers + b"\r\n")
            first = s.makefile("rb").readline()
        assert status in first and b"100" not in first, first
    # A body that is wanted is invited, then taken.
    with sh.connect() as s:
        s.sendall(head + b"Content-Type: application/x-ndjson\r\nContent-Length: 8\r\n\r\n")
        answers = s.makefile("rb")
        assert answers.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert answers.readline() == b"\r\n"
        s.sendall(b'{"a":1}\n')
        assert answers.readline().startswith(b"HTTP/1.1 202")

    async def expecting() -> int:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{sh.ingest_port}/v1/logs"
            async with http.post(url, data=b'{"b":2}\n', headers=NDJSON, expect100=True) as r:
                return r.status

    assert asyncio.run(expecting()) == 202
    wait_for_sync(lambda: len(read_ndjson(sh.out)) == 2, 30)
    assert sh.answered(413) == 1 and sh.answered(415) == 1
    assert_quiet_log(sh)


async def raw_status(port: int, headers: bytes) -> int:
    """POST a small NDJSON body with raw extra header bytes; the answer's status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            b"Content-Length: 8\r\nConnection: close\r\n" + headers + b'\r\n{"a":1}\n'
        )
        status_line = await reader.readline()
        await reader.read()
        return int(status_line.split()[1])
    finally:
        writer.close()


async def test_every_answer_is_counted_with_its_code(state_dir: Path) -> None:
    token = state_dir.parent / "token"
    token.write_text("right\n")
    async with run_ingest(
        state_dir, token_file=str(token), max_body_bytes=100, max_records_per_request=2
    ) as ing:
        auth = {"Authorization": "Bearer right"}
        session, url = ing.session, ing.url
        answers = [
            (await ing.post(b'{"a":1}\n', **auth))[0],
            (await ing.post(b"{", **auth))[0],
            (await ing.post(b'{"a":1}\n', Authorization="Bearer wrong"))[0],
            await raw_status(ing.source.port, b"Authorization: Bearer \xff\r\n"),
            (await ing.post(b"{}\n{}\n{}\n", **auth))[0],
            (await ing.post(b"x" * 200, **auth))[0],
            (await ing.post(b"{}", "application/xml", **auth))[0],
        ]
        async with session.put(url, headers=auth) as resp:
            answers.append(resp.status)
        async with session.post(url.replace("/v1/logs", "/other")) as resp:
            answers.append(resp.status)
        assert answers == [202, 400, 401, 401, 413, 413, 415, 405, 404]
        registry = ing.source.ctx.metrics.registry
        for code in set(answers):
            counted = registry.get_sample_value(
                "sidekick_ship_ingest_requests_total", {"code": str(code)}
            )
            assert counted == answers.count(code), code


async def test_a_token_file_gone_unreadable_is_logged_once_not_per_request(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = state_dir.parent / "token"
    token.write_text("right\n")
    async with run_ingest(state_dir, token_file=str(token)) as ing:
        token.unlink()
        for _ in range(5):
            status, _answer, _ = await ing.post(b'{"a":1}\n', Authorization="Bearer right")
            assert status == 202  # the tokens read before still hold
    warnings = [r for r in caplog.records if "Cannot re-read token file" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_failing_handler_is_a_counted_500_logged_once_with_its_traceback(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug cannot be provoked through the real endpoint: a route that fails stands in."""
    async with run_ingest(state_dir) as ing:
        server = ing.source.server
        app = web.Application(middlewares=[server._count])

        async def broken(request: web.Request) -> web.Response:
            raise RuntimeError("a bug")

        app.router.add_post("/broken", broken)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.create_server(("127.0.0.1", 0))
        await server.connections.site(runner, sock).start()
        try:
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/broken"
            for _ in range(3):
                async with ing.session.post(url, data=b"{}") as resp:
                    assert resp.status == 500
                    assert await resp.json() == {
                        "error": "the request failed unexpectedly; retry later"
                    }
        finally:
            await runner.cleanup()
        registry = ing.source.ctx.metrics.registry
        assert (
            registry.get_sample_value("sidekick_ship_ingest_requests_total", {"code": "500"}) == 3
        )
    lines = [r.getMessage() for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(lines) == 1
    assert "RuntimeError: a bug" in lines[0] and "Traceback" in lines[0]


# -- bytes that are not UTF-8 ----------------------------------------------------------------

BAD_UTF8 = [
    ("application/x-ndjson", b'{"ok":"yes"}\n{"message":"\xff\xfe"}\n', "line 2", "0xff"),
    ("application/json", b'[{"ok":"yes"},\n {"message":"caf\xe9"}]', "line 2", "0xe9"),
    ("application/json; charset=latin-1", b'{"message":"caf\xe9"}', "line 1", "0xe9"),
    ("application/x-ndjson", b'{"k\xc3":1}', "line 1", "0xc3"),
]


@pytest.mark.parametrize(("content_type", "body", "line", "byte"), BAD_UTF8)
async def test_invalid_utf8_in_a_json_string_is_a_400_naming_the_line(
    state_dir: Path,
    caplog: pytest.LogCaptureFixture,
    content_type: str,
    body: bytes,
    line: str,
    byte: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(body, content_type)
        assert status == 400, answer
        assert answer["error"].startswith("malformed ")
        assert line in answer["error"] and byte in answer["error"]
        assert "UTF-8" in answer["error"]
        registry = ing.source.ctx.metrics.registry
        assert registry.get_sample_value("sidekick_ship_ingest_requests_total", {"code": "400"})
        # Nothing of the request was stored.
        assert ing.source.spool.used_bytes == 0
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


@pytest.mark.parametrize("charset", ["unicode_escape", "raw_unicode_escape", "utf-7"])
async def test_text_charset_that_decodes_to_surrogates_is_stored_with_replacements(
    state_dir: Path, charset: str
) -> None:
    body = b"\\ud800 after\n" if "escape" in charset else b"+2D3- after\n"
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(body, f"text/plain; charset={charset}")
        assert (status, answer) == (202, {"accepted": 1})
        [record] = await ing.wait_records(1)
    assert record["message"].endswith(" after")
    assert "\ufffd" in record["message"]


def test_invalid_utf8_through_the_cli_is_a_400_and_no_traceback(
    tmp_path: Path, shippers: list[Shipper]
) -> None:
    sh = Shipper(tmp_path)
    shippers.append(sh.start())
    status, answer, _took = sh.post(b'{"message":"\xff\xfe"}\n')
    assert status == 400
    assert answer == {
        "error": "malformed NDJSON at line 1: byte 0xff at column 13 is not UTF-8; "
        "send the body as UTF-8"
    }
    assert sh.answered(400) == 1
    assert sh.answered(500) == 0
    assert_quiet_log(sh)


# -- fuzz: bytes inside JSON strings -----------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(tmp_path_factory.mktemp("abuse-fuzz") / "state") as srv:
        yield srv


@st.composite
def records_with_raw_bytes(draw: st.DrawFn) -> tuple[str, bytes]:
    """JSON or NDJSON whose string contents (keys too) are arbitrary bytes."""
    strings = st.binary(max_size=12).map(lambda b: b'"' + b.replace(b'"', b"") + b'"')
    record = st.lists(st.tuples(strings, strings), min_size=1, max_size=3).map(
        lambda kvs: b"{" + b",".join(k + b":" + v for k, v in kvs) + b"}"
    )
    records = draw(st.lists(record, min_size=1, max_size=6))
    if draw(st.booleans()):
        return "application/x-ndjson", b"\n".join(records) + b"\n"
    return "application/json", b"[" + b",\n".join(records) + b"]"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=records_with_raw_bytes())
def test_raw_bytes_in_json_strings_never_get_a_5xx(
    fuzz_server: ServerThread, case: tuple[str, bytes]
) -> None:
    content_type, body = case
    status, answer = fuzz_server.post(body, {"Content-Type": content_type})
    assert status in (202, 400, 413), (status, answer)
    if status == 400:
        assert "line " in answer["error"] or "item " in answer["error"], answer


def test_no_answer_of_the_fuzzed_server_was_a_500(fuzz_server: ServerThread) -> None:
    registry = fuzz_server.ing.source.ctx.metrics.registry
    assert not registry.get_sample_value("sidekick_ship_ingest_requests_total", {"code": "500"})
    status, _answer = fuzz_server.post(b'{"after":"fuzz"}\n', NDJSON)
    assert status == 202
