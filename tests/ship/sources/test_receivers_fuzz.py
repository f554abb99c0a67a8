"""Property: no input makes a receiver answer 5xx (or gRPC INTERNAL/UNKNOWN), log a traceback
or stop serving; run against one real shipper with every kind of receiver."""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import msgpack
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import free_port
from tests.ship.sources.receivers import Receiving, receiving
from tests.ship.sources.test_otlp import request

METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text()
    | st.binary(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, good: bytes) -> bytes:
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


GOOD_PROTO = request(5).SerializeToString()
GOOD_FORWARD = msgpack.packb(["t", [[1, {"a": 1}], [2, {"b": 2}]], {"chunk": "c"}])


@st.composite
def otlp_json(draw: st.DrawFn) -> bytes:
    record = draw(
        st.dictionaries(
            st.sampled_from(
                ["timeUnixNano", "severityNumber", "severityText", "traceId", "spanId", "body",
                 "attributes", "observedTimeUnixNano", "flags"]
            ),
            json_values,
        )
    )  # fmt: skip
    return msgspec.json.encode({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]})


class Ports:
    def __init__(self) -> None:
        self.http, self.otlp, self.grpc, self.forward, self.tcp, self.udp = (
            free_port() for _ in range(6)
        )

    def inputs(self) -> list[str]:
        return [
            f"http://127.0.0.1:{self.http}",
            f"otlp://127.0.0.1:{self.otlp}",
            f"otlp+grpc://127.0.0.1:{self.grpc}",
            f"forward://127.0.0.1:{self.forward}",
            f"syslog+tcp://127.0.0.1:{self.tcp}",
            f"syslog+udp://127.0.0.1:{self.udp}",
        ]


@pytest.fixture(scope="module")
def rx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Receiving, Ports]]:
    tmp: Path = tmp_path_factory.mktemp("receivers-fuzz")
    ports = Ports()
    extra = (
        "--ingest-max-body-bytes",
        "4KiB",
        "--ingest-body-timeout",
        "2s",
        "--max-line-bytes",
        "1KiB",
    )
    with receiving(tmp, *ports.inputs(), extra=extra) as running:
        yield running, ports


def http_post(port: int, body: bytes, content_type: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/logs", body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def alive(running: Receiving) -> None:
    assert running.proc.proc is not None and running.proc.proc.poll() is None


@FUZZ
@given(
    body=mutated(GOOD_PROTO) | st.binary(max_size=3000) | otlp_json(),
    content_type=st.sampled_from(
        ["application/x-protobuf", "application/json", "application/x-www-form-urlencoded"]
    ),
    to_otlp=st.booleans(),
)
def test_otlp_http_and_ingest_never_answer_5xx(
    rx: tuple[Receiving, Ports], body: bytes, content_type: str, to_otlp: bool
) -> None:
    _running, ports = rx
    status = http_post(ports.otlp if to_otlp else ports.http, body, content_type)
    assert status in (200, 202, 400, 413, 415), status


@FUZZ
@given(body=mutated(GOOD_PROTO) | st.binary(max_size=3000))
def test_otlp_grpc_never_answers_internal(rx: tuple[Receiving, Ports], body: bytes) -> None:
    _running, ports = rx
    with grpc.insecure_channel(f"127.0.0.1:{ports.grpc}") as channel:
        try:
            channel.unary_unary(METHOD)(body, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
    assert code in (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # over the message size, refused by gRPC itself
    ), code


@FUZZ
@given(data=mutated(GOOD_FORWARD) | st.binary(max_size=3000) | values.map(msgpack.packb))
def test_forward_survives_any_bytes(rx: tuple[Receiving, Ports], data: bytes) -> None:
    running, ports = rx
    with socket.create_connection(("127.0.0.1", ports.forward), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while s.recv(4096):
                pass
    alive(running)


@FUZZ
@given(data=st.binary(max_size=3000), udp=st.booleans())
def test_syslog_survives_any_bytes(rx: tuple[Receiving, Ports], data: bytes, udp: bool) -> None:
    running, ports = rx
    if udp:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data or b"x", ("127.0.0.1", ports.udp))
    else:
        with socket.create_connection(("127.0.0.1", ports.tcp), timeout=10) as s:
            s.sendall(data)
    alive(running)


def test_every_receiver_still_serves_after_the_random_inputs(rx: tuple[Receiving, Ports]) -> None:
    running, ports = rx
    assert http_post(ports.http, b'{"probe":"http"}\n', "application/x-ndjson") == 202
    assert (
        http_post(
            ports.otlp, request(1, start=900001).SerializeToString(), "application/x-protobuf"
        )
        == 200
    )
    with grpc.insecure_channel(f"127.0.0.1:{ports.grpc}") as channel:
        channel.unary_unary(METHOD)(request(1, start=900002).SerializeToString(), timeout=10)
    with socket.create_connection(("127.0.0.1", ports.forward), timeout=10) as s:
        s.sendall(msgpack.packb(["t", 1, {"probe": "forward"}, {"chunk": "p"}]))
        assert msgpack.unpackb(s.recv(100)) == {"ack": "p"}
    with socket.create_connection(("127.0.0.1", ports.tcp), timeout=10) as s:
        s.sendall(b"\n<13>app: probe-tcp\n")

    def seen() -> set[Any]:
        recs = running.records()
        return (
            {r.get("probe") for r in recs}
            | {r.get("seq") for r in recs}
            | {r.get("message") for r in recs}
        )

    deadline = time.monotonic() + 20
    want = {"http", 900001, 900002, "forward", "probe-tcp"}
    while not want <= seen():
        assert time.monotonic() < deadline, want - seen()
        time.sleep(0.1)
    text = running.proc.log()
    assert "Traceback" not in text
    for name in ("http", "otlp"):
        port = ports.http if name == "http" else ports.otlp
        assert (
            running.metric(
                "sidekick_ship_receiver_answers_total",
                input=f"{name}://127.0.0.1:{port}",
                code="500",
            )
            == 0
        )
    assert running.metric("sidekick_ship_ingest_requests_total", code="500") == 0
