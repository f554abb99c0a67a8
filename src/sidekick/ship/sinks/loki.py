"""Grafana Loki output: ``POST /loki/api/v1/push`` with the JSON push format.

``loki://HOST:3100`` (``loki+https://`` for TLS; a URL path other than ``/`` replaces the
push path, for gateways). A batch becomes one request::

    {"streams": [{"stream": {"job": "sidekick", "namespace": "web", ...},
                  "values": [["1763810625123456789", "the line", {"log.offset": "42"}], ...]}]}

Labels are few and chosen by config (``labels``: label name → record field), by default
``job`` (the ``job`` option), ``namespace``, ``pod``, ``container`` and ``filename`` from the
Kubernetes fields and the file path. Label names are sanitised to Loki's rules
(``[a-zA-Z_][a-zA-Z0-9_]*``). Every other field travels as structured metadata (string values),
so nothing is lost and label cardinality stays low; for a Loki without structured metadata
(before 3.0) ``line_format: json`` sends the whole record as the line instead. Records are
grouped by label set into streams and sorted by time within each stream, so Loki's
out-of-order window is never needed inside one batch.

Outcomes: 2xx delivered (a 2xx other than 200/204, such as the 260 some Loki versions use
when they stored nothing new, is logged as a warning with the code, once a minute) — unless
its body is an HTML page: Loki never answers a push with one, a proxy in front of it does (a
login or error page sent with 200), so that is counted as a bad response and the batch is
pushed again; 429, 5xx and connection errors retried; 401/403/404 and redirects retried with
an error log (see ``_http``).

Any other 4xx — ``entry too far behind``, ``line too long``, ``stream limit exceeded`` — is
Loki refusing some entries of the push while storing the valid ones. Its text names one of
them, not all, so the batch is pushed again in halves, recursively, until the refused records
are isolated; they alone go to the dead-letter file with Loki's text for them. Pushing again
is safe because Loki ignores an entry identical (stream, timestamp, line) to one it already
has. The search is bounded (``BISECT_REQUESTS`` extra pushes per batch, enough to isolate a
few refused records or a contiguous run of old ones in 10,000); past it, the records not yet
isolated are dead-lettered together, including any Loki did store — a visible duplicate in
the dead-letter file is preferred to a silent loss. A 413 is searched the same way, without
the bound. A push of the search that fails for a passing reason (429, 5xx, a timeout, a
proxy's page) loses nothing the search found: that part is retried, after the back-off, and
the search goes on with the other parts, until ``SEARCH_FAILURES`` pushes in a row failed (a
Loki that went down is not pushed every remaining part); what was pushed counts as delivered
or refused. Throwing the whole batch back instead meant that a Loki failing one push in three
never let a search of 60 pushes finish, and the batch was never delivered.

Left out: the protobuf+snappy push format, per-record tenants.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from sidekick.core.durations import parse_duration
from sidekick.core.errors import TemporaryError
from sidekick.ship.records import DELIVERED, MESSAGE, TIMESTAMP, Record, SendResult
from sidekick.ship.sinks import OutputSpec
from sidekick.ship.sinks._credentials import Credentials
from sidekick.ship.sinks._http import (
    HttpClient,
    PushSink,
    looks_like_html,
    raise_for_common_status,
    rate_log,
    rfc3339_to_ns,
)
from sidekick.ship.sinks._options import (
    Target,
    load_options,
    option_error,
    parse_pairs,
    parse_target,
    tls_context,
)

PUSH_PATH = "/loki/api/v1/push"
RETRY_STATUSES = frozenset({429, *range(500, 600)})
TOO_LARGE = "HTTP 413: the record alone exceeds Loki's request size limit"
# Extra pushes allowed per batch to isolate the records Loki refuses (see the docstring).
BISECT_REQUESTS = 64
# Passing failures (429, 5xx, timeouts) in a row after which a search leaves the parts it has
# not pushed yet to the retry: Loki is down rather than flapping.
SEARCH_FAILURES = 3
DEFAULT_LABELS = {
    "namespace": "k8s.namespace.name",
    "pod": "k8s.pod.name",
    "container": "k8s.container.name",
    "filename": "log.file.path",
}
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of a Loki output (URL query or config file)."""

    job: str = "sidekick"  # the value of the "job" label ("" leaves the label out)
    # label name -> record field; in a URL query write "name=field,name=field"
    labels: dict[str, str] | str | None = None
    tenant: str | None = None  # sent as X-Scope-OrgID (multi-tenant Loki)
    username: str | None = None  # basic auth (Grafana Cloud, a gateway)
    password_file: str | None = None
    bearer_token_file: str | None = None
    ca_file: str | None = None
    gzip: bool = True
    timeout: str | float = 30.0
    line_format: Literal["message", "json"] = "message"


