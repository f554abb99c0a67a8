"""OTLP/gRPC into ``otlp+grpc://``: the real SDK exporter, raw requests, status codes."""

from __future__ import annotations

import logging
import os
import signal
import warnings
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from tests.conftest import free_port
from tests.ship.sources.receivers import invalid_utf8, receiving
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
    import socket
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
