"""``--input otlp://HOST:PORT``: OTLP/HTTP logs, as OpenTelemetry SDKs and collectors send them.

``POST /v1/logs`` with an ``ExportLogsServiceRequest`` as protobuf
(``application/x-protobuf``) or OTLP/JSON (``application/json``), optionally gzip'ed; the
default port is OTLP/HTTP's 4318. The server is the ingest's (``sidekick.ship.sources.http``:
size caps, memory budgets, connection limits, bearer tokens, the drain), answering as the
OTLP/HTTP spec says: ``200`` with an ``ExportLogsServiceResponse`` once the records are
durably spooled (``partial_success`` counting records rejected alone), ``400`` for a body
that does not decode, ``503`` with ``Retry-After`` when the spool is full or the shipper is
stopping (retryable for the exporters), every error body a ``google.rpc.Status`` in the
request's encoding. The mapping to records is in ``sidekick.ship.sources._otlp_map``.

Left out: traces and metrics (``/v1/traces``, ``/v1/metrics`` answer 404), and TLS.
"""

from __future__ import annotations

from sidekick.ship.sources.base import InputSpec, SourceContext
from sidekick.ship.sources.http import IngestSource

DEFAULT_PORT = 4318


class OtlpHttpSource(IngestSource):
    scheme = "otlp"
    default_port = DEFAULT_PORT
    otlp_only = True


def create(spec: InputSpec, ctx: SourceContext) -> OtlpHttpSource:
    return OtlpHttpSource(spec, ctx)
