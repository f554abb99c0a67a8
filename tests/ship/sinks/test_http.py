"""The ``http:`` output against a real aiohttp server on 127.0.0.1: outcomes, auth, TLS."""

from __future__ import annotations

import base64
import email.utils
import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sidekick.core.errors import ConfigError, PermanentError, TemporaryError
from sidekick.ship.records import Sink
from tests.ship.sinks.conftest import ProtocolServer, TlsFiles, make_records, serve

MakeSink = Callable[..., Sink]


def messages(server: ProtocolServer) -> list[str]:
    return [json.loads(line)["message"] for s in server.requests for line in s.body.splitlines()]


async def test_batch_is_one_ndjson_post_to_the_url_as_written(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    sink = make_sink(f"http://{server.hostport}/ingest?stream=web&token=abc")
    assert (await sink.send(make_records(3))).all_delivered
    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", "/ingest")
    assert seen.query == {"stream": "web", "token": "abc"}
    assert seen.headers["Content-Type"] == "application/x-ndjson"
    assert messages(server) == ["line 0", "line 1", "line 2"]
    assert sink.name == f"http://{server.hostport}/ingest?stream=web&token=***"


@pytest.mark.parametrize("status", [401, 403, 404, 405, 407])
async def test_credential_and_url_statuses_are_retried_not_rejected(
    server: ProtocolServer, make_sink: MakeSink, status: int
) -> None:
    server.reply(status, "nope")
    sink = make_sink(f"http://{server.hostport}/ingest")
    with pytest.raises(TemporaryError, match=f"HTTP {status}; check the output's"):
        await sink.send(make_records(1))


@pytest.mark.parametrize("status", [408, 429, 500, 503])
async def test_busy_and_server_errors_are_retried_with_retry_after_seconds(
    server: ProtocolServer, make_sink: MakeSink, status: int
) -> None:
    server.reply(status, "busy", headers={"Retry-After": "7"})
    sink = make_sink(f"http://{server.hostport}/ingest")
    with pytest.raises(TemporaryError) as info:
        await sink.send(make_records(1))
    assert info.value.retry_after == 7.0


async def test_retry_after_as_an_http_date_is_honoured(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    server.reply(503, "maintenance", headers={"Retry-After": when})
    sink = make_sink(f"http://{server.hostport}/ingest")
    with pytest.raises(TemporaryError) as info:
        await sink.send(make_records(1))
    assert info.value.retry_after is not None
    assert 100 < info.value.retry_after <= 120


async def test_other_4xx_rejects_the_batch_with_the_servers_text(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    server.reply(400, "mapping error: field [x] is bad")
    sink = make_sink(f"http://{server.hostport}/ingest")
    with pytest.raises(PermanentError, match=r"^HTTP 400: mapping error: field \[x\] is bad$"):
        await sink.send(make_records(2))


async def test_413_sends_the_batch_in_halves(server: ProtocolServer, make_sink: MakeSink) -> None:
    server.reply(413, "too large")
    sink = make_sink(f"http://{server.hostport}/ingest")
    assert (await sink.send(make_records(4))).all_delivered
    assert [len(s.body.splitlines()) for s in server.requests] == [4, 2, 2]


async def test_after_413_a_failed_second_half_is_retried_alone(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    server.reply(413, "too large")
    server.reply(204)
    server.reply(503, "busy")
    sink = make_sink(f"http://{server.hostport}/ingest")
    result = await sink.send(make_records(4))
    # The first half is stored; retrying the whole batch would send it twice.
    assert result.retry == [2, 3] and not result.rejected
    assert [len(s.body.splitlines()) for s in server.requests] == [4, 2, 2]


async def test_after_413_a_refused_second_half_is_rejected_alone(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    server.reply(413, "too large")
    server.reply(204)
    server.reply(400, "bad")
    sink = make_sink(f"http://{server.hostport}/ingest")
    result = await sink.send(make_records(4))
    assert [i for i, _why in result.rejected] == [2, 3] and not result.retry


async def test_redirect_is_not_followed(server: ProtocolServer, make_sink: MakeSink) -> None:
    server.reply(307, "", headers={"Location": "/elsewhere"})
    sink = make_sink(f"http://{server.hostport}/ingest")
    with pytest.raises(TemporaryError, match="HTTP 307; check the output's URL"):
        await sink.send(make_records(1))
    assert [s.path for s in server.requests] == ["/ingest"]


async def test_bearer_token_file_is_read_again_when_it_changes(
    server: ProtocolServer, make_sink: MakeSink, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    sink = make_sink(f"http://{server.hostport}/ingest", bearer_token_file=str(token))
    await sink.send(make_records(1))
    replacement = tmp_path / "token.new"
    replacement.write_text("second\n")
    replacement.rename(token)  # as a Kubernetes Secret volume swaps its files
    await sink.send(make_records(1))
    assert [s.headers["Authorization"] for s in server.requests] == [
        "Bearer first",
        "Bearer second",
    ]


async def test_basic_auth_password_comes_from_a_file(
    server: ProtocolServer, make_sink: MakeSink, tmp_path: Path
) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    sink = make_sink(
        f"http://{server.hostport}/ingest", username="shipper", password_file=str(password)
    )
    await sink.send(make_records(1))
    expected = "Basic " + base64.b64encode(b"shipper:s3cret").decode()
    assert server.requests[0].headers["Authorization"] == expected


async def test_user_name_in_the_url_goes_with_the_password_file(
    server: ProtocolServer, make_sink: MakeSink, tmp_path: Path
) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    sink = make_sink(f"http://shipper@{server.hostport}/ingest", password_file=str(password))
    assert (await sink.send(make_records(1))).all_delivered
    expected = "Basic " + base64.b64encode(b"shipper:s3cret").decode()
    assert server.requests[0].headers["Authorization"] == expected


async def test_headers_option_is_sent_with_every_request(
    server: ProtocolServer, make_sink: MakeSink
) -> None:
    sink = make_sink(f"http://{server.hostport}/ingest", headers={"X-Tenant": "shop", "X-N": 3})
    await sink.send(make_records(1))
    assert server.requests[0].headers["X-Tenant"] == "shop"
    assert server.requests[0].headers["X-N"] == "3"


async def test_gzip_option_compresses_the_body(server: ProtocolServer, make_sink: MakeSink) -> None:
    sink = make_sink(f"http://{server.hostport}/ingest", gzip=True)
    await sink.send(make_records(2))
    assert server.requests[0].headers["Content-Encoding"] == "gzip"
    assert messages(server) == ["line 0", "line 1"]


async def test_https_with_ca_file_verifies_the_server(
    tls_files: TlsFiles, make_sink: MakeSink
) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls_files.cert, tls_files.key)
    async with serve(ctx) as srv:
        trusted = make_sink(f"https://{srv.hostport}/ingest", ca_file=str(tls_files.cert))
        assert (await trusted.send(make_records(1))).all_delivered
        untrusted = make_sink(f"https://{srv.hostport}/ingest")
        with pytest.raises(TemporaryError, match="cannot reach"):
            await untrusted.send(make_records(1))
    assert len(srv.requests) == 1


def test_ca_file_on_plain_http_is_a_config_error(make_sink: MakeSink, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use the https:// scheme"):
        make_sink("http://127.0.0.1:9000/ingest", ca_file=str(tmp_path / "ca.pem"))


def test_unknown_option_is_a_config_error_naming_the_known_ones(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'compress'; use one of .*bearer_token"):
        make_sink("http://127.0.0.1:9000/ingest", compress=True)


def test_missing_token_file_is_a_config_error(make_sink: MakeSink, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"option 'bearer_token_file' names .* does not exist"):
        make_sink("http://127.0.0.1:9000/ingest", bearer_token_file=str(tmp_path / "none"))


def test_password_in_the_url_is_refused_without_showing_it(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError) as info:
        make_sink("http://shipper:hunter2@127.0.0.1:9000/ingest")
    assert "hunter2" not in str(info.value)
    assert "password_file" in str(info.value)


@pytest.mark.parametrize("url", ["http:/ingest", "http://:9000/ingest", "https:"])
def test_url_without_a_host_is_a_config_error(make_sink: MakeSink, url: str) -> None:
    with pytest.raises(ConfigError, match="http"):
        make_sink(url)


def test_configured_header_values_and_short_secrets_are_masked_in_what_is_shown() -> None:
    from sidekick.ship.sinks._http import request_secrets

    secrets = request_secrets(
        "http://h/p?token=abc&page=2",
        {
            "Content-Type": "application/json",
            "X-Custom": "opaque-value-42",
            "X-Flag": "true",
            "X-Api-Key": "k3y",
            "Authorization": "Bearer long-bearer-token",
        },
        ("pw1",),
    )
    # Masked in the body before it is read: secret-looking values of 6 characters or more.
    assert secrets.body == {"Bearer long-bearer-token", "long-bearer-token"}
    answer = (
        '{"errors":true,"said":"X-Custom: opaque-value-42; X-Flag: true; X-Api-Key: k3y; '
        'k3ys pw1 ?token=abc; application/json; Bearer long-bearer-token"}'
    )
    assert secrets.mask(answer) == (
        '{"errors":****,"said":"X-Custom: ***************; X-Flag: ****; X-Api-Key: ***; '
        'k3ys *** ?token=***; application/json; ************************"}'
    )
