"""Syslog into ``syslog+tcp``, ``syslog+udp`` and ``syslog+unix``: util-linux ``logger``,
Python's SysLogHandler, rsyslog forwarding; framing, bad frames and UDP drops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sidekick.ship.sources._syslog_frame import Framer
from sidekick.ship.sources._syslog_parse import parse
from tests.conftest import free_port
from tests.ship.sources.receivers import receiving

LOGGER = "/usr/bin/logger"
RSYSLOGD = "/usr/sbin/rsyslogd"


def logger(*args: str) -> None:
    subprocess.run([LOGGER, *args], check=True, timeout=30)


@pytest.mark.parametrize(
    ("transport", "flags"),
    [
        ("tcp", ["--tcp", "--rfc5424"]),
        ("tcp", ["--tcp", "--rfc5424", "--octet-count"]),
        ("tcp", ["--tcp", "--rfc3164"]),
        ("udp", ["--udp", "--rfc5424"]),
        ("udp", ["--udp", "--rfc3164"]),
    ],
)
def test_logger_messages_all_arrive_with_their_fields(
    tmp_path: Path, transport: str, flags: list[str]
) -> None:
    port = free_port()
    with receiving(tmp_path, f"syslog+{transport}://127.0.0.1:{port}") as rx:
        lines = tmp_path / "lines.txt"
        lines.write_text("".join(f"event {i} done\n" for i in range(100)))
        sd = ["--sd-id", "order@32473", "--sd-param", 'id="42"', "--msgid", "ORD"]
        logger(
            "-n",
            "127.0.0.1",
            "-P",
            str(port),
            *flags,
            "-t",
            "shop",
            "-p",
            "local3.warning",
            *(sd if "--rfc5424" in flags else []),
            "-f",
            str(lines),
        )
        records = rx.wait_records(100)
    assert sorted(int(r["message"].split()[1]) for r in records) == list(range(100))
    rec = records[0]
    assert rec["log.syslog.appname"] == "shop"
    assert rec["log.syslog.facility.name"] == "local3"
    assert rec["log.syslog.severity.name"] == rec["log.level"] == "warning"
    assert rec["log.syslog.hostname"]
    assert rec["@timestamp"].endswith("Z")
    if "--rfc5424" in flags:
        assert rec["log.syslog.msgid"] == "ORD"
        assert rec["log.syslog.structured_data"]["order@32473"] == {"id": "42"}
        assert rec["log.syslog.version"] == 1


SYSLOG_HANDLER_APP = """
import logging, logging.handlers, socket, sys
port, kind = int(sys.argv[1]), sys.argv[2]
socktype = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
handler = logging.handlers.SysLogHandler(("127.0.0.1", port), socktype=socktype)
handler.ident = "billing: "
log = logging.getLogger("billing")
log.addHandler(handler)
log.setLevel(logging.INFO)
for i in range(200):
    log.error("invoice %d failed", i)
handler.close()
"""


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_python_syslog_handler_records_all_arrive(tmp_path: Path, transport: str) -> None:
    port = free_port()
    with receiving(tmp_path, f"syslog+{transport}://127.0.0.1:{port}") as rx:
        subprocess.run(
            [sys.executable, "-c", SYSLOG_HANDLER_APP, str(port), transport], check=True, timeout=30
        )
        records = rx.wait_records(200)
    assert sorted(int(r["message"].split()[1]) for r in records) == list(range(200))
    assert {
        (r["log.syslog.appname"], r["log.level"], r["log.syslog.facility.name"]) for r in records
    } == {("billing", "err", "user")}


def test_logger_to_a_unix_socket_arrives(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    with receiving(tmp_path, f"syslog+unix://{path}") as rx:
        for i in range(50):
            logger("-u", str(path), "--rfc3164", "-t", "worker", f"job {i} finished")
        records = rx.wait_records(50)
    assert sorted(int(r["message"].split()[1]) for r in records) == list(range(50))
    assert records[0]["log.syslog.appname"] == "worker"
    assert not path.exists()  # removed at exit


RSYSLOG_FORWARD = """\
global(workDirectory="{work}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{inport}")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
       TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
