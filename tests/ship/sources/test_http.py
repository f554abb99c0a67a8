"""HTTP ingest: every content type is accepted, every error path answers clearly."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import os
import time
from pathlib import Path

import msgspec
from prometheus_client import generate_latest

from sidekick.ship.parsers import create_parser
from sidekick.ship.sources.spool import SUFFIX
from tests.ship.sources.conftest import run_ingest


def spooled_bytes(state_dir: Path) -> int:
    spool = state_dir / "spool"
    return sum(p.stat().st_size for p in spool.rglob("*" + SUFFIX)) if spool.exists() else 0


def counter(metric: object, **labels: str) -> float:
    for family in metric.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == labels:
                return float(sample.value)
    return 0.0


def ndjson(n: int, start: int = 0) -> bytes:
    return b"".join(b'{"seq":%d,"level":"info"}\n' % i for i in range(start, start + n))


# -- accepted bodies ------------------------------------------------------------------------


async def test_ndjson_body_is_accepted_with_its_record_count(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(ndjson(3))
        assert (status, answer) == (202, {"accepted": 3})
        records = await ing.wait_records(3)
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert all(r["level"] == "info" for r in records)


async def test_ndjson_blank_lines_and_crlf_are_tolerated(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(b'{"a":1}\r\n\r\n{"a":2}\r\n')
        assert (status, answer) == (202, {"accepted": 2})
        assert [r["a"] for r in await ing.wait_records(2)] == [1, 2]


async def test_json_object_is_one_record(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(b'{"message": "hi", "n": {"x": 1}}', "application/json")
        assert (status, answer) == (202, {"accepted": 1})
        [record] = await ing.wait_records(1)
    assert record["message"] == "hi"
    assert record["n"] == {"x": 1}


async def test_json_array_is_one_record_per_item(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        body = b'[{"a": 1},\n {"a": 2},\n {"a": 3}]'
        status, answer, _ = await ing.post(body, "application/json; charset=utf-8")
        assert (status, answer) == (202, {"accepted": 3})
        assert [r["a"] for r in await ing.wait_records(3)] == [1, 2, 3]


async def test_text_plain_lines_become_messages(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(b"first line\n\n  third line\r\n", "text/plain")
        assert (status, answer) == (202, {"accepted": 3})
        records = await ing.wait_records(3)
    assert [r["message"] for r in records] == ["first line", "", "  third line"]


async def test_text_plain_invalid_utf8_is_replaced_not_refused(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, _, _ = await ing.post(b"caf\xe9\n", "text/plain")
        assert status == 202
        [record] = await ing.wait_records(1)
    assert record["message"] == "caf\ufffd"


async def test_gzip_body_is_inflated(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(
            gzip.compress(ndjson(50)), **{"Content-Encoding": "gzip"}
        )
        assert (status, answer) == (202, {"accepted": 50})
        assert [r["seq"] for r in await ing.wait_records(50)] == list(range(50))


async def test_receive_time_is_added_only_when_timestamp_is_absent(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        before = time.time()
        await ing.post(b'{"a":1}\n{"a":2,"@timestamp":"2020-01-02T03:04:05Z"}\n{}\n')
        records = await ing.wait_records(3)
    stamped = records[0]["@timestamp"]
    assert stamped.endswith("Z")
    assert (
        abs(time.mktime(time.strptime(stamped[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone - before)
        < 5
    )
    assert records[1]["@timestamp"] == "2020-01-02T03:04:05Z"
    assert records[2]["@timestamp"] == stamped


async def test_records_carry_configured_fields_and_a_stable_id(state_dir: Path) -> None:
    async with run_ingest(state_dir, fields={"env": "prod", "team": "web"}) as ing:
        await ing.post(b'{"a":1,"team":"app"}\n{"a":2}\n')
        await ing.post(b'{"a":3}\n')
        records = await ing.wait_records(3)
    assert all(r["env"] == "prod" for r in records)
    # A posted field wins over a configured one of the same name.
    assert [r["team"] for r in records] == ["app", "web", "web"]
    ids = {(r["log.file.id"], r["log.offset"]) for r in records}
    assert len(ids) == 3
    assert all(r["log.file.id"].startswith("spool-") for r in records)


async def test_empty_body_is_accepted_as_zero_records(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(b"")
    assert (status, answer) == (202, {"accepted": 0})
    assert spooled_bytes(state_dir) == 0


# -- authentication -------------------------------------------------------------------------


async def test_request_without_token_is_401_when_a_token_file_is_given(
    state_dir: Path, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    async with run_ingest(state_dir, token_file=str(token)) as ing:
        status, answer, headers = await ing.post(ndjson(1))
    assert status == 401
    assert "bearer token" in answer["error"]
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert spooled_bytes(state_dir) == 0


async def test_request_with_wrong_token_is_401(state_dir: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    async with run_ingest(state_dir, token_file=str(token)) as ing:
        status, _, _ = await ing.post(ndjson(1), Authorization="Bearer s3cre")
    assert status == 401


async def test_request_with_right_token_is_accepted(state_dir: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    async with run_ingest(state_dir, token_file=str(token)) as ing:
        status, _, _ = await ing.post(ndjson(1), Authorization="Bearer s3cret")
    assert status == 202


async def test_token_file_is_reread_when_it_changes(state_dir: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old\n")
    async with run_ingest(state_dir, token_file=str(token)) as ing:
        assert (await ing.post(ndjson(1), Authorization="Bearer old"))[0] == 202
        token.write_text("new-token\n")
        os.utime(token, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        assert (await ing.post(ndjson(1), Authorization="Bearer old"))[0] == 401
        assert (await ing.post(ndjson(1), Authorization="Bearer new-token"))[0] == 202


# -- limits and malformed bodies ------------------------------------------------------------


async def test_body_over_the_size_limit_is_413(state_dir: Path) -> None:
    async with run_ingest(state_dir, max_body_bytes=1000) as ing:
        status, answer, _ = await ing.post(ndjson(100))
    assert status == 413
    assert "1000" in answer["error"]
    assert spooled_bytes(state_dir) == 0


async def test_chunked_body_over_the_size_limit_is_413(state_dir: Path) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(100):
            yield ndjson(1, i)

    async with (
        run_ingest(state_dir, max_body_bytes=1000) as ing,
        ing.session.post(
            ing.url, data=chunks(), headers={"Content-Type": "application/x-ndjson"}
        ) as resp,
    ):
        status = resp.status
    assert status == 413
    assert spooled_bytes(state_dir) == 0


async def test_more_records_than_the_limit_is_413_with_the_limit(state_dir: Path) -> None:
    async with run_ingest(state_dir, max_records_per_request=10) as ing:
        status, answer, _ = await ing.post(ndjson(11))
        ok, _, _ = await ing.post(ndjson(10))
    assert status == 413
    assert "at most 10 records" in answer["error"]
    assert ok == 202


async def test_malformed_ndjson_is_400_naming_the_line(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(b'{"a":1}\n{"a":2}\n{"a":\n{"a":4}\n')
    assert status == 400
    assert "line 3" in answer["error"]
    assert spooled_bytes(state_dir) == 0


async def test_malformed_json_is_400_naming_the_line(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(b'[\n{"a": 1},\n{"a": ]\n', "application/json")
    assert status == 400
    assert "line 3" in answer["error"]


async def test_ndjson_line_that_is_not_an_object_is_400(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(b'{"a":1}\n[1,2]\n')
    assert status == 400
    assert answer["error"] == "line 2: expected a JSON object, got an array"


async def test_json_array_item_that_is_not_an_object_is_400(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(b'[{"a":1}, "text"]', "application/json")
    assert status == 400
    assert "item 1" in answer["error"]


async def test_mixed_valid_and_invalid_body_stores_nothing(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        body = ndjson(500) + b"not json\n" + ndjson(500, 500)
        status, _, _ = await ing.post(body)
        assert status == 400
        ok, _, _ = await ing.post(ndjson(1, 9999))
        assert ok == 202
        records = await ing.wait_records(1)
    # Only the later valid request reached the spool and the pipeline.
    assert [r["seq"] for r in records] == [9999]


async def test_unsupported_content_type_is_415(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(b"<log/>", "application/xml")
    assert status == 415
    assert "application/x-ndjson" in answer["error"]


async def test_unsupported_content_encoding_is_415(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, _, _ = await ing.post(b"xx", **{"Content-Encoding": "br"})
    assert status == 415


async def test_gzip_bomb_is_413_without_inflating_it(state_dir: Path) -> None:
    bomb = gzip.compress(b"\n" * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 1024 * 1024
    async with run_ingest(state_dir, max_body_bytes="1MiB") as ing:
        status, answer, _ = await ing.post(bomb, **{"Content-Encoding": "gzip"})
        assert status == 413
        assert "inflates" in answer["error"]
        # The server is still fine afterwards.
        assert (await ing.post(ndjson(1)))[0] == 202


async def test_corrupt_gzip_is_400(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(b"\x1f\x8b\x08garbage", **{"Content-Encoding": "gzip"})
    assert status == 400
    assert "gzip" in answer["error"]


async def test_full_spool_is_503_with_retry_after(state_dir: Path) -> None:
    async with run_ingest(state_dir, spool_max_bytes=4000, auto_ack=False) as ing:
        statuses = []
        for i in range(10):
            status, answer, headers = await ing.post(ndjson(20, i * 20))
            statuses.append(status)
        assert statuses[0] == 202
        assert statuses[-1] == 503
        assert "spool is full" in answer["error"]
        assert int(headers["Retry-After"]) > 0
    assert spooled_bytes(state_dir) <= 4000


async def test_spool_has_room_again_once_records_are_delivered(state_dir: Path) -> None:
    # Default segment size: it follows the spool limit, so delivered data can be deleted.
    async with run_ingest(state_dir, spool_max_bytes=4000, auto_ack=False) as ing:
        while (await ing.post(ndjson(10)))[0] == 202:
            pass
        await ing.wait_records(1)
        ing.ack_all()
        ing.auto_ack = True
        # Sealed, delivered segments are deleted, which frees the room.
        assert (await ing.post(ndjson(10)))[0] == 202


async def test_other_paths_are_404_and_other_methods_405(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        base = ing.url.removesuffix("/v1/logs")
        async with ing.session.post(base + "/v1/other", data=b"{}") as resp:
            assert resp.status == 404
        async with ing.session.put(ing.url, data=b"{}") as resp:
            assert resp.status == 405
            assert sorted(resp.headers["Allow"].split(",")) == ["GET", "POST"]
        # A GET carries a record in its query string (HTTPHandler); without one it is a 400.
        async with ing.session.get(ing.url) as resp:
            assert resp.status == 400
            assert "query string" in (await resp.json())["error"]


async def test_requests_are_counted_by_status_code(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        await ing.post(ndjson(2))
        await ing.post(b"nope", "application/xml")
        await ing.post(b"nope")
        async with ing.session.delete(ing.url) as resp:
            assert resp.status == 405
        metrics = ing.source.metrics
    assert counter(metrics.requests, code="202") == 1
    assert counter(metrics.requests, code="405") == 1
    assert counter(metrics.requests, code="415") == 1
    assert counter(metrics.requests, code="400") == 1
    assert counter(metrics.records) == 2


async def test_server_keeps_answering_after_a_client_hangs_up_mid_body(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        port = ing.source.port
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            b"Content-Length: 100000\r\n\r\n" + ndjson(10)
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        assert (await ing.post(ndjson(1)))[0] == 202
        assert len(await ing.wait_records(1)) == 1


async def test_accepted_records_are_on_disk_as_ndjson(state_dir: Path) -> None:
    async with run_ingest(state_dir, auto_ack=False) as ing:
        await ing.post(ndjson(3))
        [segment] = list((state_dir / "spool").rglob("*" + SUFFIX))
        lines = segment.read_bytes().splitlines()
    assert [msgspec.json.decode(line)["seq"] for line in lines] == [0, 1, 2]


async def test_body_that_trickles_in_too_slowly_is_408(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        server = ing.source.server
        server.limits = dataclasses.replace(server.limits, body_timeout=0.3)
        _reader, writer = await asyncio.open_connection("127.0.0.1", ing.source.port)
        writer.write(
            b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            b"Content-Length: 1000\r\n\r\n" + ndjson(1)
        )
        await writer.drain()
        status_line = await asyncio.wait_for(_reader.readline(), 5)
        writer.close()
        await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 408")
    assert spooled_bytes(state_dir) == 0


async def test_ingest_metrics_are_in_the_shippers_registry(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        await ing.post(ndjson(5))
        text = generate_latest(ing.source.ctx.metrics.registry).decode()
    assert 'sidekick_ship_ingest_requests_total{code="202"} 1.0' in text
    assert "sidekick_ship_ingest_records_accepted_total 5.0" in text
    assert "sidekick_ship_ingest_fsync_seconds_count" in text
    assert "sidekick_ship_ingest_spool_bytes" in text


async def test_body_of_only_newlines_beyond_the_record_limit_is_413(state_dir: Path) -> None:
    async with run_ingest(state_dir, max_records_per_request=1000) as ing:
        status, answer, _ = await ing.post(b"\n" * 900_000)
    assert status == 413
    assert "lines" in answer["error"]


async def test_accepted_records_are_handed_on_at_shutdown_even_if_not_read_yet(
    state_dir: Path,
) -> None:
    async with run_ingest(state_dir) as ing:
        ing.gate = asyncio.Event()
        assert (await ing.post(ndjson(1)))[0] == 202  # the reader takes it and stalls
        await asyncio.sleep(0.05)
        for start in range(10, 50, 10):
            assert (await ing.post(ndjson(10, start)))[0] == 202
        ing.source.ctx.stopping.set()
        ing.gate.set()
    assert sorted(r["seq"] for r in ing.records) == [0, *range(10, 50)]
    assert spooled_bytes(state_dir) == 0


async def test_records_without_a_text_message_can_be_parsed_when_a_parser_is_set(
    state_dir: Path,
) -> None:
    async with run_ingest(state_dir, parser="nginx") as ing:
        await ing.post(b'{"a":1}\n{"message":5}\n{"message":{"k":"v"}}\n{"message":"text"}\n')
        records = await ing.wait_records(4)
    create_parser("nginx").parse(records)  # must not raise on any of them
    assert [r["message"] for r in records] == ["", "5", '{"k":"v"}', "text"]
    assert records[0]["a"] == 1


async def test_records_keep_a_non_text_message_when_no_parser_is_set(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        await ing.post(b'{"a":1}\n{"message":{"k":"v"}}\n')
        records = await ing.wait_records(2)
    assert "message" not in records[0]
    assert records[1]["message"] == {"k": "v"}


def nested(depth: int) -> bytes:
    """A record nesting ``depth`` objects/arrays in all (itself included)."""
    return b'{"x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


async def test_record_nested_at_the_depth_limit_is_accepted(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        status, _, _ = await ing.post(nested(64) + b"\n")
    assert status == 202


async def test_record_nested_deeper_than_the_limit_is_400_naming_the_line(
    state_dir: Path,
) -> None:
    async with run_ingest(state_dir) as ing:
        status, answer, _ = await ing.post(b'{"a":1}\n' + nested(65) + b"\n")
    assert status == 400
    assert answer["error"].startswith("line 2: nested deeper than 64 levels")
    assert spooled_bytes(state_dir) == 0


async def test_json_nested_past_the_recursion_limit_is_400_not_500(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
        json_status, _, _ = await ing.post(deep, "application/json")
        ndjson_status, _, _ = await ing.post(deep + b"\n")
        after, _, _ = await ing.post(ndjson(1))
    assert (json_status, ndjson_status, after) == (400, 400, 202)


async def test_text_in_a_charset_that_cannot_decode_it_is_415(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        idna, _, _ = await ing.post(b"\xff\xfe bad", "text/plain; charset=idna")
        unknown, answer, _ = await ing.post(b"text", "text/plain; charset=klingon")
        latin1, _, _ = await ing.post(b"caf\xe9\n", "text/plain; charset=latin-1")
        [record] = await ing.wait_records(1)
    assert (idna, unknown, latin1) == (415, 415, 202)
    assert "klingon" in answer["error"]
    assert record["message"] == "café"


async def test_a_malformed_content_type_header_is_415_not_a_server_error(state_dir: Path) -> None:
    async with run_ingest(state_dir) as ing:
        bad, answer, _ = await ing.post(b"{}", ";0*")
        quoted, _, _ = await ing.post(ndjson(1), 'application/x-ndjson; charset="utf-8"')
    assert bad == 415
    assert "not supported" in answer["error"]
    assert quoted == 202
