"""OTLP/gRPC into ``otlp+grpc://``: the real SDK exporter, raw requests, status codes."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
import warnings
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from tests.conftest import free_port
from tests.ship.helpers import wait_for_sync
from tests.ship.sources.receivers import invalid_utf8, receiving
from tests.ship.sources.test_http_abuse import wait_closed
from tests.ship.sources.test_otlp import request

METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def export(port: int, body: bytes, **kw: object) -> tuple[grpc.StatusCode, bytes]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)
        try:
            answer, rpc = call.with_call(body, timeout=10, **kw)  # type: ignore[arg-type]
        except grpc.RpcError as exc:
            return exc.code(), (exc.details() or "").encode()
        return rpc.code(), answer


def sdk_send_grpc(port: int, n: int) -> None:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create({"service.name": "billing"}))
    exporter = OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(logger_provider=provider)
    logger = logging.getLogger(f"billing.{port}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        for i in range(n):
            logger.error("invoice %d failed", i, extra={"invoice.id": i})
        assert provider.force_flush(20000)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()


def test_sdk_grpc_exporter_delivers_every_record_with_its_fields(tmp_path: Path) -> None:
    port = free_port()
    with receiving(tmp_path, f"otlp+grpc://127.0.0.1:{port}") as rx:
        sdk_send_grpc(port, 300)
        records = rx.wait_records(300)
        name = f"otlp+grpc://127.0.0.1:{port}"
        assert rx.metric("sidekick_ship_receiver_answers_total", input=name, code="OK") >= 1
    assert sorted(r["invoice.id"] for r in records) == list(range(300))
    rec = next(r for r in records if r["invoice.id"] == 3)
    assert (rec["message"], rec["log.level"], rec["service.name"]) == (
        "invoice 3 failed",
        "ERROR",
        "billing",
    )


def test_status_codes_bad_data_is_invalid_argument_and_counted(tmp_path: Path) -> None:
    port = free_port()
    name = f"otlp+grpc://127.0.0.1:{port}"
    with receiving(tmp_path, name, extra=("--ingest-max-records", "50")) as rx:
        code, details = export(port, b"\x0a\xff\xff\xff\xff\x0f")
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert b"ExportLogsServiceRequest" in details
        code, _ = export(port, invalid_utf8("body"))  # a valid envelope, a body not UTF-8
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        code, _ = export(port, request(51).SerializeToString())
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        bad = request(2, trace_id=b"\x01")
        code, answer = export(port, request(3).SerializeToString())
        assert code == grpc.StatusCode.OK
        code, answer = export(port, bad.SerializeToString())
        assert code == grpc.StatusCode.OK
        assert (
            ExportLogsServiceResponse.FromString(answer).partial_success.rejected_log_records == 2
        )
        # gzip on the wire is inflated by gRPC.
        code, _ = export(
            port, request(5, start=100).SerializeToString(), compression=grpc.Compression.Gzip
        )
        assert code == grpc.StatusCode.OK
        assert len(rx.wait_records(8)) == 8
        assert (
            rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="malformed") == 2
        )
        assert (
            rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="oversize") == 1
        )
        assert "Traceback" not in rx.proc.log()


def test_a_full_spool_is_unavailable_which_exporters_retry(tmp_path: Path) -> None:
    port, nobody = free_port(), free_port()
    with receiving(
        tmp_path,
        f"otlp+grpc://127.0.0.1:{port}",
        output=f"http://127.0.0.1:{nobody}/",
        extra=("--spool-max-bytes", "8KiB"),
    ):
        codes = [export(port, request(20, start=i * 20).SerializeToString())[0] for i in range(10)]
    assert codes[0] == grpc.StatusCode.OK
    assert grpc.StatusCode.UNAVAILABLE in codes


def test_kill_9_right_after_ok_loses_nothing(tmp_path: Path) -> None:
    port, nobody = free_port(), free_port()
    state = tmp_path / "state"
    with receiving(
        tmp_path, f"otlp+grpc://127.0.0.1:{port}", output=f"http://127.0.0.1:{nobody}/", state=state
    ) as rx:
        for i in range(5):
            assert (
                export(port, request(100, start=i * 100).SerializeToString())[0]
                == grpc.StatusCode.OK
            )
        os.kill(rx.proc.pid, signal.SIGKILL)
        assert rx.proc.proc is not None
        rx.proc.proc.wait(10)
    with receiving(tmp_path, f"otlp+grpc://127.0.0.1:{port}", state=state) as rx:
        got = rx.wait_records(500)
    assert sorted({r["seq"] for r in got}) == list(range(500))


@pytest.mark.parametrize("scheme", ["otlp+grpc", "otlp"])
def test_a_taken_port_is_a_clear_error(tmp_path: Path, scheme: str) -> None:
    import subprocess

    from tests.conftest import SIDEKICK

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = subprocess.run(
            [
                *SIDEKICK,
                "ship",
                "--input",
                f"{scheme}://127.0.0.1:{port}",
                "--output",
                "stdout:",
                "--state-dir",
                str(tmp_path / "st"),
                "--admin-addr",
                "127.0.0.1:0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot be bound" in result.stderr


# -- idle, slow and too many connections ----------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def h2_call(stream: int, authority: str) -> bytes:
    """HEADERS opening an Export call (HPACK literals, no Huffman), then the first 5 bytes of
    a message that announces 100 bytes."""
    fields = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", METHOD),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    block = b"".join(
        b"\x00" + bytes([len(k)]) + k.encode() + bytes([len(v)]) + v.encode() for k, v in fields
    )
    return h2_frame(1, 0x4, stream, block) + h2_frame(0, 0, stream, b"\x00\x00\x00\x00\x64")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_connections_that_never_speak_http2_are_closed_at_the_header_timeout(
    tmp_path: Path,
) -> None:
    # gRPC waits 120 s by default for a new connection's HTTP/2 preface and SETTINGS, and
    # takes connections until the process has no descriptor left: 150 silent connections
    # under 160 descriptors left the exporter with DEADLINE_EXCEEDED and /healthz unanswered.
    port = free_port()
    name = f"otlp+grpc://127.0.0.1:{port}"
    header_timeout = 2.0
    extra = ("--ingest-header-timeout", f"{header_timeout}s")
    with receiving(tmp_path, name, extra=extra, nofile=160) as rx:
        opened = time.monotonic()
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
        partial = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        try:
            for s in partial:
                s.sendall(PREFACE[:10])
            # Half the limit, less 32 for files and outputs, is the connection limit: the
            # rest are closed at once and the process keeps descriptors to work with.
            assert fds(rx.proc.pid) <= 80 + 20
            assert rx.proc.get("/healthz")[0] == 200
            closed = wait_closed(silent + partial, opened + header_timeout + 10)
            assert len(closed) == 150
            took = max(closed.values()) - opened
            assert took < header_timeout + 5, took
        finally:
            for s in silent + partial:
                s.close()
        sdk_send_grpc(port, 50)
        assert sorted(r["invoice.id"] for r in rx.wait_records(50)) == list(range(50))
    log = rx.proc.log_path.read_text()
    assert "File descriptor limit reached" not in log and "Traceback" not in log
    print(f"\n150 silent connections on 160 descriptors: all closed within {took:.1f}s")


def test_a_call_whose_message_trickles_in_is_cut_at_the_body_timeout(tmp_path: Path) -> None:
    # gRPC runs a unary handler only once the whole message is in, and counted the call
    # against its own limit from its headers on: four calls sending a byte now and then held
    # all four places for good, and every other call got RESOURCE_EXHAUSTED, not counted.
    port = free_port()
    name = f"otlp+grpc://127.0.0.1:{port}"
    extra = ("--ingest-max-connections", "4", "--ingest-body-timeout", "2s")
    with receiving(tmp_path, name, extra=extra) as rx:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(PREFACE + h2_frame(4, 0, 0, b""))
            for k in range(4):
                s.sendall(h2_call(1 + 2 * k, f"127.0.0.1:{port}"))
            time.sleep(0.5)
            code, details = export(port, request(3).SerializeToString())
            assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
            assert b"limit of 4 calls" in details
            started = time.monotonic()
            for _ in range(8):  # a byte a half-second, each call's
                for k in range(4):
                    with contextlib.suppress(OSError):
                        s.sendall(h2_frame(0, 0, 1 + 2 * k, b"\x0a"))
                time.sleep(0.5)
                if rx.metric("sidekick_ship_receiver_rejected_total", input=name, reason="slow"):
                    break
            wait_for_sync(
                lambda: rx.metric(
                    "sidekick_ship_receiver_rejected_total", input=name, reason="slow"
                ) == 4,
                10,
            )  # fmt: skip
            assert time.monotonic() - started < 5
            code, _ = export(port, request(3).SerializeToString())
            assert code == grpc.StatusCode.OK
        assert rx.metric(
            "sidekick_ship_receiver_answers_total", input=name, code="DEADLINE_EXCEEDED"
        ) == 4  # fmt: skip
        assert rx.metric(
            "sidekick_ship_receiver_rejected_total", input=name, reason="connection_limit"
        ) == 1  # fmt: skip
        # A call that ends without a message is refused, not a hang.
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
            pytest.raises(grpc.RpcError) as err,
        ):
            channel.stream_unary(METHOD)(iter([]), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(rx.wait_records(3)) == 3
    log = rx.proc.log_path.read_text()
    assert log.count("did not arrive within 2s") == 1 and "Traceback" not in log


def test_a_message_over_the_limit_is_counted_as_oversize_not_malformed(tmp_path: Path) -> None:
    # gRPC refuses it (RESOURCE_EXHAUSTED) before the handler has it: the handler, which
    # runs from the call's headers on, saw the call end without a message and counted it
    # malformed (INVALID_ARGUMENT) though the client was told RESOURCE_EXHAUSTED.
    port = free_port()
    name = f"otlp+grpc://127.0.0.1:{port}"
    with receiving(tmp_path, name, extra=("--ingest-max-body-bytes", "64KiB")) as rx:
        big = request(5000).SerializeToString()
        assert len(big) > 64 * 1024
        code, details = export(port, big)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        # A gzip bomb: 20 MB of one letter, 20 KB on the wire.
        bomb = request(1)
        bomb.resource_logs[0].scope_logs[0].log_records[0].body.string_value = "a" * 20_000_000
        code, details = export(port, bomb.SerializeToString(), compression=grpc.Compression.Gzip)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        assert export(port, request(3).SerializeToString())[0] == grpc.StatusCode.OK
        assert len(rx.wait_records(3)) == 3
        rejected = "sidekick_ship_receiver_rejected_total"
        assert rx.metric(rejected, input=name, reason="oversize") == 2
        assert rx.metric(rejected, input=name, reason="malformed") == 0
        answers = "sidekick_ship_receiver_answers_total"
        assert rx.metric(answers, input=name, code="RESOURCE_EXHAUSTED") == 2
        assert rx.metric(answers, input=name, code="INVALID_ARGUMENT") == 0


def test_connections_gone_without_a_call_are_counted_by_reason(tmp_path: Path) -> None:
    # gRPC closes them in its core; the receiver follows them through channelz. Before, the
    # connections gauge stayed unset and these closes were not counted anywhere.
    port = free_port()
    name = f"otlp+grpc://127.0.0.1:{port}"
    extra = ("--ingest-header-timeout", "2s", "--ingest-keepalive-timeout", "5s")
    with receiving(tmp_path, name, extra=extra) as rx:

        def gauge() -> float:
            return rx.metric("sidekick_ship_receiver_connections", input=name)

        def closed(reason: str) -> float:
            return rx.metric(
                "sidekick_ship_receiver_connections_closed_total", input=name, reason=reason
            )

        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        quiet = socket.create_connection(("127.0.0.1", port))
        quiet.sendall(PREFACE + h2_frame(4, 0, 0, b""))
        try:
            wait_for_sync(lambda: gauge() == 21, 5)
            sdk_send_grpc(port, 5)
            wait_for_sync(lambda: closed("header_timeout") == 20, 10)
            wait_for_sync(lambda: closed("idle_timeout") == 1, 15)
            wait_for_sync(lambda: gauge() == 0, 5)
        finally:
            for s in [*silent, quiet]:
                s.close()
        assert len(rx.wait_records(5)) == 5
    log = rx.proc.log_path.read_text()
    assert log.count("sent no HTTP/2 preface and settings within 2s") == 1
    assert "channelz" not in log and "Traceback" not in log


def test_millions_of_tiny_records_are_counted_before_they_are_parsed(tmp_path: Path) -> None:
    # A 6 MB request of 3,000,000 empty log records was parsed whole before its count was
    # refused: the shipper's peak memory grew by 440 MB, over gRPC or OTLP/HTTP alike.
    import urllib.error
    import urllib.request

    from google.protobuf.internal.encoder import _VarintBytes

    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2]) + _VarintBytes(len(payload)) + payload

    body = field(1, field(2, field(2, b"") * 3_000_000))
    gp, hp = free_port(), free_port()
    inputs = (f"otlp+grpc://127.0.0.1:{gp}", f"otlp://127.0.0.1:{hp}")
    with receiving(tmp_path, *inputs) as rx:

        def peak_kib() -> int:
            with open(f"/proc/{rx.proc.pid}/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

        before = peak_kib()
        code, details = export(gp, body)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and b"more than 10000" in details
        post = urllib.request.Request(
            f"http://127.0.0.1:{hp}/v1/logs", body, {"Content-Type": "application/x-protobuf"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(post, timeout=30)
        assert refused.value.code == 413
        refused.value.close()  # its answer holds the connection's socket
        grown = (peak_kib() - before) // 1024
        assert grown < 250, grown
        assert export(gp, request(3).SerializeToString())[0] == grpc.StatusCode.OK
        assert len(rx.wait_records(3)) == 3
        rejected = "sidekick_ship_receiver_rejected_total"
        assert rx.metric(rejected, input=inputs[0], reason="oversize") == 1
    print(f"\n3,000,000 empty records in 6 MB, over gRPC and OTLP/HTTP: peak memory +{grown} MB")
