"""The stream connections of the forward and syslog receivers, against a real shipper."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import msgpack

from tests.conftest import free_port
from tests.ship.sources.receivers import receiving
from tests.ship.sources.test_forward import send
from tests.ship.sources.test_http_abuse import wait_closed


def test_out_of_descriptors_new_connections_are_closed_at_once_and_logged_once(
    tmp_path: Path,
) -> None:
    fp, sp = free_port(), free_port()
    inputs = (f"forward://127.0.0.1:{fp}", f"syslog+tcp://127.0.0.1:{sp}")
    with receiving(tmp_path, *inputs, extra=("--ingest-keepalive-timeout", "3s")) as rx:
        # A few dozen descriptors more than the shipper holds: 300 idle connections use them up.
        limit = len(os.listdir(f"/proc/{rx.proc.pid}/fd")) + 40
        subprocess.run(["prlimit", f"--pid={rx.proc.pid}", f"--nofile={limit}:{limit}"], check=True)
        burst = []
        try:
            for port in (fp, sp):
                burst += [socket.create_connection(("127.0.0.1", port)) for _ in range(150)]
            # Those beyond the descriptors are closed at once, not left in the backlog (the
            # admin server is not asked meanwhile: it has no descriptor to answer with).
            time.sleep(1.0)
        finally:
            for s in burst:
                s.close()
        time.sleep(0.5)
        shed = [rx.metric(
            "sidekick_ship_receiver_connections_closed_total", input=name, reason="no_descriptors"
        ) for name in inputs]  # fmt: skip
        assert all(n >= 1 for n in shed), shed
        # The receivers serve again once descriptors are free.
        message = msgpack.packb(["t", int(time.time()), {"seq": 1}, {"chunk": "after"}])
        assert send(fp, message, want_acks=1) == [{"ack": "after"}]
        with socket.create_connection(("127.0.0.1", sp)) as s:
            s.sendall(b"<14>1 - host app - - - after the burst\n")
        got = rx.wait_records(2)
        assert {r.get("message") for r in got} >= {"after the burst"}
    log = rx.proc.log_path.read_text()
    assert "out of system resource" not in log and "Traceback" not in log
    assert log.count("out of file descriptors") == 2  # one line per receiver


def test_connections_that_send_nothing_cannot_lock_clients_out(tmp_path: Path) -> None:
    # At the connection limit a new connection was closed at once, and a connection that
    # sent nothing was held until the idle timeout (75 s by default): 100 silent
    # connections to each receiver (--ingest-max-connections 100) locked every client out,
    # 0 of 20 fluent-logger and 0 of 20 syslog messages arriving in 13 s.
    from fluent import sender

    fp, sp = free_port(), free_port()
    inputs = (f"forward://127.0.0.1:{fp}", f"syslog+tcp://127.0.0.1:{sp}")
    extra = ("--ingest-max-connections", "20", "--ingest-header-timeout", "2s")
    with receiving(tmp_path, *inputs, extra=extra) as rx:
        silent = [socket.create_connection(("127.0.0.1", p)) for p in (fp, sp) for _ in range(20)]
        try:
            time.sleep(0.3)
            started = time.monotonic()
            # Each new client closes the connection idle longest.
            message = msgpack.packb(["t", int(time.time()), {"seq": 1}, {"chunk": "c1"}])
            assert send(fp, message, want_acks=1) == [{"ack": "c1"}]
            logger = sender.FluentSender("app", host="127.0.0.1", port=fp, timeout=5)
            try:
                assert logger.emit("orders", {"seq": 2})
            finally:
                logger.close()
            with socket.create_connection(("127.0.0.1", sp)) as s:
                s.sendall(b"<14>1 - host app - - - through the crowd\n")
            got = rx.wait_records(3, timeout=10)
            assert time.monotonic() - started < 1.5
            assert {r.get("seq") for r in got} >= {1, 2}
            assert "through the crowd" in {r.get("message") for r in got}
            # The rest are closed at the header timeout.
            closed = wait_closed(silent, time.monotonic() + 10)
            assert len(closed) == len(silent)
        finally:
            for s in silent:
                s.close()

        def count(name: str, reason: str) -> float:
            return rx.metric(
                "sidekick_ship_receiver_connections_closed_total", input=name, reason=reason
            )

        for name in inputs:
            evicted, timed_out = count(name, "evicted"), count(name, "header_timeout")
            assert evicted >= 1 and evicted + timed_out == 20, (name, evicted, timed_out)
    log = rx.proc.log_path.read_text()
    assert log.count("closed the one idle longest") == 2
    assert log.count("sent nothing within 2s") == 2
    assert "Traceback" not in log


def test_connections_are_capped_at_half_the_open_file_limit(tmp_path: Path) -> None:
    # The stream receivers took --ingest-max-connections (512) whatever the open-file limit:
    # under 400 descriptors, 450 connections ran the process out of them.
    fp = free_port()
    name = f"forward://127.0.0.1:{fp}"
    with receiving(tmp_path, name, nofile=400) as rx:
        conns = []
        try:
            for _ in range(450):
                conns.append(socket.create_connection(("127.0.0.1", fp)))
            time.sleep(0.5)
            assert rx.metric("sidekick_ship_receiver_connections", input=name) == 400 // 2 - 32
            # asyncio accepts up to 100 at a time before the receiver sees them.
            assert len(os.listdir(f"/proc/{rx.proc.pid}/fd")) < 168 + 100
            message = msgpack.packb(["t", int(time.time()), {"seq": 1}, {"chunk": "c1"}])
            assert send(fp, message, want_acks=1) == [{"ack": "c1"}]
        finally:
            for s in conns:
                s.close()
    log = rx.proc.log_path.read_text()
    assert "takes at most 168 connections, not 512" in log
    assert "out of file descriptors" not in log


# A process whose listener lost its spare descriptor (another thread, such as gRPC's
# acceptor, took the one it gave back), serving until killed; it prints its port, then
# 'free' once it has given two descriptors back.
LOST_SPARE = """
import asyncio, os, resource, socket, sys
from sidekick.ship.sources._connections import Listener

async def main():
    sock = socket.create_server(("127.0.0.1", 0))
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    listener = Listener(sock)  # no descriptor for its spare
    async def client(reader, writer):
        writer.write(b"hi")
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(client, sock=listener)
    print(listener.getsockname()[1], flush=True)
    await asyncio.sleep(3)
    os.close(held.pop())
    os.close(held.pop())
    print("free", flush=True)
    await asyncio.Event().wait()

resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
asyncio.run(main())
"""


def test_a_listener_without_its_spare_takes_it_again_and_does_not_retry_per_connection(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    stderr = tmp_path / "stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", LOST_SPARE], stdout=subprocess.PIPE, stderr=err
        )
    assert proc.stdout is not None
    try:
        port = int(proc.stdout.readline())
        waiting = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        time.sleep(2)
        # asyncio (3.11) goes on calling accept for its whole batch after a failure: each
        # failure was reported and scheduled another try, about a hundred a second.
        failures = stderr.read_text().count("out of system resource")
        assert 1 <= failures <= 4, failures
        assert proc.stdout.readline() == b"free\n"
        # With a descriptor back the spare is taken again, and the waiting connections are
        # shed at once (closed, nothing sent) instead of waiting in the backlog.
        closed = wait_closed(waiting, time.monotonic() + 5)
        assert len(closed) == len(waiting)
        for s in waiting:
            s.close()
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
