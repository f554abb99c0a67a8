import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from sidekick.core import admin
from sidekick.core.addr import HostPort
from sidekick.core.admin import AdminServer


async def test_admin_serves_health_readiness_and_metrics() -> None:
    registry = CollectorRegistry()
    c = Counter("sidekick_test_events", "Events.", registry=registry)
    c.inc(3)
    state = {"ready": False}
    server = AdminServer(
        HostPort("127.0.0.1", 0),
        registry,
        ready=lambda: (state["ready"], "ready" if state["ready"] else "starting"),
        healthy=lambda: (True, "ok"),
    )
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
            async with http.get(base + "/readyz") as r:
                assert r.status == 503
                assert "starting" in await r.text()
            state["ready"] = True
            async with http.get(base + "/readyz") as r:
                assert r.status == 200
            async with http.get(base + "/metrics") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/plain")
                assert "sidekick_test_events_total 3.0" in await r.text()
    finally:
        await server.aclose()


async def test_admin_health_fails_when_check_fails() -> None:
    server = AdminServer(
        HostPort("127.0.0.1", 0), CollectorRegistry(), healthy=lambda: (False, "task died")
    )
    await server.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{server.port}/healthz") as r,
        ):
            assert r.status == 503
            assert "task died" in await r.text()
    finally:
        await server.aclose()


# A process that has used up its descriptors, serving its admin server.
OUT_OF_DESCRIPTORS = """
import asyncio, os, resource
from prometheus_client import CollectorRegistry
from sidekick.core.addr import HostPort
from sidekick.core.admin import AdminServer

async def main():
    server = AdminServer(HostPort("127.0.0.1", 0), CollectorRegistry())
    await server.start()
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    print(server.port, flush=True)
    await asyncio.Event().wait()

resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_admin_answers_when_the_process_is_out_of_descriptors(tmp_path: Path) -> None:
    # Before, the probe's connection waited in the listen backlog until a descriptor came
    # back: a liveness probe timed out although the process was alive.
    stderr = tmp_path / "stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", OUT_OF_DESCRIPTORS], stdout=subprocess.PIPE, stderr=err
        )
    assert proc.stdout is not None
    try:
        port = int(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        for path in ("/healthz", "/readyz", "/metrics", "/healthz"):
            with urllib.request.urlopen(url + path, timeout=3) as r:
                assert r.status == 200
        # A client holding its connection open has the spare; the next one waits, without
        # the loop spinning, and is answered once the first leaves.
        held = socket.create_connection(("127.0.0.1", port))
        held.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert held.recv(4096).startswith(b"HTTP/1.1 200")
        before = cpu_seconds(proc.pid)
        failed = stderr.read_text().count("out of system resource")
        waiting = socket.create_connection(("127.0.0.1", port), timeout=10)
        waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(2)
        assert cpu_seconds(proc.pid) - before < 0.5
        # asyncio tries again once a second (here with its own handler, which logs each);
        # it used to try once for each connection of its backlog, every second.
        assert stderr.read_text().count("out of system resource") - failed <= 3
        held.close()
        assert waiting.recv(4096).startswith(b"HTTP/1.1 200")
        waiting.close()
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()


async def test_idle_and_slow_connections_are_limited_and_cut(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The admin port is open to the cluster: 1,100 connections that sent nothing held every
    # descriptor of a shipper limited to 1,024, and its receivers reset their clients.
    monkeypatch.setattr(admin, "HEADER_TIMEOUT", 1.0)
    gate = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(text="done\n")

    server = AdminServer(HostPort("127.0.0.1", 0), CollectorRegistry())
    server.add_route("GET", "/slow", slow)
    await server.start()
    url = f"http://127.0.0.1:{server.port}"
    silent: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(200):
            silent.append(await asyncio.open_connection("127.0.0.1", server.port))
        await asyncio.sleep(0.2)
        # At the limit each new connection closed the one idle longest.
        assert len(server._guard.open) == admin.MAX_CONNECTIONS
        async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as r:
            assert r.status == 200
        # A request whose headers trickle in is cut at the header timeout like the silent.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = asyncio.get_running_loop().time()
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
            if reader.at_eof() or writer.is_closing():
                break
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert asyncio.get_running_loop().time() - started < 3
        writer.close()
        for r_, _w in silent[-admin.MAX_CONNECTIONS :]:
            assert await asyncio.wait_for(r_.read(), 5) == b""
        assert not server._guard.open
        # With every connection in a request, a new one is answered 503 and closed.
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=10)
        ) as http:
            busy = [
                asyncio.ensure_future(http.get(url + "/slow")) for _ in range(admin.MAX_CONNECTIONS)
            ]
            for _ in range(200):
                if len(server._guard.open) == admin.MAX_CONNECTIONS and not server._guard.idle:
                    break
                await asyncio.sleep(0.05)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 503"), answer
            writer.close()
            gate.set()
            for response in await asyncio.gather(*busy):
                assert response.status == 200
                response.release()
    finally:
        gate.set()
        for _r, w in silent:
            w.close()
        await server.aclose()
    logged = [r.getMessage() for r in caplog.records if r.name == "sidekick.admin"]
    assert sum("idle longest" in m for m in logged) == 1
    assert sum("no complete request" in m for m in logged) == 1
    assert sum("answered a new one 503" in m for m in logged) == 1
