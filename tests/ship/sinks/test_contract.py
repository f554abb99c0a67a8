"""The contract every output in the scheme table keeps, run against a real local receiver.

Each scheme's sink is built through ``create_sink`` and driven by the real ``Pipeline`` (its
retries, its acknowledgements) against a receiver of its wire format on 127.0.0.1: the
``ProtocolServer`` of the other sink tests answering as Elasticsearch's ``_bulk``, Loki's push
API, an OTLP/HTTP collector or a plain NDJSON endpoint (over TLS for the ``https`` schemes),
an asyncio syslog server reading RFC 6587 frames over TCP or datagrams over UDP, a real
directory, and, for ``stdout:``, the real ``sidekick ship`` process whose standard output the
test reads through a pipe. For every sink:

1. a batch is acknowledged only once the receiver confirmed it (answered, for HTTP; took it,
   for a TCP stream, whose only confirmation is flow control; wrote it, for a file);
2. while the receiver fails (connection refused, 5xx, a 2xx its format calls a partial
   failure) the batch is not acknowledged and is retried, and it arrives once the receiver is
   back; nothing goes to the dead-letter file;
3. options are a typed struct that refuses an unknown option in one sentence naming it
   (``stdout:`` takes none and refuses any);
4. the capabilities the ``Sink`` protocol declares are there, with the declared types;
5. records with non-ASCII text, an empty message, a very long line and nested fields arrive
   intact, as the format carries them (syslog over UDP cuts a long message to
   ``max_datagram_bytes`` and counts it, as documented);
6. ``aclose()`` after a delivered batch leaves no descriptor, socket or task behind.

``syslog+udp`` has no confirmation at all: a batch counts as delivered once the datagrams
are handed to the kernel, so (1) does not apply to it; a receiver that is not listening is
noticed through the network's port-unreachable reports, and the batch is sent again.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from prometheus_client import CollectorRegistry

from sidekick.ship.acks import AckTracker
from sidekick.ship.deadletter import DEAD_LETTER_FILE, DeadLetter
from sidekick.ship.metrics import ShipMetrics
from sidekick.ship.pipeline import Pipeline, PipelineSettings
from sidekick.ship.records import Record, Sink
from sidekick.ship.sinks import SCHEMES, OutputSpec, create_sink
from sidekick.ship.sources._syslog_frame import Framer
from sidekick.ship.sources._syslog_parse import parse
from sidekick.ship.sources.base import SourceBatch
from tests.conftest import SIDEKICK, free_port
from tests.ship.helpers import wait_for
from tests.ship.sinks.conftest import ProtocolServer, Seen, TlsFiles, committed_offsets
from tests.ship.test_cli import assert_one_sentence, ship

NETWORK_AND_FILE = sorted(s for s in SCHEMES if s != "stdout")
HTML = "<!DOCTYPE html><html><body>Please log in</body></html>"
LONG = 300_000  # characters in the very long line


def test_every_scheme_is_covered() -> None:
    assert {*NETWORK_AND_FILE, "stdout"} == set(SCHEMES)


# ---------------------------------------------------------------------------- receivers


class Receiver:
    """A destination of one wire format; ``got`` holds the records it confirmed, decoded.

    ``mode`` is how it answers: ``ok``, ``error`` (5xx) or ``partial`` (a 2xx that its format
    says is not a full success). ``hold``, while set, keeps it from confirming anything.
    """

    confirmed_at_ack = True  # whether it has a batch by the time the batch is acknowledged

    def __init__(self, scheme: str, port: int) -> None:
        self.scheme = scheme
        self.port = port
        self.url = ""
        self.options: dict[str, Any] = {}
        self.got: list[Record] = []
        self.mode = "ok"
        self.attempts = 0  # requests, connections or writes seen, confirmed or not
        self.hold: asyncio.Event | None = None

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def fail(self, how: str) -> None:
        if how in ("refused", "gone after a delivery"):
            await self.stop()
        else:
            self.mode = how

    async def heal(self, how: str) -> None:
        self.mode = "ok"
        if how in ("refused", "gone after a delivery"):
            await self.start()

    def received(self) -> list[Record]:
        return self.got

    def by_seq(self) -> dict[str, Record]:
        return {str(r.get("seq")): r for r in self.received()}


def any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    return None if kind is None else getattr(v, kind)


def decode_http(scheme: str, seen: Seen) -> list[Record]:
    """The records in one request, as the format carries them."""
    body = seen.body
    kind = scheme.split("+")[0]
    if kind in ("http", "https"):
        return [json.loads(line) for line in body.splitlines()]
    if kind in ("elasticsearch", "opensearch"):
        lines = body.splitlines()
        assert all("create" in json.loads(a) for a in lines[0::2])
        return [json.loads(doc) for doc in lines[1::2]]
    if kind == "loki":
        push = json.loads(body)
        return [
            {"message": value[1], **(value[2] if len(value) > 2 else {})}
            for stream in push["streams"]
            for value in stream["values"]
        ]
    assert kind == "otlp"
    request = ExportLogsServiceRequest.FromString(body)
    return [
        {"message": any_value(lr.body), **{a.key: any_value(a.value) for a in lr.attributes}}
        for rl in request.resource_logs
        for sl in rl.scope_logs
        for lr in sl.log_records
    ]


class HttpReceiver(Receiver):
    """The ``ProtocolServer`` answering as the scheme's API does."""

    def __init__(self, scheme: str, port: int, tls: TlsFiles) -> None:
        super().__init__(scheme, port)
        kind = scheme.split("+")[0]
        secure = scheme == "https" or scheme.endswith("+https")
        self.ssl: ssl.SSLContext | None = None
        if secure:
            self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ssl.load_cert_chain(tls.cert, tls.key)
            self.options["ca_file"] = str(tls.cert)
        path = "/ingest" if kind in ("http", "https") else "/logs" if "search" in kind else ""
        self.url = f"{scheme}://127.0.0.1:{port}{path}"
        self.server = ProtocolServer()
        self.server.default = self.respond
        self.server.port = port
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.server.handle)
        self.runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=self.ssl).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def respond(self, seen: Seen) -> web.Response:
        self.attempts += 1
        records = decode_http(self.scheme, seen)
        if self.hold is not None:
            await self.hold.wait()
        if self.mode == "error":
            return web.Response(status=503, text="unavailable")
        kind = self.scheme.split("+")[0]
        if self.mode == "partial":
            if kind in ("elasticsearch", "opensearch"):
                # Every other document is refused with 429: only those are to be sent again.
                statuses = [201 if i % 2 == 0 else 429 for i in range(len(records))]
                self.got += [r for r, s in zip(records, statuses, strict=True) if s == 201]
                return web.json_response(
                    {"errors": True, "items": [{"create": {"status": s}} for s in statuses]}
                )
            # Loki and OTLP: a 200 that is a proxy's login page, not the API's answer.
            return web.Response(status=200, text=HTML, content_type="text/html")
        self.got += records
        if kind in ("elasticsearch", "opensearch"):
            items = [{"create": {"status": 201}} for _ in records]
            return web.json_response({"errors": False, "items": items})
        if kind == "loki":
            return web.Response(status=204)
        if kind == "otlp":
            return web.Response(
                body=ExportLogsServiceResponse().SerializeToString(),
                content_type="application/x-protobuf",
            )
        return web.Response(status=200)


