"""No secret given to ``sidekick ship`` shows up in its output, status pages or files.

A unique marker is used as URL password, as a secret-looking query value and as the content
of secret files, for every output scheme and for inputs. The real CLI runs against
unreachable and failing destinations (so errors are logged, at debug level too), in text
and JSON log formats; everything it prints or serves, the dead-letter file and the state dir
are then searched for the marker. Configurations that are refused must not echo it either.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest
from aiohttp import web
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from sidekick.core.errors import ConfigError
from sidekick.ship.deadletter import DEAD_LETTER_FILE
from sidekick.ship.sinks import OutputSpec, create_sink
from tests.conftest import SIDEKICK, free_port
from tests.ship.helpers import read_ndjson, wait_for

MARKER = f"S3CR3T-{uuid.uuid4().hex}"


def ship_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIDEKICK, "ship", "--admin-addr", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "output",
    [
        f"http://shipper:{MARKER}@127.0.0.1:1/ingest",
        f"https://shipper:{MARKER}@127.0.0.1:1/ingest",
        f"elasticsearch://shipper:{MARKER}@127.0.0.1:1/logs",
        f"elasticsearch://127.0.0.1:1/logs?token={MARKER}",
        f"opensearch+https://127.0.0.1:1/logs?username=u&password={MARKER}",
        f"loki://shipper:{MARKER}@127.0.0.1:1",
        f"loki+https://127.0.0.1:1?api_key={MARKER}",
        f"otlp://shipper:{MARKER}@127.0.0.1:1",
        f"otlp://127.0.0.1:1?access_token={MARKER}",
        f"syslog+tcp://shipper:{MARKER}@127.0.0.1:1",
        f"syslog+udp://127.0.0.1:1?secret={MARKER}",
        f"file://shipper:{MARKER}@/tmp/out.ndjson",
        f"stdout:?token={MARKER}",
        f"stdout://shipper:{MARKER}@x",
        f"ftp://shipper:{MARKER}@127.0.0.1/x",
        f"http://127.0.0.1:notaport/ingest?token={MARKER}",
        f"loki://[::1/?token={MARKER}",
    ],
)
def test_refused_output_urls_do_not_echo_the_secret(tmp_path: Path, output: str) -> None:
    result = ship_run(
        "--input", f"file://{tmp_path}/*.log",
        "--output", output,
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("sidekick: error: ")
    assert "***" in result.stderr  # the URL is named, masked
    assert MARKER not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "given",
    [
        f"http://127.0.0.1:{free_port()}?token={MARKER}",
        f"http://shipper:{MARKER}@127.0.0.1:{free_port()}",
        f"file://shipper:{MARKER}@/var/log/*.log",
        f"file:///var/log/*.log?parser=jsn&token={MARKER}",
        f"ftp://shipper:{MARKER}@host/x",
    ],
)
def test_refused_input_urls_do_not_echo_the_secret(tmp_path: Path, given: str) -> None:
    result = ship_run(
        "--input", given, "--output", "stdout:", "--state-dir", str(tmp_path / "state")
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith("sidekick: error: ")
    assert MARKER not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("url", "options"),
    [
        (f"otlp://127.0.0.1:4318?timeout=soon&headers=X-Key={MARKER}", {}),
        (f"http://127.0.0.1:9000/ingest?token={MARKER}", {"timeout": "soon"}),
        (f"elasticsearch://127.0.0.1:9200/logs?token={MARKER}", {}),
        (f"loki://127.0.0.1:3100?secret={MARKER}", {}),
    ],
)
def test_sink_errors_name_the_url_masked(url: str, options: dict[str, str]) -> None:
    # Straight from the sink, before the CLI's last-line masking of its error message.
    with pytest.raises(ConfigError) as info:
        create_sink(OutputSpec(url, options))
    assert "***" in str(info.value)
    assert MARKER not in str(info.value)


def test_output_given_twice_does_not_echo_the_secret(tmp_path: Path) -> None:
    output = f"http://127.0.0.1:1/ingest?token={MARKER}"
    result = ship_run(
        "--input", f"file://{tmp_path}/*.log",
        "--output", output, "--output", output,
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "given twice" in result.stderr
    assert "token=***" in result.stderr
    assert MARKER not in result.stderr


class Failing:
    """Answers every request badly: 401, 400 or 5xx depending on the path."""

    def __init__(self) -> None:
        self.port = free_port()
        self.paths: list[str] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.paths.append(request.path)
        if request.path == "/reject":
            return web.Response(status=400, text="bad records")
        if request.path == "/v1/logs":
            return web.Response(status=500, text="collector broke")
        if request.path == "/loki/api/v1/push":
            return web.Response(status=503, text="ingester busy")
        return web.Response(status=401, text="who are you")

    async def __aenter__(self) -> Failing:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def fetch(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return f"{r.status}\n{r.read().decode()}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code}\n{exc.read().decode()}"


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_running_shipper_shows_no_secret_anywhere(tmp_path: Path, log_format: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text(MARKER + "\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(f"line {i}\n" for i in range(20)))
    state = tmp_path / "state"
    admin = free_port()
    ingest = free_port()
    closed = free_port()
    async with Failing() as srv:
        local = f"127.0.0.1:{srv.port}"
        outputs = [
            {"url": f"http://127.0.0.1:{closed}/ingest?token={MARKER}"},
            {"url": f"https://127.0.0.1:{closed}/ingest?sig={MARKER}&x=1"},
            {"url": f"http://{local}/auth?access_token={MARKER}"},
            {"url": f"http://{local}/reject?apikey={MARKER}"},
            {"url": f"http://shipper@{local}/basic", "options": {"password_file": str(secret)}},
            {"url": f"http://{local}/bearer", "options": {"bearer_token_file": str(secret)}},
            {"url": f"elasticsearch://shipper@{local}/logs", "options": {"password_file": str(secret)}},
            {"url": f"opensearch://{local}/logs", "options": {"api_key_file": str(secret)}},
            {"url": f"loki://{local}", "options": {"bearer_token_file": str(secret)}},
            {"url": f"otlp://{local}?headers=Authorization=Bearer%20{MARKER}"},
            {"url": f"otlp://127.0.0.1:{closed}/v1/logs", "options": {"headers": {"X-Api-Key": MARKER}}},
            {"url": f"syslog+tcp://127.0.0.1:{closed}"},
            {"url": f"file://{tmp_path}/out.ndjson?token={MARKER}"},
        ]  # fmt: skip
        config = tmp_path / "ship.yaml"
        config.write_text(json.dumps({"ship": {"outputs": outputs}}))
        stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
        proc = start(
            [
                "--config", str(config),
                "--input", f"file://{logs}/*.log",
                "--input", f"http://127.0.0.1:{ingest}",
                "--ingest-token-file", str(secret),
                "--state-dir", str(state),
                "--admin-addr", f"127.0.0.1:{admin}",
                "--log-format", log_format, "--log-level", "debug",
                "--shutdown-timeout", "2s",
            ],
            stdout,
            stderr,
        )  # fmt: skip
        try:
            await wait_for(lambda: "200" in _status(admin, "/readyz"), timeout=30)
            assert 200 <= await asyncio.to_thread(post_ingest, ingest) < 300
            # Every failing kind was tried at least twice and the rejects were dead-lettered.
            dead = state / DEAD_LETTER_FILE
            await wait_for(
                lambda: (
                    all(
                        srv.paths.count(p) >= 2
                        for p in ("/auth", "/basic", "/bearer", "/_bulk", "/loki/api/v1/push")
                    )
                    and {d["output"] for d in read_ndjson(dead)}
                    >= {f"http://{local}/reject?apikey=***", f"otlp {local}"}
                ),
                timeout=60,
            )
            pages = {
                p: await asyncio.to_thread(fetch, admin, p)
                for p in ("/metrics", "/healthz", "/readyz")
            }
        finally:
            await asyncio.to_thread(stop, proc)
    shown = stderr.read_text() + stdout.read_text()
    # The secrets were in play: masked URLs were logged and labelled, and files were read.
    assert "token=***" in shown and "HTTP 401" in shown
    assert f'output="http://{local}/auth?access_token=***"' in pages["/metrics"]
    assert f'output="file://{tmp_path}/out.ndjson?token=***"' in pages["/metrics"]
    texts = {"stdout+stderr": shown, **pages}
    for path in sorted(state.rglob("*")):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    assert DEAD_LETTER_FILE in "".join(texts)
    leaks = [where for where, text in texts.items() if MARKER in text]
    assert leaks == []


def start(args: list[str], stdout: Path, stderr: Path) -> subprocess.Popen[bytes]:
    with stdout.open("wb") as out, stderr.open("wb") as err:
        return subprocess.Popen(
            [*SIDEKICK, "ship", *args],
            stdout=out,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def post_ingest(port: int) -> int:
    """POST one record to the ingest input, authenticated with the secret token."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/logs",
        data=json.dumps({"message": "posted"}).encode(),
        headers={"Authorization": f"Bearer {MARKER}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        status: int = response.status
        return status


def _status(port: int, path: str) -> str:
    try:
        return fetch(port, path)
    except OSError:
        return ""


class Echoing:
    """Answers every request by quoting it back, as gateways and debugging proxies do: a 400
    naming every header and the query (Elasticsearch's error shape on ``/_bulk``, a
    ``google.rpc.Status`` on ``/v1/logs``), or on ``/partial`` a 200 OTLP partial success
    whose message quotes the headers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.paths: list[str] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.paths.append(request.path)
        said = (
            f"{'; '.join(f'{k}: {v}' for k, v in request.headers.items())} ?{request.query_string}"
        )
        if request.path == "/_bulk":
            error = {"type": "security_exception", "reason": f"bad request [{said}]"}
            return web.json_response({"error": error, "status": 400}, status=400)
        if request.path == "/v1/logs":
            status = Status(code=3, message=f"bad request: {said}")
            return web.Response(
                status=400, body=status.SerializeToString(), content_type="application/x-protobuf"
            )
        if request.path == "/partial":
            answer = ExportLogsServiceResponse()
            answer.partial_success.rejected_log_records = 1
            answer.partial_success.error_message = f"dropped one: {said}"
            return web.Response(
                body=answer.SerializeToString(), content_type="application/x-protobuf"
            )
        return web.Response(status=400, text=f"bad request: {said}")

    async def __aenter__(self) -> Echoing:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def test_a_server_quoting_the_request_back_shows_no_secret(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(MARKER + "\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(f"line {i}\n" for i in range(5)))
    state = tmp_path / "state"
    admin = free_port()
    # Two servers: outputs of one kind to one host:port would be the same output.
    async with Echoing() as srv, Echoing() as partial:
        local = f"127.0.0.1:{srv.port}"
        outputs = [
            {"url": f"http://{local}/header", "options": {"headers": {"X-Api-Key": MARKER}}},
            {"url": f"http://{local}/query?access_token={MARKER}"},
            {"url": f"http://{local}/bearer", "options": {"bearer_token_file": str(secret)}},
            {"url": f"http://shipper@{local}/basic", "options": {"password_file": str(secret)}},
            {"url": f"elasticsearch://{local}/logs", "options": {"api_key_file": str(secret)}},
            {"url": f"loki://{local}", "options": {"bearer_token_file": str(secret)}},
            {"url": f"otlp://{local}", "options": {"headers": {"Authorization": f"Bearer {MARKER}"}}},
            {"url": f"otlp://127.0.0.1:{partial.port}/partial", "options": {"headers": {"X-Token": MARKER}}},
        ]  # fmt: skip
        config = tmp_path / "ship.yaml"
        config.write_text(json.dumps({"ship": {"outputs": outputs}}))
        stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
        proc = start(
            [
                "--config", str(config),
                "--input", f"file://{logs}/*.log",
                "--state-dir", str(state),
                "--admin-addr", f"127.0.0.1:{admin}",
                "--log-level", "debug",
                "--shutdown-timeout", "2s",
            ],
            stdout,
            stderr,
        )  # fmt: skip
        try:
            dead = state / DEAD_LETTER_FILE
            wanted = 7 * 5  # every output but the partial success dead-letters its 5 records
            await wait_for(lambda: dead.exists() and len(read_ndjson(dead)) >= wanted, timeout=60)
            await wait_for(lambda: "/partial" in partial.paths, timeout=30)
            metrics = await asyncio.to_thread(fetch, admin, "/metrics")
        finally:
            await asyncio.to_thread(stop, proc)
    shown = stderr.read_text() + stdout.read_text()
    reasons = " ".join(d["reason"] for d in read_ndjson(dead))
    # The answers were read and quoted, with the secrets masked where they stood.
    assert "X-Api-Key: ***" in reasons and "access_token=***" in reasons, reasons
    assert "Authorization: ***" in reasons
    assert "dropped one: " in shown
    # The partial success still decoded (the mask keeps the length): one partial rejection,
    # no bad response, nothing sent twice.
    assert partial.paths.count("/partial") == 1
    events = "sidekick_ship_output_events_total"
    otlp = f"otlp 127.0.0.1:{partial.port}"
    assert f'{events}{{event="rejected_by_peer",output="{otlp}"}} 1.0' in metrics
    assert f'{events}{{event="bad_responses",output="{otlp}"}} 0.0' in metrics
    texts = {"stdout+stderr": shown, "/metrics": metrics, "dead letters": dead.read_text()}
    assert [where for where, text in texts.items() if MARKER in text] == []


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("bearer_token_file", f"{MARKER}\nsecond-line"),
        ("api_key_file", f"{MARKER}\r\nX-Injected: 1"),
        ("headers", f"{MARKER}\r\nX-Injected: 1"),
    ],
)
def test_a_secret_holding_a_line_break_is_refused_at_start_without_showing_it(
    tmp_path: Path, option: str, value: str
) -> None:
    # aiohttp refuses a header holding a line break at every request: the output would retry
    # forever, logging a traceback each time.
    secret = tmp_path / "secret"
    secret.write_text(value + "\n")
    scheme = "elasticsearch" if option == "api_key_file" else "http"
    given: object = {"X-Api-Key": value} if option == "headers" else str(secret)
    config = tmp_path / "ship.yaml"
    url = f"{scheme}://127.0.0.1:{free_port()}/ingest"
    config.write_text(json.dumps({"ship": {"outputs": [{"url": url, "options": {option: given}}]}}))
    result = ship_run(
        "--config", str(config), "--input", f"file://{tmp_path}/*.log",
        "--state-dir", str(tmp_path / "state"), "--check",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "line break" in result.stderr and f"option {option!r}" in result.stderr
    assert "Traceback" not in result.stderr
    assert MARKER not in result.stderr + result.stdout


async def test_custom_headers_and_short_secrets_quoted_back_are_masked(tmp_path: Path) -> None:
    # Only the values of secret-looking headers of 6 characters or more used to be masked: a
    # token in a header named X-Custom, or a 5-character key, went verbatim into the log and
    # the dead-letter file of every output a server quoted the request back to.
    short = "Kq9Zx"
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(f"line {i}\n" for i in range(5)))
    state = tmp_path / "state"
    admin = free_port()
    async with Echoing() as srv, Echoing() as partial:
        local = f"127.0.0.1:{srv.port}"
        custom = {"headers": {"X-Custom": MARKER, "X-Flag": "true"}}
        outputs = [
            {"url": f"http://{local}/custom", **{"options": custom}},
            {"url": f"http://{local}/short", "options": {"headers": {"X-Api-Key": short}}},
            {"url": f"loki://{local}", "options": {"tenant": MARKER}},
            {"url": f"otlp://{local}", "options": custom},
            {"url": f"otlp://127.0.0.1:{partial.port}/partial", "options": custom},
        ]  # fmt: skip
        config = tmp_path / "ship.yaml"
        config.write_text(json.dumps({"ship": {"outputs": outputs}}))
        stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
        proc = start(
            [
                "--config", str(config),
                "--input", f"file://{logs}/*.log",
                "--state-dir", str(state),
                "--admin-addr", f"127.0.0.1:{admin}",
                "--log-level", "debug",
                "--shutdown-timeout", "2s",
            ],
            stdout,
            stderr,
        )  # fmt: skip
        try:
            dead = state / DEAD_LETTER_FILE
            wanted = 4 * 5  # every output but the partial success dead-letters its 5 records
            await wait_for(lambda: dead.exists() and len(read_ndjson(dead)) >= wanted, timeout=60)
            await wait_for(lambda: "/partial" in partial.paths, timeout=30)
            metrics = await asyncio.to_thread(fetch, admin, "/metrics")
        finally:
            await asyncio.to_thread(stop, proc)
    shown = stderr.read_text() + stdout.read_text()
    reasons = " ".join(d["reason"] for d in read_ndjson(dead))
    assert f"X-Custom: {'*' * len(MARKER)}" in reasons, reasons
    assert "X-Api-Key: *****;" in reasons
    # A short value is masked where it stands alone, not inside other words.
    assert "X-Flag: ****;" in reasons and "Content-Type: application/" in reasons
    # A configured value is masked in what is shown, not in the answer before it is read:
    # the partial success still decodes, as one partial rejection.
    assert partial.paths.count("/partial") == 1
    assert "dropped one: " in shown and f"X-Custom: {'*' * len(MARKER)}" in shown
    events = "sidekick_ship_output_events_total"
    otlp = f"otlp 127.0.0.1:{partial.port}"
    assert f'{events}{{event="rejected_by_peer",output="{otlp}"}} 1.0' in metrics
    assert f'{events}{{event="bad_responses",output="{otlp}"}} 0.0' in metrics
    texts = {"stdout+stderr": shown, "/metrics": metrics, "dead letters": dead.read_text()}
    assert [where for where, text in texts.items() if MARKER in text or short in text] == []
