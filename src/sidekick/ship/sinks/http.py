"""``http://host:port/path`` / ``https://...``: POST NDJSON batches to an HTTP endpoint.

One ``aiohttp.ClientSession`` per output reuses keep-alive connections. Each batch is one
``POST`` with ``Content-Type: application/x-ndjson`` (gzip-compressed with the option
``gzip: true``). Outcomes: 2xx delivered; 429, 5xx, timeouts and connection errors are
``TemporaryError`` (the pipeline retries with back-off, honouring ``Retry-After``); any
other status is a ``PermanentError`` for the batch, which then goes to the dead-letter file.

Two requests may be in flight at once (``concurrency``); checkpoints still advance in
order. Options (config file ``outputs: [{url, options}]``): ``gzip`` (bool), ``timeout`` (seconds
per request, default 30), ``headers`` (mapping added to each request).
"""

from __future__ import annotations

import gzip
from typing import Any

import aiohttp
from yarl import URL

from sidekick.core.durations import parse_duration
from sidekick.core.errors import ConfigError, PermanentError, TemporaryError
from sidekick.ship.records import DELIVERED, Record, SendResult
from sidekick.ship.sinks import OutputSpec
from sidekick.ship.sinks._encode import encode_ndjson


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own back-off


class HttpSink:
    def __init__(
        self,
        url: str,
        *,
        compress: bool = False,
        timeout: float = 30.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.name = url
        # Batches in flight at once: the server handles one while the next is encoded.
        self.concurrency = 2
        self.compress = compress
        self.timeout = timeout
        self.headers = {"Content-Type": "application/x-ndjson", **(headers or {})}
        if compress:
            self.headers["Content-Encoding"] = "gzip"
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=4),
            )
        return self._session

    async def send(self, records: list[Record]) -> SendResult:
        body = encode_ndjson(records)
        if self.compress:
            body = gzip.compress(body, compresslevel=1)
        session = self._get_session()
        try:
            async with session.post(self.url, data=body, headers=self.headers) as resp:
                status = resp.status
                if 200 <= status < 300:
                    await resp.read()
                    return DELIVERED
                text = (await resp.text(errors="replace"))[:200].strip()
                reason = f"HTTP {status}" + (f": {text}" if text else "")
                if status == 429 or status >= 500:
                    raise TemporaryError(
                        reason, retry_after=retry_after(resp.headers.get("Retry-After"))
                    )
                raise PermanentError(reason)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TemporaryError(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def create(spec: OutputSpec) -> HttpSink:
    url = spec.url
    if not URL(url).host:
        raise ConfigError(
            f"--output {url!r} names no host; write it like http://127.0.0.1:9000/ingest"
        )
    opts: dict[str, Any] = dict(spec.options)
    unknown = set(opts) - {"gzip", "timeout", "headers"}
    if unknown:
        raise ConfigError(
            f"--output {url!r}: unknown option(s) {', '.join(sorted(unknown))}; "
            "http outputs take gzip, timeout and headers"
        )
    headers = opts.get("headers") or {}
    if not isinstance(headers, dict):
        raise ConfigError(f"--output {url!r}: option headers must be a mapping of names to values")
    return HttpSink(
        url,
        compress=bool(opts.get("gzip", False)),
        timeout=parse_duration(opts.get("timeout", 30.0), name=f"{url} option timeout"),
        headers={str(k): str(v) for k, v in headers.items()},
    )