class SyslogReceiver(Receiver):
    """RFC 5424 messages over TCP (octet-counted frames) or UDP (one per datagram)."""

    confirmed_at_ack = False  # TCP: taken by the kernel; UDP: sent

    def __init__(self, scheme: str, port: int) -> None:
        super().__init__(scheme, port)
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.udp = scheme == "syslog+udp"
        self.server: asyncio.Server | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.connections: set[asyncio.Task[None]] = set()

    def take(self, frame: bytes) -> None:
        rec = parse(frame, time.time())
        sd = rec.get("log.syslog.structured_data", {}).get("sidekick@32473", {})
        self.got.append({"message": rec["message"], **sd})

    async def start(self) -> None:
        if self.udp:
            receiver = self

            class Datagrams(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: Any) -> None:
                    receiver.attempts += 1
                    receiver.take(data)

            loop = asyncio.get_running_loop()
            self.transport, _ = await loop.create_datagram_endpoint(
                Datagrams, local_addr=("127.0.0.1", self.port)
            )
            return
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", self.port)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        self.attempts += 1
        framer = Framer(1024 * 1024)
        try:
            while True:
                if self.hold is not None:
                    await self.hold.wait()
                data = await reader.read(65536)
                if not data:
                    break
                for frame in framer.feed(data)[0]:
                    self.take(frame)
        finally:
            self.connections.discard(task)
            writer.close()

    async def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self.server is not None:
            self.server.close()
            for task in list(self.connections):
                task.cancel()
            await asyncio.gather(*self.connections, return_exceptions=True)
            await self.server.wait_closed()
            self.server = None