def sanitize_label(name: str) -> str:
    """Loki label names match ``[a-zA-Z_][a-zA-Z0-9_]*``: other characters become ``_``."""
    name = _LABEL_BAD.sub("_", name)
    if not name or name[0].isdigit():
        name = "_" + name
    return name


def metadata_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return msgspec.json.encode(value).decode()


class LokiSink(PushSink):
    """Sends batches to Loki's push API; see the module docstring for the outcome rules."""

    def __init__(self, spec: OutputSpec) -> None:
        target = parse_target(spec.url, default_port=3100)
        opts = load_options(Options, target, spec.options)
        self.name = f"loki {target.hostport}"
        path = target.path if target.path not in ("", "/") else PUSH_PATH
        self.url = target.base_url() + path

        mapping = self._label_mapping(target, opts.labels)
        self.labels: list[tuple[str, str]] = [
            (sanitize_label(name), field) for name, field in mapping.items()
        ]
        self.static_labels: dict[str, str] = {"job": opts.job} if opts.job else {}
        names = [n for n, _ in self.labels] + list(self.static_labels)
        if len(set(names)) != len(names):
            raise option_error(
                target,
                "labels",
                f"gives the same label name twice after sanitising ({', '.join(names)})",
                "rename one of them",
            )
        self.line_format = opts.line_format

        headers = {"Content-Type": "application/json"}
        if opts.tenant:
            headers["X-Scope-OrgID"] = opts.tenant
        credentials = Credentials(
            target,
            username=opts.username or target.username,
            password_file=opts.password_file,
            bearer_token_file=opts.bearer_token_file,
        )
        if opts.gzip:
            headers["Content-Encoding"] = "gzip"
        self._gzip = opts.gzip
        self._headers = headers
        timeout = parse_duration(opts.timeout, name=f"output {target.url!r}: option 'timeout'")
        self._client = HttpClient(
            self.name,
            ssl_context=tls_context(target, opts.ca_file),
            timeout=timeout,
            credentials=credentials,
        )
        self._encoder = msgspec.json.Encoder()

    @staticmethod
    def _label_mapping(target: Target, labels: dict[str, str] | str | None) -> dict[str, str]:
        if labels is None:
            return dict(DEFAULT_LABELS)
        if isinstance(labels, dict):
            return dict(labels)
        return parse_pairs(
            target,
            "labels",
            labels,
            value_required=True,
            example="labels=namespace=k8s.namespace.name,app=service.name",
        )

    # ------------------------------------------------------------------ encoding

    def encode(self, records: list[Record]) -> bytes:
        """The push request body for ``records`` (uncompressed JSON)."""
        now = time.time_ns()
        # Stream key: the label fields' raw values in a fixed order (no dict or sort per
        # record); the label dict is built once per distinct stream.
        streams: dict[tuple[Any, ...], tuple[dict[str, str], list[tuple[int, list[Any]]]]] = {}
        label_names = [name for name, _ in self.labels]
        label_fields = [field for _, field in self.labels]
        skip = {MESSAGE, TIMESTAMP, *label_fields}
        as_json = self.line_format == "json"
        encode = self._encoder.encode
        for record in records:
            key = tuple([record.get(f) for f in label_fields])
            try:
                entry = streams.get(key)
            except TypeError:  # a list or map as a label value: key on its text instead
                key = tuple(None if v is None else metadata_value(v) for v in key)
                entry = streams.get(key)
            if entry is None:
                labels = dict(self.static_labels)
                for name, value in zip(label_names, key, strict=True):
                    # Loki treats an empty label value as an absent label.
                    if value is not None and value != "":
                        labels[name] = metadata_value(value)
                entry = (labels, [])
                streams[key] = entry
            ns = rfc3339_to_ns(record.get(TIMESTAMP))
            if ns is None:
                ns = now
            if as_json:
                value_row: list[Any] = [str(ns), encode(record).decode()]
            else:
                line = record.get(MESSAGE)
                meta = {
                    k: v if type(v) is str else metadata_value(v)
                    for k, v in record.items()
                    if k not in skip and v is not None
                }
                text = line if type(line) is str else ("" if line is None else metadata_value(line))
                value_row = [str(ns), text]
                if meta:
                    value_row.append(meta)
            entry[1].append((ns, value_row))
        out = []
        for labels, rows in streams.values():
            rows.sort(key=lambda r: r[0])  # stable: equal times keep file order
            out.append({"stream": labels, "values": [row for _, row in rows]})
        return self._encoder.encode({"streams": out})

    # ------------------------------------------------------------------ sending

    async def send(self, records: list[Record]) -> SendResult:
        if not records:
            return DELIVERED
        # The first push's passing failure is the whole batch's: raised, with its Retry-After.
        outcome = await self._push(records)
        return await self._searched(records, outcome, _Search())

    async def _send_part(self, records: list[Record], search: _Search) -> SendResult:
        """Push a part of the batch; a passing failure leaves it to the retry (see above)."""
        if search.failures >= SEARCH_FAILURES:
            return SendResult(retry=list(range(len(records))))
        try:
            outcome = await self._push(records)
        except TemporaryError:
            search.failures += 1
            return SendResult(retry=list(range(len(records))))
        search.failures = 0
        return await self._searched(records, outcome, search)

    async def _searched(
        self, records: list[Record], outcome: str | None, search: _Search
    ) -> SendResult:
        """The result for ``records`` pushed with ``outcome``: on 413 or a refusal, push halves."""
        if outcome is None:
            return DELIVERED
        if len(records) == 1:
            return SendResult(rejected=[(0, outcome)])
        if outcome != TOO_LARGE:
            if search.requests < 2:
                rate_log.warning(
                    (self.name, "search exhausted"),
                    "%s: Loki refused a push of %d records and the search for the refused "
                    "ones is out of requests; all %d go to the dead-letter file (%s)",
                    self.name,
                    len(records),
                    len(records),
                    outcome,
                )
                return SendResult(rejected=[(i, outcome) for i in range(len(records))])
            search.requests -= 2
        mid = len(records) // 2
        result = SendResult()
        for offset, part in ((0, records[:mid]), (mid, records[mid:])):
            sub = await self._send_part(part, search)
            result.retry.extend(i + offset for i in sub.retry)
            result.rejected.extend((i + offset, why) for i, why in sub.rejected)
        return result if not result.all_delivered else DELIVERED

    async def _push(self, records: list[Record]) -> str | None:
        """One push: None when delivered, ``TOO_LARGE`` on 413, else Loki's refusal text."""
        resp = await self.post_batch(records)
        status = resp.status
        if 200 <= status < 300:
            if looks_like_html(resp):
                raise self.unconfirmed(resp, len(records), "an HTML page, not Loki's answer")
            if status not in (200, 204):
                rate_log.warning(
                    (self.name, status),
                    "%s: Loki answered HTTP %d (not 204) to a push of %d records: %s",
                    self.name,
                    status,
                    len(records),
                    resp.text(200) or "no body",
                )
            return None
        if status == 413:
            rate_log.warning(
                (self.name, 413),
                "%s: HTTP 413 for a push of %d records; sending it in halves",
                self.name,
                len(records),
            )
            return TOO_LARGE
        raise_for_common_status(self.name, resp, retry_statuses=RETRY_STATUSES)
        reason = f"Loki HTTP {status}: {resp.text(1000) or 'no body'}"
        if len(records) > 1:
            rate_log.warning(
                (self.name, "refused push"),
                "%s: Loki refused a push of %d records (%s); pushing halves to find the "
                "refused ones",
                self.name,
                len(records),
                reason,
            )
        else:
            rate_log.warning(
                (self.name, "refused record"),
                "%s: Loki refused a record (%s); it goes to the dead-letter file",
                self.name,
                reason,
            )
        return reason


@dataclass(slots=True)
class _Search:
    """The state of one batch's search for the entries Loki refuses."""

    requests: int = BISECT_REQUESTS  # extra pushes it may still make
    failures: int = 0  # pushes in a row that failed for a passing reason; their parts are retried


def create(spec: OutputSpec) -> LokiSink:
    return LokiSink(spec)
