"""Shared HTTP plumbing of the aggregator outputs (Elasticsearch, Loki, OTLP, ``http:``).

Every HTTP output needs the same few things, and they should behave the same way in all of
them: one lazily created HTTP session per output (TLS from ``_options.tls_context``, the
``Authorization`` header from ``_credentials``), gzip request bodies (big ones compressed off
the event loop), ``Retry-After`` honoured, and one classification of whole-response HTTP
statuses:

- connection errors, timeouts, 429 and 5xx: ``TemporaryError`` (nothing delivered, retry);
- 401/403/404/405/407 and redirects (3xx, never followed): ``TemporaryError`` too, logged as
  an error (once a minute per output and status, with a count). These are configuration
  problems of *ours* (a rotated password, a wrong URL path), not of the records; treating them
  as permanent would dead-letter every record until someone notices, while retrying loses
  nothing: the files on disk are the buffer and shipping resumes as soon as it is fixed. A
  redirect is not followed because aiohttp would turn the POST into a GET of, say, a login
  page, whose 200 would then pass for a delivery;
- 413: the batch is split in halves and each half sent on its own (a single record that is
  still too large is rejected); once the first half is stored, a failure of the second
  retries or rejects that half alone, so the first is never sent twice;
- any other 4xx: the peer rejects the request itself; each output decides what that means.

A 2xx is a delivery only if its body does not say otherwise; each output checks the body its
protocol defines, and one that contradicts the batch (``PushSink.unconfirmed``) is counted
(``bad_responses`` on ``/metrics``), logged once a minute and resent.

URLs in its messages (the one posted to, a redirect's ``Location``) are shown through
``sidekick.core.redact.redact_url``, as ``Target.url`` is (``_options``). A server may echo
what it was sent in its answer (a gateway's "bad header Authorization: Bearer ...", a query
string quoted back); every answer's body has the secrets of its request (the credentials, the
values of secret-looking headers and query parameters) overwritten with ``*`` before anything
reads it, so no error message, log line or dead-letter reason built from it can carry them.
The mask keeps the length, so a protobuf or JSON body still decodes. Text taken from an answer
is masked again (``Response.mask``) for what cannot be masked in the body without garbling it:
secrets shorter than 6 characters and the values of configured headers of any name.

It also holds the RFC 3339 → epoch-nanoseconds conversion that Loki and OTLP both need, done
with one compiled regex and a per-second cache rather than ``datetime`` per record.

Left out: HTTP proxies, client certificates (mTLS) and request signing (AWS SigV4).
"""

from __future__ import annotations

import asyncio
import calendar
import email.utils
import logging
import re
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import aiohttp

from sidekick.core.errors import PermanentError, TemporaryError
from sidekick.core.ratelog import RateLimitedLog
from sidekick.core.redact import is_secret_key, redact_text, redact_url
from sidekick.ship.records import DELIVERED, Record, SendResult
from sidekick.ship.sinks._credentials import Credentials
from sidekick.ship.sinks.base import BaseSink

log = logging.getLogger("sidekick.ship.sinks")
# Conditions that repeat with every retry (a refused password, a bad response) are logged
# once a minute per output and kind, with a count.
rate_log = RateLimitedLog(log, 60.0)

# Statuses that mean "our credentials or URL are wrong": retried (see module docstring).
CONFIG_STATUSES = frozenset({401, 403, 404, 405, 407})
# Secrets shorter than this are masked in text taken from an answer only where they stand
# alone, and not in the answer's body itself (see ``Secrets``): they could be a word of it.
MIN_SECRET_CHARS = 6


# --------------------------------------------------------------------------- HTTP


def gzip_bytes(body: bytes, level: int = 1) -> bytes:
    # Level 1: log lines compress ~8x even at the fastest level; higher levels cost CPU that
    # a sidecar sharing its Pod's budget should not spend.
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)
    return comp.compress(body) + comp.flush()


async def gzip_off_loop(body: bytes) -> bytes:
    """``gzip_bytes`` in a worker thread for large bodies.

    zlib releases the GIL while it compresses, so a big batch is compressed on the other core
    while the event loop goes on reading and parsing; small bodies are not worth the hand-off.
    """
    if len(body) < 64 * 1024:
        return gzip_bytes(body)
    return await asyncio.to_thread(gzip_bytes, body)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# Headers the outputs set themselves; any other header was configured (``headers``, a tenant).
PROTOCOL_HEADERS = frozenset({"accept", "content-encoding", "content-type", "user-agent"})