class FileReceiver(Receiver):
    """A directory on this machine; failing is the directory being gone."""

    def __init__(self, scheme: str, port: int, directory: Path) -> None:
        super().__init__(scheme, port)
        self.dir = directory
        self.path = directory / "out.ndjson"
        self.url = f"file://{self.path}"

    async def start(self) -> None:
        self.dir.mkdir(exist_ok=True)

    async def fail(self, how: str) -> None:
        shutil.rmtree(self.dir)

    async def heal(self, how: str) -> None:
        self.dir.mkdir()

    def received(self) -> list[Record]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def failures_of(scheme: str) -> tuple[str, ...]:
    """The ways the receiver of ``scheme`` can fail (``gone after a delivery``: it stops
    while the sink holds a connection to it, and refuses the next ones)."""
    if scheme == "file":
        return ("missing directory",)
    if scheme.startswith("syslog"):
        return ("refused", "gone after a delivery")
    if scheme in ("http", "https"):
        # A generic endpoint defines no partial answer.
        return ("refused", "gone after a delivery", "error")
    return ("refused", "gone after a delivery", "error", "partial")


def make_receiver(scheme: str, tmp_path: Path, tls: TlsFiles) -> Receiver:
    port = free_port()
    if scheme.startswith("syslog"):
        return SyslogReceiver(scheme, port)
    if scheme == "file":
        return FileReceiver(scheme, port, tmp_path / "out")
    return HttpReceiver(scheme, port, tls)


@pytest.fixture(params=NETWORK_AND_FILE)
async def receiver(
    request: pytest.FixtureRequest, tmp_path: Path, tls_files: TlsFiles
) -> AsyncIterator[Receiver]:
    r = make_receiver(request.param, tmp_path, tls_files)
    await r.start()
    try:
        yield r
    finally:
        if r.hold is not None:
            r.hold.set()
        await r.stop()


# ---------------------------------------------------------------------------- the pipeline


class Run:
    """The real pipeline with one sink; batches are acknowledged through an ``AckTracker``."""

    def __init__(self, sink: Sink, state_dir: Path) -> None:
        self.sink = sink
        self.state_dir = state_dir
        self.registry = CollectorRegistry()
        self.pipe = Pipeline(
            [sink],
            settings=PipelineSettings(retry_initial=0.02, retry_max=0.2),
            metrics=ShipMetrics(self.registry),
            dead_letter=DeadLetter(state_dir),
        )

    async def emit(
        self, records: list[Record], on_commit: Callable[[int], None] | None = None
    ) -> AckTracker:
        tracker = AckTracker(on_commit=on_commit)
        size = sum(len(str(r.get("message", ""))) + 1 for r in records)
        await self.pipe.emit(SourceBatch(records, size, tracker.track(size)))
        return tracker

    def metric(self, name: str) -> float:
        return self.registry.get_sample_value(name, {"output": self.sink.name}) or 0.0

    def dead_lettered(self) -> bool:
        return (self.state_dir / DEAD_LETTER_FILE).exists()


