import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry, Counter

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