@dataclass(frozen=True, slots=True)
class Secrets:
    """What a request carries that an answer must not bring into logs or files.

    ``body``: masked in the answer's body before it is read, so what is parsed from it (an
    OTLP partial success, Elasticsearch's item errors) cannot carry them: the credentials and
    the values of secret-looking headers and query parameters, of ``MIN_SECRET_CHARS`` or
    more (a shorter one, like any configured value, could be a word of the protocol, say
    ``true`` or ``status``, and masking it would garble the answer). ``shown``: masked in
    every text taken from the answer: those, shorter secrets and the value of every
    configured header whatever its name (a custom header may carry a token); those shorter
    than ``MIN_SECRET_CHARS`` only where they stand alone, not inside a longer word.
    """

    body: frozenset[str] = frozenset()
    shown: frozenset[str] = frozenset()

    def mask(self, text: str) -> str:
        for secret in sorted(self.shown, key=len, reverse=True):
            if len(secret) >= MIN_SECRET_CHARS:
                text = text.replace(secret, "*" * len(secret))
            elif secret in text:
                text = re.sub(
                    rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", "*" * len(secret), text
                )
        return text


def request_secrets(url: str, headers: Mapping[str, str], extra: Iterable[str] = ()) -> Secrets:
    """The secrets a request carries: ``extra`` (the credentials), the values of its
    secret-looking headers (and their part after an auth scheme: ``Bearer TOKEN``) and of its
    URL's secret-looking query parameters (as written and decoded); and, to be masked in what
    is shown, the values of every header the output did not set itself."""
    strong = set(extra)
    configured: set[str] = set()
    for name, value in headers.items():
        if name.lower() == "cookie" or is_secret_key(name):
            strong.add(value)
            strong.add(value.partition(" ")[2].strip())
        elif name.lower() not in PROTOCOL_HEADERS:
            configured.add(value.strip())
    for pair in urlsplit(url).query.split("&"):
        key, sep, value = pair.partition("=")
        if sep and is_secret_key(unquote_plus(key)):
            strong.update((value, unquote_plus(value)))
    strong.discard("")
    configured.discard("")
    return Secrets(
        body=frozenset(s for s in strong if len(s) >= MIN_SECRET_CHARS),
        shown=frozenset(strong | configured),
    )


def mask_secrets(body: bytes, secrets: Iterable[str]) -> bytes:
    """``body`` with every occurrence of a secret overwritten by as many ``*``."""
    for secret in sorted(secrets, key=len, reverse=True):
        raw = secret.encode("utf-8", "surrogateescape")
        if raw in body:
            body = body.replace(raw, b"*" * len(raw))
    return body


@dataclass(slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes  # with ``secrets.body`` masked
    request_bytes: int = 0  # size of the request body as sent (after gzip)
    secrets: Secrets = Secrets()

    def text(self, limit: int = 500) -> str:
        text = self.mask(self.body.decode("utf-8", "replace").strip())
        return text if len(text) <= limit else text[:limit] + "…"

    def mask(self, text: str) -> str:
        """``text``, taken from this answer, with every secret of the request masked."""
        return self.secrets.mask(text)


def looks_like_html(resp: Response) -> bool:
    """Whether a response is a web page (a proxy's login or error page), not an API's answer."""
    if "html" in resp.headers.get("Content-Type", "").lower():
        return True
    return resp.body.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))


