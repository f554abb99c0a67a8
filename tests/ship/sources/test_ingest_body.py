"""Request bodies of the HTTP ingest, decoded directly (the server's answers are in test_http)."""

from __future__ import annotations

import gzip

import msgspec
import pytest

from sidekick.ship.sources._ingest_body import Kind, Rejected, encode_request, inflate


def test_multi_member_gzip_is_inflated_whole() -> None:
    body = gzip.compress(b"one\n") + gzip.compress(b"two\n")
    assert inflate(body, 100) == b"one\ntwo\n"


def test_truncated_gzip_is_400() -> None:
    with pytest.raises(Rejected) as err:
        inflate(gzip.compress(b"x" * 1000)[:-10], 10_000)
    assert err.value.status == 400


BODIES: list[tuple[Kind, bytes]] = [
    ("ndjson", b'{"a":1,"b":"x\\u00e9\\"y","c":[1,{"d":null}]}\r\n\n  \n{"e":1.5e300,"f":true}\n'),
    ("ndjson", b'{"message":"no newline at the end","@timestamp":"2026-01-01T00:00:00Z"}'),
    ("json", b'[{"a":1},{"b":[2,3]},{"message":"\\ud83d\\ude00"}]'),
    ("json", b'{"single":"object"}'),
    ("text", "plain line\r\nsecond\u00e9\n\nlast".encode()),
    ("form", b"msg=hello+world&levelname=INFO&created=1700000000.5"),
]


@pytest.mark.parametrize(("kind", "body"), BODIES)
def test_the_records_handed_to_the_spool_are_what_its_lines_decode_to(
    kind: Kind, body: bytes
) -> None:
    """The spool ships these records from memory instead of decoding its lines again, so
    they must be what a reader of the file would get."""
    payload, accepted = encode_request(kind, body, "utf-8", ["ingest"], 1000)
    assert accepted.records is not None
    assert accepted.count == len(accepted.records) > 0
    assert [msgspec.json.decode(line) for line in payload.splitlines()] == accepted.records


def test_text_in_a_charset_that_gives_lone_surrogates_is_handed_over_as_stored() -> None:
    payload, accepted = encode_request("text", b"a+2D8-b\n", "utf-7", ["ingest"], 1000)
    assert accepted.records == [msgspec.json.decode(payload)]
    assert accepted.records[0]["message"].startswith("a\ufffd")  # not the lone surrogate
