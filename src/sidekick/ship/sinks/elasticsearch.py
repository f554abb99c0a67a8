"""Elasticsearch and OpenSearch output: the ``_bulk`` API with ``create`` actions.

``elasticsearch://HOST:9200/INDEX`` (also ``opensearch://``, and ``+https`` for TLS). INDEX may
hold a date pattern (``logs-%Y.%m.%d``) taken from each record's ``@timestamp`` in UTC.

Why ``create`` with our own ``_id``: each document's id is a hash of its source identity
(``log.file.id``), its byte offset (``log.offset``) and its text, so a batch sent again after a
crash or a lost response stores nothing twice: Elasticsearch answers 409 for a document that
already exists, and a 409 on ``create`` counts as delivered. The text is part of the hash
because after a copytruncate the same file and offset carry a different line; without it that
new line would collide with the old one and be dropped as a "duplicate". Records without a
``log.file.id`` get no ``_id`` (Elasticsearch picks one), so only they can be duplicated by a
resend. ``create`` also works for data streams, which refuse ``index``.

The response is matched item by item, in order: 2xx and 409 delivered, 429 and 5xx retried
(those items only), 401/403 retried too (a missing index privilege is fixed by granting it, not
by dead-lettering every document; it is logged as an error), any other status rejected with
Elasticsearch's error type and reason (the pipeline writes them to the dead-letter file). An
HTTP 200 with ``"errors": true`` is neither all-good nor all-bad. ``"errors": false`` is not
taken on trust either: only items prove delivery, one per document. A 2xx that cannot be
matched (unreadable, no ``items``, more or fewer items than documents, an item without a
status) is counted as a bad response and retries the whole batch, which the deterministic
ids make safe.

Whole-request statuses follow ``_http``: 429/5xx/connection errors and 401/403/404 are
retried (a wrong password must not dead-letter everything), 413 halves the batch, another 4xx
rejects the whole batch (``PermanentError``).

Left out: ``index``/``update``/``delete`` actions, routing, ingest-pipeline selection per
record, and sniffing for other cluster nodes (point the URL at a load balancer or service).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from typing import Any
from urllib.parse import quote

import msgspec

from sidekick.core.durations import parse_duration
from sidekick.core.errors import PermanentError
from sidekick.ship.records import DELIVERED, MESSAGE, OFFSET, TIMESTAMP, Record, SendResult
from sidekick.ship.sinks import OutputSpec
from sidekick.ship.sinks._credentials import Credentials
from sidekick.ship.sinks._http import (
    HttpClient,
    PushSink,
    Response,
    raise_for_common_status,
    rate_log,
    rfc3339_to_ns,
)
from sidekick.ship.sinks._options import (
    Target,
    load_options,
    option_error,
    parse_target,
    tls_context,
)

FILE_ID = "log.file.id"
DEFAULT_INDEX = "sidekick-%Y.%m.%d"
ID_DIGEST = 18  # bytes: 144 bits, 24 base64 characters
_NO_DIGEST = bytes(ID_DIGEST)
RETRY_STATUSES = frozenset({429, *range(500, 600)})

# Only the response parts we match on; the rest of each item is skipped by the decoder.
FILTER_PATH = "errors,items.*.status,items.*.error"

# Hour is the finest unit: index names are cached per hour of record time.
_DATE_TOKENS = set("YymdHjGVu%")
_INDEX_FORBIDDEN = re.compile(r'[\\/*?"<>| ,#:A-Z]')


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of an Elasticsearch/OpenSearch output (URL query or config file)."""

    index: str | None = None  # overrides the URL path; may hold %Y %m %d %H ...
    username: str | None = None  # HTTP basic auth user (the password comes from password_file)
    password_file: str | None = None
    api_key_file: str | None = None  # file holding the encoded API key ("id:key" base64)
    ca_file: str | None = None  # PEM bundle to verify the server's certificate (+https only)
    gzip: bool = True  # compress request bodies (level 1)
    timeout: str | float = 30.0  # per request, a duration like 30s
    pipeline: str | None = None  # an ingest pipeline to run every document through


class _Error(msgspec.Struct):
    type: str = "unknown"
    reason: str | None = None
    caused_by: dict[str, Any] | None = None


class _Item(msgspec.Struct):
    status: int
    error: _Error | str | None = None  # very old versions send the error as a string


class _Bulk(msgspec.Struct):
    # Left out by filter_path when no item matched it; None tells "no items" from "[]".
    items: list[dict[str, _Item]] | None = None
    errors: bool = False


_bulk_decoder = msgspec.json.Decoder(_Bulk)


def _id_key(file_id: Any, offset: Any, message: Any) -> bytes:
    text = message if isinstance(message, str) else ""
    return f"{file_id}\x00{offset}\x00{text}".encode("utf-8", "surrogatepass")


def document_id(file_id: Any, offset: Any, message: Any) -> bytes:
    """The deterministic ``_id``: base64url of a 144-bit BLAKE2b digest (24 characters)."""
    digest = hashlib.blake2b(_id_key(file_id, offset, message), digest_size=ID_DIGEST).digest()
    return base64.urlsafe_b64encode(digest)