class HttpClient:
    """One pooled aiohttp session per output, created on first use (it needs a running loop)."""

    def __init__(
        self,
        name: str,
        *,
        ssl_context: ssl.SSLContext | None,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.name = name
        self.credentials = credentials
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=8),
                timeout=self._timeout,
                headers=self._headers,
                # Response bodies are small; requests are compressed by us, on purpose.
                auto_decompress=True,
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body``; connection problems and timeouts become ``TemporaryError``."""
        session = self._get_session()
        creds = self.credentials
        auth = creds.current() if creds is not None else None
        if auth is not None:
            headers = {**headers, "Authorization": auth}
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                payload = await resp.read()
        except TimeoutError:
            raise TemporaryError(f"{self.name}: no answer from {redact_url(url)} in time") from None
        except aiohttp.ClientError as exc:
            raise TemporaryError(
                f"{self.name}: cannot reach {redact_url(url)}: {redact_text(str(exc))}"
            ) from None
        secrets = request_secrets(
            url, {**self._headers, **headers}, creds.secrets() if creds is not None else ()
        )
        response = Response(
            resp.status, resp.headers, mask_secrets(payload, secrets.body), len(body), secrets
        )
        if response.status in (401, 403) and creds is not None:
            creds.refused()
        return response

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def raise_for_common_status(name: str, resp: Response, *, retry_statuses: frozenset[int]) -> None:
    """Raise ``TemporaryError`` for statuses every output retries (see the module docstring)."""
    status = resp.status
    if status in retry_statuses:
        raise TemporaryError(
            f"{name}: HTTP {status}: {resp.text(200)}", retry_after=retry_after(resp.headers)
        )
    if status in CONFIG_STATUSES or 300 <= status < 400:
        what = "credentials" if status in (401, 403, 407) else "URL"
        said = resp.text(200) or "no body"
        if 300 <= status < 400:
            location = resp.mask(redact_url(resp.headers.get("Location", ""))) or "nowhere"
            said = f"a redirect to {location}, which is not followed"
        # An error, not a warning: nothing is shipped until someone fixes this.
        rate_log.error(
            (name, status),
            "%s: HTTP %d (%s); check the output's %s. Records are kept and retried, not dropped.",
            name,
            status,
            said,
            what,
        )
        raise TemporaryError(
            f"{name}: HTTP {status}; check the output's {what}",
            retry_after=retry_after(resp.headers),
        )


async def send_splitting_on_413(
    records: list[Record],
    send_once: Callable[[list[Record]], Awaitable[SendResult | None]],
) -> SendResult:
    """Send ``records``; when the peer answers 413 (``send_once`` returns None), halve and retry.

    Index lists in the halves' results are shifted back to positions in ``records``.
    """
    result = await send_once(records)
    if result is not None:
        return result
    if len(records) == 1:
        return SendResult(
            rejected=[(0, "HTTP 413: the record alone exceeds the peer's request size limit")]
        )
    mid = len(records) // 2
    out = SendResult()
    for offset, part in ((0, records[:mid]), (mid, records[mid:])):
        try:
            sub = await send_splitting_on_413(part, send_once)
        except (TemporaryError, PermanentError) as exc:
            if offset == 0:
                raise  # nothing of this batch was sent yet
            # The first half is stored: only the second is retried or refused, so the
            # first is not sent twice (or dead-lettered after it was delivered).
            whole = range(len(part))
            sub = SendResult(
                retry=list(whole) if isinstance(exc, TemporaryError) else [],
                rejected=[] if isinstance(exc, TemporaryError) else [(i, str(exc)) for i in whole],
            )
        out.retry.extend(i + offset for i in sub.retry)
        out.rejected.extend((i + offset, why) for i, why in sub.rejected)
    return out if not out.all_delivered else DELIVERED


class PushSink(BaseSink):
    """What the HTTP aggregator outputs share: encode a batch, gzip it off the loop, POST it.

    A subclass sets ``name``, ``url``, ``_client``, ``_headers`` and ``_gzip`` in its
    ``__init__`` and implements ``encode`` and ``_send_once`` (``None`` means the peer answered
    413; ``send`` then splits the batch). Loki overrides ``send`` with its own bisection.
    """

    name: str
    url: str
    _client: HttpClient
    _headers: dict[str, str]
    _gzip: bool
    # 2xx responses whose body did not confirm the batch; it was sent again.
    bad_responses: int = 0

    def counters(self) -> dict[str, int]:
        """Output-specific counts for ``/metrics`` (see ship.metrics.OutputEventsCollector)."""
        return {"bad_responses": self.bad_responses}

    def unconfirmed(self, resp: Response, records: int, problem: str) -> TemporaryError:
        """Count and log a 2xx whose body contradicts delivery; the error to raise for it.

        The whole batch is sent again: a duplicate is preferred to a silent loss.
        """
        self.bad_responses += 1
        problem = resp.mask(problem)
        rate_log.warning(
            (self.name, "bad response"),
            "%s: HTTP %d does not confirm the batch of %d records: %s; sending it again",
            self.name,
            resp.status,
            records,
            problem,
        )
        return TemporaryError(
            f"{self.name}: HTTP {resp.status} does not confirm the batch ({problem})"
        )

    def encode(self, records: list[Record]) -> bytes:
        raise NotImplementedError

    async def _send_once(self, records: list[Record]) -> SendResult | None:
        raise NotImplementedError

    async def post_batch(self, records: list[Record]) -> Response:
        body = self.encode(records)
        if self._gzip:
            body = await gzip_off_loop(body)
        return await self._client.post(self.url, body, self._headers)

    async def send(self, records: list[Record]) -> SendResult:
        if not records:
            return DELIVERED
        return await send_splitting_on_413(records, self._send_once)

    async def aclose(self) -> None:
        await self._client.aclose()


# --------------------------------------------------------------------------- time

_RFC3339 = re.compile(
    r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:[.,](\d+))?(?:([Zz])|([+-])(\d\d):?(\d\d))?$"
)
_epoch_seconds: dict[str, int] = {}


def rfc3339_to_ns(ts: Any) -> int | None:
    """Nanoseconds since the epoch for an RFC 3339 time string; None if it is not one.

    A time without an offset is taken as UTC (that is what ship's sources write).
    """
    if not isinstance(ts, str):
        return None
    m = _RFC3339.match(ts)
    if m is None:
        return None
    key = m.group(1) + "T" + m.group(2)
    sec = _epoch_seconds.get(key)
    if sec is None:
        try:
            sec = calendar.timegm(time.strptime(key, "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            return None
        if len(_epoch_seconds) > 4096:
            _epoch_seconds.clear()
        _epoch_seconds[key] = sec
    frac = m.group(3)
    ns = int(frac[:9].ljust(9, "0")) if frac else 0
    if m.group(5):
        offset = int(m.group(6)) * 3600 + int(m.group(7)) * 60
        sec = sec - offset if m.group(5) == "+" else sec + offset
    return sec * 1_000_000_000 + ns
