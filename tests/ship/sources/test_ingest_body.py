"""Request bodies of the HTTP ingest, decoded directly (the server's answers are in test_http)."""

from __future__ import annotations

import gzip

import pytest

from sidekick.ship.sources._ingest_body import Rejected, inflate


def test_multi_member_gzip_is_inflated_whole() -> None:
    body = gzip.compress(b"one\n") + gzip.compress(b"two\n")
    assert inflate(body, 100) == b"one\ntwo\n"


def test_truncated_gzip_is_400() -> None:
    with pytest.raises(Rejected) as err:
        inflate(gzip.compress(b"x" * 1000)[:-10], 10_000)
    assert err.value.status == 400
