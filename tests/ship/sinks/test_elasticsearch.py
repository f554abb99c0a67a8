"""The Elasticsearch/OpenSearch output against a server speaking the documented _bulk protocol.

No Elasticsearch runs here: these are protocol tests. Responses follow the shapes of the bulk
API reference (``took``/``errors``/``items`` with one ``create`` object per document).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sidekick.core.errors import ConfigError, PermanentError, TemporaryError
from sidekick.ship.records import Sink
from sidekick.ship.sinks.elasticsearch import document_id
from tests.conftest import free_port
from tests.ship.sinks.conftest import ProtocolServer, Seen, TlsFiles, make_records, serve

MakeSink = Callable[..., Sink]


def ndjson(seen: Seen) -> list[dict[str, Any]]:
    text = seen.body.decode()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def item(status: int, index: str = "logs", doc_id: str = "x") -> dict[str, Any]:
    """One bulk response item, as in the bulk API reference."""
    body: dict[str, Any] = {"_index": index, "_id": doc_id, "status": status}
    if status in (200, 201):
        body.update(
            _version=1,
            result="created",
            _shards={"total": 2, "successful": 1, "failed": 0},
            _seq_no=0,
            _primary_term=1,
        )
    elif status == 409:
        body["error"] = {
            "type": "version_conflict_engine_exception",
            "reason": f"[{doc_id}]: version conflict, document already exists (current version [1])",
            "index_uuid": "aAsFqTI0Tc2W0LCWgPNrOA",
            "shard": "0",
            "index": index,
        }
    elif status == 429:
        body["error"] = {
            "type": "es_rejected_execution_exception",
            "reason": "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, "
            "replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1024, max_coordinating_and_primary_bytes=0]",
        }
    elif status == 400:
        body["error"] = {
            "type": "document_parsing_exception",
            "reason": f"[1:80] failed to parse field [http.response.status_code] of type [long] "
            f"in document with id '{doc_id}'. Preview of field's value: 'abc'",
            "caused_by": {
                "type": "illegal_argument_exception",
                "reason": 'For input string: "abc"',
            },
        }
    elif status == 503:
        body["error"] = {
            "type": "unavailable_shards_exception",
            "reason": "[logs][0] primary shard is not active Timeout: [1m]",
        }
    return {"create": body}


def bulk_response(statuses: list[int]) -> bytes:
    errors = any(not (200 <= s < 300) for s in statuses)
    return json.dumps(
        {
            "took": 30,
            "errors": errors,
            "items": [item(s, doc_id=f"d{i}") for i, s in enumerate(statuses)],
        }
    ).encode()


def all_created(seen: Seen) -> web.Response:
    n = len(seen.body.splitlines()) // 2
    return web.json_response(body=bulk_response([201] * n).decode())


@pytest.fixture
def es(server: ProtocolServer) -> ProtocolServer:
    server.default = all_created
    return server


async def test_bulk_request_is_ndjson_create_actions_each_followed_by_its_document(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    records = make_records(3)
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    result = await sink.send(records)
    assert result.all_delivered
    [seen] = es.requests
    assert seen.method == "POST"
    assert seen.path == "/_bulk"
    assert seen.headers["Content-Type"] == "application/x-ndjson"
    lines = ndjson(seen)
    assert len(lines) == 6
    for i, record in enumerate(records):
        action, doc = lines[2 * i], lines[2 * i + 1]
        assert list(action) == ["create"]
        assert action["create"]["_index"] == "logs"
        assert doc == record


async def test_request_body_is_gzip_compressed_by_default(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    await sink.send(make_records(2))
    [seen] = es.requests
    assert seen.headers["Content-Encoding"] == "gzip"
    assert seen.raw[:2] == b"\x1f\x8b"


async def test_gzip_false_sends_the_body_uncompressed(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    sink = make_sink(f"elasticsearch://{es.hostport}/logs?gzip=false")
    await sink.send(make_records(2))
    [seen] = es.requests
    assert "Content-Encoding" not in seen.headers
    assert seen.raw.startswith(b'{"create":')


async def test_response_is_filtered_to_the_fields_matched(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    await sink.send(make_records(1))
    assert es.requests[0].query["filter_path"] == "errors,items.*.status,items.*.error"


async def test_index_date_pattern_is_filled_from_each_record_timestamp(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    records = make_records(2)
    records[0]["@timestamp"] = "2026-11-21T23:59:59.999999999Z"
    records[1]["@timestamp"] = "2026-11-22T00:30:00.5+02:00"  # 2026-11-21 22:30 UTC
    sink = make_sink(f"elasticsearch://{es.hostport}/logs-%Y.%m.%d")
    await sink.send([*records, {**records[0], "@timestamp": "2026-11-22T00:00:00Z"}])
    actions = ndjson(es.requests[0])[0::2]
    assert [a["create"]["_index"] for a in actions] == [
        "logs-2026.11.21",
        "logs-2026.11.21",
        "logs-2026.11.22",
    ]


async def test_document_id_is_derived_from_file_identity_offset_and_text(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    records = make_records(2)
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    await sink.send(records)
    await sink.send(records)  # a resend after a crash produces the same ids
    first = [a["create"]["_id"] for a in ndjson(es.requests[0])[0::2]]
    second = [a["create"]["_id"] for a in ndjson(es.requests[1])[0::2]]
    assert first == second
    assert first[0] != first[1]
    assert first[0] == document_id("2049:1234:9f86d081", 0, "line 0").decode()
    assert len(first[0]) == 24


async def test_same_offset_with_different_text_gets_a_different_id() -> None:
    # After a copytruncate the same file and offset hold a new line: it must not collide.
    assert document_id("f", 0, "old line") != document_id("f", 0, "new line")


async def test_record_without_file_identity_gets_no_id(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    record = make_records(1)[0]
    del record["log.file.id"]
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    await sink.send([record])
    action = ndjson(es.requests[0])[0]
    assert action == {"create": {"_index": "logs"}}


async def test_partial_failure_retries_429_rejects_400_and_counts_409_as_delivered(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    es.reply(200, bulk_response([201, 409, 429, 400, 503, 201]), content_type="application/json")
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    result = await sink.send(make_records(6))
    assert result.retry == [2, 4]
    [(index, reason)] = result.rejected
    assert index == 3
    assert reason.startswith("HTTP 400 document_parsing_exception: [1:80] failed to parse field")
    assert "caused by illegal_argument_exception" in reason


async def test_errors_true_with_only_conflicts_is_all_delivered(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    es.reply(200, bulk_response([409, 409]), content_type="application/json")
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    result = await sink.send(make_records(2))
    assert result.all_delivered


async def test_response_with_wrong_item_count_resends_the_whole_batch(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    es.reply(200, bulk_response([201, 400]), content_type="application/json")
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    with pytest.raises(TemporaryError, match="2 items for 3 documents"):
        await sink.send(make_records(3))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"took": 3, "errors": false}', 'no "items"'),
        ('{"took": 3, "errors": false, "items": []}', "0 items for 3 documents"),
        (bulk_response([201]), "1 items for 3 documents"),
        (bulk_response([201, 201, 201, 201]), "4 items for 3 documents"),
        ("", "an empty body"),
    ],
)
async def test_errors_false_without_one_item_per_document_resends_the_batch(
    es: ProtocolServer, make_sink: MakeSink, body: str | bytes, problem: str
) -> None:
    es.reply(200, body, content_type="application/json")
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    with pytest.raises(TemporaryError, match=problem):
        await sink.send(make_records(3))
    assert sink.counters() == {"bad_responses": 1}  # type: ignore[attr-defined]


async def test_bad_responses_are_logged_once_a_minute(
    es: ProtocolServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    es.default = lambda seen: web.json_response({"took": 1, "errors": False})
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    for _ in range(5):
        with pytest.raises(TemporaryError):
            await sink.send(make_records(2))
    assert sink.counters() == {"bad_responses": 5}  # type: ignore[attr-defined]
    assert caplog.text.count("does not confirm the batch") == 1


async def test_a_redirect_is_not_followed_and_the_batch_is_retried(
    es: ProtocolServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    # A proxy sending the POST to a login page: following it would GET a 200 page.
    es.reply(302, "", headers={"Location": f"http://{es.hostport}/login?token=T0K3N"})
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    with pytest.raises(TemporaryError, match="HTTP 302; check the output's URL"):
        await sink.send(make_records(1))
    assert [s.method for s in es.requests] == ["POST"]
    assert "redirect to http://" in caplog.text
    assert "T0K3N" not in caplog.text


async def test_unreadable_200_response_is_a_temporary_error(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    es.reply(200, "<html>proxy page</html>", content_type="text/html")
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    with pytest.raises(TemporaryError, match="unreadable items"):
        await sink.send(make_records(1))


async def test_whole_request_429_is_temporary_and_carries_retry_after(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    es.reply(
        429,
        json.dumps(
            {"error": {"type": "es_rejected_execution_exception", "reason": "busy"}, "status": 429}
        ),
        content_type="application/json",
        headers={"Retry-After": "7"},
    )
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    with pytest.raises(TemporaryError) as info:
        await sink.send(make_records(1))
    assert info.value.retry_after == 7.0


async def test_whole_request_503_is_temporary(es: ProtocolServer, make_sink: MakeSink) -> None:
    es.reply(503, "", content_type="application/json")
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    with pytest.raises(TemporaryError, match="HTTP 503"):
        await sink.send(make_records(1))


async def test_401_is_retried_not_dead_lettered(es: ProtocolServer, make_sink: MakeSink) -> None:
    es.reply(
        401,
        json.dumps(
            {
                "error": {
                    "type": "security_exception",
                    "reason": "unable to authenticate user [elastic] for REST request [/_bulk]",
                },
                "status": 401,
            }
        ),
        content_type="application/json",
    )
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    with pytest.raises(TemporaryError, match="check the output's credentials"):
        await sink.send(make_records(1))


async def test_whole_request_400_rejects_the_batch_with_the_reason(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    es.reply(
        400,
        json.dumps(
            {
                "error": {
                    "type": "illegal_argument_exception",
                    "reason": "The bulk request must be terminated by a newline [\\n]",
                },
                "status": 400,
            }
        ),
        content_type="application/json",
    )
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    with pytest.raises(PermanentError, match="illegal_argument_exception: The bulk request must"):
        await sink.send(make_records(1))


async def test_413_sends_the_batch_again_in_halves(es: ProtocolServer, make_sink: MakeSink) -> None:
    es.reply(413, "")
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    result = await sink.send(make_records(4))
    assert result.all_delivered
    assert [len(ndjson(s)) // 2 for s in es.requests] == [4, 2, 2]


async def test_single_record_still_too_large_is_rejected(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    es.reply(413, "")
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    result = await sink.send(make_records(1))
    assert [i for i, _ in result.rejected] == [0]


async def test_connection_refused_is_a_temporary_error(make_sink: MakeSink) -> None:
    sink = make_sink(f"elasticsearch://127.0.0.1:{free_port()}/logs")
    with pytest.raises(TemporaryError, match="cannot reach"):
        await sink.send(make_records(1))


async def test_connection_is_reused_across_batches(es: ProtocolServer, make_sink: MakeSink) -> None:
    sink = make_sink(f"opensearch://{es.hostport}/logs")
    for _ in range(3):
        await sink.send(make_records(1))
    assert len({s.peer_port for s in es.requests}) == 1


async def test_api_key_file_is_sent_as_apikey_authorization(
    es: ProtocolServer, make_sink: MakeSink, tmp_path: Path
) -> None:
    key = tmp_path / "key"
    key.write_text("VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==\n")
    sink = make_sink(f"elasticsearch://{es.hostport}/logs?api_key_file={key}")
    await sink.send(make_records(1))
    assert (
        es.requests[0].headers["Authorization"]
        == "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
    )


async def test_basic_auth_reads_the_password_from_a_file(
    es: ProtocolServer, make_sink: MakeSink, tmp_path: Path
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    sink = make_sink(
        f"elasticsearch://{es.hostport}/logs", username="elastic", password_file=str(pw)
    )
    await sink.send(make_records(1))
    # base64("elastic:s3cret")
    assert es.requests[0].headers["Authorization"] == "Basic ZWxhc3RpYzpzM2NyZXQ="


async def test_pipeline_option_is_passed_to_bulk(es: ProtocolServer, make_sink: MakeSink) -> None:
    sink = make_sink(f"elasticsearch://{es.hostport}/logs", pipeline="nginx-geoip")
    await sink.send(make_records(1))
    assert es.requests[0].query["pipeline"] == "nginx-geoip"


def test_password_in_the_url_is_a_config_error(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError, match="password in the URL; put it in a file"):
        make_sink("elasticsearch://elastic:hunter2@127.0.0.1:9200/logs")


def test_unknown_option_is_a_config_error(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError, match="unknown option 'compression'; use one of"):
        make_sink("elasticsearch://127.0.0.1:9200/logs?compression=gzip")


def test_non_boolean_gzip_is_a_config_error(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError, match="option 'gzip': expected bool"):
        make_sink("elasticsearch://127.0.0.1:9200/logs?gzip=maybe")


def test_uppercase_index_is_a_config_error(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError, match="option 'index' 'Logs' is not a valid index name"):
        make_sink("elasticsearch://127.0.0.1:9200/Logs")


def test_minute_in_index_pattern_is_a_config_error(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError, match="uses %M"):
        make_sink("elasticsearch://127.0.0.1:9200/logs-%H%M")


def test_missing_api_key_file_is_a_config_error(make_sink: MakeSink, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api_key_file' names .* which does not exist"):
        make_sink(f"elasticsearch://127.0.0.1:9200/logs?api_key_file={tmp_path}/nope")


def test_username_without_password_file_is_a_config_error(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError, match="'password_file' is not set"):
        make_sink("elasticsearch://elastic@127.0.0.1:9200/logs")


def test_ca_file_on_plain_http_is_a_config_error(make_sink: MakeSink, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"use the elasticsearch\+https:// scheme"):
        make_sink(f"elasticsearch://127.0.0.1:9200/logs?ca_file={tmp_path}/ca.pem")


async def test_https_verifies_the_server_with_the_ca_file(
    tls_files: TlsFiles, make_sink: MakeSink
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    async with serve(context) as es:
        es.default = all_created
        sink = make_sink(f"elasticsearch+https://{es.hostport}/logs?ca_file={tls_files.cert}")
        assert (await sink.send(make_records(2))).all_delivered
        assert len(es.requests) == 1


async def test_https_server_not_signed_by_a_trusted_ca_is_a_temporary_error(
    tls_files: TlsFiles, make_sink: MakeSink
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    async with serve(context) as es:
        sink = make_sink(f"elasticsearch+https://{es.hostport}/logs")
        with pytest.raises(TemporaryError, match="certificate verify failed"):
            await sink.send(make_records(1))
        assert es.requests == []


async def test_password_file_is_read_again_after_a_401(
    es: ProtocolServer, make_sink: MakeSink, tmp_path: Path
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("old")
    es.reply(401, "", content_type="application/json")
    sink = make_sink(
        f"elasticsearch://{es.hostport}/logs", username="elastic", password_file=str(pw)
    )
    with pytest.raises(TemporaryError):
        await sink.send(make_records(1))
    pw.write_text("rotated")  # the Secret was updated
    assert (await sink.send(make_records(1))).all_delivered
    # base64("elastic:old"), then base64("elastic:rotated")
    assert [s.headers["Authorization"] for s in es.requests] == [
        "Basic ZWxhc3RpYzpvbGQ=",
        "Basic ZWxhc3RpYzpyb3RhdGVk",
    ]


def test_api_key_and_basic_auth_together_are_a_config_error(
    make_sink: MakeSink, tmp_path: Path
) -> None:
    secret = tmp_path / "s"
    secret.write_text("x")
    with pytest.raises(ConfigError, match="use only one way to authenticate"):
        make_sink(
            "elasticsearch://127.0.0.1:9200/logs",
            username="u",
            password_file=str(secret),
            api_key_file=str(secret),
        )


async def test_item_refused_for_lack_of_privileges_is_retried_not_rejected(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    response = {
        "took": 2,
        "errors": True,
        "items": [
            item(201),
            {
                "create": {
                    "_index": "logs",
                    "_id": "d1",
                    "status": 403,
                    "error": {
                        "type": "security_exception",
                        "reason": "action [indices:data/write/bulk[s]] is unauthorized for user [shipper]",
                    },
                }
            },
        ],
    }
    es.reply(200, json.dumps(response), content_type="application/json")
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    result = await sink.send(make_records(2))
    assert result.retry == [1]
    assert result.rejected == []


async def test_item_without_a_status_resends_the_batch(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    es.reply(
        200, '{"errors":true,"items":[{"create":{"_id":"x"}}]}', content_type="application/json"
    )
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    with pytest.raises(TemporaryError, match="unreadable items"):
        await sink.send(make_records(1))


async def test_large_batch_is_gzip_compressed_whole(
    es: ProtocolServer, make_sink: MakeSink
) -> None:
    # Bodies over 64 KiB are compressed in a worker thread; the result must be the same.
    records = make_records(2000)
    sink = make_sink(f"elasticsearch://{es.hostport}/logs")
    assert (await sink.send(records)).all_delivered
    [seen] = es.requests
    assert len(seen.body) > 64 * 1024
    assert ndjson(seen)[1::2] == records
