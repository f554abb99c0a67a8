"""The receiver behind every network input: several in one process, each with its own spool
and checkpoint; the spool of an earlier version taken over."""

from __future__ import annotations

import asyncio
import re
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import msgspec
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from sidekick.ship.checkpoints import CheckpointStore
from sidekick.ship.sources.receiver import Stamps, spool_name
from sidekick.ship.timefmt import rfc3339_ns
from tests.conftest import free_port
from tests.ship.helpers import ShipperProcess, read_ndjson, ship_config, shipping, wait_for


def post(port: int, body: bytes, content_type: str = "application/x-ndjson") -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/logs", body, {"Content-Type": content_type}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


def test_spool_names_say_scheme_host_and_port() -> None:
    assert spool_name("otlp", "127.0.0.1:4318") == "otlp-127.0.0.1-4318"
    assert spool_name("syslog+unix", "/run/app/log.sock") == "syslog+unix-_run_app_log.sock"
    assert spool_name("http", "0.0.0.0:8081") == "http-0.0.0.0-8081"


async def test_two_http_inputs_run_in_one_process_each_with_its_own_spool(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "state", tmp_path / "out.ndjson"
    a, b = free_port(), free_port()
    cfg = ship_config(
        inputs=[f"http://127.0.0.1:{a}", f"http://127.0.0.1:{b}"],
        outputs=[f"file://{out}"],
        state_dir=str(state),
    )
    async with shipping(cfg):
        await wait_for(lambda: (state / "spool" / f"http-127.0.0.1-{b}").is_dir())
        for port, name in ((a, "a"), (b, "b")):
            body = b"".join(b'{"from":"%s","n":%d}\n' % (name.encode(), i) for i in range(50))
            assert await _post(port, body) == 202
        await wait_for(lambda: len(read_ndjson(out)) == 100)
    got = read_ndjson(out)
    assert sorted((r["from"], r["n"]) for r in got) == sorted(
        (n, i) for n in "ab" for i in range(50)
    )
    # Each spool is its own stream in the state file, under its own key.
    store = CheckpointStore(state)
    store.load()
    assert set(store.keys("receiver/")) == {
        f"receiver/http-127.0.0.1-{a}",
        f"receiver/http-127.0.0.1-{b}",
    }
    store.close()


async def _post(port: int, body: bytes) -> int:
    return await asyncio.to_thread(post, port, body)


async def test_the_spool_of_an_earlier_version_is_taken_over(tmp_path: Path) -> None:
    """``<state>/spool/*.ndjson`` with the ``ingest/spool`` position: what was past the
    position is shipped, what was before it is not shipped again."""
    state, out = tmp_path / "state", tmp_path / "out.ndjson"
    legacy = state / "spool"
    legacy.mkdir(parents=True)
    delivered = b"".join(b'{"seq":%d}\n' % i for i in range(10))
    pending = b"".join(b'{"seq":%d}\n' % i for i in range(10, 30))
    (legacy / f"{1:020d}.ndjson").write_bytes(delivered)
    (legacy / f"{2:020d}.ndjson").write_bytes(delivered + pending)
    store = CheckpointStore(state)
    store.load()
    store.put("ingest/spool", {"segment": 2, "offset": len(delivered)})
    store.close()
    port = free_port()
    cfg = ship_config(
        inputs=[f"http://127.0.0.1:{port}"], outputs=[f"file://{out}"], state_dir=str(state)
    )
    async with shipping(cfg):
        await wait_for(lambda: len(read_ndjson(out)) >= 20)
    assert sorted(r["seq"] for r in read_ndjson(out)) == list(range(10, 30))
    assert list(legacy.glob("*.ndjson")) == []
    store = CheckpointStore(state)
    store.load()
    assert store.get("ingest/spool") is None
    assert store.get(f"receiver/http-127.0.0.1-{port}") is not None
    store.close()


def test_records_are_spooled_as_ndjson_lines(tmp_path: Path) -> None:
    from sidekick.ship.sources.receiver import encode_records

    lines = encode_records([{"message": "a"}, {"message": "b", "@timestamp": "x"}], 0)
    first, second = (msgspec.json.decode(line) for line in lines.splitlines())
    assert first == {"message": "a", "@timestamp": "1970-01-01T00:00:00.000000000Z"}
    assert second == {"message": "b", "@timestamp": "x"}


def test_every_receiver_keeps_taking_records_in_the_quiet_period_after_sigterm(
    tmp_path: Path,
) -> None:
    """OTLP, forward and syslog receivers drain like the ingest: what arrives after SIGTERM,
    within --drain-quiet, is acknowledged and delivered before the exit."""
    import signal
    import socket
    import time

    import msgpack

    from tests.ship.sources.receivers import receiving
    from tests.ship.sources.test_otlp import request

    otlp, fwd, tcp = free_port(), free_port(), free_port()
    inputs = (
        f"otlp://127.0.0.1:{otlp}",
        f"forward://127.0.0.1:{fwd}",
        f"syslog+tcp://127.0.0.1:{tcp}",
    )
    with receiving(tmp_path, *inputs, extra=("--drain-quiet", "3s")) as rx:
        assert rx.proc.proc is not None
        rx.proc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        body = request(2, start=10).SerializeToString()
        req = urllib.request.Request(
            f"http://127.0.0.1:{otlp}/v1/logs", body, {"Content-Type": "application/x-protobuf"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        with socket.create_connection(("127.0.0.1", fwd), timeout=10) as s:
            s.sendall(msgpack.packb(["late", 1, {"seq": 20}, {"chunk": "k"}]))
            assert msgpack.unpackb(s.recv(100)) == {"ack": "k"}
        with socket.create_connection(("127.0.0.1", tcp), timeout=10) as s:
            s.sendall(b"<13>app: 30\n")
        assert rx.proc.proc.wait(30) == 0
    got = read_ndjson(tmp_path / "out.ndjson")
    assert sorted(r.get("seq", 0) for r in got if "seq" in r) == [10, 11, 20]
    assert any(r.get("message") == "30" for r in got)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=20), st.booleans())
def test_a_stamp_is_the_rfc3339_text_of_its_time(times: list[int], same_second: bool) -> None:
    """Whatever times come, in whatever order (one second repeated, or anywhere from 1970 to
    the end of fixed64), each stamp is the time's own RFC 3339 text with nanoseconds."""
    if same_second:
        times = [1_795_820_400_000_000_000 + t % 1_000_000_000 for t in times]
    stamps = Stamps()
    for t in times:
        if t // 1_000_000_000 > 253_402_300_799:  # after 9999-12-31: no RFC 3339 text
            continue
        assert stamps(t) == rfc3339_ns(t)


MEMORY_LINES = 300_000
RSS_LIMIT_KIB = 150 * 1024


async def test_memory_stays_flat_while_the_spool_fills_behind_an_output_that_is_down(
    tmp_path: Path,
) -> None:
    """300,000 syslog lines (~130 MB of spool) arrive while the aggregator answers 503: the
    shipper's memory stays under 150 MiB (~90 MiB), and once the aggregator takes them every
    line arrives. Memory used to grow with the spool: ~210 MiB here, ~400 MiB with 260 MB."""
    seen = bytearray(MEMORY_LINES)
    state = {"up": False}

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()
        if not state["up"]:
            return web.Response(status=503, headers={"Retry-After": "1"})
        for m in re.finditer(rb"seq=(\d+) ", body):
            seen[int(m.group(1))] = 1
        return web.Response(status=200)

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/ingest", ingest)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    agg_port, port = free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", agg_port).start()
    name = f"syslog+tcp://127.0.0.1:{port}"
    args = ["--input", name, "--output", f"http://127.0.0.1:{agg_port}/ingest"]
    args += ["--state-dir", str(tmp_path / "state"), "--shutdown-timeout", "3s"]
    shipper = ShipperProcess(args, tmp_path / "shipper.log").start()
    peak = 0

    def send() -> None:
        frame = "<134>1 2026-11-28T03:00:00.000000Z host app 42 - - seq=%d GET /api/items ok\n"
        with socket.create_connection(("127.0.0.1", port)) as s:
            for start in range(0, MEMORY_LINES, 5000):
                s.sendall("".join(frame % i for i in range(start, start + 5000)).encode())

    async def until(done: Callable[[], bool], timeout: float) -> None:
        nonlocal peak
        deadline = time.monotonic() + timeout
        while not done():
            peak = max(peak, shipper.rss_kib())
            assert time.monotonic() < deadline, shipper.log()
            await asyncio.sleep(0.1)

    try:
        await asyncio.to_thread(shipper.wait_ready)
        sending = asyncio.ensure_future(asyncio.to_thread(send))
        await until(
            lambda: (
                shipper.metric("sidekick_ship_receiver_records_accepted_total", input=name)
                >= MEMORY_LINES
            ),
            90,
        )
        await sending
        settled = time.monotonic() + 2  # the reader fills the pipeline meanwhile
        await until(lambda: time.monotonic() > settled, 5)
        assert shipper.metric("sidekick_ship_receiver_spool_bytes", input=name) > 100e6
        state["up"] = True
        await until(lambda: all(seen), 120)
    finally:
        shipper.stop_quietly()
        await runner.cleanup()
    print(f"peak RSS {peak} KiB with the spool holding {MEMORY_LINES} lines")
    assert peak < RSS_LIMIT_KIB, f"peak RSS {peak} KiB"
