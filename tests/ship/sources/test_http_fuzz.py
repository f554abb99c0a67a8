"""Property: no request body, content type or encoding makes ingest answer 5xx or stop answering."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ship.sources.conftest import Ingest, run_ingest

CONTENT_TYPES = [
    "application/json",
    "application/x-ndjson",
    "text/plain",
    "text/plain; charset=latin-1",
    "text/plain; charset=no-such-charset",
    "text/plain; charset=idna",
    "text/plain; charset=undefined",
    "text/plain; charset=base64",
    "application/json; charset=utf-8",
    "application/octet-stream",
    "",
]

PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "ndjson", "text", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=2000))
    if kind == "deep":
        # Nesting around the depth limit and past Python's recursion limit.
        depth = draw(st.integers(1, 3000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return b'{"x":' + opener * depth + b"1" + closer * depth + b"}"
    if kind == "json":
        return msgspec.json.encode(draw(json_values))
    if kind == "ndjson":
        values = draw(st.lists(json_values, max_size=20))
        sep = draw(st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
        return sep.join(msgspec.json.encode(v) for v in values)
    return draw(st.text(max_size=500)).encode("utf-8", "surrogatepass")


class ServerThread:
    """An ingest source on its own event loop in a thread, so hypothesis can drive it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.port = 0
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),))

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        # Small limits so that 413s happen too.
        async with run_ingest(
            self.state_dir, max_body_bytes=1500, max_records_per_request=15
        ) as ing:
            self.ing: Ingest = ing
            self.port = ing.source.port
            self.ready.set()
            await self.stop.wait()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)
        self.loop.close()

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/v1/logs", body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, msgspec.json.decode(resp.read())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(tmp_path_factory.mktemp("fuzz") / "state") as srv:
        yield srv


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=bodies(),
    # Header values stay printable: control characters are refused by the HTTP parser
    # itself, before any ingest code runs.
    content_type=st.sampled_from(CONTENT_TYPES)
    | st.text(PRINTABLE, max_size=30)
    | st.builds(lambda cs: "text/plain; charset=" + cs, st.text(PRINTABLE, max_size=20))
    | st.builds(lambda p: "application/json; " + p, st.text(PRINTABLE, max_size=20)),
    encoding=st.sampled_from([None, "gzip", "identity", "deflate", "GZIP"]),
    gzip_it=st.booleans(),
)
def test_random_requests_never_get_a_5xx(
    server: ServerThread, body: bytes, content_type: str, encoding: str | None, gzip_it: bool
) -> None:
    headers = {"Content-Type": content_type}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
        if gzip_it:
            body = gzip.compress(body)
    status, answer = server.post(body, headers)
    assert status in (202, 400, 413, 415), (status, answer)
    assert ("accepted" in answer) if status == 202 else ("error" in answer)


def test_server_still_accepts_after_the_random_requests(server: ServerThread) -> None:
    status, answer = server.post(b'{"after":"fuzz"}\n', {"Content-Type": "application/x-ndjson"})
    assert (status, answer) == (202, {"accepted": 1})