"""


def test_rsyslog_forwarding_with_omfwd_arrives(tmp_path: Path) -> None:
    port, inport = free_port(), free_port()
    work = tmp_path / "rsyslog"
    work.mkdir()
    conf = work / "rsyslog.conf"
    conf.write_text(RSYSLOG_FORWARD.format(work=work, inport=inport, port=port))
    with receiving(tmp_path, f"syslog+tcp://127.0.0.1:{port}") as rx:
        proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(work / "pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)
            for i in range(100):
                logger("-n", "127.0.0.1", "-P", str(inport), "--udp", "-t", "relay", f"hop {i}")
            records = rx.wait_records(100)
        finally:
            proc.terminate()
            proc.wait(10)
    assert sorted(int(r["message"].split()[1]) for r in records) == list(range(100))
    assert records[0]["log.syslog.appname"] == "relay"
    assert records[0]["log.syslog.version"] == 1


def test_kernel_udp_drops_are_counted_never_silent(tmp_path: Path) -> None:
    port = free_port()
    name = f"syslog+udp://127.0.0.1:{port}"
    with receiving(tmp_path, name) as rx:
        # Stop the shipper and send far more than the socket buffer holds.
        os.kill(rx.proc.pid, signal.SIGSTOP)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(20000):
                    s.sendto(b"<14>app: filler %d " % i + b"x" * 200, ("127.0.0.1", port))
        finally:
            os.kill(rx.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 20
        while rx.metric("sidekick_ship_receiver_udp_drops_total", input=name) == 0:
            assert time.monotonic() < deadline, "kernel drops were not counted"
            time.sleep(0.2)
        drops = rx.metric("sidekick_ship_receiver_udp_drops_total", input=name)
        arrived = len(rx.wait_records(1))
        time.sleep(1.5)
        arrived = len(rx.records())
        assert arrived + drops == pytest.approx(20000, abs=5)
        assert "dropped" in rx.proc.log()


def test_bad_frames_are_counted_and_the_receiver_goes_on(tmp_path: Path) -> None:
    port = free_port()
    name = f"syslog+tcp://127.0.0.1:{port}"
    extra = ("--max-line-bytes", "1KiB", "--ingest-body-timeout", "1s")
    with receiving(tmp_path, name, extra=extra) as rx:
        with socket.create_connection(("127.0.0.1", port)) as s:
            # An oversize octet-counted frame and an oversize line are skipped; then good ones.
            s.sendall(b"2000 <13>" + b"x" * 1996 + b"<13>" + b"y" * 3000 + b"\n")
            s.sendall(b"<13>app: after oversize\n5 <13>a")
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"12x <13>bad count")
            assert s.recv(10) == b""  # closed: the stream cannot be followed
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"100 <13>half")
            assert slow.recv(10) == b""  # closed at the body timeout
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"no header at all\n")
        records = rx.wait_records(3)
        assert sorted(r["message"] for r in records) == ["a", "after oversize", "no header at all"]
        assert (
            rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="oversize") == 2
        )
        assert (
            rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="malformed") == 1
        )
        assert rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="slow") == 1
        assert (
            rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="unparsed") == 1
        )
        assert "Traceback" not in rx.proc.log()


def test_rfc5424_example_from_the_rfc_is_parsed() -> None:
    rec = parse(
        b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
        b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] '
        b"\xef\xbb\xbfAn application event log entry",
        time.time(),
    )
    assert rec["@timestamp"] == "2003-10-11T22:14:15.003000000Z"
    assert rec["log.syslog.facility.name"] == "local4"
    assert rec["log.level"] == "notice"
    assert "log.syslog.procid" not in rec
    assert rec["log.syslog.structured_data"] == {
        "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"}
    }
    assert rec["message"] == "An application event log entry"


def test_framer_splits_octet_counted_lf_and_nul_frames() -> None:
    framer = Framer(100)
    frames, oversize = framer.feed(b"5 <1>ab<13>x\n<13>y\x0011 <13>z")
    assert (frames, oversize, framer.partial) == ([b"<1>ab", b"<13>x", b"<13>y"], 0, True)
    frames, _ = framer.feed(b"zzzzzz")
    assert frames == [b"<13>zzzzzzz"]


def test_empty_octet_counted_frames_are_skipped_like_empty_lines(tmp_path: Path) -> None:
    # RFC 6587's MSG-LEN starts with a non-zero digit. A count of 0 gave an empty frame, which
    # became a record (empty message, 'no syslog <PRI> header'): 2 bytes on the wire for each
    # stored record, where empty LF- or NUL-ended frames are skipped.
    framer = Framer(100)
    assert framer.feed(b"0 0 5 <1>ab0 \n\n0 ") == ([b"<1>ab"], 0)
    assert framer.feed(b"0 0 4 <2>c") == ([b"<2>c"], 0)
    port = free_port()
    name = f"syslog+tcp://127.0.0.1:{port}"
    with receiving(tmp_path, name) as rx:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"0 " * 1000 + b"\n" * 1000 + b"<13>app: after nothing\n")
        deadline = time.monotonic() + 30
        while not any(r["message"] == "after nothing" for r in rx.records()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert [r["message"] for r in rx.records()] == ["after nothing"]
        assert (
            rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="unparsed") == 0
        )