def document_ids(records: list[Record]) -> list[bytes | None]:
    """``document_id`` for every record (None without a file identity), in bulk.

    A 18-byte digest is exactly 24 base64 characters with no padding, so the digests of a
    whole batch are base64-encoded in one call and sliced, instead of one call per record.
    """
    blake = hashlib.blake2b
    digests: list[bytes] = []
    missing: list[int] = []
    for i, record in enumerate(records):
        file_id = record.get(FILE_ID)
        offset = record.get(OFFSET)
        if file_id is None or offset is None:
            missing.append(i)
            digests.append(_NO_DIGEST)
        else:
            message = record.get(MESSAGE)
            text = message if isinstance(message, str) else ""
            key = f"{file_id}\x00{offset}\x00{text}".encode("utf-8", "surrogatepass")
            digests.append(blake(key, digest_size=ID_DIGEST).digest())  # as _id_key, inlined
    joined = base64.urlsafe_b64encode(b"".join(digests))
    ids: list[bytes | None] = [joined[k : k + 24] for k in range(0, len(joined), 24)]
    for i in missing:
        ids[i] = None
    return ids


class IndexNamer:
    """``logs-%Y.%m.%d`` → ``logs-2026.11.22`` from a record's ``@timestamp`` (UTC)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.dated = "%" in pattern
        self._json = msgspec.json.encode(pattern)
        self._by_hour: dict[int, bytes] = {}
        self._by_prefix: dict[str, bytes] = {}  # "2026-11-22T10" of UTC ("...Z") times

    def json_names(self, records: list[Record]) -> list[bytes]:
        """The JSON-encoded index name of every record."""
        if not self.dated:
            return [self._json] * len(records)
        by_prefix = self._by_prefix
        out: list[bytes] = []
        for record in records:
            ts = record.get(TIMESTAMP)
            # Fast path: the sources write UTC times ending in "Z"; the first 13 characters
            # (date and hour) decide the index.
            if isinstance(ts, str) and ts.endswith("Z"):
                prefix = ts[:13]
                name = by_prefix.get(prefix)
                if name is None:
                    if len(by_prefix) > 1024:
                        by_prefix.clear()
                    name = by_prefix[prefix] = self._for_time(ts)
                out.append(name)
            else:
                out.append(self._for_time(ts))
        return out

    def _for_time(self, ts: Any) -> bytes:
        ns = rfc3339_to_ns(ts)
        # A record without a readable time goes to the index of "now" rather than failing.
        hour = (ns if ns is not None else time.time_ns()) // 3_600_000_000_000
        name = self._by_hour.get(hour)
        if name is None:
            if len(self._by_hour) > 1024:
                self._by_hour.clear()
            name = msgspec.json.encode(time.strftime(self.pattern, time.gmtime(hour * 3600)))
            self._by_hour[hour] = name
        return name


def _check_index(pattern: str, target: Target) -> None:
    tokens = re.findall(r"%(.)", pattern)
    bad = [t for t in tokens if t not in _DATE_TOKENS]
    if bad:
        raise option_error(
            target,
            "index",
            f"{pattern!r} uses %{bad[0]}",
            "use only %Y %y %m %d %H %j %G %V %u (the hour is the finest unit)",
        )
    literal = re.sub(r"%.", "", pattern)
    if not pattern or _INDEX_FORBIDDEN.search(literal) or pattern.startswith(("_", "-", "+")):
        raise option_error(
            target,
            "index",
            f"{pattern!r} is not a valid index name",
            "use lowercase letters, digits, '-', '_' and '.', not starting with '_', '-' or '+'",
        )


class ElasticsearchSink(PushSink):
    """Sends batches to ``POST /_bulk``; see the module docstring for the outcome rules."""

    def __init__(self, spec: OutputSpec) -> None:
        target = parse_target(spec.url, default_port=9200)
        opts = load_options(Options, target, spec.options)
        kind = "opensearch" if target.scheme.startswith("opensearch") else "elasticsearch"
        self.name = f"{kind} {target.hostport}"

        pattern = opts.index
        if pattern is None:
            pattern = target.path.strip("/") or DEFAULT_INDEX
            if "/" in pattern:
                raise option_error(
                    target,
                    "index",
                    f"would be {pattern!r} from the URL path, which has more than one segment",
                    "give only the index in the path, like /logs-%Y.%m.%d",
                )
        _check_index(pattern, target)
        self.index = IndexNamer(pattern)

        headers = {"Content-Type": "application/x-ndjson", "Accept": "application/json"}
        credentials = Credentials(
            target,
            username=opts.username or target.username,
            password_file=opts.password_file,
            api_key_file=opts.api_key_file,
        )
        if opts.gzip:
            headers["Content-Encoding"] = "gzip"
        self._gzip = opts.gzip
        self._headers = headers

        query = f"filter_path={FILTER_PATH}"
        if opts.pipeline:
            query += f"&pipeline={quote(opts.pipeline, safe='')}"
        self.url = f"{target.base_url()}/_bulk?{query}"
        timeout = parse_duration(opts.timeout, name=f"output {target.url!r}: option 'timeout'")
        self._client = HttpClient(
            self.name,
            ssl_context=tls_context(target, opts.ca_file),
            timeout=timeout,
            credentials=credentials,
        )
        self._encoder = msgspec.json.Encoder()

    # ------------------------------------------------------------------ encoding

    def encode(self, records: list[Record]) -> bytes:
        """The NDJSON bulk body: an action line then the document, for every record."""
        n = len(records)
        # One msgspec call encodes every document; JSON strings never hold a raw newline, so
        # splitting the result on b"\n" yields exactly one line per record.
        docs = self._encoder.encode_lines(records).split(b"\n")
        names = self.index.json_names(records)
        ids = document_ids(records)
        lines: list[bytes] = [b""] * (2 * n)
        lines[0::2] = [
            b'{"create":{"_index":%s,"_id":"%s"}}' % (name, doc_id)
            if doc_id is not None
            else b'{"create":{"_index":%s}}' % name
            for name, doc_id in zip(names, ids, strict=True)
        ]
        lines[1::2] = docs[:n]
        lines.append(b"")
        return b"\n".join(lines)

    # ------------------------------------------------------------------ sending

    async def _send_once(self, records: list[Record]) -> SendResult | None:
        resp = await self.post_batch(records)
        if resp.status == 413:
            rate_log.warning(
                (self.name, 413),
                "%s: HTTP 413 for a bulk request of %d records (%d bytes); sending it in halves. "
                "Lower batch.max_bytes to avoid this.",
                self.name,
                len(records),
                resp.request_bytes,
            )
            return None
        raise_for_common_status(self.name, resp, retry_statuses=RETRY_STATUSES)
        if not 200 <= resp.status < 300:
            raise PermanentError(f"{self.name}: bulk request rejected: {_whole_reason(resp)}")
        return self._match(records, resp)

    def _match(self, records: list[Record], resp: Response) -> SendResult:
        try:
            bulk = _bulk_decoder.decode(resp.body)
        except msgspec.DecodeError as exc:  # includes ValidationError (an item without status)
            problem = "an empty body" if not resp.body.strip() else f"unreadable items ({exc})"
            raise self.unconfirmed(resp, len(records), problem) from None
        if bulk.items is None:
            raise self.unconfirmed(resp, len(records), 'no "items"')
        if len(bulk.items) != len(records):
            raise self.unconfirmed(
                resp, len(records), f"{len(bulk.items)} items for {len(records)} documents"
            )
        if not all(len(entry) == 1 for entry in bulk.items):
            raise self.unconfirmed(resp, len(records), "an item that is not one action")
        result = SendResult()
        unauthorized: list[str] = []
        for i, entry in enumerate(bulk.items):
            item = next(iter(entry.values()))
            status = item.status
            if 200 <= status < 300 or status == 409:
                continue
            if status == 429 or status >= 500:
                result.retry.append(i)
            elif status in (401, 403):
                # The user may not write to this index: a privilege to grant, not a bad
                # document, so the item is retried (and logged) rather than dead-lettered.
                result.retry.append(i)
                unauthorized.append(resp.mask(_item_reason(status, item.error)))
            else:
                result.rejected.append((i, resp.mask(_item_reason(status, item.error))))
        if unauthorized:
            rate_log.error(
                (self.name, "unauthorized items"),
                "%s: %d documents refused for lack of privileges (first: %s); grant the user "
                "the create_doc privilege on the index. They are kept and retried.",
                self.name,
                len(unauthorized),
                unauthorized[0],
            )
        if result.retry or result.rejected:
            first = result.rejected[0][1] if result.rejected else "-"
            rate_log.warning(
                (self.name, "partial failure"),
                "%s: bulk partially failed: %d of %d documents to retry, %d rejected (first: %s)",
                self.name,
                len(result.retry),
                len(records),
                len(result.rejected),
                first,
            )
            return result
        return DELIVERED


def _item_reason(status: int, error: _Error | str | None) -> str:
    if error is None:
        return f"HTTP {status}"
    if isinstance(error, str):
        return f"HTTP {status}: {error}"
    reason = f"HTTP {status} {error.type}: {error.reason or ''}".rstrip(": ")
    if error.caused_by:
        cause = error.caused_by
        reason += f" (caused by {cause.get('type', '?')}: {cause.get('reason', '')})"
    return reason


def _whole_reason(resp: Response) -> str:
    try:
        err = msgspec.json.decode(resp.body, type=dict[str, Any]).get("error")
    except msgspec.DecodeError:
        err = None
    if isinstance(err, dict):
        return resp.mask(f"HTTP {resp.status} {err.get('type', '?')}: {err.get('reason', '')}")
    return f"HTTP {resp.status}: {resp.text(300)}"


def create(spec: OutputSpec) -> ElasticsearchSink:
    return ElasticsearchSink(spec)