@asynccontextmanager
async def running(receiver: Receiver, tmp_path: Path) -> AsyncIterator[Run]:
    sink = create_sink(OutputSpec(receiver.url, dict(receiver.options)))
    state_dir = tmp_path / "state"
    state_dir.mkdir(exist_ok=True)
    run = Run(sink, state_dir)
    tasks = [asyncio.create_task(o.run(), name="output") for o in run.pipe.outputs]
    try:
        yield run
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sink.aclose()


def records(n: int, tag: str = "r") -> list[Record]:
    return [
        {
            "@timestamp": f"2026-11-22T10:15:{i % 60:02d}.{i:06d}Z",
            "message": f"line {i} of {tag}",
            "seq": f"{tag}{i}",
            "log.file.path": "/var/log/app.log",
            "log.offset": i * 100,
            "log.file.id": f"2049:77:{tag}",
            "host.name": "node-1",
        }
        for i in range(n)
    ]


def arrived(receiver: Receiver, sent: list[Record]) -> bool:
    return {r["seq"] for r in sent} <= set(receiver.by_seq())


# ---------------------------------------------------------------------------- the contract


# UDP confirms nothing; what it does offer (port unreachable) is checked with the failures.
CONFIRMING = [s for s in NETWORK_AND_FILE if s != "syslog+udp"]


@pytest.mark.parametrize("receiver", CONFIRMING, indirect=True)
async def test_a_batch_is_acknowledged_only_once_the_receiver_confirmed_it(
    receiver: Receiver, tmp_path: Path
) -> None:
    sent = records(50)
    seen_at_commit: list[set[str]] = []
    big = receiver.scheme == "syslog+tcp"
    if big:
        # TCP's only confirmation is flow control: a batch larger than both sockets'
        # buffers is acknowledged only once a receiver that had stopped reading reads again.
        sent = records(600)
        for r in sent:
            r["message"] = r["message"] + " " + "x" * 20_000
    async with running(receiver, tmp_path) as run:
        if not isinstance(receiver, FileReceiver):
            receiver.hold = asyncio.Event()
        tracker = await run.emit(
            sent, on_commit=lambda _: seen_at_commit.append(set(receiver.by_seq()))
        )
        if receiver.hold is not None:
            await wait_for(lambda: receiver.attempts >= 1, timeout=30)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                assert tracker.committed == 0, "acknowledged before the receiver answered"
                await asyncio.sleep(0.02)
            receiver.hold.set()
        await wait_for(lambda: tracker.committed > 0, timeout=30)
        await wait_for(lambda: arrived(receiver, sent), timeout=30)
    if receiver.confirmed_at_ack:
        assert seen_at_commit and seen_at_commit[0] >= {r["seq"] for r in sent}
    assert not run.dead_lettered()


FAILURES = [(scheme, how) for scheme in NETWORK_AND_FILE for how in failures_of(scheme)]


@pytest.mark.parametrize(("scheme", "how"), FAILURES)
async def test_a_failed_batch_is_not_acknowledged_and_arrives_once_the_receiver_is_back(
    scheme: str, how: str, tmp_path: Path, tls_files: TlsFiles
) -> None:
    r = make_receiver(scheme, tmp_path, tls_files)
    await r.start()
    try:
        sent = records(40)
        async with running(r, tmp_path) as run:
            if how == "gone after a delivery":
                first = records(10, tag="first")
                warm = await run.emit(first)
                await wait_for(lambda: warm.committed > 0 and arrived(r, first), timeout=30)
            await r.fail(how)
            tracker = await run.emit(sent)
            # Several attempts failed (counted by the pipeline, and by the receiver when it
            # was reached), and meanwhile nothing was acknowledged.
            failed = "sidekick_ship_records_failed_total"
            retried = "sidekick_ship_records_retried_total"
            await wait_for(
                lambda: (
                    run.metric(failed) + run.metric(retried) >= 3 * len(sent) // 2
                    and (how not in ("error", "partial") or r.attempts >= 3)
                ),
                timeout=30,
            )
            assert tracker.committed == 0
            assert not arrived(r, sent)
            await r.heal(how)
            await wait_for(lambda: tracker.committed > 0, timeout=30)
            if r.confirmed_at_ack:
                assert arrived(r, sent)
            await wait_for(lambda: arrived(r, sent), timeout=30)
        assert not run.dead_lettered()
    finally:
        await r.stop()


