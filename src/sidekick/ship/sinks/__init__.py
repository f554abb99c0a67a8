"""Outputs, chosen by the scheme of ``--output``.

Each module exposes ``create(spec: OutputSpec) -> Sink``; this table maps schemes to modules
and imports them lazily so an unused output costs nothing at start-up. A sink's ``name`` is
shown in log lines, metric labels, the dead-letter file and ``/healthz``; ``create_sink``
passes it through ``redact_url`` whatever the sink chose, so no output can show a secret.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from sidekick.core.errors import ConfigError
from sidekick.core.redact import redact_url
from sidekick.ship.records import Sink


@dataclass
class OutputSpec:
    """One configured output: its URL and the options for its kind (from the config file)."""

    url: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        scheme, sep, _ = self.url.partition(":")
        return scheme.lower() if sep else ""


SCHEMES: dict[str, str] = {
    "stdout": "sidekick.ship.sinks.stdout",
    "file": "sidekick.ship.sinks.file",
    "http": "sidekick.ship.sinks.http",
    "https": "sidekick.ship.sinks.http",
    "elasticsearch": "sidekick.ship.sinks.elasticsearch",
    "elasticsearch+https": "sidekick.ship.sinks.elasticsearch",
    "opensearch": "sidekick.ship.sinks.elasticsearch",
    "opensearch+https": "sidekick.ship.sinks.elasticsearch",
    "loki": "sidekick.ship.sinks.loki",
    "loki+https": "sidekick.ship.sinks.loki",
    "otlp": "sidekick.ship.sinks.otlp",
    "otlp+https": "sidekick.ship.sinks.otlp",
    "syslog+tcp": "sidekick.ship.sinks.syslog",
    "syslog+udp": "sidekick.ship.sinks.syslog",
}


def create_sink(spec: OutputSpec) -> Sink:
    module_name = SCHEMES.get(spec.scheme)
    if module_name is None:
        known = ", ".join(f"{s}:" for s in SCHEMES)
        raise ConfigError(
            f"--output {redact_url(spec.url)!r}: unknown scheme {spec.scheme!r}; use one of {known}"
        )
    module = importlib.import_module(module_name)
    sink: Sink = module.create(spec)
    sink.name = redact_url(sink.name)
    return sink
