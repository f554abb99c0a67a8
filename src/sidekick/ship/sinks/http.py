"""``http://host:port/path`` / ``https://...``: POST NDJSON batches to any HTTP endpoint.

Built on the shared HTTP plumbing of the aggregator outputs (``_http``), so it follows the same
rules as they do: one pooled session per output, TLS verified against ``ca_file`` or the
system CAs, credentials read from files and read again when the file changes or the server
refuses them, ``Retry-After`` honoured in seconds or as an HTTP date, redirects not followed.

Each batch is one ``POST`` of NDJSON (``Content-Type: application/x-ndjson``, gzip-compressed
with ``gzip: true``) to the URL exactly as written, query included. Outcomes:

- 2xx: delivered (the body is not read: a generic endpoint defines no answer to check);
- 408, 429, 5xx, timeouts and connection errors: retried with back-off;
- 401, 403, 404, 405, 407 and 3xx: retried and logged as an error, as by every HTTP output: a
  rotated token or a wrong path is fixed by the operator, not by dead-lettering every record;
- 413: the batch is sent in halves (a single record still too large is rejected);
- any other 4xx: the endpoint refuses the records; the batch goes to the dead-letter file.

Two requests may be in flight at once (``concurrency``); checkpoints still advance in order.
Options come from the output's ``options`` in the config file (the URL's query belongs to the
endpoint): ``gzip``, ``timeout``, ``headers``, ``ca_file``, ``username`` + ``password_file``,
``bearer_token_file``. A password in the URL is refused; the URL is shown (output name,
metric labels, messages) with secret-looking query values masked.

Left out: response bodies (a 2xx is trusted), methods other than POST, other encodings.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from sidekick.core.durations import parse_duration
from sidekick.core.errors import ConfigError, PermanentError
from sidekick.core.redact import redact_url
from sidekick.ship.records import DELIVERED, Record, SendResult
from sidekick.ship.sinks import OutputSpec
from sidekick.ship.sinks._credentials import Credentials
from sidekick.ship.sinks._encode import encode_ndjson
from sidekick.ship.sinks._http import HttpClient, PushSink, raise_for_common_status, rate_log
from sidekick.ship.sinks._options import check_headers, load_options, parse_target, tls_context

RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of an ``http:`` output (config file ``outputs: [{url, options}]``)."""

    gzip: bool = False  # compress request bodies (level 1)
    timeout: str | float = 30.0  # per request, a duration like 30s
    headers: dict[str, str | int | float | bool] | None = None  # added to every request
    ca_file: str | None = None  # PEM bundle to verify the server's certificate (https only)
    username: str | None = None  # HTTP basic auth user (the password comes from password_file)
    password_file: str | None = None
    bearer_token_file: str | None = None  # sent as "Authorization: Bearer <file content>"


class HttpSink(PushSink):
    """Sends each batch as one NDJSON ``POST``; see the module docstring for the outcomes."""

    def __init__(self, spec: OutputSpec) -> None:
        scheme = spec.scheme
        target = parse_target(
            spec.url, default_port=443 if scheme == "https" else 80, query_options=False
        )
        opts = load_options(Options, target, spec.options)
        self.name = target.url
        # The URL as written minus a user name (sent as basic auth with password_file):
        # aiohttp refuses user info in the URL next to an Authorization header.
        parts = urlsplit(spec.url)
        self.url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        # Batches in flight at once: the server handles one while the next is encoded.
        self.concurrency = 2
        headers = {"Content-Type": "application/x-ndjson"}
        given = {str(k): str(v) for k, v in (opts.headers or {}).items()}
        headers.update(check_headers(target, given))
        if opts.gzip:
            headers["Content-Encoding"] = "gzip"
        self._gzip = opts.gzip
        self._headers = headers
        credentials = Credentials(
            target,
            username=opts.username or target.username,
            password_file=opts.password_file,
            bearer_token_file=opts.bearer_token_file,
        )
        timeout = parse_duration(opts.timeout, name=f"output {target.url!r}: option 'timeout'")
        self._client = HttpClient(
            self.name,
            ssl_context=tls_context(target, opts.ca_file),
            timeout=timeout,
            credentials=credentials,
        )

    def counters(self) -> dict[str, int]:
        return {}  # a 2xx is not checked here, so there are no bad responses to count

    def encode(self, records: list[Record]) -> bytes:
        return encode_ndjson(records)

    async def _send_once(self, records: list[Record]) -> SendResult | None:
        resp = await self.post_batch(records)
        status = resp.status
        if 200 <= status < 300:
            return DELIVERED
        if status == 413:
            rate_log.warning(
                (self.name, 413),
                "%s: HTTP 413 for a batch of %d records (%d bytes); sending it in halves. "
                "Lower batch.max_bytes to avoid this.",
                self.name,
                len(records),
                resp.request_bytes,
            )
            return None
        raise_for_common_status(self.name, resp, retry_statuses=RETRY_STATUSES)
        text = resp.text(200)
        raise PermanentError(f"HTTP {status}" + (f": {text}" if text else ""))


def create(spec: OutputSpec) -> HttpSink:
    if spec.url.partition(":")[2][:2] != "//":
        raise ConfigError(
            f"--output {redact_url(spec.url)!r} is not an http URL; "
            "write it like http://127.0.0.1:9000/ingest"
        )
    return HttpSink(spec)