def test_options_are_a_typed_struct_refusing_unknown_ones() -> None:
    import importlib

    for scheme, module_name in SCHEMES.items():
        if scheme == "stdout":
            continue  # takes no options at all (checked below)
        options = importlib.import_module(module_name).Options
        assert issubclass(options, msgspec.Struct), scheme
        assert options.__struct_config__.forbid_unknown_fields, scheme


def test_file_options_are_converted_by_type_not_by_truth(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/out.ndjson"
    assert create_sink(OutputSpec(url, {"fsync": "false"})).fsync is False
    assert create_sink(OutputSpec(url, {"fsync": True})).fsync is True


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_an_unknown_option_is_refused_in_one_sentence_naming_it(
    scheme: str, tmp_path: Path
) -> None:
    url = {"stdout": "stdout:", "file": f"file://{tmp_path}/out.ndjson"}.get(
        scheme, f"{scheme}://127.0.0.1:9/"
    )
    with pytest.raises(Exception) as caught:
        create_sink(OutputSpec(url, {"colour": "blue"}))
    assert type(caught.value).__name__ == "ConfigError"
    message = str(caught.value)
    assert "colour" in message and "\n" not in message
    assert message.count("; ") == 1, message


def test_the_cli_refuses_an_unknown_output_option_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "ship.yaml"
    config.write_text(
        "ship:\n  outputs:\n    - url: 'elasticsearch://127.0.0.1:9200/logs'\n"
        "      options: {colour: blue}\n"
    )
    result = ship(
        "--config", str(config),
        "--input", f"file://{tmp_path}/*.log",
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    assert_one_sentence(result, "elasticsearch", "colour")


def protocol_members() -> dict[str, Any]:
    members: dict[str, Any] = dict(Sink.__annotations__)
    for name, value in vars(Sink).items():
        if callable(value) and not name.startswith("_"):
            members[name] = value
    return members


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
async def test_capabilities_are_those_the_protocol_declares(scheme: str, tmp_path: Path) -> None:
    assert set(protocol_members()) == {"name", "concurrency", "counters", "send", "aclose"}
    url = {"stdout": "stdout:", "file": f"file://{tmp_path}/out.ndjson"}.get(
        scheme, f"{scheme}://127.0.0.1:9/"
    )
    sink = create_sink(OutputSpec(url))
    try:
        for member, declared in protocol_members().items():
            assert hasattr(sink, member), f"{scheme} lacks {member}"
            if inspect.iscoroutinefunction(declared):
                assert inspect.iscoroutinefunction(getattr(sink, member)), member
        assert isinstance(sink.name, str) and sink.name
        assert type(sink.concurrency) is int and sink.concurrency >= 1
        counters = sink.counters()
        assert isinstance(counters, dict)
        assert all(type(k) is str and type(v) is int for k, v in counters.items())
    finally:
        await sink.aclose()


def odd_records() -> list[Record]:
    return [
        {"seq": "unicode", "message": 'ünïcödé 日本語 🚀 "quoted" back\\slash ]bracket'},
        {"seq": "empty", "message": ""},
        {"seq": "long", "message": "L" * LONG},
        {
            "seq": "nested",
            "message": "nested fields",
            "http": {"request": {"headers": {"x-é": ["a", "b"]}}, "status": 200},
            "tags": ["one", "двa", 3],
        },
    ]


def as_value(v: Any) -> Any:
    """A field's value back from the text some formats carry it as (syslog, Loki)."""
    if isinstance(v, str) and v[:1] in "[{":
        return json.loads(v)
    return v


async def test_odd_records_arrive_intact(receiver: Receiver, tmp_path: Path) -> None:
    sent = odd_records()
    async with running(receiver, tmp_path) as run:
        tracker = await run.emit([dict(r) for r in sent])
        await wait_for(lambda: tracker.committed > 0 and arrived(receiver, sent), timeout=30)
        got = receiver.by_seq()
        cut = receiver.scheme == "syslog+udp"
        for r in sent:
            message = got[r["seq"]]["message"]
            if cut and r["seq"] == "long":
                assert r["message"].startswith(message) and 0 < len(message) < 2048
            else:
                assert message == r["message"], r["seq"]
        nested = got["nested"]
        assert as_value(nested["http"]) == sent[3]["http"]
        assert as_value(nested["tags"]) == sent[3]["tags"]
        if cut:
            assert run.sink.counters()["truncated"] == 1
    assert not run.dead_lettered()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_close_after_a_delivered_batch_leaves_nothing_behind(
    receiver: Receiver, tmp_path: Path
) -> None:
    before = open_fds()
    tasks_before = asyncio.all_tasks()
    assert not [t for t in tasks_before if t.get_name() == "output"]
    sent = records(20)
    async with running(receiver, tmp_path) as run:
        tracker = await run.emit(sent)
        await wait_for(lambda: tracker.committed > 0 and arrived(receiver, sent), timeout=30)
    # running() closed the sink: its descriptors are gone, and so are the receiver's ends of
    # its connections and their tasks, which end when the sink's side is closed.
    await wait_for(lambda: open_fds() <= before, timeout=10)
    await wait_for(lambda: asyncio.all_tasks() <= tasks_before, timeout=10)
    assert arrived(receiver, sent)


# ---------------------------------------------------------------------------- stdout:


class Shipper:
    """``sidekick ship --output stdout:`` as a process; its stdout is read through a pipe."""

    def __init__(self, tmp_path: Path) -> None:
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.state = tmp_path / "state"
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = b""
        self.stderr = (tmp_path / "stderr").open("wb")
        self.pipe: int | None = None  # our end

    def start(self, *, nonblocking: bool = False) -> None:
        """``nonblocking``: the process's stdout is a non-blocking pipe, as when it shares its
        parent's stdout and the parent set O_NONBLOCK on it."""
        self.pipe, theirs = os.pipe()
        os.set_blocking(self.pipe, False)
        os.set_blocking(theirs, not nonblocking)
        try:
            self.proc = subprocess.Popen(
                [*SIDEKICK, "ship", "--admin-addr", "127.0.0.1:0",
                 "--input", f"file://{self.logs}/*.log?parser=json",
                 "--output", "stdout:", "--state-dir", str(self.state)],
                stdout=theirs,
                stderr=self.stderr,
            )  # fmt: skip
        finally:
            os.close(theirs)

    def lines(self) -> list[bytes]:
        """Every complete line written so far (reads without blocking)."""
        assert self.pipe is not None
        while True:
            try:
                chunk = os.read(self.pipe, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.out += chunk
        return self.out[: self.out.rfind(b"\n") + 1].splitlines()

    def read(self) -> list[Record]:
        return [json.loads(line) for line in self.lines()]

    def committed(self) -> int:
        return sum(committed_offsets(self.state))

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.lines()
            time.sleep(0.02)
        self.lines()
        return self.proc.wait(5)


@pytest.fixture
def shipper(tmp_path: Path) -> Any:
    sh = Shipper(tmp_path)
    yield sh
    if sh.proc is not None and sh.proc.poll() is None:
        sh.proc.kill()
        sh.proc.wait()
    if sh.pipe is not None:
        os.close(sh.pipe)
    sh.stderr.close()


def write_lines(path: Path, recs: list[Record]) -> list[int]:
    """Append ``recs`` as JSON lines; the offset where each line ends."""
    lines = [msgspec.json.encode(r) + b"\n" for r in recs]
    ends: list[int] = []
    end = path.stat().st_size if path.exists() else 0
    for line in lines:
        end += len(line)
        ends.append(end)
    with path.open("ab") as f:
        f.write(b"".join(lines))
    return ends


def plain(n: int) -> list[Record]:
    """Records as an app writes them (the tail adds the file fields)."""
    return [{"message": f"line {i}", "seq": f"s{i}"} for i in range(n)]


def test_stdout_acknowledges_only_what_its_reader_took_and_delivers_the_rest_later(
    shipper: Shipper,
) -> None:
    sent = plain(4000)
    for r in sent:
        r["message"] += " " + "y" * 2000  # 8 MB: far more than a pipe holds
    ends = write_lines(shipper.logs / "app.log", sent)
    shipper.start()
    # The reader is away: writes block once the pipe is full, and the checkpoint (written at
    # least once a second) stays behind.
    time.sleep(3)
    committed = shipper.committed()
    assert committed < ends[-1]
    # Everything the checkpoint covers was written before it was taken, so it is in the pipe.
    got = shipper.read()
    covered = {r["seq"] for r, end in zip(sent, ends, strict=True) if end <= committed}
    assert covered <= {g["seq"] for g in got}
    # The reader is back: everything arrives, and the checkpoint reaches the end.
    deadline = time.monotonic() + 60
    while {r["seq"] for r in sent} - {g["seq"] for g in shipper.read()}:
        assert time.monotonic() < deadline, "not every line arrived"
        time.sleep(0.02)
    assert shipper.stop() == 0
    assert shipper.committed() == ends[-1]


def test_stdout_odd_records_arrive_intact_and_a_stop_leaves_nothing_pending(
    shipper: Shipper,
) -> None:
    sent = odd_records()
    ends = write_lines(shipper.logs / "app.log", sent)
    shipper.start()
    deadline = time.monotonic() + 60
    while {r["seq"] for r in sent} - {g["seq"] for g in shipper.read()}:
        assert time.monotonic() < deadline, "not every line arrived"
        time.sleep(0.02)
    got = {g["seq"]: g for g in shipper.read()}
    for r in sent:
        assert got[r["seq"]]["message"] == r["message"], r["seq"]
    # The json parser flattens nested objects to dotted names; lists stay lists.
    nested = got["nested"]
    assert nested["http.request.headers.x-é"] == ["a", "b"]
    assert nested["http.status"] == 200
    assert nested["tags"] == ["one", "двa", 3]
    assert shipper.stop() == 0
    assert shipper.committed() == ends[-1]
    assert len(shipper.read()) == len(sent)  # each once: nothing was pending at the stop


def test_stdout_that_is_a_full_non_blocking_pipe_neither_tears_nor_repeats_lines(
    shipper: Shipper,
) -> None:
    sent = plain(2000)
    for r in sent:
        r["message"] += " " + "z" * 2000  # 4 MB
    ends = write_lines(shipper.logs / "app.log", sent)
    shipper.start(nonblocking=True)
    time.sleep(2)  # the reader is away; the pipe fills up
    deadline = time.monotonic() + 60
    while len(shipper.lines()) < len(sent):
        assert time.monotonic() < deadline, f"{len(shipper.lines())} of {len(sent)} lines"
        time.sleep(0.02)
    assert shipper.stop() == 0
    lines = shipper.lines()
    torn = [line[:80] for line in lines if not line.startswith(b"{") or not line.endswith(b"}")]
    assert torn == []
    assert sorted(json.loads(line)["seq"] for line in lines) == sorted(r["seq"] for r in sent)
    assert shipper.committed() == ends[-1]
